"""The snapshot ring: the last h snapshots of a list of parameters.

Three storages behind one interface (:meth:`SnapshotRing.block`, :meth:`store_merged_`,
:meth:`capture_`, :meth:`undo_jump_`):

- :class:`SnapshotRing`: h float32 rows per parameter (4h bytes per element);
- :class:`CompressedSnapshotRing`: the newest snapshot in float32 plus the h - 1 interval
  displacements in bfloat16 (4 + 2(h - 1) bytes per element). Snapshots are nearly collinear,
  so only what differs is stored; each displacement is rounded once, when it is captured;
- :class:`HostSnapshotRing`: h float32 rows per parameter in (pinned) host memory, copied
  asynchronously: no ring bytes on the accelerator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from ..distributed import is_distributed, shard_reduction, shifted_placement


def _local(p: Tensor) -> Tensor:
    """The tensor PDT stores and merges: the local shard of a DTensor, else ``p`` itself."""
    return p.to_local() if hasattr(p, "to_local") else p


def flat_elements(tensor: Tensor) -> Tensor:
    """The elements of ``tensor`` (its local shard) as ``[numel]``, in logical order, the order
    the ring stores them in: a view that writes into it where its layout allows one, else a
    copy (a channels-last convolution's weight, its optimizer state, a transposed parameter),
    which :func:`write_elements_` copies back."""
    local = _local(tensor).detach()
    return local.view(-1) if local.is_contiguous() else local.reshape(-1)


def write_elements_(tensor: Tensor, flat: Tensor) -> None:
    """Copy ``flat``, from :func:`flat_elements` of ``tensor``, back into ``tensor`` where it
    was a copy rather than a view."""
    local = _local(tensor).detach()
    if not local.is_contiguous():
        local.copy_(flat.view(local.shape))


@dataclass
class Pack:
    """Small parameters side by side: their h ring rows concatenated as one ``[h, n]``
    ``matrix``, each one's span of columns and element count (``sizes``, ``[len(indices)]``
    int64 on the device). One matrix, so plain-torch maths runs over all h rows in a single
    operation (:func:`pdt_compile.mask.forecast_mask_merge` on stacked rows).

    ``shared``: the matrix is the ring's own storage (the parameters' row tensors are views
    of it), so a prediction on the pack rewrites the ring in place; else it is a copy."""

    indices: list[int]
    spans: list[slice]
    matrix: Tensor
    sizes: Tensor
    shared: bool = False
    cache: dict = field(default_factory=dict, repr=False)
    """Tensors derived from the layout alone (for a shared pack, kept across predictions)."""

    @property
    def rows(self) -> list[Tensor]:
        """The h rows of :attr:`matrix` (views)."""
        return list(self.matrix.unbind(0))


def pack_layout(numels: Sequence[int], candidates: Sequence[int], limit: int) -> list[list[int]]:
    """Greedy, in order: the ``candidates`` of at most ``limit`` elements, in packs of at most
    ``limit`` elements (a pack of one parameter is left out: it gains nothing)."""
    groups: list[list[int]] = [[]]
    filled = 0
    for index in candidates:
        numel = numels[index]
        if numel > limit:
            continue
        if filled + numel > limit:
            groups.append([])
            filled = 0
        groups[-1].append(index)
        filled += numel
    return [g for g in groups if len(g) > 1]


def spans_of(sizes: Sequence[int]) -> list[slice]:
    """Consecutive column spans of parameters of ``sizes`` elements laid side by side."""
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    return [slice(a, a + n) for a, n in zip(starts, sizes)]


class SnapshotRing:
    """h float32 snapshots of ``params``: h ``[numel_i]`` row tensors per parameter.

    Rows are written circularly: ``order()`` gives the physical rows oldest first,
    ``last_slot`` the newest and ``next_slot`` the one the next capture overwrites. Each
    parameter's rows are separate storages (not views of one ``[h, n]`` buffer), so compiled
    kernels read and rewrite every row in one fused pass without aliasing (through views of
    one buffer the same prediction ran 12-50x slower under Inductor). Parameters of at most
    ``pack_limit`` elements are laid side by side in one ``[h, n]`` matrix per pack
    (:attr:`packs`, by :func:`pack_layout`; only plain-torch predictions use packs): a
    prediction then runs on each pack as on one tensor, over all its rows at once, with no
    copying, where per-operation overhead, not bytes, sets the cost; ``unpack_`` gives them
    storages of their own. Sharded parameters store their local shard.
    """

    def __init__(self, params: Sequence[Tensor], history: int, pack_limit: int = 0, stages: Any = None) -> None:
        if not params:
            raise ValueError("SnapshotRing: no parameters to track (all frozen?)")
        locals_ = [_local(p) for p in params]
        devices = {t.device for t in locals_}
        if len(devices) > 1:
            raise ValueError(
                f"PDT: parameters live on several devices {sorted(map(str, devices))}; "
                "wrap one optimizer per device"
            )
        self.params = list(params)
        self.reduction = shard_reduction(self.params, stages)
        """How sums over the parameters' pieces (and, with ``stages``, a pipeline group, over
        the model's stages) are reduced across ranks, or None (none is split, no stages)."""
        self.shapes = [tuple(t.shape) for t in locals_]
        self.numels = [t.numel() for t in locals_]
        self.device = locals_[0].device
        self.history = history
        self.pack_limit = pack_limit
        self.count = 0
        self.next_slot = 0
        self.packs: list[Pack] = []
        self._allocate()

    def _allocate(self) -> None:
        self.packs = [self._shared_pack(indices) for indices in pack_layout(self.numels, range(len(self.numels)), self.pack_limit)]
        packed = {i for pack in self.packs for i in pack.indices}
        self.slots: list[list[Tensor]] = [[] for _ in self.numels]
        for pack in self.packs:
            for index, span in zip(pack.indices, pack.spans):
                self.slots[index] = [row[span] for row in pack.rows]
        for index, n in enumerate(self.numels):
            if index not in packed:
                self.slots[index] = [torch.zeros(n, dtype=torch.float32, device=self.device) for _ in range(self.history)]

    def _shared_pack(self, indices: list[int]) -> Pack:
        sizes = [self.numels[i] for i in indices]
        matrix = torch.zeros(self.history, sum(sizes), dtype=torch.float32, device=self.device)
        return Pack(indices, spans_of(sizes), matrix, torch.tensor(sizes, device=self.device), shared=True)

    def unpack_(self) -> None:
        """Give every packed parameter row storages of its own (copies of its rows), as
        compiled graphs that take the rows as buffers need."""
        for pack in self.packs:
            for index in pack.indices:
                self.slots[index] = [row.clone() for row in self.slots[index]]
        self.packs = []

    def row_tensors(self, index: int) -> list[Tensor]:
        """Parameter ``index``'s h row tensors in physical order (the storage itself)."""
        return self.slots[index]

    @property
    def last_slot(self) -> int:
        return (self.next_slot - 1) % self.history

    def order(self) -> list[int]:
        """Rows of :meth:`block` holding valid snapshots, oldest first."""
        start = self.next_slot - self.count
        return [(start + i) % self.history for i in range(self.count)]

    fused = True
    """Whether predictions run :func:`~pdt_compile.runtime.kernels.predict_pass_` on
    :meth:`row_tensors` (else chunk by chunk through :meth:`block`)."""

    location = "device"
    """Where the ring's bytes live: ``"device"`` (the parameters') or ``"host"``."""

    def nbytes(self) -> int:
        """Bytes the ring holds (where :attr:`location` says)."""
        return sum(t.numel() * t.element_size() for t in self._tensors())

    def _tensors(self) -> list[Tensor]:
        return [row for rows in self.slots for row in rows]

    def rows(self, index: int) -> Tensor:
        """Parameter ``index``'s snapshots, ``[h, numel]`` float32, in :meth:`order`'s rows (a copy):
        physical rows, the newest at :attr:`last_slot`; :meth:`snapshots` puts them in time order."""
        return self.block(index, slice(None))

    def last_displacement(self, index: int) -> Tensor:
        """Parameter ``index``'s newest snapshot minus the one before it, ``[numel]`` float32
        (needs two snapshots)."""
        if self.count < 2:
            raise ValueError(f"SnapshotRing.last_displacement: needs 2 snapshots, the ring holds {self.count}")
        if self.fused:  # the rows are the slots themselves: no copy of the others
            rows = self.row_tensors(index)
            return rows[self.last_slot] - rows[(self.last_slot - 1) % self.history]
        rows = self.snapshots(index)
        return rows[-1] - rows[-2]

    def snapshots(self, index: int) -> Tensor:
        """Parameter ``index``'s valid snapshots oldest first, ``[count, numel]`` float32 (a copy):
        the newest, s, is the last row."""
        return self.rows(index)[self.order()]

    def block(self, index: int, columns: slice) -> Tensor:
        """Snapshots of parameter ``index`` for ``columns``: ``[h, c]`` float32, rows as in
        :meth:`order`, newest at ``last_slot`` (a copy)."""
        return torch.stack([row[columns] for row in self.slots[index]])

    def store_merged_(self, index: int, columns: slice, block: Tensor, merged: Tensor, jump: Tensor | None) -> None:
        """After a prediction on ``block`` (from :meth:`block`): translate every snapshot by
        ``jump`` (``after_merge="shift"``; None to keep them) and capture ``merged``.
        Call :meth:`advance_` once all parameters are stored."""
        if jump is not None:
            block.add_(jump)
        block[self.next_slot].copy_(merged)
        for row, stored in zip(self.slots[index], block):
            row[columns].copy_(stored)

    def flat(self) -> Tensor:
        """All snapshots side by side, ``[h, N]`` (a copy; for inspection and tests)."""
        return torch.cat([self.rows(i) for i in range(len(self.params))], dim=1)

    def moved(self) -> bool:
        """Whether some parameter lives on another device than the ring (the model was moved)."""
        return any(_local(p).device != self.device for p in self.params)

    def check_unchanged(self) -> None:
        """Raise if a parameter changed shape since the ring was built (a move to another
        device is followed instead: :meth:`moved`)."""
        for index, p in enumerate(self.params):
            shape = tuple(_local(p).shape)
            if shape != self.shapes[index]:
                raise RuntimeError(
                    f"PDT: parameter {index} changed from shape {self.shapes[index]} to {shape}; PDT's "
                    "snapshots no longer match it. Create the optimizer (and PDT) again after resizing it."
                )

    def capture_(self, tensors: Sequence[Tensor] | None = None) -> None:
        """Write the current parameters (or ``tensors``, shaped like them) as the newest
        snapshot and advance."""
        sources = [_local(p).detach().reshape(-1) for p in (self.params if tensors is None else tensors)]
        # One call for all tensors: right after a training step each distinct operation costs tens of
        # microseconds (benchmarks/cold_ops.py).
        torch._foreach_copy_([rows[self.next_slot] for rows in self.slots], sources)
        self.advance_()

    def advance_(self) -> None:
        """Mark the row at ``next_slot`` as written."""
        self.next_slot = (self.next_slot + 1) % self.history
        self.count = min(self.count + 1, self.history)

    def before_update_(self) -> None:
        """Called before the optimizer writes the parameters (a no-op on the device)."""

    def undo_jump_(self, index: int, jump: Tensor, shifted: bool, alpha: float = 1.0) -> None:
        """Take back ``alpha`` times a merge's ``jump`` from the snapshots it moved (all when
        ``shifted``, else only the newest, which captured the merged weights)."""
        for slot in self.order() if shifted else [self.last_slot]:
            self.slots[index][slot].sub_(jump, alpha=alpha)

    def reset_(self) -> None:
        """Forget every snapshot (burn-in starts again)."""
        self.count = 0
        self.next_slot = 0

    def sharded_copy(self, index: int, tensor: Tensor) -> Tensor:
        """A copy of ``tensor`` (``[k, numel_i]`` or ``[numel_i]``). For a DTensor parameter, a
        DTensor of global shape ``[k, *param.shape]`` placed like the parameter, so that
        torch.distributed.checkpoint saves each rank's shard, not one rank's copy."""
        copy = tensor.clone()
        p = self.params[index]
        if not is_distributed(p):
            return copy
        from torch.distributed.tensor import DTensor

        lead = tuple(copy.shape[:-1])
        shape = (*lead, *p.shape)
        stride = torch.empty(shape, device="meta").stride()
        return DTensor.from_local(
            copy.view(*lead, *self.shapes[index]), p.device_mesh,
            [shifted_placement(placement, len(lead)) for placement in p.placements], run_check=False, shape=shape,
            stride=stride,
        )

    def _state_tensors(self) -> dict[str, list[Tensor]]:
        """Tensors saved in a checkpoint (``[h, numel_i]`` per parameter)."""
        return {"buffers": [torch.stack(rows) for rows in self.slots]}

    def _load_tensor(self, key: str, index: int, tensor: Tensor) -> None:
        """Copy a checkpoint's ``tensor`` (shaped like ``_state_tensors()[key][index]``) in."""
        for row, saved in zip(self.slots[index], tensor):
            row.copy_(saved)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            key: [self.sharded_copy(i, t) for i, t in enumerate(tensors)] for key, tensors in self._state_tensors().items()
        }
        state.update(self._state_counters())
        return state

    def _state_counters(self) -> dict[str, int]:
        return {"count": self.count, "next_slot": self.next_slot}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, mine in self._state_tensors().items():
            if key not in state:
                raise ValueError(
                    f"PDT.load_state_dict: the checkpoint's ring has no {key!r} (saved with another ring_dtype?)"
                )
            saved = [_local(t).reshape(m.shape) if _local(t).numel() == m.numel() else _local(t) for t, m in zip(state[key], mine)]
            if [tuple(t.shape) for t in saved] != [tuple(m.shape) for m in mine]:
                raise ValueError(
                    f"PDT.load_state_dict: snapshot ring {key} of shapes {[tuple(t.shape) for t in saved]} does not "
                    f"fit this model's ring {[tuple(m.shape) for m in mine]} (different history or parameters)"
                )
            for index, t in enumerate(saved):
                self._load_tensor(key, index, t)
        for key in self._state_counters():
            setattr(self, key, int(state[key]))


class CompressedSnapshotRing(SnapshotRing):
    """The newest snapshot in float32 (the anchor) and the h - 1 successive displacements
    s_{i+1} - s_i in bfloat16: 4 + 2(h - 1) bytes per element instead of 4h.

    :meth:`block` decodes the snapshots oldest first (so ``order()`` is the identity) as the
    anchor minus the later displacements. After a shift-merge the displacements are unchanged
    and only the anchor moves; the new displacement is the optimizer's own one.
    """

    fused = False

    def _allocate(self) -> None:
        self.anchors = [torch.zeros(n, dtype=torch.float32, device=self.device) for n in self.numels]
        self.deltas = [torch.zeros(self.history - 1, n, dtype=torch.bfloat16, device=self.device) for n in self.numels]
        self.next_delta = 0

    def _tensors(self) -> list[Tensor]:
        return [*self.anchors, *self.deltas]

    @property
    def last_slot(self) -> int:
        return self.count - 1

    def order(self) -> list[int]:
        return list(range(self.count))

    def _delta_rows(self) -> list[int]:
        """Rows of ``deltas`` in logical order (the displacement after snapshot 0 first)."""
        stored, slots = self.count - 1, self.history - 1
        return [(self.next_delta - stored + j) % slots for j in range(stored)]

    def block(self, index: int, columns: slice) -> Tensor:
        anchor = self.anchors[index][columns]
        rows = self._delta_rows()
        out = anchor.expand(max(self.count, 1), -1).clone()
        if rows:
            deltas = self.deltas[index][rows][:, columns].float()
            later = deltas.flip(0).cumsum(0).flip(0)  # s_j = anchor - (δ_j + ... + δ_last)
            out[:-1] -= later
        return out

    def store_merged_(self, index: int, columns: slice, block: Tensor, merged: Tensor, jump: Tensor | None) -> None:
        previous = block[self.last_slot] if jump is None else block[self.last_slot] + jump
        self.deltas[index][self.next_delta, columns] = (merged - previous).to(torch.bfloat16)
        self.anchors[index][columns] = merged

    def capture_(self, tensors: Sequence[Tensor] | None = None) -> None:
        for index, p in enumerate(self.params if tensors is None else tensors):
            weights = _local(p).detach().reshape(-1).float()
            if self.count > 0:
                self.deltas[index][self.next_delta] = (weights - self.anchors[index]).to(torch.bfloat16)
            self.anchors[index].copy_(weights)
        self.advance_()

    def advance_(self) -> None:
        if self.count > 0:
            self.next_delta = (self.next_delta + 1) % (self.history - 1)
        self.count = min(self.count + 1, self.history)

    def undo_jump_(self, index: int, jump: Tensor, shifted: bool, alpha: float = 1.0) -> None:
        self.anchors[index].sub_(jump, alpha=alpha)
        if not shifted:
            newest = (self.next_delta - 1) % (self.history - 1)
            self.deltas[index][newest] = torch.sub(self.deltas[index][newest].float(), jump, alpha=alpha).to(torch.bfloat16)

    def reset_(self) -> None:
        self.count = 0
        self.next_delta = 0

    def _state_tensors(self) -> dict[str, list[Tensor]]:
        return {"anchors": self.anchors, "deltas": self.deltas}

    def _load_tensor(self, key: str, index: int, tensor: Tensor) -> None:
        getattr(self, key)[index].copy_(tensor)

    def _state_counters(self) -> dict[str, int]:
        return {"count": self.count, "next_delta": self.next_delta}


class HostSnapshotRing(SnapshotRing):
    """h float32 snapshots per parameter in host memory: no ring bytes on the accelerator.

    With CUDA parameters the buffers are pinned and copies are asynchronous. A capture runs
    on a side stream, after the optimizer's writes, and overlaps the next forward and backward;
    :meth:`before_update_` makes the next parameter update wait for it. A prediction streams
    each chunk's rows to the device (:meth:`block`) and the rows it changed back
    (:meth:`store_merged_`) on the current stream. Host-side reads and writes wait for pending
    copies. Rows are copied one by one: each is contiguous, which asynchronous copies need.
    """

    location = "host"
    fused = False

    def _allocate(self) -> None:
        pin = self.device.type == "cuda"
        self.buffers = [torch.zeros(self.history, n, dtype=torch.float32, pin_memory=pin) for n in self.numels]
        self.slots = [list(buffer) for buffer in self.buffers]  # row views, for the base class's capture
        self._stream: Any = torch.cuda.Stream(self.device) if pin else None
        self._pending: Any = None

    def _copied(self, stream: Any = None) -> None:
        """Remember that asynchronous copies are in flight on ``stream`` (default: current)."""
        if self.device.type == "cuda":
            self._pending = torch.cuda.Event()
            self._pending.record(stream)

    def _join(self) -> None:
        """Make the current stream wait (on the device, not the host) for pending copies."""
        if self._pending is not None:
            torch.cuda.current_stream(self.device).wait_event(self._pending)

    def before_update_(self) -> None:
        self._join()

    def wait(self) -> None:
        """Block until every copy to or from the host buffers has finished."""
        if self._pending is not None:
            self._pending.synchronize()
            self._pending = None

    def block(self, index: int, columns: slice) -> Tensor:
        self._join()
        rows = self.buffers[index][:, columns]
        out = torch.empty(rows.shape, dtype=torch.float32, device=self.device)
        for row in range(self.history):
            out[row].copy_(rows[row], non_blocking=True)
        return out

    def _tensors(self) -> list[Tensor]:
        return list(self.buffers)

    def store_merged_(self, index: int, columns: slice, block: Tensor, merged: Tensor, jump: Tensor | None) -> None:
        if jump is not None:
            block.add_(jump)
        block[self.next_slot].copy_(merged)
        rows = self.buffers[index][:, columns]
        for row in range(self.history) if jump is not None else [self.next_slot]:
            rows[row].copy_(block[row], non_blocking=True)
        self._copied()

    def capture_(self, tensors: Sequence[Tensor] | None = None) -> None:
        if self._stream is None:
            super().capture_(tensors)
            return
        self._join()
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            for index, p in enumerate(self.params if tensors is None else tensors):
                self.buffers[index][self.next_slot].copy_(_local(p).detach().reshape(-1), non_blocking=True)
        self._copied(self._stream)
        self.advance_()

    def undo_jump_(self, index: int, jump: Tensor, shifted: bool, alpha: float = 1.0) -> None:
        self.wait()
        rows = self.order() if shifted else [self.last_slot]
        self.buffers[index][rows] -= jump.to(self.buffers[index].device) * alpha

    def sharded_copy(self, index: int, tensor: Tensor) -> Tensor:
        # A sharded parameter's DTensor must live on its mesh's device.
        return super().sharded_copy(index, tensor.to(self.device) if is_distributed(self.params[index]) else tensor)

    def _state_tensors(self) -> dict[str, list[Tensor]]:
        return {"buffers": self.buffers}

    def _load_tensor(self, key: str, index: int, tensor: Tensor) -> None:
        self.buffers[index].copy_(tensor)

    def state_dict(self) -> dict[str, Any]:
        self.wait()
        return super().state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait()
        super().load_state_dict(state)


def ring_settings(snap_every: int, history: int, ring_dtype: str, numels: Sequence[int]) -> dict[str, Any]:
    """What a checkpoint's ring was taken under: its spacing, length, storage and the tracked
    parameters' sizes (global, so that a resharded resume still matches), the sizes as a count,
    a total and a digest: a checkpoint's flattened layout repeats this under every parameter
    (:mod:`~pdt_compile.runtime.checkpoint`), so nothing in it grows with their number."""
    return {"snap_every": snap_every, "history": history, "ring_dtype": ring_dtype, **_sizes(numels)}


def _sizes(numels: Sequence[int]) -> dict[str, Any]:
    digest = hashlib.sha1(",".join(str(int(n)) for n in numels).encode()).hexdigest()[:16]
    return {"tensors": len(numels), "elements": int(sum(numels)), "numels_digest": digest}


def changed_ring_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's :func:`ring_settings` (or one saved before the sizes'
    digest, with their list) and this run's, in words; empty when its snapshots fit this run's ring."""
    changes = [f"{key} {saved[key]} -> {current[key]}" for key in ("snap_every", "history", "ring_dtype")
               if saved[key] != current[key]]
    sizes = _sizes(saved["numels"]) if "numels" in saved else saved
    if sizes["numels_digest"] != current["numels_digest"]:
        changes.append(
            f"the tracked parameters {sizes['tensors']} tensors of {sizes['elements']} elements -> "
            f"{current['tensors']} of {current['elements']}"
            + (" (in other sizes)" if (sizes["tensors"], sizes["elements"]) == (current["tensors"], current["elements"]) else "")
        )
    return changes


def make_ring(
    params: Sequence[Tensor], history: int, dtype: str = "float32", location: str = "device", pack_limit: int = 0,
    stages: Any = None,
) -> SnapshotRing:
    """The ring for ``PDTConfig.ring_dtype`` and ``PDTConfig.ring_location``; ``pack_limit``
    applies to the float32 device ring (the others decode chunk by chunk, unpacked);
    ``stages``: the pipeline group whose other ranks hold the rest of the model."""
    if location == "host":
        return HostSnapshotRing(params, history, stages=stages)
    if dtype == "bfloat16":
        return CompressedSnapshotRing(params, history, stages=stages)
    return SnapshotRing(params, history, pack_limit, stages)
