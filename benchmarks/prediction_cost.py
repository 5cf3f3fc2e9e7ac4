"""What a prediction costs on the benchmark tasks' own (small) models, eager path.

On models of thousands to hundreds of thousands of parameters a prediction is bound by the
fixed cost of its torch operations and host solve, not by bytes (benchmarks/overhead.py
covers the bandwidth-bound sizes). This measures, per task, in a real training run of PDT's
defaults: the mean time of one prediction (``stats.prediction_seconds / predictions``), the
plain optimizer's mean training step, the prediction in training steps, and the predictions'
share of the plain run's training time (what they add to it). Schedule-free rows stack PDT on
the schedule-free peer of ``benchmarks.ttb`` at the learning rate that run tuned; its
snapshots of the base iterate come every ``base_spacing * snap_every`` steps.

    python -m benchmarks.prediction_cost [--repeats 3] [--tasks digits,mnist1d]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import torch

import pdt_compile as pdt
from pdt_compile.experiment import Task, train

from .report import write_section
from .ttb import peers, task_suite

SCHEDULE_FREE_LR = {"digits MLP / SGD": 6.4, "mnist1d CNN / SGD-momentum": 1.6, "char transformer / AdamW": 0.048}
"""Learning rates ``python -m benchmarks.ttb --peers`` tuned for the schedule-free peers (run of
2026-11-29 02:17 UTC in RESULTS.md)."""


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


def measure(task: Task, snap_every: int, lr: float, repeats: int) -> dict:
    """Medians over ``repeats`` run pairs (plain, PDT) of seed 0."""
    plain_seconds, pdt_seconds, per_prediction, predictions = [], [], [], 0
    for _ in range(repeats):
        plain, _ = train(task, lambda opt: opt, seed=0, method="plain", lr=lr)
        run, opt = train(task, lambda opt: pdt.PDT(opt, snap_every=snap_every), seed=0, method="PDT", lr=lr)
        stats = opt.stats
        plain_seconds.append(plain.seconds[-1])
        pdt_seconds.append(run.seconds[-1])
        per_prediction.append(stats.prediction_seconds / max(stats.predictions, 1))
        predictions = stats.predictions
    model = task.make_model()
    step = statistics.median(plain_seconds) / task.steps
    prediction = statistics.median(per_prediction)
    return {
        "params": sum(p.numel() for p in model.parameters()), "tensors": len(list(model.parameters())),
        "steps": task.steps, "predictions": predictions, "prediction_ms": prediction * 1e3, "step_ms": step * 1e3,
        "in_steps": prediction / step, "share": predictions * prediction / statistics.median(plain_seconds),
        "wall": statistics.median(pdt_seconds) / statistics.median(plain_seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", default="", help="comma-separated substrings of task names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    selected = [s for s in args.tasks.split(",") if s]
    lines = [
        "| task | params (tensors) | steps | predictions | one prediction (ms) | plain step (ms) | prediction in steps | predictions / plain training time | PDT run / plain run, wall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, task, snap_every, lr in cases(selected):
        r = measure(task, snap_every, lr, args.repeats)
        lines.append(
            f"| {name} | {r['params']:,} ({r['tensors']}) | {r['steps']} | {r['predictions']} | **{r['prediction_ms']:.2f}** | "
            f"{r['step_ms']:.3f} | {r['in_steps']:.1f} | **{r['share']:.1%}** | {r['wall']:.2f} |"
        )
        print(lines[-1], flush=True)
    body = "\n".join(lines) + (
        f"\n\nPDT's defaults, eager path, seed 0, medians of {args.repeats} run pairs (plain optimizer, then PDT), 1 torch thread. "
        "'one prediction': `stats.prediction_seconds / stats.predictions` (Gram, host solve, forecast, mask, merge, ring update, "
        "moving the optimizer's weight-space state). 'predictions / plain training time': predictions x that mean over the plain "
        "run's training seconds (evaluation excluded), what the predictions add. The last column compares the two runs' "
        "training seconds over the same steps (the predictions and the wrapper's per-step cost), with the VM's run-to-run "
        "noise (about ±10 %)."
    )
    title = "Prediction cost on the tasks' models (benchmarks/prediction_cost.py)"
    write_section(title if not selected else f"{title}, tasks matching {args.tasks!r}", body)


if __name__ == "__main__":
    main()
