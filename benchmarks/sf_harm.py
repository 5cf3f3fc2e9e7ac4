"""Where PDT's harm on the character transformer with schedule-free AdamW comes from.

PDT on schedule-free AdamW never reaches the schedule-free optimizer's own final training loss
on the character transformer (``benchmarks.ttb``, section "Time to baseline"), while on the
other tasks it pays. This trains, per seed from the same initial weights and batches, the
schedule-free optimizer alone and PDT's defaults on it, then PDT with merges kept to one class
of tensors (the others only snapshotted), with a shorter horizon, and with every accepted
element of a merge undone where the jump disagrees in sign with the displacement of the
evaluation weights x over the last interval (x = (y - (1 - beta) z) / beta, what schedule-free
evaluates; where it agrees, the jump follows the averaged trajectory, not only the base
iterate's noise). The two wrappers below override PDT internals (``_skipped``,
``_run_boundary``): they are probes for this question, not features. The mnist1d CNN on schedule-free SGD and the mnist1d ViT on schedule-free AdamW, where merges pay, are
the controls.

    python -m benchmarks.sf_harm [--seeds 3] [--only 'char transformer'] [--variants radial] [--weight-decay 0.01]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Callable

import torch
from torch import Tensor

import pdt_compile as pdt
from pdt_compile.experiment import needs_model, speedup, train
from pdt_compile.radial import radial_part
from pdt_compile.runtime.schedule import Phase

from .report import chosen, write_section
from .ttb import peers, task_suite

CASES = {"char transformer / AdamW": 0.048, "mnist1d CNN / SGD-momentum": 1.6, "mnist1d ViT / AdamW": 0.004}
"""Task -> the schedule-free peer's learning rate ``benchmarks.ttb`` tuned (section "Time to
baseline", run of 2026-11-30 21:22; the ViT's: "Time to baseline, core and peers", run of
2026-11-30 15:34). The CNN and the ViT, where merges pay, are the controls."""

Filter = Callable[[str, Tensor], bool]

TABLES = ("position", "embed.weight", "out.weight")
"""The character transformer's position, token and output tables."""

SUBSETS: dict[str, Filter] = {
    "merges in 1-D tensors only (norms, biases)": lambda name, p: p.dim() < 2,
    "merges in matrices only": lambda name, p: p.dim() >= 2,
    "merges in matrices but the transformer's position, token and output tables":
        lambda name, p: p.dim() >= 2 and name not in TABLES,
}
"""Variant -> which parameters (by name and tensor) may merge; the others are snapshotted only."""


class SubsetPDT(pdt.PDT):
    """PDT whose merges reach only the parameters in ``allowed``: the others count as without a
    gradient at every boundary, which PDT snapshots and leaves in place."""

    def __init__(self, optimizer, allowed: set[int], **options) -> None:
        super().__init__(optimizer, **options)
        self._frozen = [id(p) not in allowed for p in self._ring.params]

    def _skipped(self) -> list[bool]:
        return [a or b for a, b in zip(super()._skipped(), self._frozen)]


def subset_wrap(allowed: Filter, snap_every: int) -> Callable:
    """A wrap for ``experiment.train`` (given the model) that merges only where ``allowed``."""
    @needs_model
    def wrap(optimizer, model):
        merging = {id(p) for name, p in model.named_parameters() if allowed(name, p)}
        return SubsetPDT(optimizer, merging, snap_every=snap_every)
    return wrap


def disagreeing_part(jump: Tensor, displacement: Tensor) -> Tensor:
    """The part of ``jump`` on the elements where it moves against ``displacement`` (0 elsewhere)."""
    return torch.where((jump != 0) & (torch.sign(jump) != torch.sign(displacement)), jump, torch.zeros_like(jump))


def take_back_(opt: pdt.PDT, jumps: list, parts: list, kept: list[int] | None = None) -> None:
    """Undo ``parts`` of a merge's ``jumps`` (one per jump; None: nothing) from ``opt``'s weights,
    what moved with them and its snapshots, and from the jumps themselves; ``kept``, if given,
    adds [elements the merge still moves, elements it moved]."""
    for jump, part in zip(jumps, parts):
        if jump is None or part is None:
            continue
        if kept is not None:
            moved = int((jump != 0).sum())
            kept[0] += moved - int((part != 0).sum())
            kept[1] += moved
    opt._translate_(parts, -1.0)
    for jump, part in zip(jumps, parts):
        if jump is not None and part is not None:
            jump.sub_(part.to(jump.dtype))


class UndoingPDT(pdt.PDT):
    """A probe's PDT that takes back, after each merge, the parts of its jumps that
    :meth:`undo_parts` picks from what :meth:`before_merge` read just before it;
    ``kept``: [elements kept, elements merged] over the run."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.keeps_jumps:
            raise ValueError(f"{type(self).__name__}: it undoes parts of each merge's jump, which PDT keeps only with "
                             "an option that needs them (e.g. the default gradient_limit); gradient_limit=None leaves "
                             "it nothing")
        self.kept = [0, 0]

    def before_merge(self) -> list | None:
        """What :meth:`undo_parts` needs, per tracked parameter, read before a prediction (None: undo nothing)."""
        raise NotImplementedError

    def undo_parts(self, jumps: list, before: list) -> list:
        """The part of each jump (None: nothing) to take back."""
        raise NotImplementedError

    def _run_boundary(self, phase: Phase):
        before = self.before_merge() if phase == Phase.PREDICT else None
        prediction = super()._run_boundary(phase)
        if prediction is not None and before is not None:
            take_back_(self, prediction.jumps, self.undo_parts(prediction.jumps, before), self.kept)
        return prediction


class XAgreeingPDT(pdt.PDT):
    """PDT on schedule-free that undoes, after each merge, the accepted elements whose jump
    disagrees in sign with the evaluation weights' displacement since the previous boundary."""

    def __init__(self, optimizer, **options) -> None:
        super().__init__(optimizer, **options)
        self._previous_x: list[Tensor | None] | None = None
        self.kept = [0, 0]

    def _evaluation_weights(self) -> list[Tensor | None]:
        group = self.optimizer.param_groups[0]
        beta = group["betas"][0] if "betas" in group else group["momentum"]
        state = self.optimizer.state
        return [((p.detach() - (1 - beta) * state[p]["z"]) / beta).reshape(-1).clone() if "z" in state[p] else None
                for p in self._ring.params]

    def _run_boundary(self, phase: Phase):
        prediction = super()._run_boundary(phase)
        if phase == Phase.ORDINARY:
            return prediction
        now = self._evaluation_weights()
        if prediction is not None and self._previous_x is not None:
            undo = []
            for jump, x, before in zip(prediction.jumps, now, self._previous_x):
                if jump is None or x is None or before is None:
                    undo.append(None)
                    continue
                undo.append(disagreeing_part(jump, x - before))
            take_back_(self, prediction.jumps, undo, self.kept)
        self._previous_x = now
        return prediction


class TangentialPDT(pdt.PDT):
    """PDT whose merges of the tensors :attr:`selects` picks (by default matrices: 2 or more
    dimensions) keep only the part of the jump that turns the base iterate: the radial part,
    along the weights before the merge, is undone (of each output row on its own when
    :attr:`per_row`). Tests whether extrapolated norm growth is what costs on schedule-free
    AdamW."""

    selects: Callable[[Tensor], bool] = staticmethod(lambda p: p.dim() >= 2)
    per_row = False

    def _run_boundary(self, phase: Phase):
        prediction = super()._run_boundary(phase)
        if prediction is None or phase == Phase.ORDINARY:
            return prediction
        undo = []
        for p, tracked, jump in zip(self._ring.params, self.tracked(), prediction.jumps):
            if jump is None or not self.selects(p):
                undo.append(None)
                continue
            rows = p.shape[0] if self.per_row and p.dim() else 1
            undo.append(radial_part(jump, tracked.detach().reshape(-1).float() - jump, rows))
        take_back_(self, prediction.jumps, undo)
        return prediction


class ClockPDT(pdt.PDT):
    """PDT whose merges also move a schedule-free optimizer's averaging clock: its
    ``weight_sum`` (what x, the average of z, has taken in) grows by the weight of the steps a
    merge skips, the horizon in steps times the fraction of elements it merged. After a jump
    that stands for those steps, later z weigh in x as they would after that many steps, so a
    jump of z enters x no faster than the steps it replaces would have. Tests whether x taking
    in the jumped z at the rate of the real step count is what costs on schedule-free AdamW."""

    def _run_boundary(self, phase: Phase):
        prediction = super()._run_boundary(phase)
        if prediction is None or phase == Phase.ORDINARY:
            return prediction
        counts = prediction.resolved()
        live = [(count, p.numel()) for count, p in zip(counts, self._ring.params) if count is not None]
        merged = sum(count for count, _ in live) / max(1, sum(numel for _, numel in live))
        skipped = merged * self.schedule.tau * self.config.snap_every
        for group in self.optimizer.param_groups:
            if "weight_sum" in group and group.get("lr_max", -1.0) > 0:
                weight = (group["k"] ** group["r"]) * group["lr_max"] ** group["weight_lr_power"]
                group["weight_sum"] += skipped * weight
        return prediction


class ForgetOnlyPDT(pdt.PDT):
    """PDT whose runaway guard forgets the snapshots and burns in again but leaves the weights
    where the optimizer has them (the defaults also move them back to the last sound
    snapshot). Tests whether moving schedule-free AdamW's z back is what turns its own loss
    spikes, which it settles by itself, into a cascade of runaways (benchmarks/FINDINGS.md,
    "The runaway guard on schedule-free AdamW")."""

    def _translate_(self, jumps: list, scale, restoring: bool = False) -> None:
        if not restoring:  # a restore's way back is the one move this probe leaves out
            super()._translate_(jumps, scale)


def variants(snap_every: int) -> dict[str, Callable]:
    """Variant name -> wrap(optimizer) for one task."""
    out: dict[str, Callable] = {
        "PDT default": lambda o: pdt.PDT(o, snap_every=snap_every),
        "PDT, tau 4 (half the horizon)": lambda o: pdt.PDT(o, snap_every=snap_every, tau=4),
    }
    for name, allowed in SUBSETS.items():
        out[f"PDT, {name}"] = subset_wrap(allowed, snap_every)
    out["PDT, jumps that disagree with x's displacement undone"] = lambda o: XAgreeingPDT(o, snap_every=snap_every)
    out["PDT, the radial part of matrices' jumps undone"] = lambda o: TangentialPDT(o, snap_every=snap_every)
    out["PDT, drift 1.5 (jumps only where the ring's path drifts)"] = lambda o: pdt.PDT(o, snap_every=snap_every, drift=1.5)
    return out


def with_weight_decay(make_optimizer: Callable, weight_decay: float | None) -> Callable:
    """``make_optimizer`` with every param group's ``weight_decay`` set (None: as it is)."""
    if weight_decay is None:
        return make_optimizer

    def make(params, lr):
        optimizer = make_optimizer(params, lr)
        for group in optimizer.param_groups:
            group["weight_decay"] = weight_decay
        return optimizer
    return make


def case_rows(name: str, lr: float, seeds: int, names: str = "", weight_decay: float | None = None) -> list[str]:
    """One row per variant (or per variant whose name contains one of the comma-separated
    ``names``; the default always runs) of ``name`` on its schedule-free peer at ``lr``, with
    ``weight_decay`` when given (the peer's default, 0, otherwise)."""
    task, snap_every = task_suite(quick=False)[name]
    task = dataclasses.replace(task, make_optimizer=with_weight_decay(peers(name, task)["schedule-free"], weight_decay))
    if weight_decay is not None:
        name = f"{name}, weight decay {weight_decay:g}"
    wraps = chosen(variants(snap_every), names, always="PDT default")
    cells: dict[str, list[tuple[float | None, float, float, str]]] = {v: [] for v in wraps}
    for seed in range(seeds):
        baseline, _ = train(task, lambda o: o, seed=seed, method="schedule-free", lr=lr)
        for variant, wrap in wraps.items():
            run, opt = train(task, wrap, seed=seed, method=variant, lr=lr)
            kept = getattr(opt, "kept", None)
            cells[variant].append((
                speedup(baseline, run)[0],
                (run.final_loss / baseline.final_loss - 1) * 100,
                (run.test_accuracy[-1] - baseline.test_accuracy[-1]) * 100,
                f"{kept[0] / max(kept[1], 1):.0%}" if kept else "-",
            ))
    rows = []
    for variant, values in cells.items():
        steps = ", ".join("never" if v is None else f"{v:.2f}" for v, _, _, _ in values)
        loss = ", ".join(f"{d:+.1f}" for _, d, _, _ in values)
        accuracy = ", ".join(f"{d:+.1f}" for _, _, d, _ in values)
        median = statistics.median(d for _, d, _, _ in values)
        rows.append(f"| {name}, lr {lr:g} | {variant} | {steps} | {loss} (median {median:+.1f}) | {accuracy} | "
                    f"{', '.join(k for _, _, _, k in values)} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default="", help="run only the tasks whose name contains this")
    parser.add_argument("--variants", default="", help="comma-separated: run only the variants whose name contains one "
                        "of these (and the default)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="the schedule-free peer's weight decay (default: its own, 0), the same for every run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = ["| task on schedule-free | run | steps × per seed (to schedule-free's final training loss) | final training loss "
            "against schedule-free's, per seed (%) | final accuracy − schedule-free's, per seed (points) | "
            "accepted elements kept, per seed |", "|---|---|---|---|---|---|"]
    for name, lr in CASES.items():
        if args.only in name:
            new = case_rows(name, lr, args.seeds, args.variants, args.weight_decay)
            rows += new
            print("\n".join(new), flush=True)
    intro = (f"{args.seeds} seeds per task; every run of a seed from the same initial weights and batches. × = "
             "schedule-free's steps over the run's to schedule-free's final training loss, first evaluation at it "
             "(never: not within the budget). Subset rows snapshot every tensor but merge only the named ones. "
             f"Total benchmark time {time.perf_counter() - started:.0f} s.")
    part = f", tasks matching {args.only!r}" if args.only else ""
    part += f", variants matching {args.variants!r}" if args.variants else ""
    part += f", weight decay {args.weight_decay:g}" if args.weight_decay is not None else ""
    write_section(f"Where PDT's harm on schedule-free comes from{part} (benchmarks/sf_harm.py)", intro + "\n\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
