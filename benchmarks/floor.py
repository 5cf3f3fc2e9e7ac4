"""The memory-bandwidth floor of a prediction, measured, not assumed.

A prediction moves about 2h+2 copies' worth of the parameters' bytes (it reads the ring twice
and the weights once, and writes the weights and the ring once). Its floor is the time of that
many copies. Two ways to time them, both reported:

- ``cached``: one n-element copy, repeated, times 2h+2. Source and target are the same two
  buffers every time, so below the last-level cache (2M float32 parameters: 2 x 8 MB) the copy
  runs at cache bandwidth, which no prediction can: its own data (h + 1 rows of n, 50 MB at
  2M, h = 5) does not fit in the cache, and a cyclic pass over more than the cache hits nothing.
- ``memory``: 2h+2 copies of n elements between 2h+2 distinct pairs of buffers, one after the
  other: the same bytes, each from memory, as the prediction's own passes over its rows.

Above the cache the two agree within this VM's run-to-run noise (each run's tables show both).
"""

from __future__ import annotations

from typing import Callable

import torch

Timer = Callable[[Callable[[], object]], float]


def copy_floors(numel: int, copies: int, timer: Timer, device: torch.device | str = "cpu") -> dict[str, float]:
    """``{"cached": ..., "memory": ...}``: the time (in ``timer``'s unit) of ``copies`` copies of
    ``numel`` float32 elements, cache-resident and from memory (see the module docstring)."""
    pairs = [(torch.randn(numel, device=device), torch.empty(numel, device=device)) for _ in range(copies)]
    source, target = pairs[0]
    cached = copies * timer(lambda: target.copy_(source))

    def every_pair() -> None:
        for source, target in pairs:
            target.copy_(source)

    return {"cached": cached, "memory": timer(every_pair)}
