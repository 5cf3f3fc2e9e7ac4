"""How the optimizer takes up a merge: does it carry the merged weights on, or pull them back?

    python -m benchmarks.follow_through [--only TEXT] [--seed 0]

For every case of ``benchmarks.variants`` (task, optimizer or peer, tuned rate) whose title
contains ``--only``, one run of PDT's defaults. At every merge the jump J of the tracked
weights (on schedule-free, the base iterate z) is kept, and k steps later the optimizer's own
displacement since the merge, D_k, is projected on it:

    r_k = <D_k, J> / <J, J>

0: the optimizer went on across the jump; 1: one more jump's length along it; negative: it
pulled the weights back, so the jump overshot where the optimizer was heading. Merges the
gradient check undid are left out. Per half of the run (by the step of the merge): the median
r_k and the share of merges with r_k < 0, for k from half an interval to four intervals.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import Tensor

import pdt_compile as pdt
from pdt_compile.experiment import Task, Training

from .report import write_section
from .variants import variant_cases

SPANS = (0.5, 1, 2, 4)
"""k, in intervals of ``snap_every`` steps."""


def _flat(tensors: list[Tensor | None], like: list[Tensor]) -> Tensor:
    """``tensors`` side by side as one float32 vector, zeros (shaped and placed as ``like``) for None."""
    return torch.cat([(t if t is not None else torch.zeros(p.numel(), device=p.device)).detach().reshape(-1).float()
                      for t, p in zip(tensors, like)])


def follow_through(task: Task, snap_every: int, lr: float, seed: int) -> list[tuple[int, list[float | None]]]:
    """(step, [r_k for each of :data:`SPANS`, None past the run's end]) of every merge of one
    run of PDT's defaults on ``task``."""
    training = Training(task, lambda opt: pdt.PDT(opt, snap_every=snap_every), seed=seed, method="PDT", lr=lr)
    opt = training.optimizer
    offsets = [max(1, round(span * snap_every)) for span in SPANS]
    pending: list[tuple[int, Tensor, Tensor, list[float | None]]] = []  # step, J, weights after it, r_k
    done = []
    merges, undos = 0, 0
    while not training.done:
        training.step()
        step = training.steps_done
        stats = opt.stats
        if stats.gradient_undos > undos:  # the last merge was undone at this step
            undos = stats.gradient_undos
            pending = [entry for entry in pending if entry[0] != step - 1]
        tracked = opt.tracked()
        if pending:
            weights = _flat(tracked, tracked)
            for merged_at, jump, after, ratios in pending:
                if step - merged_at in offsets:
                    ratios[offsets.index(step - merged_at)] = float((weights - after) @ jump / (jump @ jump))
            done += [entry for entry in pending if step - entry[0] >= offsets[-1]]
            pending = [entry for entry in pending if step - entry[0] < offsets[-1]]
        if stats.merges > merges:
            merges = stats.merges
            jump = _flat(opt._jumps, tracked)  # the merge's own jumps, kept for the gradient check
            if jump.norm() > 0:
                pending.append((step, jump, _flat(tracked, tracked), [None] * len(SPANS)))
    return [(step, ratios) for step, _, _, ratios in done + pending]


def summary_rows(title: str, merges: list[tuple[int, list[float | None]]], steps: int) -> list[str]:
    """One table row per half of the run: merges, median r_k and share below 0 per span."""
    rows = []
    for label, keep in (("first half", lambda s: s <= steps // 2), ("second half", lambda s: s > steps // 2)):
        part = [ratios for step, ratios in merges if keep(step)]
        cells = []
        for index in range(len(SPANS)):
            values = [r[index] for r in part if r[index] is not None]
            cells.append(f"{statistics.median(values):+.2f} ({sum(v < 0 for v in values) / len(values):.0%})"
                         if values else "-")
        rows.append(f"| {title} | {label} | {len(part)} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run only the cases of benchmarks.variants whose title contains this")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = ["| case | merges of | merges | " + " | ".join(f"r after {span:g} interval{'s' if span > 1 else ''}"
                                                      for span in SPANS) + " |",
            "|---|---|---|" + "---|" * len(SPANS)]
    for title, (task, snap_every, lr, _) in variant_cases(args.only).items():
        rows += summary_rows(f"{title}, lr {lr:g}", follow_through(task, snap_every, lr, args.seed), task.steps)
        print("\n".join(rows[-2:]), flush=True)
    body = "\n".join(rows) + (
        f"\n\nSeed {args.seed}, PDT's defaults at the case's tuned rate. r = <D, J> / <J, J>: the optimizer's displacement "
        "D of the tracked weights (schedule-free: z) from right after a merge to k steps later, projected on the merge's "
        "jump J; each cell is the median over the merges of that half of the run, with the share of merges whose r is "
        f"negative (pulled back) in brackets. Total benchmark time {time.perf_counter() - started:.0f} s."
    )
    part = f", cases matching {args.only!r}" if args.only else ""
    write_section(f"Follow-through of merges{part} (benchmarks/follow_through.py)", body)


if __name__ == "__main__":
    main()
