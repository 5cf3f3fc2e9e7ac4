"""How much PDT can gain on the character transformer (AdamW), over snapshot spacings and tau.

Until its run of 2026-11-29 19:35 benchmarks/ttb.py evaluated this task every 100 of 1000
steps, where PDT's defaults reached the tuned baseline's final training loss at the same
evaluation step (1.11x would need it reached at step 900); this measured the gain at a finer
grain, evaluations every 25 steps (the task's own grain since), seeds run one after another
(baseline and every method of a seed back to back, so a slow spell of the shared machine does
not land on one method), for snapshots every 15, 30 (ttb's setting), 60 and 90 steps and tau
4, 8 and 16, at the tuned constant learning rate of benchmarks/ttb.py --core. 'final loss gap'
is the baseline's final training loss minus the method's (positive: PDT ends lower).

    python -m benchmarks.spacing [--seeds 3] [--steps 1000] [--schedule constant|cosine] [--lr LR]

``--schedule cosine`` (from 2026-11-30) measures the same settings under the per-step cosine
schedule, the task's better baseline in benchmarks/ttb.py --core, at its tuned rate 0.012.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

import pdt_compile as pdt
from pdt_compile.experiment import Run, speedup, train

from .report import write_section
from .ttb import spread, task_suite

TUNED_LR = {"constant": 0.006, "cosine": 0.012}
"""benchmarks/ttb.py --core's tuned rates for the task (runs of 2026-11-29)."""

SETTINGS = {  # method -> (snap_every, tau)
    "PDT default (snapshot every 30, tau 8)": (30, 8),
    "snapshot every 15, tau 8": (15, 8),
    "snapshot every 60, tau 8": (60, 8),
    "snapshot every 90, tau 8": (90, 8),
    "snapshot every 30, tau 4": (30, 4),
    "snapshot every 30, tau 16": (30, 16),
    "snapshot every 15, tau 16": (15, 16),
}


def row(method: str, baselines: list[Run], runs: list[Run]) -> str:
    loss = [speedup(b, r, "loss") for b, r in zip(baselines, runs)]
    gaps = [b.final_loss - r.final_loss for b, r in zip(baselines, runs)]
    accuracy = [100 * r.test_accuracy[-1] for r in runs]
    masks = [statistics.mean(v for _, v in r.mask_ratio) for r in runs if r.mask_ratio]
    return (f"| {method} | {', '.join('never' if s is None else f'{s:.2f}' for s, _ in loss)} | "
            f"{spread([t for _, t in loss])} | {spread(gaps, '{:+.4f}')} | {spread(accuracy, '{:.1f}')} | "
            f"{spread(masks, '{:.3f}') if masks else '-'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--schedule", default="constant", choices=sorted(TUNED_LR))
    parser.add_argument("--lr", type=float, default=None, help="default: ttb --core's tuned rate for the schedule")
    args = parser.parse_args()
    lr = TUNED_LR[args.schedule] if args.lr is None else args.lr
    torch.set_num_threads(1)
    started = time.perf_counter()
    task, _ = task_suite(quick=False)["char transformer / AdamW"]
    task = dataclasses.replace(task, steps=args.steps, schedule=args.schedule)
    wraps = {"baseline": lambda opt: opt}
    wraps.update({method: (lambda opt, s=snap, t=tau: pdt.PDT(opt, snap_every=s, tau=t))
                  for method, (snap, tau) in SETTINGS.items()})
    runs: dict[str, list[Run]] = {method: [] for method in wraps}
    for seed in range(args.seeds):
        for method, wrap in wraps.items():
            runs[method].append(train(task, wrap, seed=seed, method=method, lr=lr)[0])
    baselines = runs["baseline"]
    lines = [f"char transformer / AdamW, {args.schedule} lr {lr:g}, {args.steps} steps, batch {task.batch_size}, "
             f"evaluation every {task.eval_every} steps, {args.seeds} seeds (seed-major order). Baseline final training loss "
             f"{spread([b.final_loss for b in baselines], '{:.4f}')}, final accuracy "
             f"{spread([100 * b.test_accuracy[-1] for b in baselines], '{:.1f}')}. "
             f"Total benchmark time {time.perf_counter() - started:.0f} s.", "",
             "| method | TTB-Loss steps × per seed | TTB-Loss wall × | final loss gap | final acc | mean mask ratio |",
             "|---|---|---|---|---|---|"]
    lines += [row(method, baselines, method_runs) for method, method_runs in runs.items() if method != "baseline"]
    body = "\n".join(lines)
    print(body)
    suffix = ("" if args.steps == 1000 else f", {args.steps} steps") + ("" if args.schedule == "constant" else f", {args.schedule}")
    write_section(f"Snapshot spacing and tau on the character transformer{suffix} (benchmarks/spacing.py)", body)


if __name__ == "__main__":
    main()
