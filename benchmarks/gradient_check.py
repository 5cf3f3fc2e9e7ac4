"""Does the gradient check (``PDTConfig.gradient_limit``) undo the merges that set a run back,
and what does it cost where merges pay?

After each merge, the next training step's gradient is taken at the merged weights; its norm
over the mean norm of the q = snap_every // 4 gradients before the merge is the merge's
*surge*. Above the limit, PDT undoes the merge and zeroes that gradient. For every case of
``benchmarks.tau_ramp`` (the tuned rates of ``benchmarks.ttb``: constant, cosine where it is the
better baseline, and the peers), 3 seeds: PDT without the check and with each limit given,
steps to the baseline's final training loss (per seed) and the final loss itself (a run that
reaches the target and then blows up does not keep it), the undone merges, and the surges of
the unchecked run's merges. Steps only, no wall time: cases may run side by side.

    python -m benchmarks.gradient_check [--seeds 3] [--only SUBSTRING] [--limits 4,8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import pdt_compile as pdt
from pdt_compile.experiment import train

from .report import write_section
from .setbacks import cell, steps_ratio
from .tau_ramp import selected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default="", help="run only the cases whose title contains this")
    parser.add_argument("--limits", default="4,8", help="comma-separated gradient limits to compare with no check")
    args = parser.parse_args()
    limits = [float(v) for v in args.limits.split(",")]
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = []
    for title, (task, snap_every, lr, _) in selected(args.only).items():
        arms: dict[float | None, dict[str, list]] = {lim: {"x": [], "final": [], "undos": 0, "merges": 0} for lim in [None, *limits]}
        base_finals, surges = [], []
        for seed in range(args.seeds):
            baseline, _ = train(task, lambda opt: opt, seed=seed, method="baseline", lr=lr)
            base_finals.append(baseline.final_loss)
            for limit, arm in arms.items():
                # A limit of infinity is not a valid setting: the unchecked run measures surges by
                # checking with a limit no surge reaches.
                measure = limit if limit is not None else 1e300
                run, opt = train(task, lambda o: pdt.PDT(o, snap_every=snap_every, gradient_limit=measure),
                                 seed=seed, method=f"limit {limit}", lr=lr)
                arm["x"].append(steps_ratio(baseline, run))
                arm["final"].append(run.final_loss)
                arm["undos"] += opt.stats.gradient_undos
                arm["merges"] += opt.stats.merges
                if limit is None:
                    surges += [s for _, s in opt.stats.gradient_surges]
        over = " / ".join(str(sum(s > lim for s in surges)) for lim in limits)
        cells = [f"{cell(arm['x'])} | {statistics.median(arm['final']):.3g}" for arm in arms.values()]
        undone = " / ".join(f"{arms[lim]['undos']}/{arms[lim]['merges']}" for lim in limits)
        rows.append(f"| {title}, lr {lr:g} | {len(surges)} | {statistics.median(surges):.2f} | {max(surges):.1f} | {over} | "
                    f"{statistics.median(base_finals):.3g} | " + " | ".join(cells) + f" | {undone} |")
        print(rows[-1], flush=True)
    names = ", ".join(f"{lim:g}" for lim in limits)
    header = " | ".join(f"limit {lim:g} steps × | limit {lim:g} final loss" for lim in limits)
    body = "\n".join([
        f"{args.seeds} seeds per case; surges (gradient norm at the merged weights / mean norm of the q = snap_every // 4 "
        f"steps before) of the unchecked run's merges, pooled over the seeds; 'steps ×' = baseline steps / run steps to "
        f"the baseline's final training loss (per seed; never = not within the budget); final losses are medians over "
        f"the seeds; undone = merges the check undid / merges, summed over the seeds. Total benchmark time "
        f"{time.perf_counter() - started:.0f} s.", "",
        f"| case | merges | median surge | largest | over {names.replace(', ', ' / ')} | baseline final loss | "
        f"no check steps × | no check final loss | {header} | undone at {names.replace(', ', ' / ')} |",
        "|---|" + "---|" * (8 + 2 * len(limits)),
        *rows,
    ])
    print(body)
    suffix = (f", cases matching '{args.only}'" if args.only else "") + (f", limits {names}" if args.limits != "4,8" else "")
    write_section(f"Gradient check of merges (benchmarks/gradient_check.py){suffix}", body)


if __name__ == "__main__":
    main()
