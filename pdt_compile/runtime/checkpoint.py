"""Where PDT's own state sits in the wrapped optimizer's state dict.

Checkpointing code that knows optimizers keeps only an optimizer's ``"state"`` (per parameter)
and ``"param_groups"``: ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict``,
which FSDP2 users, Lightning's ``ModelParallelStrategy`` and Accelerate's FSDP2 path save
through, rebuilds the dict from those two entries, keying each parameter's state by its name.
So PDT puts its tensors that follow a parameter (its ring rows, its last jump) into that
parameter's state, under keys starting with :data:`PARAMETER_PREFIX`, and everything else (the
schedule, the stats, the ring's counters and settings) into the first param group under
:data:`GROUP_KEY`, as one JSON string: a value that code walking the dict (the full-tensor
state dicts gather and scatter every leaf of it) keeps whole, whatever the lengths of the lists
inside. Not in a parameter's state: ``torch.distributed.checkpoint`` loads a non-tensor value
under an integer key (``opt.state_dict()["state"][0]``) into a new entry keyed ``"0"``, leaving
the integer one as it was (torch 2.13). :func:`embed` and :func:`extract` convert between that
layout and the one ``PDT`` builds and reads (one ``"pdt"`` dict with per-parameter lists),
which checkpoints saved before this layout, and optimizers whose state dicts have a layout of
their own, carry at the top level.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

PARAMETER_PREFIX = "pdt_"
"""Prefix of the keys of PDT's tensors in a parameter's optimizer state."""

GROUP_KEY = "pdt_state"
"""Key of PDT's other state in the first param group (not ``"pdt"``: a param group's ``"pdt"``
is the user's opt-out, ``"pdt": False``)."""

TOP_KEY = "pdt"
"""Key of all of PDT's state at the top level: checkpoints saved before this layout, and
optimizers whose state dicts have a layout of their own."""

PER_PARAMETER = (("ring", "ring_"), (None, ""))
"""Where the per-parameter lists of PDT's state dict lie: every list in its ``"ring"`` entry,
and every list at its top level (the jumps); with the prefix their keys take after
:data:`PARAMETER_PREFIX`."""


TUPLE = "__tuple__"
TUPLES = "__tuples__"
"""Marks a list of flat tuples with one tag rather than one per tuple: the stats' histories,
(step, value) pairs with an entry per prediction, are most of the string in a long run, and
the flattened layout repeats the string per parameter (``benchmarks/checkpoint_size.py``)."""

_SCALARS = (int, float, str, bool, type(None))


def _tagged(value: Any) -> Any:
    """``value`` with its tuples marked, so that JSON gives them back as tuples."""
    if isinstance(value, dict):
        return {key: _tagged(item) for key, item in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(item, tuple) and all(isinstance(x, _SCALARS) for x in item) for item in value):
            return {TUPLES: [list(item) for item in value]}
        return [_tagged(item) for item in value]
    if isinstance(value, tuple):
        return {TUPLE: [_tagged(item) for item in value]}
    return value


def _untagged(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {TUPLE}:
            return tuple(_untagged(item) for item in value[TUPLE])
        if set(value) == {TUPLES}:
            return [tuple(item) for item in value[TUPLES]]
        return {key: _untagged(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_untagged(item) for item in value]
    return value


def encode(metadata: dict[str, Any]) -> str:
    """PDT's non-tensor state as JSON (floats exact, NaN and infinities kept, tuples marked)."""
    return json.dumps(_tagged(metadata))


def decode(text: str) -> dict[str, Any]:
    """:func:`encode`'s input back."""
    return _untagged(json.loads(text))


def _entries(pdt_state: dict[str, Any]) -> list[tuple[dict[str, Any], str, Any, str]]:
    """``(owner, key, value, parameter key)`` for every entry of the dicts of ``pdt_state`` that
    :data:`PER_PARAMETER` names: where its per-parameter lists lie, or lay before :func:`embed`."""
    out = []
    for entry, prefix in PER_PARAMETER:
        owner = pdt_state if entry is None else pdt_state.get(entry)
        if isinstance(owner, dict):
            out += [(owner, key, value, PARAMETER_PREFIX + prefix + key) for key, value in owner.items()]
    return out


def _keys(state_dict: dict[str, Any], positions: Sequence[int]) -> list[Any]:
    """The keys in ``state_dict["state"]`` of the parameters at ``positions`` of the optimizer's
    parameters, param group after param group: indices, or names where the dict was keyed by
    name (``get_optimizer_state_dict``)."""
    keys = [key for group in state_dict.get("param_groups", []) for key in group["params"]]
    return [keys[i] if i < len(keys) else None for i in positions]


def standard(state_dict: dict[str, Any]) -> bool:
    """Whether ``state_dict`` has torch's layout: per-parameter ``"state"`` and ``"param_groups"``
    listing their ``"params"`` (some optimizers' own layouts do not: pytorch-optimizer's
    Lookahead nests its base optimizer's; PDT's state then sits at the top level)."""
    groups = state_dict.get("param_groups")
    return (isinstance(state_dict.get("state"), dict) and isinstance(groups, list) and len(groups) > 0
            and all(isinstance(group, dict) and "params" in group for group in groups))


def embed(state_dict: dict[str, Any], pdt_state: dict[str, Any], positions: Sequence[int]) -> dict[str, Any]:
    """``state_dict`` (the wrapped optimizer's, modified) holding ``pdt_state``: entry ``i`` of
    each per-parameter list in the state of the parameter at ``positions[i]`` of the
    optimizer's parameters (param group after param group), the rest in the first param group."""
    if not standard(state_dict):
        state_dict[TOP_KEY] = pdt_state
        return state_dict
    rest = {key: (dict(value) if isinstance(value, dict) else value) for key, value in pdt_state.items()}
    # The entries of Optimizer.state_dict() are the optimizer's live per-parameter dicts: copies.
    states = {slot: dict(entry) for slot, entry in state_dict["state"].items()}
    state_dict["state"] = states
    slots = _keys(state_dict, positions)
    for owner, key, tensors, parameter_key in _entries(rest):
        if not (isinstance(tensors, list) and tensors and all(hasattr(t, "shape") for t in tensors)):
            continue
        if len(tensors) != len(slots):
            raise ValueError(f"PDT.state_dict: {len(tensors)} {key!r} tensors for {len(slots)} tracked parameters")
        for slot, tensor in zip(slots, tensors):
            states.setdefault(slot, {})[parameter_key] = tensor
        owner[key] = len(tensors)  # what extract rebuilds the list from
    groups = [dict(group) for group in state_dict["param_groups"]]
    groups[0][GROUP_KEY] = encode(rest)
    state_dict["param_groups"] = groups
    return state_dict


def extract(state_dict: dict[str, Any], positions: Sequence[int]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(the wrapped optimizer's state dict, PDT's state or None)`` from a state dict that
    :func:`embed` wrote (``positions`` as there, for this run's tracked parameters), or an older
    one with PDT's state at the top level; ``state_dict`` is left as it was. A list entry whose
    parameter holds none (another set of tracked parameters) is None."""
    state = dict(state_dict)
    if TOP_KEY in state:
        return state, state.pop(TOP_KEY)
    groups = [dict(group) for group in state.get("param_groups", [])]
    pdt_state = groups[0].pop(GROUP_KEY, None) if groups else None
    state["param_groups"] = groups
    states = {}
    found: dict[str, dict[Any, Any]] = {}
    for slot, entry in state.get("state", {}).items():
        mine = {key: value for key, value in entry.items() if key.startswith(PARAMETER_PREFIX)}
        for key, value in mine.items():
            found.setdefault(key, {})[slot] = value
        if len(mine) < len(entry):
            states[slot] = {key: value for key, value in entry.items() if key not in mine}
    state["state"] = states
    if pdt_state is None:
        return state, None
    pdt_state = decode(pdt_state)
    slots = _keys(state, positions)
    for owner, key, value, parameter_key in _entries(pdt_state):
        if isinstance(value, int) and not isinstance(value, bool) and parameter_key in found:
            owner[key] = [found[parameter_key].get(slot) for slot in slots]
    return state, pdt_state


def plain_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """The wrapped optimizer's own state dict in a checkpoint ``PDT.state_dict()`` wrote, without
    PDT's entries: what to load into the optimizer alone, to go on without PDT (loaded as it is,
    it would keep PDT's snapshot ring in its state, unused)."""
    return extract(state_dict, [])[0]

