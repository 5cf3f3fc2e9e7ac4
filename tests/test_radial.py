"""The radial part of a jump, and ``PDTConfig.radial`` taking it back (always, inward, or inward
where SGD decays)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pdt_compile as pdt
from pdt_compile.radial import merged_radial_part, merged_radial_sums, radial_coefficient, radial_part, radial_sums

elements = st.floats(-4.0, 4.0, allow_nan=False, width=32)


@st.composite
def jumps_and_weights(draw):
    rows, width = draw(st.integers(1, 3)), draw(st.integers(1, 8))
    n = rows * width
    weights = torch.tensor(draw(st.lists(elements, min_size=n, max_size=n)), dtype=torch.float64)
    jump = torch.tensor(draw(st.lists(elements, min_size=n, max_size=n)), dtype=torch.float64)
    moved = torch.tensor(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return jump * moved, weights, rows


@settings(max_examples=200, deadline=None)
@given(jumps_and_weights())
def test_the_radial_part_lies_along_the_moved_weights_and_leaves_the_rest_orthogonal(case):
    jump, weights, rows = case
    part = radial_part(jump, weights, rows)
    assert not part[jump == 0].any()  # only where the jump moves
    support = (weights * (jump != 0)).view(rows, -1)
    rest = (jump - part).view(rows, -1)
    for r, w in zip(rest, support):  # per row, the rest turns the weights, it does not grow them
        assert abs(float(r @ w)) <= 1e-9 * (1 + float(w.norm()) * float(r.norm()))
    assert torch.allclose(radial_part(part, weights, rows), part)  # undoing twice takes nothing more


@settings(max_examples=100, deadline=None)
@given(jumps_and_weights(), st.integers(1, 7))
def test_sums_over_shards_give_the_whole_tensors_radial_part(case, cut):
    jump, weights = case[0], case[1]
    cut = min(cut, jump.numel())
    shards = [(jump[:cut], weights[:cut]), (jump[cut:], weights[cut:])]
    sums = sum(radial_sums(j, w) for j, w in shards)
    whole = radial_part(jump, weights)
    assert torch.allclose(torch.cat([radial_part(j, w, sums=sums) for j, w in shards]), whole)


@settings(max_examples=200, deadline=None)
@given(jumps_and_weights(), st.booleans())
def test_the_passes_over_merged_weights_give_the_radial_part_of_the_weights_before_the_jump(case, inward):
    jump, merged = case[0], case[1] + case[0]
    weights = merged - jump  # as rounding leaves them: the passes see only the merged weights
    sums = merged_radial_sums(jump, merged)
    assert torch.allclose(sums, radial_sums(jump, weights).view(2), atol=1e-9)
    part = merged_radial_part(jump, merged, radial_coefficient(sums, inward))
    expected = radial_part(jump, weights) * (not inward or float(sums[0]) < 0)
    assert torch.allclose(part, expected, atol=1e-9)


def _run(wrap, sign=1.0, weight_decay=0.0, steps=24):
    """SGD on a matrix whose gradient only scales it (``sign`` 1: shrinks it, -1: grows it; its
    norm changes, it does not turn) and a vector that drifts elementwise: the parameters, and
    the optimizer."""
    torch.manual_seed(0)
    matrix, vector = torch.nn.Parameter(torch.randn(5, 10)), torch.nn.Parameter(torch.randn(50))
    drift = [sign * matrix.detach().clone(), torch.linspace(0.5, 1.5, 50)]
    opt = wrap(torch.optim.SGD([matrix, vector], lr=0.01, weight_decay=weight_decay))
    for _ in range(steps):
        for p, g in zip((matrix, vector), drift):
            p.grad = g.clone()
        opt.step()
    return matrix.detach().clone(), vector.detach().clone(), opt


OPTIONS = dict(snap_every=2, history=3, burn_in=3, momentum_spacing=None)  # SGD's momentum too: predictions within a few steps


def test_a_purely_radial_jump_is_undone_and_the_rest_still_jumps():
    plain_matrix, plain_vector, _ = _run(lambda o: o)
    merged_matrix, _, merged = _run(lambda o: pdt.PDT(o, radial="keep", **OPTIONS))
    matrix, vector, opt = _run(lambda o: pdt.PDT(o, radial="undo", **OPTIONS))
    assert merged.stats.merges > 0 and opt.stats.merges == merged.stats.merges
    assert merged_matrix.norm() < plain_matrix.norm() * 0.99  # the jumps shrank the matrix
    assert torch.allclose(matrix, plain_matrix, atol=1e-5)  # undone
    assert not torch.allclose(vector, plain_vector, atol=1e-3)  # the vector still jumped ahead
    ring = opt.ring  # what was undone left the snapshots as the weights: the newest is the matrix itself
    assert torch.allclose(ring.row_tensors(0)[ring.last_slot].view(5, 10), matrix, atol=1e-6)


def test_inward_undoes_a_jump_that_shrinks_a_tensor_and_keeps_one_that_grows_it():
    for sign, undone in ((1.0, True), (-1.0, False)):
        plain, _, _ = _run(lambda o: o, sign)
        kept, _, _ = _run(lambda o: pdt.PDT(o, radial="keep", **OPTIONS), sign)
        matrix, _, opt = _run(lambda o: pdt.PDT(o, radial="inward", **OPTIONS), sign)
        assert opt.stats.merges > 0 and not torch.allclose(kept, plain, atol=1e-3)
        assert torch.allclose(matrix, plain if undone else kept, atol=1e-5)


def test_auto_undoes_inward_jumps_of_what_sgd_decays_and_nothing_without_decay():
    for decay in (0.0, 0.1):
        plain, _, _ = _run(lambda o: o, weight_decay=decay)
        kept, _, _ = _run(lambda o: pdt.PDT(o, radial="keep", **OPTIONS), weight_decay=decay)
        matrix, _, opt = _run(lambda o: pdt.PDT(o, **OPTIONS), weight_decay=decay)  # radial="auto"
        assert opt.config.radial == "auto" and opt.stats.merges > 0
        assert torch.allclose(matrix, plain if decay else kept, atol=1e-5)


def _adamw_run(radial: str, decay_lr: bool, steps: int = 40):
    """AdamW (weight decay 0.5) on a matrix with no loss gradient, which the decay alone shrinks
    (a purely inward radial drift), and a vector that drifts elementwise; the learning rate
    constant or falling linearly to a tenth."""
    torch.manual_seed(0)
    matrix, vector = torch.nn.Parameter(torch.randn(5, 10)), torch.nn.Parameter(torch.randn(50))
    adamw = torch.optim.AdamW([{"params": [matrix], "weight_decay": 0.5}, {"params": [vector], "weight_decay": 0.0}], lr=0.01)
    opt = pdt.PDT(adamw, radial=radial, gradient_limit=None, **OPTIONS)
    factor = (lambda i: 1.0 - 0.9 * i / steps) if decay_lr else (lambda i: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    for _ in range(steps):
        matrix.grad, vector.grad = torch.zeros(5, 10), torch.linspace(0.5, 1.5, 50)
        opt.step()
        scheduler.step()
    return matrix.detach().clone(), opt


def test_auto_undoes_inward_jumps_of_what_adamw_decays_only_while_the_rate_decays():
    from pdt_compile.adapters import decoupled_decay

    for decaying in (False, True):
        kept, keeping = _adamw_run("keep", decaying)
        inward, _ = _adamw_run("inward", decaying)
        auto, opt = _adamw_run("auto", decaying)
        assert keeping.stats.merges > 0 and not torch.allclose(kept, inward, atol=1e-4)  # the jumps shrank the matrix
        assert torch.equal(auto, inward if decaying else kept)
        assert opt._undoes_radial and opt.keeps_jumps  # at any rate: the rate may start to fall later
        assert decoupled_decay(opt.optimizer, opt.ring.params) == [True, False]


def _lion_run(radial: str, decay_lr: bool, steps: int = 24):
    """pytorch-optimizer's Lion on a matrix whose gradient grows it (its sign steps move every
    element outward: a purely radial drift) and a vector that drifts elementwise; the learning
    rate constant or falling linearly to a tenth."""
    import pytorch_optimizer as po

    torch.manual_seed(0)
    matrix, vector = torch.nn.Parameter(torch.randn(5, 10)), torch.nn.Parameter(torch.randn(50))
    opt = pdt.PDT(po.Lion([matrix, vector], lr=0.01), radial=radial, gradient_limit=None, **OPTIONS)
    factor = (lambda i: 1.0 - 0.9 * i / steps) if decay_lr else (lambda i: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    for _ in range(steps):
        matrix.grad, vector.grad = -matrix.detach().clone(), -torch.ones(50)
        opt.step()
        scheduler.step()
    return matrix.detach().clone(), vector.detach().clone(), opt


def test_auto_undoes_every_radial_part_on_lion_at_a_constant_rate_and_none_while_it_decays():
    for decaying in (False, True):
        kept, kept_vector, keeping = _lion_run("keep", decaying)
        undone, undone_vector, _ = _lion_run("undo", decaying)
        auto, vector, opt = _lion_run("auto", decaying)
        assert keeping.stats.merges > 0 and opt.stats.merges == keeping.stats.merges
        assert not torch.allclose(kept, undone, atol=1e-4)  # the jumps grew the matrix
        assert torch.equal(auto, kept if decaying else undone)
        assert torch.equal(vector, kept_vector if decaying else undone_vector)
        assert opt._radial_modes() == ["keep" if decaying else "undo"] * 2
        assert opt._undoes_radial and opt.keeps_jumps  # at any rate: the rate may stop falling
