"""How much of a wall-time ratio is PDT, and how much is the machine?

benchmarks/ttb.py runs every seed of one method before the next, so a slow spell of this shared
VM lands on one method: where PDT reaches the baseline's loss on the same step, its wall ratio
is then that spell plus PDT's overhead. This trains the baseline and PDT's defaults on one task
back to back, alternating (baseline, PDT, baseline, PDT, ...; seed 0), and reports each run's
training seconds, PDT's own prediction seconds, and the step and wall speedups to the same
round's baseline's final loss.

    python -m benchmarks.paired [--task "char transformer"] [--schedule cosine] [--lr 0.012] [--rounds 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import torch

import pdt_compile as pdt
from pdt_compile.experiment import speedup, train

from .report import write_section
from .ttb import task_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="char transformer", help="a task of benchmarks.ttb whose name contains this")
    parser.add_argument("--schedule", default="cosine", choices=("constant", "cosine"))
    parser.add_argument("--lr", type=float, default=0.012, help="default: ttb --core's tuned cosine lr of the transformer")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    name, (task, snap_every) = next((n, t) for n, t in task_suite(False).items() if args.task in n)
    task = dataclasses.replace(task, schedule=args.schedule)
    rows, baselines, pdts = [], [], []
    for round_ in range(args.rounds):
        base, _ = train(task, lambda opt: opt, seed=0, method="baseline", lr=args.lr)
        run, opt = train(task, lambda opt: pdt.PDT(opt, snap_every=snap_every), seed=0, method="PDT", lr=args.lr)
        baselines.append(base.seconds[-1])
        pdts.append(run.seconds[-1])
        steps, wall = speedup(base, run, "loss")
        rows.append(f"| {round_} | {base.seconds[-1]:.2f} | {run.seconds[-1]:.2f} | {opt.stats.prediction_seconds:.3f} "
                    f"({opt.stats.predictions}) | "
                    f"{'never | never' if steps is None else f'{steps:.2f} | {wall:.2f}'} |")
    body = "\n".join([
        f"{name}, {args.schedule} schedule, lr {args.lr:g}, seed 0; runs alternate baseline, PDT.", "",
        "| round | baseline s | PDT default s | PDT prediction s (predictions) | TTB-Loss steps × | TTB-Loss wall × |",
        "|---|---|---|---|---|---|",
        *rows, "",
        f"Median baseline / PDT training time: {statistics.median(baselines) / statistics.median(pdts):.3f}."])
    print(body)
    write_section(f"Paired timing, {name}, {args.schedule} (benchmarks/paired.py)", body)


if __name__ == "__main__":
    main()
