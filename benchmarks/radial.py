"""How much of PDT's jumps grows the weights' norm, and whether the gradient calls that growth uphill.

Undoing the radial part of the matrices' jumps (``benchmarks.sf_harm --variants radial``) takes
most of PDT's harm away on the character transformer with schedule-free AdamW, and costs where
merges pay (the mnist1d CNN and ViT on schedule-free). This looks for what tells the cases apart:
at every prediction boundary, for every matrix (2 or more dimensions) of the tracked sequence,
the optimizer's own norm growth since the last boundary, the norm growth the merge adds (the
jump's part along the weights), and the first-order change of the loss that part makes by the
boundary step's own batch gradient (its dot product with it: positive, uphill). One seed, PDT's
defaults on each task's tuned schedule-free peer.

    python -m benchmarks.radial [--only 'char transformer'] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from torch import Tensor

import pdt_compile as pdt
from pdt_compile.experiment import train
from pdt_compile.runtime.schedule import Phase

from .report import write_section
from .sf_harm import CASES, radial_part
from .ttb import peers, task_suite


@dataclasses.dataclass
class Reading:
    """One matrix at one prediction boundary."""

    step: int
    own_growth: float
    """‖w‖ before the merge minus ‖w‖ right after the previous boundary."""
    jump_growth: float
    """The jump's component along the weights before it (<J, w> / ‖w‖)."""
    first_order: float
    """<g, radial part of J>: the loss change that part makes, to first order, by the boundary
    step's batch gradient (positive: uphill)."""


def reading(step: int, before: Tensor, after_previous: float, jump: Tensor, grad: Tensor) -> Reading:
    """The reading of one matrix whose tracked weights were ``before`` (flat) at the merge."""
    norm = before.norm()
    return Reading(step, float(norm) - after_previous, float(jump @ before / norm),
                   float(grad @ radial_part(jump, before)))


class RadialProbe(pdt.PDT):
    """PDT's defaults that record a :class:`Reading` per matrix at every merge."""

    def __init__(self, optimizer, **options) -> None:
        super().__init__(optimizer, **options)
        self.readings: list[Reading] = []
        self._norms_after: list[float | None] | None = None

    def _run_boundary(self, phase: Phase):
        if phase == Phase.ORDINARY:
            return super()._run_boundary(phase)
        prediction = super()._run_boundary(phase)
        now = [t.detach().reshape(-1).float() for t in self.tracked()]
        if prediction is not None and self._norms_after is not None:
            for p, weights, jump, previous in zip(self._ring.params, now, prediction.jumps, self._norms_after):
                if jump is None or previous is None or p.dim() < 2 or p.grad is None or not bool(jump.any()):
                    continue
                flat = jump.float()
                self.readings.append(reading(self.schedule.steps, weights - flat, previous, flat,
                                             p.grad.reshape(-1).float()))
        self._norms_after = [float(w.norm()) if p.dim() >= 2 else None for p, w in zip(self._ring.params, now)]
        return prediction


def summary_cells(readings: list[Reading]) -> str:
    """The table cells of one part of a run."""
    own = sum(r.own_growth for r in readings)
    jumps = sum(r.jump_growth for r in readings)
    growing = [r for r in readings if r.jump_growth > 0]
    uphill = sum(1 for r in growing if r.first_order > 0)
    return (f"{len(readings)} | {own:+.3g} | {jumps:+.3g} ({jumps / own:+.2f}× the optimizer's) | "
            f"{uphill / max(len(growing), 1):.0%} of {len(growing)} | {sum(r.first_order for r in readings):+.3g} |")


def case_rows(name: str, lr: float, seed: int) -> list[str]:
    task, snap_every = task_suite(quick=False)[name]
    task = dataclasses.replace(task, make_optimizer=peers(name, task)["schedule-free"])
    run, probe = train(task, lambda o: RadialProbe(o, snap_every=snap_every), seed=seed, method="probe", lr=lr)
    readings = probe.readings
    half = task.steps // 2
    return [f"| {name}, lr {lr:g} | {part} | " + summary_cells([r for r in readings if keep(r.step)])
            for part, keep in (("first half", lambda s: s <= half), ("second half", lambda s: s > half))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run only the tasks whose name contains this")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = ["| task on schedule-free | part of the run | matrix merges | optimizer's own norm growth (sum over "
            "merges of the change of ‖w‖ since the previous boundary) | norm growth the jumps add (sum of <J, w>/‖w‖) "
            "| growing jumps whose radial part is uphill for the boundary step's gradient | first-order loss change "
            "of the radial parts (sum) |", "|---|---|---|---|---|---|---|"]
    for name, lr in CASES.items():
        if args.only in name:
            new = case_rows(name, lr, args.seed)
            rows += new
            print("\n".join(new), flush=True)
    intro = (f"Seed {args.seed}, PDT's defaults on each task's tuned schedule-free peer; the tracked sequence is z. "
             "Per matrix (2 or more dimensions) and prediction boundary that merged. Total benchmark time "
             f"{time.perf_counter() - started:.0f} s.")
    part = f", tasks matching {args.only!r}" if args.only else ""
    write_section(f"Norm growth in PDT's jumps on schedule-free{part} (benchmarks/radial.py)", intro + "\n\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
