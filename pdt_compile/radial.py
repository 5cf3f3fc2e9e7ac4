"""The radial part of a merge's jump: what of it changes a tensor's norm rather than turning it.

With weight decay through the gradient the optimizer descends the loss plus the decay's
penalty, and once the loss has reached the floor a constant rate allows it keeps trading loss
for smaller norms; a jump extrapolates that trade several intervals ahead (benchmarks/FINDINGS.md,
"Merges on a converged plateau"). ``PDTConfig.radial`` says where a merge takes this part back.
"""

from __future__ import annotations

import torch
from torch import Tensor


def radial_sums(jump: Tensor, weights: Tensor, rows: int = 1) -> Tensor:
    """``[2, rows]``: per row, the jump's inner product with the weights it moves and those
    weights' squared norm (elements the jump leaves alone do not count). Sums, so that the
    shards of a sharded tensor add up to the whole tensor's."""
    support = (weights * (jump != 0)).view(rows, -1)
    return torch.stack(((jump.view(rows, -1) * support).sum(1), support.pow(2).sum(1)))


def radial_part(jump: Tensor, weights: Tensor, rows: int = 1, sums: Tensor | None = None) -> Tensor:
    """The part of ``jump`` along ``weights`` (flat, the tensor before the jump) over the
    elements the jump moves; with ``rows`` > 1, of each of that many equal rows on its own.
    ``sums``: :func:`radial_sums` over the whole tensor, when ``jump`` is one shard of it."""
    sums = radial_sums(jump, weights, rows) if sums is None else sums
    along = sums[0] / sums[1].clamp_min(torch.finfo(sums.dtype).tiny)
    return ((weights * (jump != 0)).view(rows, -1) * along.unsqueeze(1)).view(-1)
