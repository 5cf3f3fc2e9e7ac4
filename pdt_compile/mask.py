"""Dynamic consistency: which predicted elements may be merged, and the merge itself.

Pure functions on tensors. Notation (per element j): ``d`` is what the optimizer moved over
the last interval (w - s), ``P[k-1]`` the predicted displacement k intervals ahead of s.
Two elements have the same sign only when both are non-zero (``x * y > 0``), so a zero
displacement is never "consistent" and an element whose optimizer did not move it is never
accepted by a rule that checks signs or bounds. Non-finite values are never accepted.
"""

from __future__ import annotations

import functools
from typing import Sequence, Union

import torch
from torch import Tensor

from .config import RULES
from .dmd import predicted_displacement

Horizon = Union[int, Tensor]


def _same_sign_every_step(d: Tensor, predicted: Sequence[Tensor]) -> Tensor:
    # A running minimum of p_k * d: NaN propagates through torch.minimum and fails.
    return functools.reduce(torch.minimum, [p * d for p in predicted]) > 0


def _accelerates(d: Tensor, p_tau: Tensor, low_strict: bool, factor: Horizon) -> Tensor:
    magnitude, step = p_tau.abs(), d.abs()
    above = magnitude > step if low_strict else magnitude >= step
    # magnitude <= factor * step, written as a difference: also false where both sides are
    # infinite (inf - inf is NaN), so an infinite d or p_tau fails without an isfinite pass
    return above & (factor * step - magnitude >= 0)


def needs_every_step(rule: str) -> bool:
    """Whether ``rule`` checks the sign of every p_k (else only p_tau is needed)."""
    return rule in ("paper", "consistency_only")


def consistency_mask(d: Tensor, P: Tensor, rule: str = "paper", tau: Horizon | None = None) -> Tensor:
    """Boolean ``[n]``: the elements whose prediction passes ``rule``.

    d: ``[n]`` the optimizer's displacement over the last interval; P: ``[tau, n]`` the
    predicted displacements p_1..p_tau (rows past the horizon, if any, repeat p_tau).
    tau: the horizon used in the bounds; default ``P.shape[0]``.

    - ``"paper"``: |d| < |p_tau| <= tau|d| and sign(p_k) = sign(d) for every k;
    - ``"reference"``: |d| <= |p_tau| <= (tau+1)|d| and sign(p_tau) = sign(d);
    - ``"accel_only"``: the paper's bounds only; ``"consistency_only"``: its signs only;
    - ``"none"``: every finite prediction.
    """
    if rule not in RULES:
        raise ValueError(f"consistency_mask: rule={rule!r} is invalid: expected one of {RULES}")
    if P.dim() != 2 or P.shape[1:] != d.shape:
        raise ValueError(
            f"consistency_mask: P must be [tau, n] with n = d.numel(); got P {tuple(P.shape)}, "
            f"d {tuple(d.shape)}"
        )
    return mask_of_rows(d, list(P), rule, P.shape[0] if tau is None else tau)


def mask_of_rows(d: Tensor, predicted: Sequence[Tensor], rule: str, tau: Horizon) -> Tensor:
    """:func:`consistency_mask` on the predicted displacements as a list of ``[n]`` rows, the
    last being p_tau (only p_tau is read unless :func:`needs_every_step`). Unrolled over the
    rows: compiled, the whole mask is one pass with no ``[tau, n]`` intermediate."""
    p_tau = predicted[-1]
    if rule == "none":
        return torch.isfinite(p_tau) & torch.isfinite(d)
    if rule == "consistency_only":
        return _same_sign_every_step(d, predicted) & torch.isfinite(p_tau * d)
    # |d| <(=) |p_tau| <= factor |d| is false for NaN or infinite d or p_tau: no separate check.
    if rule == "reference":
        return _accelerates(d, p_tau, False, tau + 1) & (p_tau * d > 0)
    bounded = _accelerates(d, p_tau, True, tau)
    if rule == "accel_only":
        return bounded
    return bounded & _same_sign_every_step(d, predicted)


def trend_mask(w: Tensor, ring: Tensor | Sequence[Tensor], s: Tensor, d: Tensor | None = None) -> Tensor:
    """Boolean ``[n]``: elements that every stored snapshot (rows of ``ring``, ``[h, n]`` or h
    ``[n]`` rows, the last snapshot ``s`` among them) lies behind in the direction the
    optimizer last moved them: ``(w - s_i) * (w - s) > 0`` for every row i. An element on a
    steady trend passes; one whose path is a random walk rarely does (about 1 in h). NaN fails.
    An ``[h, n]`` ring is reduced in one operation, h rows unrolled (see
    :func:`pdt_compile.dmd.predicted_displacement`). ``d``: ``w - s``, where the caller has it."""
    if d is None:
        d = w - s
    if isinstance(ring, Tensor):
        return ((w - ring) * d).amin(0) > 0  # amin propagates NaN
    return functools.reduce(torch.minimum, [(w - row) * d for row in ring]) > 0


def drift_mask(path: Sequence[Tensor], threshold: float) -> Tensor:
    """Boolean ``[n]``: elements whose path drifts more than it wanders. ``path``: the points
    oldest first (the ring's snapshots in time order, then the current weights), each ``[n]``.
    An element passes where its net displacement over the path exceeds ``threshold`` times the
    root of its summed squared steps: ``|x_last - x_first| > threshold * sqrt(sum (x_i - x_{i-1})^2)``.
    A steady drift over m steps scores sqrt(m); a random walk about 1 (for Gaussian steps and
    m = 5, 14 % of random walks score above 1.5, 1.6 % above 2: tests/test_mask.py). NaN and a
    path that never moves fail."""
    if len(path) < 2:
        raise ValueError(f"drift_mask: path has {len(path)} points; it needs at least 2")
    energy = functools.reduce(torch.add, [(b - a) * (b - a) for a, b in zip(path, path[1:])])
    return _drifts(path[-1] - path[0], energy, threshold)


def _drifts(net: Tensor, energy: Tensor, threshold: float) -> Tensor:
    """``|net| > threshold * sqrt(energy)``, squared: false for NaN and for a path that never moves."""
    return net * net > (threshold * threshold) * energy


def ring_drift_mask(w: Tensor, ring: Tensor | Sequence[Tensor], s: Tensor, oldest: Tensor, threshold: float) -> Tensor:
    """:func:`drift_mask` of the path from the oldest snapshot through the ring to ``w``, read
    from the ring in its physical (cyclic) row order: the rows are the snapshots rotated, so the
    squared steps between cyclically adjacent rows are the path's, but for the step from the
    newest (``s``) back to the ``oldest``, which gives way to the step from ``s`` to ``w``. No
    row is reordered: compiled, a one-hot ``s`` and ``oldest`` serve every slot."""
    rows = list(ring)
    cyclic = [(rows[(i + 1) % len(rows)] - row) for i, row in enumerate(rows)]
    energy = functools.reduce(torch.add, [step * step for step in cyclic])
    energy = energy - (oldest - s) * (oldest - s) + (w - s) * (w - s)
    return _drifts(w - oldest, energy, threshold)


def moment_mask(first: Tensor, second: Tensor, ratio: float) -> Tensor:
    """Where Adam's moments say the gradient has a direction: ``|m| >= ratio * sqrt(v)``, with
    m its first moment and v its second (same shape). |m| / sqrt(v) estimates |mean| / rms of
    the gradient: near 1 where it keeps its sign, about 0.16 (median) where it is noise at
    beta1 = 0.9, beta2 = 0.999. An element never updated (m = v = 0) passes."""
    return first.abs() >= ratio * second.sqrt()


def saturation_mask(displacement: Tensor, steps: int, lr: float | Tensor, bar: float) -> Tensor:
    """Where a sign optimizer moved an element by at least ``bar`` of the most it could:
    ``|d| >= bar * steps * lr``, d its displacement over ``steps`` steps of at most ``lr`` each
    (Lion's). 1 is every step the same way; a coin-toss sign gives about sqrt(2 / (pi * steps)).
    NaN fails."""
    return displacement.abs() >= (bar * steps) * lr


def merge(w: Tensor, s: Tensor, p_tau: Tensor, mask: Tensor) -> Tensor:
    """Merged weights: ``s + p_tau`` where ``mask``, else ``w`` (all ``[n]``)."""
    return torch.where(mask, s + p_tau, w)


def forecast_mask_merge(
    w: Tensor,
    ring: Tensor | Sequence[Tensor],
    s: Tensor,
    coefficients: Tensor,
    s_coefficients: Tensor,
    tau: Horizon,
    rule: str,
    trend: bool = False,
    drift: float | None = None,
    oldest: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One prediction on one block of elements: forecast, mask and merge, fused.

    w: ``[n]`` weights after the optimizer step (float32 view of the parameter);
    ring: ``[h, n]`` snapshots (whole-tensor operations over the rows: plain torch) or h
    ``[n]`` rows (unrolled: compiled kernels); s: ``[n]`` the last snapshot (one of them);
    coefficients ``[steps, h]`` and s_coefficients ``[steps]`` from
    :func:`pdt_compile.dmd.displacement_coefficients` in the ring's row order, with the last
    row p_tau (rows past tau repeat it: :func:`pdt_compile.runtime.predictor.solve_coefficients`).
    ``trend``: also require :func:`trend_mask`; ``drift``: also require :func:`ring_drift_mask`
    at that threshold (``oldest``: the oldest snapshot, one of the rows). Returns
    ``(merged [n], mask [n])``.
    The single definition of a prediction: the eager path runs it on chunks or compiled on
    whole parameters, the compiled path inlines it into the optimizer-step graph.
    """
    rows = ring if isinstance(ring, Tensor) else list(ring)
    steps = range(coefficients.shape[0]) if needs_every_step(rule) else [coefficients.shape[0] - 1]
    predicted = [predicted_displacement(rows, s, coefficients[k], s_coefficients[k]) for k in steps]
    d = w - s
    accepted = mask_of_rows(d, predicted, rule, tau)
    if trend:
        accepted = accepted & trend_mask(w, rows, s, d)
    if drift is not None:
        if oldest is None:
            raise ValueError("forecast_mask_merge: drift needs oldest, the oldest snapshot")
        accepted = accepted & ring_drift_mask(w, rows, s, oldest, drift)
    return merge(w, s, predicted[-1], accepted), accepted
