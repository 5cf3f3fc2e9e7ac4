"""Sharded parameters (FSDP2, HSDP, tensor parallelism): reduce what PDT computes per shard.

DDP needs nothing here: its parameters are replicated and every rank sees the same reduced
gradients, so every rank makes the same prediction. With DTensor parameters split across ranks
(``fully_shard``, ``parallelize_module``, or both on a 2-D mesh) each rank holds a piece: the
ring keeps local pieces, the Gram is the sum of the local Grams (one ``all_reduce`` of h x h
floats per DMD group over each mesh dimension a parameter is split over; a piece replicated
over such a dimension counts once), every rank solves the same small problem and merges its
own piece. Accepted counts and the finite-weights flag are summed too, so every rank keeps
identical stats and takes identical decisions. Decisions taken
from reported losses (adaptive tau, rollback, the runaway guard) use the loss averaged over
every rank of the default process group, under DDP as under FSDP2: each rank's own batch loss
would let ranks decide apart and their weights part.

Pipeline parallelism (``torch.distributed.pipelining``) splits the model itself: each stage's
optimizer holds other parameters. Given the group of a rank's peers in the other stages
(``PDT(..., pipeline_group=...)``), what PDT sums over the whole model (the gradient norm,
accepted counts, the finite-weights flag, the Gram of ``granularity="model"``) is summed over
the stages too, so every stage takes the decisions one process holding the whole model would.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor


def is_distributed(p: Tensor) -> bool:
    """True for a DTensor (sharded or replicated over its device mesh)."""
    return getattr(p, "placements", None) is not None


FSDP1_FLATTENED = "_fsdp_flattened"
"""The attribute FSDP1 (``FullyShardedDataParallel``) sets on the parameters it flattens into
its ``FlatParameter``s, and on those (as torch 2.13's source reads); FSDP2's ``fully_shard`` does not."""


def refuse_fsdp1(params: Sequence[Tensor]) -> None:
    """Raise where ``params`` are FSDP1's: each rank holds a 1-D slice of flattened weights as
    a plain tensor, so PDT would fit and decide per rank, apart from the others, and the ring's
    snapshots (``[history, numel]`` per parameter) break ``FSDP.optim_state_dict``, through which
    FSDP1's checkpoints (and ``torch.distributed.checkpoint.state_dict``'s of an FSDP1 model)
    gather optimizer state: a failure at the first checkpoint, hours into a run."""
    flattened = [p for p in params if getattr(p, FSDP1_FLATTENED, False)]
    if flattened:
        raise TypeError(
            f"PDT: {len(flattened)} of the optimizer's parameters are FSDP1's flattened shards "
            "(torch.distributed.fsdp.FullyShardedDataParallel), which PDT cannot predict alike on every rank nor save "
            "through FSDP.optim_state_dict. Shard the model with FSDP2 instead, torch.distributed.fsdp.fully_shard "
            "(Lightning: ModelParallelStrategy; Accelerate: FullyShardedDataParallelPlugin(fsdp_version=2); "
            "Transformers: fsdp_config={'version': 2}, its default), whose parameters PDT predicts as one process "
            "would, or use DDP"
        )


@dataclass(frozen=True)
class ShardReduction:
    """How every rank sums what PDT computes per parameter piece into the whole parameter's.

    ``groups``: the process groups of the mesh dimensions some parameter is split over, summed
    over one after the other (in the same order on every rank). ``counted``: per parameter,
    whether this rank's piece enters those sums; a parameter replicated over one of the
    groups (a tensor-parallel bias, a parameter outside the plan) enters only from that
    group's first rank, so that a sum counts it once."""

    groups: tuple[Any, ...]
    counted: tuple[bool, ...]
    stages: Any = None
    """The process group of this rank's peers in the other pipeline stages, which hold the
    rest of the model (None: this rank's parameters are the whole model)."""

    def weigh_(self, values: Tensor, indices: Sequence[int] | None = None) -> Tensor:
        """In place: ``values`` (one entry per parameter along dim 0: all, or those of
        ``indices``) with the entries of parameters this rank does not count set to zero."""
        flags = self.counted if indices is None else [self.counted[i] for i in indices]
        if not all(flags):
            mask = torch.tensor(flags, dtype=values.dtype, device=values.device)
            values.mul_(mask.view(-1, *[1] * (values.dim() - 1)))
        return values


def spans_stages(reduction: ShardReduction | None) -> bool:
    """Whether ``reduction`` sums over pipeline stages: the rank's parameters are one stage of
    the model, and what PDT totals over the model must join the other stages' sums even where
    this stage has nothing to add."""
    return reduction is not None and reduction.stages is not None


def _split_dimensions(p: Tensor) -> list[int]:
    """The mesh dimensions ``p`` is split over (none for a plain tensor)."""
    if not is_distributed(p):
        return []
    for placement in p.placements:
        if placement.is_partial():
            raise NotImplementedError(
                f"PDT: a parameter of shape {tuple(p.shape)} has DTensor placements {p.placements}, partial "
                "sums, which PDT cannot predict; give it Shard or Replicate placements on every mesh dimension, "
                'or leave it to the optimizer alone in a param group with "pdt": False'
            )
    return [dim for dim, placement in enumerate(p.placements) if not placement.is_replicate()]


@functools.lru_cache(maxsize=64)
def _mesh_group(mesh: Any, dim: int) -> tuple[tuple[int, ...], Any]:
    """The process group of ``mesh``'s dimension ``dim`` and its member ranks (which name it:
    a sub-mesh's group is its parent's dimension's)."""
    group = mesh.get_group(dim)
    return tuple(torch.distributed.get_process_group_ranks(group)), group


def shard_reduction(params: Sequence[Tensor], stages: Any = None) -> ShardReduction | None:
    """How ``params``' per-piece sums are reduced (:class:`ShardReduction`), or None when no
    parameter is split across ranks and ``stages`` (a pipeline group) is None. DTensors on any
    device mesh: FSDP2 (``Shard``), HSDP (``Replicate`` then ``Shard``), tensor parallelism and
    FSDP2 with it (``Shard`` or ``_StridedShard`` on one dimension, ``Shard`` or ``Replicate``
    on the other), beside plain tensors, which count as replicated."""
    groups: dict[tuple[int, ...], Any] = {}  # by member ranks: a sub-mesh's group is its parent's dimension's
    split: list[set[tuple[int, ...]]] = []
    for p in params:
        keys = set()
        for dim in _split_dimensions(p):
            key, group = _mesh_group(p.device_mesh, dim)
            groups.setdefault(key, group)
            keys.add(key)
        split.append(keys)
    if not groups and stages is None:
        return None
    first = {key: torch.distributed.get_rank(group) == 0 for key, group in groups.items()}
    counted = tuple(all(key in keys or first[key] for key in groups) for keys in split)
    return ShardReduction(tuple(groups.values()), counted, stages)


def shifted_placement(placement: Any, lead: int) -> Any:
    """``placement`` of a tensor, for the same tensor under ``lead`` more leading dimensions (a
    stack of snapshots): a sharded dimension moves back by ``lead``."""
    if placement.is_replicate():
        return placement
    dim = placement.dim + lead
    split_factor = getattr(placement, "split_factor", None)  # _StridedShard (FSDP2 over tensor parallelism)
    return type(placement)(dim) if split_factor is None else type(placement)(dim, split_factor=split_factor)


def global_numel(p: Tensor) -> int:
    """Elements of the whole parameter (a DTensor's ``numel`` is already global)."""
    return p.numel()


def sum_across_shards_(tensor: Tensor, reduction: ShardReduction | None) -> Tensor:
    """In-place sum over the ranks of every group of ``reduction`` (no-op without one)."""
    if reduction is not None:
        for group in reduction.groups:
            torch.distributed.all_reduce(tensor, group=group)
    return tensor


def sum_across_stages_(tensor: Tensor, reduction: ShardReduction | None) -> Tensor:
    """In-place sum over the pipeline stages of ``reduction`` (no-op without them): for a
    total over this rank's whole parameters."""
    if reduction is not None and reduction.stages is not None:
        torch.distributed.all_reduce(tensor, group=reduction.stages)
    return tensor


def sum_over_model_(tensor: Tensor, reduction: ShardReduction | None) -> Tensor:
    """In place: a sum over this rank's parameter pieces (one value, not one per parameter)
    made the whole model's: over the shards, then over the pipeline stages."""
    return sum_across_stages_(sum_across_shards_(tensor, reduction), reduction)


def sum_grams_(grams: Tensor, reduction: ShardReduction | None, whole_model: bool) -> Tensor:
    """In place: the local Grams of the DMD groups (``[G, h, h]``) summed over the parameters'
    pieces; with ``whole_model`` (``granularity="model"``: one group of every parameter), over
    the pipeline stages too."""
    return (sum_over_model_ if whole_model else sum_across_shards_)(grams, reduction)


def pipeline_group_of(value: Any) -> Any:
    """The process group ``PDT(pipeline_group=...)`` names: a ``ProcessGroup``, or a 1-D
    ``DeviceMesh`` (a pipeline mesh dimension, e.g. ``world_mesh["pp"]``); None stays None."""
    if value is None:
        return None
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("PDT(pipeline_group=...): torch.distributed is not initialized; call "
                           "torch.distributed.init_process_group first, or leave pipeline_group out in one process")
    if hasattr(value, "get_group") and hasattr(value, "ndim"):
        if value.ndim != 1:
            raise ValueError(f"PDT(pipeline_group=...): a DeviceMesh of {value.ndim} dimensions; pass the pipeline "
                             'dimension alone, e.g. pipeline_group=world_mesh["pp"]')
        return value.get_group()
    if not isinstance(value, dist.ProcessGroup):
        raise TypeError(f"PDT(pipeline_group=...): expected a ProcessGroup or a 1-D DeviceMesh, got "
                        f"{type(value).__name__}; pass the group of this rank and its peers in the other stages, "
                        'e.g. world_mesh["pp"].get_group()')
    return value


def sum_parameter_pieces_(
    values: Tensor, reduction: ShardReduction | None, indices: Sequence[int] | None = None
) -> Tensor:
    """In place: ``values``, one entry per parameter along dim 0 (all, or those of
    ``indices``), summed over the ranks' pieces with each parameter counted once."""
    if reduction is None:
        return values
    return sum_across_shards_(reduction.weigh_(values, indices), reduction)


def single_process() -> bool:
    """True outside a process group, or in a group of one."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1


def mean_across_ranks(value: Tensor | float | None, device: torch.device) -> float | None:
    """``value`` (a scalar; None where this rank has none) averaged over the ranks of the
    default process group that have one; None where none has. Outside a process group, or in
    a group of one, ``value`` itself (no tensor made, no collective)."""
    if single_process():
        return None if value is None else float(value.item() if isinstance(value, Tensor) else value)  # no detach
    return means_across_ranks([value], device)[0]


def means_across_ranks(values: Sequence[Tensor | float | None], device: torch.device) -> list[float | None]:
    """:func:`mean_across_ranks` of each of ``values``: one float32 all-reduce of 2n numbers
    (the values and how many ranks have each) and one host read. A rank without a value (a
    pipeline stage without the loss) passes None; every rank passes as many."""
    single = single_process()
    # Alone: every loss read as it is (float64 ones too); all-reduced: float32.
    dtype = functools.reduce(torch.promote_types, [value.dtype for value in values if isinstance(value, Tensor)],
                             torch.float32) if single else torch.float32
    stacked = torch.stack([torch.as_tensor(0.0 if value is None else value.detach() if isinstance(value, Tensor)
                                           else value, dtype=dtype, device=device).reshape(())
                           for value in values])
    if single:
        return [None if value is None else read for value, read in zip(values, stacked.tolist())]
    present = torch.tensor([value is not None for value in values], dtype=torch.float32, device=device)
    total = torch.cat([stacked * present, present])
    torch.distributed.all_reduce(total)
    read = total.tolist()
    sums, counts = read[: len(values)], read[len(values):]
    return [total_ / count if count > 0 else None for total_, count in zip(sums, counts)]


_GROUPS: list[Any] = [None]


def group_key(group) -> int:
    """An int standing for ``group`` (0 for None), for compiled graphs, whose custom ops take
    ints but not process groups; :func:`group_from_key` maps it back."""
    for key, known in enumerate(_GROUPS):
        if known is group or (known is not None and known == group):  # a rebuilt runtime's equal reduction
            return key
    _GROUPS.append(group)
    return len(_GROUPS) - 1


def group_from_key(key: int):
    """The process group :func:`group_key` numbered ``key``."""
    return _GROUPS[key]
