"""Sharded parameters (FSDP2 ``fully_shard``): reduce what PDT computes per shard.

DDP needs nothing here: its parameters are replicated and every rank sees the same reduced
gradients, so every rank makes the same prediction. With FSDP2 each rank holds a shard
(``DTensor`` with ``Shard`` placements): the ring keeps local shards, the Gram is the sum of
the local Grams (one ``all_reduce`` of h x h floats per DMD group), every rank solves the same
small problem and merges its own shard. Accepted counts and the finite-weights flag are summed
too, so every rank keeps identical stats and takes identical decisions. Decisions taken
from reported losses (adaptive tau, rollback, the runaway guard) use the loss averaged over
every rank of the default process group, under DDP as under FSDP2: each rank's own batch loss
would let ranks decide apart and their weights part.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor


def is_sharded(p: Tensor) -> bool:
    """True for a DTensor parameter split across ranks (FSDP2)."""
    placements = getattr(p, "placements", None)
    return placements is not None and any(placement.is_shard() for placement in placements)


def shard_group(params: Sequence[Tensor]):
    """The process group over which ``params`` are sharded, or None when none is sharded."""
    sharded = [p for p in params if is_sharded(p)]
    if not sharded:
        return None
    for p in sharded:
        if len(p.placements) != 1 or not p.placements[0].is_shard():
            raise NotImplementedError(
                f"PDT: DTensor placements {p.placements} are not supported; use FSDP2's "
                "fully_shard on a 1-D mesh (Shard(0))"
            )
    if len(sharded) != len(params):
        raise NotImplementedError("PDT: a mix of sharded and unsharded parameters in one optimizer is not supported")
    return sharded[0].device_mesh.get_group()


def global_numel(p: Tensor) -> int:
    """Elements of the whole parameter (a DTensor's ``numel`` is already global)."""
    return p.numel()


def sum_across_shards_(tensor: Tensor, group) -> Tensor:
    """In-place sum over the ranks of ``group`` (no-op without one)."""
    if group is not None:
        torch.distributed.all_reduce(tensor, group=group)
    return tensor


def _single_process() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1


def mean_across_ranks(value: Tensor | float, device: torch.device) -> float:
    """``value`` (a scalar) averaged over every rank of the default process group; itself
    outside one or in a group of one (no tensor made, no collective)."""
    if _single_process():
        return float(value.item() if isinstance(value, Tensor) else value)  # item(): no detach, no warning
    return means_across_ranks(torch.as_tensor(value.detach() if isinstance(value, Tensor) else value,
                                              device=device).reshape(1))[0]


def means_across_ranks(values: Tensor) -> list[float]:
    """:func:`mean_across_ranks` of each of ``values`` (``[n]``): one float32 all-reduce and
    one host read for n scalars."""
    if _single_process():
        return values.tolist()
    total = values.detach().to(torch.float32).clone()
    torch.distributed.all_reduce(total)
    return [value / torch.distributed.get_world_size() for value in total.tolist()]


_GROUPS: list[Any] = [None]


def group_key(group) -> int:
    """An int standing for ``group`` (0 for None), for compiled graphs, whose custom ops take
    ints but not process groups; :func:`group_from_key` maps it back."""
    for key, known in enumerate(_GROUPS):
        if known is group:
            return key
    _GROUPS.append(group)
    return len(_GROUPS) - 1


def group_from_key(key: int):
    """The process group :func:`group_key` numbered ``key``."""
    return _GROUPS[key]
