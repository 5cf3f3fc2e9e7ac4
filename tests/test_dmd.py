"""DMD by the method of snapshots: exact on low-rank linear systems, equal to PyDMD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pdt_compile import forecast
from pdt_compile.dmd import displacement_coefficients, gram, predicted_displacements, select_rank, solve_dmd


def low_rank_system(n=40, r=3, h=7, ahead=3, seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))
    eigenvalues = torch.rand(r, generator=g, dtype=torch.float64) * 0.3 + 0.7
    A = basis @ torch.diag(eigenvalues) @ basis.T
    b = torch.randn(n, generator=g, dtype=torch.float64) * 0.1 if bias else torch.zeros(n, dtype=torch.float64)
    x = [basis @ torch.randn(r, generator=g, dtype=torch.float64)]
    for _ in range(h + ahead - 1):
        x.append(A @ x[-1] + b)
    states = torch.stack(x)
    return states[:h], states[h:]


@pytest.mark.parametrize("modes", ["projected", "exact"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forecast_is_exact_on_low_rank_linear_systems(modes, seed):
    snapshots, future = low_rank_system(seed=seed)
    assert torch.allclose(forecast(snapshots, 3, rank=3, modes=modes), future, atol=1e-9)


@pytest.mark.parametrize("modes", ["projected", "exact"])
def test_affine_forecast_is_exact_on_affine_systems(modes):
    # x_{t+1} = A x_t + b: the displacements follow Δ_{t+1} = A Δ_t (rank r + 1 with Δ_0).
    snapshots, future = low_rank_system(bias=True, h=8)
    predicted = forecast(snapshots, 3, rank=4, modes=modes, dynamics="affine")
    assert torch.allclose(predicted, future, atol=1e-8)
    linear = forecast(snapshots, 3, rank=4, modes=modes, dynamics="linear")
    assert not torch.allclose(linear, future, atol=1e-4)  # the test can tell the two apart


@pytest.mark.parametrize("modes", ["projected", "exact"])
@pytest.mark.parametrize("rank", [2, "full", 0.99, "gavish_donoho"])
def test_forecast_equals_pydmd_in_float64(modes, rank):
    pydmd = pytest.importorskip("pydmd")
    snapshots, _ = low_rank_system(h=6, seed=4)
    snapshots = snapshots + 1e-3 * torch.randn(snapshots.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    svd_rank = {"full": -1, "gavish_donoho": 0}.get(rank, rank)
    model = pydmd.DMD(svd_rank=svd_rank, exact=modes == "exact", opt=-1)
    with np.errstate(all="ignore"):
        model.fit(snapshots.numpy().T)
    expected = np.stack([(model.modes @ (model.eigs**k * model.amplitudes)).real for k in (1, 2, 3)])
    ours = forecast(snapshots, 3, rank=rank, modes=modes).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-9 * np.abs(expected).max())


def test_float32_snapshots_keep_the_displacements():
    # Weights ~1 with drifts ~1e-4: the float64 Gram of float32 snapshots, forecasting from
    # differences, keeps the displacements to float32 precision (a float32 Gram would not).
    snapshots, _ = low_rank_system(n=2000, h=6)
    offset = torch.randn(2000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    snaps32 = (snapshots * 1e-3 + offset).float()

    def displacements(ring):
        k = displacement_coefficients(gram(ring), 2, rows=2000, rank=3, dynamics="affine")
        return predicted_displacements(k, ring, ring[-1], k[:, -1]).double()

    exact = displacements(snaps32.double())
    approx = displacements(snaps32)
    assert (approx - exact).abs().max() < 1e-4 * exact.abs().max()
    float32_gram = displacement_coefficients(
        (snaps32 @ snaps32.T).double(), 2, rows=2000, rank=3, dynamics="affine"
    )
    lossy = predicted_displacements(float32_gram.float(), snaps32, snaps32[-1], float32_gram[:, -1]).double()
    assert (lossy - exact).abs().max() > 1e-2 * exact.abs().max()  # why the Gram is float64


def test_gram_is_float64_and_symmetric():
    ring = torch.randn(5, 100)
    k = gram(ring)
    assert k.dtype == torch.float64 and torch.allclose(k, k.T)
    assert torch.allclose(k, ring.double() @ ring.double().T)


def test_select_rank_rules():
    sigma = torch.tensor([[10.0, 5.0, 1e-3, 1e-4]], dtype=torch.float64)
    assert select_rank(sigma, 1000, "full").item() == 4
    assert select_rank(sigma, 1000, 2).item() == 2
    assert select_rank(sigma, 1000, 0.5).item() == 1
    assert select_rank(sigma, 1000, 0.9).item() == 2
    assert select_rank(sigma, 1000, "gavish_donoho").item() == 2


def test_coefficients_are_batched_and_row_order_free():
    snapshots, _ = low_rank_system(h=6)
    k = gram(snapshots)
    one = displacement_coefficients(k, 3, rows=40, rank=3)
    batch = displacement_coefficients(torch.stack([k, 4 * k]), 3, rows=40, rank=3)
    assert batch.shape == (2, 3, 6)
    assert torch.allclose(batch[0], one)
    # A permuted ring with permuted coefficients predicts the same displacements.
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    physical = torch.zeros_like(one)
    physical[:, perm] = one
    ring = snapshots[torch.argsort(perm)]
    s = snapshots[-1]
    direct = predicted_displacements(one, snapshots, s, one[:, -1])
    permuted = predicted_displacements(physical, ring, s, one[:, -1])
    assert torch.allclose(direct, permuted)


@pytest.mark.parametrize("modes", ["projected", "exact"])
@pytest.mark.parametrize("dynamics", ["linear", "affine"])
@pytest.mark.parametrize("rank", ["gavish_donoho", "full", 2])
def test_the_last_step_alone_is_the_last_row_of_every_step(modes, dynamics, rank):
    snapshots, _ = low_rank_system(h=6)
    grams = torch.stack([gram(snapshots), gram(snapshots[:, :7] ** 2)]).numpy()
    for steps in (1, 5, 8):
        every = solve_dmd(grams, steps, rows=40, rank=rank, modes=modes, dynamics=dynamics)
        last = solve_dmd(grams, steps, rows=40, rank=rank, modes=modes, dynamics=dynamics, last_only=True)
        assert last.shape == (2, 1, 6)
        np.testing.assert_allclose(last, every[:, -1:], rtol=1e-9, atol=1e-12)


def test_forecast_rejects_bad_input():
    with pytest.raises(ValueError, match="snapshots must be"):
        forecast(torch.zeros(1, 5), 2)
    with pytest.raises(ValueError, match="steps"):
        forecast(torch.zeros(4, 5), 0)


def test_full_rank_device_solve_equals_the_host_solve():
    from pdt_compile.dmd import full_rank_coefficients

    g = torch.Generator().manual_seed(3)
    for scale in (1e-1, 1e-2, 1e-3):  # drift per interval relative to the weights
        base = torch.randn(2000, generator=g, dtype=torch.float64)
        drift = scale * torch.randn(2000, generator=g, dtype=torch.float64)
        noise = [0.1 * scale * torch.randn(2000, generator=g, dtype=torch.float64) for _ in range(5)]
        snaps = torch.stack([base + (k + 1) * drift + noise[k] for k in range(5)]).float().double()
        grams = (snaps @ snaps.T)[None]
        host = displacement_coefficients(grams, 6, rows=2000, rank="full")[0]
        device, s_coefficients = full_rank_coefficients(grams, 6)
        assert torch.equal(s_coefficients, device[..., -1])
        p_host = predicted_displacements(host, snaps, snaps[-1], host[:, -1])
        p_device = predicted_displacements(device[0], snaps, snaps[-1], device[0, :, -1])
        assert ((p_host - p_device).norm() / p_host.norm()).item() < 1e-7


def test_full_rank_device_solve_predicts_nothing_from_a_singular_gram():
    from pdt_compile.dmd import full_rank_coefficients

    row = torch.randn(1, 50, dtype=torch.float64)
    snaps = row.expand(5, 50)  # five identical snapshots: K is singular
    coefficients, s_coefficients = full_rank_coefficients((snaps @ snaps.T)[None], 3)
    assert torch.count_nonzero(coefficients) == 0 and torch.count_nonzero(s_coefficients) == 0


def test_segment_grams_equal_the_gram_of_each_segment():
    from pdt_compile.dmd import segment_grams

    g = torch.Generator().manual_seed(3)
    base = torch.randn(700, generator=g)
    rows = [base + 1e-3 * (i + 1) * torch.randn(700, generator=g) for i in range(5)]
    spans = [slice(0, 1), slice(1, 301), slice(301, 700)]
    packed = segment_grams(rows, spans)
    assert packed.shape == (3, 5, 5) and packed.dtype == torch.float64
    for span, block in zip(spans, packed):
        assert torch.allclose(block, gram([row[span] for row in rows]), rtol=1e-13, atol=0)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 7), m=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_small_cholesky_solve_equals_the_library_solve(n, m, seed):
    from pdt_compile.dmd import small_cholesky_solve

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, n + 2, n, generator=g, dtype=torch.float64)
    a = x.transpose(-1, -2) @ x + 1e-3 * torch.eye(n, dtype=torch.float64)
    a[2] = -a[2]  # not positive definite: no solution, zero
    rhs = torch.randn(3, n, m, generator=g, dtype=torch.float64)
    solution, usable = small_cholesky_solve(a, rhs)
    assert usable.tolist() == [True, True, False]
    expected = torch.cholesky_solve(rhs[:2], torch.linalg.cholesky(a[:2]))
    assert torch.allclose(solution[:2], expected, rtol=1e-8, atol=1e-10)
    assert torch.count_nonzero(solution[2]) == 0


def test_gram_summed_in_blocks_is_the_float64_gram():
    g = torch.Generator().manual_seed(0)
    for length in (3 * 4096 + 17, 2 * 4096, 100):  # a tail, none, too short to block
        rows = torch.randn(4, length, generator=g)
        expected = rows.double() @ rows.double().T
        assert torch.allclose(gram(list(rows), block=4096), expected, rtol=1e-12, atol=0)
