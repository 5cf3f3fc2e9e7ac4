"""Controls: extrapolation of the last displacement on every weight, no mask (what PDT must
beat), and a nudge far below any merge (what a perturbation alone does to a run)."""

from __future__ import annotations


import torch

import pdt_compile as pdt
from pdt_compile.runtime.predictor import Prediction
from pdt_compile.runtime.schedule import Phase


class LinearExtrapolation(pdt.PDT):
    """At every prediction boundary move every weight to ``s + tau * (w - s)``: the last
    interval's displacement extrapolated tau intervals ahead of the last snapshot s.
    Same ring, schedule and bookkeeping as PDT; no DMD, no mask."""

    def _run_boundary(self, phase: Phase) -> Prediction | None:
        if phase != Phase.PREDICT:
            return super()._run_boundary(phase)
        ring, tau = self.ring, self.schedule.tau
        accepted = []
        for index, p in enumerate(ring.params):
            w = p.detach().view(-1)
            s = ring.rows(index)[ring.last_slot].to(w.dtype)
            w.copy_(s + tau * (w - s))
            accepted.append(w.numel())
        ring.capture_()
        return Prediction(accepted, [None] * len(accepted))


class Nudge(pdt.PDT):
    """At every prediction boundary multiply every weight by ``1 + scale * e``, ``e`` standard
    normal (a fixed generator): a move many orders of magnitude below a merge's, on PDT's own
    schedule. Where it moves a run's time to a target as much as PDT does, that time measures
    the task's sensitivity to any perturbation, not what the merges did."""

    scale = 1e-6

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._noise = torch.Generator().manual_seed(0)

    def _run_boundary(self, phase: Phase) -> Prediction | None:
        if phase != Phase.PREDICT:
            return super()._run_boundary(phase)
        ring = self.ring
        for p in ring.params:
            w = p.detach()
            w.mul_(1 + self.scale * torch.randn(w.shape, generator=self._noise).to(w))
        ring.capture_()
        return Prediction([0] * len(ring.params), [None] * len(ring.params))
