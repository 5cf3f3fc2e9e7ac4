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
    support = _on_moved(weights, jump).view(rows, -1)
    return torch.stack(((jump.view(rows, -1) * support).sum(1), support.pow(2).sum(1)))


def radial_part(jump: Tensor, weights: Tensor, rows: int = 1, sums: Tensor | None = None) -> Tensor:
    """The part of ``jump`` along ``weights`` (flat, the tensor before the jump) over the
    elements the jump moves; with ``rows`` > 1, of each of that many equal rows on its own.
    ``sums``: :func:`radial_sums` over the whole tensor, when ``jump`` is one shard of it."""
    sums = radial_sums(jump, weights, rows) if sums is None else sums
    along = radial_coefficient(sums, inward=False)
    return (_on_moved(weights, jump).view(rows, -1) * along.unsqueeze(1)).view(-1)


def merged_radial_sums(jump: Tensor, merged: Tensor) -> Tensor:
    """:func:`radial_sums` (one row, ``[2]``) of a jump already merged into ``merged``, the
    weights before it being ``merged - jump``: one elementwise pass, which Inductor fuses
    into one loop and plain torch runs on cache-sized chunks (:class:`~pdt_compile.runtime.kernels.Kernels`)."""
    base = _moved_base(jump, merged)
    return torch.stack(((jump * base).sum(), (base * base).sum()))


def radial_coefficient(sums: Tensor, inward: bool) -> Tensor:
    """The radial part's length along the moved weights (0-d on the device, or one per row),
    from :func:`radial_sums`; ``inward``: 0 unless the part shrinks the tensor."""
    along = sums[0] / sums[1].clamp_min(torch.finfo(sums.dtype).tiny)
    # A NaN weight makes its tensor's sums NaN; 0 keeps the part from spreading it to the rest.
    along = along.nan_to_num(0.0, 0.0, 0.0)
    return along * (sums[0] < 0).to(along.dtype) if inward else along


def merged_radial_part(jump: Tensor, merged: Tensor, coefficient: Tensor) -> Tensor:
    """:func:`radial_part` of a jump already merged into ``merged`` (one row), given its
    :func:`radial_coefficient`; one elementwise pass, as :func:`merged_radial_sums`."""
    return _moved_base(jump, merged) * coefficient


def _moved_base(jump: Tensor, merged: Tensor) -> Tensor:
    """The weights before the jump, 0 where it does not move them."""
    return _on_moved(merged - jump, jump)


def _on_moved(weights: Tensor, jump: Tensor) -> Tensor:
    """``weights`` where ``jump`` moves them, else 0."""
    # |sign| as the mask: on the CPU a boolean mask costs plain torch ten times the arithmetic.
    return weights * jump.sign().abs()
