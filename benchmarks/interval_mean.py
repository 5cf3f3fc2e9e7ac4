"""A probe: snapshots that are each interval's mean weights rather than its last.

On AdamW transformers the mask accepts a few percent of the elements: over one interval most
weights move by less than the step-to-step noise of an adaptive optimizer, so the displacement
the mask reads (d = w - s) and the ring DMD fits are mostly noise. The mean of the weights over
an interval carries the same drift with the noise averaged down. :class:`IntervalMeanPDT` feeds
PDT's own maths those means: every step adds the tracked weights to a running sum; at a boundary
the tracked tensors are set to the interval's mean, PDT captures or predicts and merges as
always (d is then the last interval's mean displacement, the new snapshot the merged mean), and
the jump it made is added to the weights the optimizer reached. Not a PDTConfig option: it costs
a pass over the weights every step, so it is measured first (``benchmarks.variants --variants
'interval mean'``).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

import pdt_compile as pdt
from pdt_compile.runtime.schedule import Phase


class IntervalMeanPDT(pdt.PDT):
    """PDT on interval means (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sum: list[Tensor] | None = None
        self._count = 0

    def _add_to_mean(self) -> None:
        tracked = [t.detach().float() for t in self.tracked()]
        if self._sum is None:
            self._sum = [t.clone() for t in tracked]
        else:
            torch._foreach_add_(self._sum, tracked)
        self._count += 1

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        boundary = self.schedule.boundary_next()
        loss = super().step(closure)
        if not boundary:
            self._add_to_mean()
        return loss

    def _run_boundary(self, phase: Phase):
        if phase == Phase.ORDINARY:
            return super()._run_boundary(phase)
        self._add_to_mean()
        tracked = [t.detach() for t in self.tracked()]
        reached = [t.clone() for t in tracked]
        mean = torch._foreach_div(self._sum, float(self._count))
        for t, m in zip(tracked, mean):
            t.copy_(m)
        prediction = super()._run_boundary(phase)
        for t, m, w in zip(tracked, mean, reached):  # the jump (0 where nothing merged) onto the weights reached
            t.sub_(m.to(t.dtype)).add_(w)
        self._sum, self._count = None, 0
        return prediction

    def _restore_(self, called_at: int) -> None:
        super()._restore_(called_at)
        self._sum, self._count = None, 0
