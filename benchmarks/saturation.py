"""A probe: how much of each step a sign optimizer's elements kept, as its noise estimate.

Lion steps every element by its learning rate, the sign of an interpolated momentum, so over an
interval of K steps an element moves by at most K * lr (decay aside), and by about
sqrt(2 K / pi) * lr where its sign is a coin toss. The share of that most it moved,
``|d| / (K * lr)`` with d = w - s (what the optimizer moved it over the last interval), is then
a per-element noise estimate that Lion gives for free, where Adam's is its moments
(``PDTConfig.moment_ratio``), which Lion does not keep. After PDT's merge,
:class:`SaturationPDT` undoes the jump of every element whose share is under ``bar``. Not a
PDTConfig option when measured (``benchmarks.variants --optimizer lion --variants saturation``, at
f223b24); since then ``PDTConfig.saturation``, which this probe, run with the option off, is the
oracle of in the tests.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pdt_compile.adapters import learning_rates

from .sf_harm import UndoingPDT


def saturation(displacement: Tensor, steps: int, lr: float) -> Tensor:
    """``|displacement| / (steps * lr)``: the share of the most a sign step of ``lr`` could
    have moved each element in ``steps`` steps (1: every step the same way)."""
    if steps < 1 or lr <= 0:
        raise ValueError(f"saturation: needs steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    return displacement.abs() / (steps * lr)


def unsaturated_part(jump: Tensor, share: Tensor, bar: float) -> Tensor:
    """The part of ``jump`` on the elements whose ``share`` is under ``bar`` (0 elsewhere)."""
    return torch.where((jump != 0) & (share < bar), jump, torch.zeros_like(jump))


class SaturationPDT(UndoingPDT):
    """PDT that undoes, after each merge, the elements whose last interval's displacement is
    under ``bar`` of the most a sign step could move them (module docstring)."""

    def __init__(self, *args: Any, bar: float = 0.5, **kwargs: Any) -> None:
        kwargs.setdefault("saturation", None)  # PDTConfig.saturation, the probe built in, off: the probe alone undoes
        super().__init__(*args, **kwargs)
        self.bar = bar

    def before_merge(self) -> list[Tensor | None]:
        ring, steps = self._ring, self.config.snap_every
        rates = learning_rates(self.optimizer, ring.params)
        return [None if lr is None or lr <= 0 else
                saturation(w.detach().reshape(-1).float() - ring.snapshots(i)[-1].to(w.device), steps, lr)
                for i, (w, lr) in enumerate(zip(self.tracked(), rates))]

    def undo_parts(self, jumps: list, before: list) -> list:
        return [None if jump is None or share is None else unsaturated_part(jump, share, self.bar)
                for jump, share in zip(jumps, before)]
