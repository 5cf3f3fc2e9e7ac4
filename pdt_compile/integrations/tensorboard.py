"""Write PDT's telemetry to TensorBoard (``torch.utils.tensorboard``; needs ``tensorboard``)."""

from __future__ import annotations

from typing import Any

from ..runtime.stats import GUARD_COUNTS, Stats

SCALARS = ("mask_ratio", "tau", "predictions", "merges", "boundaries") + GUARD_COUNTS
"""What :func:`log_stats` writes: the counts and ratios, and every guard's count (``decay_holds``
tells a run that predicts nothing in a decay from one whose predictions merge nothing)."""


def log_stats(writer: Any, stats: Stats, step: int, prefix: str = "pdt") -> None:
    """Add the current counters and ratios of ``stats`` as scalars at ``step``."""
    for name in SCALARS:
        writer.add_scalar(f"{prefix}/{name}", float(getattr(stats, name)), step)


def log_history(writer: Any, stats: Stats, prefix: str = "pdt") -> None:
    """Add the mask-ratio and tau histories (one point per prediction / boundary; the latest
    ``PDTConfig.history_limit`` of each: for a whole long run, call :func:`log_stats` as it goes)."""
    for step, ratio in stats.mask_ratio_history:
        writer.add_scalar(f"{prefix}/mask_ratio", ratio, step)
    for step, tau in stats.tau_history:
        writer.add_scalar(f"{prefix}/tau", tau, step)
