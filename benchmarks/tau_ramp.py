"""A safer first merge: does ramping the horizon up over the first merges (``tau_ramp``) keep an
early merge from setting a run back, and what does it cost where early merges pay?

On mnist1d with Lookahead one seed in three never reached Lookahead's final loss
(``benchmarks.ttb --peers``, ``benchmarks.burn_in``): its first merge, 8 intervals ahead in the
fast early descent, raised the training loss and the run never caught up. With ``tau_ramp=r`` the first
merge jumps r intervals ahead and each merge doubles that until tau. This times PDT's defaults
with and without the ramp on every ``benchmarks.ttb`` task at each schedule's tuned learning
rate (constant, and cosine where cosine is the better baseline) and on the peers of ``burn_in.TUNED``,
3 seeds, × against the plain (or peer) optimizer at the same rate and schedule.

    python -m benchmarks.tau_ramp [--seeds 3] [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

import pdt_compile as pdt

from .burn_in import TUNED as PEER_LRS
from .report import write_section
from .ttb import peers, seed_major, summarise, task_suite

CORE_LRS = {
    ("digits MLP / SGD", "constant"): 0.8,
    ("mnist1d CNN / SGD-momentum", "constant"): 0.05,
    ("mnist1d CNN / SGD-momentum", "cosine"): 0.2,
    ("char transformer / AdamW", "constant"): 0.006,
    ("char transformer / AdamW", "cosine"): 0.012,
    ("mnist1d ViT / AdamW", "constant"): 0.0005,
    ("mnist1d ViT / AdamW", "cosine"): 0.002,
    ("digits MLP / LAMB", "constant"): 0.005,
    ("digits MLP / LAMB", "cosine"): 0.02,
    ("digits MLP / Shampoo", "constant"): 12.8,
}
"""(task, schedule) -> the learning rate ``benchmarks.ttb --core`` tuned (run of 2026-11-28 18:54
UTC): constant on every task, cosine where it was the better baseline."""

RAMPS = (None, 1, 2)


def cases(suite: dict) -> dict[str, tuple]:
    """Case title -> (task with its optimizer and schedule, snap_every, lr, baseline label)."""
    out = {}
    for (name, schedule), lr in CORE_LRS.items():
        task, snap_every = suite[name]
        out[f"{name}, {schedule}"] = (dataclasses.replace(task, schedule=schedule),
                                      snap_every, lr, f"baseline, {schedule} (tuned lr)")
    for (name, peer), lr in PEER_LRS.items():
        task, snap_every = suite[name]
        out[f"{name}: PDT on {peer}"] = (dataclasses.replace(task, make_optimizer=peers(name, task)[peer]),
                                         snap_every, lr, f"{peer} (tuned lr)")
    return out


def selected(only: str = "") -> dict[str, tuple]:
    """:func:`cases` of the full-size suite whose title contains ``only``."""
    return {title: case for title, case in cases(task_suite(quick=False)).items() if only in title}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default="", help="run only the cases whose title contains this")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started, sections = time.perf_counter(), []
    for title, (task, snap_every, lr, baseline) in selected(args.only).items():
        methods = {baseline: lambda opt: opt}
        for ramp in RAMPS:
            label = "PDT default, no ramp" if ramp is None else f"PDT default, tau_ramp={ramp}"
            methods[label] = lambda opt, r=ramp: pdt.PDT(opt, snap_every=snap_every, tau_ramp=r)
        runs = seed_major(task, methods, args.seeds, lr)
        text = summarise(title, runs, lr, [(lr, float("nan"))], snap_every, task)
        print(text + "\n", flush=True)
        sections.append(text)
    intro = (f"Median over {args.seeds} seeds [min–max]; × = the first row's time / the method's time to the first "
             "row's final training loss (TTB-Loss) or best test accuracy (TTB-Acc), wall time with all PDT overhead, "
             "1 torch thread. Learning rates as tuned by `benchmarks.ttb --core` and `--peers` (the sweep column shows "
             "only that rate); seeds run one after the other, each with every method in lock-step (benchmarks.ttb.seed_major). "
             f"Total benchmark time {time.perf_counter() - started:.0f} s.")
    title = "First merges: tau ramp (benchmarks/tau_ramp.py)"
    if args.only:
        title = title.replace(" (", f", cases matching {args.only!r} (")
    write_section(title, intro + "\n\n" + "\n\n".join(sections))


if __name__ == "__main__":
    main()
