"""Dynamic Mode Decomposition by the method of snapshots: pure functions on tensors.

A prediction is a linear combination of the stored snapshots, so all that depends on the
dynamics is a small coefficient matrix computed from the h x h Gram matrix K = S Sᵀ of the
snapshots (rows of S, oldest first) in float64 on the host (in numpy: :func:`solve_dmd`). The
big tensors are touched twice: once for the Gram, once for the forecast (see
:func:`predicted_displacements`).

Coefficient basis. With s = S[h-1] (the last snapshot) and D_i = S[i] - s, a predicted
displacement is written ``p_k = sum_{i<h-1} G[k, i] D_i + G[k, h-1] s``. Differences of
nearly equal snapshots are exact in float32, so forecasting from D keeps the small
displacements that carry the dynamics; for ``dynamics="affine"`` the s-coefficient is 0.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

Rank = Union[str, int, float]
ArrayLike = Union[np.ndarray, Tensor]

_RELATIVE_FLOOR = 1e-12  # singular values below this fraction of the largest are noise


def gram(ring: Tensor | Sequence[Tensor], block: int | None = None) -> Tensor:
    """Gram matrix ``ring @ ring.T`` of snapshot rows, accumulated in float64.

    ring: ``[h, n]`` or a sequence of h ``[n]`` rows; returns ``[h, h]`` float64. Products of
    float32 values are exact in float64, so only the summation rounds (a float32 Gram of raw
    weights loses the displacements entirely; see DESIGN.md, Numerics). Written as the
    h(h+1)/2 pairwise products of rows, each summed once: compiled, that is a single pass
    over the ring (a ``[h, n]`` matmul would stage a float64 copy of it). ``block``: sum each
    product in blocks of that many elements first (rows of a length fixed when traced, at
    least two blocks long), which parallelises a compiled reduction that would otherwise run
    unsplit (see :func:`~pdt_compile.runtime.kernels.gram_pass`).
    """
    rows = [row.to(torch.float64) for row in ring]
    h, n = len(rows), rows[0].numel()
    if block is not None and isinstance(n, int) and n >= 2 * block:
        cut = n - n % block
        heads = [row[:cut].view(-1, block) for row in rows]
        tails = [row[cut:] for row in rows]
        sums = {(i, j): (heads[i] * heads[j]).sum(-1).sum() + (tails[i] * tails[j]).sum()
                for i in range(h) for j in range(i, h)}
    else:
        sums = {(i, j): (rows[i] * rows[j]).sum() for i in range(h) for j in range(i, h)}
    return torch.stack([sums[min(i, j), max(i, j)] for i in range(h) for j in range(h)]).view(h, h)


def segment_grams(ring: Tensor | Sequence[Tensor], spans: Sequence[slice]) -> Tensor:
    """:func:`gram` of several parameters stored side by side: ``[len(spans), h, h]`` float64.

    ring: ``[h, n]`` or h ``[n]`` rows; spans: each parameter's columns. One float64 copy of
    the rows and a small matmul per parameter, so many small parameters cost a few operations
    each (rather than :func:`gram`'s h(h+1)/2 products, which fuse when compiled). Products of
    float32 values are exact in float64 either way; only the summation order differs.
    """
    rows = float64_rows(ring)
    return block_grams([rows[:, span] for span in spans])


def float64_rows(ring: Tensor | Sequence[Tensor]) -> Tensor:
    """``ring`` (``[h, n]`` or h ``[n]`` rows) as one ``[h, n]`` float64 tensor, copied once."""
    if isinstance(ring, Tensor):
        return ring.to(torch.float64)
    rows = list(ring)
    out = torch.empty(len(rows), rows[0].numel(), dtype=torch.float64, device=rows[0].device)
    for row, stored in zip(out, rows):
        row.copy_(stored)
    return out


def block_grams(blocks: Sequence[Tensor], transposed: Sequence[Tensor] | None = None) -> Tensor:
    """The Gram ``[len(blocks), h, h]`` of each ``[h, n_i]`` block (:func:`segment_grams`
    once the blocks are cut: a caller that keeps them as views of one buffer across
    predictions, with their transposes (``transposed``), spares the slicing, half the cost on
    small models)."""
    pairs = zip(blocks, transposed if transposed is not None else [block.t() for block in blocks])
    return torch.stack([torch.mm(block, block_t) for block, block_t in pairs])


def gavish_donoho_threshold(sigma: ArrayLike, rows: int | ArrayLike) -> np.ndarray:
    """Optimal hard threshold for singular values ``sigma`` ``[B, m]`` of ``rows x m``
    matrices (rows: an int or ``[B]``) with unknown noise (Gavish & Donoho 2014, as PyDMD's
    ``svd_rank=0``)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    m = float(sigma.shape[-1])
    rows = np.asarray(rows, dtype=np.float64)
    beta = np.minimum(rows, m) / np.maximum(rows, m)
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    ordered = np.sort(sigma, axis=-1)
    middle = (ordered.shape[-1] - 1) // 2, ordered.shape[-1] // 2
    median = 0.5 * (ordered[..., middle[0]] + ordered[..., middle[1]])
    return median * omega


def select_rank(sigma: ArrayLike, rows: int | ArrayLike, rank: Rank) -> np.ndarray:
    """Truncation rank for each batch of descending singular values ``sigma`` ``[B, m]``.

    ``rank``: ``"gavish_donoho"``, ``"full"``, an int >= 1 or an energy fraction in (0, 1).
    Returns ``[B]`` int64, each in [1, m].
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    batch, m = sigma.shape
    if rank == "full":
        chosen = np.full(batch, m, dtype=np.int64)
    elif rank == "gavish_donoho":
        threshold = gavish_donoho_threshold(sigma, rows)
        chosen = (sigma > np.reshape(threshold, (-1, 1))).sum(-1)
    elif isinstance(rank, float):
        energy = np.square(sigma)
        cumulative = np.cumsum(energy, -1) / np.maximum(energy.sum(-1, keepdims=True), 1e-300)
        chosen = (cumulative < rank).sum(-1) + 1
    else:
        chosen = np.full(batch, int(rank), dtype=np.int64)
    return np.clip(chosen, 1, m).astype(np.int64)


def _descending_eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values (square roots of the eigenvalues, clamped at 0) and eigenvectors of
    symmetric ``matrix`` ``[..., q, q]``, largest first."""
    eigenvalues, vectors = np.linalg.eigh(matrix)
    return np.sqrt(np.maximum(eigenvalues[..., ::-1], 0.0)), vectors[..., ::-1]


def _projected_predictions(
    gram_matrix: np.ndarray, steps: int, rows: int | ArrayLike, rank: Rank, last_only: bool = False
) -> np.ndarray:
    """Projected-mode DMD of the sequence whose Gram is ``gram_matrix`` ``[B, q, q]``.

    Returns ``a`` ``[B, steps, q-1]``: the prediction k steps after the last element is
    ``sum_i a[k-1, i] x_i`` over the first q - 1 elements x_i (U Ã^k Uᵀ x_last with
    U = X V Σ⁻¹, all from the Gram, in real arithmetic). ``last_only``: ``[B, 1, q-1]``, the
    prediction ``steps`` ahead alone (Ã^steps by squaring: a few products, not ``steps``).
    """
    xtx = gram_matrix[..., :-1, :-1]
    xty = gram_matrix[..., :-1, 1:]
    xtlast = gram_matrix[..., :-1, -1:]
    sigma, vectors = _descending_eigh(xtx)
    keep = sigma > _RELATIVE_FLOOR * sigma[:, :1]
    if rank != "full":
        keep &= np.arange(sigma.shape[-1]) < select_rank(sigma, rows, rank)[:, None]
    inverse_sigma = np.where(keep, 1.0 / np.maximum(sigma, 1e-300), 0.0)
    basis = vectors * inverse_sigma[:, None, :]  # V Σ⁻¹; dropped modes are zero columns
    projector = basis.swapaxes(-1, -2)
    reduced = projector @ xty @ basis  # Ã
    state = projector @ xtlast  # Uᵀ x_last
    if last_only:
        return (basis @ (np.linalg.matrix_power(reduced, steps) @ state)).swapaxes(-1, -2)
    states = np.empty(state.shape[:-1] + (steps,))
    for step in range(steps):
        state = reduced @ state
        states[..., step] = state[..., 0]
    return (basis @ states).swapaxes(-1, -2)


def _exact_predictions(
    gram_matrix: np.ndarray, steps: int, rows: int | ArrayLike, rank: Rank, last_only: bool = False
) -> np.ndarray:
    """Exact-mode DMD (modes Φ = Y V Σ⁻¹ W, amplitudes fitted to the last element).

    Returns ``[B, steps, q-1]`` coefficients on the *last* q - 1 elements (the columns of Y).
    Complex eigenvectors are needed here, so each batch entry is solved at its own rank.
    ``last_only``: ``[B, 1, q-1]``, the prediction ``steps`` ahead alone.
    """
    batch, q, _ = gram_matrix.shape
    out = np.zeros((batch, steps, q - 1))
    rows = np.broadcast_to(np.asarray(rows, dtype=np.float64), (batch,))
    for b in range(batch):
        k = gram_matrix[b]
        sigma, vectors = _descending_eigh(k[:-1, :-1])
        r = int(select_rank(sigma[None], rows[b], rank)[0])
        r = min(r, int((sigma > _RELATIVE_FLOOR * sigma[0]).sum()))
        if r == 0:
            continue
        basis = vectors[:, :r] / sigma[:r]
        reduced = basis.T @ k[:-1, 1:] @ basis
        lam, w = np.linalg.eig(reduced)
        mode_basis = basis.astype(np.complex128) @ w  # Φ = Y @ mode_basis
        adjoint = mode_basis.conj().T
        normal = adjoint @ k[1:, 1:] @ mode_basis
        # torch.linalg.pinv's default cut-off, which this solve was validated with
        cutoff = np.finfo(np.float64).eps * normal.shape[-1]
        amplitudes = np.linalg.pinv(normal, rcond=cutoff, hermitian=True) @ (adjoint @ k[1:, -1])
        for step in range(steps):
            amplitudes = lam * amplitudes
            out[b, step] = (mode_basis @ amplitudes).real
    return out[:, -1:] if last_only else out


def solve_dmd(
    gram_matrix: np.ndarray,
    steps: int,
    *,
    rows: int | ArrayLike,
    rank: Rank = "gavish_donoho",
    modes: str = "projected",
    dynamics: str = "linear",
    last_only: bool = False,
) -> np.ndarray:
    """:func:`displacement_coefficients` on a float64 numpy Gram ``[B, h, h]``: the host
    solve. Its few dozen operations on h x h matrices each cost less in numpy than as torch
    operations, whose per-operation overhead is a visible part of a prediction on a small model.
    ``last_only``: only p_steps, ``[B, 1, h]``, where a rule reads no other (fewer operations
    for projected linear DMD; the others compute every step and keep the last)."""
    h = gram_matrix.shape[-1]
    solve = _projected_predictions if modes == "projected" else _exact_predictions
    if dynamics == "linear":
        a = solve(gram_matrix, steps, rows, rank, last_only)  # on snapshots 0..h-2 (projected) or 1..h-1 (exact)
        coefficients = np.zeros(a.shape[:-1] + (h,))
        if modes == "projected":
            coefficients[..., :-1] = a
        else:
            coefficients[..., 1:] = a
        coefficients[..., -1] -= 1.0  # p_k = ŵ_k - s
        total = coefficients.sum(-1)
    else:
        difference = np.zeros((h - 1, h))
        index = np.arange(h - 1)
        difference[index, index] = -1.0
        difference[index, index + 1] = 1.0  # Δ_i = s_{i+1} - s_i
        a = solve(difference @ gram_matrix @ difference.T, steps, rows, rank)
        on_deltas = np.zeros(a.shape[:-1] + (h - 1,))
        if modes == "projected":
            on_deltas[..., :-1] = a
        else:
            on_deltas[..., 1:] = a
        coefficients = np.cumsum(on_deltas, 1) @ difference  # p_k = Δ̂_1 + ... + Δ̂_k
        total = np.zeros(coefficients.shape[:-1])  # displacements sum to zero exactly
    coefficients[..., -1] = total
    return coefficients[:, -1:] if last_only else coefficients


def displacement_coefficients(
    gram_matrix: Tensor,
    steps: int,
    *,
    rows: int | Tensor,
    rank: Rank = "gavish_donoho",
    modes: str = "projected",
    dynamics: str = "linear",
) -> Tensor:
    """Coefficients ``G`` ``[B, steps, h]`` of the predicted displacements (module docstring).

    gram_matrix: ``[B, h, h]`` (or ``[h, h]``) Gram of snapshots in logical order (oldest
    first); rows: elements per snapshot, an int or ``[B]`` (for the Gavish–Donoho
    threshold). Solved in float64 on the host (:func:`solve_dmd`); returns a float64 CPU tensor.
    The prediction k intervals ahead of s is ``s + p_k``.
    """
    squeeze = gram_matrix.dim() == 2
    k = np.asarray(gram_matrix.detach().cpu(), dtype=np.float64)
    coefficients = solve_dmd(k[None] if squeeze else k, steps, rows=np.asarray(rows, dtype=np.float64), rank=rank,
                             modes=modes, dynamics=dynamics)
    return torch.from_numpy(coefficients[0] if squeeze else coefficients)


def small_cholesky_solve(a: Tensor, rhs: Tensor) -> tuple[Tensor, Tensor]:
    """Solve ``a x = rhs`` for a batch of small symmetric positive definite ``a`` ``[B, n, n]``
    and ``rhs`` ``[B, n, m]``; returns ``x`` and ``usable`` ``[B]``.

    The Cholesky factorisation (column by column) and both triangular solves (row by row) are
    written as tensor operations, O(n) of them: no solver library call (cuSOLVER and MAGMA
    allocate or synchronise, which a CUDA graph cannot capture) and no host read, so a compiled
    graph fuses them and a CUDA graph replays them. A matrix that is not numerically positive
    definite, or whose factor has a pivot below 1e-12 of its largest (the host solve's
    singular-value floor), is not ``usable``; its ``x`` is zero.
    """
    n = a.shape[-1]
    index = torch.arange(n, device=a.device)
    columns: list[Tensor] = []
    positive = torch.ones(a.shape[:-2], dtype=torch.bool, device=a.device)
    for j in range(n):
        residual = a[..., :, j]
        if columns:
            factor = torch.stack(columns, -1)  # [B, n, j]: the columns so far
            residual = residual - (factor * factor[..., j : j + 1, :]).sum(-1)
        d = residual[..., j]
        positive = positive & (d > 0)
        pivot = torch.sqrt(torch.where(d > 0, d, torch.ones_like(d)))
        column = torch.where(index > j, residual / pivot[..., None], torch.zeros_like(residual))
        columns.append(torch.where(index == j, pivot[..., None], column))
    factor = torch.stack(columns, -1)  # [B, n, n], lower triangular
    pivots = factor.diagonal(dim1=-2, dim2=-1)
    usable = positive & (pivots.amin(-1) > _RELATIVE_FLOOR * pivots.amax(-1))
    y: list[Tensor] = []
    for i in range(n):  # factor y = rhs
        done = (factor[..., i, :i, None] * torch.stack(y, -2)).sum(-2) if y else torch.zeros_like(rhs[..., i, :])
        y.append((rhs[..., i, :] - done) / pivots[..., i, None])
    x: list[Tensor] = []
    for i in reversed(range(n)):  # factorᵀ x = y; x holds rows i + 1 .. n - 1, last first
        later = torch.stack(x[::-1], -2) if x else None
        done = (factor[..., i + 1 :, i, None] * later).sum(-2) if later is not None else torch.zeros_like(y[i])
        x.append((y[i] - done) / pivots[..., i, None])
    solution = torch.stack(x[::-1], dim=-2)
    return torch.where(usable[..., None, None], solution, torch.zeros_like(solution)), usable


def full_rank_coefficients(gram_matrix: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """:func:`displacement_coefficients` for the default model (linear dynamics, projected
    modes, full rank) without leaving the device, without a host synchronisation and
    without a solver library call (:func:`small_cholesky_solve`), so that a CUDA graph can
    hold it.

    With every mode kept, U Ã^k Uᵀ = X (K⁻¹ XᵀY)^k K⁻¹ Xᵀ (K = XᵀX), so the prediction's
    coefficients on the first h - 1 snapshots are ``(K⁻¹ XᵀY)^k K⁻¹ Xᵀs``: one Cholesky
    solve and a few h x h products. A group whose K is not usable gets all-zero
    coefficients: a zero prediction, which the mask never accepts.
    gram_matrix: ``[B, h, h]`` float64 in logical order. Returns coefficients ``[B, steps, h]``
    and s-coefficients ``[B, steps]``, as :func:`displacement_coefficients` with
    ``rank="full"``.
    """
    xtx, xty, xtlast = gram_matrix[..., :-1, :-1], gram_matrix[..., :-1, 1:], gram_matrix[..., :-1, -1:]
    solved, usable = small_cholesky_solve(xtx, torch.cat([xty, xtlast], dim=-1))
    transition, state = solved[..., :-1], solved[..., -1:]
    predictions = []
    for _ in range(steps):
        state = transition @ state
        predictions.append(state[..., 0])
    a = torch.stack(predictions, dim=1)
    s_coefficients = a.sum(-1) - usable[:, None].to(a.dtype)
    coefficients = torch.cat([a, s_coefficients[..., None]], dim=-1)
    return coefficients, s_coefficients


def predicted_displacement(
    rows: Tensor | Sequence[Tensor], s: Tensor, coefficients: Tensor, s_coefficient: Tensor
) -> Tensor:
    """One predicted displacement ``[n]``: ``sum_i coefficients[i] (rows[i] - s) + s_coefficient s``.

    rows: h snapshots in any order, as long as ``coefficients`` (``[h]``, or ``[h, n]`` per
    element) follows it; the row holding s contributes nothing (its difference is zero).
    A sequence of h ``[n]`` rows is unrolled, so a compiler fuses it into one pass with no
    ``[h, n]`` intermediate; an ``[h, n]`` tensor is reduced over its rows in one operation
    (plain torch, where each operation's fixed cost counts).
    """
    c = coefficients.to(s.dtype)
    p = s_coefficient.to(s.dtype) * s
    if isinstance(rows, Tensor):
        return p + ((c if c.dim() == 2 else c[:, None]) * (rows - s)).sum(0)
    for i, row in enumerate(rows):
        p = p + c[i] * (row - s)
    return p


def predicted_displacements(
    coefficients: Tensor, ring: Tensor | Sequence[Tensor], s: Tensor, s_coefficient: Tensor
) -> Tensor:
    """Predicted displacements ``P`` ``[steps, n]``: :func:`predicted_displacement` for every
    row of ``coefficients`` ``[steps, h]`` (ring ``[h, n]`` or h rows)."""
    rows = list(ring)
    return torch.stack([predicted_displacement(rows, s, c, cs) for c, cs in zip(coefficients, s_coefficient)])


def forecast(
    snapshots: Tensor,
    steps: int,
    *,
    rank: Rank = "gavish_donoho",
    modes: str = "projected",
    dynamics: str = "linear",
) -> Tensor:
    """DMD predictions ``ŵ_1 .. ŵ_steps`` ``[steps, n]`` made from the last snapshot.

    snapshots: ``[h, n]``, oldest first. Computed by the method of snapshots (a float64
    Gram and an h x h problem), never an n x h SVD. Same options as
    :func:`displacement_coefficients`.
    """
    if snapshots.dim() != 2 or snapshots.shape[0] < 2:
        raise ValueError(
            f"forecast: snapshots must be [h, n] with h >= 2, got shape {tuple(snapshots.shape)}"
        )
    if steps < 1:
        raise ValueError(f"forecast: steps={steps} must be >= 1")
    coefficients = displacement_coefficients(
        gram(snapshots), steps, rows=snapshots.shape[1], rank=rank, modes=modes, dynamics=dynamics
    )
    s = snapshots[-1]
    work = snapshots if snapshots.dtype == torch.float64 else snapshots.float()
    p = predicted_displacements(coefficients, work, work[-1], coefficients[:, -1])
    return (s.to(p.dtype) + p).to(snapshots.dtype if snapshots.is_floating_point() else p.dtype)
