"""A probe, not a PDTConfig field: PDT whose merges stand only on elements whose snapshot path
drifts more than it wanders (:func:`pdt_compile.mask.drift_mask`).

Issue 11 asks whether a per-element noise estimate in the mask makes merges safer. The trend
filter already asks that every snapshot lie behind the weights; a random walk still passes it
about one time in h. Near convergence at a constant rate (the ViT on Lookahead, where the late
merges cost the target) and on the character transformer, where the mask accepts about 4 % of
the elements, most of what passes may be such noise. This probe undoes each merge's jump where
the ring's path, oldest snapshot to the weights before the merge, has a net displacement below
``threshold`` times the root of its summed squared steps; run through ``benchmarks.variants``
(``drift=...``).
"""

from __future__ import annotations

from pdt_compile.mask import drift_mask
from pdt_compile.optim import PDT
from pdt_compile.runtime.schedule import Phase


class DriftPDT(PDT):
    """PDT whose merges keep their jump only where :func:`drift_mask` at ``drift`` passes."""

    def __init__(self, optimizer, *, drift: float, **options) -> None:
        super().__init__(optimizer, **options)
        self.drift = drift

    def _run_boundary(self, phase: Phase):
        if phase != Phase.PREDICT:
            return super()._run_boundary(phase)
        ring = self._ring
        order = ring.order()
        keep = []
        for index, tracked in enumerate(self.tracked()):
            rows = ring.rows(index)
            path = [rows[i] for i in order] + [tracked.detach().reshape(-1).float()]
            keep.append(drift_mask(path, self.drift))
        prediction = super()._run_boundary(phase)
        if prediction is None:
            return prediction
        undo = [None if jump is None else jump * ~kept.to(jump.device) for jump, kept in zip(prediction.jumps, keep)]
        self._translate_(undo, -1.0)
        for jump, part in zip(prediction.jumps, undo):
            if jump is not None:
                jump.sub_(part.to(jump.dtype))
        return prediction
