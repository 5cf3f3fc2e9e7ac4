"""Where in a snapshot interval PDT's time goes: each training step's time over the plain
optimizer's, by the step's place in the interval.

``benchmarks.prediction_cost`` splits what PDT adds to a run into its per-step wrapper, the
gradient check and "the rest", from whole runs. This times every training step of PDT's
defaults and of the plain optimizer, side by side in lock-step (one step of each in turn, the
first alternating from round to round), and takes, for each place in the interval, the median
over the intervals after the first prediction of PDT's step time less the plain optimizer's:
the boundary step (the prediction, or a capture, and the check for non-finite weights), the
step after it (where the gradient check judges a merge, and the training step runs after the
prediction went through the caches), the steps of the gradient check's window before a
boundary (a gradient norm each) and the ordinary steps (the wrapper and the loss report). The
sum over the places is what PDT adds per interval. The runs evaluate only at their end: the step
after an evaluation runs cold, and in lock-step only the first of the two runs would pay for it.

    python -m benchmarks.interval_cost [--tasks 'digits,mnist1d CNN'] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections import defaultdict
from typing import NamedTuple

import torch

import pdt_compile as pdt
from pdt_compile.experiment import Task, Training, train_in_lockstep
from pdt_compile.runtime.gradient_check import in_window

from .prediction_cost import cases
from .report import write_section


def place(position: int, period: int, window: int) -> str:
    """What the step at ``position`` (steps done after it, modulo the interval) runs besides
    the wrapper."""
    if position == 0:
        return "boundary"
    if position == 1:
        return "after a boundary"
    if window and in_window(position - 1, period, window):
        return "gradient-check window"
    return "ordinary"


class Round(NamedTuple):
    """One lock-step pair of runs (:func:`one_round`)."""

    extra: dict[int, float]
    """Per place in the interval, the median over the intervals after the first prediction of
    PDT's step time less the plain optimizer's (seconds)."""
    period: int
    window: int
    """The gradient check's window (0 without the check)."""
    prediction: float
    """One prediction's mean time (seconds)."""
    plain_step: float
    """The plain optimizer's median step (seconds)."""


def one_round(task: Task, snap_every: int, lr: float, pdt_first: bool) -> Round:
    """PDT's defaults and the plain optimizer in lock-step, every step timed."""
    # No evaluation until the end: the step after one runs cold, and in lock-step only the first
    # of the two runs pays for it.
    task = dataclasses.replace(task, eval_every=task.steps)
    runs = {"PDT": Training(task, lambda o: pdt.PDT(o, snap_every=snap_every), seed=0, method="PDT", lr=lr),
            "plain": Training(task, lambda o: o, seed=0, method="plain", lr=lr)}
    names = {id(training): name for name, training in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    first_prediction: list[int] = []

    def on_step(training: Training, seconds: float) -> None:
        times[names[id(training)]].append(seconds)
        if training is runs["PDT"] and not first_prediction and training.optimizer.stats.predictions:
            first_prediction.append(len(times["PDT"]))

    order = ["PDT", "plain"] if pdt_first else ["plain", "PDT"]
    train_in_lockstep([runs[name] for name in order], on_step)
    optimizer = runs["PDT"].optimizer
    period = optimizer.config.snap_every
    check = optimizer._gradient_check
    start = first_prediction[0] if first_prediction else len(times["PDT"])
    extra: dict[int, list[float]] = defaultdict(list)
    for index in range(start, min(len(times["PDT"]), len(times["plain"]))):
        extra[(index + 1) % period].append(times["PDT"][index] - times["plain"][index])
    stats = optimizer.stats
    return Round({position: statistics.median(values) for position, values in extra.items()}, period,
                 check.window if check is not None else 0, stats.prediction_seconds / max(stats.predictions, 1),
                 statistics.median(times["plain"]))


def measure(task: Task, snap_every: int, lr: float, rounds: int) -> dict:
    """Medians over ``rounds`` of each place's extra time (µs), summed by kind of place."""
    results = [one_round(task, snap_every, lr, pdt_first=round_ % 2 == 0) for round_ in range(rounds)]
    period, window = results[0].period, results[0].window
    by_place: dict[str, list[float]] = defaultdict(list)
    for result in results:
        sums: dict[str, float] = defaultdict(float)
        for position, value in result.extra.items():
            sums[place(position, period, window)] += value
        for kind, value in sums.items():
            by_place[kind].append(value)
    kinds = ["boundary", "after a boundary", "gradient-check window", "ordinary"]
    counts = {kind: sum(place(p, period, window) == kind for p in range(period)) for kind in kinds}
    per_kind = {kind: 1e6 * statistics.median(by_place[kind]) if by_place[kind] else 0.0 for kind in kinds}
    interval = sum(per_kind.values())
    plain_step = statistics.median(r.plain_step for r in results)
    return {"period": period, "counts": counts, "per_kind": per_kind, "interval": interval,
            "share": interval / (1e6 * plain_step * period), "prediction": 1e6 * statistics.median(r.prediction for r in results),
            "plain_step": 1e6 * plain_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", default="digits,mnist1d CNN", help="comma-separated substrings of task names")
    args = parser.parse_args()
    torch.set_num_threads(1)
    selected = [s for s in args.tasks.split(",") if s]
    lines = [
        "| task | interval (steps) | plain step (µs) | boundary | after a boundary | gradient-check window | ordinary steps | "
        "PDT adds per interval (µs) | over the plain interval | one prediction, mean (µs) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, task, snap_every, lr in cases(selected):
        r = measure(task, snap_every, lr, args.rounds)
        cells = [f"{r['per_kind'][kind]:.0f} ({r['counts'][kind]})" for kind in r["per_kind"]]
        lines.append(f"| {name} | {r['period']} | {r['plain_step']:.0f} | " + " | ".join(cells)
                     + f" | **{r['interval']:.0f}** | {r['share']:.1%} | {r['prediction']:.0f} |")
        print(lines[-1], flush=True)
    body = "\n".join(lines) + (
        f"\n\nPDT's defaults, eager path, seed 0, 1 torch thread, beside the plain optimizer in lock-step (one training step "
        f"of each in turn, the first alternating from round to round). Each place's cell: the extra time (µs) PDT's steps "
        f"at that place take over the plain optimizer's, the median over the intervals after the first prediction, summed "
        f"over the places of that kind (their count in brackets), the median of {args.rounds} rounds. 'boundary': the step "
        f"that ends an interval (a prediction once burn-in is over); 'after a boundary': the next one (the gradient check "
        f"judges a merge there); 'gradient-check window': the steps before a boundary whose gradient norms the check keeps; "
        f"'ordinary': the wrapper and the loss report alone. 'one prediction': `stats.prediction_seconds / predictions` "
        f"(inside the boundary step's time). The interval of PDT on schedule-free is its base iterate's "
        f"(`base_spacing` x snap_every)."
    )
    title = "Where in an interval PDT's time goes (benchmarks/interval_cost.py)"
    write_section(title if args.tasks == "digits,mnist1d CNN" else f"{title}, tasks matching {args.tasks!r}", body)


if __name__ == "__main__":
    main()
