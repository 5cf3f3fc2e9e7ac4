"""Telemetry: what PDT did, readable as attributes or keys, exportable to CSV."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence


GUARD_COUNTS = ("rollbacks", "skipped_nonfinite", "setbacks", "setback_undos", "loss_holds", "decay_holds",
                "gradient_undos", "moment_filtered", "saturation_filtered", "runaways", "verify_rejections",
                "verify_backtracks")
"""The counters :meth:`Stats.summary` names when they are not zero."""

HISTORIES = ("mask_ratio_history", "tau_history", "gradient_surges", "verify_loss_change")
"""The lists that take an entry per prediction or boundary: :attr:`Stats.history_limit` bounds them."""


@dataclass
class Stats:
    """Counters and histories of a PDT run (``opt.stats``)."""

    boundaries: int = 0
    predictions: int = 0
    merges: int = 0
    rollbacks: int = 0
    skipped_nonfinite: int = 0
    setbacks: int = 0
    """Times merges set the training loss back (``PDTConfig.setback_limit``): each held
    predictions back."""
    setback_undos: int = 0
    """Of those, the holds whose last merge was undone, having itself set the loss back by
    over ``setback_limit``."""
    loss_holds: int = 0
    """Prediction boundaries that only took a snapshot because the training loss was up
    (``PDTConfig.loss_hold``)."""
    decay_holds: int = 0
    """Prediction boundaries that only took a snapshot because the learning rate was decaying
    and still above ``PDTConfig.decay_window`` of its peak."""
    gradient_undos: int = 0
    """Merges undone because the gradient at the merged weights surged past
    ``PDTConfig.gradient_limit`` times the norm before them."""
    gradient_surges: list[tuple[int, float]] = field(default_factory=list)
    """(step, gradient norm right after the merge / mean norm before it) of the latest checked
    merges (:attr:`history_limit`)."""
    moment_filtered: int = 0
    """Elements whose accepted jump was undone because Adam's moments called their gradient
    noise (``PDTConfig.moment_ratio``); not in ``mask_ratio``."""
    saturation_filtered: int = 0
    """Elements whose accepted jump was undone because a sign optimizer moved them by less than
    ``PDTConfig.saturation`` of the most its steps could over the last interval; not in ``mask_ratio``."""
    runaways: int = 0
    """Losses that ran away (``PDTConfig.runaway_factor``): each moved the weights back to a snapshot."""
    tau: int = 0
    tau_waits_for_losses: bool = False
    """True while adaptive tau (``PDTConfig.adaptive``) is on but no training loss has been
    reported: tau stays fixed until one is (``opt.report_loss(loss)`` after each step)."""
    mask_ratio: float = 0.0
    """Accepted fraction of the elements at the last prediction."""
    mask_ratio_per_tensor: list[float] = field(default_factory=list)
    """Accepted fraction of each predicted tensor at the last prediction (not in checkpoints,
    where it would take a number per tensor under every parameter of the flattened layout: a
    resumed run has it from its next prediction)."""
    mask_ratio_total: float = 0.0
    """Sum of the mask ratios of every prediction (:attr:`mask_ratio_mean`)."""
    mask_ratio_history: list[tuple[int, float]] = field(default_factory=list)
    """(step, mask ratio) of the latest predictions (:attr:`history_limit`)."""
    tau_history: list[tuple[int, int]] = field(default_factory=list)
    """(step, tau) at the latest boundaries (:attr:`history_limit`)."""
    verify_evaluations: int = 0
    """Calls of the ``verify`` loss (each one forward pass)."""
    verify_rejections: int = 0
    """Merges undone because no fraction of them lowered the verify loss."""
    verify_backtracks: int = 0
    """Merges kept at a fraction (1/2, 1/4, ...) of their jump."""
    verify_loss_change: list[tuple[int, float, float]] = field(default_factory=list)
    """(step, verify loss change of what was kept, fraction kept) of the latest verified merges
    (:attr:`history_limit`)."""
    verify_seconds: float = 0.0
    """Host wall time spent verifying merges (the verify losses and the weight moves)."""
    prediction_seconds: float = 0.0
    """Host wall time spent in predictions: on the eager path the prediction alone (with
    Inductor-compiled kernels, ``kernels="inductor"`` or ``"auto"`` from 2**20 elements, the
    first prediction includes their compile, a few seconds); in compiled
    boundary graphs (``pdt.compile``, ``kernels="graph"``) the prediction graph's call, with the
    optimizer update where the graph holds it, as the host sees it (on CUDA the work still queued
    when the call returns is not in it), leaving out each graph's first call, which compiles it."""

    history_limit: int | None = field(default=1000, repr=False, compare=False)
    """Entries each history (:data:`HISTORIES`) keeps, the latest; ``None``: all. Set from
    ``PDTConfig.history_limit``, not saved in checkpoints (the resuming run's setting holds)."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    @property
    def mask_ratio_mean(self) -> float:
        """Mean mask ratio over every prediction of the run, whatever the histories keep."""
        return self.mask_ratio_total / self.predictions if self.predictions else 0.0

    def log(self, history: str, entry: tuple) -> None:
        """Append ``entry`` to the history named ``history``, keeping its latest :attr:`history_limit`."""
        entries = getattr(self, history)
        entries.append(entry)
        self._trim(entries)

    def _trim(self, entries: list) -> None:
        if self.history_limit is not None and len(entries) > self.history_limit:
            del entries[: len(entries) - self.history_limit]

    def summary(self) -> str:
        """One line for a log: the counts, the mask ratio (last and mean over the predictions),
        tau, the guards that acted and the time spent predicting; ``str(stats)`` gives it
        (``repr`` keeps every history)."""
        parts = [f"{self.boundaries} boundaries", f"{self.predictions} predictions", f"{self.merges} merges"]
        if self.predictions:
            parts.append(f"mask ratio {self.mask_ratio:.3g} (mean {self.mask_ratio_mean:.3g})")
        parts.append(f"tau {self.tau}" + (" (fixed: no loss reported to adapt it)" if self.tau_waits_for_losses else ""))
        parts += [f"{name} {value}" for name in GUARD_COUNTS if (value := getattr(self, name))]
        parts.append(f"{1e3 * self.prediction_seconds:.1f} ms predicting")
        return "PDT: " + ", ".join(parts)

    def __str__(self) -> str:
        return self.summary()

    def record_prediction(
        self, step: int, accepted: Sequence[int], numels: Sequence[int], totals: tuple[int, int] | None = None,
    ) -> bool:
        """Record one prediction; returns whether any element was merged. ``totals``: the
        whole model's accepted and predicted elements where ``accepted`` and ``numels`` are one
        pipeline stage's (default: their sums)."""
        self.predictions += 1
        merged_total, total = (sum(accepted), sum(numels)) if totals is None else totals
        self.mask_ratio = merged_total / total if total else 0.0
        self.mask_ratio_per_tensor = [a / n if n else 0.0 for a, n in zip(accepted, numels)]
        self.mask_ratio_total += self.mask_ratio
        self.log("mask_ratio_history", (step, self.mask_ratio))
        merged = merged_total > 0
        self.merges += int(merged)
        return merged

    def as_dict(self) -> dict[str, Any]:
        state = asdict(self)
        del state["history_limit"]
        return state

    def checkpoint_dict(self) -> dict[str, Any]:
        """:meth:`as_dict` as a checkpoint holds it: without the per-tensor mask ratios."""
        state = self.as_dict()
        del state["mask_ratio_per_tensor"]
        return state

    def load_dict(self, state: dict[str, Any]) -> None:
        """Take a checkpoint's stats, its histories cut to this run's :attr:`history_limit`."""
        for key, value in state.items():
            setattr(self, key, value)
        if "mask_ratio_total" not in state:  # saved before the total: its history held every prediction
            self.mask_ratio_total = sum(ratio for _, ratio in self.mask_ratio_history)
        for name in HISTORIES:
            self._trim(getattr(self, name))

    def to_csv(self, path: str | Path) -> Path:
        """Write one row per prediction the history keeps: step, mask ratio, tau in force at that step."""
        path = Path(path)
        tau_at = dict(self.tau_history)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["step", "mask_ratio", "tau"])
            for step, ratio in self.mask_ratio_history:
                writer.writerow([step, f"{ratio:.6g}", tau_at.get(step, self.tau)])
        return path
