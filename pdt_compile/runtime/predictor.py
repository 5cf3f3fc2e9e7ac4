"""One prediction over the ring, eager: Gram, batched host solve, streamed forecast/mask/merge.

The big tensors are streamed in cache-sized chunks, so the prediction reads the ring twice and
the weights once and writes the weights and the ring once: about the bytes of one optimizer
step. All DMD groups share one batched float64 solve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..config import PDTConfig
from ..distributed import global_numel, shard_group, sum_across_shards_
from ..dmd import displacement_coefficients, gram
from ..mask import forecast_mask_merge
from .history import SnapshotRing, _local


@dataclass
class Prediction:
    """Per-parameter accepted counts (``None`` for skipped parameters) and applied jumps."""

    accepted: list[int | None]
    jumps: list[Tensor | None]


def group_of(config: PDTConfig, count: int) -> list[int]:
    """DMD group of each parameter: its own (``"tensor"``) or one for all (``"model"``)."""
    return list(range(count)) if config.granularity == "tensor" else [0] * count


def _chunks(numel: int, size: int) -> range:
    return range(0, numel, size)


def ring_grams(ring: SnapshotRing, groups: Sequence[int], chunk: int) -> Tensor:
    """Float64 Gram of each group over the ring's rows (in ``ring.order()``'s numbering):
    ``[G, h, h]``, streamed in chunks of ``chunk`` elements."""
    h = ring.history
    out = torch.zeros(max(groups) + 1, h, h, dtype=torch.float64, device=ring.device)
    for index, group in enumerate(groups):
        for start in _chunks(ring.numels[index], chunk):
            out[group] += gram(ring.block(index, slice(start, start + chunk)))
    return out


def solve_coefficients(
    grams: Tensor, order: Sequence[int], rows: Tensor, steps: int, **dmd_options
) -> tuple[Tensor, Tensor]:
    """Batched host solve: physical-order Grams ``[G, h, h]`` -> coefficients in physical
    row order ``[G, steps, h]`` and s-coefficients ``[G, steps]`` (float64, on the host).

    This is the one device-to-host transfer of a prediction (h x h floats per group).
    """
    perm = torch.as_tensor(list(order))
    logical = grams.cpu()[:, perm][:, :, perm]
    coefficients = displacement_coefficients(logical, steps, rows=rows, **dmd_options)
    physical = torch.zeros_like(coefficients)
    physical[..., perm] = coefficients
    return physical, coefficients[..., -1]


def group_rows(numels: Sequence[int], groups: Sequence[int]) -> Tensor:
    """Elements per DMD group (the Gavish–Donoho threshold needs them)."""
    rows = torch.zeros(max(groups) + 1, dtype=torch.float64)
    for numel, group in zip(numels, groups):
        rows[group] += numel
    return rows


def predict_merge_capture_(
    ring: SnapshotRing,
    params: Sequence[Tensor],
    skip: Sequence[bool],
    config: PDTConfig,
    tau: int,
    keep_jumps: bool,
) -> Prediction:
    """Run one prediction boundary in place: merge into ``params``, update and advance the ring.

    For every parameter not in ``skip``: forecast tau intervals from the ring, mask against
    the displacement the optimizer just made, merge, apply the after-merge policy to the
    ring and capture the merged weights as the newest snapshot.
    """
    groups = group_of(config, len(params))
    numels = [global_numel(p) for p in params]
    process_group = shard_group(params)
    chunk = config.chunk_for(ring.device)
    grams = sum_across_shards_(ring_grams(ring, groups, chunk), process_group)
    coefficients, s_coefficients = solve_coefficients(
        grams, ring.order(), group_rows(numels, groups), tau, **config.dmd_options()
    )
    coefficients = coefficients.to(ring.device, torch.float32)
    s_coefficients = s_coefficients.to(ring.device, torch.float32)
    last = ring.last_slot
    shift = config.after_merge == "shift"
    accepted_counts: list[Tensor | None] = []
    jumps: list[Tensor | None] = []
    for index, p in enumerate(params):
        tensor = _local(p).detach()
        weights = tensor.reshape(-1)  # a copy only for non-contiguous parameters
        count = None if skip[index] else torch.zeros((), dtype=torch.int64, device=ring.device)
        jump_all = torch.zeros(weights.shape, dtype=torch.float32, device=ring.device) if keep_jumps and not skip[index] else None
        for start in _chunks(weights.numel(), chunk):
            columns = slice(start, start + chunk)
            w = weights[columns].float()
            block = ring.block(index, columns)
            if count is None:  # no gradient this step: the snapshot is all that happens
                ring.store_merged_(index, columns, block, w, None)
                continue
            group = groups[index]
            merged, accepted = forecast_mask_merge(
                w, block, block[last], coefficients[group], s_coefficients[group], tau, config.rule, config.trend
            )
            count += accepted.sum()
            jump = merged - w
            ring.store_merged_(index, columns, block, merged, jump if shift else None)
            weights[columns].copy_(merged)
            if jump_all is not None:
                jump_all[columns] = jump
        if weights.data_ptr() != tensor.data_ptr():
            tensor.copy_(weights.view(tensor.shape))
        accepted_counts.append(count)
        jumps.append(jump_all)
    ring.advance_()
    present = [c for c in accepted_counts if c is not None]
    totals = sum_across_shards_(torch.stack(present), process_group) if present else None
    values = iter(totals.tolist() if totals is not None else [])  # one sync
    counts = [None if c is None else next(values) for c in accepted_counts]
    return Prediction(counts, jumps)
