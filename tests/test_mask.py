"""Properties of the dynamic-consistency mask and the merge, for every input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pdt_compile import consistency_mask
from pdt_compile.config import RULES
from pdt_compile.mask import drift_mask, forecast_mask_merge, merge, ring_drift_mask, trend_mask

SIGN_RULES = ("paper", "reference", "consistency_only")
BOUND_RULES = {"paper": lambda tau: tau, "reference": lambda tau: tau + 1, "accel_only": lambda tau: tau}

values = st.floats(-4.0, 4.0, allow_nan=False, width=32) | st.sampled_from([0.0, -0.0, 1e-30, math.nan, math.inf, -math.inf])


@st.composite
def cases(draw):
    tau = draw(st.integers(1, 5))
    n = draw(st.integers(1, 12))
    d = torch.tensor(draw(st.lists(values, min_size=n, max_size=n)), dtype=torch.float32)
    P = torch.tensor(draw(st.lists(values, min_size=tau * n, max_size=tau * n)), dtype=torch.float32).view(tau, n)
    # Make acceptance likely for part of the elements: scaled copies of d.
    if draw(st.booleans()):
        scales = torch.tensor(draw(st.lists(st.floats(0.5, 6.0), min_size=tau, max_size=tau)))
        P = scales[:, None] * d[None, :]
    return d, P, tau


@settings(max_examples=300, deadline=None)
@given(cases())
def test_paper_is_the_intersection_of_its_parts(case):
    d, P, tau = case
    paper = consistency_mask(d, P, "paper")
    assert torch.equal(paper, consistency_mask(d, P, "accel_only") & consistency_mask(d, P, "consistency_only"))
    assert not (paper & ~consistency_mask(d, P, "none")).any()


@settings(max_examples=300, deadline=None)
@given(cases(), st.sampled_from(SIGN_RULES))
def test_sign_rules_never_move_against_the_optimizer(case, rule):
    d, P, tau = case
    accepted = consistency_mask(d, P, rule)
    assert (P[-1][accepted] * d[accepted] > 0).all()
    if rule != "reference":
        assert (P[:, accepted] * d[accepted] > 0).all()


@settings(max_examples=300, deadline=None)
@given(cases(), st.sampled_from(sorted(BOUND_RULES)))
def test_bound_rules_limit_the_jump(case, rule):
    d, P, tau = case
    accepted = consistency_mask(d, P, rule)
    factor = BOUND_RULES[rule](tau)
    assert (P[-1][accepted].abs() <= factor * d[accepted].abs()).all()
    assert not accepted[d == 0].any()  # zero displacement accepts nothing


@settings(max_examples=300, deadline=None)
@given(cases(), st.sampled_from(RULES))
def test_no_rule_accepts_non_finite_values(case, rule):
    d, P, tau = case
    accepted = consistency_mask(d, P, rule)
    assert torch.isfinite(P[-1][accepted]).all() and torch.isfinite(d[accepted]).all()
    if rule in ("paper", "consistency_only"):
        assert not torch.isnan(P[:, accepted]).any()


@settings(max_examples=200, deadline=None)
@given(cases(), st.sampled_from(RULES))
def test_merge_changes_exactly_the_accepted_elements(case, rule):
    d, P, tau = case
    s = torch.linspace(-1, 1, d.numel())
    w = s + d
    accepted = consistency_mask(d, P, rule)
    merged = merge(w, s, P[-1], accepted)
    assert torch.equal(merged[~accepted].nan_to_num(7.0), w[~accepted].nan_to_num(7.0))
    assert torch.equal(merged[accepted], (s + P[-1])[accepted])
    assert torch.isfinite(merged[accepted]).all()


def test_paper_rule_by_hand():
    d = torch.tensor([1.0, 1.0, 1.0, -1.0, 0.0, 1.0])
    P = torch.tensor([[0.5, 2.0, 1.0, -1.5, 0.0, 2.0], [3.0, 5.0, 6.0, -1.8, 0.0, 1.0]])
    # tau = 2: |d| < |p2| <= 2|d|; signs of both steps agree with d.
    assert consistency_mask(d, P, "paper").tolist() == [False, False, False, True, False, False]
    assert consistency_mask(d, P, "reference").tolist() == [True, False, False, True, False, True]
    assert consistency_mask(d, P, "none").tolist() == [True] * 6


def test_explicit_tau_overrides_padded_rows():
    d = torch.tensor([1.0])
    P = torch.tensor([[1.5], [2.5], [2.5]])  # horizon 2, padded to 3 rows
    assert consistency_mask(d, P, "paper").item()  # inferred horizon 3: 2.5 <= 3
    assert not consistency_mask(d, P, "paper", tau=2).item()  # the real horizon: 2.5 > 2


def test_forecast_mask_merge_is_the_composition():
    ring = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.2]])
    s = ring[-1]
    w = torch.tensor([3.0, 2.1])
    coefficients = torch.tensor([[0.0, -1.0, 0.0], [0.0, -2.0, 0.0]])  # p_k = -k (ring[1] - s)
    merged, accepted = forecast_mask_merge(w, ring, s, coefficients, torch.zeros(2), 2, "paper")
    assert accepted.tolist() == [True, False]
    assert torch.allclose(merged, torch.tensor([4.0, 2.1]))


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="rule='bogus'"):
        consistency_mask(torch.zeros(3), torch.zeros(2, 3), "bogus")
    with pytest.raises(ValueError, match="P must be"):
        consistency_mask(torch.zeros(3), torch.zeros(2, 4))


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 6), st.integers(1, 10), st.integers(0, 2**31 - 1), st.sampled_from(RULES))
def test_trend_filter_keeps_only_elements_every_snapshot_lies_behind(h, n, seed, rule):
    g = torch.Generator().manual_seed(seed)
    ring = torch.randn(h, n, generator=g).cumsum(0)
    s = ring[-1]
    w = s + torch.randn(n, generator=g)
    coefficients = torch.randn(2, h, generator=g)
    _, plain = forecast_mask_merge(w, ring, s, coefficients, torch.zeros(2), 2, rule)
    merged, accepted = forecast_mask_merge(w, ring, s, coefficients, torch.zeros(2), 2, rule, trend=True)
    assert not (accepted & ~plain).any()
    behind = ((w - ring) * (w - s) > 0).all(0)
    assert torch.equal(accepted, plain & behind)
    assert torch.equal(merged[~accepted], w[~accepted])


def test_trend_mask_by_hand():
    ring = torch.tensor([[0.0, 0.0, 1.0], [1.0, 2.0, 0.8], [2.0, 1.0, 0.5]])  # last row is s
    w = torch.tensor([3.0, 1.5, 0.4])
    # element 0: monotone up; 1: up last interval but s_1 = 2 lies ahead; 2: down, all behind
    assert trend_mask(w, ring, ring[-1]).tolist() == [True, False, True]
    assert not trend_mask(torch.tensor([float("nan")]), ring[:, :1], ring[-1, :1]).item()


def test_drift_mask_by_hand():
    # element 0: steady drift (net 3, steps 1, 1, 1: score sqrt 3); 1: there and back (net 0);
    # 2: one big step and two small ones back (net 1.6, energy 4 + 0.04 + 0.04); 3: never moves
    path = [torch.tensor(v) for v in ([0.0, 0.0, 0.0, 5.0], [1.0, 1.0, 2.0, 5.0], [2.0, 0.0, 1.8, 5.0],
                                      [3.0, 0.0, 1.6, 5.0])]
    assert drift_mask(path, 1.7).tolist() == [True, False, False, False]
    assert drift_mask(path, 0.5).tolist() == [True, False, True, False]
    assert not drift_mask([torch.tensor([0.0]), torch.tensor([math.nan])], 0.1).item()
    with pytest.raises(ValueError, match="path has 1 points"):
        drift_mask(path[:1], 1.0)


@given(st.lists(st.floats(-3.0, 3.0, width=32), min_size=2, max_size=7), st.floats(0.0, 3.0))
def test_drift_mask_scores_a_path_against_its_own_steps(points, threshold):
    """The score depends on the path's shape, not its scale or direction, and no path of m
    steps scores above sqrt(m) (Cauchy-Schwarz): a threshold of sqrt(m) passes nothing."""
    path = [torch.tensor([p], dtype=torch.float64) for p in points]
    accepted = drift_mask(path, threshold).item()
    assert drift_mask([-4.0 * p for p in path], threshold).item() == accepted
    assert not drift_mask(path, math.sqrt(len(points) - 1) + 1e-9).item()


def test_drift_mask_passes_few_random_walks():
    """The rates the docs quote: of Gaussian random walks of 5 steps, about 14 % score above 1.5
    and 1.6 % above 2 (exactly: 14.5 % and 1.6 %, from the Beta(1/2, 2) law of the squared cosine
    between the steps and the all-ones vector); a steady drift of the same noise passes."""
    steps = torch.randn(6, 100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    walk = list(torch.cat([torch.zeros(1, steps.shape[1], dtype=torch.float64), steps[:5].cumsum(0)]))
    assert 0.135 < drift_mask(walk, 1.5).double().mean().item() < 0.155
    assert 0.014 < drift_mask(walk, 2.0).double().mean().item() < 0.019
    drifting = [point + 3.0 * i for i, point in enumerate(walk)]
    assert drift_mask(drifting, 1.5).double().mean().item() > 0.95


@given(st.integers(2, 6), st.integers(0, 5), st.integers(1, 6), st.floats(0.1, 2.0), st.integers(0, 2**31 - 1))
def test_ring_drift_mask_reads_the_path_from_a_rotated_ring(h, newest, n, threshold, seed):
    """In the ring's physical order (the snapshots rotated so that the newest sits at any row)
    the mask is the one of the path oldest first, then the weights."""
    newest %= h
    generator = torch.Generator().manual_seed(seed)
    path = torch.randn(h + 1, n, generator=generator, dtype=torch.float64).cumsum(0)
    path += torch.linspace(0, 3, h + 1, dtype=torch.float64)[:, None] * torch.randn(n, generator=generator, dtype=torch.float64)
    snapshots, w = path[:h], path[h]
    ring = snapshots.roll(newest + 1, 0)  # the newest snapshot at row `newest`, the oldest after it
    oldest = ring[(newest + 1) % h]
    got = ring_drift_mask(w, ring, ring[newest], oldest, threshold)
    assert torch.equal(got, drift_mask(list(path), threshold))
    rows = [row for row in ring]
    assert torch.equal(ring_drift_mask(w, rows, rows[newest], oldest, threshold), got)


def test_forecast_mask_merge_with_drift_keeps_only_drifting_elements():
    ring = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])  # element 0 drifts, element 1 goes back and forth
    w = torch.tensor([3.0, 1.0])
    coefficients = torch.zeros(1, 3)
    s_coefficients = torch.full((1,), 2.0)  # a finite prediction, which rule "none" accepts
    plain, accepted = forecast_mask_merge(w, ring, ring[2], coefficients, s_coefficients, 2, "none")
    _, filtered = forecast_mask_merge(w, ring, ring[2], coefficients, s_coefficients, 2, "none", drift=1.0,
                                      oldest=ring[0])
    assert accepted.tolist() == [True, True] and filtered.tolist() == [True, False]
    with pytest.raises(ValueError, match="drift needs oldest"):
        forecast_mask_merge(w, ring, ring[2], coefficients, s_coefficients, 2, "none", drift=1.0)


def test_saturation_mask_passes_where_the_interval_moved_an_element_by_its_share_of_the_steps_most():
    from pdt_compile.mask import saturation_mask

    displacement = torch.tensor([1.0, -1.0, 0.5, -0.49, 0.0, float("nan")])  # 10 steps of at most 0.1
    assert saturation_mask(displacement, 10, 0.1, 0.5).tolist() == [True, True, True, False, False, False]
    assert saturation_mask(displacement, 10, torch.tensor(0.1), 1.0).tolist() == [True, True, False, False, False, False]
