"""What a prediction costs on the benchmark tasks' own (small) models, eager path.

On models of thousands to hundreds of thousands of parameters a prediction is bound by the
fixed cost of its torch operations and host solve, not by bytes (benchmarks/overhead.py
covers the bandwidth-bound sizes). This measures, per task, in a real training run of PDT's
defaults: the mean time of one prediction (``stats.prediction_seconds / predictions``), the
plain optimizer's mean training step, the prediction in training steps, and the predictions'
share of the plain run's training time (what they add to it), and what PDT adds to the training
time in all, split into its per-step wrapper, the gradient check and the rest (predictions,
captures), from runs timed side by side in lock-step. Schedule-free rows stack PDT on
the schedule-free peer of ``benchmarks.ttb`` at the learning rate that run tuned; its
snapshots of the base iterate come every ``base_spacing * snap_every`` steps.

    python -m benchmarks.prediction_cost [--repeats 3] [--tasks digits,mnist1d]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from typing import Callable

import torch

import pdt_compile as pdt
from pdt_compile.experiment import Task, Training, train_in_lockstep

from .report import write_section
from .ttb import peers, rotated, task_suite

SCHEDULE_FREE_LR = {
    "digits MLP / SGD": 6.4, "mnist1d CNN / SGD-momentum": 1.6, "char transformer / AdamW": 0.048,
    "mnist1d ViT / AdamW": 0.004,
}
"""Learning rates ``python -m benchmarks.ttb`` tuned for the schedule-free peers (section "Time
to baseline", run of 2026-11-30 21:22 UTC in RESULTS.md)."""


def cases(selected: list[str] | None) -> list[tuple[str, Task, int, float]]:
    """(row name, task, snap_every, lr): every ttb task with its optimizer, and the main three
    on their schedule-free peer."""
    out = []
    for name, (task, snap_every) in task_suite(quick=False).items():
        if selected and not any(s in name for s in selected):
            continue
        out.append((name, task, snap_every, task.lr))
        if name in SCHEDULE_FREE_LR:
            sf_task = dataclasses.replace(task, make_optimizer=peers(name, task)["schedule-free"])
            out.append((f"{name}, on schedule-free", sf_task, snap_every, SCHEDULE_FREE_LR[name]))
    return out


RUNS = {
    "plain": None,
    "wrapper only": lambda task, snap_every: dict(snap_every=task.steps + 1),
    "no gradient check": lambda task, snap_every: dict(snap_every=snap_every, gradient_limit=None),
    "default": lambda task, snap_every: dict(snap_every=snap_every),
}
"""The runs timed side by side: the plain optimizer; PDT with no boundary in the run (its per-step
wrapper and loss bookkeeping alone); PDT's defaults without the gradient check; the defaults."""


def wrap_for(run: str, task: Task, snap_every: int) -> Callable:
    """The ``experiment.train`` wrap of one of :data:`RUNS`."""
    options = RUNS[run]
    return (lambda opt: opt) if options is None else (lambda opt: pdt.PDT(opt, **options(task, snap_every)))


def measure(task: Task, snap_every: int, lr: float, repeats: int) -> dict:
    """Medians over ``repeats`` rounds of seed 0, each timing :data:`RUNS` in lock-step (one
    training step of each in turn, the first run rotating from round to round)."""
    names = list(RUNS)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    per_prediction, predictions = [], 0
    for round_ in range(repeats):
        order = rotated(names, round_)
        trainings = [Training(task, wrap_for(name, task, snap_every), seed=0, method=name, lr=lr) for name in order]
        for name, (run, opt) in zip(order, train_in_lockstep(trainings)):
            seconds[name].append(run.seconds[-1])
            if name == "default":
                per_prediction.append(opt.stats.prediction_seconds / max(opt.stats.predictions, 1))
                predictions = opt.stats.predictions
    plain = statistics.median(seconds["plain"])
    model = task.make_model()
    step = plain / task.steps
    prediction = statistics.median(per_prediction)
    return {
        "params": sum(p.numel() for p in model.parameters()), "tensors": len(list(model.parameters())),
        "steps": task.steps, "predictions": predictions, "prediction_ms": prediction * 1e3, "step_ms": step * 1e3,
        "in_steps": prediction / step, "share": predictions * prediction / plain,
        **{name: statistics.median(seconds[name]) / plain for name in names[1:]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", default="", help="comma-separated substrings of task names (default: all)")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="flush denormal floats to zero in every run (torch.set_flush_denormal; see benchmarks.ttb)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(args.flush_denormal)
    selected = [s for s in args.tasks.split(",") if s]
    lines = [
        "| task | params (tensors) | steps | predictions | one prediction (ms) | plain step (ms) | prediction in steps | "
        "predictions / plain training time | wrapper only / plain, wall | no gradient check / plain | PDT default / plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, task, snap_every, lr in cases(selected):
        r = measure(task, snap_every, lr, args.repeats)
        lines.append(
            f"| {name} | {r['params']:,} ({r['tensors']}) | {r['steps']} | {r['predictions']} | **{r['prediction_ms']:.2f}** | "
            f"{r['step_ms']:.3f} | {r['in_steps']:.1f} | **{r['share']:.1%}** | {r['wrapper only']:.3f} | "
            f"{r['no gradient check']:.3f} | **{r['default']:.3f}** |"
        )
        print(lines[-1], flush=True)
    body = "\n".join(lines) + (
        f"\n\nPDT's defaults, eager path, seed 0, medians of {args.repeats} rounds, 1 torch thread. Each round trains the plain "
        "optimizer, PDT with no boundary in the run (its per-step wrapper and loss bookkeeping alone), PDT's defaults "
        "without the gradient check, and the defaults in lock-step, one training step of each in turn (the first rotating "
        "from round to round), so that a drift of the machine's speed reaches all four alike. "
        "'one prediction': `stats.prediction_seconds / stats.predictions` (Gram, host solve, forecast, mask, merge, ring update, "
        "moving the optimizer's weight-space state). 'predictions / plain training time': predictions x that mean over the plain "
        "run's training seconds (evaluation excluded), what the predictions add. The last three columns: each run's training "
        "seconds over the plain run's, over the same steps (evaluation excluded)."
        + (" Denormal floats flushed to zero (`torch.set_flush_denormal(True)`) in every run." if args.flush_denormal else "")
    )
    title = "Prediction cost on the tasks' models (benchmarks/prediction_cost.py)"
    title = title if not selected else f"{title}, tasks matching {args.tasks!r}"
    write_section(title + (", denormals flushed" if args.flush_denormal else ""), body)


if __name__ == "__main__":
    main()
