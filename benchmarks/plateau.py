"""Merges on a converged plateau: the common CNN recipe at a constant rate, past its loss floor.

The suite's tasks keep their training loss falling to the end of the budget. Many real runs do
not: a CNN with BatchNorm trained with SGD, Nesterov momentum and weight decay at a constant rate
(the first phase of a step schedule) reaches the loss floor that rate allows, then stays there
for epochs. This trains such a model, two 3x3 convolutions of 16 channels (each with BatchNorm)
and a linear head on scikit-learn's 8x8 digits (in the wheel; the split of the digits MLP task),
SGD lr 0.1 (not tuned: the recipe's usual value), momentum 0.9, Nesterov, batch 32, 24 epochs,
one snapshot per epoch, and, to tell the parts of the recipe apart, the same without BatchNorm
and without weight decay. For each case and seed it trains, from the same weights and batches,
the plain optimizer, PDT's defaults, PDT with the loss-reading options that undo or hold merges
that set the loss back or shorten the horizon after them, and PDT with half the horizon, and
reports, per seed: the steps to the plain run's final
training loss (plain steps / PDT's, as ``benchmarks.ttb`` counts them), PDT's final training
loss against the plain run's, and, over the evaluations of the second half of the run (the
plateau), the median of PDT's full training loss over the plain run's. No wall time.

    python -m benchmarks.plateau [--seeds 3] [--only 'BatchNorm, weight decay'] [--case 'BatchNorm, weight decay 5e-4']
                                 [--methods 'radial,runaway'] [--lr 0.1]
    python -m benchmarks.plateau --trace 1 --case 'BatchNorm, weight decay 5e-4'
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from copy import deepcopy as copy_module

import torch
from torch import nn

import pdt_compile as pdt
from pdt_compile.experiment import Run, Task, Training, evaluate, speedup, train
from pdt_compile.runtime.schedule import Phase, Schedule
from pdt_compile.tasks import digits_mlp

from .controls import Nudge
from .report import chosen, write_section
from .sf_harm import TangentialPDT
from .ttb import spread, verified

EPOCHS = 24


class ProgressSchedule(Schedule):
    """A probe: PDT's schedule that, at a boundary that would predict, only takes the snapshot
    while the training loss reported over the interval so far is not below the mean of the
    interval that ended ``config.history - 1`` boundaries before (the ring's span): no progress
    over the snapshots DMD fits, no trend to extrapolate."""

    means: list[float]
    holds: int

    def next_phase(self, ring_count: int, lr: float | None = None, judged: bool = True) -> Phase:
        phase = super().next_phase(ring_count, lr, judged)
        span = self.config.history - 1
        if phase == Phase.PREDICT and self.interval_loss_count and len(self.means) >= span:
            if self.interval_loss_sum / self.interval_loss_count >= self.means[-span]:
                self.holds += 1
                return Phase.CAPTURE
        return phase

    def _adapt(self, merged: bool) -> None:
        if self.interval_loss_count:
            self.means.append(self.interval_loss_sum / self.interval_loss_count)
        super()._adapt(merged)


class ProgressHoldPDT(pdt.PDT):
    """PDT with :class:`ProgressSchedule` (reads every reported loss)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.schedule.__class__ = ProgressSchedule
        self.schedule.means, self.schedule.holds = [], 0
        self._loss_readers = 1

class ConvolutionsTangentialPDT(TangentialPDT):
    """The radial part undone on the convolutions only: the weights BatchNorm follows, the only
    ones whose loss is scale-invariant (their loss gradient is orthogonal to them)."""

    selects = staticmethod(lambda p: p.dim() == 4)


class HeadTangentialPDT(TangentialPDT):
    """The radial part undone on the linear head only (not scale-invariant)."""

    selects = staticmethod(lambda p: p.dim() == 2)


class RowsTangentialPDT(TangentialPDT):
    """The radial part undone on each output row of every matrix on its own (per channel, as
    BatchNorm normalises)."""

    per_row = True


PROBES = {"nudge": Nudge, "progress_hold": ProgressHoldPDT, "tangential": TangentialPDT, "conv_tangential": ConvolutionsTangentialPDT,
          "head_tangential": HeadTangentialPDT, "row_tangential": RowsTangentialPDT}
"""Probe field -> the PDT subclass a method with that field set trains with."""

CASES = {
    "BatchNorm, weight decay 5e-4": dict(batch_norm=True, weight_decay=5e-4),
    "BatchNorm, no weight decay": dict(batch_norm=True, weight_decay=0.0),
    "no BatchNorm, weight decay 5e-4": dict(batch_norm=False, weight_decay=5e-4),
    "no BatchNorm, no weight decay": dict(batch_norm=False, weight_decay=0.0),
}

METHODS = {
    "PDT default": {},
    "control: the plain run nudged by 1e-6 at every prediction boundary (benchmarks.controls.Nudge)": dict(nudge=True),
    "PDT, radial=\"keep\" (the defaults before radial=\"auto\")": dict(radial="keep"),
    "PDT, radial=\"inward\" (what \"auto\" does under weight decay)": dict(radial="inward"),
    "PDT + setback_limit=0.3": dict(setback_limit=0.3),
    "PDT + rollback_factor=1.5": dict(rollback_factor=1.5),
    "PDT, adaptive=True (tau halves after a merge that raised the loss)": dict(adaptive=True),
    "PDT, tau 4 (half the horizon)": dict(tau=4),
    "PDT, no prediction without progress over the ring's span (a probe)": dict(progress_hold=True),
    "PDT, the radial part of matrices' jumps undone (benchmarks.sf_harm's probe)": dict(tangential=True, radial="keep"),
    "PDT, the radial part undone on the convolutions only (the scale-invariant weights)": dict(conv_tangential=True, radial="keep"),
    "PDT, the radial part undone on the head only": dict(head_tangential=True, radial="keep"),
    "PDT, the radial part undone on every tensor": dict(radial="undo"),  # BatchNorm's scales, the biases too
    "PDT, the radial part undone per output row of every matrix": dict(row_tangential=True, radial="keep"),
    "PDT + runaway_factor=3 (the schedule-free runaway guard)": dict(runaway_factor=3.0),
    "PDT, moment_ratio=0.6 (twice the default's bar on Adam)": dict(moment_ratio=0.6),
    "PDT, moment_ratio=0.9": dict(moment_ratio=0.9),
    "PDT, merges in the first quarter of training only (a probe)": dict(stop_at=0.25),
    "PDT, merges in the first half of training only (a probe)": dict(stop_at=0.5),
    "PDT + verify (every merge checked on 256 training samples, as benchmarks.ttb's verified rows)": dict(verify=True),
    "PDT + verify, verify_backoff=0 (every boundary verified)": dict(verify=True, verify_backoff=0),
}
"""Method -> PDTConfig fields on top of the defaults (and one snapshot per epoch); a field of
:data:`PROBES` set: that probe (``tangential``: :class:`benchmarks.sf_harm.TangentialPDT`, do the
jumps' changes of the weights' norms do the harm? and which weights' changes?), on the jumps as
predicted (``radial="keep"``); ``nudge``: :class:`benchmarks.controls.Nudge`, no merge, a move far below
one: how far any perturbation moves the run; ``stop_at``: as in :func:`benchmarks.variants.run_variant`."""


def wrap(fields: dict, snap_every: int, task: Task | None = None):
    """The wrap of one of :data:`METHODS` (``verify``: :func:`benchmarks.ttb.verified` on ``task``)."""
    options = {key: value for key, value in fields.items() if key not in PROBES and key != "verify"}
    if fields.get("verify"):
        if task is None:
            raise ValueError("plateau.wrap: a verified method needs task= (its verify loss is on the task's data)")
        return verified(task, snap_every, **options)
    cls = next((PROBES[key] for key in fields if key in PROBES), pdt.PDT)
    return lambda optimizer: cls(optimizer, snap_every=snap_every, **options)


def conv_net(batch_norm: bool) -> nn.Module:
    """Two 3x3 convolutions of 16 channels on the 8x8 image, each followed by BatchNorm (or
    nothing) and a ReLU, then a linear head."""
    norm = (lambda: nn.BatchNorm2d(16)) if batch_norm else nn.Identity
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1), norm(), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), norm(), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 64, 10),
    )


OPTIMIZERS = {
    "sgd": ("SGD, momentum 0.9, Nesterov", 0.1,
            lambda params, lr, decay: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=decay)),
    "adam": ("Adam, the decay through the gradient (L2)", 1e-3,
             lambda params, lr, decay: torch.optim.Adam(params, lr=lr, weight_decay=decay)),
    "adamw": ("AdamW, the decay decoupled", 1e-3,
              lambda params, lr, decay: torch.optim.AdamW(params, lr=lr, weight_decay=decay)),
    "rmsprop": ("RMSprop, the decay through the gradient (L2)", 1e-3,
                lambda params, lr, decay: torch.optim.RMSprop(params, lr=lr, weight_decay=decay)),
}
"""``--optimizer`` -> (its description, the recipe's learning rate, how it is made from the
parameters, the rate and the case's weight decay)."""


def plateau_task(batch_norm: bool, weight_decay: float, lr: float | None = None, optimizer: str = "sgd") -> Task:
    """The digits MLP task's data with :func:`conv_net` and ``optimizer`` (:data:`OPTIMIZERS`,
    at its recipe's rate unless ``lr``), :data:`EPOCHS` epochs, evaluated every half epoch."""
    digits = digits_mlp()
    steps_per_epoch = digits.steps_per_epoch
    _, default_lr, make = OPTIMIZERS[optimizer]
    return dataclasses.replace(
        digits, name=f"digits-bn-cnn-{optimizer}",
        make_model=lambda: conv_net(batch_norm),
        make_optimizer=lambda params, lr: make(params, lr, weight_decay),
        lr=default_lr if lr is None else lr, steps=EPOCHS * steps_per_epoch, eval_every=steps_per_epoch // 2,
    )


def plateau_ratio(plain: Run, run: Run) -> float:
    """The median, over the evaluations of the second half of the run, of ``run``'s full
    training loss over ``plain``'s."""
    half = plain.steps[-1] / 2
    return statistics.median(loss / base for step, loss, base in zip(run.steps, run.train_loss, plain.train_loss)
                             if step > half)


def case_rows(name: str, seeds: int, lr: float | None = None, methods: dict | None = None, optimizer: str = "sgd") -> list[str]:
    """The table rows of one case: the plain run's, then one per method of ``methods`` (all of
    :data:`METHODS` by default)."""
    methods = methods or METHODS
    task = plateau_task(**CASES[name], lr=lr, optimizer=optimizer)
    snap_every = task.steps_per_epoch
    ratios: dict[str, list] = {method: [] for method in methods}
    finals: dict[str, list[float]] = {method: [] for method in methods}
    plateaus: dict[str, list[float]] = {method: [] for method in methods}
    accuracy: dict[str, list[float]] = {method: [] for method in methods}
    masks: dict[str, list[float]] = {method: [] for method in methods}
    merges = {method: 0 for method in methods}
    undone = {method: 0 for method in methods}
    runaways = {method: 0 for method in methods}
    settled = []
    for seed in range(seeds):
        plain, _ = train(task, lambda opt: opt, seed=seed, method="plain")
        # the first evaluation within 1.2 times the plain run's final loss: where its plateau begins
        settled.append(next(step for step, loss in zip(plain.steps, plain.train_loss) if loss <= 1.2 * plain.final_loss))
        for method, fields in methods.items():
            if "stop_at" in fields:
                from .variants import run_variant  # it imports this module's probes

                run, opt = run_variant(task, snap_every, fields, seed=seed, method=method, lr=task.lr)
            else:
                run, opt = train(task, wrap(fields, snap_every, task), seed=seed, method=method)
            ratios[method].append(speedup(plain, run)[0])
            finals[method].append(100 * (run.final_loss / plain.final_loss - 1))
            plateaus[method].append(plateau_ratio(plain, run))
            accuracy[method].append(100 * (run.test_accuracy[-1] - plain.test_accuracy[-1]))
            merges[method] += opt.stats.merges
            undone[method] += opt.stats.gradient_undos
            runaways[method] += opt.stats.runaways
            masks[method].append(statistics.mean(r for _, r in opt.stats.mask_ratio_history) if opt.stats.mask_ratio_history
                                 else float("nan"))
    rows = [f"| {name} | plain | within 1.2x of its final loss from step {', '.join(map(str, settled))} of {task.steps} | "
            "- | - | - | - | - | - |"]
    for method in methods:
        per_seed = ", ".join("never" if v is None else f"{v:.2f}" for v in ratios[method])
        rows.append(
            f"| {name} | {method} | {per_seed} ({spread(ratios[method])}) | "
            f"{', '.join(f'{v:+.0f}' for v in finals[method])} | "
            f"{', '.join(f'{v:.2f}' for v in plateaus[method])} (median {statistics.median(plateaus[method]):.2f}) | "
            f"{', '.join(f'{v:+.1f}' for v in accuracy[method])} | {', '.join(f'{v:.2f}' for v in masks[method])} | "
            f"{merges[method]} ({undone[method]}){f'; {runaways[method]} runaways' if runaways[method] else ''} |"
        )
    return rows


def refreshed_loss(task: Task, model: nn.Module) -> float:
    """The full training loss in eval mode with BatchNorm's running statistics recomputed on the
    training set (batches of 32, a cumulative average): what the loss is once the statistics
    have caught up with the weights."""
    copy = copy_module(model)
    for module in copy.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        copy.train()
        for start in range(0, len(task.train_x), 32):
            copy(task.train_x[start:start + 32])
        copy.eval()
        return float(task.loss(copy(task.train_x), task.train_y))


def trace_rows(name: str, seed: int, lr: float | None, optimizer: str = "sgd") -> list[str]:
    """Per evaluation of the second half of one seed's run: the plain run's, PDT's with
    ``radial="keep"`` and PDT's defaults' training loss (eval mode, and with BatchNorm's
    statistics recomputed), the objective a decay through the gradient descends (loss + weight_decay / 2 * squared norm)
    and the squared norm of all parameters."""
    task = plateau_task(**CASES[name], lr=lr, optimizer=optimizer)
    decay = CASES[name]["weight_decay"]
    wraps = {"plain": lambda opt: opt, 'radial="keep"': wrap(dict(radial="keep"), task.steps_per_epoch),
             "default": wrap({}, task.steps_per_epoch)}
    readings: dict[str, list[tuple[int, float, float, float, float]]] = {}
    for method, wrapped in wraps.items():
        training = Training(task, wrapped, seed=seed, method=method)
        readings[method] = []
        while not training.done:
            training.step()
            if training.steps_done % task.eval_every == 0 and training.steps_done > task.steps // 2:
                model = training.model
                loss, _ = evaluate(task, model)
                squared = sum(float(p.detach().pow(2).sum()) for p in model.parameters())
                readings[method].append((training.steps_done, loss, refreshed_loss(task, model),
                                         loss + decay / 2 * squared, squared))
    rows = []
    for at in zip(*readings.values()):
        cells = " | ".join(f"{loss:.4f}, {fresh:.4f}, {objective:.4f}, {squared:.0f}" for _, loss, fresh, objective, squared in at)
        rows.append(f"| {at[0][0]} | {cells} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default=None, help="the cases whose name contains this text")
    parser.add_argument("--case", default=None, help="the one case of this exact name (beside --only)")
    parser.add_argument("--methods", default="", help="comma-separated texts: the methods whose name contains one "
                        "(PDT's defaults always run)")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="sgd")
    parser.add_argument("--lr", type=float, default=None, help="the learning rate (default: the recipe's, SGD 0.1, Adam(W) 1e-3)")
    parser.add_argument("--trace", type=int, default=None, metavar="SEED",
                        help="instead: trace the second half of this seed's run of --case")
    args = parser.parse_args()
    if args.case is not None and args.case not in CASES:
        parser.error(f"--case {args.case!r}: expected one of {sorted(CASES)}")
    torch.set_num_threads(1)
    if args.trace is not None:
        if args.case is None:
            parser.error("--trace: name the case with --case")
        started = time.perf_counter()
        described, default_lr, _ = OPTIMIZERS[args.optimizer]
        lr = default_lr if args.lr is None else args.lr
        rows = trace_rows(args.case, args.trace, lr, args.optimizer)
        print("\n".join(rows))
        header = ("| step | plain: loss, loss with BatchNorm's statistics recomputed, loss + decay penalty, squared norm "
                  "| PDT, radial=\"keep\": the same | PDT's defaults: the same |\n|---|---|---|---|")
        intro = (f"{args.case}, seed {args.trace}, {described}, lr {lr:g}, batch 32, {EPOCHS} epochs, "
                 "one snapshot per epoch; the full training loss in eval mode at every evaluation of the second half "
                 f"(every half epoch). Total benchmark time {time.perf_counter() - started:.0f} s.")
        write_section(f"Merges on a converged plateau, a trace of {args.case!r}, seed {args.trace}"
                      + (f", {described}" if args.optimizer != "sgd" else "")
                      + (f", lr {lr:g}" if lr != default_lr else "") + " (benchmarks/plateau.py)",
                      intro + "\n\n" + header + "\n" + "\n".join(rows))
        return
    methods = chosen(METHODS, args.methods, always="PDT default")
    started = time.perf_counter()
    rows = ["| case | run | steps × to the plain run's final training loss, per seed | final training loss against "
            "the plain run's, per seed (%) | plateau: PDT's loss over the plain run's, median over the second half's "
            "evaluations, per seed | final test accuracy − the plain run's, per seed (points) | mean mask ratio, per seed | "
            "merges (of them undone by the gradient check; runaways the guard called), all seeds |",
            "|---|---|---|---|---|---|---|---|"]
    described, default_lr, _ = OPTIMIZERS[args.optimizer]
    lr = default_lr if args.lr is None else args.lr
    for name in CASES:
        if (args.only is None or args.only in name) and args.case in (None, name):
            rows += case_rows(name, args.seeds, lr, methods, args.optimizer)
            print("\n".join(rows[-1 - len(methods):]), flush=True)
    intro = (f"{args.seeds} seeds per case, each run from the same initial weights and batches; digits (1437 training "
             f"images), {described}, lr {lr:g}, batch 32, {EPOCHS} epochs at a constant rate, one snapshot "
             "per epoch, the full training loss evaluated every half epoch; × as benchmarks.ttb counts steps (first "
             "evaluation at the plain run's final loss, floored at 1e-6). Total benchmark time "
             f"{time.perf_counter() - started:.0f} s.")
    part = (f", cases matching {args.only!r}" if args.only else "") + (f", case {args.case!r}" if args.case else "")
    part += f", methods matching {args.methods!r}" if args.methods else ""
    part += (f", {described}" if args.optimizer != "sgd" else "") + (f", lr {lr:g}" if lr != default_lr else "")
    write_section(f"Merges on a converged plateau{part} (benchmarks/plateau.py)", intro + "\n\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
