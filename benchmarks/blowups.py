"""Seeds that a merge sets back: per seed, PDT's final loss and accuracy and the largest rise of
the training loss between two evaluations, on a task stacked on the reference schedule-free
optimizer (at ``benchmarks.prediction_cost.SCHEDULE_FREE_LR``'s rate), for each horizon given.

Time-to-target tables say that a seed never reached the target, not why. A rise of the loss by
hundreds of times between two evaluations, where the schedule-free optimizer alone falls
steadily, is a merge that threw the run out of its basin; a run that ends at chance accuracy
never came back.

    python -m benchmarks.blowups [--task 'mnist1d CNN'] [--seeds 10] [--taus 8,4]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="mnist1d CNN")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--taus", default="8,4", help="horizons in snap_every intervals (the default is 8)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="PDT on")
    started = time.perf_counter()
    name = next(n for n in task_suite(quick=False) if args.task in n)
    task, snap_every = task_suite(quick=False)[name]
    task = reference_schedule_free(name, task)
    lr = SCHEDULE_FREE_LR[name]
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
