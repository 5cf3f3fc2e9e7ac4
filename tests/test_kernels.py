"""Prediction kernels: the Inductor-compiled passes equal the plain-torch ones, and the Gram
keeps float64 accuracy."""

from __future__ import annotations

import pytest
import torch

import pdt_compile as pdt
from pdt_compile.dmd import gram
from pdt_compile.radial import merged_radial_part, merged_radial_sums, radial_coefficient
from pdt_compile.runtime import kernels as kernels_module
from pdt_compile.runtime.kernels import Kernels, compiler_available, predict_pass_, use_compiled

from conftest import batches, make_mlp, train

needs_compiler = pytest.mark.skipif(not compiler_available(torch.device("cpu")), reason="no C++ compiler for Inductor")


def snapshots(n: int = 5000, h: int = 5, seed: int = 0) -> list[torch.Tensor]:
    """Nearly collinear float32 snapshots: a large weight vector drifting by small steps."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=g, dtype=torch.float64)
    drift = 1e-3 * torch.randn(n, generator=g, dtype=torch.float64)
    noise = [1e-4 * torch.randn(n, generator=g, dtype=torch.float64) for _ in range(h)]
    return [(base + (i + 1) * drift + noise[i]).float() for i in range(h)]


def reference_gram(rows: list[torch.Tensor]) -> torch.Tensor:
    stacked = torch.stack(rows).double()
    return stacked @ stacked.T


def test_gram_of_float32_rows_is_float64_accurate():
    rows = snapshots()
    exact = reference_gram(rows)
    assert gram(rows).dtype == torch.float64
    assert torch.allclose(gram(rows), exact, rtol=1e-13, atol=0)
    # What float64 buys: the Gram of the displacements, recovered from the raw Gram, is exact
    # to ~1e-9; a float32 Gram loses it entirely.
    d = torch.tensor([[1.0, -1.0, 0, 0, 0]], dtype=torch.float64)
    truth = (d @ exact @ d.T).item()
    assert abs((d @ gram(rows) @ d.T).item() - truth) <= 1e-6 * truth
    float32 = torch.stack(rows) @ torch.stack(rows).T
    assert abs((d @ float32.double() @ d.T).item() - truth) > 1e-2 * truth


@pytest.mark.parametrize("as_matrix", [False, True])
def test_the_eager_gram_is_the_float64_gram_and_keeps_the_displacements(as_matrix):
    """The plain-torch Gram (a float64 copy and a matrix product) is :func:`gram` to float64
    rounding, so the displacements' Gram recovered from it stays exact to ~1e-9."""
    rows = snapshots(70_000)
    exact = reference_gram(rows)
    ours = kernels_module.eager_gram(torch.stack(rows) if as_matrix else rows)
    assert ours.dtype == torch.float64 and torch.allclose(ours, gram(rows), rtol=1e-13, atol=0)
    d = torch.tensor([[1.0, -1.0, 0, 0, 0]], dtype=torch.float64)
    truth = (d @ exact @ d.T).item()
    assert abs((d @ ours @ d.T).item() - truth) <= 1e-6 * truth


def _inputs(n: int = 3000, h: int = 5, steps: int = 4, seed: int = 1):
    rows = snapshots(n, h, seed)
    g = torch.Generator().manual_seed(seed + 1)
    weights = rows[-1] + 1e-3 * torch.randn(n, generator=g)
    coefficients = 0.5 * torch.randn(steps, h, generator=g)
    s_coefficients = 1e-3 * torch.randn(steps, generator=g)
    s_weights = torch.zeros(h)
    s_weights[h - 1] = 1.0
    slot_mask = torch.zeros(h, dtype=torch.bool)
    slot_mask[0] = True
    return weights, rows, s_weights, slot_mask, coefficients, s_coefficients


FILTERS = [("reference", True, None, True), ("paper", False, None, False), ("reference", True, 1.0, True)]
"""(rule, trend, drift, shift) cases of the prediction pass."""


@pytest.mark.parametrize("rule,trend,drift,shift", FILTERS)
def test_torch_kernels_on_chunks_equal_one_whole_pass(rule, trend, drift, shift):
    config = pdt.PDTConfig(snap_every=1, rule=rule, trend=trend, drift=drift, after_merge="shift" if shift else "keep",
                           kernels="torch", chunk_size=1024)
    weights, rows, _, _, *coefficients = _inputs()
    horizon, active = torch.tensor(4.0), torch.tensor(True)
    whole_w, whole_rows = weights.clone(), torch.stack(rows)
    count = predict_pass_(whole_w, whole_rows, len(rows) - 1, 0, *coefficients, horizon, active, None, rule, trend,
                          drift, shift)
    chunked = Kernels(config, torch.device("cpu"), weights.numel())
    chunk_count = chunked.predict_(weights, rows, len(rows) - 1, 0, *coefficients, horizon, active, None)
    assert 0 < int(count) < weights.numel()
    assert int(chunk_count) == int(count)
    assert torch.equal(weights, whole_w)
    assert all(torch.equal(a, b) for a, b in zip(rows, whole_rows))


@pytest.mark.parametrize("rule,trend,drift,shift", FILTERS)
def test_stacked_rows_equal_unrolled_rows(rule, trend, drift, shift):
    # Plain torch runs over an [h, n] tensor with row indices, compiled kernels over h unrolled
    # rows with one-hot selectors: the same maths, summed in another order.
    weights, rows, s_weights, slot_mask, *coefficients = _inputs()
    horizon, active = torch.tensor(4.0), torch.tensor(True)
    unrolled_w, unrolled_rows, unrolled_jump = weights.clone(), [r.clone() for r in rows], torch.zeros_like(weights)
    unrolled = predict_pass_(unrolled_w, unrolled_rows, s_weights, slot_mask, *coefficients, horizon, active,
                             unrolled_jump, rule, trend, drift, shift)
    stacked_w, stacked_rows, stacked_jump = weights.clone(), torch.stack(rows), torch.zeros_like(weights)
    stacked = predict_pass_(stacked_w, stacked_rows, len(rows) - 1, 0, *coefficients, horizon, active, stacked_jump,
                            rule, trend, drift, shift)
    assert 0 < int(stacked) < weights.numel() and abs(int(stacked) - int(unrolled)) <= 2
    assert torch.allclose(stacked_w, unrolled_w, atol=1e-6) and torch.allclose(stacked_jump, unrolled_jump, atol=1e-6)
    assert torch.equal(stacked_rows[0], stacked_w)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(stacked_rows, unrolled_rows))


def test_inactive_parameter_is_only_captured():
    weights, rows, s_weights, slot_mask, coefficients, s_coefficients = _inputs()
    before = [r.clone() for r in rows]
    w = weights.clone()
    count = predict_pass_(weights, rows, s_weights, slot_mask, coefficients, s_coefficients,
                          torch.tensor(4.0), torch.tensor(False), None, "reference", True, 1.0, True)
    assert int(count) == 0 and torch.equal(weights, w)
    assert torch.equal(rows[0], w) and all(torch.equal(a, b) for a, b in zip(rows[1:], before[1:]))


def test_auto_compiles_only_large_models(monkeypatch):
    config = pdt.PDTConfig(snap_every=1)
    cpu = torch.device("cpu")
    assert not use_compiled(config, cpu, 10_000)
    assert use_compiled(config, cpu, 1 << 21) == compiler_available(cpu)
    assert not use_compiled(config.replace(kernels="torch"), cpu, 1 << 24)
    # On CUDA too, where Triton is there (7x less GPU time on an H200); not on other devices.
    monkeypatch.setattr(kernels_module, "compiler_available", lambda device: True)
    assert use_compiled(config, torch.device("cuda"), 1 << 24)
    assert not use_compiled(config, torch.device("cuda"), 10_000)
    assert not use_compiled(config, torch.device("mps"), 1 << 24)


@pytest.mark.inductor
@needs_compiler
@pytest.mark.parametrize("rule,trend,drift", [("reference", True, 1.0), ("paper", False, None)])
def test_inductor_kernels_equal_torch_kernels(rule, trend, drift):
    weights, rows, *rest = _inputs()
    horizon, active = torch.tensor(4.0), torch.tensor(True)
    results = {}
    for kernels in ("torch", "inductor", "inductor, counted outside (as on CUDA)"):
        config = pdt.PDTConfig(snap_every=1, rule=rule, trend=trend, drift=drift, kernels=kernels.split(",")[0])
        runner = Kernels(config, torch.device("cpu"), weights.numel())
        runner.fused_count = "outside" not in kernels
        w, r = weights.clone(), [row.clone() for row in rows]
        grams = runner.gram(r)
        jump = torch.zeros_like(w)
        count = runner.predict_(w, r, *rest, horizon, active, jump)
        results[kernels] = (grams, int(count), w, r, jump)
    torch_config = pdt.PDTConfig(snap_every=1, kernels="torch")
    assert Kernels(torch_config, torch.device("cpu"), 1).fused_count
    assert not Kernels(torch_config, torch.device("cuda"), 1).fused_count  # CUDA counts outside the kernel
    outside = results.pop("inductor, counted outside (as on CUDA)")
    assert outside[1] == results["inductor"][1] and torch.equal(outside[2], results["inductor"][2])
    (g0, c0, w0, r0, j0), (g1, c1, w1, r1, j1) = results["torch"], results["inductor"]
    assert torch.allclose(g1, reference_gram(rows), rtol=1e-13, atol=0)
    assert torch.allclose(g0, g1, rtol=1e-13, atol=0)
    assert 0 < c1 < weights.numel()
    assert abs(c0 - c1) <= 2  # an element on a bound may round either way
    assert torch.allclose(w0, w1, atol=1e-6) and torch.allclose(j0, j1, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(r0, r1))


@pytest.mark.inductor
@needs_compiler
def test_eager_pdt_with_inductor_kernels_follows_torch_kernels():
    runs = []
    for kernels in ("torch", "inductor"):
        model = make_mlp(hidden=64)
        opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                      snap_every=3, history=4, burn_in=4, tau=3, kernels=kernels, rollback_factor=1.0005,
                      momentum_spacing=None)
        train(model, opt, batches(45), report=True)
        runs.append((model, opt))
    (model0, opt0), (model1, opt1) = runs
    assert opt1.stats.predictions == opt0.stats.predictions >= 8
    assert opt1.stats.merges == opt0.stats.merges >= 1 and opt1.stats.rollbacks == opt0.stats.rollbacks
    assert [r for _, r in opt1.stats.mask_ratio_history] == pytest.approx([r for _, r in opt0.stats.mask_ratio_history], abs=2e-3)
    for a, b in zip(model0.parameters(), model1.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.inductor
@needs_compiler
def test_a_sweep_in_one_process_compiles_each_kernel_variant_once():
    """Runs with other histories and rules in one process (a sweep in a notebook): every variant
    of a kernel compiles from a code object of its own, so Dynamo's recompile limit, here 1,
    is never reached (one code object for all failed a history sweep at its third value)."""
    with torch._dynamo.config.patch(recompile_limit=1):
        for history, rule in ((3, "reference"), (4, "reference"), (4, "paper")):
            model = make_mlp()
            opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.2), snap_every=2, history=history, burn_in=1,
                          tau=3, rule=rule, kernels="inductor")
            train(model, opt, batches(12))
            assert opt.stats.predictions >= 2


@pytest.mark.inductor
@needs_compiler
def test_eager_pdt_with_boundary_graphs_follows_torch_kernels():
    """kernels="graph": the eager step, each boundary one compiled graph (built at the first
    boundary), the counts read at the next boundary; ordinary steps take the quiet path."""
    runs = []
    for kernels in ("torch", "graph"):
        model = make_mlp(hidden=64)
        opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=True),
                      snap_every=3, history=4, burn_in=4, tau=3, kernels=kernels, momentum_spacing=None)
        quiet = []
        light_next = opt._light_next
        opt._light_next = lambda: (kind := light_next(), quiet.append(kind is False))[0]
        train(model, opt, batches(45), report=True)
        runs.append((model, opt, quiet))
    (model0, opt0, quiet0), (model1, opt1, quiet1) = runs
    assert opt0.compiled_step is None
    step = opt1.compiled_step
    assert step is not None and not step.traced and len(step.graphs["predict"]) == 1
    assert any("pdt_pass" in node.meta for node in step.graphs["predict"][0].graph.nodes)
    assert quiet1 == quiet0 and sum(quiet1) >= 20
    assert opt1.stats.predictions == opt0.stats.predictions >= 8
    assert opt1.stats.merges == opt0.stats.merges >= 1
    assert [r for _, r in opt1.stats.mask_ratio_history] == pytest.approx([r for _, r in opt0.stats.mask_ratio_history], abs=2e-3)
    for a, b in zip(model0.parameters(), model1.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_boundary_graphs_stay_off_on_a_ring_they_cannot_run_on():
    model = make_mlp()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.05), snap_every=3, history=4, burn_in=4, tau=3,
                  kernels="graph", ring_dtype="bfloat16")
    train(model, opt, batches(20))
    assert opt.compiled_step is None and opt.stats.predictions >= 1


@pytest.mark.parametrize("kernels", ["torch", pytest.param("inductor", marks=needs_compiler)])
def test_radial_passes_equal_the_whole_tensor_maths(kernels):
    """Plain torch on chunks (a chunk smaller than the tensor) and Inductor alike."""
    g = torch.Generator().manual_seed(3)
    merged = torch.randn(3000, generator=g)
    jump = 1e-2 * torch.randn(3000, generator=g) * (torch.rand(3000, generator=g) < 0.4)
    passes = Kernels(pdt.PDTConfig(snap_every=1, kernels=kernels, chunk_size=1024), torch.device("cpu"), 3000)
    assert passes.compiled == (kernels == "inductor")
    sums = merged_radial_sums(jump, merged)
    assert torch.allclose(passes.radial_sums(jump, merged), sums, rtol=1e-5)
    coefficient = radial_coefficient(sums, inward=False)
    assert torch.allclose(passes.radial_part(jump, merged, coefficient), merged_radial_part(jump, merged, coefficient))
