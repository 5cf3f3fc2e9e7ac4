"""One prediction over the ring, eager: Gram, batched host solve, streamed forecast/mask/merge.

The big tensors are streamed in cache-sized chunks, so the prediction reads the ring twice and
the weights once and writes the weights and the ring once: about the bytes of one optimizer
step. All DMD groups share one batched float64 solve. Without compiled kernels, small
parameters run side by side as one tensor: the ring keeps them so (:attr:`SnapshotRing.packs`,
no copy per prediction), or :func:`pack_parameters` copies them together, and the maths runs
over a pack's h rows at once (an ``[h, n]`` matrix). A model of many small tensors then pays a
few dozen torch operations a prediction, not a hundred per tensor.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..config import PDTConfig
from ..distributed import ShardReduction, global_numel, sum_grams_, sum_parameter_pieces_
from ..dmd import block_grams, solve_dmd
from ..mask import forecast_mask_merge, needs_every_step
from .history import Pack, SnapshotRing, _local, flat_elements, pack_layout, spans_of, write_elements_
from .kernels import Kernels, applied_jump, eager_gram, predict_elements_, use_compiled, working_dtype

T = TypeVar("T")

PACK_ELEMENTS = 1 << 15
"""Plain-torch predictions pack parameters of at most this many elements side by side, up to
this many elements a pack: a parameter's prediction is about a hundred torch operations whatever
its size, so on a model of small tensors (an MLP's biases, a transformer's norms) per-operation
overhead, not bytes, sets its cost."""


@dataclass
class Prediction:
    """Per-parameter accepted counts (``None`` for skipped parameters) and applied jumps.

    A compiled prediction may leave the counts on the device: ``pending`` holds them
    (``[P]`` int64) and ``accepted`` says only which parameters were active (True)."""

    accepted: list[int | bool | None]
    jumps: list[Tensor | None]
    pending: Tensor | None = None
    totals: Tensor | None = None
    """Under pipeline parallelism: the whole model's accepted and predicted elements, summed
    over the stages (``[2]`` float64 on the device); None where the prediction is the model's."""

    def resolved(self) -> list[int | None]:
        """The accepted counts as host ints (one read of ``pending``, if any)."""
        if self.pending is None:
            return list(self.accepted)  # type: ignore[arg-type]
        return [count if active else None for count, active in zip(self.pending.tolist(), self.accepted)]


@dataclass
class PendingBoundary:
    """A prediction boundary whose device results are read later (``PDT.defers_host_reads``)."""

    step: int
    prediction: Prediction | None
    nonfinite: Tensor


def group_of(config: PDTConfig, count: int) -> list[int]:
    """DMD group of each parameter: its own (``"tensor"``) or one for all (``"model"``)."""
    return list(range(count)) if config.granularity == "tensor" else [0] * count


def _chunks(numel: int, size: int) -> range:
    return range(0, numel, size)


def pack_limit(config: PDTConfig, device: torch.device, elements: int) -> int:
    """Largest parameter (in elements) that plain-torch predictions pack with others; 0 when
    the kernels are compiled (they run each parameter in one fused pass anyway)."""
    return 0 if use_compiled(config, device, elements) else min(PACK_ELEMENTS, config.chunk_for(device))


def pack_parameters(ring: SnapshotRing, candidates: Sequence[int], limit: int) -> list[Pack]:
    """The ring's own packs (:attr:`SnapshotRing.packs`), or, for a ring without them, the
    ``candidates`` of at most ``limit`` elements copied side by side (:func:`pack_layout`)."""
    if ring.packs:
        return ring.packs
    packs = []
    for indices in pack_layout(ring.numels, candidates, limit):
        sizes = [ring.numels[i] for i in indices]
        matrix = torch.stack([torch.cat([ring.row_tensors(i)[r] for i in indices]) for r in range(ring.history)])
        packs.append(Pack(indices, spans_of(sizes), matrix, torch.tensor(sizes, device=ring.device)))
    return packs


def _cached(pack: Pack, key: tuple, make: Callable[[], T]) -> T:
    """``make()``, kept on ``pack`` under ``key``: it depends on the layout alone, which a
    shared pack keeps across predictions (a copied pack lives for one)."""
    if key not in pack.cache:
        pack.cache[key] = make()
    return pack.cache[key]


def ring_grams(
    ring: SnapshotRing, groups: Sequence[int], kernels: Kernels, packs: Sequence[Pack] = (),
    reduction: ShardReduction | None = None,
) -> Tensor:
    """Float64 Gram of each group over the ring's rows (in ``ring.order()``'s numbering):
    ``[G, h, h]``. Parameters in ``packs`` are summed from the packs' rows. ``reduction``: the
    local part of the Grams its sums complete (pieces this rank does not count left out)."""
    h = ring.history
    if reduction is None and _packs_in_order(packs, groups):
        stacked = [_pack_grams(pack) for pack in packs]
        return stacked[0] if len(stacked) == 1 else torch.cat(stacked)
    out = torch.zeros(max(groups) + 1, h, h, dtype=torch.float64, device=ring.device)
    for pack in packs:
        grams = _pack_grams(pack)
        if reduction is not None:
            grams = reduction.weigh_(grams, pack.indices)  # a stack of its own: weighed in place
        out.index_add_(0, _pack_groups(pack, groups), grams)
    packed = {i for pack in packs for i in pack.indices}
    for index, group in enumerate(groups):
        if index in packed or (reduction is not None and not reduction.counted[index]):
            continue
        if ring.fused:
            out[group] += kernels.gram(ring.row_tensors(index))
            continue
        for start in _chunks(ring.numels[index], kernels.chunk):
            out[group] += eager_gram(ring.block(index, slice(start, start + kernels.chunk)))
    return out


def _packs_in_order(packs: Sequence[Pack], groups: Sequence[int]) -> bool:
    """Whether ``packs`` hold every parameter, in order, each its own DMD group: their Grams,
    stacked, are then the groups' (no summing into a zeroed tensor)."""
    if not packs:
        return False
    order = [i for pack in packs for i in pack.indices]
    return order == list(range(len(groups))) and list(groups) == order


def _pack_grams(pack: Pack) -> Tensor:
    """:func:`~pdt_compile.dmd.segment_grams` of ``pack``, through a float64 copy of its
    matrix and views of each parameter's columns and their transposes, all kept on the pack."""
    def make() -> tuple[Tensor, list[Tensor], list[Tensor]]:
        buffer = torch.empty(pack.matrix.shape, dtype=torch.float64, device=pack.matrix.device)
        blocks = [buffer[:, span] for span in pack.spans]
        return buffer, blocks, [block.t() for block in blocks]

    buffer, blocks, transposed = _cached(pack, ("float64 blocks",), make)
    buffer.copy_(pack.matrix)
    return block_grams(blocks, transposed)


def solve_coefficients(
    grams: Tensor, order: Sequence[int], rows: Tensor, steps: int, tau: int, every_step: bool = True, **dmd_options
) -> tuple[Tensor, Tensor]:
    """Batched host solve: physical-order Grams ``[G, h, h]`` -> coefficients in physical
    row order ``[G, steps, h]`` and s-coefficients ``[G, steps]`` (float64, on the host) of
    p_1..p_tau, padded to ``steps`` rows by repeating p_tau: the last row is then always
    p_tau, and a sign check over every row equals one over rows 1..tau, so kernels take a
    fixed shape while tau changes.

    ``every_step`` False: a rule that reads p_tau alone (:func:`~pdt_compile.mask.needs_every_step`);
    every row is then p_tau, solved once.

    This is the one device-to-host transfer of a prediction (h x h floats per group).
    """
    perm = _permutation(tuple(order))
    logical = grams.detach().cpu().numpy()[:, perm[:, None], perm]
    coefficients = solve_dmd(logical, tau, rows=rows.cpu().numpy(), last_only=not every_step, **dmd_options)
    padded = _padded_rows(coefficients.shape[1], max(steps, tau))
    # numpy lays an indexing by several arrays out as it likes: the callers (and the compiled
    # op's declared output) take contiguous tensors
    physical = np.ascontiguousarray(coefficients[:, padded[:, None], _inverse_permutation(tuple(order))])
    return torch.from_numpy(physical), torch.from_numpy(np.ascontiguousarray(coefficients[:, padded, -1]))


@functools.lru_cache(maxsize=None)
def _permutation(order: tuple[int, ...]) -> np.ndarray:
    """``order`` as an index array (read only; a ring has h of them)."""
    perm = np.asarray(order)
    perm.flags.writeable = False
    return perm


@functools.lru_cache(maxsize=None)
def _inverse_permutation(order: tuple[int, ...]) -> np.ndarray:
    """Where each physical row sits in ``order`` (logical order): indexing logical columns with
    it gives physical ones."""
    inverse = np.argsort(np.asarray(order))
    inverse.flags.writeable = False
    return inverse


@functools.lru_cache(maxsize=None)
def _padded_rows(solved: int, steps: int) -> np.ndarray:
    """Rows 0..steps-1 of ``solved`` solved ones, the rows past the last repeating it."""
    rows = np.minimum(np.arange(steps), solved - 1)
    rows.flags.writeable = False
    return rows


def element_table(coefficients: Tensor, s_coefficients: Tensor, every_step: bool, device: torch.device) -> Tensor:
    """The host solve's coefficients of every DMD group as one float32 table on ``device``,
    ``[rows * (h + 1), G]``: for each predicted step read (all, or p_tau alone where not
    ``every_step``), the h row coefficients then the s-coefficient. A pack's elements take
    their group's column (:func:`_update_pack`). Built in numpy: a handful of host operations
    where the same in torch would be as many torch operations on a boundary that is cold."""
    both = np.concatenate([coefficients.numpy(), s_coefficients.numpy()[..., None]], -1)  # [G, steps, h + 1]
    if not every_step:
        both = both[:, -1:]
    with np.errstate(over="ignore"):  # a coefficient past float32's range is inf, as torch casts it: the mask refuses it
        table = np.ascontiguousarray(both.reshape(both.shape[0], -1).T, dtype=np.float32)
    return from_host(torch.from_numpy(table), device)



@functools.lru_cache(maxsize=64)
def group_rows(numels: tuple[int, ...], groups: tuple[int, ...]) -> Tensor:
    """Elements per DMD group (the Gavish–Donoho threshold needs them; read only, cached)."""
    rows = [0] * (max(groups) + 1)
    for numel, group in zip(numels, groups):
        rows[group] += numel
    return torch.tensor(rows, dtype=torch.float64)


def one_hot(slot: int, history: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[history]`` with 1 at ``slot``: how the kernels pick a row without indexing."""
    out = torch.zeros(history, dtype=dtype)
    out[slot] = 1
    return from_host(out, device)


@functools.lru_cache(maxsize=None)
def device_one_hot(slot: int, history: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """:func:`one_hot`, made once per arguments (the kernels only read it): made afresh for
    every parameter of every prediction, each was a host-to-device copy."""
    return one_hot(slot, history, dtype, device)


@functools.lru_cache(maxsize=None, typed=True)  # typed: True and 1.0 are two scalars
def device_scalar(value: bool | float, device: torch.device) -> Tensor:
    """A scalar on ``device`` (a bool, or a float in the default dtype), made once per value, as
    :func:`device_one_hot` (the kernels only read it): the prediction's horizon, a parameter's
    active flag."""
    return from_host(torch.tensor(value), device)


def from_host(values: Tensor, device: torch.device) -> Tensor:
    """Host ``values`` on ``device``, the copy queued on the stream rather than waited for: a
    copy from pageable host memory to a GPU synchronises the stream, so the host would wait
    for all the work it queued (the backward pass) before it could launch the next kernel."""
    if device.type != "cuda":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)


def write_from_host_(buffer: Tensor, values: Tensor) -> None:
    """Copy host ``values`` into ``buffer`` (at its fixed address), queued as :func:`from_host`."""
    if buffer.is_cuda:
        buffer.copy_(values.pin_memory(), non_blocking=True)
    else:
        buffer.copy_(values)


def predict_merge_capture_(
    ring: SnapshotRing,
    params: Sequence[Tensor],
    skip: Sequence[bool],
    config: PDTConfig,
    tau: int,
    keep_jumps: bool,
    followers: Sequence[Sequence[Tensor]] | None = None,
) -> Prediction:
    """Run one prediction boundary in place: merge into ``params``, update and advance the ring.

    For every parameter not in ``skip``: forecast tau intervals from the ring, mask against
    the displacement the optimizer just made, merge, apply the after-merge policy to the
    ring and capture the merged weights as the newest snapshot. ``followers[i]``: tensors
    shaped like parameter i that every jump also moves (:mod:`pdt_compile.adapters`).
    """
    groups = group_of(config, len(params))
    numels = [global_numel(p) for p in params]
    reduction = ring.reduction
    kernels = Kernels(config, ring.device, sum(ring.numels))
    packs = []
    if ring.fused and not kernels.compiled:
        packs = pack_parameters(ring, [i for i in range(len(params)) if not skip[i]], pack_limit(config, ring.device, sum(ring.numels)))
    grams = sum_grams_(ring_grams(ring, groups, kernels, packs, reduction), reduction, config.granularity == "model")
    coefficients, s_coefficients = solve_coefficients(
        grams, ring.order(), group_rows(tuple(numels), tuple(groups)), config.tau_max, tau,
        needs_every_step(config.rule), **config.dmd_options()
    )
    horizon = device_scalar(float(tau), ring.device)
    update = _update_fused if ring.fused else _update_streamed
    parts: list[tuple[Sequence[int], Tensor]] = []  # accepted counts of these parameters ([k] int64)
    jumps: list[Tensor | None] = [None] * len(params)
    if packs:
        table = element_table(coefficients, s_coefficients, needs_every_step(kernels.rule), ring.device)
    for pack in packs:
        moved = [followers[i] for i in pack.indices] if followers else None
        _update_pack(ring, pack, params, skip, groups, table, horizon, keep_jumps, kernels, moved, parts, jumps)
    packed = {i for pack in packs for i in pack.indices}
    if len(packed) < len(params):
        coefficients = coefficients.to(ring.device, torch.float32)
        s_coefficients = s_coefficients.to(ring.device, torch.float32)
    for index, p in enumerate(params):
        if index in packed:
            continue
        weights = flat_elements(p)
        keep = keep_jumps and not skip[index]
        jump = torch.empty(weights.shape, dtype=working_dtype(weights.dtype), device=ring.device) if keep else None
        group = groups[index]
        moved = [flat_elements(f) for f in followers[index]] if followers else []
        count = update(ring, index, weights, coefficients[group], s_coefficients[group], horizon, not skip[index], jump,
                       kernels, moved)
        for tensor, flat in zip((p, *(followers[index] if followers else ())), (weights, *moved)):
            write_elements_(tensor, flat)
        if not skip[index]:
            parts.append(([index], count.view(1)))
        jumps[index] = jump
    ring.advance_()
    totals = None
    if parts:
        counted = parts[0][1] if len(parts) == 1 else torch.cat([part for _, part in parts])
        totals = sum_parameter_pieces_(counted, reduction, [i for indices, _ in parts for i in indices])
    values = iter(totals.tolist() if totals is not None else [])  # one sync
    counts: list[int | bool | None] = [None] * len(params)
    for indices, _ in parts:
        for index in indices:
            value = next(values)
            counts[index] = None if skip[index] else value
    return Prediction(counts, jumps)


def _update_fused(
    ring: SnapshotRing, index: int, weights: Tensor, coefficients: Tensor, s_coefficients: Tensor,
    horizon: Tensor, active: bool, jump: Tensor | None, kernels: Kernels, followers: Sequence[Tensor],
) -> Tensor:
    """The float32 device ring: one fused pass over the weights and the row tensors."""
    h, device = ring.history, ring.device
    last, slot = ring.last_slot, ring.next_slot
    if kernels.compiled:
        last, slot = device_one_hot(last, h, torch.float32, device), device_one_hot(slot, h, torch.bool, device)
    flag = device_scalar(active, device) if kernels.compiled or not active else True
    return kernels.predict_(
        weights, ring.row_tensors(index), last, slot, coefficients, s_coefficients, horizon, flag, jump, followers,
    )


def _pack_groups(pack: Pack, groups: Sequence[int]) -> Tensor:
    """The DMD group of each parameter in ``pack`` (``[len(indices)]`` int64 on the device)."""
    key = tuple(groups[i] for i in pack.indices)
    return _cached(pack, ("groups", key), lambda: torch.tensor(key, device=pack.sizes.device))


def _flat_views(pack: Pack, tensors: Sequence[Tensor]) -> list[Tensor]:
    """``[numel]`` views of ``tensors`` (the pack's parameters) that share their storage, kept
    on the pack while each keeps its storage: writing into them writes the parameters, with no
    operation per parameter to make them. A non-contiguous one gets a copy
    (:func:`~pdt_compile.runtime.history.flat_elements`), which the caller writes back."""
    pointers = [t.data_ptr() for t in tensors]
    kept = pack.cache.get(("flat views",))
    if kept is None or kept[0] != pointers:
        kept = pointers, [t.detach().view(-1) if t.is_contiguous() else None for t in tensors]
        pack.cache[("flat views",)] = kept
    return [view if view is not None else flat_elements(t) for view, t in zip(kept[1], tensors)]


def _update_pack(
    ring: SnapshotRing, pack: Pack, params: Sequence[Tensor], skip: Sequence[bool], groups: Sequence[int],
    table: Tensor, horizon: Tensor, keep_jumps: bool, kernels: Kernels,
    followers: Sequence[Sequence[Tensor]] | None, counts: list, jumps: list,
) -> None:
    """A pack in one pass of :func:`predict_elements_` with per-element coefficients, written
    back to the parameters, their followers and (a copied pack) their ring rows; appends
    ``(pack.indices, accepted counts)`` to ``counts`` and fills ``jumps`` at the pack's
    indices. A skipped parameter in a shared pack is only captured."""
    h, device = ring.history, ring.device
    n = pack.matrix.shape[1]
    key = tuple(groups[i] for i in pack.indices)
    element_groups = _cached(
        pack, ("elements", key), lambda: _pack_groups(pack, groups).repeat_interleave(pack.sizes, 0, output_size=n)
    )
    spread = table.index_select(1, element_groups).view(-1, h + 1, n)  # [steps, h + 1, n]

    live = [not skip[i] for i in pack.indices]
    active = _cached(pack, ("active", tuple(live)), lambda: True if all(live) else (
        torch.tensor(live, device=device).repeat_interleave(pack.sizes, output_size=n)))
    tensors = [_local(params[i]) for i in pack.indices]
    views = _flat_views(pack, tensors)
    weights = torch.cat(views)  # cat promotes mixed dtypes
    weights = weights.to(working_dtype(weights.dtype))
    jump = torch.empty_like(weights) if keep_jumps or followers else None
    accepted = predict_elements_(
        weights, pack.matrix, ring.last_slot, ring.next_slot, spread[:, :h], spread[:, h], horizon, active, jump,
        kernels.rule, kernels.trend, kernels.drift, kernels.shift,
    )
    counts.append((pack.indices, _counts_by_parameter(pack, accepted)))
    sizes = _cached(pack, ("sizes",), lambda: [span.stop - span.start for span in pack.spans])  # the spans, in order
    torch._foreach_copy_(views, weights.split(sizes))
    for view, tensor in zip(views, tensors):
        if not tensor.is_contiguous():  # a copy (:func:`_flat_views`): written back; a view wrote the parameter
            write_elements_(tensor, view)
    pieces = jump.split(sizes) if jump is not None else None
    moved = ([(_local(follower).detach(), piece) for piece, tensors in zip(pieces, followers) for follower in tensors]
             if followers else [])
    if moved:
        torch._foreach_add_([follower for follower, _ in moved], [piece.view(follower.shape) for follower, piece in moved])
    for position, (index, span) in enumerate(zip(pack.indices, pack.spans)):
        if not pack.shared:
            for row, packed_row in zip(ring.row_tensors(index), pack.rows):
                row.copy_(packed_row[span])
        jumps[index] = pieces[position] if keep_jumps and live[position] else None


def _counts_by_parameter(pack: Pack, accepted: Tensor) -> Tensor:
    """Accepted elements of each parameter in ``pack`` (``[len(indices)]`` int64): a running
    count from 0, read at each span's bounds, differenced (four operations; a segmented sum
    cost more on a cold boundary). A parameter of no elements counts 0, wherever it lies."""
    bounds = _cached(pack, ("span bounds",), lambda: torch.nn.functional.pad(pack.sizes.cumsum(0), (1, 0)))
    running = torch.nn.functional.pad(accepted.cumsum(0), (1, 0))
    return torch.diff(running.index_select(0, bounds))


def _update_streamed(
    ring: SnapshotRing, index: int, weights: Tensor, coefficients: Tensor, s_coefficients: Tensor,
    horizon: Tensor, active: bool, jump_all: Tensor | None, kernels: Kernels, followers: Sequence[Tensor],
) -> Tensor:
    """Rings that decode to blocks (bfloat16, host): chunk by chunk through ``block`` and
    ``store_merged_``."""
    count = torch.zeros((), dtype=torch.int64, device=ring.device)
    shift, last, oldest = kernels.shift, ring.last_slot, ring.order()[0]
    for start in _chunks(weights.numel(), kernels.chunk):
        columns = slice(start, start + kernels.chunk)
        w = weights[columns].to(working_dtype(weights.dtype))
        block = ring.block(index, columns)
        if not active:  # no gradient this step: the snapshot is all that happens
            ring.store_merged_(index, columns, block, w, None)
            continue
        merged, accepted = forecast_mask_merge(
            w, block, block[last], coefficients, s_coefficients, horizon, kernels.rule, kernels.trend,
            kernels.drift, block[oldest],
        )
        count += accepted.sum()
        merged, jump = applied_jump(w, merged)
        ring.store_merged_(index, columns, block, merged, jump if shift else None)
        weights[columns].copy_(merged)
        for follower in followers:
            follower[columns] += jump
        if jump_all is not None:
            jump_all[columns] = jump
    return count
