"""PDT under the decaying schedules SGD users train with besides cosine: the classic step
schedule (the rate divided by 10 at half and at three quarters of the steps, ``MultiStepLR``), an
exponential decay (``ExponentialLR``, per step, to a hundredth of the rate at the end), cosine
with warm restarts (``CosineAnnealingWarmRestarts``, four cosines, each back at the peak: the rate
rises at once where PDT's ring still holds the low-rate end of the last cosine) and the one-cycle
policy (``OneCycleLR``, momentum cycled against the rate where the optimizer has it). For
each task and schedule the baseline's rate is tuned there as ``benchmarks.ttb`` tunes its
baselines; then the baseline and PDT's defaults train in lock-step, seed by seed, and on the
exponential schedule also PDT with ``decay_window=None`` (predictions at every rate; the defaults
hold them while a decay is above half the peak, there the first 15 % of the steps). On the step
schedule that control would make the defaults' predictions: each drop goes straight below half
the peak.

    python -m benchmarks.schedules [--only 'digits MLP'] [--schedule steps|exponential|restarts|one-cycle] [--seeds 3] [--lr 0.4]
"""

from __future__ import annotations

import argparse

import torch

import pdt_compile as pdt
from pdt_compile.experiment import EXPONENTIAL_END, RESTART_CYCLES, STEP_FACTOR, STEP_FRACTIONS

from .rate_drop import per_seed
from .report import run_title, write_section
from .ttb import add_test_samples_argument, summarise
from .warmup import on_schedule

TASKS = ("digits MLP / SGD", "mnist1d CNN / SGD-momentum", "digits MLP / LAMB", "mnist1d ViT / AdamW",
         "char transformer / AdamW")

NO_WINDOW = "PDT, decay_window=None (predicts at every rate)"

SCHEDULES = {
    "steps": f"rate x{STEP_FACTOR:g} at {' and '.join(f'{f:g}' for f in STEP_FRACTIONS)} of the steps (MultiStepLR)",
    "exponential": f"rate x{EXPONENTIAL_END:g} over the run, per step (ExponentialLR)",
    "restarts": f"{RESTART_CYCLES} cosines to zero, each back at the rate, per step (CosineAnnealingWarmRestarts)",
    "one-cycle": "up to the rate over 30 % of the steps, then down, momentum cycled against it (OneCycleLR)",
}


def methods(schedule: str, snap_every: int) -> dict:
    """The baseline and PDT's defaults; on the exponential schedule also PDT without the decay
    window (on the step schedule it would make the defaults' predictions)."""
    chosen = {f"baseline, {schedule} (tuned lr)": lambda opt: opt,
              "PDT default": lambda opt: pdt.PDT(opt, snap_every=snap_every)}
    if schedule == "exponential":
        chosen[NO_WINDOW] = lambda opt: pdt.PDT(opt, snap_every=snap_every, decay_window=None)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run only the tasks whose name contains this")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), action="append",
                        help="a schedule to run (repeat for several; default every one)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, first-seed + 1, ...")
    parser.add_argument("--lr", type=float, default=None, help="train at this rate instead of tuning one")
    add_test_samples_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    schedules = args.schedule or list(SCHEDULES)
    sections = []
    for name in (n for n in TASKS if args.only in n):
        for schedule in schedules:
            task, snap_every, lr, sweep, runs = on_schedule(
                name, schedule, lambda snap_every: methods(schedule, snap_every), args.seeds, args.lr, args.first_seed,
                test_samples=args.test_samples)
            title = f"{name}: {SCHEDULES[schedule]}"
            sections.append(summarise(title, runs, lr, sweep, snap_every, task) + "\n\n" + per_seed(runs, args.first_seed))
            print(sections[-1], flush=True)
    title = run_title("Time to baseline under other schedules (benchmarks/schedules.py)",
                      args.only, args.seeds, args.first_seed, args.lr,
                      ((" and ".join(schedules),) if args.schedule else ())
                      + ((f"test accuracy on {args.test_samples} samples",) if args.test_samples else ()))
    write_section(title, "\n\n".join(sections))


if __name__ == "__main__":
    main()
