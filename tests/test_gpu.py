"""CUDA checks of the compiled path (skipped without a GPU; run them all with benchmarks/gpu_check.py)."""

from __future__ import annotations

import pytest
import torch

import pdt_compile as pdt
from pdt_compile.passes.predict import solve_coefficients_op

from conftest import amp_step_function, batches, make_mlp, step_function

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CONFIG = dict(snap_every=3, history=4, burn_in=4, tau=3, rule="reference", momentum_spacing=None)  # SGD's momentum too: predictions within a few steps


def test_host_solve_is_kept_out_of_cuda_graph_capture():
    # The tag tells Inductor's graph partitioning to leave the h x h solve outside capture.
    if hasattr(torch.Tag, "cudagraph_unsafe"):
        assert torch.Tag.cudagraph_unsafe in torch.ops.pdt.solve_coefficients.default.tags
    assert solve_coefficients_op is not None


def _sgd_momentum(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, foreach=True)


def _train(mode: str | None, compiled: bool, device: str = "cuda", make_opt=_sgd_momentum,
           steps: int = 36, unfreeze_at: int | None = None, column_major: bool = False, moved_later: bool = False):
    """``unfreeze_at``: the first layer frozen until that step, then unfrozen (PDT tracks it
    from the next boundary, its compiled variants built again). ``column_major``: the matrices
    stored as a channels-last convolution's weights are (not contiguous). ``moved_later``: the
    optimizer and PDT made on the CPU, the model moved to ``device`` after."""
    model = make_mlp()
    if moved_later:
        opt = pdt.PDT(make_opt(model.parameters()), **CONFIG)
    model = model.to(device)
    for layer in (model[0], model[2]) if column_major else ():
        layer.weight.data = layer.weight.data.t().contiguous().t()
    frozen = list(model[0].parameters()) if unfreeze_at is not None else []
    for p in frozen:
        p.requires_grad_(False)
    if not moved_later:
        opt = pdt.PDT(make_opt(model.parameters()), **CONFIG)
    step = step_function(model, opt)
    if compiled:
        step = pdt.compile(step, optimizer=opt, backend="inductor", mode=mode)
    for index, (x, y) in enumerate(batches(steps)):
        if index == unfreeze_at:
            for p in frozen:
                p.requires_grad_(True)
        loss = step(x.to(device), y.to(device))
        if not compiled:
            opt.report_loss(loss)  # as the compiled step reports what it returns
    return model, opt


def _assert_same_run(reference_model, reference, model, opt):
    assert opt.stats.merges == reference.stats.merges >= 1
    for a, b in zip(reference_model.parameters(), model.parameters()):
        assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_compiled_cuda_step_equals_eager(mode):
    eager_model, eager = _train(None, compiled=False)
    model, opt = _train(mode, compiled=True)
    _assert_same_run(eager_model, eager, model, opt)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_a_fused_cuda_optimizer_steps_eagerly_and_follows_eager_pdt(mode):
    fused_adamw = lambda p: torch.optim.AdamW(p, lr=0.01, fused=True)  # noqa: E731
    eager_model, eager = _train(None, compiled=False, make_opt=fused_adamw)
    model, opt = _train(mode, compiled=True, make_opt=fused_adamw)
    assert not opt.compiled_step.traced
    _assert_same_run(eager_model, eager, model, opt)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_compiled_schedule_free_moves_its_parameters_in_the_boundary_graphs_as_eager_pdt_does(mode):
    schedulefree = pytest.importorskip("schedulefree")

    def schedule_free(params):
        opt = schedulefree.SGDScheduleFree(params, lr=0.5, momentum=0.9, warmup_steps=3)
        opt.train()
        return opt

    eager_model, eager = _train(None, compiled=False, make_opt=schedule_free)
    model, opt = _train(mode, compiled=True, make_opt=schedule_free)
    assert opt.compiled_step.runtime is not None and opt.compiled_step.runtime.followers[0]
    _assert_same_run(eager_model, eager, model, opt)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("compiled", [False, True])
def test_a_model_moved_to_cuda_after_its_optimizer_was_made_trains_as_one_moved_before(compiled):
    """``opt = ...; model.cuda()``, which plain optimizers follow, and what Accelerate's
    ``prepare`` does to a model whose optimizer was made first: PDT's ring follows the model."""
    reference_model, reference = _train(None, compiled=compiled)
    model, opt = _train(None, compiled=compiled, moved_later=True)
    assert opt.ring.device.type == "cuda"
    _assert_same_run(reference_model, reference, model, opt)


def _lookahead(params):
    po = pytest.importorskip("pytorch_optimizer")
    return po.Lookahead(torch.optim.SGD(params, lr=0.05, momentum=0.9), k=4, alpha=0.5)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_compiled_merges_move_the_slow_weights_of_column_major_weights_on_cuda_as_eager_pdt_does(mode):
    eager_model, eager = _train(None, compiled=False, make_opt=_lookahead, column_major=True)
    model, opt = _train(mode, compiled=True, make_opt=_lookahead, column_major=True)
    assert not model[0].weight.is_contiguous() and opt.compiled_step.runtime.followers[0]
    _assert_same_run(eager_model, eager, model, opt)
    for a, b in zip(eager_model.parameters(), model.parameters()):
        assert torch.allclose(eager.optimizer.state[a]["slow_params"], opt.optimizer.state[b]["slow_params"], atol=1e-4)


@pytest.mark.gpu
@cuda
def test_eager_boundary_graphs_on_cuda_follow_plain_torch_kernels():
    runs = []
    for kernels in ("torch", "graph"):
        model = make_mlp().cuda()
        opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=True), kernels=kernels, **CONFIG)
        step = step_function(model, opt)
        for x, y in batches(36):
            step(x.cuda(), y.cuda())
        runs.append((model, opt))
    (model0, opt0), (model1, opt1) = runs
    assert opt1.compiled_step is not None and not opt1.compiled_step.traced
    _assert_same_run(model0, opt0, model1, opt1)


@pytest.mark.gpu
@cuda
def test_a_compiled_prediction_writes_its_buffers_without_waiting_for_the_gpu():
    # A copy from pageable host memory synchronises the stream: the host would wait for the
    # backward pass before launching the prediction graph (sync debug mode raises on such a wait).
    _, opt = _train(None, compiled=True)
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.compiled_step.runtime.prepare_prediction()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@cuda
def test_host_ring_holds_no_device_memory_and_follows_the_device_ring():
    runs = {}
    for location in ("device", "host"):
        model = make_mlp().cuda()
        before = torch.cuda.memory_allocated()
        opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), ring_location=location, **CONFIG)
        allocated = torch.cuda.memory_allocated() - before
        step = step_function(model, opt)
        for x, y in batches(36):
            step(x.cuda(), y.cuda())
        runs[location] = (model, opt, allocated)
    (model, opt, allocated), (host_model, host, host_allocated) = runs["device"], runs["host"]
    assert allocated >= opt.ring.nbytes() and host_allocated == 0
    assert all(b.is_pinned() and b.device.type == "cpu" for b in host.ring.buffers)
    assert host.stats.merges == opt.stats.merges >= 1
    for a, b in zip(model.parameters(), host_model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(opt.ring.flat(), host.ring.flat(), atol=1e-6)


@pytest.mark.gpu
@cuda
def test_float_lr_scheduler_never_recompiles_on_cuda():
    model = make_mlp().cuda()
    # decay_window=None: predictions run while the rate decays (as in tests/test_compile.py).
    opt = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=0.01, foreach=True), decay_window=None, **CONFIG)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + 0.01 * step))
    step = pdt.compile(step_function(model, opt), optimizer=opt, backend="inductor")
    data = [(x.cuda(), y.cuda()) for x, y in batches(10, size=8)]
    for index in range(30):
        step(*data[index % len(data)])
        scheduler.step()
    with torch.compiler.set_stance("fail_on_recompile"):
        for index in range(30, 90):
            step(*data[index % len(data)])
            scheduler.step()
    assert opt.stats.predictions >= 15
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.gpu
@cuda
def test_triton_kernels_follow_torch_kernels():
    runs = []
    for kernels in ("torch", "inductor"):
        model = make_mlp(hidden=64).cuda()
        opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), kernels=kernels, **CONFIG)
        step = step_function(model, opt)
        for x, y in batches(36):
            step(x.cuda(), y.cuda())
        runs.append((model, opt))
    (model0, opt0), (model1, opt1) = runs
    assert opt1.stats.merges == opt0.stats.merges >= 1
    for a, b in zip(model0.parameters(), model1.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.gpu
@cuda
def test_compiled_step_with_float16_autocast_and_grad_scaler_equals_eager():
    def run(compiled: bool):
        model = make_mlp().cuda()
        opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=True), **CONFIG)
        step = amp_step_function(model, opt, torch.amp.GradScaler("cuda", init_scale=2.0**10), "cuda", torch.float16)
        if compiled:
            step = pdt.compile(step, optimizer=opt, backend="inductor")
        for x, y in batches(36):
            loss = step(x.cuda(), y.cuda())
            if not compiled:
                opt.report_loss(loss)  # as the compiled step reports what it returns
        return model, opt

    eager_model, eager = run(compiled=False)
    model, opt = run(compiled=True)
    assert opt.stats.merges == eager.stats.merges >= 1
    # float16 rounding moves the compiled run off the eager one by ~1e-5 within 20 steps (on the
    # CPU, where the same steps with float32 stay within 1e-5), enough to flip an element's
    # acceptance at a later merge: the rest must agree.
    for a, b in zip(eager_model.parameters(), model.parameters()):
        assert ((a - b).abs() > 1e-3).float().mean() <= 0.02


@pytest.mark.gpu
@cuda
def test_the_runaway_guard_reads_cuda_losses_in_batches():
    """``loss_reads="auto"``: CUDA loss tensors wait on the device until 16 are in or a snapshot
    is due, so the guard costs no synchronisation per step; CPU losses are read at once."""
    model = make_mlp().cuda()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), runaway_factor=3.0, snap_every=40, history=4, burn_in=4)
    for step, (x, y) in enumerate(batches(20), start=1):
        loss = torch.nn.functional.cross_entropy(model(x.cuda()), y.cuda())
        loss.backward()
        opt.step()
        opt.report_loss(loss)
        opt.zero_grad()
        assert len(opt._unread_losses) == step % 16
        assert len(opt.schedule.recent_losses) == 16 * (step // 16)
    opt.report_loss(torch.tensor(0.5))  # a CPU loss: the CUDA ones before it are read first
    assert opt._unread_losses == [] and len(opt.schedule.recent_losses) == 21


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_a_layer_unfrozen_mid_run_follows_eager_under_cuda_graphs(mode):
    eager_model, eager = _train(None, compiled=False, steps=48, unfreeze_at=20)
    model, opt = _train(mode, compiled=True, steps=48, unfreeze_at=20)
    assert len(opt.ring.params) == len(eager.ring.params) == 4
    _assert_same_run(eager_model, eager, model, opt)



@pytest.mark.gpu
@cuda
def test_sams_two_step_loop_compiled_on_cuda_follows_eager():
    """SAM's second_step is PDT's step, its boundary work eager (no boundary graphs) in both."""
    po = pytest.importorskip("pytorch_optimizer")
    runs = []
    for compiled in (False, True):
        model = make_mlp().cuda()
        opt = pdt.PDT(po.SAM(model.parameters(), torch.optim.SGD, lr=0.05, momentum=0.9), **CONFIG)

        def train_step(x, y, model=model, opt=opt):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.first_step(zero_grad=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.second_step(zero_grad=True)
            return loss

        step = pdt.compile(train_step, optimizer=opt, backend="inductor") if compiled else train_step
        for x, y in batches(36):
            loss = step(x.cuda(), y.cuda())
            if not compiled:
                opt.report_loss(loss)
        runs.append((model, opt))
    _assert_same_run(*runs[0], *runs[1])
