"""Burn-in on the peers: does waiting longer before the first prediction remove the early merge
that sets a run back?

On mnist1d with Lookahead one seed in three never reached Lookahead's final loss in
``benchmarks.ttb --peers``: its first merge, in the fast early descent, raised the training loss
and the run never caught up. This times PDT's defaults (``burn_in=5`` boundaries) against
``burn_in`` 10, and against the two guards that react to a rising loss (``rollback_factor=1.5``
and adaptive tau), on the peers of ``benchmarks.ttb`` (schedule-free and Lookahead on the two SGD
tasks), each at the learning rate that ``python -m benchmarks.ttb --peers`` tuned for it (run of
2026-11-29 04:28 UTC), 3 seeds, × against the peer alone.

    python -m benchmarks.burn_in [--seeds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

import pdt_compile as pdt

from .report import write_section
from .ttb import peers, seed_major, summarise, task_suite

TUNED = {
    ("digits MLP / SGD", "schedule-free"): 6.4,
    ("digits MLP / SGD", "Lookahead (k=5, alpha=0.5)"): 0.8,
    ("mnist1d CNN / SGD-momentum", "schedule-free"): 1.6,
    ("mnist1d CNN / SGD-momentum", "Lookahead (k=5, alpha=0.5)"): 0.1,
    ("mnist1d ViT / AdamW", "Lookahead (k=5, alpha=0.5)"): 0.002,
}
"""(task, peer) -> the learning rate ``benchmarks.ttb --peers`` tuned (its RESULTS.md sections; the ViT's:
``--peers --only ViT LAMB Shampoo``, 2026-11-29 10:05)."""

BURN_INS = (5, 10)
GUARDS = {"PDT rollback_factor 1.5": dict(rollback_factor=1.5), "PDT adaptive tau": dict(adaptive=True)}
"""Defaults plus a guard that needs the training loss (``train`` reports it every step)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started, sections = time.perf_counter(), []
    suite = task_suite(quick=False)
    for (name, peer), lr in TUNED.items():
        task, snap_every = suite[name]
        peer_task = dataclasses.replace(task, make_optimizer=peers(name, task)[peer])
        methods = {f"{peer} (tuned lr)": lambda opt: opt}
        for burn_in in BURN_INS:
            label = f"PDT burn_in {burn_in}" + (" (default)" if burn_in == pdt.PDTConfig.burn_in else "")
            methods[label] = lambda opt, b=burn_in: pdt.PDT(opt, snap_every=snap_every, burn_in=b)
        for label, guard in GUARDS.items():
            methods[label] = lambda opt, g=guard: pdt.PDT(opt, snap_every=snap_every, **g)
        runs = seed_major(peer_task, methods, args.seeds, lr)
        text = summarise(f"{name}: PDT on {peer}", runs, lr, [(lr, float("nan"))], snap_every, peer_task)
        print(text + "\n", flush=True)
        sections.append(text)
    intro = (f"Median over {args.seeds} seeds [min–max]; × = the peer's time / the method's time to the peer's final "
             "training loss (TTB-Loss) or best test accuracy (TTB-Acc), wall time with all PDT overhead, 1 torch thread. "
             "Learning rates as tuned by `benchmarks.ttb --peers` (the sweep column shows only that rate); seeds run one "
             "after the other, each with the peer and every method in lock-step (benchmarks.ttb.seed_major). "
             f"Total benchmark time {time.perf_counter() - started:.0f} s.")
    write_section("Burn-in on the peers (benchmarks/burn_in.py)", intro + "\n\n" + "\n\n".join(sections))


if __name__ == "__main__":
    main()
