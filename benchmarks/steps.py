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


def phase_step(model: nn.Module, x, y, opt, phase: Phase) -> Callable[[], None]:
    """One training step whose optimizer step runs the compiled ``phase`` variant directly
    (``opt`` must be a PDT handed to ``pdt.compile``): times a boundary on demand."""
    compiled = opt.compiled_step

    def run() -> None:
        torch.compiler.cudagraph_mark_step_begin()  # a step of its own under CUDA graphs (see pdt.compile)
        nn.functional.cross_entropy(model(x), y).backward()
        compiled(phase)
        opt.zero_grad()

    return run
