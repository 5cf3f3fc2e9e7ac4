"""A probe: what a merge does to Adam's first moment.

A merge jumps the weights ahead; Adam's first moment m, an average of the gradients at the
weights before the jump, goes on steering the next steps as if no jump had happened. Where the
jump already covered the ground m points to, the next steps add to it and the optimizer then
pulls back: on the character transformer AdamW takes most of a merge's head start back within
one interval (benchmarks/FINDINGS.md, "Time to baseline"). Issue 11 asks how a merge interacts
with Adam's moments. :class:`MomentScalingPDT` scales m by ``factor`` on the elements a merge
moved (0: Adam forgets their direction and takes the next gradients' alone), the second moment
kept. Not a PDTConfig option: measured first (``benchmarks.variants --variants 'first moment'``).
"""

from __future__ import annotations

from typing import Any

import torch

import pdt_compile as pdt
from pdt_compile.adapters import adam_moments
from pdt_compile.runtime.schedule import Phase


class MomentScalingPDT(pdt.PDT):
    """PDT that, after each merge, scales Adam's first moment by ``factor`` on the merged elements."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, factor: float, **options: Any) -> None:
        super().__init__(optimizer, **options)
        self.factor = factor

    def _finish_boundary(self, phase: Phase, prediction: Any) -> None:
        super()._finish_boundary(phase, prediction)
        if prediction is None or phase != Phase.PREDICT or self._jumps is None:
            return
        for moments, jump in zip(adam_moments(self.optimizer, self._ring.params), self._jumps):
            if moments is None or jump is None:
                continue
            first = moments[0].view(-1)
            first.copy_(torch.where(jump.view(-1) != 0, first * self.factor, first))
