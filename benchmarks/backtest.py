"""A probe: the ring's own fit residual as a per-element noise estimate in the mask.

On AdamW transformers most weights move by less than an adaptive optimizer's step-to-step noise
over an interval, and DMD extrapolates that noise along with the drift. Issue 11 names two
per-element noise estimates for the mask: Adam's second moment (``PDTConfig.moment_ratio``) and
the ring's own fit residual, measured here. At a prediction boundary, :class:`BacktestPDT` fits
DMD, with PDT's own options, to the ring's snapshots but the newest and forecasts that newest one
interval ahead: ``r = s - ŝ`` per element is the error of a one-interval forecast made one
interval ago. After PDT's merge, elements whose jump is under ``factor * tau * |r|`` (the
prediction moves them less per interval than its own backtest missed by) are undone. Not a
PDTConfig option: measured first (``benchmarks.variants --variants backtest``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import pdt_compile as pdt

from .sf_harm import UndoingPDT


def backtest_residual(rows: Tensor, **dmd_options: Any) -> Tensor:
    """``rows[-1]`` minus DMD's one-interval forecast of it from ``rows[:-1]`` (``[h, n]``,
    oldest first, h >= 3): per element, how far a forecast made one interval ago missed."""
    if rows.shape[0] < 3:
        raise ValueError(f"backtest_residual: needs at least 3 snapshots, got {rows.shape[0]}")
    return rows[-1] - pdt.forecast(rows[:-1], 1, **dmd_options)[0]


def noisy_part(jump: Tensor, residual: Tensor, bar: float) -> Tensor:
    """The part of ``jump`` on the elements it moves by less than ``bar * |residual|`` (0 elsewhere)."""
    return torch.where((jump != 0) & (jump.abs() < bar * residual.abs()), jump, torch.zeros_like(jump))


class BacktestPDT(UndoingPDT):
    """PDT that undoes, after each merge, the elements its ring's backtest calls noise
    (module docstring)."""

    def __init__(self, *args: Any, factor: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.factor = factor

    def before_merge(self) -> list[Tensor] | None:
        ring = self._ring
        if ring.count < 3:
            return None
        options = self.config.dmd_options()
        return [backtest_residual(ring.snapshots(i).double(), **options).float() for i in range(len(ring.params))]

    def undo_parts(self, jumps: list, before: list) -> list:
        bar = self.factor * self.schedule.tau
        return [None if jump is None else noisy_part(jump, residual.to(jump.device), bar)
                for jump, residual in zip(jumps, before)]
