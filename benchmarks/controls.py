"""Controls PDT must beat: extrapolation of the last displacement on every weight, no mask."""

from __future__ import annotations


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
