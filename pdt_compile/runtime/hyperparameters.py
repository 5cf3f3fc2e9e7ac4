"""Learning rates as tensors inside compiled optimizer steps, so schedulers never recompile.

A float learning rate is a constant of a compiled optimizer graph: SGD's and Adam's foreach
updates take it as a Python scalar (``alpha=-lr``), Dynamo guards on its value, and every
scheduler step recompiles until the recompile limit silently drops the step back to eager
(measured with plain ``torch.compile`` too, torch 2.13, aot_eager and Inductor). While a
PDT-compiled step runs, :class:`TensorHyperparameters` puts a 0-d tensor holding the same value
in each param group instead (Adam's ``betas`` too, which OneCycleLR cycles), switching on the
optimizer's ``capturable`` path that tensor hyperparameters need, and restores the floats
afterwards: schedulers, checkpoints and the user's code only ever see floats. It starts doing
so the first time a value changes: until then the graphs keep the float constants (Adam's
capturable update costs ~8 % more per step, measured in benchmarks/compile_overhead.py), and
the switch recompiles each variant once.

Every other param-group entry stays a constant of the graphs; :meth:`TensorHyperparameters.changed_constant`
tells ``pdt.compile`` when one changes, so that it stops tracing the optimizer step rather than
recompile every variant at each change.

Adam's capturable update divides by the step size, so at a learning rate of exactly 0 it
turns weights whose second moment is 0 into NaN (plain ``torch.compile`` does the same at a
float LR of 0). Such steps (the first step of a warmup from 0) run the optimizer eagerly.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor
from torch.optim import ASGD, SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, NAdam, Optimizer, RAdam, RMSprop, Rprop

TENSOR_HYPERPARAMETERS: dict[type, tuple[str, ...]] = {
    SGD: ("lr",), Adam: ("lr", "betas"), AdamW: ("lr", "betas"),
    **{optimizer: ("lr",) for optimizer in (ASGD, Adadelta, Adagrad, Adamax, NAdam, RAdam, RMSprop, Rprop)},
}
"""Optimizers whose compiled step takes these param-group entries as tensors (tested: no
recompile under a learning-rate schedule, the eager run's weights). Under ``pdt.compile`` a
change of any other entry, or of an unlisted optimizer's learning rate, makes the optimizer
step run eagerly from then on (:meth:`TensorHyperparameters.changed_constant`)."""


STEP_COUNTERS = ("weight_sum", "step")
"""Param-group or per-parameter state entries that an optimizer's own step rewrites at every
step as Python numbers (schedule-free optimizers keep their running sum of step weights in
``weight_sum``; pytorch-optimizer's count their steps in ``step`` and feed it to Python maths,
as LAMB's bias corrections by ``math.pow``; Hugging Face's Adafactor counts in each parameter's
state, where torch's own optimizers keep a tensor): a compiled step would be recompiled at each
one (plain ``torch.compile`` recompiles such a step until Dynamo's recompile limit), so
``pdt.compile`` runs it eagerly, from the start or from the step that adds the entry
(``benchmarks.recompiles``)."""


def rewrites_constants_every_step(optimizer: Optimizer) -> bool:
    """Whether ``optimizer``'s param groups, or the state of its first parameter that has one,
    hold one of :data:`STEP_COUNTERS` as a Python number."""
    if any(_is_count(group.get(key)) for group in optimizer.param_groups for key in STEP_COUNTERS):
        return True
    first = next(iter(getattr(optimizer, "state", {}).values()), None)
    return isinstance(first, dict) and any(_is_count(first.get(key)) for key in STEP_COUNTERS)


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def learning_rate(group: dict[str, Any]) -> float | Tensor | None:
    """A param group's learning rate, None where it holds no number: a step size of the
    optimizer's own (A2Grad's groups have no ``lr``; Hugging Face's Adafactor keeps None there
    under its relative step)."""
    lr = group.get("lr")
    return lr if isinstance(lr, (numbers.Real, Tensor)) and not isinstance(lr, bool) else None


def _is_float_constant(value: Any) -> bool:
    """A float, or a tuple of floats (Adam's betas): what Dynamo specialises an optimizer step on."""
    if isinstance(value, tuple):
        return bool(value) and all(isinstance(v, float) for v in value)
    return isinstance(value, float)


def tensor_keys(optimizer: Optimizer) -> tuple[str, ...]:
    """The param-group entries handed to compiled graphs as tensors for ``optimizer``."""
    return TENSOR_HYPERPARAMETERS.get(type(optimizer), ())


class TensorHyperparameters:
    """Context manager around a compiled optimizer step: float hyperparameters in, tensors
    (fixed addresses, refilled each step) during the step, floats back out."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.keys = tensor_keys(optimizer)
        self.capturable = "betas" in self.keys
        self._tensors: list[dict[str, Any]] = []
        self._saved: list[dict[str, Any]] = []
        self._first: list[tuple] | None = None
        self._first_constants: list[dict[str, Any]] | None = None
        self.active = False
        """Whether the tensors are in use (a value has changed since the first step)."""

    def changed_constant(self) -> str | None:
        """The name of a float param-group entry that compiled graphs take as a constant (any
        but :attr:`keys`: an unlisted optimizer's learning rate, SGD's momentum) whose value
        differs from the first step's, or None. Dynamo guards on float values and recompiles
        the optimizer step at every change, until its recompile limit; an int that changes (a
        step count some optimizers keep in the group) turns dynamic after one recompile."""
        values = [
            {key: value for key, value in group.items() if key not in self.keys and _is_float_constant(value)}
            for group in self.optimizer.param_groups
        ]
        if self._first_constants is None:
            self._first_constants = values
        for now, first in zip(values, self._first_constants):
            for key, value in now.items():
                if key in first and value != first[key]:
                    return key
        return None

    def _values(self) -> list[tuple]:
        # Floats by value; anything else (a user's tensor LR) by identity: comparing device
        # tensors would synchronise.
        def key_of(value: Any) -> Any:
            if isinstance(value, tuple):
                return tuple(key_of(v) for v in value)
            return value if isinstance(value, float) else id(value)

        return [tuple(key_of(group[key]) for key in self.keys) for group in self.optimizer.param_groups]

    def _changed(self) -> bool:
        values = self._values()
        if self._first is None:
            self._first = values
        return values != self._first

    def has_zero_lr(self) -> bool:
        """Whether some param group's learning rate is exactly 0 this step."""
        return any(lr is not None and float(lr) == 0.0 for lr in map(learning_rate, self.optimizer.param_groups))

    def _tensor(self, group_index: int, key: str, position: int, value: float, device: torch.device) -> Tensor:
        while len(self._tensors) <= group_index:
            self._tensors.append({})
        cache = self._tensors[group_index]
        tensor = cache.get((key, position))
        if tensor is None:
            tensor = torch.zeros((), dtype=torch.float32, device=device)
            torch._dynamo.mark_static_address(tensor, guard=False)
            cache[(key, position)] = tensor
        tensor.fill_(value)
        return tensor

    def __enter__(self) -> "TensorHyperparameters":
        self._saved = []
        if not self.keys or not (self.active or self._changed()):
            return self
        self.active = True
        for index, group in enumerate(self.optimizer.param_groups):
            saved: dict[str, Any] = {}
            device = group["params"][0].device if group["params"] else torch.device("cpu")
            for key in self.keys:
                value = group[key]
                if key == "betas":
                    if all(isinstance(b, float) for b in value):
                        saved[key] = value
                        group[key] = tuple(self._tensor(index, key, i, b, device) for i, b in enumerate(value))
                elif isinstance(value, float):
                    saved[key] = value
                    group[key] = self._tensor(index, key, 0, value, device)
            if saved and self.capturable and not group.get("capturable", False):
                saved["capturable"] = group["capturable"]
                group["capturable"] = True
            self._saved.append(saved)
        return self

    def __exit__(self, *exc: Any) -> None:
        for group, saved in zip(self.optimizer.param_groups, self._saved):
            group.update(saved)
        self._saved = []
