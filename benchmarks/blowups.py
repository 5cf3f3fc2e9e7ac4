"""Seeds that a merge sets back: per seed, PDT's final loss and accuracy and the largest rise of
the training loss between two evaluations, on a task stacked on the reference schedule-free
optimizer (at ``benchmarks.prediction_cost.SCHEDULE_FREE_LR``'s rate), for each horizon given.

Time-to-target tables say that a seed never reached the target, not why. A rise of the loss by
hundreds of times between two evaluations, where the schedule-free optimizer alone falls
steadily, is a run thrown out of its basin; one that ends at chance accuracy never came back.
Whether a merge threw it out or the optimizer's own motion ran away first (which PDT then
extrapolates), ``--trace`` tells: on the seed it traced (run of 2026-11-29 22:42), the latter.

    python -m benchmarks.blowups [--task 'mnist1d CNN'] [--seeds 10] [--taus 8,4]
    python -m benchmarks.blowups --trace 4 --taus 8   # one seed's merges: jump against z's own motion

``--trace SEED`` records, at every merge of that seed, the size of the jump of z (its norm
over every tracked parameter), of z itself, and of z's own motion since the previous merge:
whether a blow-up starts with a large jump or with the optimizer's own motion, which PDT then
extrapolates.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import pdt_compile as pdt
from pdt_compile.experiment import Run, train

from .prediction_cost import SCHEDULE_FREE_LR
from .report import write_section
from .stacking import reference_schedule_free
from .ttb import task_suite


def worst_rise(run: Run) -> tuple[float, int]:
    """The largest ratio of one evaluation's training loss to the previous one's, and where."""
    losses = run.train_loss
    ratios = [(losses[i] / max(losses[i - 1], 1e-30), i) for i in range(1, len(losses))]
    return max(ratios)


def trace(task, snap_every: int, lr: float, seed: int, tau: int) -> list[str]:
    """Per merge of one run: the step, |J| (the jump of z), |z| and |z - z at the previous merge|."""
    rows, previous = [], {}
    original = pdt.PDT._move_followers_

    def recording(self, jumps, scale):
        zs = [self.optimizer.state[p]["z"] for p in self._ring.params]
        jump = sum(float(j.norm()) ** 2 for j in jumps if j is not None) ** 0.5
        norm = sum(float(z.norm()) ** 2 for z in zs) ** 0.5
        moved = sum(float((z - previous[i]).norm()) ** 2 for i, z in enumerate(zs)) ** 0.5 if previous else float("nan")
        previous.update({i: z.detach().clone() for i, z in enumerate(zs)})
        rows.append(f"| {self.schedule.steps} | {jump:.3g} | {norm:.4g} | {moved:.3g} |")
        return original(self, jumps, scale)

    pdt.PDT._move_followers_ = recording
    try:
        run = train(task, lambda opt: pdt.PDT(opt, snap_every=snap_every, tau=tau), seed=seed, method="PDT", lr=lr)[0]
    finally:
        pdt.PDT._move_followers_ = original
    rise, at = worst_rise(run)
    losses = ", ".join(f"{step}: {loss:.2g}" for step, loss in zip(run.steps, run.train_loss))
    return [f"Seed {seed}, tau {tau}: largest loss rise {rise:.1f}x at step {run.steps[at]}; training loss by step: "
            f"{losses}.", "", "| step | jump of z | z | z's motion since the previous merge |", "|---|---|---|---|"] + rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="mnist1d CNN")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--taus", default="8,4", help="horizons in snap_every intervals (the default is 8)")
    parser.add_argument("--trace", type=int, default=None, help="only this seed, every merge of the first tau in --taus")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="PDT on")
    started = time.perf_counter()
    name = next(n for n in task_suite(quick=False) if args.task in n)
    task, snap_every = task_suite(quick=False)[name]
    task = reference_schedule_free(name, task)
    lr = SCHEDULE_FREE_LR[name]
    if args.trace is not None:
        lines = trace(task, snap_every, lr, args.trace, int(args.taus.split(",")[0]))
        print("\n".join(lines))
        write_section(f"Merges of one seed, {name} on schedule-free (benchmarks/blowups.py --trace)",
                      f"{name} on the reference schedule-free optimizer, lr {lr:g}; norms over every tracked parameter.\n\n"
                      + "\n".join(lines))
        return
    lines = ["| seed | method | final loss | final acc | largest loss rise between evaluations (at step) |",
             "|---|---|---|---|---|"]
    for seed in range(args.seeds):
        methods = {"schedule-free alone": lambda opt: opt}
        methods.update({f"PDT, tau {tau}": (lambda opt, t=int(tau): pdt.PDT(opt, snap_every=snap_every, tau=t))
                        for tau in args.taus.split(",")})
        for method, wrap in methods.items():
            run = train(task, wrap, seed=seed, method=method, lr=lr)[0]
            rise, at = worst_rise(run)
            lines.append(f"| {seed} | {method} | {run.final_loss:.2e} | {100 * run.test_accuracy[-1]:.1f} | "
                         f"{rise:.1f}x ({run.train_loss[at - 1]:.1e} -> {run.train_loss[at]:.1e}, step {run.steps[at]}) |")
            print(lines[-1], flush=True)
    intro = (f"{name} on the reference schedule-free optimizer, lr {lr:g}, {task.steps} steps, evaluation every "
             f"{task.eval_every} steps, {args.seeds} seeds; PDT's defaults with tau as given (in snap_every intervals; "
             f"z is snapshot every snap_every / 2 steps). Total benchmark time {time.perf_counter() - started:.0f} s.")
    write_section(f"Seeds a merge sets back, {name} on schedule-free (benchmarks/blowups.py)",
                  intro + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
