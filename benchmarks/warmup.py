"""PDT under a linear warmup then a cosine schedule, the schedule transformers are commonly
trained with: the learning rate rises over the first tenth of the steps
(``experiment.WARMUP_FRACTION``), then falls to zero. PDT predicts while it rises (no guard
holds it then: ``decay_window`` acts only once it falls), so this is where a merge could
extrapolate the warmup's acceleration. For each task: the warmup-cosine baseline's rate is tuned
as ``benchmarks.ttb`` tunes its baselines, then the baseline and PDT's defaults train on it in
lock-step, seed by seed.

    python -m benchmarks.warmup [--only 'char transformer'] [--seeds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Callable

import torch

import pdt_compile as pdt
from pdt_compile.experiment import Run, Task, speedup

from .report import write_section
from .ttb import peers, seed_major, summarise, sweep_factors, task_suite, tune_lr

TASKS = ("char transformer / AdamW", "mnist1d ViT / AdamW")
"""The AdamW transformers (issue 11's tasks)."""


def per_seed(baselines: list[Run], runs: list[Run]) -> str:
    """Each seed's PDT run against its own baseline: steps and wall time to the baseline's
    final training loss, and the final test accuracies."""
    lines = []
    for seed, (base, run) in enumerate(zip(baselines, runs)):
        steps, wall = speedup(base, run, "loss")
        reached = "never" if steps is None else f"{steps:.2f}x in steps, {wall:.2f}x in wall time"
        lines.append(f"- seed {seed}: {reached}; test accuracy {run.test_accuracy[-1] * 100:.1f} % against "
                     f"{base.test_accuracy[-1] * 100:.1f} %")
    return "\n".join(lines)


def on_schedule(name: str, schedule: str, methods: Callable[[int], dict[str, Callable]], seeds: int,
                lr: float | None = None, first_seed: int = 0,
                peer: str | None = None) -> tuple[Task, int, float, list, dict[str, list[Run]]]:
    """The suite's task ``name`` on ``schedule``, with its optimizer or the peer whose name
    contains ``peer`` (:func:`benchmarks.ttb.peers`): that optimizer's rate tuned there (unless
    ``lr`` is given), then ``methods(snap_every)`` (the baseline first) in lock-step, seed by
    seed. Returns the task, its snapshot interval, the rate, the sweep and the runs."""
    base, snap_every = task_suite(quick=False)[name]
    task = dataclasses.replace(base, schedule=schedule)
    if peer is not None:
        chosen = [make for key, make in peers(name, task).items() if peer in key]
        if len(chosen) != 1:
            raise SystemExit(f"--peer {peer!r} names {len(chosen)} of the peers of {name!r}: {sorted(peers(name, task))}")
        task = dataclasses.replace(task, make_optimizer=chosen[0])
    lr, sweep = (lr, []) if lr is not None else tune_lr(task, sweep_factors(name))
    return task, snap_every, lr, sweep, seed_major(task, methods(snap_every), seeds, lr, first_seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run only the tasks whose name contains this")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sections = []
    for name in (n for n in TASKS if args.only in n):
        task, snap_every, lr, sweep, runs = on_schedule(name, "warmup-cosine", lambda snap_every: {
            "baseline, warmup-cosine (tuned lr)": lambda opt: opt,
            "PDT default, warmup-cosine": lambda opt: pdt.PDT(opt, snap_every=snap_every),
        }, args.seeds)
        sections.append(summarise(f"{name}: warmup then cosine", runs, lr, sweep, snap_every, task) + "\n\n"
                        + per_seed(*runs.values()))
        print(sections[-1], flush=True)
    title = "Time to baseline under a warmup then cosine schedule (benchmarks/warmup.py)"
    if args.only:
        title += f", tasks matching {args.only!r}"
    if args.seeds != 3:
        title += f", {args.seeds} seeds"
    write_section(title, "\n\n".join(sections))


if __name__ == "__main__":
    main()
