"""CUDA checks of the compiled path (skipped without a GPU; run them all with benchmarks/gpu_check.py)."""

from __future__ import annotations

import pytest
import torch

import pdt_compile as pdt
from pdt_compile.passes.predict import solve_coefficients_op

from conftest import batches, make_mlp, step_function

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CONFIG = dict(snap_every=3, history=4, burn_in=4, tau=3, rule="reference")


def test_host_solve_is_kept_out_of_cuda_graph_capture():
    # The tag tells Inductor's graph partitioning to leave the h x h solve outside capture.
    if hasattr(torch.Tag, "cudagraph_unsafe"):
        assert torch.Tag.cudagraph_unsafe in torch.ops.pdt.solve_coefficients.default.tags
    assert solve_coefficients_op is not None


def _train(mode: str | None, compiled: bool, device: str = "cuda"):
    model = make_mlp().to(device)
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=True), **CONFIG)
    step = step_function(model, opt)
    if compiled:
        step = pdt.compile(step, optimizer=opt, backend="inductor", mode=mode)
    for x, y in batches(36):
        step(x.to(device), y.to(device))
    return model, opt


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_compiled_cuda_step_equals_eager(mode):
    eager_model, eager = _train(None, compiled=False)
    model, opt = _train(mode, compiled=True)
    assert opt.stats.merges == eager.stats.merges >= 1
    for a, b in zip(eager_model.parameters(), model.parameters()):
        assert torch.allclose(a, b, atol=1e-4)
