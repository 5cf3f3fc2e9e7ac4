"""PDT under a linear warmup then a cosine schedule, the schedule transformers are commonly
trained with: the learning rate rises over the first tenth of the steps
(``experiment.WARMUP_FRACTION``), then falls to zero. PDT predicts while it rises (no guard
holds it then: ``decay_window`` acts only once it falls), so this is where a merge could
extrapolate the warmup's acceleration. For each task: the warmup-cosine baseline's rate is tuned
as ``benchmarks.ttb`` tunes its baselines, then the baseline and PDT's defaults train on it in
lock-step, seed by seed. ``--nudged`` adds a control: the baseline nudged by a millionth where
PDT's defaults would predict (:class:`benchmarks.controls.Nudge`), whose final test accuracy
against the baseline's is how far a perturbation alone moves it.

    python -m benchmarks.warmup [--only 'char transformer'] [--seeds 3]
    python -m benchmarks.warmup --only ViT --seeds 10 --lr 0.008 --nudged   # the rate of the runs of 2026-12-05
    python -m benchmarks.warmup --only ViT --seeds 10 --lr 0.008 --variants 'radial keep'   # PDT variants beside

``--variants``: PDT's variants of ``benchmarks.variants`` whose names contain one of the
comma-separated texts, each one more method in the same lock-step.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
from typing import Callable

import torch

import pdt_compile as pdt
from pdt_compile.experiment import Run, Task

from .controls import Nudge
from .report import run_title, write_section
from .ttb import (add_test_samples_argument, on_test_samples, peers, seed_major, summarise, sweep_factors, task_suite,
                  tune_lr)

TASKS = ("char transformer / AdamW", "mnist1d ViT / AdamW")
"""The AdamW transformers (issue 11's tasks)."""


BASELINE = "baseline, warmup-cosine (tuned lr)"
PDT_DEFAULT = "PDT default, warmup-cosine"
NUDGED = "baseline nudged by 1e-6 where PDT would predict (a control)"


def per_seed(runs: dict[str, list[Run]], first_seed: int = 0) -> str:
    """Each seed's runs against its own baseline (the first method;
    :func:`benchmarks.rate_drop.per_seed`), then each method's final test accuracy minus the
    baseline's, seed by seed, so that PDT's differences stand beside the control's, with their
    mean and its standard error: whether a shift is larger than the seeds' spread."""
    from .rate_drop import per_seed as seed_lines  # rate_drop imports this module

    baselines = next(iter(runs.values()))
    lines = [seed_lines(runs, first_seed)]
    for method, method_runs in list(runs.items())[1:]:
        gaps = [(run.test_accuracy[-1] - base.test_accuracy[-1]) * 100 for base, run in zip(baselines, method_runs)]
        spread = f" ± {statistics.stdev(gaps) / len(gaps) ** 0.5:.2f}" if len(gaps) > 1 else ""
        lines.append(f"- {method}, test accuracy minus the baseline's per seed (points): "
                     + ", ".join(f"{gap:+.1f}" for gap in gaps) + f"; median {statistics.median(gaps):+.2f}; "
                     + f"mean {statistics.fmean(gaps):+.2f}{spread} (standard error); "
                     + f"{sum(gap < -0.5 for gap in gaps)} of {len(gaps)} below -0.5")
    return "\n".join(lines)


def warmup_methods(name: str, snap_every: int, nudged: bool = False, variants: str = "") -> dict[str, Callable]:
    """The runs of task ``name``: the baseline, PDT's defaults, with ``nudged`` the nudged
    control, and the PDT variants of ``benchmarks.variants`` whose names contain one of the
    comma-separated ``variants`` (those that wrap the optimizer; one that changes the run raises)."""
    methods = {BASELINE: lambda opt: opt, PDT_DEFAULT: lambda opt: pdt.PDT(opt, snap_every=snap_every)}
    if nudged:
        methods[NUDGED] = lambda opt: Nudge(opt, snap_every=snap_every)
    texts = [text for text in variants.split(",") if text]
    if texts:
        from .variants import BEYOND_THE_WRAPPER, VARIANTS, wrap_of  # variants imports what imports this module

        task = task_suite(quick=False)[name][0]
        for variant, fields in VARIANTS.items():
            if variant == "default" or not any(text in variant for text in texts):
                continue
            if set(BEYOND_THE_WRAPPER) & set(fields):
                raise SystemExit(f"--variants: {variant!r} changes the run, not the wrapper; use benchmarks.variants")
            methods[f"PDT, {variant}"] = wrap_of(task, snap_every, fields)
    return methods


def on_schedule(name: str, schedule: str, methods: Callable[[int], dict[str, Callable]], seeds: int,
                lr: float | None = None, first_seed: int = 0,
                peer: str | None = None,
                test_samples: int | None = None) -> tuple[Task, int, float, list, dict[str, list[Run]]]:
    """The suite's task ``name`` on ``schedule``, with its optimizer or the peer whose name
    contains ``peer`` (:func:`benchmarks.ttb.peers`): that optimizer's rate tuned there (unless
    ``lr`` is given), then ``methods(snap_every)`` (the baseline first) in lock-step, seed by
    seed. ``test_samples``: test accuracy on that many mnist1d samples generated apart
    (:func:`pdt_compile.tasks.mnist1d_test_set`) instead of the standard 1000. Returns the task,
    its snapshot interval, the rate, the sweep and the runs."""
    base, snap_every = task_suite(quick=False)[name]
    task = dataclasses.replace(base, schedule=schedule)
    if test_samples is not None and not name.startswith("mnist1d"):
        raise SystemExit(f"--test-samples: {name} is not an mnist1d task, whose generator makes more test samples")
    task = on_test_samples(name, task, test_samples)
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
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=None, help="train at this rate instead of tuning one")
    parser.add_argument("--nudged", action="store_true", help="add the baseline nudged by a millionth (a control)")
    parser.add_argument("--variants", default="", help="comma-separated texts: add the PDT variants of "
                                                       "benchmarks.variants whose name contains one")
    add_test_samples_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sections = []
    for name in (n for n in TASKS if args.only in n):
        methods = functools.partial(warmup_methods, name, nudged=args.nudged, variants=args.variants)
        task, snap_every, lr, sweep, runs = on_schedule(name, "warmup-cosine", methods, args.seeds, args.lr,
                                                        args.first_seed, test_samples=args.test_samples)
        sections.append(summarise(f"{name}: warmup then cosine", runs, lr, sweep, snap_every, task) + "\n\n"
                        + per_seed(runs, args.first_seed))
        print(sections[-1], flush=True)
    title = run_title("Time to baseline under a warmup then cosine schedule (benchmarks/warmup.py)", args.only,
                      args.seeds, args.first_seed, args.lr,
                      (("with a nudged baseline",) if args.nudged else ())
                      + ((f"variants matching {args.variants!r}",) if args.variants else ())
                      + ((f"test accuracy on {args.test_samples} samples",) if args.test_samples else ()))
    write_section(title, "\n\n".join(sections))


if __name__ == "__main__":
    main()
