"""Every knob of Predictive Differential Training, validated in one place.

Defaults follow the paper (projected linear DMD on h = 5 snapshots) except the mask rule, the
rank, the trend filter, tau and the decay window, where benchmarks/RESULTS.md measured a better
choice (see those fields); :meth:`PDTConfig.paper` gives the paper's exact configuration.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, TypedDict, Union, get_args

import torch
from typing_extensions import Unpack

# The values each named choice takes: one Literal each, for type checkers, IDEs and jsonargparse,
# and the tuple of its values that validation and error messages read.
Rule = Literal["paper", "reference", "accel_only", "consistency_only", "none"]
Granularity = Literal["tensor", "model"]
Dynamics = Literal["linear", "affine"]
Modes = Literal["projected", "exact"]
AfterMerge = Literal["shift", "keep", "reset"]
Radial = Literal["auto", "keep", "inward", "undo"]
Averages = Literal["stay", "move"]
RankName = Literal["gavish_donoho", "full"]
RingDtype = Literal["float32", "bfloat16"]
RingLocation = Literal["device", "host"]
Kernels = Literal["auto", "inductor", "torch", "graph"]
Auto = Literal["auto"]

RULES: tuple[str, ...] = get_args(Rule)
GRANULARITIES: tuple[str, ...] = get_args(Granularity)
DYNAMICS: tuple[str, ...] = get_args(Dynamics)
MODES: tuple[str, ...] = get_args(Modes)
AFTER_MERGE: tuple[str, ...] = get_args(AfterMerge)
RADIAL: tuple[str, ...] = get_args(Radial)
AVERAGES: tuple[str, ...] = get_args(Averages)
RANK_NAMES: tuple[str, ...] = get_args(RankName)
RING_DTYPES: tuple[str, ...] = get_args(RingDtype)
RING_LOCATIONS: tuple[str, ...] = get_args(RingLocation)
KERNELS: tuple[str, ...] = get_args(Kernels)

Rank = Union[RankName, int, float]

if TYPE_CHECKING:
    RingDtypeArg = Union[RingDtype, torch.dtype]
else:
    # What PDTConfig.ring_dtype takes: its names, or the torch dtypes of those names. At run time
    # the annotation reads the names alone: OmegaConf (Hydra) and jsonargparse (LightningCLI)
    # build configs from it and take no torch type, and a config file names a dtype anyway.
    RingDtypeArg = RingDtype


def _fail(field: str, value: Any, allowed: str) -> None:
    raise ValueError(f"PDTConfig.{field}={value!r} is invalid: {allowed}")


def _share_or_auto(field: str, value: Any, example: str, why: str) -> float | Auto | None:
    """``value`` of a field that is None, "auto" or a float in (0, 1] (as a float); else fail."""
    if value is None:
        return None
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        _fail(field, value, f'expected None, "auto" or a float in (0, 1] (e.g. {example}): {why}')
    return float(value)


def _check_int(field: str, value: Any, low: int, high: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bound = f"between {low} and {high}" if high != math.inf else f">= {low}"
        _fail(field, value, f"expected an int {bound}")


def _check_choice(field: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(field, value, f"expected one of {choices}")


@dataclass
class PDTConfig:
    """Configuration of PDT. Only ``snap_every`` is required."""

    snap_every: int
    """Optimizer steps between two snapshots (a *boundary*). The paper snapshots once per
    epoch: set it to the number of steps in an epoch to reproduce it."""

    history: int = 5
    """Snapshots kept in the ring (h). h snapshots give h - 1 transition pairs."""

    tau: int = 8
    """Prediction horizon in intervals: merges jump to the prediction tau intervals ahead of
    the last snapshot. The adaptive schedule moves it within [tau_min, tau_max]. Default 8
    (the paper: 5): with the trend filter the accepted jumps are reliable enough that jumping
    farther pays (benchmarks/RESULTS.md; without the filter, tau = 8 was worse than 5)."""

    burn_in: int = 5
    """Boundaries before the first prediction (the ring must also be full)."""

    tau_ramp: int | None = None
    """Horizon of the first merge; each merge doubles it until it reaches tau (1: 1, 2, 4, 8);
    ``None`` jumps tau ahead from the first merge. The first merges come in the fast early
    descent, where a long jump can set a run back for good. Measured (benchmarks/tau_ramp.py,
    14 task x schedule/peer cells, 3 seeds): 1 removes the seeds that never reached the target
    on mnist1d with Lookahead (its first merge set it back) and on LAMB under
    cosine, but loses one on the ViT (constant rate) and on Shampoo, and costs 5-15 % of the
    step gain where early merges pay (digits 2.11x -> 2.00x, digits on schedule-free 1.74x ->
    1.54x): not the default."""

    predict_every: int = 1
    """Predict at every ``predict_every``-th boundary once burn-in is over."""

    rule: Rule = "reference"
    """Dynamic-consistency rule: ``"paper"`` (the paper's equations), ``"reference"`` (the
    authors' released code), ``"accel_only"``, ``"consistency_only"``, or ``"none"``
    (every finite prediction is accepted: non-selective Koopman training). Default
    ``"reference"``: with full rank it reached the tuned baseline sooner than the paper's rule
    on 4 of 5 benchmark tasks (benchmarks/RESULTS.md, time to baseline)."""

    trend: bool = True
    """Also require every stored snapshot to lie behind the current weights in the direction
    the optimizer last moved each element (:func:`pdt_compile.mask.trend_mask`): filters
    elements whose recent path is noise (not in the paper). Measured (benchmarks/RESULTS.md,
    merge anatomy): accepted jumps agree in sign with the optimizer's own later motion more
    often (0.53 -> 0.65 on the AdamW transformer, 0.63 -> 0.82 on mnist1d) and a merge no
    longer costs 10-20 % loss right after it. Alone (tau = 5) it passes fewer elements and is
    no faster; with tau = 8 it was faster than the unfiltered tau = 5 on every task."""

    drift: float | None = None
    """Also require that each element's path, from the oldest snapshot through the ring to the
    current weights, drift more than it wanders: net displacement above ``drift`` times the
    root of its summed squared steps (:func:`pdt_compile.mask.ring_drift_mask`; a steady drift
    over the ring's h steps scores sqrt(h), a random walk about 1). A per-element noise estimate
    from the ring itself (not in the paper). ``None`` (default): off. Must lie in
    (0, sqrt(history)). Measured (``python -m benchmarks.variants --variants drift``, 3 seeds,
    2026-12-02; benchmarks/FINDINGS.md, "Merges only where the path drifts"): 1.5 made the
    mnist1d ViT on AdamW a little faster (cosine, six seeds: median 1.38x -> 1.41x in steps, one
    seed slower) and rescued a seed that never reached the constant-rate baseline, but cost
    where merges pay (digits with SGD and LAMB, the mnist1d CNN; on schedule-free one CNN seed
    ran away), lost a seed on the ViT with Lookahead and with schedule-free AdamW, and gained
    nothing on the character transformer: the wandering elements it drops carry part of the
    gain on most tasks. A prediction took 1.5-1.9x as long on the CPU (benchmarks/overhead.py)."""

    moment_ratio: float | Auto | None = "auto"
    """On an optimizer that keeps Adam moments (``exp_avg`` and ``exp_avg_sq``: Adam, AdamW,
    LAMB, ..., also inside Lookahead), keep a merge's jump only where the first moment m and the
    second v say the gradient has a direction, ``|m| >= moment_ratio * sqrt(v)``
    (:func:`pdt_compile.mask.moment_mask`); elsewhere the element keeps the optimizer's value
    (``stats.moment_filtered`` counts them). Only at a constant or rising learning rate: in the
    decay of a schedule (the rate below its peak) every accepted element jumps. Why: late in a
    run at a constant rate an adaptive optimizer's steps stay of the order of its learning rate
    however small the gradient's mean becomes, so for most elements the displacement the mask
    compares against is noise, which a jump extrapolates tau times; |m| / sqrt(v), Adam's own
    estimate of the gradient's signal-to-noise ratio, is about 0.16 (median) for pure noise at
    beta1 = 0.9. While the rate decays the noise shrinks with it, and the same elements carry
    the gain. A per-element noise estimate from the optimizer (issue 11): one pass over the
    moments at a merge, no loss. ``"auto"`` (default): 0.3 on Adam, AdamW, NAdam and RAdam,
    torchao's and bitsandbytes' Adam and AdamW, whose 8-bit moments it reads decoded
    (:data:`pdt_compile.adapters.MOMENT_FILTERED`), else off; ``None``: off. Measured
    (``python -m benchmarks.variants --variants 'moment ratio'``, 2026-12-02 on an Intel Xeon;
    benchmarks/FINDINGS.md, "Merges only where Adam's moments see a direction"): at a constant
    rate 0.3 took the mnist1d ViT on AdamW from two seeds of six that never reached the
    baseline's final loss to one, and on Lookahead from three of three to one, left the
    character transformer as it was, and cost on LAMB (median 1.27x -> 1.08x in steps); under
    cosine, applied throughout, it cost the ViT (seed 0: 1.36x -> 1.09x) and LAMB."""

    saturation: float | Auto | None = "auto"
    """On an optimizer that steps every element by its learning rate, the sign of a momentum
    (Lion), keep a merge's jump only where the last interval moved the element by at least this
    share of the most its steps could, ``|d| >= saturation * snap_every * lr``
    (:func:`pdt_compile.mask.saturation_mask`); elsewhere the element keeps the optimizer's value
    (``stats.saturation_filtered`` counts them). Why: such an optimizer moves every element by
    the rate each step whatever its gradient's signal, so what it moved over an interval is
    mostly noise where the sign keeps flipping, and a jump extrapolates it; the share it kept of
    its steps is the per-element noise estimate it gives for free, as Adam's moments are
    Adam's (``moment_ratio``; Lion keeps no second moment). At every learning rate.
    ``"auto"`` (default): 0.5 on :data:`pdt_compile.adapters.SIGN_STEPPED` (pytorch-optimizer's
    Lion, and bitsandbytes', 8-bit or not: :data:`pdt_compile.adapters.SAME_UPDATE`), else off;
    ``None``: off. Measured (``python -m benchmarks.variants --optimizer lion
    --variants saturation``, 2026-12-04; benchmarks/FINDINGS.md, "Lion: no second moment, a
    warning"): on a mnist1d ViT under cosine at lr 8e-4 it took three seeds that never reached
    plain Lion's final loss to three that did, but at lr 4e-4 lost two of three that did; at a
    constant rate it kept the gain (median 1.35x -> 1.45x in steps); on a character transformer
    it lowered the final loss's excess over Lion's at two rates of three without removing it.
    Lion still warns."""

    granularity: Granularity = "tensor"
    """``"tensor"``: one DMD per parameter tensor; ``"model"``: all parameters as one vector."""

    rank: Rank = "full"
    """Truncation rank of the DMD: ``"gavish_donoho"`` (optimal hard threshold, as PyDMD's
    ``svd_rank=0``; the paper), ``"full"``, an int >= 1 (fixed rank), or a float in (0, 1)
    (fraction of the energy kept). Default ``"full"``: with h - 1 = 4 singular values the
    Gavish-Donoho threshold keeps 1 or 2 modes, and full rank (with the mask) was faster to
    the baseline on 4 of 5 tasks (benchmarks/RESULTS.md)."""

    modes: Modes = "projected"
    """``"projected"`` (U Ã^k Uᵀ s, real arithmetic) or ``"exact"`` DMD modes."""

    dynamics: Dynamics = "linear"
    """``"linear"``: DMD of the raw weights (the paper). ``"affine"``: DMD of successive
    displacements (a Koopman model with a constant observable; needs history >= 3). Measured
    (benchmarks/FINDINGS.md): with tau 5 it was faster on a ViT at a constant rate (1.16x in
    steps against 1.03x) and slower or no faster on the CNN, the digits MLP and the character
    transformer, so it is not the default."""

    after_merge: AfterMerge = "shift"
    """What happens to the ring after a merge: ``"shift"`` translates every stored snapshot
    by the applied jump (the trajectory stays smooth), ``"keep"`` leaves it, ``"reset"``
    clears it (burn-in starts again)."""

    radial: Radial = "auto"
    """What a merge does with the radial part of each tensor's jump: the part along the tensor
    (over the elements the jump moves), which changes its norm rather than turning it
    (:func:`pdt_compile.radial.radial_part`). ``"keep"`` merges it as predicted; ``"inward"``
    takes it back, from the weights, the snapshots and what moves with them, where it shrinks
    the tensor; ``"undo"`` takes it back always; ``"auto"`` (default): ``"inward"`` on the
    parameters ``torch.optim.SGD`` (or bitsandbytes' SGD) or ``RMSprop`` decays through their
    gradient (weight decay > 0, :func:`pdt_compile.adapters.coupled_decay`), and on those
    ``torch.optim.AdamW`` or ``Muon``
    (torchao's and bitsandbytes' AdamW, or Adam, NAdam, RAdam with ``decoupled_weight_decay=True``)
    decays apart from it
    (:func:`pdt_compile.adapters.decoupled_decay`) while the learning rate decays (below its
    peak, as :attr:`decay_window` reads it), ``"undo"`` on Lion (:func:`pdt_compile.adapters.steps_by_sign`)
    while it does not decay, ``"keep"`` on the rest. Such decay pulls
    every tensor inward: SGD descends the loss plus the decay's penalty, and once the loss has
    reached the floor a constant rate allows it keeps trading loss for smaller norms, a trade
    a jump would extrapolate several intervals ahead (benchmarks/FINDINGS.md, "Merges on a
    converged plateau"). Measured (``python -m benchmarks.plateau --methods 'radial=,every
    tensor'``, and with ``--lr 0.02``, runs of 2026-12-03 18:12, a CNN on digits, SGD momentum
    0.9, Nesterov, weight decay 5e-4, 24 epochs at a constant rate, 3 seeds): at lr
    0.1, where the loss reaches its floor, the defaults before this option left the training
    loss over the second half of the run 2.3-11.8x the plain run's with BatchNorm and
    2.3-6.1x without; ``"inward"`` leaves it below the plain run's. At lr 0.02, where the loss
    falls to the end, ``"inward"`` keeps the merges' gain, where ``"undo"`` costs most of it
    without BatchNorm (1.33x -> 1.04x in steps). RMSprop alike (``--optimizer rmsprop``, 8
    seeds, 2026-12-04): with BatchNorm the second half's loss 0.87-1.12x the plain run's ->
    0.64-0.81x at lr 1e-3, 1.06-2.59x -> 0.67-1.88x at lr 0.01 (accuracy down to -5.6 -> -1.4
    points); Adam's L2 decay changed about nothing at lr 1e-3. Without weight decay the
    inward part is part of the gain (the same network without BatchNorm at lr 0.1:
    ``"inward"`` lost a seed), hence ``"auto"``. AdamW's decoupled decay shrinks by
    ``lr * weight_decay`` a step, which a falling rate slows while a jump extrapolates it as
    it was: ``"inward"`` under cosine took the
    mnist1d ViT from 1.33x to 1.46x in steps to the baseline's final loss (every seed faster)
    and left the character transformer at 1.08x, where at a constant rate it cost both
    (``python -m benchmarks.variants --variants 'radial inward'``, 2026-12-03). torch's Muon
    (its default decay 0.1 on the matrices) beside AdamW under cosine: the character transformer
    never reached the pair's final loss with the jumps as predicted (3 seeds of 3) and reached
    it 1.03x sooner in steps on eight of ten with the inward part taken back (``python -m
    benchmarks.torch_muon --schedule cosine``, 2026-12-07). On Lion at a
    constant rate the outward part is what harms: the character transformer (lr 2.4e-3) never
    reached plain Lion's final loss with the jumps as predicted (+4.3 to +5.9 %), nor with the
    inward part undone, and with every radial part undone reaches it at 1.00x on three seeds of
    three (-0.2 to -0.5 %; over ten seeds on six, the others 0.3-0.6 % above, as close as a
    nudge of a millionth leaves plain Lion), where the mnist1d ViT (lr 5e-5) pays less, 1.18x against 1.45x, every seed
    ending below Lion's loss; under cosine undoing cost the ViT a seed (lr 2e-4) and changed
    nothing on the transformer, hence only at a constant rate (``python -m benchmarks.variants
    --optimizer lion --variants 'radial undo (every'``, 2026-12-04; benchmarks/FINDINGS.md,
    "Lion: no second moment, a warning")."""

    adaptive: bool | Auto = "auto"
    """Adapt tau from the reported training loss: after each merge, halve it (down to
    ``tau_min``) when the mean loss of the interval after the merge exceeds the mean of the
    interval before it by more than ``loss_tolerance``, else add one (up to ``tau_max``). Needs
    the loss (``PDT.report_loss``, ``PDT.step(closure)`` or a ``@pdt.compile`` step that returns
    it; the Lightning and Hugging Face integrations report it). ``"auto"`` (default from
    2026-12-05): adapt while the learning rate holds at its peak (a constant or rising rate, the
    stable phase of a warmup-stable-decay schedule) and predict ``tau`` intervals ahead while it
    decays, where ``decay_window`` chooses when to merge, on the optimizers where that was
    measured to pay (:data:`pdt_compile.adapters.TAU_ADAPTED`: torch's SGD, alone or inside
    Lookahead, pytorch-optimizer's LAMB and Muon); elsewhere, and without reported losses, tau
    stays ``tau`` (without losses no warning, but ``str(opt.stats)`` says so). ``True``: adapt
    at every rate, on any optimizer (and warn when no loss is reported). ``False``: tau fixed
    (the default before 2026-12-05).
    Measured for ``"auto"`` at a constant rate (``python -m benchmarks.variants --variants
    'adaptive auto (as' --seeds 10``, steps to the baseline's final loss, median [min-max] over
    ten seeds, 2026-12-05): the mnist1d CNN 1.43x [1.28-1.54] -> 1.46x [1.36-1.76], LAMB 1.34x
    [1.00-1.63] -> 1.45x [1.15-1.77], digits with SGD 2.11x [1.90-2.22] -> 2.43x [2.22-2.67],
    the CNN inside Lookahead 1.43x -> 1.52x, every seed reaching the target. Where it stays off:
    on Shampoo 1.03x -> 1.09x with seeds below 0.98x 3 -> 4 of 10 (a 1e-6 floor whose first hit
    is chance); LAMB inside Lookahead 1.33x -> 1.27x with one seed of ten never; on AdamW it lost
    the mnist1d ViT 3 seeds of 10 (none with tau fixed: tau grown to 16 early, a late jump set
    AdamW's loss swinging as the plain run's does; capped at ``tau`` it gained nothing there); on
    Lion the character transformer 3 seeds of 3 (tau fixed: 1.00x on each); on schedule-free SGD
    the mnist1d CNN (1.40, 1.33, 1.36 -> 1.20, never, 1.20). On Muon it took the same steps or
    fewer (the ViT at a median 1.58x either way, its final loss lower on every seed; the
    character transformer 1.25x -> 1.26x). Adapted under cosine it cost LAMB a seed, hence
    fixed while the rate decays. On a regression whose loss swings on a noisy plateau it halves
    the harm of long jumps (``python -m benchmarks.regression``). benchmarks/FINDINGS.md,
    "Adaptive tau at a constant rate"."""

    tau_min: int = 1
    """Smallest tau the adaptive schedule may choose."""

    tau_max: int | None = None
    """Largest tau the adaptive schedule may choose; ``None`` means ``2 * tau``."""

    loss_tolerance: float = 0.1
    """Adaptive schedule: relative rise of the interval loss after a merge that still counts as
    'paid off' (0.1: a rise of up to 10 %; 0.0, the default before 2026-12-05: any rise halves
    tau). The interval after a merge holds the optimizer's own swings, on which 0.0 halves tau:
    on the diabetes regression at lr 0.003 adaptive tau reached the plain run's final loss
    1.25-1.28x sooner in steps with 0.0 and 2.21-2.46x with 0.1 or more, against 2.03-2.14x with
    tau fixed; on a noisy plateau 0.3 and more let long jumps lift the loss 1.5-7x over the plain
    run's where 0.1 keeps it level (``python -m benchmarks.regression``, 2026-12-05)."""

    setback_limit: float | None = None
    """Hold predictions back where merges set the training loss back. After each merge, PDT
    takes the log of the mean of the q = max(1, snap_every // 4) training losses reported
    right after it over the mean of the q reported right before it
    (:func:`pdt_compile.runtime.schedule.setback`); when that log ratio, averaged over the
    last :data:`~pdt_compile.runtime.schedule.SETBACK_MERGES` merges, exceeds
    ``setback_limit``, the next 2^k prediction boundaries only take snapshots (k: holds
    called before, ``stats.setbacks``; spells only grow, so where merges keep setting the
    loss back PDT backs off for good). A merge whose own log ratio exceeds
    :data:`~pdt_compile.runtime.schedule.SETBACK_UNDO` times the limit is also undone, q
    steps after it (``stats.setback_undos``; one jump per parameter is kept for that). A
    merge that pays lowers the loss, one that overshoots raises it, and the optimizer's own
    progress over q steps is small beside either. No forward pass: it reads the losses the
    training step computes anyway. Needs a positive loss (cross-entropy, MSE), reported
    (``PDT.report_loss``, ``step(closure)`` or a ``@pdt.compile`` step that returns it);
    without it, nothing is held. ``None`` (default): off. Measured (``python -m
    benchmarks.setbacks``, 2026-11-30, README "Merges that set the loss back"): 0.3 saved the
    seed of the mnist1d CNN on schedule-free that never reached its loss, changed nothing on
    digits with SGD, the ViT or the character transformer, and cost where merges pay (digits on
    schedule-free, LAMB under cosine): a merge's setback right after it is a weak sign of harm."""

    loss_hold: float | None = None
    """Hold predictions while the training loss is up: at a boundary where the mean training
    loss reported over the interval exceeds ``loss_hold`` times the lowest interval mean so far,
    PDT only takes the snapshot (``stats.loss_holds``). A run at a constant rate near the edge
    of stability spikes and recovers by itself; a prediction fitted to that recovery
    extrapolates a transient, not a trend. Needs the loss reported (as ``runaway_factor``);
    without it, nothing is held. ``None`` (default): off. Measured (``python -m
    benchmarks.variants --variants 'loss hold'``, 3 seeds per task and peer, 2026-12-02 on an
    Intel Xeon; benchmarks/FINDINGS.md, "Holding predictions while the loss is up"): 2 saved
    the seed of the mnist1d CNN on schedule-free that never reached its target and a slow seed
    of the CNN at a constant rate, changed nothing on digits with SGD, the CNN under cosine and
    on Lookahead or the ViT under cosine, and lost a seed on the ViT at a constant rate (lr
    0.001) and on LAMB under cosine; 3 changed almost nothing."""

    gradient_limit: float | None = 4.0
    """Undo a merge that the optimizer's next gradient rejects: when the norm of the gradient at
    the merged weights (the next training step's, computed anyway) exceeds ``gradient_limit``
    times the mean norm of the q = max(1, snap_every // 4) gradients before the merge, PDT
    moves the weights (and what moved with them) back and zeroes that gradient, so that the
    optimizer takes that step without it (momentum and weight decay still act)
    (:mod:`pdt_compile.runtime.gradient_check`; ``stats.gradient_undos``,
    ``stats.gradient_surges``). A merge that leaves the valley the optimizer follows raises the
    gradient many-fold at once; an adaptive optimizer, its second moment tuned to the small
    gradients of late training, then takes steps far larger than its own. Costs one gradient
    norm in the last q steps of each interval that can end in a prediction (none while a decay
    is far above ``decay_window``); needs no loss; under ``@pdt.compile`` decided on the device,
    and read on the host at the next boundary. Undone merges in a row hold predictions back
    (``verify_backoff``). ``None``: off. Measured (``python -m benchmarks.gradient_check``,
    every task and peer at its tuned rate, 3 seeds, 2026-11-30; README "Merges the next gradient
    rejects"): 4 brought every seed that never reached its target there except one (LAMB under
    cosine, the mnist1d CNN on schedule-free and on Lookahead, two of three on the ViT with
    Lookahead), changed nothing where no merge surges (digits with SGD, the character
    transformer, the ViT under cosine), and cost on LAMB at a constant rate (one seed 1.60x ->
    1.18x in steps); 8 rescued fewer."""

    rollback_factor: float | None = None
    """Roll a merge back when the first loss reported after it exceeds the last loss
    before it by more than this factor (e.g. 1.5); ``None`` disables rollback. Every such
    factor (this, ``loss_hold``, ``runaway_factor``, ``1 + loss_tolerance``) measures a rise
    from the reference's magnitude, so losses below zero rise by the same fraction before they
    count (:func:`pdt_compile.runtime.schedule.exceeds`); under ``maximize=True`` PDT reads the
    negation of what is reported."""

    runaway_factor: float | Auto | None = "auto"
    """Guard against a run that blows up: when two training losses in a row exceed this
    factor times the largest of the 40 reported before them but the newest 10 (or are not
    finite; from 20 reported on; the newest 10 are left out so that a loss growing by less
    than the factor a step cannot raise what it is compared with as fast as it grows:
    :data:`~pdt_compile.runtime.schedule.RUNAWAY_LAG`), the optimizer has run away, and PDT
    moves the tracked weights, and what is tied to them (schedule-free's y), back to the
    newest snapshot taken before those losses, forgets the other snapshots and burns in again
    (``stats.runaways``), so that it does not extrapolate the runaway. Weights that trail them
    (Lookahead's slow weights, averages registered with ``PDT.move_with_merges``;
    :data:`pdt_compile.adapters.TRAILING_STATE`) stay where they are. One loss alone is a
    spike the optimizer settles by itself. Each of the first three runaways doubles the factor
    for the next (then 8x; :data:`~pdt_compile.runtime.schedule.RUNAWAY_DOUBLINGS`), so that
    PDT does not fight the optimizer's own oscillations at the edge of stability and still calls
    a blow-up after many. Once a
    loss after a restore is back at what the losses were before the runaway, those stand in as
    the reference until 20 new ones are in, so a blow-up right after a restore that worked is
    called at once; while the loss stays up, the guard waits for 20 new ones.
    Optimizer state other than weights (momentum, Adam's moments) is left as it is. Needs the
    loss (``PDT.report_loss`` or a ``@pdt.compile`` step that returns it; then one host read
    per step, or per :attr:`loss_reads` steps). ``None`` turns it off; ``"auto"`` (default):
    3.0 on a schedule-free optimizer with :attr:`averages` ``"stay"`` (where
    ``benchmarks/blowups.py`` measured it), else off."""

    loss_reads: int | Auto = "auto"
    """How many loss tensors PDT reads on the host at once (``PDT.report_loss``; always before
    the next snapshot) where only the runaway guard, adaptive tau and ``loss_hold`` read them
    (``rollback_factor`` and ``setback_limit`` read each at once): 1 reads each at
    once; more turns a device synchronisation every step into one per batch, and acts on a
    runaway up to that many steps late, from the same snapshot. ``"auto"`` (default): 1 for
    losses on the CPU, where a read costs microseconds and nothing waits, 16 on an
    accelerator. Measured on the CPU (``benchmarks/FINDINGS.md``, "the cost of a prediction"):
    16 saved about a point of training time on schedule-free, within noise, and the mnist1d CNN
    on schedule-free SGD, whose seed 0 runs away, reached its target later (1.33x in steps
    against 1.36x), likely because a late restore lets the average x take in more of the
    runaway before z moves back."""

    verify_backtracks: int = 2
    """With ``PDT(..., verify=...)``: how many times a merge that raises the verify loss is
    halved before it is undone (2: try 1, 1/2 and 1/4 of the jump)."""

    verify_backoff: int = 16
    """After r >= 2 merges in a row that verification (``PDT(..., verify=...)``) undid, skip the
    next min(2^(r-2), ``verify_backoff``) prediction boundaries (snapshots go on), so where merges
    do not pay, verifying them costs a few evaluations, not a few per boundary; merges the
    gradient check (``gradient_limit``) undoes hold boundaries back the same way from the
    fourth in a row (:data:`~pdt_compile.runtime.schedule.GRADIENT_STREAK`: each costs a
    training step, its gradient dropped; on full-batch SGD with momentum near its minimum the
    check undid 40-44 of 44-45 merges per seed on a function fit, ``python -m
    benchmarks.full_batch``). A merge that stands ends a streak; 0 predicts at every boundary.
    Measured for verification
    (benchmarks/ttb.py --core before the decay window, 6 tasks x 2 schedules; the run of
    2026-11-28 13:42 in benchmarks/RESULTS.md at commit ded202f): 16 reached the baseline's loss sooner
    than 0 in 6 cells (the ViT, LAMB, Shampoo), later in 4 (digits at a constant rate, the
    mnist1d CNN, the character transformer at a constant rate), and missed it in 5 seeds in
    all against 6."""

    lr_horizon: bool = False
    """Shorten the horizon while the learning rate falls: with the rate now r times what it
    was at the previous boundary (r < 1), predict at most sum_{k<=tau} r^k intervals ahead,
    and not at all below one (the end of a cosine or linear decay). No effect at a constant
    or rising rate."""

    decay_window: float | None = 0.5
    """While the learning rate is below the highest it has been at a boundary (a decaying
    schedule: cosine, linear, step), predict only once it is at most ``decay_window`` times
    that peak; snapshots go on. A constant or rising rate (warmup, the stable phase of a
    warmup-stable-decay schedule) is not affected. ``None`` predicts at every rate. Why:
    merges made early in a decay, at the high rate a cosine schedule is tuned to, cost more
    loss than the optimizer made up. Measured (benchmarks/ttb.py --core, cosine, wall time to
    the tuned cosine baseline's final loss): the mnist1d CNN never -> 1.38x, the character
    transformer never -> 0.96x (1.00x in steps), at the price of digits 2.33x -> 1.62x and
    the ViT 1.31x -> 1.27x (benchmarks/RESULTS.md; benchmarks/late_merges.py)."""

    rate_settle: int | Auto | None = "auto"
    """Boundaries in a row at one unchanged learning rate after which that rate counts as the
    peak :attr:`decay_window` reads: a schedule that falls to a rate and stays there (the next
    stage of a step schedule, ``SWALR``'s constant SWA rate, ``ReduceLROnPlateau``) starts a
    constant-rate phase, where PDT predicts as at any constant rate, once the ring holds only
    snapshots at that rate (5, the default ``history``). A decay that moves the rate at every
    boundary (per-step cosine, or a per-epoch schedule with a snapshot per epoch) never settles.
    ``None``: the peak is the highest rate of the run, and a rate that stays above
    ``decay_window`` of it holds predictions for the rest of training (``stats.decay_holds``
    counts them). ``"auto"``: 5 on SGD and on Lookahead over SGD, None elsewhere. Measured (``python -m
    benchmarks.rate_drop``: the rate falls to 0.7 of itself a third of the way and holds, each
    baseline tuned there; runs at a56ba33): the mnist1d CNN on SGD with momentum 1.09x -> 1.44x
    in wall time to the baseline's final loss (None -> 5), digits on SGD unchanged (reached
    before the rate settles), on Lookahead over SGD digits 1.55x -> 1.67x and the CNN from one
    seed of three never reaching the target to 1.43x; on AdamW no gain (the character transformer 1.05x -> 1.04x) and,
    on the ViT over ten seeds, three seeds that never reach the target against two; on LAMB one
    seed of three 1.19x -> 1.07x; on Muon the ViT 1.13x -> 1.07x (benchmarks/FINDINGS.md, round
    eleven)."""

    sequence: str = "auto"
    """Which weight sequence PDT snapshots, predicts and merges: ``"parameters"`` (what the
    model trains with), a weight-space state key of the wrapped optimizer
    (:mod:`pdt_compile.adapters`; ``"z"`` for schedule-free's base iterate, ``"x"`` for its
    average in the reference variants), or ``"auto"``: the base iterate where
    :attr:`averages` is ``"stay"`` on a schedule-free optimizer, else the parameters. Every
    other weight-space tensor, the parameters included, moves with the jump."""

    averages: Averages = "stay"
    """On an optimizer whose evaluation weights are a running average of its iterates
    (schedule-free: x, the average of z; :data:`pdt_compile.adapters.AVERAGING`): ``"stay"``
    predicts and jumps the base iterate z and leaves the average where it is (the parameters,
    y = (1 - beta) z + beta x, move by (1 - beta) of the jump); ``"move"`` translates z, x and
    the parameters by the same jump. Why ``"stay"``: a jump added to x stays in the evaluated
    weights for the rest of training, while the optimizer corrects a wrong jump of z within a
    few steps (measured in benchmarks/stacking.py). No effect on other optimizers."""

    base_spacing: float = 0.5
    """Where :attr:`averages` is ``"stay"`` on a schedule-free optimizer: PDT snapshots the
    base iterate z every ``base_spacing * snap_every`` steps (at least 1); tau and the other
    horizons still count ``snap_every`` intervals (:meth:`spaced`: tau 8 at 0.5 predicts 16
    of the shorter intervals ahead). Default 0.5: z, driven by a schedule-free learning rate
    several times the plain optimizer's, is fitted better from snapshots half an epoch apart
    (benchmarks/stacking.py, time to the schedule-free optimizer's final loss: mnist1d CNN
    1.33x in steps on every seed against 1.17x with one seed of three never at 1.0, digits
    1.74x against 1.60x in steps, the character transformer reached on 2 seeds of 3 against
    none; 0.25 was slower on all three; those runs counted tau in the shorter intervals).
    Counting tau in ``snap_every`` intervals, from 2026-11-29 21:42, jumps twice as far
    (``python -m benchmarks.ttb --peers --peer schedule-free``, run of 22:14, against the run
    of 18:00, wall time to the schedule-free optimizer's final loss): digits 1.32x -> 1.86x,
    the ViT 1.08x -> 1.49x, LAMB's task 1.54x -> 2.53x, Shampoo's 1.40x -> 2.09x; the mnist1d
    CNN 1.22x -> one seed of three never (the others 1.01x and 1.28x; 3 of 10 never against
    1 of 10 over ten seeds, benchmarks/stacking.py, run of 22:28), the character transformer
    never either way (accuracy 0.8 points below schedule-free's, 0.2 before). 1.0 keeps
    ``snap_every`` exactly. No effect on other optimizers."""

    momentum_spacing: float | Auto | None = "auto"
    """Keep snapshots at least ``momentum_spacing / (1 - m)`` steps apart, ``1 / (1 - m)`` being
    the steps the optimizer's momentum ``m`` remembers (SGD's ``momentum``, the first of Adam's
    or LAMB's ``betas``; 10 at 0.9): where ``snap_every`` is shorter, PDT snapshots that many
    steps apart instead, with a warning, and tau counts those intervals. Why: snapshots closer
    than the momentum remembers see its transients, and merges fitted to them blew runs up that
    the optimizer alone trained; a little further apart they were safe but cost about what they
    saved (``python -m benchmarks.short_epochs``; benchmarks/FINDINGS.md, "Snapshots closer than
    the momentum remembers"). A short epoch (a small data set, full-batch training) makes such a
    ``snap_every``. ``None`` keeps ``snap_every`` as given; ``"auto"`` (default): 2.0 where it
    was measured (:data:`pdt_compile.adapters.MOMENTUM_SPACED`: torch's SGD and RMSprop, LAMB,
    schedule-free SGD; chosen from 1, 2 and 4 by ``benchmarks.short_epochs --spacings 2 --factors 1,2,4``), None
    elsewhere. The momentum read is the largest of the predicted param groups' when PDT is built."""

    ring_dtype: RingDtypeArg = "float32"
    """Storage of the snapshot ring: ``"float32"`` (4h bytes per parameter element) or
    ``"bfloat16"`` (the newest snapshot in float32 plus the h - 1 interval displacements in
    bfloat16: 4 + 2(h - 1) bytes); ``torch.float32`` and ``torch.bfloat16`` are taken as these
    names. Under ``@pdt.compile`` its boundary work runs after the
    compiled optimizer step, through the eager path's code."""

    ring_location: RingLocation = "device"
    """Where the ring lives: ``"device"`` (the parameters' device; default) or ``"host"``
    (pinned host memory with asynchronous copies: no ring bytes on the accelerator; each
    prediction streams the ring to the device and back; float32 ring). Under ``@pdt.compile``
    its boundary work runs after the compiled optimizer step, through the eager path's code."""

    kernels: Kernels = "auto"
    """How the eager path runs a prediction's two passes (Gram; forecast + mask + merge +
    ring update): ``"inductor"`` compiles them once per configuration into fused kernels
    (C++/OpenMP on the CPU, Triton on CUDA; the same functions ``@pdt.compile`` inlines),
    ``"torch"`` runs them as plain torch on chunks, ``"auto"`` compiles on the CPU and on CUDA
    when the tracked parameters hold at least 2**20 elements and a compiler is there (below
    that a prediction costs milliseconds and compiling would cost more; on an H200 at 18.9M
    parameters the compiled passes took 1.1 ms of GPU time against plain torch's 7.4 ms:
    benchmarks/gpu_check.py). Float32 device ring only; the bfloat16 and host rings stream
    plain-torch chunks. ``"graph"`` runs each prediction as one compiled graph, the prediction
    graph ``@pdt.compile`` builds for a fused optimizer (the optimizer step itself stays eager,
    a capture is one foreach copy; the graph is compiled at the first prediction): one call a
    prediction rather than a few per parameter, and the accepted counts stay on the device
    until the next boundary, for accelerators, where the per-parameter calls bind the eager path
    to the host. Its graphs
    unroll the maths for every tensor: on a 2-core CPU a 98-tensor model's prediction graph took
    234 s to compile (benchmarks/boundary_graphs.py). Float32 device ring (the followers of
    :meth:`~pdt_compile.PDT.followers` move inside the merge graph); elsewhere as ``"inductor"``.
    Under ``@pdt.compile``: ``"graph"`` compiles the boundaries into graphs (captures fused into
    the optimizer step, the prediction), ``"inductor"`` and ``"torch"`` run them after the
    compiled optimizer step through those kernels, and ``"auto"`` compiles graphs except on the
    CPU past 16 tensors (:func:`pdt_compile.api.boundaries_in_graphs`)."""

    chunk_size: int | None = None
    """Elements per streamed chunk in the eager path. ``None``: 65536 on the CPU (keeps the
    intermediates in cache; measured in benchmarks/overhead.py) and 2**21 on an accelerator,
    where each chunk costs ~40 kernel launches and small chunks would be launch-bound (its
    intermediates then take ~(tau_max + h) x 8 MB)."""

    history_limit: int | None = 1000
    """Entries each of the stats' histories keeps, the latest (``opt.stats.mask_ratio_history``,
    ``tau_history``, ``gradient_surges``, ``verify_loss_change``; the counters and the mean mask
    ratio cover the whole run). Bounds what a long run's checkpoints carry: torch's flattened
    layout repeats PDT's state string once per parameter (``benchmarks/checkpoint_size.py``).
    ``None`` keeps every entry; for a whole run's curve, log ``opt.stats`` as it goes
    (:mod:`pdt_compile.integrations.tensorboard`)."""

    def __post_init__(self) -> None:
        _check_int("snap_every", self.snap_every, 1)
        _check_int("history", self.history, 2, 64)
        _check_int("tau", self.tau, 1, 1000)
        _check_int("burn_in", self.burn_in, 0)
        if self.tau_ramp is not None:
            _check_int("tau_ramp", self.tau_ramp, 1, self.tau)
        _check_int("verify_backtracks", self.verify_backtracks, 0, 30)
        _check_int("verify_backoff", self.verify_backoff, 0)
        _check_int("predict_every", self.predict_every, 1)
        _check_choice("rule", self.rule, RULES)
        _check_choice("granularity", self.granularity, GRANULARITIES)
        _check_choice("modes", self.modes, MODES)
        _check_choice("dynamics", self.dynamics, DYNAMICS)
        _check_choice("after_merge", self.after_merge, AFTER_MERGE)
        _check_choice("radial", self.radial, RADIAL)
        _check_choice("averages", self.averages, AVERAGES)
        named = str(self.ring_dtype).removeprefix("torch.")  # torch.bfloat16, as a user writes it
        if isinstance(self.ring_dtype, torch.dtype) and named in RING_DTYPES:  # else the error names the dtype given
            self.ring_dtype = named  # type: ignore[assignment]  # one of RING_DTYPES: checked below
        _check_choice("ring_dtype", self.ring_dtype, RING_DTYPES)
        _check_choice("ring_location", self.ring_location, RING_LOCATIONS)
        _check_choice("kernels", self.kernels, KERNELS)
        if not isinstance(self.sequence, str) or not self.sequence:
            _fail("sequence", self.sequence, '"auto", "parameters" or a weight-space state key such as "z"')
        if self.ring_location == "host" and self.ring_dtype != "float32":
            _fail("ring_dtype", self.ring_dtype, 'ring_location="host" keeps a float32 ring: use ring_dtype="float32"')
        for flag in ("trend", "lr_horizon"):
            if not isinstance(getattr(self, flag), bool):
                _fail(flag, getattr(self, flag), "expected True or False")
        if not (isinstance(self.adaptive, bool) or self.adaptive == "auto"):
            _fail("adaptive", self.adaptive, 'expected "auto", True or False')
        if self.drift is not None:
            if isinstance(self.drift, bool) or not isinstance(self.drift, (int, float)) or not (
                0 < self.drift < math.sqrt(self.history)
            ):
                _fail("drift", self.drift, f"expected None or a float in (0, sqrt(history) = {math.sqrt(self.history):.3g}): "
                      "a path of h steps scores at most sqrt(h), so a larger threshold passes nothing")
            self.drift = float(self.drift)
        self.moment_ratio = _share_or_auto("moment_ratio", self.moment_ratio, "0.3", "|m| / sqrt(v) is at most about 1")
        self.saturation = _share_or_auto("saturation", self.saturation, "0.5",
                                         "an interval moves an element by at most its steps' most")
        if self.dynamics == "affine" and self.history < 3:
            _fail("history", self.history, 'dynamics="affine" needs history >= 3')
        _check_rank(self.rank)
        _check_int("tau_min", self.tau_min, 1, self.tau)
        if self.tau_max is None:
            self.tau_max = 2 * self.tau
        _check_int("tau_max", self.tau_max, self.tau, 1000)
        if not isinstance(self.loss_tolerance, (int, float)) or not 0 <= self.loss_tolerance:
            _fail("loss_tolerance", self.loss_tolerance, "expected a float >= 0")
        if self.rollback_factor is not None and (
            not isinstance(self.rollback_factor, (int, float)) or not self.rollback_factor > 1
        ):
            _fail("rollback_factor", self.rollback_factor, "expected None or a float > 1")
        if self.gradient_limit is not None and (
            isinstance(self.gradient_limit, bool) or not isinstance(self.gradient_limit, (int, float))
            or not 1 < self.gradient_limit < math.inf
        ):
            _fail("gradient_limit", self.gradient_limit, "expected None or a finite float > 1 (e.g. 4.0)")
        if self.setback_limit is not None and (
            isinstance(self.setback_limit, bool) or not isinstance(self.setback_limit, (int, float))
            or not math.isfinite(self.setback_limit)
        ):
            _fail("setback_limit", self.setback_limit, "expected None or a finite float (e.g. 0.3)")
        if self.loss_hold is not None and (
            isinstance(self.loss_hold, bool) or not isinstance(self.loss_hold, (int, float))
            or not 1 < self.loss_hold < math.inf
        ):
            _fail("loss_hold", self.loss_hold, "expected None or a finite float > 1 (e.g. 2.0)")
        if self.runaway_factor not in (None, "auto") and (
            isinstance(self.runaway_factor, bool) or not isinstance(self.runaway_factor, (int, float))
            or not self.runaway_factor > 1
        ):
            _fail("runaway_factor", self.runaway_factor, 'expected None, "auto" or a float > 1 (e.g. 3.0)')
        if self.loss_reads != "auto":
            _check_int("loss_reads", self.loss_reads, 1, 4096)
        if self.decay_window is not None and (
            isinstance(self.decay_window, bool) or not isinstance(self.decay_window, (int, float))
            or not 0 < self.decay_window <= 1
        ):
            _fail("decay_window", self.decay_window, "expected None or a float in (0, 1] (e.g. 0.5: merge below half the peak rate)")
        if self.rate_settle not in (None, "auto") and (
            isinstance(self.rate_settle, bool) or not isinstance(self.rate_settle, int) or self.rate_settle < 1
        ):
            _fail("rate_settle", self.rate_settle, 'expected None, "auto" or an int >= 1 (e.g. 5: boundaries at one rate)')
        if self.momentum_spacing not in (None, "auto") and (
            isinstance(self.momentum_spacing, bool) or not isinstance(self.momentum_spacing, (int, float))
            or not 0 < self.momentum_spacing <= 100
        ):
            _fail("momentum_spacing", self.momentum_spacing,
                  'expected None, "auto" or a float in (0, 100] (e.g. 1.0: as many steps as the momentum remembers)')
        if self.chunk_size is not None:
            _check_int("chunk_size", self.chunk_size, 1024)
        if self.history_limit is not None and (
            isinstance(self.history_limit, bool) or not isinstance(self.history_limit, int) or self.history_limit < 1
        ):
            _fail("history_limit", self.history_limit, "expected None (keep every entry) or an int >= 1 (e.g. 1000)")
        if isinstance(self.base_spacing, bool) or not isinstance(self.base_spacing, (int, float)) or not (
            0 < self.base_spacing <= 1
        ):
            _fail("base_spacing", self.base_spacing, "expected a float in (0, 1] (1.0: snapshot z every snap_every steps)")

    @classmethod
    def paper(cls, snap_every: int, **changes: Any) -> "PDTConfig":
        """The paper's configuration: its mask equations, the Gavish-Donoho rank, tau = 5 (fixed,
        as the suite has measured it since 2026-11-28), no trend filter and predictions at every
        learning rate."""
        return cls(snap_every=snap_every, **{"rule": "paper", "rank": "gavish_donoho", "tau": 5, "trend": False,
                                             "decay_window": None, "adaptive": False, **changes})

    def dmd_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`pdt_compile.dmd.displacement_coefficients`."""
        return {"rank": self.rank, "modes": self.modes, "dynamics": self.dynamics}

    def chunk_for(self, device: Any) -> int:
        """Elements per eager chunk on ``device`` (see :attr:`chunk_size`)."""
        if self.chunk_size is not None:
            return self.chunk_size
        return 1 << 16 if getattr(device, "type", device) == "cpu" else 1 << 21

    def spaced(self, spacing: float) -> "PDTConfig":
        """This configuration with snapshots every ``spacing * snap_every`` steps (at least 1)
        and its horizons (``tau``, ``tau_min``, ``tau_max``, ``tau_ramp``) counting the
        shorter intervals, scaled so that each reaches as many steps ahead as before: a
        horizon is set in ``snap_every`` intervals whatever the spacing PDT snapshots at."""
        snap_every = max(1, round(self.snap_every * spacing))
        factor = self.snap_every / snap_every
        scaled = lambda horizon: None if horizon is None else min(1000, max(1, round(horizon * factor)))
        return self.replace(snap_every=snap_every, tau=scaled(self.tau), tau_min=scaled(self.tau_min),
                            tau_max=scaled(self.tau_max), tau_ramp=scaled(self.tau_ramp), base_spacing=1.0)

    def momentum_spaced(self, memory: float | None) -> "PDTConfig":
        """This configuration with ``snap_every`` raised to :attr:`momentum_spacing` times
        ``memory``, the steps a momentum remembers (rounded up), where it is shorter; unchanged
        without a ``memory`` or with ``momentum_spacing`` None."""
        if memory is None or not isinstance(self.momentum_spacing, (int, float)):
            return self
        steps = math.ceil(round(self.momentum_spacing * memory, 6))
        return self.replace(snap_every=steps) if steps > self.snap_every else self

    def replace(self, **changes: Unpack[PDTOptions]) -> "PDTConfig":
        """A copy with ``changes`` applied (validated again). A ``tau_max`` at its default,
        ``2 * tau``, follows a new ``tau`` unless ``changes`` sets it too."""
        check_option_names(changes, "PDTConfig.replace")
        if "tau" in changes and "tau_max" not in changes and self.tau_max == 2 * self.tau:
            changes = {**changes, "tau_max": None}
        return dataclasses.replace(self, **changes)


class PDTOptions(TypedDict, total=False):
    """:class:`PDTConfig`'s fields as keyword options (``pdt.PDT(opt, snap_every=..., tau=...)``),
    for type checkers and IDEs: a misspelt option or a value of the wrong type shows before the
    run (``tests/test_config.py`` keeps the two alike). See :class:`PDTConfig` for each."""

    snap_every: int
    history: int
    tau: int
    burn_in: int
    tau_ramp: int | None
    predict_every: int
    rule: Rule
    trend: bool
    drift: float | None
    moment_ratio: float | Auto | None
    saturation: float | Auto | None
    granularity: Granularity
    rank: Rank
    modes: Modes
    dynamics: Dynamics
    after_merge: AfterMerge
    radial: Radial
    adaptive: bool | Auto
    tau_min: int
    tau_max: int | None
    loss_tolerance: float
    setback_limit: float | None
    loss_hold: float | None
    gradient_limit: float | None
    rollback_factor: float | None
    runaway_factor: float | Auto | None
    loss_reads: int | Auto
    verify_backtracks: int
    verify_backoff: int
    lr_horizon: bool
    decay_window: float | None
    rate_settle: int | Auto | None
    sequence: str
    averages: Averages
    base_spacing: float
    momentum_spacing: float | Auto | None
    ring_dtype: RingDtypeArg
    ring_location: RingLocation
    kernels: Kernels
    chunk_size: int | None
    history_limit: int | None


def binds(fn: Callable[..., Any], *args: Any) -> bool:
    """Whether ``fn(*args)`` matches ``fn``'s signature (True where it cannot be read): a
    callback checked when it is handed over rather than when it is first called."""
    try:
        inspect.signature(fn).bind(*args)
    except TypeError:
        return False
    except ValueError:
        return True
    return True


def check_option_names(options: Mapping[str, Any], where: str) -> None:
    """Raise for an option that is not a :class:`PDTConfig` field, naming the closest one (a
    typo would otherwise read as a missing ``snap_every`` or a bare dataclass error)."""
    fields = [field.name for field in dataclasses.fields(PDTConfig)]
    for name in options:
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the options are PDTConfig's fields: {', '.join(fields)}"
            raise TypeError(f"{where}: unknown option {name!r}; {hint}")


def _check_rank(rank: Any) -> None:
    if isinstance(rank, str):
        if rank in RANK_NAMES:
            return
    elif isinstance(rank, bool):
        pass
    elif isinstance(rank, int):
        if rank >= 1:
            return
    elif isinstance(rank, float):
        if 0.0 < rank < 1.0:
            return
    _fail("rank", rank, f"expected one of {RANK_NAMES}, an int >= 1 or a float in (0, 1)")
