"""Optimizers that keep weight-space tensors of their own: what moves with a merge.

A merge moves some weights by a jump J. An optimizer that keeps another copy of the weights in
its state (schedule-free's base iterate z and, in its reference form, the average x;
Lookahead's slow weights) pulls the weights back toward that copy at its next steps, undoing
the jump. PDT therefore applies J to such tensors too (``WEIGHT_SPACE_STATE``). Momentum
buffers and Adam moments are displacements, not positions, and stay as they are.

Schedule-free optimizers are handled apart (``AVERAGING``, ``PDTConfig.averages="stay"``):
their evaluation weights x are a running average of every base iterate z so far, so a jump
added to x stays in the weights the user evaluates for the rest of training (it fades only as
t / T), while a wrong jump of z is corrected by the optimizer's next steps. There PDT predicts
z, jumps z alone, and leaves x where it is; the parameters, an interpolation
y = (1 - beta) z + beta x, move by (1 - beta) J (:func:`shares`).

The registries map an optimizer class (by ``module.qualname``, so no package is imported
here). :func:`register_optimizer` adds one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils._python_dispatch import is_traceable_wrapper_subclass
from torch.optim import SGD, Adam, AdamW, Muon, NAdam, Optimizer, RAdam, RMSprop

from .runtime.history import _local

WEIGHT_SPACE_STATE: dict[str, tuple[str, ...]] = {
    "schedulefree.sgd_schedulefree.SGDScheduleFree": ("z",),
    "schedulefree.sgd_schedulefree_closure.SGDScheduleFreeClosure": ("z",),
    "schedulefree.sgd_schedulefree_reference.SGDScheduleFreeReference": ("z", "x", "y"),
    "schedulefree.adamw_schedulefree.AdamWScheduleFree": ("z",),
    "schedulefree.adamw_schedulefree_closure.AdamWScheduleFreeClosure": ("z",),
    "schedulefree.adamw_schedulefree_reference.AdamWScheduleFreeReference": ("z", "x", "y"),
    "schedulefree.radam_schedulefree.RAdamScheduleFree": ("z",),
    "schedulefree.radam_schedulefree_closure.RAdamScheduleFreeClosure": ("z",),
    "pytorch_optimizer.optimizer.lookahead.Lookahead": ("slow_params",),
    "pytorch_optimizer.optimizer.ranger.Ranger": ("slow_buffer",),
    "pytorch_optimizer.optimizer.schedulefree.ScheduleFreeSGD": ("z",),
    "pytorch_optimizer.optimizer.schedulefree.ScheduleFreeAdamW": ("z",),
    "pytorch_optimizer.optimizer.schedulefree.ScheduleFreeRAdam": ("z",),
    "torch.optim.asgd.ASGD": ("ax",),
    "pytorch_optimizer.optimizer.dadapt.DAdaptAdaGrad": ("x0",),
    "pytorch_optimizer.optimizer.sgd.AccSGD": ("momentum_buffer",),
    "pytorch_optimizer.optimizer.srmm.SRMM": ("mov_avg_param",),
    "pytorch_optimizer.optimizer.a2grad.A2Grad": ("x_k",),
    "pytorch_optimizer.optimizer.sam.SAM": ("old_p",),
    "pytorch_optimizer.optimizer.sam.FriendlySAM": ("old_p",),
    "pytorch_optimizer.optimizer.sam.LookSAM": ("old_p",),
}
"""``module.qualname`` of an optimizer class -> keys of its per-parameter state that hold
weights, all translated by the jump (``PDTConfig.averages="move"``; tested for each
schedule-free variant, pytorch-optimizer's Lookahead, Ranger's Lookahead buffer and its
schedule-free optimizers, which keep the schedulefree package's layout). The reference schedule-free variants
keep y in their state too: ``train()`` copies it back into the parameters. torch's ASGD keeps
its average of the weights in ``ax`` (a copy of them until ``t0``), which follows the jumps as
an average registered with ``PDT.move_with_merges`` does. D-Adaptation AdaGrad rebuilds its
weights from its initial point at every step (x = x0 - s / d), so a merge stands only if ``x0``
moves with it. AccSGD keeps the iterate of its accelerated scheme in ``momentum_buffer``, SRMM
a moving average of the weights in ``mov_avg_param``, A2Grad an averaged iterate in ``x_k``.
``python -m benchmarks.unregistered_state`` (digits MLP, 3 seeds, steps to the plain optimizer's
final loss): D-Adaptation AdaGrad 1.50x with ``x0`` moved, never with it left behind; AccSGD
2.31x against 1.30x; SRMM 2.00x against 1.07x; A2Grad 3.75x against 1.20x.
Left out, as moving their state did not help: D-Adaptation SGD (z = x0 - s; better at one
learning rate, worse at another) and AdaSmooth's previous weights (1.58x against 1.67x).
Sharpness-aware optimizers that save the weights in ``old_p`` before perturbing them and copy
them back before the update (SAM, FriendlySAM, LookSAM): a merge the gradient check undoes
between the two (the gradient it reads is the perturbed one) must reach the saved weights, or
the copy-back restores the merge behind PDT's back (benchmarks/FINDINGS.md, "Sharpness-aware
optimizers")."""


@dataclass(frozen=True)
class Averaging:
    """A schedule-free optimizer's layout: base iterate ``base`` (a state key), a running
    average x of it, and parameters that hold y = (1 - beta) z + beta x in training
    (``parameters="y"``) or x itself (``"x"``, the closure variants). ``beta`` is the group
    hyperparameter of the interpolation (``"betas"``: its first entry); ``interpolations``
    are state keys that also hold y."""

    base: str = "z"
    beta: str = "momentum"
    parameters: str = "y"
    interpolations: tuple[str, ...] = ()

    def share(self, group: dict[str, Any]) -> float:
        """The fraction of the base iterate's jump that y takes when x stays: 1 - beta."""
        value = group[self.beta]
        return 1.0 - float(value[0] if self.beta == "betas" else value)


_SF = "schedulefree."
_PO_SF = "pytorch_optimizer.optimizer.schedulefree."
AVERAGING: dict[str, Averaging] = {
    _SF + "sgd_schedulefree.SGDScheduleFree": Averaging(),
    _SF + "sgd_schedulefree_closure.SGDScheduleFreeClosure": Averaging(parameters="x"),
    _SF + "sgd_schedulefree_reference.SGDScheduleFreeReference": Averaging(interpolations=("y",)),
    _SF + "adamw_schedulefree.AdamWScheduleFree": Averaging(beta="betas"),
    _SF + "adamw_schedulefree_closure.AdamWScheduleFreeClosure": Averaging(beta="betas", parameters="x"),
    _SF + "adamw_schedulefree_reference.AdamWScheduleFreeReference": Averaging(beta="betas", interpolations=("y",)),
    _SF + "radam_schedulefree.RAdamScheduleFree": Averaging(beta="betas"),
    _SF + "radam_schedulefree_closure.RAdamScheduleFreeClosure": Averaging(beta="betas", parameters="x"),
    _PO_SF + "ScheduleFreeSGD": Averaging(),
    _PO_SF + "ScheduleFreeAdamW": Averaging(beta="betas"),
    _PO_SF + "ScheduleFreeRAdam": Averaging(beta="betas"),
}
"""``module.qualname`` -> the layout of an optimizer whose evaluation weights average its
base iterate (``PDTConfig.averages="stay"``)."""


def averaging(optimizer: object) -> Averaging | None:
    """The averaging layout of ``optimizer``, or None for an optimizer without one."""
    return AVERAGING.get(class_name(optimizer))


def shares(optimizer: Optimizer, layout: Averaging, params: Sequence[Tensor]) -> list[list[tuple[Tensor, float]]]:
    """For each parameter (``params``, in param-group order), the tensors that move with a
    jump J of its base iterate, each with its fraction of J, so that x stays: the parameter
    and the interpolation state (1 - beta; 0 where the parameter holds x)."""
    fraction = {id(p): layout.share(group) for group in optimizer.param_groups for p in group["params"]}
    out = []
    for p in params:
        state = optimizer.state.get(p, {})
        share = fraction[id(p)]
        moved = [(p, share)] if layout.parameters == "y" else []
        out.append(moved + [(state[key], share) for key in layout.interpolations if key in state])
    return out

_UNSAFE_PACKAGES = ("schedulefree",)
_NO_ADAPTER = ("pytorch_optimizer.optimizer.schedulefree.ScheduleFreeWrapper",)
"""Classes outside those packages known to keep weights in their state, with no adapter."""


WEIGHTS_ELSEWHERE = {
    "torchao.optim.cpu_offload.CPUOffloadOptimizer": (
        "steps a copy of the weights kept on the host and copies it onto the device weights after each step, so "
        "every merge PDT made on the device would be overwritten at the next step; PDT cannot stack on it. To keep "
        "optimizer state small on the device, wrap an optimizer with low-bit state instead (torchao's AdamW8bit or "
        "AdamW4bit, bitsandbytes' AdamW8bit), and ring_location='host' keeps PDT's snapshots off the device"),
}
"""``module.qualname`` -> why PDT refuses an optimizer that keeps the weights it steps outside its
state, where no adapter can move them with a merge."""


def class_name(optimizer: object) -> str:
    cls = type(optimizer)
    return f"{cls.__module__}.{cls.__qualname__}"


TRAILING_STATE: dict[str, tuple[str, ...]] = {
    "pytorch_optimizer.optimizer.lookahead.Lookahead": ("slow_params",),
    "pytorch_optimizer.optimizer.ranger.Ranger": ("slow_buffer",),
    "torch.optim.asgd.ASGD": ("ax",),
    "pytorch_optimizer.optimizer.srmm.SRMM": ("mov_avg_param",),
}
"""``module.qualname`` -> keys of :data:`WEIGHT_SPACE_STATE` whose weights trail the parameters
(a copy the optimizer pulls them toward now and then, not a function of them). A merge moves
them with the parameters; a restore after a runaway (``PDTConfig.runaway_factor``) leaves them
where they are: they took in at most part of the runaway, and moving them by the parameters'
way back would carry them past the snapshot, to the mirror image of the runaway (measured on
Lookahead: ``benchmarks/FINDINGS.md``, "A restore that mirrored Lookahead's slow weights")."""


def register_optimizer(optimizer_class: type, state_keys: Sequence[str], trailing: Sequence[str] = ()) -> None:
    """Declare that ``optimizer_class`` keeps weights in ``optimizer.state[p][key]`` for each
    key: PDT then applies every merge's jump to them as well. ``trailing``: those of the keys
    whose weights trail the parameters (:data:`TRAILING_STATE`), left in place by a restore."""
    unknown = [key for key in trailing if key not in state_keys]
    if unknown:
        raise ValueError(f"register_optimizer(trailing={list(trailing)!r}): {unknown} not among state_keys "
                         f"{list(state_keys)!r}; list trailing keys in state_keys too")
    name = f"{optimizer_class.__module__}.{optimizer_class.__qualname__}"
    WEIGHT_SPACE_STATE[name] = tuple(state_keys)
    TRAILING_STATE[name] = tuple(trailing)


def trailing_keys(optimizer: object) -> tuple[str, ...]:
    """The keys of :func:`weight_space_keys` that a restore leaves in place for ``optimizer``."""
    return TRAILING_STATE.get(class_name(optimizer), ())


def weight_space_keys(optimizer: object) -> tuple[str, ...]:
    """The state keys translated with a merge for ``optimizer``; raises for an optimizer PDT
    knows keeps weights elsewhere but has no adapter for."""
    name = class_name(optimizer)
    if name in WEIGHT_SPACE_STATE:
        return WEIGHT_SPACE_STATE[name]
    if not isinstance(optimizer, Optimizer) and name.split(".")[0] in _UNSAFE_PACKAGES:
        raise TypeError(
            f"PDT(optimizer=...): {type(optimizer).__name__} is not a torch.optim.Optimizer; wrap the "
            "schedule-free optimizer itself (e.g. schedulefree.AdamWScheduleFree) instead of a wrapper"
        )
    if name in WEIGHTS_ELSEWHERE:
        raise TypeError(f"PDT(optimizer=...): {type(optimizer).__name__} {WEIGHTS_ELSEWHERE[name]}")
    if name.split(".")[0] in _UNSAFE_PACKAGES or name in _NO_ADAPTER:
        raise TypeError(
            f"PDT(optimizer=...): {name} keeps weights in its state and PDT has no adapter for it, so a "
            "merge would be pulled back; use a registered variant or declare its keys with "
            "pdt_compile.adapters.register_optimizer(cls, state_keys)"
        )
    return ()


_SCHEDULE_FREE_MEASURED = (
    "measured to the schedule-free optimizer's own final loss (python -m benchmarks.ttb --core --peers, "
    "benchmarks/FINDINGS.md 'Time to baseline', run of 2026-12-03 on an AMD EPYC): faster on digits MLPs (1.78-1.92x in wall "
    "time), a mnist1d ViT (1.32x) and a mnist1d CNN (1.26x; over ten seeds two never reached it, --seeds 10, "
    "run of 2026-12-03 07:44), and never on a character transformer (accuracy 0.8 points lower). Report the "
    "loss (opt.report_loss(loss) after each step, or pdt.compile) so that the runaway guard can restore a "
    "run that blows up, and compare with the schedule-free optimizer alone before relying on it"
)
"""What was measured stacking on the schedulefree package's optimizers, which pytorch-optimizer's
schedule-free classes implement too."""

MEASURED_UNSAFE = {
    ("schedulefree", None): _SCHEDULE_FREE_MEASURED,
    **{("pytorch_optimizer", name): _SCHEDULE_FREE_MEASURED
       for name in ("ScheduleFreeSGD", "ScheduleFreeAdamW", "ScheduleFreeRAdam")},
    ("pytorch_optimizer", "Lookahead"): (
        "measured to Lookahead's own final loss (python -m benchmarks.ttb --core --peers, benchmarks/FINDINGS.md "
        "'Time to baseline', run of 2026-12-03 on an AMD EPYC): faster on digits MLPs under SGD and LAMB (1.64x and 1.19x in "
        "wall time) and a mnist1d CNN (1.47x at lr 0.1; at lr 0.2, one step below divergence, five seeds of ten "
        "never reached it on an Intel Xeon, --seeds 10, run of 2026-12-02 22:19), level under Shampoo (1.00x) "
        "and on a character transformer (1.02x), and on a mnist1d ViT one seed of three never reached it. "
        "Compare against Lookahead alone before relying on it"
    ),
    ("pytorch_optimizer", "Lion"): (
        "measured to plain Lion's final training loss (python -m benchmarks.variants --optimizer lion, runs of "
        "2026-12-04; README 'Adam's relatives and Lion'): at a constant rate 1.18x faster in steps on a mnist1d "
        "ViT and 1.00-1.03x on a character transformer (at lr 2.4e-3 four seeds of ten never reached it, final "
        "loss 0.3-0.6 % above); under a cosine schedule 1.03-1.11x, but on the ViT at lr 4e-4 two seeds of three "
        "never did, as plain Lion nudged by a millionth (python -m benchmarks.chaos). Compare against Lion alone "
        "before relying on it"
    ),
}
"""(package, class name or None for every class) -> what was measured, for optimizers PDT stacks
on but, as measured (``benchmarks/stacking.py``, ``benchmarks.ttb --peers``), can make worse:
wrapping one warns."""


WRAP_FIRST = {
    ("accelerate", "AcceleratedOptimizer"): (
        "under gradient accumulation its step() does nothing on the micro-batches before the last, and PDT, "
        "wrapped around it, would count those calls as steps (snap_every in micro-batches, snapshots unevenly "
        "spaced where snap_every is not a multiple of the accumulation steps). Wrap the optimizer with PDT "
        "before accelerator.prepare(...): opt = accelerator.prepare(pdt.PDT(torch.optim.AdamW(...), snap_every=...))"
    ),
}
"""Wrappers PDT should be wrapped by, not wrap: the warning's reason and fix."""


def stacking_warning(optimizer: object) -> str | None:
    """The warning for wrapping ``optimizer``, or None where stacking is not known to hurt."""
    package, name = type(optimizer).__module__.split(".")[0], type(optimizer).__qualname__
    if (package, name) in WRAP_FIRST:
        return f"PDT on {name}: {WRAP_FIRST[(package, name)]}"
    rule = update_rule(optimizer)  # bitsandbytes' Lion warns as the Lion it steps as
    keys = ((package, name), (package, None), (rule.split(".")[0], rule.rsplit(".", 1)[-1]))
    measured = next((MEASURED_UNSAFE[key] for key in keys if key in MEASURED_UNSAFE), None)
    return None if measured is None else f"PDT on {name}: {measured}"


def companions(optimizer: Optimizer, params: Sequence[Tensor], keys: Sequence[str]) -> list[list[Tensor]]:
    """For each parameter, the state tensors of ``keys`` that exist now (created lazily by
    most optimizers at their first step)."""
    out = []
    for p in params:
        state = optimizer.state.get(p, {})
        out.append([state[key] for key in keys if key in state])
    return out


REFERENCE_STATE: dict[str, tuple[str, ...]] = {
    "pytorch_optimizer.optimizer.prodigy.Prodigy": ("p0",),
    "pytorch_optimizer.optimizer.adasmooth.AdaSmooth": ("prev_param",),
    "pytorch_optimizer.optimizer.dadapt.DAdaptSGD": ("x0", "z"),
}
"""``module.qualname`` -> state keys that hold weights and that merges leave where they are on
purpose: an initial point the optimizer measures the distance travelled from (Prodigy's
step-size estimate), or state whose moving did not help (``python -m
benchmarks.unregistered_state``: AdaSmooth's previous weights, D-Adaptation SGD's origin and dual
iterate). PDT does not warn about them (:func:`unmoved_weight_keys`)."""


def unmoved_weight_keys(optimizer: object, params: Sequence[Tensor], moved: Sequence[str]) -> list[str]:
    """:func:`weight_like_keys` that merges leave behind: neither in ``moved`` nor a known
    reference point (:data:`REFERENCE_STATE`)."""
    skip = set(moved) | set(REFERENCE_STATE.get(class_name(optimizer), ()))
    return [key for key in weight_like_keys(optimizer, params) if key not in skip]


WEIGHT_LIKE_DISTANCE = 0.2
"""A state tensor within this fraction of its parameter's mean magnitude of the parameter (mean
absolute difference) holds weights (:func:`weight_like_keys`)."""


def weight_like_keys(optimizer: object, params: Sequence[Tensor]) -> list[str]:
    """Keys of ``optimizer.state`` whose tensors hold weights: tensors of their parameters'
    shape and dtype within :data:`WEIGHT_LIKE_DISTANCE` of their mean magnitude of them (a copy
    of the weights, an average of them, an initial point), for parameters holding most of the
    key's elements. Momentum buffers, moments and other displacements are about as far from the
    weights as the weights are from zero; on a parameter of a few elements (a bias of one) they
    can land near it by chance, hence the majority by elements. Over the 143 optimizer classes
    of ``python -m benchmarks.compatibility`` it names the weight-space state and nothing else.
    State held in a tensor subclass other than a DTensor (torchao's 8-bit, 4-bit and float8
    moments) is left out: it supports only its optimizer's own operations, and holds moments."""
    near: dict[str, int] = {}
    held: dict[str, int] = {}
    state = getattr(optimizer, "state", {})
    for p in params:
        weights = _local(p).detach()
        size = weights.abs().mean()
        for key, value in state.get(p, {}).items():
            if plain_state(value) and value.shape == p.shape and value.dtype == p.dtype:
                held[key] = held.get(key, 0) + weights.numel()
                if bool((_local(value) - weights).abs().mean() < WEIGHT_LIKE_DISTANCE * size):
                    near[key] = near.get(key, 0) + weights.numel()
    return sorted(key for key, count in near.items() if 2 * count > held[key])


def plain_state(value: object) -> bool:
    """Whether ``value`` is a tensor PDT can read as numbers: a plain tensor or a DTensor of
    one, not a wrapper subclass whose elements are coded (torchao's quantized optimizer state)."""
    return isinstance(value, Tensor) and not is_traceable_wrapper_subclass(_local(value))


def readable(value: Tensor) -> Tensor | None:
    """``value`` as numbers PDT can read: itself where it is plain (:func:`plain_state`), its
    decoded copy (of its local shard, for a DTensor) where it is coded and can decode itself
    (torchao's ``dequantize()``), else None."""
    if plain_state(value):
        return value
    decode = getattr(_local(value), "dequantize", None)
    return decode() if callable(decode) else None


ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")
"""State keys of an Adam-family optimizer's first and second moments (torch's Adam, AdamW,
NAdam, RAdam, Adamax has no second; pytorch-optimizer's LAMB, ...): what
``PDTConfig.moment_ratio`` reads."""


def unwrapped(optimizer: object) -> Iterator[object]:
    """``optimizer``, then the optimizer it wraps (``.optimizer``: Lookahead; a sharpness-aware
    optimizer's ``.base_optimizer``), and so on."""
    while optimizer is not None:
        yield optimizer
        optimizer = getattr(optimizer, "base_optimizer" if sharpness_aware(optimizer) else "optimizer", None)


def sharpness_aware(optimizer: object) -> bool:
    """Whether ``optimizer`` takes its update from a base optimizer at a gradient of perturbed
    weights (SAM and its kin: ``first_step``, ``second_step`` and ``base_optimizer``)."""
    return hasattr(optimizer, "second_step") and hasattr(optimizer, "base_optimizer")


def stored_closure(optimizer: object) -> Callable[[], Any] | None:
    """The closure ``optimizer`` keeps for a ``step()`` called without one, where it keeps one
    (GSAM's ``set_closure`` stores ``forward_backward_func``): such a step takes its gradients
    there, so PDT runs it as ``step(closure)`` and its gradient check reads them."""
    closure = getattr(optimizer, "forward_backward_func", None)
    return closure if callable(closure) else None


def chain(optimizer: object) -> tuple[str, ...]:
    """``module.qualname`` of ``optimizer`` and of each optimizer it wraps, in order, as the
    per-optimizer ``"auto"`` settings are keyed; without sharpness-aware wrappers, which
    update as their base optimizer does (SAM over SGD takes SGD's settings: adaptive tau paid
    there, ``benchmarks.sharpness_aware``)."""
    return tuple(update_rule(inner) for inner in unwrapped(optimizer) if not sharpness_aware(inner))


def adam_moments(optimizer: object, params: Sequence[Tensor]) -> list[tuple[Tensor, Tensor] | None]:
    """For each parameter, its (first, second) Adam moments in ``optimizer``'s state, or in the
    optimizer it wraps; None where none keeps them (SGD, schedule-free, or before the first step)
    or where they are coded in a way PDT cannot read. Coded moments (torchao's 8-bit, 4-bit
    and float8 AdamW, bitsandbytes' 8-bit Adam) come decoded: a copy, read, never written."""
    out: list[tuple[Tensor, Tensor] | None] = []
    for p in params:
        found = (_moments_in(inner, p) for inner in unwrapped(optimizer))
        out.append(next((moments for moments in found if moments is not None), None))
    return out


def _moments_in(optimizer: object, p: Tensor) -> tuple[Tensor, Tensor] | None:
    """``p``'s readable Adam moments in ``optimizer``'s own state, or None."""
    state = getattr(optimizer, "state", {}).get(p, {})
    if class_name(optimizer) in BITSANDBYTES_ADAM:
        return bitsandbytes_moments(state)
    if not all(key in state for key in ADAM_MOMENTS):
        return None
    first, second = (readable(state[key]) for key in ADAM_MOMENTS)
    return None if first is None or second is None else (first, second)


def bitsandbytes_names(module: str, name: str, paged: bool = True) -> tuple[str, ...]:
    """``module.qualname`` of bitsandbytes' optimizer ``name`` in every form it ships: 8-bit,
    32-bit or chosen by ``optim_bits`` (what Hugging Face's ``optim="lion_8bit"`` and the like
    build), and ``paged`` versions where it has them."""
    return tuple(f"bitsandbytes.optim.{module}.{prefix}{name}{bits}"
                 for prefix in (("", "Paged") if paged else ("",)) for bits in ("", "8bit", "32bit"))


BITSANDBYTES_ADAM = bitsandbytes_names("adam", "Adam") + bitsandbytes_names("adamw", "AdamW")
"""bitsandbytes' Adam and AdamW (``module.qualname``; paged or not, 8-bit, 32-bit or chosen by
``optim_bits``): their moments are ``state1`` and ``state2``, float32 or, for tensors of
``min_8bit_size`` elements or more in 8 bits, coded in blocks of 256 by ``qmap1``/``qmap2`` with
per-block scales ``absmax1``/``absmax2``."""

BITSANDBYTES_BLOCK = 256
"""The block size of bitsandbytes' 8-bit optimizer state (fixed in its ``Optimizer2State``)."""


def bitsandbytes_moments(state: dict) -> tuple[Tensor, Tensor] | None:
    """A bitsandbytes Adam's (first, second) moments from one parameter's ``state``, decoded
    where they are coded; None before its first step or where the coding is not the one
    :data:`BITSANDBYTES_ADAM` describes (a version that changed its blocks)."""
    if "state1" not in state or "state2" not in state:
        return None
    first, second = state["state1"], state["state2"]
    if first.dtype != torch.uint8:
        return first, second
    decoded = [_blockwise(state, which) for which in ("1", "2")]
    return None if None in decoded else (decoded[0], decoded[1])  # type: ignore[return-value]


def _blockwise(state: dict, which: str) -> Tensor | None:
    """bitsandbytes' 8-bit ``state<which>`` decoded, or None where its scales do not match blocks
    of :data:`BITSANDBYTES_BLOCK`."""
    coded, scales, code = state["state" + which], state.get("absmax" + which), state.get("qmap" + which)
    if scales is None or code is None or scales.numel() != -(-coded.numel() // BITSANDBYTES_BLOCK):
        return None
    from bitsandbytes.functional import dequantize_blockwise

    return dequantize_blockwise(coded, absmax=scales, code=code, blocksize=BITSANDBYTES_BLOCK)


TORCHAO_ADAM = tuple(f"torchao.optim.adam.{name}{bits}" for name in ("Adam", "AdamW") for bits in ("8bit", "4bit", "Fp8"))
"""torchao's Adam and AdamW with moments kept in 8 bits, 4 bits or float8 (``module.qualname``)."""

PACKAGED_ADAMW = tuple(name for name in TORCHAO_ADAM + BITSANDBYTES_ADAM if "AdamW" in name)
"""AdamW as torchao and bitsandbytes implement it, most with coded moments (``module.qualname``):
AdamW's update and decoupled decay, so PDT's ``"auto"`` settings take them as AdamW; measured on
torchao's and bitsandbytes' 8-bit AdamW (benchmarks/FINDINGS.md, round twenty-four)."""


MOMENT_FILTERED = ("torch.optim.adam.Adam", "torch.optim.adamw.AdamW", "torch.optim.nadam.NAdam",
                   "torch.optim.radam.RAdam", *TORCHAO_ADAM, *BITSANDBYTES_ADAM)
"""Optimizers (``module.qualname``, alone or inside a wrapper's ``.optimizer``) on which
``PDTConfig.moment_ratio="auto"`` filters merges by Adam's moments: where it was measured to
pay (benchmarks/FINDINGS.md, "Merges only where Adam's moments see a direction", and "Adam's
relatives: NAdam and RAdam"; torchao's and bitsandbytes' Adam and AdamW, whose moments
PDT reads decoded: round twenty-four); LAMB, whose merges paid less with it, is not among them; nor
SAM over them, where it cost the mnist1d ViT 1.19x -> 1.11x in wall time to SAM's final loss and
0.9 points of test accuracy (``benchmarks.sharpness_aware``)."""


def filters_moments(optimizer: object) -> bool:
    """Whether ``optimizer``, or the optimizer it wraps, is one of :data:`MOMENT_FILTERED`
    (not under a sharpness-aware wrapper)."""
    inners = list(unwrapped(optimizer))
    return not any(map(sharpness_aware, inners)) and any(class_name(inner) in MOMENT_FILTERED for inner in inners)


LION = "pytorch_optimizer.optimizer.lion.Lion"
SGD_NAME = "torch.optim.sgd.SGD"

SAME_UPDATE: dict[str, str] = {
    **{name: LION for name in bitsandbytes_names("lion", "Lion")},
    **{name: SGD_NAME for name in bitsandbytes_names("sgd", "SGD", paged=False)},
}
"""Optimizers (``module.qualname``) -> the measured one whose update they implement, whose
``"auto"`` settings they take: bitsandbytes' Lion steps as pytorch-optimizer's Lion, its SGD
(always with a momentum) as torch's, weight decay included; their 32-bit forms bit for bit
(tested), their 8-bit forms with the momentum coded in 8 bits. Without this, a Lion or SGD from
bitsandbytes (Hugging Face's ``optim="lion_8bit"``, ``"paged_lion_32bit"``, ...) got none of the
settings measured on its update: on the character transformer at a constant rate, Lion without
them never reached plain Lion's final loss (benchmarks/FINDINGS.md, "Lion: no second moment, a
warning"; round twenty-seven for bitsandbytes' 8-bit Lion)."""


def update_rule(optimizer: object) -> str:
    """``module.qualname`` of the optimizer whose update ``optimizer`` implements
    (:data:`SAME_UPDATE`), else its own: what the per-optimizer ``"auto"`` settings read."""
    name = class_name(optimizer)
    return SAME_UPDATE.get(name, name)


SIGN_STEPPED = (LION,)
"""Optimizers (:func:`update_rule`, alone or inside a wrapper's ``.optimizer``) that step every
element by its learning rate, the sign of a momentum, on which ``PDTConfig.saturation="auto"``
filters merges by how much of the most its steps could move an element it moved (benchmarks/FINDINGS.md,
"Lion: no second moment, a warning"); bitsandbytes' Lion too (:data:`SAME_UPDATE`)."""


def steps_by_sign(optimizer: object) -> bool:
    """Whether ``optimizer``, or the optimizer it wraps, is one of :data:`SIGN_STEPPED`."""
    return any(update_rule(inner) in SIGN_STEPPED for inner in unwrapped(optimizer))


TAU_ADAPTED = ((SGD_NAME,), ("pytorch_optimizer.optimizer.lamb.Lamb",),
               ("pytorch_optimizer.optimizer.muon.muon.Muon",),
               ("pytorch_optimizer.optimizer.lookahead.Lookahead", SGD_NAME))
"""Optimizers, as the chain of ``module.qualname`` from the optimizer to the one it wraps
(Lookahead's ``.optimizer``), on which ``PDTConfig.adaptive="auto"`` adapts tau at a constant
rate: where it was measured to pay (benchmarks/FINDINGS.md, "Adaptive tau at a constant rate").
Not the Adam family nor Lion, where it lost seeds; not Lookahead on LAMB, where it lost one of
ten; not Shampoo, where it lost one more of ten to a target first hit by chance; not what was
never measured."""


def adapts_tau(optimizer: object) -> bool:
    """Whether ``optimizer`` (with what it wraps) is one of :data:`TAU_ADAPTED`."""
    return chain(optimizer) in TAU_ADAPTED


RATE_SETTLED = ((SGD_NAME,), ("pytorch_optimizer.optimizer.lookahead.Lookahead", SGD_NAME))
"""Optimizers, as the chain of ``module.qualname`` from the optimizer to the one it wraps
(Lookahead's ``.optimizer``), on which ``PDTConfig.rate_settle="auto"`` lets a rate that
dropped and then held count as a constant rate: where it was measured to pay
(``benchmarks.rate_drop [--peer Lookahead]``; benchmarks/FINDINGS.md, round eleven). Not AdamW,
where it gained nothing and lost a seed of ten on the ViT; not LAMB, where it lost on one seed
of three; not Muon, where it cost the ViT 1.13x -> 1.07x; not what was never measured."""


def settles_rate(optimizer: object) -> bool:
    """Whether ``optimizer`` (with what it wraps) is one of :data:`RATE_SETTLED`."""
    return chain(optimizer) in RATE_SETTLED


MOMENTUM_SPACED = ((SGD_NAME,), ("pytorch_optimizer.optimizer.lamb.Lamb",),
                   ("schedulefree.sgd_schedulefree.SGDScheduleFree",), ("torch.optim.rmsprop.RMSprop",))
"""Optimizers, as the chain of ``module.qualname`` from the optimizer to the one it wraps, whose
momentum sets how close PDT's snapshots may be (``PDTConfig.momentum_spacing="auto"``): torch's
SGD, where snapshots fewer steps apart than its momentum remembers made merges blow runs up,
and LAMB, where they left seeds that never reached the baseline's loss (benchmarks/FINDINGS.md,
"Snapshots closer than the momentum remembers"), and schedule-free SGD, where base-iterate
snapshots 1 and 2 steps apart never reached it on any seed and spacing made them pay
(``benchmarks.short_epochs --more``; FINDINGS, round fourteen), and RMSprop with a momentum,
where snapshots 2, 4 and 8 steps apart left most seeds short of its final loss on digits and
the mnist1d CNN and spacing to 20 steps brought every CNN seed there (``benchmarks.short_epochs
--more``, FINDINGS "RMSprop with momentum"; without a momentum nothing is spaced). Not Shampoo
or Lookahead over SGD (none blew up at short spacings; spacing paid nowhere on Shampoo, and
cost test accuracy on Lookahead), nor AdamW or schedule-free AdamW (spacing paid on the ViT and
cost the character transformer 0.4-0.6 points of test accuracy, FINDINGS round fourteen)."""


def spaces_by_momentum(optimizer: object) -> bool:
    """Whether ``optimizer`` (with what it wraps) is one of :data:`MOMENTUM_SPACED`."""
    return chain(optimizer) in MOMENTUM_SPACED


def momentum_memory(param_groups: Sequence[dict]) -> float | None:
    """Steps a momentum ``m`` remembers, ``1 / (1 - m)`` (SGD's and RMSprop's ``momentum``, the
    first of Adam's ``betas``): the longest over the param groups PDT predicts (not
    ``"pdt": False``); None where none of them has a momentum in (0, 1)."""
    momenta = [float(group["momentum"] if "momentum" in group else group.get("betas", (0.0,))[0])
               for group in param_groups if group.get("pdt", True)]
    momenta = [m for m in momenta if 0.0 < m < 1.0]
    return 1.0 / (1.0 - max(momenta)) if momenta else None


def learning_rates(optimizer: object, params: Sequence[Tensor]) -> list[float | Tensor | None]:
    """Each parameter's learning rate in ``optimizer``'s param groups (or those of the optimizer
    it wraps), None where no group holds it."""
    rates: dict[int, float | Tensor] = {}
    for inner in unwrapped(optimizer):
        for group in getattr(inner, "param_groups", []):
            for p in group["params"]:
                if "lr" in group:
                    rates.setdefault(id(p), group["lr"])
    return [rates.get(id(p)) for p in params]


COUPLED_DECAY = (SGD, RMSprop)
"""Optimizers whose decay through the gradient ``PDTConfig.radial="auto"`` takes back from
jumps, where it was measured to pay (benchmarks/FINDINGS.md, "Merges on a converged plateau");
Adam's (L2) changed nothing there, so it is not among them."""


def coupled_decay(optimizer: object, params: Sequence[Tensor]) -> list[bool]:
    """For each parameter, whether ``torch.optim.SGD`` or ``RMSprop`` (:data:`COUPLED_DECAY`;
    ``optimizer`` or one it wraps) decays it through its gradient (a param group's
    ``weight_decay`` > 0): where ``PDTConfig.radial="auto"`` undoes the inward radial part of
    jumps, as measured (benchmarks/FINDINGS.md, "Merges on a converged plateau")."""
    return _decayed(optimizer, params,
                    lambda inner, group: isinstance(inner, COUPLED_DECAY) or update_rule(inner) == SGD_NAME)


DECOUPLABLE = (Adam, NAdam, RAdam)
"""Adam and its relatives whose ``decoupled_weight_decay=True`` makes them decay as AdamW does."""


DECOUPLED = (AdamW, Muon)
"""torch optimizers that always decay apart from the gradient, ``p *= 1 - lr * weight_decay``:
AdamW, and Muon on the matrices it takes (by default at 0.1), where under a cosine schedule
merges that kept their inward radial part never reached Muon's final loss on the character
transformer and taking it back did (``python -m benchmarks.torch_muon --schedule cosine``;
benchmarks/FINDINGS.md, round twenty-five)."""


def decoupled_decay(optimizer: object, params: Sequence[Tensor]) -> list[bool]:
    """For each parameter, whether one of :data:`DECOUPLED` (torchao's and bitsandbytes' AdamW
    too, :data:`PACKAGED_ADAMW`, or one of :data:`DECOUPLABLE` with
    ``decoupled_weight_decay=True``; ``optimizer`` or one it wraps) decays it apart from the
    gradient (a param group's ``weight_decay`` > 0): where ``PDTConfig.radial="auto"`` undoes the
    inward radial part of jumps while the learning rate decays, as measured
    (benchmarks/FINDINGS.md, "Merges on a converged plateau", "Adam's relatives: NAdam and
    RAdam", and rounds twenty-four and twenty-five)."""
    return _decayed(optimizer, params, lambda inner, group: isinstance(inner, DECOUPLED) or class_name(inner) in PACKAGED_ADAMW or (
        isinstance(inner, DECOUPLABLE) and bool(group.get("decoupled_weight_decay"))))


def _decayed(optimizer: object, params: Sequence[Tensor], kind: Callable[[object, dict], bool]) -> list[bool]:
    """For each parameter, whether a param group with ``weight_decay`` > 0 of ``optimizer`` (or
    one it wraps) holds it where ``kind(inner, group)`` says the decay is of that kind."""
    decayed: set[int] = set()
    for inner in unwrapped(optimizer):
        for group in getattr(inner, "param_groups", []):
            if group.get("weight_decay", 0) and kind(inner, group):
                decayed.update(id(p) for p in group["params"])
    return [id(p) in decayed for p in params]
