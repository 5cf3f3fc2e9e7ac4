"""Verified merges: a merge stands only where it does not raise the verify loss, backtracking
along the jump (1, 1/2, 1/4) before it is undone."""

from __future__ import annotations

import itertools

import pytest
import torch

import pdt_compile as pdt
from pdt_compile.runtime.schedule import Phase, Schedule

from conftest import batches, make_mlp, step_function, train

CONFIG = dict(snap_every=3, history=4, burn_in=4, tau=3, momentum_spacing=None)  # SGD's momentum too: predictions within a few steps


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


@pytest.mark.parametrize("returned, named", [
    (None, "got None"), (torch.ones(4), r"got a tensor of shape \(4,\)"),
])
def test_a_verify_that_returns_no_single_number_is_named_with_the_fix(returned, named):
    model = make_mlp()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=3, history=4, burn_in=3, tau=3,
                  verify=lambda: returned)
    with pytest.raises(TypeError, match=rf"PDT\(verify=\.\.\.\): the held-out loss must be one number .*{named}"):
        train(model, opt, batches(30))


def test_the_lightning_callback_checks_that_verify_takes_the_module():
    pytest.importorskip("lightning")
    from pdt_compile.integrations.lightning import PDTCallback

    with pytest.raises(TypeError, match=r"PDTCallback\(verify=\.\.\.\): .* must take one argument, the LightningModule"):
        PDTCallback(verify=lambda: 0.0, snap_every=3)
    PDTCallback(verify=lambda module: 0.0, snap_every=3)

