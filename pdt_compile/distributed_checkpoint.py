"""Loading PDT's state from the flattened optimizer state dicts of torch's distributed
state-dict API (``StateDictOptions(flatten_optimizer_state_dict=True)``, torchtitan's layout).

``get_optimizer_state_dict`` flattens whatever ``PDT.state_dict()`` holds, PDT's entries
included: ``"state.<name>.pdt_..."`` for its ring and jumps, ``"param_groups.<name>.pdt_state"``
for the rest. ``set_optimizer_state_dict`` rebuilds the nested dict from the names the live
optimizer holds (the keys of ``optimizer.state[p]`` and of each param group), and PDT keeps its
entries out of the wrapped optimizer's live state, so torch's function drops them and PDT
restarts its burn-in. :func:`set_optimizer_state_dict` is torch's function with those names
added to the live optimizer for the duration of the load (and removed after), so the rebuilt
dict carries PDT's state into ``PDT.load_state_dict``.
"""

from __future__ import annotations

from typing import Any, Iterable

from torch import nn
from torch.optim import Optimizer

from .optim import PDT
from .runtime.checkpoint import GROUP_KEY, PARAMETER_PREFIX

PLACEHOLDER = 0
"""The value of a name added to a live optimizer: never read (the load reads the flattened
dict's), and of a type torch's flattening accepts should the load flatten the live state."""


def flattened_names(flat: dict[str, Any]) -> tuple[set[str], bool]:
    """PDT's per-parameter state names in a flattened optimizer state dict, and whether it holds
    PDT's param-group entry. A flattened key is ``"state.<parameter name>.<state name>"`` or
    ``"param_groups.<parameter name>.<group key>"``; parameter names hold dots, state names do
    not."""
    names = {key.rsplit(".", 1)[1] for key in flat if key.startswith("state.")}
    group = any(key.startswith("param_groups.") and key.rsplit(".", 1)[1] == GROUP_KEY for key in flat)
    return {name for name in names if name.startswith(PARAMETER_PREFIX)}, group


def set_optimizer_state_dict(model: nn.Module, optimizers: Optimizer | Iterable[Optimizer],
                             optim_state_dict: dict[str, Any], *, options: Any = None) -> None:
    """``torch.distributed.checkpoint.state_dict.set_optimizer_state_dict`` (same arguments)
    that loads PDT's state from a flattened dict too (``flatten_optimizer_state_dict=True``,
    torchtitan's layout), which torch's function drops. Any other dict goes to torch's
    function as it is; optimizers other than ``pdt.PDT`` load as they would there."""
    from torch.distributed.checkpoint import state_dict as dsd

    optimizers = (optimizers,) if isinstance(optimizers, Optimizer) else tuple(optimizers)
    wrapped = [optimizer for optimizer in optimizers if isinstance(optimizer, PDT)]
    names, group = flattened_names(optim_state_dict)
    if "state" in optim_state_dict or not wrapped or not (names or group):
        dsd.set_optimizer_state_dict(model, optimizers, optim_state_dict, options=options)
        return
    if any(not optimizer.state for optimizer in wrapped):
        # Torch creates an optimizer's state (a step at rate 0) only where it finds none; the
        # names below would hide that it has none.
        dsd.get_optimizer_state_dict(model, optimizers)
    try:
        for optimizer in wrapped:
            for p in optimizer.ring.params:  # the parameters whose state PDT.state_dict() gives its names
                optimizer.state[p].update(dict.fromkeys(names, PLACEHOLDER))
            if group:
                optimizer.param_groups[0][GROUP_KEY] = PLACEHOLDER
        dsd.set_optimizer_state_dict(model, optimizers, optim_state_dict, options=options)
    finally:
        for optimizer in wrapped:
            for entry in optimizer.state.values():
                for name in [name for name in entry if name.startswith(PARAMETER_PREFIX)]:
                    del entry[name]
            for param_group in optimizer.param_groups:
                param_group.pop(GROUP_KEY, None)
