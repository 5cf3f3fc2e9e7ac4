"""A probe: merge only where Adam's own moments say the gradient has a direction.

Late in a run at a constant rate, an adaptive optimizer's per-element steps stay of the order of
its learning rate however small the gradient's mean becomes, so the displacement the mask
compares against is, for many elements, noise, and tau intervals of it are a jump the optimizer
did not mean. Adam keeps the estimate that tells signal from noise: with first moment m and
second moment v, |m| / sqrt(v) is about |mean| / rms of the gradient (near 1 where it keeps its
sign, about 0.16 (median) where it is noise, at beta1 = 0.9). :class:`MomentFilteredPDT`
undoes, after each merge, the jump of every element whose ratio is below a threshold; where
the optimizer keeps no such moments (SGD, schedule-free's z), it is PDT's defaults.
The runs of ``benchmarks.variants --variants 'moment ratio'`` up to commit d64f4a5 ran this
probe; ``PDTConfig.moment_ratio`` now does the same (``tests/test_optim.py`` checks that both make
the same trajectory), and the variants use the field.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import pdt_compile as pdt
from pdt_compile.runtime.schedule import Phase


def moment_ratio(first: Tensor, second: Tensor, eps: float = 1e-12) -> Tensor:
    """|m| / sqrt(v), elementwise (bias corrections cancel to within a factor near 1 late in a run)."""
    return first.abs() / (second.sqrt() + eps)


def moments_of(optimizer: Any, p: Tensor) -> tuple[Tensor, Tensor] | None:
    """``p``'s Adam moments (``exp_avg``, ``exp_avg_sq``) in ``optimizer`` or the optimizer it
    wraps (Lookahead), or None."""
    while optimizer is not None:
        state = getattr(optimizer, "state", {}).get(p, {})
        if "exp_avg" in state and "exp_avg_sq" in state:
            return state["exp_avg"], state["exp_avg_sq"]
        optimizer = getattr(optimizer, "optimizer", None)
    return None


class MomentFilteredPDT(pdt.PDT):
    """PDT whose merges keep only the elements where Adam's |m| / sqrt(v) is at least
    ``ratio``; ``stats.filtered`` counts the elements undone."""

    def __init__(self, optimizer: Any, *, ratio: float, **options: Any) -> None:
        super().__init__(optimizer, **options)
        self.ratio = ratio
        self.filtered = 0

    def _run_boundary(self, phase: Phase):
        prediction = super()._run_boundary(phase)
        if prediction is None or phase == Phase.ORDINARY:
            return prediction
        undo: list[Tensor | None] = []
        for p, jump in zip(self._ring.params, prediction.jumps):
            moments = moments_of(self.optimizer, p)
            if jump is None or moments is None:
                undo.append(None)
                continue
            weak = moment_ratio(*moments).reshape(-1) < self.ratio
            part = jump * weak.to(jump.dtype)
            self.filtered += int(((jump != 0) & weak).sum())
            undo.append(part)
        self._translate_(undo, -1.0)
        for jump, part in zip(prediction.jumps, undo):
            if jump is not None and part is not None:
                jump.sub_(part)
        return prediction
