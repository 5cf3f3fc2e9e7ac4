"""Optimizers that keep weight-space tensors of their own: what moves with a merge.

A merge moves some weights by a jump J. An optimizer that keeps another copy of the weights in
its state (schedule-free's base iterate z and, in its reference form, the average x;
Lookahead's slow weights) pulls the weights back toward that copy at its next steps, undoing
the jump. PDT therefore applies J to every such tensor too: the whole optimizer state in weight
space is translated, as if the trajectory had been ahead all along. Momentum buffers and Adam
moments are displacements, not positions, and stay as they are.

The registry maps an optimizer class (by ``module.qualname``, so no package is imported here)
to the keys of ``optimizer.state[p]`` to translate. :func:`register_optimizer` adds one.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor
from torch.optim import Optimizer

WEIGHT_SPACE_STATE: dict[str, tuple[str, ...]] = {
    "schedulefree.sgd_schedulefree.SGDScheduleFree": ("z",),
    "schedulefree.sgd_schedulefree_closure.SGDScheduleFreeClosure": ("z",),
    "schedulefree.sgd_schedulefree_reference.SGDScheduleFreeReference": ("z", "x"),
    "schedulefree.adamw_schedulefree.AdamWScheduleFree": ("z",),
    "schedulefree.adamw_schedulefree_closure.AdamWScheduleFreeClosure": ("z",),
    "schedulefree.adamw_schedulefree_reference.AdamWScheduleFreeReference": ("z", "x"),
    "schedulefree.radam_schedulefree.RAdamScheduleFree": ("z",),
    "schedulefree.radam_schedulefree_closure.RAdamScheduleFreeClosure": ("z",),
    "pytorch_optimizer.optimizer.lookahead.Lookahead": ("slow_params",),
}
"""``module.qualname`` of an optimizer class -> keys of its per-parameter state that hold
weights (tested for each schedule-free variant and pytorch-optimizer's Lookahead)."""

_UNSAFE_PACKAGES = ("schedulefree",)


def class_name(optimizer: object) -> str:
    cls = type(optimizer)
    return f"{cls.__module__}.{cls.__qualname__}"


def register_optimizer(optimizer_class: type, state_keys: Sequence[str]) -> None:
    """Declare that ``optimizer_class`` keeps weights in ``optimizer.state[p][key]`` for each
    key: PDT then applies every merge's jump to them as well."""
    WEIGHT_SPACE_STATE[f"{optimizer_class.__module__}.{optimizer_class.__qualname__}"] = tuple(state_keys)


def weight_space_keys(optimizer: object) -> tuple[str, ...]:
    """The state keys translated with a merge for ``optimizer``; raises for an optimizer PDT
    knows keeps weights elsewhere but has no adapter for."""
    name = class_name(optimizer)
    if name in WEIGHT_SPACE_STATE:
        return WEIGHT_SPACE_STATE[name]
    if not isinstance(optimizer, Optimizer) and name.split(".")[0] in _UNSAFE_PACKAGES:
        raise TypeError(
            f"PDT(optimizer=...): {type(optimizer).__name__} is not a torch.optim.Optimizer; wrap the "
            "schedule-free optimizer itself (e.g. schedulefree.AdamWScheduleFree) instead of a wrapper"
        )
    if name.split(".")[0] in _UNSAFE_PACKAGES:
        raise TypeError(
            f"PDT(optimizer=...): {name} keeps weights in its state and PDT has no adapter for it, so a "
            "merge would be pulled back; use a registered variant or declare its keys with "
            "pdt_compile.adapters.register_optimizer(cls, state_keys)"
        )
    return ()


MEASURED_UNSAFE = ("schedulefree",)
"""Packages whose optimizers PDT stacks on but, as measured (``benchmarks/stacking.py``), can
make worse: wrapping one warns."""


def stacking_warning(optimizer: object) -> str | None:
    """The warning for wrapping ``optimizer``, or None where stacking is not known to hurt."""
    if class_name(optimizer).split(".")[0] not in MEASURED_UNSAFE:
        return None
    return (
        f"PDT on {type(optimizer).__name__}: measured (benchmarks/stacking.py) faster on one task but worse on "
        "two: it never reached the schedule-free optimizer's own final loss on mnist1d or a character "
        "transformer and cost the transformer 3.6 accuracy points (with verify=, 0.2 points, and 1 of 3 seeds "
        "reached it). Prefer the schedule-free optimizer alone, or PDT on a scheduled optimizer"
    )


def companions(optimizer: Optimizer, params: Sequence[Tensor], keys: Sequence[str]) -> list[list[Tensor]]:
    """For each parameter, the state tensors of ``keys`` that exist now (created lazily by
    most optimizers at their first step)."""
    out = []
    for p in params:
        state = optimizer.state.get(p, {})
        out.append([state[key] for key in keys if key in state])
    return out
