"""PDT on a sharpness-aware optimizer: SAM (pytorch-optimizer's, ``rho`` 0.05) over each task's
optimizer at the task's tuned constant rate (``benchmarks.ttb --core``; SAM's authors keep the
base optimizer's rate), trained in its two-step loop (``first_step``, a second gradient at the
perturbed weights, ``second_step``), which costs two gradients a step. Against SAM alone, in
lock-step seed by seed: PDT's defaults on SAM (which take the base optimizer's per-optimizer
settings), PDT on SAM without them, and, for what SAM itself costs, the task's optimizer alone
and PDT on it. Every × is to SAM's final training loss.

    python -m benchmarks.sharpness_aware [--only 'mnist1d CNN'] [--seeds 3] [--rho 0.05]
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

import pdt_compile as pdt
from pdt_compile.experiment import Run, Task, Training, train_in_lockstep

from .rate_drop import per_seed
from .report import run_title, write_section
from .ttb import summarise, task_suite

TASKS = {"digits MLP / SGD": 0.8, "mnist1d CNN / SGD-momentum": 0.05, "mnist1d ViT / AdamW": 5e-4}
"""Task -> its tuned constant learning rate (``benchmarks.ttb --core``, RESULTS.md)."""

SAM = "SAM (the baseline)"
OWN = "PDT on SAM without its base optimizer's auto settings (before 2026-12-06 13:00)"
WITHOUT_BASE_SETTINGS = dict(adaptive=False, moment_ratio=None, momentum_spacing=None, rate_settle=None, saturation=None)
"""What ``"auto"`` resolved to on SAM before it took its base optimizer's settings
(:func:`pdt_compile.adapters.chain`): none of the per-optimizer ones."""


def sharpness_aware(task: Task, rho: float) -> Task:
    """``task`` with SAM over its optimizer."""
    import pytorch_optimizer as po

    base = task.make_optimizer  # SAM builds it over its own param groups: base(groups, lr=lr)
    return dataclasses.replace(task, make_optimizer=lambda params, lr: po.SAM(params, base, rho=rho, lr=lr))


def methods(epoch: int) -> dict[str, object]:
    """Method -> wrap of the SAM optimizer a run builds: SAM alone, PDT on it (a snapshot
    every ``epoch`` steps) with its defaults and without its base optimizer's ``"auto"``
    settings, and SAM's base optimizer alone (it shares SAM's param groups) and under PDT."""
    return {
        SAM: lambda opt: opt,
        "PDT default on SAM": lambda opt: pdt.PDT(opt, snap_every=epoch),
        OWN: lambda opt: pdt.PDT(opt, snap_every=epoch, **WITHOUT_BASE_SETTINGS),
        "the task's optimizer alone (no SAM)": lambda opt: opt.base_optimizer,
        "PDT default on the task's optimizer (no SAM)": lambda opt: pdt.PDT(opt.base_optimizer, snap_every=epoch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run only the tasks whose name contains this")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--rho", type=float, default=0.05, help="SAM's neighbourhood radius")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sections = []
    for name, lr in TASKS.items():
        if args.only not in name:
            continue
        task, epoch = task_suite(quick=False)[name]
        task = sharpness_aware(task, args.rho)
        wraps = methods(epoch)
        runs: dict[str, list[Run]] = {method: [] for method in wraps}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            trainings = [Training(task, wrap, seed=seed, method=method, lr=lr) for method, wrap in wraps.items()]
            for method, (run, _) in zip(wraps, train_in_lockstep(trainings)):
                runs[method].append(run)
        section = (summarise(f"{name}, SAM (rho {args.rho:g}), constant lr {lr:g}", runs, lr, [], epoch, task)
                   + "\n\n" + per_seed(runs, args.first_seed))
        sections.append(section)
        print(section, flush=True)
    extras = (f"rho {args.rho:g}",) if args.rho != 0.05 else ()
    title = run_title("PDT on a sharpness-aware optimizer (benchmarks/sharpness_aware.py)", args.only, args.seeds,
                      args.first_seed, extras=extras)
    write_section(title, "\n\n".join(sections))


if __name__ == "__main__":
    main()
