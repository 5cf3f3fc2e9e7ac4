"""The two passes of a prediction over one parameter, and the two of ``PDTConfig.radial`` after
it, as kernels: plain torch or Inductor-compiled.

A prediction touches the big tensors twice: :func:`gram_pass` reads the h ring rows once
(float64 Gram), and :func:`predict_pass_` reads them again with the weights and writes the
merged weights, the shifted rows and the new snapshot, all in one pass. Both are written with
the maths of :mod:`pdt_compile.dmd` and :mod:`pdt_compile.mask` unrolled over the h rows
(no ``[h, n]`` or ``[tau, n]`` intermediate), so Inductor turns each into one loop. The same
functions are what ``@pdt.compile`` inlines into the optimizer-step graph; the eager
``pdt.PDT`` calls them compiled once per configuration (dynamic shapes: one kernel for every
parameter size) or, where compiling does not pay or is unavailable, as plain torch on
cache-sized chunks, each chunk's h rows stacked so that every step of the maths is one operation
over all of them (per-operation overhead, not bytes, sets the cost of small predictions).
"""

from __future__ import annotations

import functools
import shutil
import types
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..config import PDTConfig
from ..dmd import gram, segment_grams
from ..mask import forecast_mask_merge
from ..radial import merged_radial_part, merged_radial_sums

AUTO_MIN_ELEMENTS = 1 << 20
"""``kernels="auto"`` compiles from this many tracked elements on: below it a plain-torch
prediction costs a few milliseconds, less than compiling would cost over a run."""


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """What a prediction computes in for weights of ``dtype``: float32, or float64 for float64
    weights, which a float32 pass would round everywhere, merged or not, at every prediction."""
    return torch.float64 if dtype == torch.float64 else torch.float32


GRAM_BLOCK = 4096
"""Elements per block of the Gram on CUDA (:func:`gram_pass`)."""


def gram_pass(rows: Sequence[Tensor]) -> Tensor:
    """Float64 Gram ``[h, h]`` of one parameter's h ring rows (physical order).

    On CUDA it sums in blocks: in the static-shape optimizer graph Inductor ran the whole-row
    sums as one unsplit reduction (an H200 took 0.9 ms per 4M-element parameter, 38x the
    eager kernel on the same rows: benchmarks/gpu_check.py's profile, 2026-11-30). On the CPU
    the whole-row form is the faster one.
    """
    return gram(rows, GRAM_BLOCK if rows[0].is_cuda else None)


def eager_gram(rows: Tensor | Sequence[Tensor]) -> Tensor:
    """Float64 Gram ``[h, h]`` of h rows (a ``[h, n]`` tensor or h ``[n]`` rows) in plain torch.

    On the CPU: one float64 copy of the rows and a matrix product, several times faster than
    :func:`gram_pass`'s h(h+1)/2 products on cache-sized chunks, where each product would
    allocate and sum a row-sized temporary (``python -m benchmarks.gram_forms``): the form
    :func:`~pdt_compile.dmd.segment_grams` computes, over one segment. Products of
    float32 values are exact in float64 either way; only the summation order differs. Elsewhere
    :func:`gram_pass` (the matrix form is not measured there)."""
    if rows[0].device.type != "cpu":
        return gram_pass(list(rows))
    return segment_grams(rows, [slice(None)])[0]


def predict_pass_(
    weights: Tensor, rows: Sequence[Tensor], s_weights: Tensor, slot_mask: Tensor, coefficients: Tensor,
    s_coefficients: Tensor, horizon: Tensor, active: Tensor, jump_out: Tensor | None,
    rule: str, trend: bool, drift: float | None, shift: bool, followers: Sequence[Tensor] = (),
    fractions: Tensor | None = None,
) -> Tensor:
    """:func:`predict_elements_`, returning the accepted count (0-d int64)."""
    return predict_elements_(weights, rows, s_weights, slot_mask, coefficients, s_coefficients, horizon, active,
                             jump_out, rule, trend, drift, shift, followers, fractions).sum()


def applied_jump(w: Tensor, merged: Tensor) -> tuple[Tensor, Tensor]:
    """The merged weights as ``w + jump`` and the jump ``merged - w``: what a follower equal to
    ``w`` reaches by adding the jump, bit for bit (``merged`` itself may differ from it by a
    rounding where a jump crosses zero)."""
    jump = merged - w
    return w + jump, jump


def predict_elements_(
    weights: Tensor, rows: Tensor | Sequence[Tensor], s_weights: Tensor | int, slot_mask: Tensor | int,
    coefficients: Tensor, s_coefficients: Tensor, horizon: Tensor, active: Tensor | bool, jump_out: Tensor | None,
    rule: str, trend: bool, drift: float | None, shift: bool, followers: Sequence[Tensor] = (),
    fractions: Tensor | None = None,
) -> Tensor:
    """One parameter's prediction, in place; returns the accepted elements (``[n]`` bool).

    weights ``[n]`` (any float dtype, read in :func:`working_dtype`) and rows (h float32 ``[n]``
    rows, or one ``[h, n]`` tensor, in physical order) are rewritten: merged weights; every row
    translated by the jump when ``shift``; the merged weights captured in the row that
    ``slot_mask`` marks.
    ``s_weights`` picks the last snapshot s; ``slot_mask``, the row about to be overwritten, is
    the oldest snapshot (the ring is full when it predicts). Both are one-hot ``[h]`` tensors
    (float and bool: a compiled kernel then serves every slot) or, for plain torch on an
    ``[h, n]`` tensor, row indices. Coefficients ``[steps, h]`` and ``s_coefficients`` ``[steps]`` follow the
    physical rows, the last being p_tau; ``horizon`` (0-d float) is tau; ``active`` (0-d
    bool, or ``[n]`` for a pack) False makes it a plain capture (a parameter the optimizer
    skipped); plain torch may pass ``True`` for every element, which spares two whole-tensor
    operations. ``jump_out`` ``[n]``, if given, receives the applied jump (for rollback);
    each of ``followers`` (``[n]`` float32 tensors that live in weight space:
    :mod:`pdt_compile.adapters`) is translated by it, or by ``fractions[i]`` times it where
    ``fractions`` (``[len(followers)]`` float32, a tensor so that a changed fraction changes no
    compiled graph) is given (schedule-free's parameters take 1 - beta of the base iterate's jump:
    :func:`~pdt_compile.adapters.shares`). Coefficients may also be per element
    (``[steps, h, n]`` and ``[steps, n]``): several parameters packed side by side.
    """
    w = weights.to(working_dtype(weights.dtype))
    s = rows[s_weights] if isinstance(s_weights, int) else functools.reduce(
        torch.add, [s_weights[i] * row for i, row in enumerate(rows)])
    oldest = None
    if drift is not None:
        oldest = rows[slot_mask] if isinstance(slot_mask, int) else functools.reduce(
            torch.add, [torch.where(slot_mask[i], row, 0.0) for i, row in enumerate(rows)])
    merged, accepted = forecast_mask_merge(w, rows, s, coefficients, s_coefficients, horizon, rule, trend, drift, oldest)
    if active is not True:
        accepted = accepted & active
        merged = torch.where(accepted, merged, w)
    merged, jump = applied_jump(w, merged)
    if isinstance(slot_mask, int):  # rows: one [h, n] tensor
        if shift:
            rows.add_(jump)
        rows[slot_mask].copy_(merged)
    else:
        for i, row in enumerate(rows):
            row.copy_(torch.where(slot_mask[i], merged, row + jump if shift else row))
    weights.copy_(merged)
    for i, follower in enumerate(followers):
        follower.add_(jump if fractions is None else jump * fractions[i])
    if jump_out is not None:
        jump_out.copy_(jump)
    return accepted


def compiler_available(device: torch.device) -> bool:
    """Whether Inductor can generate kernels here: a C++ compiler for the CPU, Triton for CUDA."""
    if device.type == "cpu":
        return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    return False


def use_compiled(config: PDTConfig, device: torch.device, elements: int) -> bool:
    """Resolve ``config.kernels`` for tracked parameters of ``elements`` in total on ``device``."""
    if config.kernels == "torch":
        return False
    if config.kernels in ("inductor", "graph"):
        if not compiler_available(device):
            raise RuntimeError(
                f"PDTConfig.kernels={config.kernels!r} needs Inductor on {device.type} (a C++ compiler for the CPU, "
                "Triton for CUDA), which is not available; use kernels='auto' or 'torch'"
            )
        return True
    # On CUDA the compiled kernels are the faster ones since their pass counts the accepted
    # elements outside its kernel: an H200 ran an eager SGD prediction at 18.9M parameters in
    # 1.1 ms of GPU time compiled against 7.4 ms as plain torch (14.7 against 28.8 ms of wall
    # time, the rest on the host; benchmarks/gpu_check.py, 2026-12-04, RESULTS.md "GPU", Run 3).
    return elements >= AUTO_MIN_ELEMENTS and device.type in ("cpu", "cuda") and compiler_available(device)


RADIAL_PASSES = {"radial sums": merged_radial_sums, "radial part": merged_radial_part}
"""The two passes of ``PDTConfig.radial`` over a merged parameter (:mod:`pdt_compile.radial`)."""


NO_OPTIONS = ("", False, None, False, False)
"""The options of the kernels that take none (all but "predict")."""


@functools.lru_cache(maxsize=None)
def _compiled(kind: str, rule: str, trend: bool, drift: float | None, shift: bool, count: bool, layout: tuple) -> Callable:
    """``kind`` ("gram", "predict" or one of :data:`RADIAL_PASSES`) compiled for every parameter size; ``count``: the
    predict kernel returns the accepted count (fused), else the accepted elements. ``layout``
    (:func:`_layout` of the arguments) is part of the key so that each variant is compiled from
    a code object of its own: Dynamo counts recompiles per code object, and past its limit (8) a
    ``fullgraph`` compile fails (a sweep over ``history`` in one process failed at its third value)."""
    if kind == "gram":
        fn = gram_pass
    elif kind in RADIAL_PASSES:
        fn = RADIAL_PASSES[kind]
    else:
        pass_ = predict_pass_ if count else predict_elements_

        def fn(weights, rows, s_weights, slot_mask, coefficients, s_coefficients, horizon, active, jump_out, followers):
            return pass_(weights, rows, s_weights, slot_mask, coefficients, s_coefficients, horizon,
                         active, jump_out, rule, trend, drift, shift, followers)
    own = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    return torch.compile(own, dynamic=True, fullgraph=True)


def _layout(args: tuple) -> tuple:
    """What of a kernel's arguments Dynamo specialises on besides sizes: dtypes, ranks, list
    lengths, absent tensors."""
    def of(arg: object) -> object:
        if isinstance(arg, Tensor):
            return arg.dtype, arg.dim()
        if isinstance(arg, (list, tuple)):
            return len(arg), of(arg[0]) if arg else None
        return arg if arg is None or isinstance(arg, bool) else type(arg).__name__

    return tuple(of(arg) for arg in args)


def _detached(arg: object) -> object:
    """``arg`` with its tensors detached: a view's base is then not an input, whose rank and
    strides Dynamo would guard on (a weight matrix's view and a bias compiled apart)."""
    if isinstance(arg, Tensor):
        return arg.detach()
    if isinstance(arg, list):
        return [_detached(a) for a in arg]
    return arg


def _run_compiled(kind: str, options: tuple, *args: object) -> Tensor:
    """Kernel ``kind`` for ``options`` (rule, trend, drift, shift, count) run on ``args``."""
    args = tuple(_detached(arg) for arg in args)
    return _compiled(kind, *options, _layout(args))(*args)


class Kernels:
    """The prediction passes (and the radial ones) for one configuration: compiled with
    Inductor, or plain torch on chunks of ``chunk`` elements (equal up to float rounding; tested)."""

    def __init__(self, config: PDTConfig, device: torch.device, elements: int) -> None:
        self.rule, self.trend, self.shift = config.rule, config.trend, config.after_merge == "shift"
        self.drift = config.drift
        self.compiled = use_compiled(config, device, elements)
        self.chunk = config.chunk_for(device)
        # On CUDA the count fused into the pass made Inductor run it as one unsplit reduction
        # (an H200 took 1.5 ms per 4M-element weight: benchmarks/gpu_check.py's profile,
        # 2026-11-30), so the kernel returns the accepted elements and torch counts them; on
        # the CPU the fused count is the faster one.
        self.fused_count = device.type == "cpu"

    def gram(self, rows: Sequence[Tensor]) -> Tensor:
        if self.compiled:
            return _run_compiled("gram", NO_OPTIONS, list(rows))
        total = None
        for start in range(0, rows[0].numel(), self.chunk):
            part = eager_gram([row[start : start + self.chunk] for row in rows])
            total = part if total is None else total + part
        return total

    def predict_(
        self, weights: Tensor, rows: Sequence[Tensor], s_weights: Tensor | int, slot_mask: Tensor | int,
        coefficients: Tensor, s_coefficients: Tensor, horizon: Tensor, active: Tensor, jump_out: Tensor | None,
        followers: Sequence[Tensor] = (),
    ) -> Tensor:
        """:func:`predict_pass_` on a whole parameter (compiled: ``s_weights`` and ``slot_mask``
        one-hot) or chunk by chunk, each chunk's rows stacked (plain torch: row indices)."""
        if self.compiled:
            result = _run_compiled(
                "predict", (self.rule, self.trend, self.drift, self.shift, self.fused_count), weights, list(rows),
                s_weights, slot_mask, coefficients, s_coefficients, horizon, active, jump_out, list(followers),
            )
            return result if self.fused_count else result.sum()
        count = torch.zeros((), dtype=torch.int64, device=weights.device)
        for start in range(0, weights.numel(), self.chunk):
            part = slice(start, start + self.chunk)
            block = torch.stack([row[part] for row in rows])
            count += predict_pass_(
                weights[part], block, s_weights, slot_mask, coefficients, s_coefficients,
                horizon, active, None if jump_out is None else jump_out[part], self.rule, self.trend, self.drift,
                self.shift, [follower[part] for follower in followers],
            )
            for row, stored in zip(rows, block):
                row[part].copy_(stored)
        return count

    def radial_sums(self, jump: Tensor, merged: Tensor) -> Tensor:
        """:func:`~pdt_compile.radial.merged_radial_sums` of one parameter (``[2]``)."""
        if self.compiled:
            return _run_compiled("radial sums", NO_OPTIONS, jump, merged)
        total = torch.zeros(2, dtype=jump.dtype, device=jump.device)
        for start in range(0, jump.numel(), self.chunk):
            part = slice(start, start + self.chunk)
            total += merged_radial_sums(jump[part], merged[part])
        return total

    def radial_part(self, jump: Tensor, merged: Tensor, coefficient: Tensor) -> Tensor:
        """:func:`~pdt_compile.radial.merged_radial_part` of one parameter."""
        if self.compiled:
            return _run_compiled("radial part", NO_OPTIONS, jump, merged, coefficient)
        out = torch.empty_like(jump)
        for start in range(0, jump.numel(), self.chunk):
            part = slice(start, start + self.chunk)
            out[part] = merged_radial_part(jump[part], merged[part], coefficient)
        return out
