"""Training-step helpers shared by the overhead benchmarks."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from pdt_compile.runtime.schedule import Phase


def train_step(model: nn.Module, x, y, opt) -> Callable[[], object]:
    """Forward, backward, ``opt.step()``, ``zero_grad``; returns the loss (to compile or time)."""

    def run():
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    return run


CORE = dict(history=5, burn_in=0, gradient_limit=None, moment_ratio=None, radial="keep")
"""PDT's options for timing one kind of step: the prediction alone (DMD, mask, merge, capture),
without the gradient check, the moment filter or radial handling, whose costs in training
``benchmarks.interval_cost`` counts."""


def force_phase(opt, phase: Phase) -> None:
    """Make every step of ``opt`` (a PDT with ``snap_every=1``) run ``phase``, so that one kind of
    step is timed through the user's own training step, compiled forward and backward included
    (a benchmark's hook: it replaces the schedule's decision, nothing else)."""
    opt.schedule.horizon = opt.config.tau
    opt.schedule.next_phase = lambda *args, **kwargs: phase


def ready_to_predict(opt, step: Callable[[], object]) -> None:
    """Run ``step`` (a training step of ``opt``, a PDT with ``snap_every=1``) once for the
    parameters' first step, fill the ring with captures, and force predictions from then on."""
    step()
    force_phase(opt, Phase.CAPTURE)
    for _ in range(opt.config.history):
        step()
    force_phase(opt, Phase.PREDICT)
