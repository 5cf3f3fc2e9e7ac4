"""When to snapshot and predict, and how far: a small state machine driven by steps and losses."""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ..config import PDTConfig


class Phase(enum.IntEnum):
    """What the runtime does after an optimizer step."""

    ORDINARY = 0  # nothing
    CAPTURE = 1  # boundary: write a snapshot
    PREDICT = 2  # prediction boundary: forecast, mask, merge, then snapshot


PEAK_TOLERANCE = 1e-6
"""A learning rate within this relative distance of its peak counts as the peak: schedulers
that recompute a constant rate (``ConstantLR``'s ``lr / factor``) land a rounding error below it."""

WINDOW_MARGIN = 0.25
"""In a decay, a rate above ``1 + WINDOW_MARGIN`` times ``decay_window`` of the peak, seen
during an interval, says its boundary will not predict (:meth:`Schedule.may_predict_next`): a
smooth decay (cosine, linear) does not fall that far within one interval."""


def _same_rate(lr: float | None, before: float | None) -> bool:
    """Whether two boundaries' learning rates are one rate (within :data:`PEAK_TOLERANCE`)."""
    return lr is not None and before is not None and abs(lr - before) <= PEAK_TOLERANCE * max(abs(lr), abs(before))


def lr_horizon(tau: int, ratio: float) -> int:
    """How many intervals ahead to predict when the learning rate fell by ``ratio`` (now /
    at the previous boundary) over the last interval: the optimizer would move about
    sum_k ratio^k intervals' worth over the next tau if the fall went on, so no further,
    rounded (tau itself when the rate is constant or rising; 0, no prediction, below one
    interval)."""
    ratio = min(1.0, max(0.0, ratio))
    if ratio == 1.0:
        return tau
    reach = ratio * (1 - ratio**tau) / (1 - ratio)
    return 0 if reach < 1 else min(tau, round(reach))


RUNAWAY_WINDOW = 40
"""Reported losses a runaway is compared with (``PDTConfig.runaway_factor``)."""

RUNAWAY_MIN = 20
"""Reported losses needed before a runaway is called."""

RUNAWAY_LAG = 10
"""The newest reported losses that the loss a runaway is compared with leaves out. Were they in
it, a loss growing by less than the factor at each step would raise the reference as fast as it
grows and never be called: on the mnist1d CNN on schedule-free SGD (seed 4, lr 1.6) a third
blow-up went from 0.215 to 163 in five steps, 1.6-7.7x a step, each loss under the factor of 12
times the one before it, and left the network at 74 % accuracy (``python -m
benchmarks.runaway_trace --task 'mnist1d CNN / SGD-momentum' --peer schedule-free --lr 1.6 --seed 4
--steps 1170-1186`` at 5db7713, and ``benchmarks.trajectory``). Left out, a runaway must grow by
the factor over this many steps."""


RUNAWAY_DOUBLINGS = 3
"""Runaways that double the factor the next one must exceed; later ones keep it (8x). Past that
the doubling let repeated blow-ups through: the mnist1d CNN on schedule-free SGD (lr 1.6, seed 7,
verified merges) blew up again and again after its restores, by the seventh runaway the factor
was 384, a rise to 210 times the reference passed uncalled and the run ended at 56 % test
accuracy; with the factor held at 24 from the fourth runaway the guard called 36 runaways over
the run and it ended at 92 % (``python -m benchmarks.runaway_trace --task 'mnist1d CNN /
SGD-momentum' --peer schedule-free --lr 1.6 --seed 7 --verify``; benchmarks/FINDINGS.md)."""


def runaway_threshold(factor: float, runaways: int) -> float:
    """The factor over its reference that the next loss must exceed to be called a runaway,
    after ``runaways`` of them: ``factor`` doubled at each of the first :data:`RUNAWAY_DOUBLINGS`."""
    return factor * 2 ** min(runaways, RUNAWAY_DOUBLINGS)


def runaway_reference(recent: Sequence[float]) -> float | None:
    """The loss a runaway is compared with: the largest of the ``recent`` losses but the newest
    :data:`RUNAWAY_LAG`; None before :data:`RUNAWAY_MIN` are in. The largest, not a mean:
    batch losses near convergence are heavy-tailed, and a runaway outgrows them all."""
    if len(recent) < RUNAWAY_MIN:
        return None
    return max(recent[: len(recent) - RUNAWAY_LAG])


def ran_away(recent: Sequence[float], loss: float, factor: float) -> bool:
    """Whether ``loss`` says the run blew up: not finite, or over ``factor`` times
    :func:`runaway_reference` of the ``recent`` losses (once there is one)."""
    return over_reference(loss, runaway_reference(recent), factor)


def exceeds(loss: float, reference: float, factor: float) -> bool:
    """Whether ``loss`` is over ``factor`` times ``reference``, the excess measured from the
    reference by its magnitude: ``loss > reference + (factor - 1) * |reference|``, which is
    ``loss > factor * reference`` for a reference >= 0. Losses below zero (a Gaussian
    negative log-likelihood, an objective negated under ``maximize=True``) then rise by the
    same fraction before they count, where ``factor * reference`` would lie below a negative
    reference and call every loss a rise."""
    if reference >= 0:
        return loss > factor * reference
    return loss > reference - (factor - 1.0) * reference


def over_reference(loss: float, reference: float | None, factor: float) -> bool:
    """Whether ``loss`` is not finite or over ``factor`` times ``reference`` (:func:`exceeds`);
    never without one."""
    if reference is None:
        return False
    return not math.isfinite(loss) or exceeds(loss, reference, factor)


SETBACK_MERGES = 3
"""Merges whose setbacks are averaged (``PDTConfig.setback_limit``): one alone is mostly the
noise of a few batch losses."""

SETBACK_UNDO = 3.0
"""A merge whose own setback exceeds this times ``setback_limit`` is undone: at the limit of
0.3, above every merge's setback on digits with SGD, the ViT and the character transformer
(at most 0.75, ``python -m benchmarks.setbacks``, 2026-11-30)."""


def setback_window(snap_every: int) -> int:
    """q: the losses on each side of a merge that :func:`setback` compares."""
    return max(1, snap_every // 4)


def setback(before: Sequence[float], after: Sequence[float]) -> float | None:
    """How far a merge set the training loss back: log(mean(after) / mean(before)), with
    ``before`` the losses reported right before it and ``after`` right after it; positive
    when the loss rose. A non-finite loss after it is an infinite setback. None when the
    ratio has no meaning (no losses, a loss before it that is not positive and finite)."""
    if not before or not after:
        return None
    mean_before, mean_after = sum(before) / len(before), sum(after) / len(after)
    if not (math.isfinite(mean_before) and mean_before > 0) or mean_after < 0:
        return None
    if not math.isfinite(mean_after):
        return math.inf
    return math.log(mean_after / mean_before) if mean_after > 0 else -math.inf


GRADIENT_STREAK = 4
"""Merges the gradient check undoes in a row before it holds predictions back. Each undone merge
costs a training step (its gradient is dropped); where merges keep leaving the valley (full-batch
SGD with momentum near its minimum: 40 of 45 undone on a function fit) the holds save most of
those steps. On minibatch training a few undone merges in a row are followed by merges that pay:
holding from the second cost the mnist1d CNN at a constant rate 1.45x -> 1.38x in steps, from the
fourth 1.41x (median of ten seeds; ``python -m benchmarks.variants --only 'mnist1d CNN /
SGD-momentum, constant' --variants 'undo backoff'``, benchmarks/FINDINGS.md, "Full-batch
training")."""


@dataclass
class Schedule:
    """Counters and the adaptive horizon. Decisions depend only on the counters (and the
    reported losses), so the eager and compiled paths, and a resumed run, agree exactly."""

    config: PDTConfig
    steps: int = 0
    boundaries: int = 0
    boundaries_since_reset: int = 0
    boundaries_since_prediction: int = 0
    tau: int = 0
    interval_loss_sum: float = 0.0
    interval_loss_count: int = 0
    loss_before_merge: float | None = None
    """The mean loss of the interval before the last merge, until the interval after it judges it
    (``PDTConfig.adaptive``)."""
    loss_at_prediction: float | None = None
    """The same for a prediction whose merge is not known yet (a compiled step that reads its
    counts at the next boundary): :meth:`merged_at` makes it :attr:`loss_before_merge`."""
    last_merge_step: int | None = None
    merge_loss: float | None = None
    lr_at_boundary: float | None = None
    rejected_in_a_row: int = 0
    """Verified merges undone in a row (``PDTConfig.verify_backoff``)."""
    gradient_undone_in_a_row: int = 0
    """Merges the gradient check undid in a row (:meth:`record_gradient_check`)."""
    held_boundaries: int = 0
    """Prediction boundaries still to skip after those rejections."""
    peak_lr: float = 0.0
    """The highest learning rate seen at a boundary since the rate last settled
    (``PDTConfig.decay_window``, ``PDTConfig.rate_settle``)."""
    steady_boundaries: int = 0
    """Boundaries in a row, up to the last, whose learning rate was the boundary's before
    (``PDTConfig.rate_settle``)."""
    decay_holds: int = 0
    """Prediction boundaries that only took a snapshot because the rate was decaying above
    ``PDTConfig.decay_window`` of its peak."""
    decaying: bool = False
    """Whether the learning rate at the last boundary was below that peak: the decay of a
    schedule (``PDTConfig.moment_ratio`` filters merges only outside it)."""
    horizon: int = 0
    """The horizon of the prediction about to run (``tau``, or less early on,
    :attr:`PDTConfig.tau_ramp`, or where the learning rate is falling: :func:`lr_horizon`)."""
    merges: int = 0
    """Predictions that changed weights so far (``PDTConfig.tau_ramp``)."""
    recent_losses: list[float] = field(default_factory=list)
    """The last :data:`RUNAWAY_WINDOW` reported losses (``PDTConfig.runaway_factor``)."""
    runaways: int = 0
    """Runaways so far: each doubles the factor the next one must exceed."""
    suspect: float | None = None
    """A reported loss over the runaway threshold, awaiting the next one (``runaway``)."""
    sound_reference: float | None = None
    """The loss the last runaway was compared with: what the losses were before it
    (``runaway``)."""
    restore_settled: bool = False
    """Whether a reported loss has come back to :attr:`sound_reference` since the last restore."""
    recent_window: list[float] = field(default_factory=list)
    """The last 2q reported losses (``PDTConfig.setback_limit``)."""
    setback_pending: int | None = None
    """Losses still to come before the last merge is judged (its own, computed before it,
    then q after it); None when no merge awaits judgement."""
    setbacks_recent: list[float] = field(default_factory=list)
    """The setbacks of the last :data:`SETBACK_MERGES` merges."""
    lowest_interval_loss: float | None = None
    """The lowest mean training loss of an interval so far (``PDTConfig.loss_hold``)."""
    loss_holds: int = 0
    """Prediction boundaries skipped because the loss was up (``PDTConfig.loss_hold``)."""
    setbacks: int = 0
    """Holds called so far (``PDTConfig.setback_limit``): the next lasts 2^setbacks boundaries."""

    def __post_init__(self) -> None:
        if self.tau == 0:
            self.tau = self.config.tau
        if self.horizon == 0:
            self.horizon = self.tau

    def boundary_next(self) -> bool:
        """Whether the step about to run ends an interval."""
        return (self.steps + 1) % self.config.snap_every == 0

    def next_phase(self, ring_count: int, lr: float | None = None, judged: bool = True) -> Phase:
        """The phase of the step about to complete (known before it runs). ``lr``: the
        learning rate it runs at (sets :attr:`horizon` when ``config.lr_horizon``; holds
        predictions within ``config.decay_window``). ``judged``: False where a merge at this
        boundary could not be judged (the gradient check took no norms before it, on the word
        of :meth:`may_predict_next`): it captures only, and the next boundary may predict."""
        if (self.steps + 1) % self.config.snap_every:
            return Phase.ORDINARY
        ready = self._ready(ring_count)
        if lr is not None:
            self.peak_lr = lr if self._settled(lr) else max(self.peak_lr, lr)
            self.decaying = lr < self.peak_lr * (1 - PEAK_TOLERANCE)
        if self._decaying_above_window(lr):
            self.decay_holds += ready
            return Phase.CAPTURE
        if ready and self.held_boundaries:
            self.held_boundaries -= 1
            return Phase.CAPTURE
        if ready and self._loss_up():
            self.loss_holds += 1
            return Phase.CAPTURE
        if not judged:
            return Phase.CAPTURE
        tau = self.horizon = self.tau if self.adapts() else self.config.tau
        if self.config.tau_ramp is not None:  # past tau.bit_length() doublings the ramp is over
            self.horizon = min(tau, self.config.tau_ramp << min(self.merges, tau.bit_length()))
        if ready and self.config.lr_horizon and lr is not None and self.lr_at_boundary:
            self.horizon = min(self.horizon, lr_horizon(tau, lr / self.lr_at_boundary))
        return Phase.PREDICT if ready and self.horizon >= 1 else Phase.CAPTURE

    def _settled(self, lr: float) -> bool:
        """Whether ``lr``, the rate at the boundary about to complete, makes
        ``config.rate_settle`` boundaries in a row at one rate."""
        settle = self.config.rate_settle  # "auto" is resolved by PDT; a schedule alone leaves it off
        return isinstance(settle, int) and _same_rate(lr, self.lr_at_boundary) and self.steady_boundaries + 1 >= settle

    def _ready(self, ring_count: int) -> bool:
        """Whether the ring and the counters allow a prediction at the next boundary."""
        return (
            ring_count >= self.config.history
            and self.boundaries_since_reset >= self.config.burn_in
            and self.boundaries_since_prediction + 1 >= self.config.predict_every
        )

    def _loss_up(self) -> bool:
        """Whether the interval's mean reported loss so far exceeds ``loss_hold`` times the
        lowest interval mean before it."""
        factor, lowest = self.config.loss_hold, self.lowest_interval_loss
        if factor is None or lowest is None or not self.interval_loss_count:
            return False
        return exceeds(self.interval_loss_sum / self.interval_loss_count, lowest, factor)

    def may_predict_next(self, ring_count: int, lr: float | None = None) -> bool:
        """False when the next boundary will capture only: the ring still filling, burn-in,
        ``predict_every``, a hold (what those depend on moves only at boundaries, and between
        them only towards no prediction: a reset, a new hold), or, given the learning rate now
        (``lr``), a decay still far above ``decay_window`` (:data:`WINDOW_MARGIN`), which only
        a sudden drop (a step schedule) brings into the window by the boundary. True does not
        promise a prediction (the learning rate decides the rest at the boundary)."""
        settling = lr is not None and self._settled(lr)  # the boundary will make lr the peak: no decay
        return (self._ready(ring_count) and not self.held_boundaries
                and (settling or not self._decaying_above_window(lr, margin=1 + WINDOW_MARGIN)))

    def _decaying_above_window(self, lr: float | None, margin: float = 1.0) -> bool:
        """Whether ``lr`` has fallen below its peak but not yet to ``margin`` times
        ``decay_window`` of it."""
        window = self.config.decay_window
        if window is None or lr is None:
            return False
        return window * margin * self.peak_lr < lr < self.peak_lr * (1 - PEAK_TOLERANCE)

    def commit(self, phase: Phase, merged: bool, ring_reset: bool, lr: float | None = None) -> None:
        """Advance the counters after ``phase`` ran; ``merged``: the prediction changed
        weights; ``lr``: the learning rate the step ran at."""
        self.steps += 1
        if phase == Phase.ORDINARY:
            return
        self.boundaries += 1
        self.steady_boundaries = self.steady_boundaries + 1 if _same_rate(lr, self.lr_at_boundary) else 0
        self.lr_at_boundary = lr
        self.boundaries_since_reset = 0 if ring_reset else self.boundaries_since_reset + 1
        if phase == Phase.PREDICT:
            self.boundaries_since_prediction = 0
        else:
            self.boundaries_since_prediction += 1
        self._adapt(merged, predicted=phase == Phase.PREDICT)
        if merged:
            self.merged_at(self.steps)
            self.merge_loss = None

    def merged_at(self, step: int) -> None:
        """The prediction at ``step`` changed weights (known at once on the eager path, at the
        next boundary on a compiled one that defers its host reads)."""
        self.merges += 1
        self.last_merge_step = step
        if self.loss_at_prediction is not None:
            self.loss_before_merge, self.loss_at_prediction = self.loss_at_prediction, None
        if self.config.setback_limit is not None:
            self.setback_pending = setback_window(self.config.snap_every) + 1

    def adapts(self) -> bool:
        """Whether tau adapts now (``PDTConfig.adaptive``): ``True`` always, ``"auto"`` while the
        learning rate is not decaying."""
        return self.config.adaptive is True or (self.config.adaptive == "auto" and not self.decaying)

    def _adapt(self, merged: bool, predicted: bool) -> None:
        mean = self.interval_loss_sum / self.interval_loss_count if self.interval_loss_count else None
        self.interval_loss_sum, self.interval_loss_count = 0.0, 0
        if mean is not None and (self.lowest_interval_loss is None or mean < self.lowest_interval_loss):
            self.lowest_interval_loss = mean
        if mean is None or not self.adapts():
            self.loss_before_merge = self.loss_at_prediction = None
            return
        if self.loss_before_merge is not None:
            if exceeds(mean, self.loss_before_merge, 1.0 + self.config.loss_tolerance):
                self.shrink()
            else:
                self.tau = min(self.config.tau_max, self.tau + 1)
        self.loss_before_merge = mean if merged else None
        self.loss_at_prediction = mean if predicted and not merged else None

    def record_verification(self, kept: bool) -> None:
        """A verified merge stood (``kept``) or was undone: count the streak of undone ones
        and, from two in a row, hold predictions back by min(2^(streak-2), ``verify_backoff``)
        boundaries."""
        self.rejected_in_a_row = 0 if kept else self.rejected_in_a_row + 1
        self._hold_after(self.rejected_in_a_row, 2)

    def record_gradient_check(self, kept: bool) -> None:
        """A merge the gradient check let stand (``kept``) or undid: from the
        :data:`GRADIENT_STREAK`-th undone merge in a row, the r-th holds predictions back by
        min(2^(r - GRADIENT_STREAK), ``verify_backoff``) boundaries, as undone verified merges
        do from the second."""
        self.gradient_undone_in_a_row = 0 if kept else self.gradient_undone_in_a_row + 1
        self._hold_after(self.gradient_undone_in_a_row, GRADIENT_STREAK)

    def _hold_after(self, streak: int, first: int) -> None:
        """From the ``first``-th undone merge in a row on, hold the next
        min(2^(streak - first), ``verify_backoff``) prediction boundaries back."""
        if streak >= first:
            self.held_boundaries = min(2 ** (streak - first), self.config.verify_backoff)

    def shrink(self) -> None:
        """Halve tau (within tau_min): the last merge did not pay off."""
        self.tau = max(self.config.tau_min, self.tau // 2)

    def runaway(self, loss: float) -> bool:
        """Record a reported loss for ``PDTConfig.runaway_factor``; True when it says the run
        blew up: two losses in a row over the factor times the largest of the window before
        them (one alone is a spike the optimizer settles by itself; a runaway grows). The
        factor then doubles for the next one, up to :data:`RUNAWAY_DOUBLINGS` times: one that
        recurs soon after a restore may be the optimizer's own oscillation at the edge of
        stability, which a restore would only start again, but a factor doubled without end
        lets real blow-ups through.

        The window then starts again; once a loss is back at what the losses were before the
        runaway (the restore worked), it starts again from there, and until it holds
        :data:`RUNAWAY_MIN` losses the guard compares with the losses before the runaway. A
        blow-up right after a restore that worked is so called at once, where a fresh window
        was blind for :data:`RUNAWAY_MIN` steps and then compared with the first blow-up's own
        losses (the mnist1d CNN on schedule-free SGD, lr 1.6, verified merges, seed 7: ``python
        -m benchmarks.runaway_trace --task 'mnist1d CNN / SGD-momentum' --peer schedule-free
        --lr 1.6 --seed 7 --steps 1150-1200 --verify``). Where the loss stays up after a
        restore, restoring again only interrupts the optimizer's own way down: compared with the
        losses before the runaway from the first step, the guard called runaways every two to
        five steps there and lost seeds (seeds 21 and 22 of ``python -m benchmarks.blowups
        --seeds 30 --taus 8`` at f46e24d and 2d4ee38)."""
        factor = self.config.runaway_factor
        if not isinstance(factor, (int, float)):  # None, or "auto" not resolved by a PDT
            return False
        if self.sound_reference is not None and not self.restore_settled and loss <= self.sound_reference:
            self.recent_losses, self.restore_settled = [], True
        reference = self.compared_with()
        if over_reference(loss, reference, runaway_threshold(factor, self.runaways)):
            if self.suspect is not None:
                self.sound_reference, self.restore_settled = reference, False
                self.recent_losses, self.suspect = [], None
                self.runaways += 1
                return True
            self.suspect = loss
            return False
        if self.suspect is not None:
            self.recent_losses.append(self.suspect)
            self.suspect = None
        self.recent_losses.append(loss)
        del self.recent_losses[:-RUNAWAY_WINDOW]
        return False

    def compared_with(self) -> float | None:
        """The loss the runaway guard compares the next reported loss with, before its factor:
        :func:`runaway_reference` of the window, or while too few are in after a restore that
        brought the loss back, what the losses were before the runaway; None while it can call
        nothing."""
        reference = runaway_reference(self.recent_losses)
        if reference is None and self.restore_settled:
            return self.sound_reference
        return reference

    def clean_snapshot(self, called_at: int | None = None) -> int:
        """How many snapshots back (0: the newest) the newest one taken before the weights
        that ran away lies: the two losses that called a runaway after step t (``called_at``,
        default: the steps taken) were computed before the updates of steps t - 1 and t, so a
        snapshot taken at step t - 2 or later may hold weights already running away."""
        t = self.steps if called_at is None else called_at
        return sum(1 for step in range(t - 2, self.steps + 1) if step > 0 and step % self.config.snap_every == 0)

    def track_setback(self, loss: float) -> bool:
        """Record a reported loss for ``PDTConfig.setback_limit``; once the q losses after a
        merge are in, judge it. Returns True when that merge is to be undone."""
        q = setback_window(self.config.snap_every)
        self.recent_window.append(loss)
        del self.recent_window[:-2 * q]
        if self.setback_pending is None:
            return False
        self.setback_pending -= 1
        if self.setback_pending:
            return False
        self.setback_pending = None
        change = setback(self.recent_window[:-q], self.recent_window[-q:])
        return change is not None and self._judge_setbacks(change)

    def _judge_setbacks(self, change: float) -> bool:
        """Hold predictions back for 2^(holds so far) boundaries when the mean of the last
        merges' setbacks, or the last one's beyond :data:`SETBACK_UNDO` times, exceeds the
        limit; returns True in the latter case (undo that merge). The spells never shrink:
        where merges keep setting the loss back, PDT backs off for good."""
        self.setbacks_recent = (self.setbacks_recent + [change])[-SETBACK_MERGES:]
        limit = self.config.setback_limit
        undo = change > SETBACK_UNDO * limit
        window = len(self.setbacks_recent) == SETBACK_MERGES and sum(self.setbacks_recent) / SETBACK_MERGES > limit
        if undo or window:
            self.held_boundaries = max(self.held_boundaries, 2 ** min(self.setbacks, 30))
            self.setbacks += 1
        return undo

    def report_loss(self, loss: float) -> bool:
        """Record the training loss of the step just completed. Returns True when it
        calls for rolling back the last merge (see ``PDTConfig.rollback_factor``)."""
        if not math.isfinite(loss):
            return False
        self.interval_loss_sum += loss
        self.interval_loss_count += 1
        factor = self.config.rollback_factor
        if factor is None or self.last_merge_step is None:
            return False
        if self.steps == self.last_merge_step:
            self.merge_loss = loss  # computed before the merge
            return False
        if self.steps == self.last_merge_step + 1 and self.merge_loss is not None:
            self.last_merge_step = None
            return exceeds(loss, self.merge_loss, factor)
        return False

    def state_dict(self) -> dict[str, Any]:
        state = asdict(self)
        state.pop("config")
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
