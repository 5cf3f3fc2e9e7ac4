"""One prediction over the ring: packing small parameters side by side changes nothing but
the number of operations."""

from __future__ import annotations

import warnings

import pytest
import torch

import pdt_compile as pdt
from pdt_compile.distributed import ShardReduction
from pdt_compile.runtime import predictor
from pdt_compile.runtime.history import Pack, SnapshotRing, spans_of
from pdt_compile.runtime.kernels import Kernels

SHAPES = [(40, 30), (30,), (700, 60), (10, 40), (10,), (1,), (5, 3)]


def drifting_ring(history: int, seed: int = 0, pack_limit: int = 0) -> tuple[list[torch.Tensor], SnapshotRing]:
    """Parameters of mixed sizes after ``history`` snapshots of a noisy drift, and their ring
    (small parameters in shared rows up to ``pack_limit`` elements)."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(shape, generator=g) for shape in SHAPES]
    params[3] = params[3].T.contiguous().T  # a non-contiguous parameter
    ring = SnapshotRing(params, history, pack_limit)
    drift = [torch.randn(shape, generator=g) * 1e-2 for shape in SHAPES]
    for _ in range(history):
        with torch.no_grad():
            for p, v in zip(params, drift):
                p.add_(v + 3e-3 * torch.randn(p.shape, generator=g))
        ring.capture_()
    with torch.no_grad():
        for p, v in zip(params, drift):
            p.add_(v)
    return params, ring


def predict(monkeypatch, pack_elements: int, config: pdt.PDTConfig, skip: list[bool], with_followers: bool,
            ring_packs: int = 0):
    monkeypatch.setattr(predictor, "PACK_ELEMENTS", pack_elements)
    params, ring = drifting_ring(config.history, pack_limit=ring_packs)
    followers = [[torch.zeros(p.numel())] for p in params] if with_followers else None
    result = predictor.predict_merge_capture_(ring, params, skip, config, 3, keep_jumps=True, followers=followers)
    return params, ring, result, followers


@pytest.mark.parametrize("shared", [False, True], ids=["copied packs", "ring packs"])
@pytest.mark.parametrize("options", [dict(), dict(rule="paper", trend=False, after_merge="keep"),
                                     dict(granularity="model"), dict(rank="gavish_donoho", dynamics="affine")])
def test_packed_parameters_predict_as_one_at_a_time(monkeypatch, options, shared):
    config = pdt.PDTConfig(snap_every=1, history=4, tau=3, kernels="torch", **options)
    skip = [False, False, False, True, False, False, False]  # the skipped one is only captured
    one, ring_one, result_one, followers_one = predict(monkeypatch, 0, config, skip, True)
    # Ring packs hold the skipped parameter 3 too (1200 + 30 + 400 + 10 + 1 + 15 elements): it
    # rides along inactive. Copied packs leave it out.
    packed, ring_packed, result_packed, followers_packed = predict(monkeypatch, 2048, config, skip, True,
                                                                   ring_packs=2048 if shared else 0)
    assert [pack.indices for pack in ring_packed.packs] == ([[0, 1, 3, 4, 5, 6]] if shared else [])
    counts_one, counts_packed = result_one.resolved(), result_packed.resolved()
    assert counts_one[3] is None and counts_packed[3] is None
    assert sum(counts_one[i] for i in (0, 1, 4, 5, 6)) > 0  # the packed parameters merged something
    for i in range(len(SHAPES)):
        if counts_one[i] is not None:
            assert abs(counts_one[i] - counts_packed[i]) <= 1  # an element on a bound may round either way
            assert torch.allclose(result_one.jumps[i], result_packed.jumps[i], atol=1e-6)
            assert torch.allclose(followers_one[i][0], followers_packed[i][0], atol=1e-6)
        assert torch.allclose(one[i], packed[i], atol=1e-6)
        for a, b in zip(ring_one.row_tensors(i), ring_packed.row_tensors(i)):
            assert torch.allclose(a, b, atol=1e-6)
    assert ring_one.order() == ring_packed.order()


def test_grams_of_packs_that_hold_every_parameter_in_order_are_the_parameters_own():
    groups = list(range(len(SHAPES)))
    _, packed = drifting_ring(4, pack_limit=50_000)
    _, alone = drifting_ring(4)
    assert predictor._packs_in_order(packed.packs, groups)  # one pack, every parameter: stacked as they are
    assert not predictor._packs_in_order(packed.packs, [0] * len(SHAPES))  # one group: summed
    kernels = Kernels(pdt.PDTConfig(snap_every=1), packed.device, sum(packed.numels))
    stacked = predictor.ring_grams(packed, groups, kernels, packed.packs)
    own = predictor.ring_grams(alone, groups, kernels)
    assert stacked.shape == own.shape == (len(SHAPES), 4, 4)
    assert torch.allclose(stacked, own, rtol=1e-12, atol=0)
    model = predictor.ring_grams(packed, [0] * len(SHAPES), kernels, packed.packs)
    assert torch.allclose(model[0], own.sum(0), rtol=1e-12, atol=0)


def test_accepted_counts_of_a_pack_are_each_parameters_own():
    _, ring = drifting_ring(3, pack_limit=50_000)
    (pack,) = ring.packs
    accepted = torch.rand(pack.matrix.shape[1], generator=torch.Generator().manual_seed(1)) > 0.6
    expected = [int(accepted[span].sum()) for span in pack.spans]
    assert predictor._counts_by_parameter(pack, accepted).tolist() == expected
    assert predictor._counts_by_parameter(pack, torch.zeros_like(accepted)).tolist() == [0] * len(pack.spans)
    sizes = [0, 3, 0, 2, 0]  # parameters of no elements, first, inside and last
    empty_ends = Pack(list(range(5)), spans_of(sizes), torch.zeros(2, 5), torch.tensor(sizes))
    counted = predictor._counts_by_parameter(empty_ends, torch.tensor([True, False, True, True, True]))
    assert counted.tolist() == [0, 2, 0, 2, 0]


def test_a_parameter_of_no_elements_trains_beside_the_others():
    torch.manual_seed(0)
    empty = torch.nn.Parameter(torch.zeros(0))  # first in the ring's pack
    layer = torch.nn.Linear(4, 3)
    opt = pdt.PDT(torch.optim.SGD([empty, *layer.parameters()], lr=0.1), snap_every=3)
    x, y = torch.randn(32, 4), torch.randn(32, 3)
    for _ in range(120):
        loss = (layer(x) + empty.sum() - y).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert opt.stats.predictions > 0 and opt.stats.mask_ratio_per_tensor[0] == 0.0


def test_the_element_table_holds_each_groups_coefficients_and_casts_past_float32_to_inf_quietly():
    coefficients = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[7.0, 8.0, 9.0], [1e300, -1e300, 0.5]]],
                                dtype=torch.float64)  # [G = 2, steps = 2, h = 3]
    s_coefficients = torch.tensor([[10.0, 11.0], [12.0, 13.0]], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns on an overflowing cast unless told not to
        every = predictor.element_table(coefficients, s_coefficients, True, torch.device("cpu"))
        last = predictor.element_table(coefficients, s_coefficients, False, torch.device("cpu"))
    assert every.dtype == torch.float32 and every.shape == (2 * 4, 2)
    assert every[:, 0].tolist() == [1.0, 2.0, 3.0, 10.0, 4.0, 5.0, 6.0, 11.0]
    assert last[:, 0].tolist() == [4.0, 5.0, 6.0, 11.0]
    assert last[:, 1].tolist() == [float("inf"), float("-inf"), 0.5, 13.0]


def test_packs_hold_small_active_parameters_in_order():
    _, ring = drifting_ring(3)
    packs = predictor.pack_parameters(ring, [0, 1, 2, 4, 5, 6], limit=1235)
    assert [pack.indices for pack in packs] == [[0, 1], [4, 5, 6]]  # 42000 > limit; 1200 + 30 + 10 > limit
    assert [pack.rows[0].numel() for pack in packs] == [1230, 26]
    assert torch.equal(packs[0].rows[1][30 * 40:], ring.row_tensors(1)[1])


def test_ring_packs_are_the_parameters_rows_and_unpack_keeps_them():
    params, ring = drifting_ring(3, pack_limit=2048)
    (pack,) = ring.packs
    assert pack.shared and pack.rows[0].numel() == 1656
    before = [[row.clone() for row in ring.row_tensors(i)] for i in range(len(SHAPES))]
    ring.row_tensors(1)[2].fill_(7.0)  # a parameter's row is a view of the shared row
    assert torch.equal(pack.rows[2][pack.spans[1]], torch.full((30,), 7.0))
    ring.row_tensors(1)[2].copy_(before[1][2])
    ring.unpack_()
    assert ring.packs == []
    pointers = {row.untyped_storage().data_ptr() for i in range(len(SHAPES)) for row in ring.row_tensors(i)}
    assert len(pointers) == len(SHAPES) * 3  # every row a storage of its own
    for i in range(len(SHAPES)):
        for a, b in zip(ring.row_tensors(i), before[i]):
            assert torch.equal(a, b)
    pack.rows[0].fill_(0.0)  # the old shared rows no longer reach the ring
    assert torch.equal(ring.row_tensors(0)[0], before[0][0])


def test_default_eager_ring_packs_small_parameters_and_checkpoints_through_them():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=1, history=3, burn_in=3)
    assert [pack.indices for pack in opt.ring.packs] == [[0, 1, 2, 3]]
    for _ in range(5):
        model(torch.randn(4, 8)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    state = opt.state_dict()
    other = pdt.PDT(torch.optim.SGD(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                                        torch.nn.Linear(16, 4)).parameters(), lr=0.1),
                    snap_every=1, history=3, burn_in=3)
    other.load_state_dict(state)
    assert torch.equal(other.ring.flat(), opt.ring.flat())
    assert torch.equal(other.ring.packs[0].rows[1], opt.ring.packs[0].rows[1])


def test_device_constants_are_made_once_per_argument_and_hold_their_values():
    # A prediction's one-hot rows and flags were a host-to-device copy per parameter.
    from pdt_compile.runtime.predictor import device_one_hot, device_scalar, one_hot, write_from_host_

    cpu = torch.device("cpu")
    row = device_one_hot(2, 5, torch.float32, cpu)
    assert row is device_one_hot(2, 5, torch.float32, cpu)
    assert torch.equal(row, one_hot(2, 5, torch.float32, cpu)) and row.dtype == torch.float32
    assert device_one_hot(2, 5, torch.bool, cpu).dtype == torch.bool
    flag = device_scalar(False, cpu)
    assert flag is device_scalar(False, cpu) and not bool(flag) and flag.dtype == torch.bool
    assert device_scalar(1.0, cpu).dtype == torch.float32 and device_scalar(True, cpu).dtype == torch.bool
    buffer = torch.zeros(3, dtype=torch.int64)
    write_from_host_(buffer, torch.tensor([4, 5, 6]))
    assert buffer.tolist() == [4, 5, 6]


@pytest.mark.parametrize("pack_limit", [0, 2048], ids=["one at a time", "ring packs"])
def test_a_piece_this_rank_does_not_count_stays_out_of_its_local_grams(pack_limit):
    """Under tensor parallelism a replicated parameter enters the sums over ranks from one rank
    alone; on the others its Gram stays out of the local part (single tensors and packs alike)."""
    _, ring = drifting_ring(3, pack_limit=pack_limit)
    config = pdt.PDTConfig(snap_every=1, history=3, kernels="torch")
    kernels = Kernels(config, ring.device, sum(ring.numels))
    packs = predictor.pack_parameters(ring, range(len(SHAPES)), pack_limit)
    counted = tuple(i not in (1, 2) for i in range(len(SHAPES)))  # 1 is small (packed), 2 is not
    per_tensor = predictor.ring_grams(ring, range(len(SHAPES)), kernels, packs)
    whole_model = predictor.ring_grams(ring, [0] * len(SHAPES), kernels, packs, ShardReduction((), counted))
    assert torch.allclose(whole_model[0], per_tensor[list(counted)].sum(0), rtol=1e-12)
    assert not torch.allclose(whole_model[0], per_tensor.sum(0), rtol=1e-6)


def test_solved_coefficients_follow_the_physical_rows_and_repeat_p_tau():
    from pdt_compile.dmd import displacement_coefficients

    g = torch.Generator().manual_seed(0)
    snapshots = torch.randn(5, 50, generator=g, dtype=torch.float64).cumsum(0)  # logical order, oldest first
    order = [3, 4, 0, 1, 2]  # physical row order[i] holds snapshot i
    physical_rows = torch.empty_like(snapshots)
    physical_rows[order] = snapshots
    gram = physical_rows @ physical_rows.T
    coefficients, s_coefficients = predictor.solve_coefficients(  # two groups, the same snapshots
        torch.stack([gram, gram]), order, torch.tensor([50.0, 50.0], dtype=torch.float64), 6, 4, rank="full")
    logical = displacement_coefficients(snapshots @ snapshots.T, 4, rows=50, rank="full")  # [tau, h]
    assert coefficients.shape == (2, 6, 5) and s_coefficients.shape == (2, 6)
    assert coefficients.is_contiguous() and s_coefficients.is_contiguous()  # as the compiled op declares them
    for k in range(6):
        expected = logical[min(k, 3)]  # rows past tau repeat p_tau
        assert torch.allclose(coefficients[0, k, order], expected, rtol=1e-12, atol=1e-12)
        assert torch.allclose(s_coefficients[0, k], expected[-1], rtol=1e-12, atol=1e-12)
