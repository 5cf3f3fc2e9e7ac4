"""The gradient check: a merge whose next gradient surges is undone, and that gradient dropped."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from hypothesis import given, strategies as st

import pdt_compile as pdt
from pdt_compile.runtime import gradient_check
from pdt_compile.runtime.gradient_check import gradient_norm, gradient_surge, in_window


norms = st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=12)


def _surge(before: list[float], after: float) -> float:
    return float(gradient_surge(torch.tensor(before, dtype=torch.float64), torch.tensor(after, dtype=torch.float64)))


@given(norms, st.floats(0.0, 1e4), st.floats(1e-3, 1e3))
def test_a_surge_is_the_norm_after_over_the_mean_before_whatever_the_scale(before, after, scale):
    surge = _surge(before, after)
    assert surge == pytest.approx(after * len(before) / sum(before), rel=1e-5)
    assert _surge([b * scale for b in before], after * scale) == pytest.approx(surge, rel=1e-4, abs=1e-9)
    assert _surge(before, sum(before) / len(before)) == pytest.approx(1.0, rel=1e-5)
    assert _surge(before, math.nan) == math.inf and _surge(before, math.inf) == math.inf
    assert math.isnan(_surge([], after)) and math.isnan(_surge([0.0] * len(before), after))
    assert math.isnan(_surge(before[:-1] + [math.nan], after))


@pytest.mark.parametrize("concatenated", [True, False])
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(0, 2**16), st.sampled_from([torch.float32, torch.bfloat16]))
def test_the_gradient_norm_is_the_norm_of_every_gradient_together_concatenated_or_not(concatenated, sizes, seed, dtype):
    torch.manual_seed(seed)
    grads = [torch.randn(size).to(dtype if i % 2 else torch.float32) for i, size in enumerate(sizes)]
    limit = gradient_check.CONCATENATED_NORM_ELEMENTS
    try:
        gradient_check.CONCATENATED_NORM_ELEMENTS = limit if concatenated else 0
        norm = gradient_norm(grads)
    finally:
        gradient_check.CONCATENATED_NORM_ELEMENTS = limit
    expected = torch.cat([g.double() for g in grads]).norm()
    assert norm.dtype == torch.float32 and norm.dim() == 0
    assert float(norm) == pytest.approx(float(expected), rel=1e-5 if dtype == torch.float32 else 1e-2)


@given(st.integers(1, 50), st.integers(1, 60))
def test_the_window_is_the_last_q_steps_of_every_interval_boundary_included(snap_every, window):
    for interval in range(3):
        inside = [done + 1 for done in range(interval * snap_every, (interval + 1) * snap_every)
                  if in_window(done, snap_every, window)]
        end = (interval + 1) * snap_every
        assert inside == list(range(end - min(window, snap_every) + 1, end + 1))


def _growth_run(surge_factor: float, closure: bool = False, **options):
    """SGD (no momentum) on one weight vector whose gradient is -w / 2: the weights grow
    geometrically, a trend that DMD fits exactly and PDT merges at the first prediction (step
    8). The gradient of the step after it is ``surge_factor`` times that. Returns the
    optimizer, the weights right after the merge, its jump and the weights after the next
    step."""
    w = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 6) + 0.05)
    opt = pdt.PDT(torch.optim.SGD([w], lr=0.1), snap_every=2, history=3, burn_in=3, tau=2, trend=False, **options)
    merged = jump = None
    for step in range(1, 10):
        scale = surge_factor if step == 9 else 1.0
        if closure:
            def set_gradient(scale=scale):
                w.grad = -0.5 * w.detach() * scale
                return torch.tensor(1.0)

            opt.step(set_gradient)
        else:
            w.grad = -0.5 * w.detach() * scale
            opt.step()
        if step == 8:
            assert opt.stats.merges == 1, "the trend must be merged at the first prediction"
            merged, jump = w.detach().clone(), (opt._jumps[0].clone() if opt._jumps and opt._jumps[0] is not None else None)
    return opt, merged, jump, w.detach().clone()


@pytest.mark.parametrize("closure", [False, True])
def test_a_merge_whose_next_gradient_surges_is_undone_and_that_gradient_dropped(closure):
    opt, merged, jump, after = _growth_run(surge_factor=10.0, closure=closure)
    assert jump.abs().sum() > 0
    assert torch.equal(after, merged - jump)  # back to the optimizer's own weights; no step taken with that gradient
    assert opt.stats.gradient_undos == 1
    [(step, surge)] = opt.stats.gradient_surges
    assert step == 8 and surge > 4.0
    assert opt._jumps is None and torch.equal(opt.param_groups[0]["params"][0].grad, torch.zeros(6))
    assert opt._gradient_check.armed is None


@pytest.mark.parametrize("closure", [False, True])
def test_a_merge_whose_next_gradient_stays_level_stands(closure):
    opt, merged, jump, after = _growth_run(surge_factor=1.0, closure=closure)
    assert torch.allclose(after, merged * 1.05)
    assert opt.stats.gradient_undos == 0
    [(step, surge)] = opt.stats.gradient_surges
    assert step == 8 and 1.0 < surge < 4.0  # the merge moved the weights ahead on their growth
    assert opt._jumps is None  # nothing else needs the jump: it is not kept


def test_gradient_limit_none_keeps_every_merge():
    opt, merged, jump, after = _growth_run(surge_factor=10.0, gradient_limit=None)
    assert jump is None and not opt.keeps_jumps
    assert torch.allclose(after, merged * 1.5)  # the surging gradient was applied
    assert opt.stats.gradient_undos == 0 and opt.stats.gradient_surges == []


def _surging_predictions(verify_backoff: int, compiled: bool = False) -> tuple[pdt.PDT, list[int]]:
    """The growth of :func:`_growth_run` over 60 steps, the gradient 10 times larger at every
    step that judges a merge: every merge is undone. Returns the optimizer and the steps at
    which it predicted."""
    w = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 6) + 0.05)
    opt = pdt.PDT(torch.optim.SGD([w], lr=0.1), snap_every=2, history=3, burn_in=3, tau=2, trend=False,
                  verify_backoff=verify_backoff)

    def step() -> None:
        w.grad = -0.5 * w.detach() * (10.0 if opt._gradient_check.armed is not None else 1.0)
        opt.step()

    if compiled:
        step = pdt.compile(optimizer=opt, backend="aot_eager")(step)
    predicted = []
    for _ in range(60):
        step()
        if opt.schedule.boundaries_since_prediction == 0 and opt.schedule.steps % 2 == 0 and opt.schedule.boundaries > 3:
            predicted.append(opt.schedule.steps)
    return opt, predicted


@pytest.mark.parametrize("compiled", [False, True])
def test_merges_the_gradient_check_undoes_in_a_row_hold_predictions_back(compiled):
    """Where every merge surges (a deterministic valley the jumps leave, as full-batch SGD with
    momentum near its minimum: benchmarks/full_batch.py), predicting at every boundary spends a
    step on each undone merge. From the ``GRADIENT_STREAK``-th undone merge in a row, the r-th
    holds the next min(2^(r - GRADIENT_STREAK), ``verify_backoff``) boundaries back (a
    prediction that merges nothing neither ends nor extends the streak). Under ``pdt.compile``
    the undo and its count stay on the device until the next boundary reads them."""
    from pdt_compile.runtime.schedule import GRADIENT_STREAK

    always, every = _surging_predictions(verify_backoff=0, compiled=compiled)
    assert every == list(range(8, 61, 2)) and always.stats.gradient_undos == always.stats.merges >= GRADIENT_STREAK + 1
    opt, predicted = _surging_predictions(verify_backoff=16, compiled=compiled)
    merges = [step for step, _ in opt.stats.gradient_surges]
    assert opt.stats.gradient_undos == len(merges) > GRADIENT_STREAK and set(merges) <= set(predicted)
    assert len(predicted) < len(every)
    for streak, merge in enumerate(merges, 1):
        held = min(2 ** (streak - GRADIENT_STREAK), 16) if streak >= GRADIENT_STREAK else 0
        assert not set(range(merge + 2, merge + 2 * held + 1, 2)) & set(predicted)
        assert merge + 2 * (held + 1) > 60 or merge + 2 * (held + 1) in predicted


def test_a_merge_that_stands_ends_the_gradient_checks_streak():
    from pdt_compile.runtime.schedule import GRADIENT_STREAK, Schedule

    schedule = Schedule(pdt.PDTConfig(snap_every=1, verify_backoff=16))
    for _ in range(GRADIENT_STREAK - 1):
        schedule.record_gradient_check(kept=False)
    assert schedule.held_boundaries == 0
    schedule.record_gradient_check(kept=False)
    assert schedule.held_boundaries == 1
    schedule.held_boundaries = 0
    schedule.record_gradient_check(kept=True)
    schedule.record_gradient_check(kept=False)
    assert schedule.gradient_undone_in_a_row == 1 and schedule.held_boundaries == 0


def test_a_run_that_never_reads_its_stats_keeps_few_checks_on_the_device_and_loses_none():
    def run(read_every_step: bool) -> tuple[pdt.PDT, int]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), snap_every=2, history=3,
                      burn_in=3, tau=2, trend=False, momentum_spacing=None)
        x, y = torch.randn(64, 4), torch.randn(64, 1)
        most = 0
        for step in range(400):
            torch.nn.functional.mse_loss(model(x[step % 8 * 8:][:8]), y[step % 8 * 8:][:8]).backward()
            opt.step()
            opt.zero_grad()
            most = max(most, len(opt._gradient_check.unread))
            if read_every_step:
                opt.stats
        return opt, most

    unread, most = run(read_every_step=False)
    read, _ = run(read_every_step=True)
    assert most < gradient_check.UNREAD_LIMIT < len(read.stats.gradient_surges)
    assert unread.stats.gradient_surges == read.stats.gradient_surges


def _noisy_run(skip: bool, steps: int = 120, cosine: bool = False) -> tuple[pdt.PDT, list[int], list[Tensor]]:
    """A small MLP on random data with PDT and a tight gradient limit (some merges undone).
    ``skip=False`` takes the gradient norm before every boundary, as if every one could
    predict; ``cosine``: the rate decays to zero over the run. Returns the optimizer, the
    steps whose norm was taken and the final weights."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), snap_every=4, history=3, burn_in=3,
                  tau=2, trend=False, gradient_limit=1.05, momentum_spacing=None)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    if not skip:
        opt.schedule.may_predict_next = lambda ring_count, lr=None: True
    taken, norm = [], opt._gradient_norm

    def counted() -> Tensor | None:
        taken.append(opt.schedule.steps + 1)
        return norm()

    opt._gradient_norm = counted
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    for step in range(steps):
        batch = slice(step % 8 * 8, step % 8 * 8 + 8)
        loss = torch.nn.functional.mse_loss(model(x[batch]), y[batch])
        loss.backward()
        opt.step()
        opt.zero_grad()
        if scheduler is not None:
            scheduler.step()
    return opt, taken, [p.detach().clone() for p in model.parameters()]


def test_no_gradient_norm_is_taken_before_a_boundary_that_cannot_predict_and_nothing_changes():
    skipping, taken, weights = _noisy_run(skip=True)
    every, taken_always, weights_always = _noisy_run(skip=False)
    assert taken_always[:3] == [4, 8, 12]  # the window (1 step) of every boundary
    assert taken[0] == 16  # the first boundary with 3 snapshots after 3 of burn-in
    assert len(taken) < len(taken_always)
    assert skipping.stats.merges > 0 and skipping.stats.gradient_undos > 0
    assert skipping.stats.gradient_surges == every.stats.gradient_surges
    assert all(torch.equal(a, b) for a, b in zip(weights, weights_always))


def test_no_gradient_norm_is_taken_while_a_decay_is_far_above_its_window_and_nothing_changes():
    """Under a cosine decay over 240 steps the decay window (half the peak) opens at step 120:
    before it, a boundary cannot predict, and the window of norms before it is not taken."""
    skipping, taken, weights = _noisy_run(skip=True, steps=240, cosine=True)
    every, taken_always, weights_always = _noisy_run(skip=False, steps=240, cosine=True)
    first = skipping.stats.mask_ratio_history[0][0]
    assert 120 <= first <= 124  # the first boundary in the window
    assert min(taken) > 100  # within the margin, the window before that boundary is taken
    assert [t for t in taken_always if t > 100] == taken
    assert len(taken_always) - len(taken) == 25  # the windows before the boundaries at steps 4-100
    assert skipping.stats.merges > 0
    assert skipping.stats.gradient_surges == every.stats.gradient_surges != []  # judged by the same norms
    assert all(torch.equal(a, b) for a, b in zip(weights, weights_always))


def _drop_run(gradient_limit: float | None, stop_after: int | None = None) -> pdt.PDT:
    """SGD on one weight vector, snapshots every 8 steps (a window of 2 steps before each
    boundary): the rate is 0.1 to step 24, 0.09 (a decay far above half the peak) to step 39,
    the window's first step before the boundary at step 40, and 0.01 from step 40 on.
    ``stop_after``: checkpoint after that step and go on in a new optimizer."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(16))

    def make() -> pdt.PDT:
        return pdt.PDT(torch.optim.SGD([w], lr=0.1), snap_every=8, history=3, burn_in=0, tau=2, trend=False,
                       gradient_limit=gradient_limit)

    opt = make()
    for step in range(1, 57):
        opt.param_groups[0]["lr"] = 0.1 if step <= 24 else 0.09 if step < 40 else 0.01
        w.grad = torch.randn(16) * 0.01 - 0.5 * w.detach()
        opt.step()
        if step == stop_after:
            state = opt.state_dict()
            opt = make()
            opt.load_state_dict(state)
    return opt


@pytest.mark.parametrize("gradient_limit", [4.0, None])
def test_a_rate_that_drops_into_the_decay_window_within_a_window_delays_the_prediction_by_one(gradient_limit):
    """The window before the boundary at step 40 starts at the rate of 0.09, far above half
    the peak, so its norms are not taken; the rate then drops to 0.01, in the decay window:
    that boundary captures only, and the next one predicts. Without the check it predicts."""
    opt = _drop_run(gradient_limit)
    assert [step for step, _ in opt.stats.mask_ratio_history][0] == (48 if gradient_limit else 40)
    assert opt.stats.boundaries == 7


def test_the_window_decision_survives_a_checkpoint():
    """Stopped right after the window's first step (whose norm was not taken), a run resumes
    as if it had not stopped: the boundary at step 40 still captures only."""
    whole, resumed = _drop_run(4.0), _drop_run(4.0, stop_after=39)
    assert resumed.stats.mask_ratio_history == whole.stats.mask_ratio_history
    assert resumed.stats.mask_ratio_history[0][0] == 48
