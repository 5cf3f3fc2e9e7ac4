"""When to snapshot and predict, and how far: a small state machine driven by steps and losses."""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass
from typing import Any

from ..config import PDTConfig


class Phase(enum.IntEnum):
    """What the runtime does after an optimizer step."""

    ORDINARY = 0  # nothing
    CAPTURE = 1  # boundary: write a snapshot
    PREDICT = 2  # prediction boundary: forecast, mask, merge, then snapshot


@dataclass
class Schedule:
    """Counters and the adaptive horizon. Decisions depend only on the counters (and the
    reported losses), so the eager and compiled paths, and a resumed run, agree exactly."""

    config: PDTConfig
    steps: int = 0
    boundaries: int = 0
    boundaries_since_reset: int = 0
    boundaries_since_prediction: int = 0
    tau: int = 0
    interval_loss_sum: float = 0.0
    interval_loss_count: int = 0
    loss_before_merge: float | None = None
    last_merge_step: int | None = None
    merge_loss: float | None = None

    def __post_init__(self) -> None:
        if self.tau == 0:
            self.tau = self.config.tau

    def boundary_next(self) -> bool:
        """Whether the step about to run ends an interval."""
        return (self.steps + 1) % self.config.snap_every == 0

    def next_phase(self, ring_count: int) -> Phase:
        """The phase of the step about to complete (known before it runs)."""
        if (self.steps + 1) % self.config.snap_every:
            return Phase.ORDINARY
        ready = (
            ring_count >= self.config.history
            and self.boundaries_since_reset >= self.config.burn_in
            and self.boundaries_since_prediction + 1 >= self.config.predict_every
        )
        return Phase.PREDICT if ready else Phase.CAPTURE

    def commit(self, phase: Phase, merged: bool, ring_reset: bool) -> None:
        """Advance the counters after ``phase`` ran; ``merged``: the prediction changed weights."""
        self.steps += 1
        if phase == Phase.ORDINARY:
            return
        self.boundaries += 1
        self.boundaries_since_reset = 0 if ring_reset else self.boundaries_since_reset + 1
        if phase == Phase.PREDICT:
            self.boundaries_since_prediction = 0
        else:
            self.boundaries_since_prediction += 1
        self._adapt(merged)
        if merged:
            self.last_merge_step = self.steps
            self.merge_loss = None

    def _adapt(self, merged: bool) -> None:
        mean = self.interval_loss_sum / self.interval_loss_count if self.interval_loss_count else None
        self.interval_loss_sum, self.interval_loss_count = 0.0, 0
        if not self.config.adaptive or mean is None:
            return
        if self.loss_before_merge is not None:
            if mean > self.loss_before_merge * (1.0 + self.config.loss_tolerance):
                self.shrink()
            else:
                self.tau = min(self.config.tau_max, self.tau + 1)
        self.loss_before_merge = mean if merged else None

    def shrink(self) -> None:
        """Halve tau (within tau_min): the last merge did not pay off."""
        self.tau = max(self.config.tau_min, self.tau // 2)

    def report_loss(self, loss: float) -> bool:
        """Record the training loss of the step just completed. Returns True when it
        calls for rolling back the last merge (see ``PDTConfig.rollback_factor``)."""
        if not math.isfinite(loss):
            return False
        self.interval_loss_sum += loss
        self.interval_loss_count += 1
        factor = self.config.rollback_factor
        if factor is None or self.last_merge_step is None:
            return False
        if self.steps == self.last_merge_step:
            self.merge_loss = loss  # computed before the merge
            return False
        if self.steps == self.last_merge_step + 1 and self.merge_loss is not None:
            self.last_merge_step = None
            return loss > factor * self.merge_loss
        return False

    def state_dict(self) -> dict[str, Any]:
        state = asdict(self)
        state.pop("config")
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
