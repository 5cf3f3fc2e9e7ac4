"""What PDT should predict and move on a schedule-free optimizer, and how often to snapshot it.

A schedule-free optimizer keeps three weight sequences: z (the base SGD/AdamW iterate), x (a
running average of z, the evaluation weights) and y = (1 - beta) z + beta x (the parameters
it trains with). PDT's default (``averages="stay"``) snapshots, predicts and jumps z every
``base_spacing * snap_every`` steps (default 0.5) and leaves x in place; ``averages="move"``
translates all three by one jump, predicting y, z or x (``PDTConfig.sequence``). This
benchmark times each against the tuned schedule-free optimizer alone, on the three main tasks
and the ViT (from the run of 2026-11-29 20:12), with the reference variants (the only ones
that store x; the same algorithm as the default variants): the default, the default with every
merge verified on 256 training samples (``verify=``, as in benchmarks/ttb.py), the default at
other snapshot spacings (``base_spacing`` 1.0: every ``snap_every`` steps; 0.25), with tau 4
and 16 and predicting at every second boundary (half the predictions, on the same snapshots),
and the three all-move variants. Tau counts ``snap_every`` intervals at any spacing (from 2026-11-29
21:42, :meth:`pdt_compile.PDTConfig.spaced`): the default, tau 8, predicts 16 half intervals
ahead, and tau 4 is the previous default's horizon; in runs before then, "tau 16" was 16 half
intervals ahead, today's default.

    python -m benchmarks.stacking [--seeds 3] [--only digits] [--methods 'default:,tau 4']
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import time

import torch

import pdt_compile as pdt
from pdt_compile.experiment import Task

from .report import write_section
from .ttb import seed_major, summarise, sweep_factors, task_suite, tune_lr, verified

TASKS = ("digits MLP / SGD", "mnist1d CNN / SGD-momentum", "char transformer / AdamW", "mnist1d ViT / AdamW")


def reference_schedule_free(name: str, task: Task) -> Task:
    """``task`` with the reference schedule-free optimizer (AdamW for AdamW tasks, else SGD
    with momentum 0.9), one epoch of warmup: the peers of ``benchmarks.ttb``."""
    import schedulefree

    warmup = task.steps_per_epoch
    if "AdamW" in name:
        make = lambda params, lr: schedulefree.AdamWScheduleFreeReference(params, lr=lr, warmup_steps=warmup)
    else:
        make = lambda params, lr: schedulefree.SGDScheduleFreeReference(params, lr=lr, momentum=0.9, warmup_steps=warmup)
    return dataclasses.replace(task, make_optimizer=make)


def methods(task: Task, snap_every: int) -> dict:
    move = dict(snap_every=snap_every, averages="move")
    return {
        "schedule-free reference (tuned lr)": lambda opt: opt,
        "PDT default: z jumps, x stays, snapshots every snap_every / 2": lambda opt: pdt.PDT(opt, snap_every=snap_every),
        "PDT default + verify (256 training samples)": verified(task, snap_every),
        "PDT default, base_spacing 1.0 (snapshots every snap_every)": lambda opt: pdt.PDT(opt, snap_every=snap_every, base_spacing=1.0),
        # On schedule-free SGD momentum_spacing would raise a quarter epoch back to 20 steps.
        "PDT default, base_spacing 0.25 (momentum_spacing=None)": lambda opt: pdt.PDT(
            opt, snap_every=snap_every, base_spacing=0.25, momentum_spacing=None),
        "PDT default, tau 4 (8 half intervals ahead: the default until 2026-11-29 21:42)":
            lambda opt: pdt.PDT(opt, snap_every=snap_every, tau=4),
        "PDT default, tau 16": lambda opt: pdt.PDT(opt, snap_every=snap_every, tau=16),
        "PDT default, predicting at every 2nd boundary (predict_every=2)":
            lambda opt: pdt.PDT(opt, snap_every=snap_every, predict_every=2),
        "PDT on y, all move": lambda opt: pdt.PDT(opt, **move),
        "PDT on z, all move": lambda opt: pdt.PDT(opt, sequence="z", **move),
        "PDT on x, all move": lambda opt: pdt.PDT(opt, sequence="x", **move),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default=None, help="run the tasks whose name contains this text")
    parser.add_argument("--methods", default=None,
                        help="comma-separated texts: run only the PDT rows whose name contains one (the reference always runs)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sections, started = [], time.perf_counter()
    suite = task_suite(quick=False)
    for name in TASKS:
        if args.only and args.only not in name:
            continue
        task, snap_every = suite[name]
        task = reference_schedule_free(name, task)
        with contextlib.redirect_stdout(io.StringIO()):
            lr, sweep = tune_lr(task, sweep_factors(name))
        chosen = methods(task, snap_every)
        if args.methods:
            wanted = args.methods.split(",")
            chosen = {m: wrap for i, (m, wrap) in enumerate(chosen.items()) if i == 0 or any(w in m for w in wanted)}
        runs = seed_major(task, chosen, args.seeds, lr)
        text = summarise(f"{name}: PDT on schedule-free", runs, lr, sweep, snap_every, task)
        print(text + "\n", flush=True)
        sections.append(text)
    intro = (f"Median over {args.seeds} seeds [min–max]; × = the tuned schedule-free optimizer's time / the method's "
             "time to the schedule-free optimizer's final training loss (TTB-Loss) or best test accuracy (TTB-Acc); "
             "wall time counts every training step with all PDT overhead, 1 torch thread; timed as benchmarks.ttb times "
             "its tables (benchmarks.ttb.seed_major: seed by seed, each seed's methods in lock-step, rotated, short runs repeated; "
             "lock-step from 2026-11-30 13:20 UTC). Reference schedule-free variants (they store x). "
             f"Total benchmark time {time.perf_counter() - started:.0f} s.")
    only = f", tasks matching {args.only!r}" if args.only else ""
    only += f", rows matching {args.methods!r}" if args.methods else ""
    write_section(f"Stacking on schedule-free: what to predict, what moves, how often{only} (benchmarks/stacking.py)",
                  intro + "\n\n" + "\n\n".join(sections))


if __name__ == "__main__":
    main()
