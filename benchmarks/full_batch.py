"""PDT on full-batch training: small problems whose every step sees all the data, as a new user's
first try often does (a regression, a function fit, a small data set in one batch).

Without gradient noise the loss falls by orders of magnitude at the tuned rate, and where PDT's
merges pay or cost shows in the trajectory alone. For each case the baseline's constant learning
rate is tuned as ``benchmarks.ttb`` tunes it (seed 0, lowest final training loss); then, seed by
seed from the same initial weights: the baseline, the baseline nudged at every prediction
boundary (:class:`benchmarks.controls.Nudge`: how much any perturbation moves the time to the
target) and PDT's defaults with ``snap_every`` at 2 % of the steps (the README's rule for runs
without epochs). It reports the steps to the baseline's final training loss, as
``benchmarks.ttb`` counts them, and each run's final loss over the baseline's. No wall time: on
these tiny steps PDT's overhead is most of the step, and the question is the trajectory.

    python -m benchmarks.full_batch [--seeds 5] [--only AdamW]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
import warnings
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

import pdt_compile as pdt
from pdt_compile.experiment import Run, Task, speedup, train

from .controls import Nudge
from .report import write_section
from .ttb import spread, tune_lr

SNAP_FRACTION = 0.02
"""``snap_every`` as a share of the run's steps: the README's 1-3 % for runs without epochs."""

OPTIMIZERS: dict[str, tuple[Callable[[Iterable[Tensor], float], torch.optim.Optimizer], float]] = {
    "AdamW": (lambda params, lr: torch.optim.AdamW(params, lr=lr), 0.01),
    "Adam": (lambda params, lr: torch.optim.Adam(params, lr=lr), 0.01),
    "RMSprop": (lambda params, lr: torch.optim.RMSprop(params, lr=lr), 0.001),
    "SGD": (lambda params, lr: torch.optim.SGD(params, lr=lr), 0.5),
    "SGD-momentum": (lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9), 0.1),
}
"""Optimizer -> (make_optimizer, the rate its sweep is centred on)."""


def _regression_task(x: Tensor, y: Tensor, make_model: Callable[[], nn.Module], steps: int) -> Task:
    """A full-batch regression (mean squared error). The test set is a placeholder: no accuracy
    is reported for these cases."""
    return Task(name="", train_x=x, train_y=y, test_x=x[:1], test_y=torch.zeros(1, dtype=torch.int64),
                make_model=make_model, make_optimizer=OPTIMIZERS["AdamW"][0], lr=0.01, batch_size=len(x),
                steps=steps, eval_every=max(1, steps // 100), loss=nn.functional.mse_loss)


def random_targets() -> Task:
    """An MLP 8-16-2 fitting 64 random targets (memorisation: the loss goes to zero)."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=generator), torch.randn(64, 2, generator=generator)
    return _regression_task(x, y, lambda: nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2)), 300)


def function_fit() -> Task:
    """An MLP 1-32-32-1 (tanh) fitting a damped sine on 256 points, as in function fitting and
    physics-informed training."""
    x = torch.linspace(-math.pi, math.pi, 256).unsqueeze(1)
    y = torch.sin(3 * x) * torch.exp(-0.2 * x ** 2)
    return _regression_task(x, y, lambda: nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                                                        nn.Linear(32, 1)), 2000)


def digits_full_batch() -> Task:
    """The suite's digits MLP (scikit-learn's digits, 1437 training images), all of them in every step."""
    from pdt_compile.tasks import digits_mlp

    task = digits_mlp()
    return dataclasses.replace(task, batch_size=len(task.train_x), steps=600, eval_every=6)


TASKS = {"random targets, MLP 8-16-2": random_targets, "damped sine, MLP 1-32-32-1": function_fit,
         "digits MLP, full batch": digits_full_batch}

CASES = [(task, optimizer) for task in TASKS for optimizer in OPTIMIZERS
         if not (task == "digits MLP, full batch" and optimizer in ("Adam", "RMSprop"))]
"""(task, optimizer) pairs measured."""


def case_rows(task_name: str, optimizer: str, seeds: int) -> list[str]:
    """One case: its tuned rate, then per method the step ratios per seed and final losses."""
    make_optimizer, centre = OPTIMIZERS[optimizer]
    task = dataclasses.replace(TASKS[task_name](), make_optimizer=make_optimizer, lr=centre)
    lr, sweep = tune_lr(task, [0.25, 0.5, 1.0, 2.0, 4.0])
    snap_every = max(1, round(SNAP_FRACTION * task.steps))
    wraps = {"baseline nudged by 1e-6 at every prediction boundary": lambda opt: Nudge(opt, snap_every=snap_every),
             f"PDT default, snap_every={snap_every}": lambda opt: pdt.PDT(opt, snap_every=snap_every)}
    baselines: list[Run] = []
    runs: dict[str, list[Run]] = {method: [] for method in wraps}
    undone: dict[str, list[str]] = {method: [] for method in wraps}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # momentum_spacing's note on SGD-momentum: the spacing in force is said below
        for seed in range(seeds):
            baselines.append(train(task, lambda opt: opt, seed=seed, method="baseline", lr=lr)[0])
            for method, wrap in wraps.items():
                run, opt = train(task, wrap, seed=seed, method=method, lr=lr)
                runs[method].append(run)
                stats = opt.stats
                undone[method].append(f"{stats.gradient_undos}/{stats.merges}" if stats.predictions else "-")
                spacing = opt.config.snap_every  # momentum_spacing's, where it raised snap_every
    case = (f"{task_name} / {optimizer}, lr {lr:g} ({task.steps} steps; sweep "
            f"{', '.join(f'{rate:g} → {loss:.2g}' for rate, loss in sweep)}; snapshots every {spacing} steps)")
    rows = [f"| {case} | baseline | final loss {', '.join(f'{b.final_loss:.2g}' for b in baselines)} | - | - | - | - |"]
    for method, method_runs in runs.items():
        ratios = [speedup(b, r)[0] for b, r in zip(baselines, method_runs)]
        finals = [r.final_loss / max(b.final_loss, 1e-30) for b, r in zip(baselines, method_runs)]
        below = sum(v is None or v < 0.98 for v in ratios)
        rows.append(f"| {case} | {method} | {', '.join('never' if v is None else f'{v:.2f}' for v in ratios)} | "
                    f"{spread(ratios)} | {below}/{len(ratios)} | {', '.join(f'{f:.2f}' for f in finals)} | "
                    f"{', '.join(undone[method])} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--only", default="", help="the cases whose task or optimizer name contains this text")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = ["| case | run | steps × per seed (baseline steps / run steps to the baseline's final loss) | median [min–max] | "
            "seeds below 0.98 or never | final training loss / the baseline's, per seed | merges the gradient check undid / "
            "merges, per seed |", "|---|---|---|---|---|---|---|"]
    for task_name, optimizer in CASES:
        if args.only and args.only not in f"{task_name} / {optimizer}":
            continue
        rows += case_rows(task_name, optimizer, args.seeds)
        print("\n".join(rows[-3:]), flush=True)
    intro = (f"{args.seeds} seeds per case, each run from the seed's initial weights on the whole training set at every "
             "step; the baseline's constant rate tuned on seed 0 (lowest final training loss). × = the baseline's steps "
             "over the run's to the baseline's final training loss (floored at 1e-6), first evaluation at it (every 1 % "
             "of the steps), as benchmarks.ttb counts them. The nudge multiplies every weight by 1 + 1e-6 e (e standard "
             "normal) at every boundary where PDT's defaults would predict. 1 torch thread. Total benchmark time "
             f"{time.perf_counter() - started:.0f} s.")
    title = "Full-batch training" + (f", cases matching {args.only!r}" if args.only else "")
    title += f", {args.seeds} seeds" if args.seeds != 5 else ""
    write_section(title + " (benchmarks/full_batch.py)", intro + "\n\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
