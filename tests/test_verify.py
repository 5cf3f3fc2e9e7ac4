"""Verified merges: a merge stands only where it does not raise the verify loss, backtracking
along the jump (1, 1/2, 1/4) before it is undone."""

from __future__ import annotations

import itertools

import pytest
import torch

import pdt_compile as pdt
from pdt_compile.runtime.schedule import Phase, Schedule

from conftest import batches, make_mlp, save_and_load, step_function, train

CONFIG = dict(snap_every=3, history=4, burn_in=4, tau=3)


class Scripted:
    """A verify loss that answers from a script, per prediction: the calls PDT makes are the
    merged weights, the weights without the merge, then each backtracked fraction."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), 0

    def __call__(self):
        value = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return value


def run_one_prediction(verify, **options):
    """Train to the first merge; return (weights before PDT's boundary work, after it, the
    jump the unverified merge would have made, the optimizer)."""
    data = batches(15)
    reference_model = make_mlp()
    reference = pdt.PDT(torch.optim.SGD(reference_model.parameters(), lr=0.2, momentum=0.9), **CONFIG, **options)
    model = make_mlp()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9), verify=verify, **CONFIG, **options)
    seen = {}
    run_boundary = opt._run_boundary

    def spied(phase):
        if phase == Phase.PREDICT:
            seen["before"] = [p.detach().clone() for p in model.parameters()]
        return run_boundary(phase)

    opt._run_boundary = spied
    train(reference_model, reference, data)
    train(model, opt, data)
    assert reference.stats.merges == 1 and opt.stats.predictions == 1
    jump = [a.detach() - b for a, b in zip(reference_model.parameters(), seen["before"])]
    return seen["before"], [p.detach().clone() for p in model.parameters()], jump, opt


def test_a_merge_that_raises_the_verify_loss_at_every_fraction_is_undone():
    before, after, jump, opt = run_one_prediction(Scripted([1.0, 0.0, 1.0, 1.0]))
    assert any((j != 0).any() for j in jump)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(before, after))
    assert opt.stats.merges == 0 and opt.stats.verify_rejections == 1 and opt.stats.verify_evaluations == 4
    newest = opt.ring.flat()[opt.ring.last_slot]
    assert torch.allclose(newest, torch.cat([p.view(-1) for p in after]), atol=1e-6)


def test_backtracking_keeps_the_largest_fraction_that_does_not_raise_it():
    before, after, jump, opt = run_one_prediction(Scripted([1.0, 0.5, 0.4]))
    for b, a, j in zip(before, after, jump):
        assert torch.allclose(a, b + 0.5 * j, atol=1e-6)
    assert opt.stats.merges == 1 and opt.stats.verify_backtracks == 1
    assert opt.stats.verify_loss_change[-1][2] == 0.5


def test_a_merge_that_lowers_the_verify_loss_stands_whole():
    before, after, jump, opt = run_one_prediction(Scripted([0.1, 0.5]))
    for b, a, j in zip(before, after, jump):
        assert torch.allclose(a, b + j, atol=1e-6)
    assert opt.stats.verify_evaluations == 2 and opt.stats.verify_rejections == 0


def test_with_a_real_held_out_loss_no_kept_merge_raises_it():
    held_out = batches(1, seed=7, size=64)[0]
    model = make_mlp()

    def verify():
        return torch.nn.functional.cross_entropy(model(held_out[0]), held_out[1])

    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9), verify=verify, verify_backoff=0, **CONFIG)
    train(model, opt, batches(60))
    assert opt.stats.predictions >= 10
    assert opt.stats.verify_loss_change and all(change <= 0 for _, change, _ in opt.stats.verify_loss_change)


def test_compiled_path_verifies_like_eager():
    held_out = batches(1, seed=7, size=64)[0]
    runs = []
    for compiled in (False, True):
        model = make_mlp()
        verify = lambda model=model: torch.nn.functional.cross_entropy(model(held_out[0]), held_out[1])
        opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, foreach=True), verify=verify, **CONFIG)
        step = step_function(model, opt)
        if compiled:
            step = pdt.compile(step, optimizer=opt, backend="aot_eager")
        for x, y in batches(45):
            step(x, y)
        runs.append((model, opt))
    (eager_model, eager), (model, opt) = runs
    assert opt.stats.merges == eager.stats.merges
    assert opt.stats.verify_rejections == eager.stats.verify_rejections
    assert opt.stats.verify_evaluations == eager.stats.verify_evaluations >= 10
    for a, b in zip(eager_model.parameters(), model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_verify_backtracks_is_validated():
    with pytest.raises(ValueError, match="verify_backtracks"):
        pdt.PDTConfig(snap_every=1, verify_backtracks=-1)


def prediction_boundaries(verify_backoff: int, steps: int = 120) -> list[int]:
    """Boundaries at which PDT predicted, with a verify loss that undoes every merge (it
    answers 1.0 at the merged weights, then 0.0 without the merge)."""
    model = make_mlp()
    answers = itertools.cycle([1.0, 0.0])
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9), verify=lambda: next(answers),
                  verify_backtracks=0, verify_backoff=verify_backoff, **CONFIG)
    seen, run_boundary = [], opt._run_boundary

    def spied(phase):
        if phase == Phase.PREDICT:
            seen.append(opt.schedule.boundaries + 1)
        return run_boundary(phase)

    opt._run_boundary = spied
    train(model, opt, batches(steps))
    assert opt.stats.merges == 0 and opt.stats.verify_rejections == len(seen) >= 3
    return seen


def test_undone_merges_hold_predictions_back_exponentially():
    gaps = lambda boundaries: [b - a for a, b in zip(boundaries, boundaries[1:])]
    assert gaps(prediction_boundaries(0)) == [1] * (len(prediction_boundaries(0)) - 1)
    assert gaps(prediction_boundaries(16))[:4] == [1, 2, 3, 5]
    assert set(gaps(prediction_boundaries(2))) == {1, 2, 3}


def test_a_merge_that_stands_ends_the_streak():
    schedule = Schedule(pdt.PDTConfig(snap_every=1, verify_backoff=16))
    for _ in range(3):
        schedule.record_verification(kept=False)
    assert schedule.held_boundaries == 2
    schedule.record_verification(kept=True)
    assert schedule.rejected_in_a_row == 0
    schedule.held_boundaries = 0
    schedule.record_verification(kept=False)
    assert schedule.held_boundaries == 0
    schedule.record_verification(kept=False)
    assert schedule.held_boundaries == 1


def test_verify_backoff_is_validated():
    with pytest.raises(ValueError, match="verify_backoff"):
        pdt.PDTConfig(snap_every=1, verify_backoff=-1)


def weights_by_step(model, opt, data) -> list[list[torch.Tensor]]:
    """Train on ``data``; the weights after every step (index 0: before the first)."""
    out = [[p.detach().clone() for p in model.parameters()]]
    for x, y in data:
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        out.append([p.detach().clone() for p in model.parameters()])
    return out


@pytest.mark.parametrize("answers, kept", [([1.0, 0.0, 1.0, 1.0], 0.0), ([1.0, 0.5, 0.4], 0.5), ([0.1, 0.5], 1.0)])
def test_a_late_check_weighs_the_weights_with_and_without_the_jump(answers, kept):
    """``verify_delay=2``: the merge stands untouched for two steps; then verify sees the weights
    as they are and without the jump (and with half of it), and keeps what its answers say."""
    data, delay = batches(20), 2
    reference_model = make_mlp()
    reference = pdt.PDT(torch.optim.SGD(reference_model.parameters(), lr=0.2, momentum=0.9), **CONFIG)
    jumps, run_boundary = {}, reference._run_boundary

    def spied(phase):
        before = [p.detach().clone() for p in reference_model.parameters()]
        out = run_boundary(phase)
        if phase == Phase.PREDICT:
            jumps[reference.schedule.steps + 1] = [p.detach() - b for p, b in zip(reference_model.parameters(), before)]
        return out

    reference._run_boundary = spied
    expected = weights_by_step(reference_model, reference, data)
    merge = min(jumps)
    assert reference.stats.merges >= 1 and merge + delay < 20 and any((j != 0).any() for j in jumps[merge])
    model = make_mlp()
    scripted, seen = Scripted(answers), []

    def verify():
        seen.append((opt.schedule.steps, [p.detach().clone() for p in model.parameters()]))
        return scripted()

    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9), verify=verify, verify_delay=delay, **CONFIG)
    got = weights_by_step(model, opt, data[: merge + delay])
    for a, b in zip(got[:-1], expected):  # nothing differs before the check
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [step for step, _ in seen][:2] == [merge + delay] * 2
    at_check = expected[merge + delay]
    assert all(torch.equal(x, y) for x, y in zip(seen[0][1], at_check))
    for x, y, j in zip(seen[1][1], at_check, jumps[merge]):
        assert torch.allclose(x, y - j, atol=1e-6)
    for x, y, j in zip(model.parameters(), at_check, jumps[merge]):
        assert torch.allclose(x.detach(), y - (1.0 - kept) * j, atol=1e-6)
    assert opt.stats.merges == (0 if kept == 0.0 else 1)
    assert opt.stats.verify_rejections == int(kept == 0.0)
    assert opt.stats.verify_loss_change[-1][::2] == (merge + delay, kept)
    assert opt.schedule.verify_due is None


def test_a_late_check_resumes_from_a_checkpoint_taken_before_it():
    held_out = batches(1, seed=7, size=64)[0]
    data, options = batches(60), dict(verify_delay=2, verify_backoff=0, **CONFIG)

    def make(model):
        verify = lambda: torch.nn.functional.cross_entropy(model(held_out[0]), held_out[1])
        return pdt.PDT(torch.optim.AdamW(model.parameters(), lr=0.01), verify=verify, **options)

    reference_model = make_mlp()
    reference = make(reference_model)
    train(reference_model, reference, data)
    assert reference.stats.merges >= 1 and reference.stats.verify_rejections >= 5
    first = reference.stats.verify_loss_change[0][0] - 2
    for stop_at in (first, first + 1):  # at the merge (check due), between it and the check
        model = make_mlp()
        opt = make(model)
        train(model, opt, data[:stop_at])
        assert opt.schedule.verify_due == first + 2
        checkpoint = save_and_load({"model": model.state_dict(), "opt": opt.state_dict()})
        resumed_model = make_mlp(seed=5)
        resumed_model.load_state_dict(checkpoint["model"])
        resumed = make(resumed_model)
        resumed.load_state_dict(checkpoint["opt"])
        train(resumed_model, resumed, data[stop_at:])
        for a, b in zip(reference_model.parameters(), resumed_model.parameters()):
            assert torch.equal(a, b)
        assert resumed.stats.verify_loss_change == reference.stats.verify_loss_change


@pytest.mark.parametrize("delay", [-1, 3, True, 1.5])
def test_verify_delay_is_validated(delay):
    with pytest.raises(ValueError, match="verify_delay"):
        pdt.PDTConfig(snap_every=3, verify_delay=delay)
