"""PDT where snapshots are a few steps apart: a short epoch (a small data set, full-batch
training) makes a short ``snap_every``. On an optimizer with heavy-ball momentum such snapshots
are closer than the momentum remembers (``1 / (1 - m)`` steps, 10 at 0.9), and
``momentum_spacing=f`` keeps them ``f`` times that far apart instead (Adam's and LAMB's first
beta counts as their momentum; ``"auto"`` is 2.0 on SGD, RMSprop, LAMB and schedule-free SGD). For each task, at its tuned
constant rate (``benchmarks.ttb --core``), the baseline and PDT with ``snap_every`` set to each
of ``--spacings`` train in lock-step, seed by seed, with ``momentum_spacing=None`` (snapshots
``snap_every`` apart) and each of ``--factors``, beside PDT's defaults at the task's own spacing
for reference. ``--spacings 2 --factors 1,2,4`` is the sweep that chose the default's 2.0.

    python -m benchmarks.short_epochs [--more] [--only 'mnist1d CNN'] [--seeds 3] [--spacings 2,4,8] [--factors 2.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings

import torch

import pdt_compile as pdt
from pdt_compile.experiment import Run, Task, Training, train_in_lockstep

from .rate_drop import per_seed
from .report import run_title, write_section
from .ttb import peers, summarise, sweep_factors, task_suite, tune_lr

TASKS = {"mnist1d CNN / SGD-momentum": 0.05, "digits MLP / LAMB": 0.005, "mnist1d ViT / AdamW": 5e-4}
"""Task -> its tuned constant learning rate (``benchmarks.ttb --core``, RESULTS.md): the cases
that chose ``momentum_spacing="auto"``."""

MORE_TASKS = {"digits MLP / Shampoo": 12.8,
              "mnist1d CNN / SGD-momentum: on Lookahead (k=5, alpha=0.5)": 0.1,
              "mnist1d CNN / SGD-momentum: on schedule-free": 1.6,
              "mnist1d ViT / AdamW: on schedule-free": 0.004,
              "char transformer / AdamW: on schedule-free": 0.024,
              "digits MLP / SGD: on RMSprop (momentum 0.9)": None,
              "mnist1d CNN / SGD-momentum: on RMSprop (momentum 0.9)": None}
"""``--more``: optimizers with a momentum that ``"auto"`` leaves unspaced, at their tuned
constant rates (``benchmarks.ttb --core`` and ``--peers``; None: tuned here, as ``benchmarks.ttb``
tunes, seed 0, the sweep in the section). A case ``"task: on peer"`` is the task with that
peer's optimizer (:func:`benchmarks.ttb.peers`, or :data:`OTHER_OPTIMIZERS`), the baseline and PDT
alike."""

OTHER_OPTIMIZERS = {"RMSprop (momentum 0.9)": (lambda params, lr: torch.optim.RMSprop(params, lr=lr, momentum=0.9), 1e-3)}
"""Optimizers of ``--more`` cases that are not peers of the suite: (make_optimizer, the rate
its sweep starts from)."""


def case_task(case: str) -> tuple[Task, int]:
    """The task of ``case`` (with its peer's optimizer where it names one) and its epoch."""
    name, _, peer = case.partition(": on ")
    task, epoch = task_suite(quick=False)[name]
    if peer in OTHER_OPTIMIZERS:
        make_optimizer, lr = OTHER_OPTIMIZERS[peer]
        task = dataclasses.replace(task, make_optimizer=make_optimizer, lr=lr)
    elif peer:
        task = dataclasses.replace(task, make_optimizer=peers(name, task)[peer])
    return task, epoch


def methods(spacings: list[int], epoch: int, factors: tuple[float, ...] = (2.0,)) -> dict[str, object]:
    """Method -> wrap: the baseline, PDT at the task's own spacing, and at each short spacing
    with ``momentum_spacing`` None (snapshots ``snap_every`` apart) and each of ``factors`` (at
    least that many times as many steps apart as the momentum remembers: SGD's momentum, Adam's
    first beta)."""
    out: dict[str, object] = {"baseline (tuned constant lr)": lambda opt: opt,
                              f"PDT default, snap_every={epoch} (the task's epoch)": lambda opt: pdt.PDT(opt, snap_every=epoch)}
    for spacing in spacings:
        for setting in (None, *factors):
            out[f"PDT, snap_every={spacing}, momentum_spacing={setting}"] = (
                lambda opt, s=spacing, m=setting: pdt.PDT(opt, snap_every=s, momentum_spacing=m))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run only the tasks whose name contains this")
    parser.add_argument("--more", action="store_true", help="the cases of MORE_TASKS instead (Shampoo, "
                        "the CNN on Lookahead and on schedule-free, the ViT and the char transformer on schedule-free, "
                        "digits and the CNN on RMSprop with momentum)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--spacings", default="2,4,8", help="comma-separated snap_every values")
    parser.add_argument("--factors", default="2.0", help="comma-separated momentum_spacing values beside None "
                        "(2.0: the default's on SGD, RMSprop, LAMB and schedule-free SGD)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spacings = [int(s) for s in args.spacings.split(",")]
    sections = []
    for name, lr in (MORE_TASKS if args.more else TASKS).items():
        if args.only not in name:
            continue
        task, epoch = case_task(name)
        sweep: list[tuple[float, float]] = []
        if lr is None:
            lr, sweep = tune_lr(task, sweep_factors(name))
        wraps = methods(spacings, epoch, tuple(float(f) for f in args.factors.split(",")))
        runs: dict[str, list[Run]] = {method: [] for method in wraps}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the spacing warning, once per run
                trainings = [Training(task, wrap, seed=seed, method=method, lr=lr) for method, wrap in wraps.items()]
                results = train_in_lockstep(trainings)
            for method, (run, _) in zip(wraps, results):
                runs[method].append(run)
        section = summarise(f"{name}, constant lr {lr:g}", runs, lr, sweep, epoch, task) + "\n\n" + per_seed(runs, args.first_seed)
        sections.append(section)
        print(section, flush=True)
    swept = (f"snap_every {args.spacings}, momentum_spacing None and {args.factors}",)
    extras = (("optimizers auto leaves unspaced (--more)",) if args.more else ()) + (
        swept if (args.spacings, args.factors) != ("2,4,8", "2.0") else ())
    title = run_title("Snapshots a few steps apart (benchmarks/short_epochs.py)", args.only, args.seeds,
                      args.first_seed, extras=extras)
    write_section(title, "\n\n".join(sections))


if __name__ == "__main__":
    main()
