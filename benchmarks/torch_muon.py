"""torch's own Muon on the matrices and AdamW on the rest: two optimizers, each in its own PDT.

``torch.optim.Muon`` takes only 2-D weights, so a transformer trained with it steps two
optimizers: Muon on the blocks' matrices, AdamW on the embeddings, norms, biases and head. PDT
wraps each in its own ``pdt.PDT``. This measures what that pair gains from PDT's defaults, from
PDT on one half alone, and from the settings pytorch-optimizer's one-optimizer ``Muon`` gets (the
``Muon`` peer of ``benchmarks.ttb``: adaptive tau on the Muon half, no moment filter on AdamW's),
beside the pair nudged by a millionth where PDT would predict (a control: how far any
perturbation moves the time to the pair's final loss).

For each case it tunes the pair's rate (Muon at ``lr``, AdamW at ``lr / 10``, as ``benchmarks.ttb``
tunes pytorch-optimizer's Muon) on seed 0, then trains, from the same initial weights and batches
per seed, the pair alone and each PDT setting, and counts the steps to the pair's final training
loss, as ``benchmarks.ttb`` does, with the final test accuracy against the pair's. Steps only:
it may run beside a timed benchmark. ``--wall`` times the pair and the settings in lock-step
instead, as ``benchmarks.ttb`` does (keep the machine quiet).

    python -m benchmarks.torch_muon [--seeds 3] [--first-seed 0] [--only 'char transformer'] [--schedule cosine] [--lr 0.024] [--settings 'moment'] [--wall]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn
from torch.optim import Optimizer

import pdt_compile as pdt
from pdt_compile.experiment import Task, needs_model, speedup, train

from .chaos import seed_cells
from .controls import Nudge
from .report import chosen, write_section
from .ttb import seed_major, summarise, sweep_factors, task_suite, tune_lr
from .variants import loss_change

TASKS = ("char transformer / AdamW", "mnist1d ViT / AdamW")


class Pair(Optimizer):
    """Two optimizers stepped as a user's loop steps them: ``muon.step(); adamw.step()``. Its
    param groups are theirs (the same dicts), so an LR scheduler over the pair sets both."""

    def __init__(self, muon: Optimizer, adamw: Optimizer) -> None:  # no Optimizer.__init__: it would copy the groups
        self.members = {"muon": muon, "adamw": adamw}
        self.defaults: dict = {}
        self.state: dict = {}
        self.param_groups = [*muon.param_groups, *adamw.param_groups]
        self._optimizer_step_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict = OrderedDict()

    def step(self, closure: Callable | None = None) -> None:  # type: ignore[override]
        for member in self.members.values():
            member.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for member in self.members.values():
            member.zero_grad(set_to_none=set_to_none)

    def report_loss(self, loss: torch.Tensor) -> None:
        for member in self.members.values():
            if hasattr(member, "report_loss"):
                member.report_loss(loss)

    @property
    def stats(self):
        """The first wrapped half's PDT statistics (what ``experiment.Training`` reads), None if neither is."""
        wrapped = [m for m in self.members.values() if isinstance(m, pdt.PDT)]
        return wrapped[0].stats if wrapped else None

    def merges(self) -> int:
        """Merges of both halves."""
        return sum(m.stats.merges for m in self.members.values() if isinstance(m, pdt.PDT))

    def wrapped(self, wrap: dict[str, Callable[[Optimizer], Optimizer]]) -> "Pair":
        """A pair whose members are ``wrap[role](member)`` (a role not in ``wrap`` stays bare)."""
        return Pair(*(wrap.get(role, lambda o: o)(member) for role, member in self.members.items()))


def torch_muon_pair(model: nn.Module, lr: float, task: Task) -> Pair:
    """torch's Muon at ``lr`` on the 2-D weights of ``model.blocks`` (its defaults otherwise:
    momentum 0.95, Nesterov, weight decay 0.1, the "original" rate adjustment), torch's AdamW at
    ``lr / 10`` (betas 0.9, 0.95, the task's weight decay) on the rest: how ``benchmarks.ttb.muon``
    splits the model for pytorch-optimizer's Muon."""
    hidden = [p for p in model.blocks.parameters() if p.ndim == 2]
    chosen_ids = {id(p) for p in hidden}
    rest = [p for p in model.parameters() if id(p) not in chosen_ids]
    decay = task.make_optimizer([torch.zeros(1, requires_grad=True)], task.lr).defaults.get("weight_decay", 0.0)
    return Pair(torch.optim.Muon(hidden, lr=lr), torch.optim.AdamW(rest, lr=lr / 10, betas=(0.9, 0.95), weight_decay=decay))


NUDGED = ("the pair nudged by a millionth where PDT's defaults would predict (benchmarks.controls.Nudge on each half; "
          "a control, no merge)")

SETTINGS: dict[str, dict[str, dict]] = {
    "PDT defaults on each": {"muon": {}, "adamw": {}},
    "PDT on the Muon half only (AdamW bare)": {"muon": {}},
    "PDT on the AdamW half only (Muon bare)": {"adamw": {}},
    "AdamW half without the moment filter (moment_ratio=None)": {"muon": {}, "adamw": dict(moment_ratio=None)},
    "Muon half with adaptive tau (adaptive=True)": {"muon": dict(adaptive=True), "adamw": {}},
    "as pytorch-optimizer's Muon gets them (adaptive=True on Muon, moment_ratio=None on AdamW)":
        {"muon": dict(adaptive=True), "adamw": dict(moment_ratio=None)},
    "Muon half with radial='inward' (its decayed matrices' inward radial part taken back, as radial='auto' does on "
    "AdamW's while the rate decays, and since 2026-12-07 on Muon's)": {"muon": dict(radial="inward"), "adamw": {}},
    NUDGED: {"muon": dict(nudge=True), "adamw": dict(nudge=True)},
}
"""Row name -> role -> PDT options on top of the defaults (a role left out stays unwrapped;
``nudge=True``: :class:`benchmarks.controls.Nudge` in place of PDT, a control)."""


def wrap_of(snap_every: int, setting: dict[str, dict]) -> Callable[[Pair], Pair]:
    """How a row of :data:`SETTINGS` wraps the pair: each half it names in its own ``pdt.PDT``."""
    def make(optimizer: Optimizer, opts: dict) -> Optimizer:
        kind = Nudge if opts.get("nudge") else pdt.PDT
        return kind(optimizer, snap_every=snap_every, **{key: value for key, value in opts.items() if key != "nudge"})

    return lambda pair: pair.wrapped({role: (lambda o, opts=opts: make(o, opts)) for role, opts in setting.items()})


def pair_task_of(task: Task, schedule: str) -> Task:
    """``task`` trained by :func:`torch_muon_pair` on ``schedule``."""
    return dataclasses.replace(task, schedule=schedule,
                               make_optimizer=needs_model(lambda model, lr: torch_muon_pair(model, lr, task)))


def step_rows(name: str, task: Task, snap_every: int, lr: float, swept: str, settings: dict[str, dict],
              seeds: range) -> list[str]:
    """Per-seed step ratios of every setting against the pair alone (no timing: each run alone)."""
    ratios: dict[str, list] = {row: [] for row in settings}
    accuracy: dict[str, list[float]] = {row: [] for row in settings}
    losses: dict[str, list[str]] = {row: [] for row in settings}
    merges = {row: 0 for row in settings}
    for seed in seeds:
        alone, _ = train(task, lambda opt: opt, seed=seed, method="pair", lr=lr)
        for row, setting in settings.items():
            run, opt = train(task, wrap_of(snap_every, setting), seed=seed, method=row, lr=lr)
            ratios[row].append(speedup(alone, run)[0])
            accuracy[row].append((run.test_accuracy[-1] - alone.test_accuracy[-1]) * 100)
            losses[row].append(loss_change(run.final_loss, alone.final_loss))
            merges[row] += opt.merges()
            print(f"{name}, seed {seed}, {row}: x {ratios[row][-1]}, accuracy {accuracy[row][-1]:+.1f}, "
                  f"final loss {losses[row][-1]} % (the pair's {alone.final_loss:.4g})", flush=True)
    return [f"| {name}, {task.schedule} | {lr:g} ({swept}) | {row} | {seed_cells(ratios[row], accuracy[row])} | "
            f"{', '.join(losses[row])} | {merges[row]} |" for row in settings]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, first-seed + 1, ...")
    parser.add_argument("--only", default="", help="the tasks whose name contains this")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    parser.add_argument("--lr", type=float, default=None, help="this Muon rate instead of tuning one")
    parser.add_argument("--settings", default="", help="comma-separated texts: only the settings whose name contains one")
    parser.add_argument("--wall", action="store_true",
                        help="time the pair and the settings in lock-step, as benchmarks.ttb does (wall time with all of "
                             "PDT's overhead; keep the machine otherwise quiet), instead of counting steps run by run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = chosen(SETTINGS, args.settings, always="PDT defaults on each")
    started = time.perf_counter()
    rows = ["| task | rate (sweep: lr -> final loss) | PDT | steps × per seed (the pair's steps / PDT's to its final loss) | "
            "median [min–max] | seeds below 0.98 or never | final accuracy − the pair's, per seed (points) | "
            "final training loss against the pair's, per seed (%) | merges (all seeds) |",
            "|---|---|---|---|---|---|---|---|---|"]
    tables = []
    for name, (task, snap_every) in task_suite(quick=False).items():
        if name not in TASKS or args.only not in name:
            continue
        pair_task = pair_task_of(task, args.schedule)
        if args.lr is None:
            lr, sweep = tune_lr(dataclasses.replace(pair_task, lr=0.024), sweep_factors(name))
        else:
            lr, sweep = args.lr, []
        if args.wall:
            methods = {"torch Muon + AdamW (tuned lr)": lambda opt: opt,
                       **{row: wrap_of(snap_every, setting) for row, setting in settings.items()}}
            runs = seed_major(pair_task, methods, args.seeds, lr, first_seed=args.first_seed)
            tables.append(summarise(f"{name}: torch's Muon and AdamW, {args.schedule}", runs, lr, sweep, snap_every, pair_task))
            print(tables[-1], flush=True)
            continue
        swept = ", ".join(f"{r:g} -> {loss:.4g}" for r, loss in sweep) or "given"
        rows += step_rows(name, pair_task, snap_every, lr, swept, settings,
                          range(args.first_seed, args.first_seed + args.seeds))
        print("\n".join(rows[-len(settings):]), flush=True)
    seeds = f"{args.seeds} seeds" + (f" from seed {args.first_seed}" if args.first_seed else "")
    pair = ("The pair: torch.optim.Muon at lr on the blocks' 2-D weights (momentum 0.95, Nesterov, weight decay 0.1), "
            "torch.optim.AdamW at lr/10 (betas 0.9, 0.95, the task's weight decay) on the rest, stepped one after the "
            "other; each PDT row wraps the halves it names in their own pdt.PDT (defaults, plus the options it names).")
    if args.wall:
        intro = (f"{seeds} per task, {args.schedule} rate, median [min–max]; × = the pair's time over PDT's to the pair's "
                 "final training loss or best test accuracy, the seed's runs in lock-step (one training step of each in "
                 "turn), wall time counting every training step with all of PDT's overhead, evaluation excluded, as "
                 f"benchmarks.ttb times them. {pair} Total benchmark time {time.perf_counter() - started:.0f} s.")
        body = intro + "\n\n" + "\n\n".join(tables)
    else:
        intro = (f"{seeds} per task, {args.schedule} rate, every run of a seed from the same initial weights and batches. "
                 f"{pair} × = the pair's steps over PDT's to the pair's final training loss, first evaluation at it, as "
                 f"benchmarks.ttb counts them. Total benchmark time {time.perf_counter() - started:.0f} s.")
        body = intro + "\n\n" + "\n".join(rows)
    part = (f", tasks matching {args.only!r}" if args.only else "") + (f", {args.schedule}" if args.schedule != "constant" else "")
    part += f", lr {args.lr:g}" if args.lr is not None else ""
    part += f", seeds from {args.first_seed}" if args.first_seed else ""
    part += f", settings matching {args.settings!r}" if args.settings else ""
    part += ", wall time" if args.wall else ""
    write_section(f"torch's Muon and AdamW, each in its own PDT{part} (benchmarks/torch_muon.py)", body)


if __name__ == "__main__":
    main()
