"""``pullback_limit``: tau follows how the optimizer takes up each merge."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, strategies as st

import pdt_compile as pdt
from pdt_compile.runtime.schedule import Schedule

from conftest import batches, make_mlp, save_and_load, train

CONFIG = dict(snap_every=4, history=4, burn_in=4, tau=3, rule="reference")


@given(st.integers(1, 16), st.floats(0.0, 2.0), st.lists(st.floats(-3.0, 3.0), min_size=1, max_size=20))
def test_tau_halves_on_a_pullback_past_the_limit_and_grows_by_one_otherwise(tau, limit, ratios):
    schedule = Schedule(pdt.PDTConfig(snap_every=4, tau=tau, pullback_limit=limit))
    for ratio in ratios:
        before = schedule.tau
        schedule.follow(ratio)
        expected = max(1, before // 2) if ratio < -limit else min(2 * tau, before + 1)
        assert schedule.tau == expected


def _merged_run(monkeypatch, scale: float):
    """SGD on a quadratic bowl up to the boundary after the first merge (step 24), every element
    merged (rule "none") at ``scale`` times DMD's displacement; returns PDT, the merge's jumps,
    the weights right after it and right before the boundary's step."""
    import pdt_compile.runtime.predictor as predictor

    solve = predictor.solve_dmd
    monkeypatch.setattr(predictor, "solve_dmd", lambda *a, **k: scale * solve(*a, **k))
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(64))
    opt = pdt.PDT(torch.optim.SGD([w], lr=0.1), pullback_limit=0.1, gradient_limit=None,
                  **{**CONFIG, "rule": "none"})

    def steps(count: int) -> None:
        for _ in range(count):
            (0.5 * w.square().sum()).backward()
            opt.step()
            opt.zero_grad()

    steps(20)
    assert opt.stats.merges == 1 and opt.stats.follow_through == []
    jumps = [j.clone() for j in opt._unfollowed]
    merged = [w.detach().clone()]
    steps(3)
    before = [w.detach().clone()]
    steps(1)  # the boundary: its step measures the follow-through first
    return opt, jumps, merged, before


@pytest.mark.parametrize("scale, shrinks", [(1.0, False), (3.0, True)])
def test_the_follow_through_is_the_optimizers_move_since_the_merge_along_its_jump(monkeypatch, scale, shrinks):
    opt, jumps, merged, before = _merged_run(monkeypatch, scale)
    along = sum(torch.dot(b - m, j) for b, m, j in zip(before, merged, jumps))
    size = sum(torch.dot(j, j) for j in jumps)
    ((step, ratio),) = opt.stats.follow_through
    assert step == 23 and ratio == pytest.approx(float(along / size), rel=1e-4, abs=1e-6)
    # DMD fits the bowl's geometric descent exactly: SGD goes on from the merged weights; three
    # times that jump lands past the minimum, and SGD pulls the weights back
    assert (ratio < -0.1) == shrinks
    assert opt.schedule.tau == (1 if shrinks else 4)


def _trajectory(stop_at: int | None, total: int = 40):
    data = batches(total)
    model = make_mlp()
    make = lambda m: pdt.PDT(torch.optim.AdamW(m.parameters(), lr=0.01), pullback_limit=0.0, **CONFIG)
    opt = make(model)
    train(model, opt, data[: stop_at or total])
    if stop_at is None:
        return model, opt
    checkpoint = save_and_load({"model": model.state_dict(), "opt": opt.state_dict()})
    resumed = make_mlp(seed=5)
    resumed.load_state_dict(checkpoint["model"])
    opt2 = make(resumed)
    opt2.load_state_dict(checkpoint["opt"])
    train(resumed, opt2, data[stop_at:])
    return resumed, opt2


@pytest.mark.parametrize("stop_at", [20, 22])  # at the merge, between it and its follow-through
def test_resume_keeps_the_merge_awaiting_its_follow_through(stop_at):
    reference, ref_opt = _trajectory(None)
    assert len(ref_opt.stats.follow_through) >= 2
    model, opt = _trajectory(stop_at)
    for a, b in zip(reference.parameters(), model.parameters()):
        assert torch.equal(a, b)
    assert opt.stats.follow_through == ref_opt.stats.follow_through
    assert opt.schedule.state_dict() == ref_opt.schedule.state_dict()
