"""Do merges set the training loss back, and does ``setback_limit`` stop the ones that do?

For each merge of PDT's defaults, its setback: log(mean of the q = snap_every // 4 training
losses reported right after it / mean of the q right before it)
(:func:`pdt_compile.runtime.schedule.setback`); positive where the merge raised the loss.
Then the same run with ``setback_limit`` (holds predictions back where the last merges'
mean setback exceeds it, undoes a merge whose own setback exceeds 3x it): steps to the
baseline's final training loss and the final loss itself, which a run that reaches the
target early and then blows up does not keep. Every case of ``benchmarks.tau_ramp`` (the
tuned rates of ``benchmarks.ttb``: constant, cosine where it is the better baseline, and the
peers), 3 seeds. Steps only, no wall time: cases may run side by side.

    python -m benchmarks.setbacks [--seeds 3] [--only SUBSTRING] [--limit 0.3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Optional

import torch
from torch import Tensor

import pdt_compile as pdt
from pdt_compile.experiment import Run, loss_target, train
from pdt_compile.runtime.schedule import setback, setback_window

from .report import write_section
from .tau_ramp import selected


class Recording(pdt.PDT):
    """PDT that keeps every reported loss (the losses around each merge)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.losses: list[float] = []

    def report_loss(self, loss: Tensor | float) -> None:
        self.losses.append(float(loss.detach()) if isinstance(loss, Tensor) else float(loss))
        super().report_loss(loss)


def merge_setbacks(opt: Recording) -> list[float]:
    """The setback of every merge of a finished run (``losses[i]`` is step i + 1's loss,
    computed before that step's update; a merge at step s follows losses[s - 1])."""
    q = setback_window(opt.config.snap_every)
    out = []
    for step, ratio in opt.stats.mask_ratio_history:
        if ratio > 0 and q <= step and step + q <= len(opt.losses):
            change = setback(opt.losses[step - q:step], opt.losses[step:step + q])
            if change is not None:
                out.append(change)
    return out


def steps_ratio(baseline: Run, run: Run) -> Optional[float]:
    """Baseline steps / run steps to the baseline's final loss; None where never reached."""
    target = loss_target(baseline)
    base, mine = baseline.time_to(target)[0], run.time_to(target)[0]
    return None if mine is None or base is None else base / mine


def cell(values: list[Optional[float]]) -> str:
    return ", ".join("never" if v is None else f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default="", help="run only the cases whose title contains this")
    parser.add_argument("--limit", type=float, default=0.3, help="setback_limit of the guarded run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = []
    for title, (task, snap_every, lr, _) in selected(args.only).items():
        changes, default_x, guarded_x, finals, holds, undos = [], [], [], {"baseline": [], "default": [], "guarded": []}, [], []
        for seed in range(args.seeds):
            baseline, _ = train(task, lambda opt: opt, seed=seed, method="baseline", lr=lr)
            run, opt = train(task, lambda o: Recording(o, snap_every=snap_every), seed=seed, method="PDT", lr=lr)
            guarded, gopt = train(task, lambda o: pdt.PDT(o, snap_every=snap_every, setback_limit=args.limit),
                                  seed=seed, method="guarded", lr=lr)
            changes += merge_setbacks(opt)
            default_x.append(steps_ratio(baseline, run))
            guarded_x.append(steps_ratio(baseline, guarded))
            for key, r in (("baseline", baseline), ("default", run), ("guarded", guarded)):
                finals[key].append(r.final_loss)
            holds.append(gopt.stats.setbacks)
            undos.append(gopt.stats.setback_undos)
        over = sum(c > args.limit for c in changes)
        median = statistics.median(changes) if changes else float("nan")
        top = max(changes) if changes else float("nan")
        fin = {k: statistics.median(v) for k, v in finals.items()}
        rows.append(f"| {title}, lr {lr:g} | {len(changes)} | {median:+.2f} | {top:+.2f} | {over} | {cell(default_x)} | "
                    f"{fin['baseline']:.3g} | {fin['default']:.3g} | {cell(guarded_x)} | {fin['guarded']:.3g} | "
                    f"{sum(holds)} / {sum(undos)} |")
        print(rows[-1], flush=True)
    body = "\n".join([
        f"{args.seeds} seeds per case; setbacks of PDT default's merges pooled over the seeds (q = snap_every // 4 "
        f"losses a side); 'steps ×' = baseline steps / run steps to the baseline's final training loss (per seed; "
        f"never = not within the budget); final losses are medians over the seeds; the guarded run is PDT default with "
        f"`setback_limit={args.limit:g}`. Total benchmark time {time.perf_counter() - started:.0f} s.", "",
        f"| case | merges | median setback | largest | over {args.limit:g} | PDT default steps × | baseline final loss | "
        f"PDT default final loss | guarded steps × | guarded final loss | holds / undos |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    print(body)
    suffix = (f", cases matching '{args.only}'" if args.only else "") + (f", limit {args.limit:g}" if args.limit != 0.3 else "")
    write_section(f"Setbacks of merges, and setback_limit{suffix} (benchmarks/setbacks.py)", body)


if __name__ == "__main__":
    main()
