"""The snapshot ring: the last h snapshots of a list of parameters in one flat buffer."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..distributed import is_sharded


def _local(p: Tensor) -> Tensor:
    """The tensor PDT stores and merges: the local shard of a DTensor, else ``p`` itself."""
    return p.to_local() if hasattr(p, "to_local") else p


class SnapshotRing:
    """h snapshots of ``params``: one ``[h, numel_i]`` float32 buffer per parameter.

    Rows are written circularly: ``order()`` gives the physical rows oldest first and
    ``last_slot`` the newest. :meth:`rows` is parameter i's buffer. Separate storages (not views
    of one flat buffer) let compiled graphs update each in place without aliasing.
    Sharded parameters store their local shard.
    """

    def __init__(self, params: Sequence[Tensor], history: int) -> None:
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
        self.shapes = [tuple(t.shape) for t in locals_]
        self.device = locals_[0].device
        numels = [t.numel() for t in locals_]
        self.offsets = [0]
        for n in numels:
            self.offsets.append(self.offsets[-1] + n)
        self.history = history
        self.buffers = [torch.zeros(history, n, dtype=torch.float32, device=self.device) for n in numels]
        self.count = 0
        self.next_slot = 0

    @property
    def numel(self) -> int:
        return self.offsets[-1]

    @property
    def full(self) -> bool:
        return self.count >= self.history

    @property
    def last_slot(self) -> int:
        return (self.next_slot - 1) % self.history

    def order(self) -> list[int]:
        """Physical rows of the valid snapshots, oldest first."""
        start = self.next_slot - self.count
        return [(start + i) % self.history for i in range(self.count)]

    def rows(self, index: int) -> Tensor:
        """Parameter ``index``'s snapshots, ``[h, numel]``."""
        return self.buffers[index]

    def flat(self) -> Tensor:
        """All snapshots side by side, ``[h, N]`` (a copy; for inspection and tests)."""
        return torch.cat(self.buffers, dim=1)

    def check_unchanged(self) -> None:
        """Raise if a parameter changed shape or device since the ring was built."""
        for index, p in enumerate(self.params):
            t = _local(p)
            if tuple(t.shape) != self.shapes[index] or t.device != self.device:
                raise RuntimeError(
                    f"PDT: parameter {index} changed from shape {self.shapes[index]} on "
                    f"{self.device} to {tuple(t.shape)} on {t.device}; PDT's snapshots no longer "
                    "match it. Create the optimizer (and PDT) again after resizing or moving."
                )

    def capture_(self, skip: Sequence[bool] | None = None) -> None:
        """Write the current parameters into the next row and advance."""
        for index, p in enumerate(self.params):
            if skip is None or not skip[index]:
                self.rows(index)[self.next_slot].copy_(_local(p).detach().reshape(-1))
        self.advance_()

    def advance_(self) -> None:
        """Mark the row at ``next_slot`` as written (by a capture fused elsewhere)."""
        self.next_slot = (self.next_slot + 1) % self.history
        self.count = min(self.count + 1, self.history)

    def reset_(self) -> None:
        """Forget every snapshot (burn-in starts again)."""
        self.count = 0
        self.next_slot = 0

    def _saved(self, index: int) -> Tensor:
        """A copy of parameter ``index``'s snapshots. For a sharded parameter, a DTensor of
        global shape ``[h, *param.shape]`` sharded like the parameter (one dim further), so
        that torch.distributed.checkpoint saves each rank's shard, not one rank's copy."""
        buffer = self.buffers[index].clone()
        p = self.params[index]
        if not is_sharded(p):
            return buffer
        from torch.distributed.tensor import DTensor, Shard

        shape = (self.history, *p.shape)
        stride = torch.empty(shape, device="meta").stride()
        return DTensor.from_local(
            buffer.view(self.history, *self.shapes[index]), p.device_mesh,
            [Shard(p.placements[0].dim + 1)], run_check=False, shape=shape, stride=stride,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"buffers": [self._saved(i) for i in range(len(self.buffers))], "count": self.count,
                "next_slot": self.next_slot}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        buffers = [_local(b).reshape(self.history, -1) for b in state["buffers"]]
        shapes = [tuple(b.shape) for b in buffers]
        expected = [tuple(b.shape) for b in self.buffers]
        if shapes != expected:
            raise ValueError(
                f"PDT.load_state_dict: snapshot ring of shapes {shapes} does not fit this model's "
                f"ring {expected} (different history or parameters)"
            )
        for mine, saved in zip(self.buffers, buffers):
            mine.copy_(saved)
        self.count = int(state["count"])
        self.next_slot = int(state["next_slot"])
