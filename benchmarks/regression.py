"""PDT on regression (a mean-squared-error loss), which the suite's classification tasks leave out.

Two cases a new user might train, both on data that ships with a package or is generated here:

- ``diabetes MLP``: scikit-learn's diabetes data (442 patients, 10 standardised features, the
  standardised disease progression as target; 354 to train), an MLP 10-64-64-1 with ReLU, batch
  32, 150 epochs, one snapshot per epoch: a run that keeps fitting its training set to the end.
- ``noisy plateau``: y = sin(x1 + ... + x8) for 256 standard-normal points, an MLP 8-32-1 with
  tanh, batch 32, 600 steps, a snapshot every 10 steps: the net cannot fit the target closely,
  and at a constant rate the training loss soon stops falling and swings with the batch noise.

Each runs SGD with momentum 0.9 at a constant rate (the rates given per case), plain and wrapped
in PDT's defaults and in the variants below, from the same initial weights and batches, every
PDT run with its training loss reported (as ``benchmarks.ttb`` does). Per seed: the steps to
the plain run's final training loss (plain steps over PDT's, first evaluation at or below it, as
``benchmarks.ttb`` counts them; ``never``), and the end-of-run loss over the plain run's (the mean
full training loss over the last tenth of the evaluations). No wall time.

    python -m benchmarks.regression [--seeds 3] [--only 'noisy plateau'] [--methods 'adaptive,tau 4']
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Callable

import torch
from torch import Tensor, nn

import pdt_compile as pdt

from .report import chosen, write_section


@dataclasses.dataclass(frozen=True)
class Case:
    """A regression run: its data, model, length and the rates it is trained at."""

    x: Tensor
    y: Tensor
    make_model: Callable[[], nn.Module]
    steps: int
    snap_every: int
    eval_every: int
    rates: tuple[float, ...]
    batch_size: int = 32


def diabetes() -> Case:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.float32)[:, None]
    x, y = (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()
    train = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:354]
    epoch = len(train) // 32
    return Case(x[train], y[train],
                lambda: nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)),
                steps=150 * epoch, snap_every=epoch, eval_every=epoch, rates=(0.003, 0.01, 0.03))


def noisy_plateau() -> Case:
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    return Case(x, torch.sin(x.sum(1, keepdim=True)), lambda: nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1)),
                steps=600, snap_every=10, eval_every=10, rates=(0.025, 0.05, 0.1))


CASES: dict[str, Callable[[], Case]] = {"diabetes MLP": diabetes, "noisy plateau": noisy_plateau}

METHODS: dict[str, dict] = {
    "PDT default": {},
    "snapshots every snap_every (momentum_spacing=None, the default before 2026-12-06; the default snapshots "
    "twice the momentum's 10 steps apart)": dict(momentum_spacing=None),
    "tau fixed (adaptive=False, the default before 2026-12-05 13:30)": dict(adaptive=False),
    "adaptive auto (tau halves after a merge whose interval's loss rose by over 10 %, +1 after one that paid; "
    "at these constant rates the same as adaptive=True)": dict(adaptive="auto"),
    "adaptive auto, capped at tau (halves as auto does, grows back up to tau, never past it)": dict(adaptive="auto", tau_max=8),
    "adaptive tau, loss_tolerance 0 (any rise halves tau)": dict(adaptive=True, loss_tolerance=0.0),
    "adaptive tau, loss_tolerance 0.3": dict(adaptive=True, loss_tolerance=0.3),
    "adaptive tau, loss_tolerance 1 (halves only where the loss doubled)": dict(adaptive=True, loss_tolerance=1.0),
    "tau 4 (jumps half as far)": dict(tau=4),
    "tau 2 (jumps a quarter as far)": dict(tau=2),
}
"""Method name -> PDTConfig fields set on top of the defaults and the case's ``snap_every``."""


def train(case: Case, lr: float, seed: int, options: dict | None) -> tuple[list[float], pdt.PDT | None]:
    """The full training loss at every evaluation of one run (``options``: PDT's fields, or None
    for the plain optimizer), and the PDT optimizer."""
    torch.manual_seed(seed)
    model = case.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    wrapped = None if options is None else pdt.PDT(optimizer, snap_every=case.snap_every, **options)
    step_with = optimizer if wrapped is None else wrapped
    order, losses = torch.Generator().manual_seed(seed + 1000), []
    batches: list[Tensor] = []
    for step in range(1, case.steps + 1):
        if not batches:
            permutation = torch.randperm(len(case.x), generator=order)
            batches = list(permutation[: len(case.x) // case.batch_size * case.batch_size].split(case.batch_size))
        index = batches.pop(0)
        loss = nn.functional.mse_loss(model(case.x[index]), case.y[index])
        loss.backward()
        step_with.step()
        step_with.zero_grad()
        if wrapped is not None:
            wrapped.report_loss(loss.detach())
        if step % case.eval_every == 0:
            with torch.no_grad():
                losses.append(float(nn.functional.mse_loss(model(case.x), case.y)))
    return losses, wrapped


def steps_ratio(plain: list[float], run: list[float]) -> float | None:
    """Plain evaluations over the run's to the plain run's final loss (None: never)."""
    target = max(plain[-1], 1e-6)
    first = next((index for index, loss in enumerate(run) if loss <= target), None)
    return None if first is None else len(plain) / (first + 1)


def end_ratio(plain: list[float], run: list[float]) -> float:
    """The run's mean loss over the last tenth of the evaluations over the plain run's."""
    tail = max(1, len(plain) // 10)
    return statistics.fmean(run[-tail:]) / statistics.fmean(plain[-tail:])


def case_rows(name: str, seeds: int, methods: dict[str, dict]) -> list[str]:
    case = CASES[name]()
    rows = []
    for lr in case.rates:
        plain = [train(case, lr, seed, None)[0] for seed in range(seeds)]
        finals = ", ".join(f"{curve[-1]:.4g}" for curve in plain)
        for method, options in methods.items():
            ratios, ends, merges = [], [], 0
            for seed in range(seeds):
                losses, wrapped = train(case, lr, seed, options)
                ratios.append(steps_ratio(plain[seed], losses))
                ends.append(end_ratio(plain[seed], losses))
                merges += wrapped.stats.merges
            rows.append(f"| {name} | {lr:g} | {finals} | {method} | "
                        + ", ".join("never" if r is None else f"{r:.2f}" for r in ratios) + " | "
                        + ", ".join(f"{e:.2f}" for e in ends) + f" | {merges} |")
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default="", help="the cases whose name contains this text")
    parser.add_argument("--methods", default="", help="comma-separated texts: the methods whose name contains one "
                        "(PDT's defaults always run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = chosen(METHODS, args.methods, always="PDT default")
    started = time.perf_counter()
    rows = ["| case | lr | plain run's final training loss, per seed | run | steps × to the plain run's final training "
            "loss, per seed | end-of-run loss over the plain run's (mean of the last tenth of evaluations), per seed | "
            "merges, all seeds |", "|---|---|---|---|---|---|---|"]
    for name in CASES:
        if args.only in name:
            rows += case_rows(name, args.seeds, methods)
    intro = (f"{args.seeds} seeds per case and rate, each run from the same initial weights and batches; SGD with "
             "momentum 0.9 at a constant rate, mean-squared-error loss, every PDT run with its loss reported. "
             f"Total benchmark time {time.perf_counter() - started:.0f} s.")
    part = (f", cases matching {args.only!r}" if args.only else "") + (f", methods matching {args.methods!r}" if args.methods else "")
    write_section(f"Regression{part} (benchmarks/regression.py)", intro + "\n\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
