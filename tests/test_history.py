"""The snapshot rings: float32, compressed (bfloat16 displacements) and host-offloaded store the
same history."""

from __future__ import annotations

import warnings

import pytest
import torch

import pdt_compile as pdt
from pdt_compile.runtime import checkpoint
from pdt_compile.runtime.history import CompressedSnapshotRing, HostSnapshotRing, SnapshotRing, make_ring

from conftest import batches, make_mlp, save_and_load, train


def drifting_parameters(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(6, 5, generator=g)), torch.nn.Parameter(torch.randn(7, generator=g))]
    return params, g


def test_compressed_ring_decodes_the_history_to_bfloat16_precision_of_the_displacements():
    params, g = drifting_parameters()
    plain, compressed = SnapshotRing(params, 5), CompressedSnapshotRing(params, 5)
    for _ in range(8):  # wraps around both rings
        with torch.no_grad():
            for p in params:
                p.add_(1e-3 * torch.randn(p.shape, generator=g))
        plain.capture_()
        compressed.capture_()
    for index in range(2):
        exact = plain.rows(index)[plain.order()]
        decoded = compressed.rows(index)[compressed.order()]
        assert torch.equal(decoded[-1], exact[-1])  # the newest is kept exactly
        displacement = (exact[1:] - exact[:-1]).abs().max()
        assert (decoded - exact).abs().max() <= 4 * 2**-8 * displacement


def test_compressed_ring_bytes_per_element():
    params, _ = drifting_parameters()
    elements = sum(p.numel() for p in params)
    for h in (3, 5, 8):
        assert SnapshotRing(params, h).nbytes() == 4 * h * elements
        assert CompressedSnapshotRing(params, h).nbytes() == (4 + 2 * (h - 1)) * elements


def test_bfloat16_ring_trains_like_the_float32_ring():
    options = dict(snap_every=4, history=4, burn_in=4, tau=3, rule="reference")
    data = batches(60)
    results = {}
    for dtype in ("float32", "bfloat16"):
        model = make_mlp()
        opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.2), ring_dtype=dtype, **options)
        losses = train(model, opt, data)
        results[dtype] = (opt.stats, losses[-1])
    full, compressed = results["float32"][0], results["bfloat16"][0]
    assert compressed.merges == full.merges >= 1
    assert abs(compressed.mask_ratio - full.mask_ratio) < 0.05
    assert isinstance(pdt.PDT(torch.optim.SGD(make_mlp().parameters(), lr=0.1), snap_every=2, ring_dtype="bfloat16").ring,
                      CompressedSnapshotRing)


@pytest.mark.parametrize("ring,stop_at", [
    (dict(ring_dtype="bfloat16"), 6), (dict(ring_dtype="bfloat16"), 21), (dict(ring_location="host"), 21),
])  # inside burn-in; right after a merge
def test_ring_resume_is_exact(ring, stop_at):
    options = dict(snap_every=4, history=4, burn_in=4, tau=3, rule="reference", **ring)
    data = batches(40)
    model = make_mlp()
    opt = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=0.01), **options)
    train(model, opt, data)
    model2 = make_mlp()
    opt2 = pdt.PDT(torch.optim.AdamW(model2.parameters(), lr=0.01), **options)
    train(model2, opt2, data[:stop_at])
    saved = save_and_load({"model": model2.state_dict(), "opt": opt2.state_dict()})
    model3 = make_mlp(seed=3)
    model3.load_state_dict(saved["model"])
    opt3 = pdt.PDT(torch.optim.AdamW(model3.parameters(), lr=0.01), **options)
    opt3.load_state_dict(saved["opt"])
    train(model3, opt3, data[stop_at:])
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model3.parameters()))
    assert torch.equal(opt.ring.flat(), opt3.ring.flat())


@pytest.mark.parametrize("change, named", [
    (dict(snap_every=3), "snap_every 4 -> 3"), (dict(history=6), "history 4 -> 6"),
    (dict(ring_dtype="bfloat16"), "ring_dtype float32 -> bfloat16"), ("freeze", "4 tensors of 195 elements -> 3 of 192"),
    ("unfreeze", "3 tensors of 179 elements -> 4 of 195"),
], ids=["snap_every", "history", "ring_dtype", "tracked parameters", "tracked parameters, unfrozen"])
def test_a_checkpoint_whose_snapshots_do_not_fit_restarts_burn_in_with_a_warning(change, named):
    """Resumed with other ring settings (a new snap_every after a batch-size change, another
    history or ring_dtype, a layer frozen or unfrozen), PDT names what changed, loads the
    optimizer's state and its own schedule, and starts its burn-in afresh instead of mixing
    snapshots of another spacing or failing."""
    options = dict(snap_every=4, history=4, burn_in=4, tau=3, rule="reference")
    data = batches(60)
    model = make_mlp()
    if change == "unfreeze":
        model[0].bias.requires_grad_(False)
    opt = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=0.01), **options)
    train(model, opt, data[:28])  # right after a boundary: the merge's jumps still kept
    assert opt.stats.merges >= 1
    saved = save_and_load({"model": model.state_dict(), "opt": opt.state_dict()})
    resumed = make_mlp(seed=3)
    resumed.load_state_dict(saved["model"])
    if change == "freeze":
        resumed[2].bias.requires_grad_(False)
    opt2 = pdt.PDT(torch.optim.AdamW(resumed.parameters(), lr=0.01),
                   **{**options, **({} if change in ("freeze", "unfreeze") else change)})
    with pytest.warns(RuntimeWarning, match="burn-in afresh") as caught:
        opt2.load_state_dict(saved["opt"])
    assert named in str(caught[0].message)
    assert opt2.ring.count == 0 and opt2.schedule.steps == 28 and opt2.stats.merges == opt.stats.merges
    moments = [state["exp_avg"] for state in opt.optimizer.state.values()]
    assert all(torch.equal(a, state["exp_avg"]) for a, state in zip(moments, opt2.optimizer.state.values()))
    merges = opt2.stats.merges
    train(resumed, opt2, data[28:])
    assert opt2.stats.merges > merges


def test_a_checkpoint_that_fits_loads_without_a_warning():
    model = make_mlp()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=2)
    train(model, opt, batches(7))
    opt2 = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt2.load_state_dict(save_and_load(opt.state_dict()))
    assert opt2.ring.count == opt.ring.count == 3


def test_an_older_checkpoint_from_another_ring_dtype_fails_clearly():
    """Checkpoints saved before the ring's settings were kept cannot say what changed: a ring
    that does not fit is refused, naming ring_dtype."""
    model = make_mlp()
    saved = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=2).state_dict()
    metadata = checkpoint.decode(saved["param_groups"][0]["pdt_state"])
    del metadata["ring_settings"]
    saved["param_groups"][0]["pdt_state"] = checkpoint.encode(metadata)
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=2, ring_dtype="bfloat16")
    with pytest.raises(ValueError, match="ring_dtype"):
        opt.load_state_dict(saved)


def timing_free(stats) -> dict:
    return {k: v for k, v in stats.as_dict().items() if k != "prediction_seconds"}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_host_ring_follows_the_device_ring_exactly(optimizer):
    # Same values, same order of operations: only where the ring lives differs.
    options = dict(snap_every=4, history=4, burn_in=4, tau=3, rule="reference", chunk_size=1024)
    data = batches(50)
    runs = {}
    for location in ("device", "host"):
        model = make_mlp(hidden=160)  # 1280 elements in its first layer: two chunks of 1024
        inner = torch.optim.SGD(model.parameters(), lr=0.2) if optimizer == "sgd" else torch.optim.AdamW(model.parameters(), lr=0.01)
        opt = pdt.PDT(inner, ring_location=location, **options)
        train(model, opt, data)
        runs[location] = (model, opt)
    (model, opt), (host_model, host) = runs["device"], runs["host"]
    assert isinstance(host.ring, HostSnapshotRing) and host.stats.merges == opt.stats.merges >= 1
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), host_model.parameters()))
    assert torch.equal(opt.ring.flat(), host.ring.flat())
    assert timing_free(opt.stats) == timing_free(host.stats)
    assert host.ring.nbytes() == opt.ring.nbytes() and all(b.device.type == "cpu" for b in host.ring.buffers)


def test_host_ring_rollback_restores_the_snapshots(monkeypatch):
    import pdt_compile.runtime.predictor as predictor

    solve = predictor.solve_dmd
    monkeypatch.setattr(predictor, "solve_dmd", lambda *a, **k: 400.0 * solve(*a, **k))
    rings = {}
    for location in ("device", "host"):
        model = make_mlp()
        opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), rollback_factor=1.5, gradient_limit=None, tau=3, rule="none",
                      snap_every=4, history=4, burn_in=4, ring_location=location)
        train(model, opt, batches(22), report=True)
        assert opt.stats.rollbacks == 1
        rings[location] = opt.ring.flat()
    assert torch.equal(rings["device"], rings["host"])


@pytest.mark.parametrize("kind", [dict(), dict(pack_limit=64), dict(dtype="bfloat16"), dict(location="host")])
def test_snapshots_come_oldest_first_whatever_slot_the_ring_writes_next(kind):
    # Seven captures into a ring of four: its physical rows are rotated, its snapshots are not.
    params = [torch.zeros(3), torch.zeros(5)]
    ring = make_ring(params, 4, **kind)
    for k in range(7):
        for p in params:
            p.fill_(float(k))
        ring.capture_(params)
    for index, p in enumerate(params):
        expected = torch.tensor([3.0, 4.0, 5.0, 6.0])[:, None].expand(4, p.numel())
        assert torch.equal(ring.snapshots(index), expected)
        if ring.order() != [0, 1, 2, 3]:  # rows in physical order (the bfloat16 ring decodes in time order)
            assert not torch.equal(ring.rows(index), expected)
        assert torch.equal(ring.last_displacement(index), torch.ones(p.numel()))  # 6 - 5
