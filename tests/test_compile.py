"""@pdt.compile: same weights, masks and stats as the eager PDT; tagged nodes; no recompiles."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import pdt_compile as pdt
from pdt_compile.api import replaced_step
from pdt_compile.passes.analysis import find_parameter_writes
from pdt_compile.passes.predict import group_grams, solve_on_device
from pdt_compile.runtime.schedule import Phase

from conftest import Beside, ComplexLinear, amp_step_function, batches, lazy_mlp, loss_of, make_mlp, run_steps, save_and_load, step_function, train

CONFIG = dict(snap_every=3, history=4, burn_in=4, tau=3, rule="reference", momentum_spacing=None)  # SGD's momentum too: predictions within a few steps
OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, foreach=True),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, foreach=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01, foreach=True),
}


def run_eager(make_opt, data, report=True, **config):
    """Eager training; ``report``: each loss reported, as a compiled step reports what it returns
    (the default adaptive tau reads them)."""
    model = make_mlp()
    opt = pdt.PDT(make_opt(model.parameters()), **{**CONFIG, **config})
    for x, y in data:
        loss = loss_of(model, x, y)
        loss.backward()
        opt.step()
        if report:
            opt.report_loss(loss)
        opt.zero_grad()
    return model, opt


def run_compiled(make_opt, data, backend="aot_eager", **config):
    model = make_mlp()
    opt = pdt.PDT(make_opt(model.parameters()), **{**CONFIG, **config})
    train_step = pdt.compile(step_function(model, opt), optimizer=opt, backend=backend)
    for x, y in data:
        train_step(x, y)
    return model, opt, train_step


def run_plain(make_opt, data, compiled):
    """The optimizer alone, eager or compiled: its own compiled-vs-eager drift."""
    model = make_mlp()
    opt = make_opt(model.parameters())
    step = torch.compile(opt.step, backend="aot_eager") if compiled else opt.step
    for x, y in data:
        loss_of(model, x, y).backward()
        step()
        opt.zero_grad()
    return model


def assert_follows_eager(eager_model, eager, model, opt, atol, predictions=0, merges=1):
    """The compiled run made the eager run's predictions and merges (at least as many as given)
    and ends at its weights, within ``atol``."""
    assert opt.stats.predictions == eager.stats.predictions >= predictions
    assert opt.stats.merges == eager.stats.merges >= merges
    assert (opt.stats.prediction_seconds > 0) == (opt.stats.predictions > 0)  # timed through the graphs too
    for a, b in zip(eager_model.parameters(), model.parameters()):
        assert (a - b).abs().max().item() <= atol


def run_changed_mid_run(compiled, change):
    """The MLP with SGD-momentum on 45 batches, eager or through ``pdt.compile`` (aot_eager),
    ``change(model, opt, index)`` called before each step. Returns (model, opt, step)."""
    model = make_mlp()
    opt = pdt.PDT(OPTIMIZERS["sgd_momentum"](model.parameters()), **CONFIG)
    step = run_steps(model, opt, batches(45, size=8), compiled, before=lambda index: change(model, opt, index))
    return model, opt, step


def test_a_plain_torch_compile_runs_the_pdt_step_eagerly():
    """A training step compiled by torch.compile alone (not pdt.compile) breaks the graph at
    PDT's step, which then runs eagerly: the same weights and merges as the eager run, and the
    runtime's host logic (boundaries, predictions) ran at every call."""
    data = batches(36)
    eager_model, eager = run_eager(OPTIMIZERS["sgd_momentum"], data, report=False)  # no loss here either
    model = make_mlp()
    opt = pdt.PDT(OPTIMIZERS["sgd_momentum"](model.parameters()), **CONFIG)

    def train_step(x, y):
        loss_of(model, x, y).backward()
        opt.step()
        opt.zero_grad()

    compiled = torch.compile(train_step, backend="eager")
    for x, y in data:
        compiled(x, y)
    assert opt.stats.predictions == eager.stats.predictions == 8 and opt.stats.merges == eager.stats.merges >= 1
    for p, q in zip(model.parameters(), eager_model.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_compiled_equals_eager(name):
    assert_compiled_equals_eager(name)


def test_compiled_equals_eager_with_the_trend_filter():
    assert_compiled_equals_eager("sgd_momentum", trend=True)


@pytest.mark.parametrize("name, field, value", [("adamw", "moment_ratio", 0.3), ("sgd_momentum", "saturation", 0.5)])
def test_compiled_equals_eager_with_the_moment_and_saturation_filters(name, field, value):
    eager, opt = assert_compiled_equals_eager(name, **{field: value})
    counter = {"moment_ratio": "moment_filtered", "saturation": "saturation_filtered"}[field]
    assert getattr(opt.stats, counter) == getattr(eager.stats, counter) >= 1


@pytest.mark.parametrize("adaptive", ["auto", True])
def test_compiled_equals_eager_with_adaptive_tau_judged_from_counts_read_a_boundary_late(adaptive):
    data = batches(36)
    eager_model, eager = run_eager(OPTIMIZERS["sgd_momentum"], data, report=True, adaptive=adaptive)
    model, opt, _ = run_compiled(OPTIMIZERS["sgd_momentum"], data, adaptive=adaptive)
    assert opt.defers_host_reads and opt.stats.merges == eager.stats.merges >= 2
    assert opt.stats.tau_history == eager.stats.tau_history
    assert len({tau for _, tau in eager.stats.tau_history}) > 1
    for a, b in zip(eager_model.parameters(), model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def assert_compiled_equals_eager(name, **config):
    data = batches(36)
    eager_model, eager = run_eager(OPTIMIZERS[name], data, **config)
    model, opt, _ = run_compiled(OPTIMIZERS[name], data, **config)
    assert eager.stats.predictions == opt.stats.predictions == 8
    assert eager.ring.packs and not opt.ring.packs  # eager: small parameters share rows; compiled: each its own
    assert opt.stats.merges == eager.stats.merges >= 1
    # Tolerance: the plain optimizer's own compiled-vs-eager drift over the same steps,
    # plus float32 rounding of the merge (a few ulps of the weights).
    drift = max(
        (a - b).abs().max().item()
        for a, b in zip(run_plain(OPTIMIZERS[name], data, False).parameters(), run_plain(OPTIMIZERS[name], data, True).parameters())
    )
    tolerance = 10 * drift + 1e-5
    for a, b in zip(eager_model.parameters(), model.parameters()):
        assert (a - b).abs().max().item() <= tolerance
    ratios = [r for _, r in opt.stats.mask_ratio_history]
    eager_ratios = [r for _, r in eager.stats.mask_ratio_history]
    assert ratios == pytest.approx(eager_ratios, abs=2e-3)
    assert torch.allclose(opt.ring.flat(), eager.ring.flat(), atol=tolerance)
    return eager, opt


def test_graphs_carry_tagged_pdt_nodes():
    _, _, step = run_compiled(OPTIMIZERS["sgd_momentum"], batches(16))
    graphs = step.pdt_graphs
    tags = {phase: {n.meta.get("pdt_pass") for gm in gms for n in gm.graph.nodes} - {None} for phase, gms in graphs.items()}
    assert tags["ordinary"] == set()
    assert tags["capture"] == {"snapshot"}
    assert tags["predict"] == {"predict", "merge"}
    predict_graph = graphs["predict"][-1]
    # The default DMD is solved on the device, once for all parameters; no host op in the graph.
    assert [n.target for n in predict_graph.graph.nodes].count(solve_on_device) == 1
    assert not [n for n in predict_graph.graph.nodes if n.target is torch.ops.pdt.solve_coefficients.default]
    # PDT's nodes run inside the step's no_grad region (else the merge is traced with autograd)
    nodes = list(predict_graph.graph.nodes)
    grad_on = [i for i, n in enumerate(nodes) if n.target is torch._C._set_grad_enabled and n.args == (True,)]
    pdt_nodes = [i for i, n in enumerate(nodes) if "pdt_pass" in n.meta]
    assert grad_on and max(pdt_nodes) < min(grad_on)


def deep_mlp() -> torch.nn.Module:
    """Ten linear layers: 20 tensors, past ``GRAPH_TENSORS_CPU``."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(8, 16), torch.nn.Tanh()]
    for _ in range(8):
        layers += [torch.nn.Linear(16, 16), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(16, 3))


@pytest.mark.parametrize("kernels", ["auto", "graph"])
def test_a_many_tensor_model_on_the_cpu_runs_its_boundaries_through_the_eager_kernels_unless_graphs_are_asked(kernels):
    """Boundary graphs unroll PDT's maths per tensor (seconds of compiling each on the CPU):
    past GRAPH_TENSORS_CPU tensors ``kernels="auto"`` runs the boundaries after the compiled
    optimizer step through the eager path's kernels; ``kernels="graph"`` keeps the graphs. The
    run follows eager either way."""
    from pdt_compile.api import GRAPH_TENSORS_CPU

    data = batches(40)
    make_opt = OPTIMIZERS["sgd_momentum"]
    eager_model = deep_mlp()
    eager = pdt.PDT(make_opt(eager_model.parameters()), **CONFIG)
    train(eager_model, eager, data, report=True)
    model = deep_mlp()
    assert len(list(model.parameters())) > GRAPH_TENSORS_CPU
    opt = pdt.PDT(make_opt(model.parameters()), **CONFIG, kernels=kernels)
    step = pdt.compile(step_function(model, opt), optimizer=opt, backend="aot_eager")
    for x, y in data:
        step(x, y)
    assert bool(step.pdt_graphs["predict"]) == (kernels == "graph")
    assert bool(step.pdt_graphs["capture"]) == (kernels == "graph")
    assert step.pdt_graphs["ordinary"]  # the optimizer step itself is compiled either way
    assert_follows_eager(eager_model, eager, model, opt, atol=1e-5, predictions=5)


def test_other_dmd_options_solve_on_the_host_and_follow_eager():
    assert_compiled_equals_eager("sgd_momentum", rank="gavish_donoho")
    _, _, step = run_compiled(OPTIMIZERS["sgd_momentum"], batches(16), rank="gavish_donoho")
    targets = [n.target for gm in step.pdt_graphs["predict"] for n in gm.graph.nodes]
    assert torch.ops.pdt.solve_coefficients.default in targets and solve_on_device not in targets


def test_analysis_finds_the_last_write_of_every_parameter():
    _, opt, step = run_compiled(OPTIMIZERS["adamw"], batches(4))
    analyses = [find_parameter_writes(gm, opt.ring.params) for gm in step.pdt_graphs["ordinary"]]
    updates = [writes for writes in analyses if writes.is_optimizer_step]
    assert len(updates) >= 1
    writes = updates[-1]
    assert sorted(writes.parameter_nodes) == [0, 1, 2, 3]
    assert all(node.op == "call_function" for node in writes.last_writes.values())
    assert len(writes.last_writes) == 4


def test_no_recompiles_after_warm_up():
    model = make_mlp()
    # A tensor LR: a float one is specialised by SGD's foreach update (alpha=-lr), so every
    # scheduler step would recompile a plain compiled optimizer too (pytorch #130467/#124544).
    # decay_window=None: the warm-up must reach a prediction while the rate decays.
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=torch.tensor(0.05), momentum=0.9, foreach=True),
                  decay_window=None, **CONFIG)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + 0.01 * step))
    train_step = pdt.compile(step_function(model, opt), optimizer=opt, backend="aot_eager")

    data = batches(10, size=8)
    for x, y in data * 2:  # warm-up: every phase, and the float LR turning dynamic
        train_step(x, y)
        scheduler.step()
    predictions = opt.stats.predictions
    with torch.compiler.set_stance("fail_on_recompile"):
        for step_index in range(300):
            if step_index % 50 == 0:
                opt.schedule.tau = 1 + (step_index // 50) % opt.config.tau_max  # tau changes
            x, y = data[step_index % len(data)]
            train_step(x, y)
            scheduler.step()
    assert opt.stats.predictions > predictions + 90


def test_a_parameters_first_step_runs_eagerly_so_no_graph_creates_optimizer_state():
    """A state tensor created inside a CUDA-graph-captured step is overwritten by the next graph
    run (SGD's momentum buffer under mode="reduce-overhead", on an H200): the step that creates
    state runs eagerly, so the ordinary graph is compiled once, with the state as its input,
    and a parameter whose first gradient comes later (unfrozen) gets its first step eagerly too;
    from the next boundary PDT tracks it, its variants built again."""
    model = make_mlp()
    frozen = list(model.parameters())[-1]
    frozen.requires_grad_(False)
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=True), **CONFIG)
    train_step = pdt.compile(step_function(model, opt), optimizer=opt, backend="aot_eager")
    compiled = train_step.compiled_optimizer_step
    data = batches(6, size=8)
    train_step(*data[0])
    assert train_step.pdt_graphs["ordinary"] == []  # the first step ran eagerly
    assert all("momentum_buffer" in opt.optimizer.state[p] for p in model.parameters() if p is not frozen)
    for x, y in data[1:3]:
        train_step(x, y)
    assert len([gm for gm in train_step.pdt_graphs["ordinary"] if gm.graph.nodes]) == 1  # (Dynamo may add an empty one)
    assert not compiled.creates_state()  # the frozen parameter has no gradient: nothing to create
    frozen.requires_grad_(True)
    for x, y in data[3:]:
        train_step(x, y)
    assert "momentum_buffer" in opt.optimizer.state[frozen]
    # The boundary after unfreezing tracks the parameter: variants built again for it.
    assert any(p is frozen for p in opt.ring.params) and train_step.pdt_graphs["ordinary"] == []
    for x, y in batches(4, seed=2, size=8):
        train_step(x, y)
    # one graph (the unfrozen parameter's state an input), not one per step
    assert len([gm for gm in train_step.pdt_graphs["ordinary"] if gm.graph.nodes]) == 1
    assert not compiled.creates_state() and compiled.stepped_all == len(list(model.parameters()))


def test_a_fused_optimizer_steps_eagerly_inside_a_compiled_training_step():
    """torch keeps Dynamo out of fused optimizers (torch.compiler.disable): pdt.compile runs
    their step eagerly, PDT's predictions in a graph of their own and its captures as the eager
    path's one foreach copy (no update to fuse them into), compiles the rest of the training step, follows the eager PDT on the same fused optimizer, and does not
    recompile under a float LR schedule."""
    make_opt = lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01, fused=True)  # noqa: E731
    data = batches(40, size=8)
    eager_model = make_mlp()
    eager = pdt.PDT(make_opt(eager_model.parameters()), decay_window=None, **CONFIG)
    eager_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(eager, T_max=200)
    model = make_mlp()
    opt = pdt.PDT(make_opt(model.parameters()), decay_window=None, **CONFIG)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=200)

    def fused_train_step(x, y):  # a code object of its own: Dynamo's cache limit is per code object
        loss = loss_of(model, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    torch._dynamo.utils.counters.clear()
    train_step = pdt.compile(fused_train_step, optimizer=opt, backend="aot_eager")
    assert not train_step.compiled_optimizer_step.traced
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for index, (x, y) in enumerate(data):
            train(eager_model, eager, [(x, y)], scheduler=eager_scheduler)
            if index == 20:
                torch.compiler.set_stance("fail_on_recompile")
            try:
                train_step(x, y)
            finally:
                torch.compiler.set_stance("default")
            scheduler.step()
    assert not [w for w in caught if "pdt.compile" in str(w.message)]  # the fused step is never traced
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # forward and backward compiled
    graphs = train_step.pdt_graphs
    assert graphs["ordinary"] == [] and graphs["capture"] == [] and len(graphs["predict"]) == 1
    assert any("pdt_pass" in node.meta for node in graphs["predict"][0].graph.nodes)  # compiled boundaries
    assert_follows_eager(eager_model, eager, model, opt, 1e-5, predictions=8)


@torch.compiler.disable
def _opaque_update(p, lr):
    p.add_(p.grad, alpha=-lr)


class _UntraceableSGD(torch.optim.SGD):
    """Plain SGD whose update Dynamo cannot trace (a disabled call inside a loop)."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    _opaque_update(p, group["lr"])


def test_a_step_dynamo_falls_back_on_runs_eagerly_with_a_warning():
    data = batches(30, size=8)
    eager_model = make_mlp()
    eager = pdt.PDT(_UntraceableSGD(eager_model.parameters(), lr=0.05), **CONFIG)
    train(eager_model, eager, data)
    model = make_mlp()
    opt = pdt.PDT(_UntraceableSGD(model.parameters(), lr=0.05), **CONFIG)
    train_step = pdt.compile(step_function(model, opt), optimizer=opt, backend="aot_eager")
    with pytest.warns(UserWarning, match="capture optimizer step ran without being compiled") as caught:
        for x, y in data:
            train_step(x, y)
    assert len([w for w in caught if "without being compiled" in str(w.message)]) == 1
    assert not train_step.compiled_optimizer_step.traced
    assert len(train_step.pdt_graphs["predict"]) == 1  # the boundaries compiled on their own
    assert_follows_eager(eager_model, eager, model, opt, 1e-6, predictions=5)


def test_a_param_group_added_after_compiling_recompiles_the_optimizer_step_and_follows_eager():
    """Progressive unfreezing under pdt.compile: the last layer joins the optimizer at step 20
    (SGD-momentum foreach: bit-equal compiled and eager, so any difference is PDT's)."""
    data = batches(60, size=8)

    def run(compiled):
        model = make_mlp()
        head = list(model[2].parameters())
        for p in head:
            p.requires_grad_(False)
        opt = pdt.PDT(torch.optim.SGD(model[0].parameters(), lr=0.05, momentum=0.9, foreach=True), **CONFIG)

        def unfreeze(index):
            if index == 20:
                for p in head:
                    p.requires_grad_(True)
                opt.add_param_group({"params": head, "lr": 0.02})

        return model, opt, run_steps(model, opt, data, compiled, before=unfreeze)

    eager_model, eager, _ = run(False)
    model, opt, step = run(True)
    assert len(opt.ring.params) == 4 and opt.stats.predictions == eager.stats.predictions >= 5
    assert opt.stats.merges == eager.stats.merges >= 1
    assert len(step.pdt_graphs["predict"]) >= 1  # compiled again for the four parameters
    assert all(len(list(gm.graph.find_nodes(op="placeholder"))) >= 4 for gm in step.pdt_graphs["predict"])
    assert [r for _, r in opt.stats.mask_ratio_history] == pytest.approx([r for _, r in eager.stats.mask_ratio_history], abs=1e-6)
    for a, b in zip(eager_model.parameters(), model.parameters()):
        assert (a - b).abs().max().item() <= 1e-5
    assert torch.allclose(opt.ring.flat(), eager.ring.flat(), atol=1e-5)


def test_an_average_registered_after_compiling_follows_the_jumps_as_in_eager():
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    data = batches(45, size=8)

    def run(compiled):
        model = make_mlp()
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
        opt = pdt.PDT(OPTIMIZERS["sgd_momentum"](model.parameters()), **CONFIG)

        def register(index):
            if index == 8:  # after a capture graph has been compiled
                opt.move_with_merges(ema.module.parameters())

        run_steps(model, opt, data, compiled, before=register, after=lambda: ema.update_parameters(model))
        return model, ema, opt

    eager_model, eager_ema, eager = run(False)
    model, ema, opt = run(True)
    assert opt.stats.merges == eager.stats.merges >= 2
    for a, b in zip([*eager_model.parameters(), *eager_ema.parameters()], [*model.parameters(), *ema.parameters()]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)  # float32 rounding, carried by tau-interval jumps


class SteppedInPieces(torch.optim.SGD):
    """SGD whose step breaks Dynamo's graph after each parameter write, as pytorch-optimizer's
    Shampoo's did before its step counter made PDT step it eagerly."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])
                    torch._dynamo.graph_break()


class CountedSteps(torch.optim.SGD):
    """SGD that counts its steps in its param groups and feeds the count to Python maths, as
    pytorch-optimizer's optimizers do (LAMB's bias corrections)."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1
            correction = 1.0 - math.pow(0.5, group["step"])
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] * correction)


class CountedInState(torch.optim.SGD):
    """SGD that counts its steps as a Python number in each parameter's state, as Hugging
    Face's Adafactor does."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    state = self.state[p]
                    state["step"] = state.get("step", 0) + 1
                    p.add_(p.grad, alpha=-group["lr"] * (1.0 - math.pow(0.5, state["step"])))


@pytest.mark.parametrize("counted", [CountedSteps, CountedInState], ids=["in the param groups", "in the state"])
def test_a_step_counter_makes_the_optimizer_step_eager_without_recompiles(counted):
    """Dynamo would compile such a step again at every step until its recompile limit (with
    pytorch-optimizer's LAMB, every variant of it: benchmarks.recompiles). From the step that
    adds the counter the optimizer steps eagerly, quietly, and the run follows eager."""
    data = batches(45, size=8)
    make_opt = lambda p: counted(p, lr=0.1)  # noqa: E731
    eager_model, eager = run_eager(make_opt, data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch._dynamo.config.patch(recompile_limit=2):
            model, opt, step = run_compiled(make_opt, data)
    assert not [w for w in caught if "pdt.compile" in str(w.message) or "PDT's nodes" in str(w.message)]
    assert not step.compiled_optimizer_step.traced
    assert len([gm for gm in step.pdt_graphs["ordinary"] if gm.graph.nodes]) <= 1
    assert_follows_eager(eager_model, eager, model, opt, 1e-5, predictions=8)


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
def test_torchs_adafactor_steps_eagerly_from_the_start_quietly_and_follows_eager(foreach):
    """torch.optim.Adafactor reads its step count and each parameter's norm with ``.item()``:
    Dynamo breaks its step there, PDT's nodes landed in no graph that ran, and the first capture
    warned that the step fell back. It is now known to run eagerly (its predictions compiled),
    without a warning, and the run follows eager."""
    data = batches(45, size=8)
    make_opt = lambda p: torch.optim.Adafactor(p, lr=0.05, foreach=foreach)  # noqa: E731
    eager_model, eager = run_eager(make_opt, data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, opt, step = run_compiled(make_opt, data)
    assert not [w for w in caught if "pdt.compile" in str(w.message)]
    assert not step.compiled_optimizer_step.traced
    assert step.pdt_graphs["predict"]
    assert_follows_eager(eager_model, eager, model, opt, 1e-5, predictions=8)


@pytest.mark.parametrize("post", [True, False], ids=["pre and post hooks", "a pre hook"])
def test_step_hooks_of_the_wrapped_optimizer_run_at_every_compiled_step_as_in_eager(post):
    """The compiled variants are traced from the optimizer's undecorated step, so a hook
    registered on the wrapped optimizer (here a pre hook that halves the gradients, and a post
    hook that counts) ran at its first, eager step only: the run silently left eager's
    trajectory. Now the hooks run around every compiled step, in torch's order. A post hook
    sees the step before PDT's capture or merge, as in eager, so the boundaries then run apart
    from the step's graph; with pre hooks alone they stay in it."""
    data = batches(45, size=8)
    calls = {}

    def make_opt(params):
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        counted = calls.setdefault(len(calls), [])

        def halve(optimizer, args, kwargs):
            counted.append(args)
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(0.5)

        opt.register_step_pre_hook(halve)
        if post:
            opt.register_step_post_hook(lambda optimizer, args, kwargs: counted.append(args))
        return opt

    eager_model, eager = run_eager(make_opt, data)
    model, opt, step = run_compiled(make_opt, data)
    assert len(calls[0]) == len(calls[1]) == (1 + post) * len(data)
    assert calls[1][-1] == (opt.optimizer,)
    assert bool(step.pdt_graphs["predict"]) != post  # the boundaries ran in the step's graphs
    assert_follows_eager(eager_model, eager, model, opt, 1e-4, predictions=8)  # momentum's compiled rounding


def test_a_parameter_that_gets_no_gradient_leaves_the_compiled_run_on_the_eager_trajectory():
    """A parameter in the optimizer that the loss does not reach (an unused head, an expert no
    token was routed to) has no gradient, so the traced optimizer step leaves it out; its
    boundary graphs then failed to compile ("does not read tracked parameters"). Such
    boundaries now run apart from the step, as the eager path runs them."""
    data = batches(45, size=8)
    idle = []

    def make_opt(params):
        idle.append(torch.nn.Parameter(torch.ones(5)))
        return torch.optim.SGD([*params, idle[-1]], lr=0.1, momentum=0.9)

    eager_model, eager = run_eager(make_opt, data)
    model, opt, step = run_compiled(make_opt, data)
    assert len(opt.ring.params) == 5 and torch.equal(idle[-1], torch.ones(5))
    assert_follows_eager(eager_model, eager, model, opt, 1e-4, predictions=8)  # momentum's compiled rounding


def test_a_layer_frozen_mid_run_follows_eager_without_a_warning():
    """Freezing keeps the layer in PDT's ring, skipped at every boundary for want of a
    gradient: under pdt.compile its boundaries failed to compile ("does not read tracked
    parameters") before they ran apart."""
    def freeze(model, opt, index):
        if index == 20:
            model[2].bias.requires_grad_(False)

    eager_model, eager, _ = run_changed_mid_run(False, freeze)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, opt, step = run_changed_mid_run(True, freeze)
    assert not [w for w in caught if "PDT" in str(w.message) or "pdt" in str(w.message)]
    assert step.compiled_optimizer_step.traced
    assert_follows_eager(eager_model, eager, model, opt, 1e-5, predictions=8)


def test_a_step_replaced_on_the_optimizer_instance_runs_through_the_replacement_as_in_eager():
    """``optimizer.step = wrapper`` on the wrapped optimizer: eager PDT calls the wrapper, the
    compiled variants (traced from the class's step) skipped it, silently. Such a step now runs
    eagerly, through the wrapper."""
    data = batches(45, size=8)
    calls = []

    def make_opt(params):
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        original = opt.step

        def halved(closure=None):
            calls.append(1)
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(0.5)
            return original(closure)

        opt.step = halved
        return opt

    eager_model, eager = run_eager(make_opt, data)
    model, opt, step = run_compiled(make_opt, data)
    assert len(calls) == 2 * len(data)
    assert_follows_eager(eager_model, eager, model, opt, 1e-5, predictions=8)


def test_an_lr_schedulers_mark_on_the_optimizer_step_keeps_it_compiled():
    """An LR scheduler built on the wrapped optimizer replaces its ``step`` on the instance with
    a marker that only records that the step ran: not a replacement to honour."""
    data = batches(45, size=8)

    def make_opt(params):
        opt = OPTIMIZERS["sgd_momentum"](params)
        torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        return opt

    eager_model, eager = run_eager(make_opt, data)
    model, opt, step = run_compiled(make_opt, data)
    assert "step" in vars(opt.optimizer) and not replaced_step(opt.optimizer)
    assert step.pdt_graphs["ordinary"] and step.pdt_graphs["predict"]
    assert_follows_eager(eager_model, eager, model, opt, 1e-4, predictions=8)  # momentum's compiled rounding


def test_under_the_profiler_compiled_steps_carry_the_optimizers_label_and_boundaries_stay_in_graphs():
    """The profiler, unlike a post hook, does not move the boundaries out of their graphs (a
    profile should time the compiled boundaries): every compiled step carries the wrapped
    optimizer's ``Optimizer.step#SGD.step`` range, as eager steps do, no boundary runs through
    the eager path's code, and the run follows eager."""
    data = batches(45, size=8)
    make_opt = OPTIMIZERS["sgd_momentum"]
    eager_model, eager = run_eager(make_opt, data)
    model = make_mlp()
    opt = pdt.PDT(make_opt(model.parameters()), **CONFIG)
    train_step = pdt.compile(step_function(model, opt), optimizer=opt, backend="aot_eager")
    for x, y in data[:30]:
        train_step(x, y)
    predictions = opt.stats.predictions
    eager_boundaries = []
    run_boundary = opt._run_boundary
    opt._run_boundary = lambda phase: eager_boundaries.append(phase) if phase != Phase.ORDINARY else run_boundary(phase)
    with torch.profiler.profile() as profile:
        for x, y in data[30:]:
            train_step(x, y)
    del opt._run_boundary
    labels = [event for event in profile.events() if event.name == "Optimizer.step#SGD.step"]
    assert len(labels) == len(data) - 30
    assert opt.stats.predictions > predictions and not eager_boundaries
    assert_follows_eager(eager_model, eager, model, opt, 1e-4, predictions=8)  # momentum's compiled rounding


def test_a_step_whose_graph_breaks_hide_its_writes_still_captures_and_merges():
    """A step that compiles in pieces has its parameter writes where PDT's passes do not see
    them: its capture and prediction graphs came out without PDT's nodes, and PDT went on as if
    they had run (no merge, ever; pytorch-optimizer's Shampoo). Now PDT sees that no graph of
    its ran, warns, and from then on runs the step eagerly with compiled boundaries, as the
    eager run does."""
    data = batches(45, size=8)
    make_opt = lambda p: SteppedInPieces(p, lr=0.1)  # noqa: E731
    eager_model, eager = run_eager(make_opt, data)
    with pytest.warns(UserWarning, match="without being compiled with PDT's nodes"):
        model, opt, step = run_compiled(make_opt, data)
    assert not step.compiled_optimizer_step.traced
    assert_follows_eager(eager_model, eager, model, opt, 1e-3, predictions=8)


def test_amp_with_a_grad_scaler_follows_eager_and_a_step_with_infs_is_skipped_alike():
    """bfloat16 autocast and GradScaler on the CPU: ``scaler.step`` skips the optimizer step
    whose gradients hold an inf (step 14), so PDT counts it nowhere, compiled or not."""

    def run(compiled):
        model = make_mlp()
        opt = pdt.PDT(OPTIMIZERS["sgd_momentum"](model.parameters()), **CONFIG)
        step = amp_step_function(model, opt, torch.amp.GradScaler("cpu", init_scale=2.0**10), "cpu", torch.bfloat16)
        if compiled:
            step = pdt.compile(step, optimizer=opt, backend="aot_eager")
        for index, (x, y) in enumerate(batches(36)):
            loss = step(x, y, index == 14)
            if not compiled:
                opt.report_loss(loss)  # as the compiled step reports what it returns
        return model, opt

    eager_model, eager = run(False)
    model, opt = run(True)
    assert opt.schedule.steps == eager.schedule.steps == 35
    assert_follows_eager(eager_model, eager, model, opt, 1e-5, merges=2)


def test_varying_batch_sizes_under_dynamic_shapes_follow_eager_with_one_prediction_graph():
    """``pdt.compile(..., dynamic=True)`` passes ``dynamic`` to the user's step; the batch size
    never reaches PDT's optimizer-step graphs, which compile once."""
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g))
            for n in (8 + (i % 5) * 3 for i in range(40))]

    def run(compiled):
        model = make_mlp()
        opt = pdt.PDT(OPTIMIZERS["adamw"](model.parameters()), **CONFIG)
        step = step_function(model, opt)
        if compiled:
            step = pdt.compile(step, optimizer=opt, backend="aot_eager", dynamic=True)
        for x, y in data:
            step(x, y)
        return model, opt, step

    eager_model, eager, _ = run(False)
    model, opt, step = run(True)
    assert len(step.pdt_graphs["predict"]) == 1
    assert_follows_eager(eager_model, eager, model, opt, 1e-5, predictions=8)


def test_parameters_pdt_leaves_alone_follow_eager_under_compile():
    """A param group with ``"pdt": False`` holding a complex layer: the optimizer-step graphs
    step it with the others, the boundary graphs leave it out, and the run follows eager."""
    runs = []
    for compiled in (False, True):
        model = Beside(ComplexLinear())
        groups = [{"params": model.mlp.parameters()}, {"params": model.side.parameters(), "pdt": False}]
        opt = pdt.PDT(torch.optim.Adam(groups, lr=0.01, foreach=True), **CONFIG)

        def train_step(x, y):
            loss = model.losses(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            return loss

        step = pdt.compile(train_step, optimizer=opt, backend="aot_eager") if compiled else train_step
        for x, y in batches(36):
            step(x, y)
        runs.append((model, opt))
    (eager_model, eager), (model, opt) = runs
    assert len(opt.ring.params) == 4
    assert_follows_eager(eager_model, eager, model, opt, atol=1e-5, predictions=1)


def test_lazy_modules_under_compile_build_the_graphs_at_the_first_step_and_follow_eager():
    runs = []
    for compiled in (False, True):
        model = lazy_mlp()
        opt = pdt.PDT(OPTIMIZERS["adam"](model.parameters()), **CONFIG)
        step = pdt.compile(step_function(model, opt), optimizer=opt, backend="aot_eager") if compiled else None
        for x, y in batches(36):
            step(x, y) if compiled else train(model, opt, [(x, y)])
        runs.append((model, opt, step))
    (eager_model, eager, _), (model, opt, step) = runs
    assert len(step.pdt_graphs["predict"]) == 1
    # Adam's own compiled-vs-eager drift over these steps is a few 1e-5 (assert_compiled_equals_eager).
    assert_follows_eager(eager_model, eager, model, opt, atol=1e-4, predictions=1)


class StepSizeOfItsOwn(torch.optim.Optimizer):
    """An optimizer whose param groups hold no ``lr`` (as pytorch-optimizer's A2Grad)."""

    def __init__(self, params, step_size: float = 0.05) -> None:
        super().__init__(params, {"step_size": step_size})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["step_size"])


def test_an_optimizer_without_lr_in_its_groups_trains_eager_and_compiled_alike():
    """PDT's defaults read the learning rate (decay_window, moment_ratio) and the compiled
    step checks it for zero; a group without one leaves those to their no-schedule default."""
    data = batches(36)
    eager_model, eager = run_eager(StepSizeOfItsOwn, data)
    model, opt, _ = run_compiled(StepSizeOfItsOwn, data)
    assert_follows_eager(eager_model, eager, model, opt, atol=1e-5, predictions=1)


def run_on_matrices_and_the_rest(matrix_optimizer, rest_optimizer, compiled: bool):
    """Train an MLP 30 steps with two PDTs in one step, ``matrix_optimizer`` on its matrices
    and ``rest_optimizer`` on the rest (both handed to ``pdt.compile`` when ``compiled``):
    (model, the two PDTs, the step)."""
    torch.manual_seed(0)
    model = make_mlp()
    matrices = [p for p in model.parameters() if p.dim() == 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opts = [pdt.PDT(matrix_optimizer(matrices), **CONFIG), pdt.PDT(rest_optimizer(rest), **CONFIG)]

    def train_step(x, y):
        loss = loss_of(model, x, y)
        loss.backward()
        for opt in opts:
            opt.step()
            opt.zero_grad()
        return loss

    step = pdt.compile(train_step, optimizer=opts, backend="aot_eager") if compiled else train_step
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no eager fallback
        for x, y in batches(30):
            loss = step(x, y)
            for opt in opts if not compiled else ():
                opt.report_loss(loss)  # as the compiled step reports what it returns
    return model, opts, step


def test_two_optimizers_in_one_step_each_get_compiled_boundaries_and_follow_eager():
    """A step that steps two PDTs (momentum SGD on the matrices, AdamW on the rest), both handed
    to ``pdt.compile``: each gets prediction graphs of its own, and both follow eager."""
    sgd = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, foreach=True)
    adamw = lambda params: torch.optim.AdamW(params, lr=0.01, foreach=True)
    (eager_model, eagers, _), (model, opts, step) = (run_on_matrices_and_the_rest(sgd, adamw, c) for c in (False, True))
    assert [bool(graphs["predict"]) for graphs in step.pdt_graphs] == [True, True]
    for eager, opt in zip(eagers, opts):
        assert_follows_eager(eager_model, eager, model, opt, atol=1e-5, predictions=1)
    with pytest.raises(ValueError, match="distinct"):
        pdt.compile(lambda: None, optimizer=[opts[0], opts[0]])


def _newton_schulz_in_float32(grad, ns_coefficients, ns_steps, eps):
    """torch's Muon orthogonalisation without its cast to bfloat16 (the same iteration)."""
    a, b, c = ns_coefficients
    x = grad.T if grad.size(0) > grad.size(1) else grad
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if grad.size(0) > grad.size(1) else x


def test_torchs_muon_and_adamw_each_in_a_pdt_follow_eager_under_compile(monkeypatch):
    """torch's Muon on the matrices and AdamW on the rest, each in its own PDT, both handed to
    ``pdt.compile``: every boundary compiled, the same merges, the weights eager's. Muon
    orthogonalises in bfloat16, where a compiled kernel's float rounding flips a bfloat16
    rounding now and then and the runs part past any tolerance, merges or not; the comparison
    runs its iteration in float32."""
    import torch.optim._muon as muon_module

    monkeypatch.setattr(muon_module, "_zeropower_via_newtonschulz", _newton_schulz_in_float32)
    muon = lambda params: torch.optim.Muon(params, lr=0.05)
    adamw = lambda params: torch.optim.AdamW(params, lr=0.01)
    (eager_model, eagers, _), (model, opts, step) = (run_on_matrices_and_the_rest(muon, adamw, c) for c in (False, True))
    assert [bool(graphs["predict"]) for graphs in step.pdt_graphs] == [True, True]
    for eager, opt in zip(eagers, opts):
        assert_follows_eager(eager_model, eager, model, opt, atol=1e-4, predictions=1, merges=5)


def test_compile_rejects_plain_optimizers():
    model = make_mlp()
    with pytest.raises(TypeError, match="expected a pdt.PDT"):
        pdt.compile(lambda: None, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="expected a pdt.PDT or a list of them, got SGD"):
        pdt.compile(lambda: None, optimizer=[torch.optim.SGD(model.parameters(), lr=0.1)])


def test_compile_without_an_optimizer_says_how_to_name_it():
    with pytest.raises(TypeError, match=r"optimizer= is required.*@pdt.compile\(optimizer=opt\)"):
        @pdt.compile
        def step():
            pass
    with pytest.raises(TypeError, match="optimizer= is required"):
        pdt.compile()


def test_compile_rejects_fullgraph_and_names_why():
    model = make_mlp()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=2)
    with pytest.raises(ValueError, match="fullgraph=True.*graph break by design"):
        pdt.compile(lambda: None, optimizer=opt, fullgraph=True)


PARITY_OPTIONS = {
    "bfloat16 ring": dict(ring_dtype="bfloat16"),
    "drift filter": dict(drift=1.0),
    "gradient check": dict(gradient_limit=1.0 + 1e-9),
    "host ring": dict(ring_location="host"),
    "loss hold": dict(loss_hold=1.0 + 1e-9),
    "radial inward": dict(radial="inward"),
    "radial undo": dict(radial="undo"),
    "rollback": dict(rollback_factor=1.0005),
    "setback hold": dict(setback_limit=-1.0),
    "tau ramp": dict(tau_ramp=1),
}


@pytest.mark.parametrize("option", sorted(PARITY_OPTIONS))
def test_every_option_runs_compiled_and_follows_eager(option):
    # SGD-momentum (foreach) is bit-equal compiled and eager, so any difference is PDT's.
    config = {**CONFIG, **PARITY_OPTIONS[option]}
    make_opt = OPTIMIZERS["sgd_momentum"]
    data = batches(60)
    eager_model = make_mlp()
    eager = pdt.PDT(make_opt(eager_model.parameters()), **config)
    train(eager_model, eager, data, report=True)
    model, opt, _ = run_compiled(make_opt, data, **config)
    held = ("setback hold", "loss hold", "gradient check")  # the check's undone merges in a row hold boundaries too
    assert opt.stats.predictions == eager.stats.predictions >= (3 if option in held else 10)
    assert opt.stats.loss_holds == eager.stats.loss_holds >= (1 if option == "loss hold" else 0)
    assert opt.stats.merges == eager.stats.merges >= 1
    assert opt.stats.rollbacks == eager.stats.rollbacks
    assert (opt.stats.setbacks, opt.stats.setback_undos) == (eager.stats.setbacks, eager.stats.setback_undos)
    assert opt.stats.gradient_undos == eager.stats.gradient_undos
    if option == "gradient check":
        assert 1 <= eager.stats.gradient_undos < eager.stats.merges
    if option == "rollback":
        assert eager.stats.rollbacks >= 1
    if option == "setback hold":
        assert eager.stats.setbacks >= 1 and eager.stats.setback_undos >= 1
    assert [r for _, r in opt.stats.mask_ratio_history] == pytest.approx([r for _, r in eager.stats.mask_ratio_history], abs=1e-6)
    for a, b in zip(eager_model.parameters(), model.parameters()):
        assert (a - b).abs().max().item() <= 1e-5
    assert torch.allclose(opt.ring.flat(), eager.ring.flat(), atol=1e-5)


def _hf_warmup(opt):
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(opt, num_warmup_steps=10, num_training_steps=400)


SCHEDULERS = {
    "lambda": lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + 0.01 * step)),
    "cosine": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=400),
    "one_cycle": lambda opt: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.05, total_steps=400, cycle_momentum="betas" in opt.defaults
    ),
    "hf_warmup_from_zero": _hf_warmup,
}
FLOAT_LR_CASES = [
    ("sgd", True, "one_cycle"), ("sgd", False, "hf_warmup_from_zero"),
    ("sgd_momentum", True, "lambda"), ("sgd_momentum", False, "cosine"),
    ("adam", True, "one_cycle"), ("adam", False, "hf_warmup_from_zero"),
    ("adamw", True, "hf_warmup_from_zero"), ("adamw", False, "one_cycle"),
]
FLOAT_LR_OPTIMIZERS = {
    "sgd": lambda p, foreach: torch.optim.SGD(p, lr=0.05, foreach=foreach),
    "sgd_momentum": lambda p, foreach: torch.optim.SGD(p, lr=0.05, momentum=0.9, foreach=foreach),
    "adam": lambda p, foreach: torch.optim.Adam(p, lr=0.01, foreach=foreach),
    "adamw": lambda p, foreach: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01, foreach=foreach),
}


@pytest.mark.parametrize("name,foreach,scheduler", FLOAT_LR_CASES)
def test_float_lr_schedulers_never_recompile(name, foreach, scheduler):
    # Every scheduler and optimizer family is covered at least once with foreach and with
    # the for-loop update; the Hugging Face warmup starts at an LR of exactly 0. decay_window=None:
    # predictions run while the rate decays (the window is tested in test_optim.py).
    model = make_mlp()
    opt = pdt.PDT(FLOAT_LR_OPTIMIZERS[name](model.parameters(), foreach), decay_window=None, **CONFIG)
    lr_scheduler = SCHEDULERS[scheduler](opt)
    train_step = pdt.compile(step_function(model, opt), optimizer=opt, backend="aot_eager")
    data = batches(10, size=8)
    losses = []
    for step_index in range(30):  # warm-up: every capture slot and the prediction compiled once
        losses.append(float(train_step(*data[step_index % len(data)])))
        lr_scheduler.step()
    assert opt.stats.predictions >= 2
    assert all(isinstance(group["lr"], float) for group in opt.param_groups)  # the user still sees floats
    with torch.compiler.set_stance("fail_on_recompile"):
        for step_index in range(30, 90):
            losses.append(float(train_step(*data[step_index % len(data)])))
            lr_scheduler.step()
    assert opt.stats.predictions >= 15
    assert all(math.isfinite(loss) for loss in losses)
    assert all(torch.isfinite(p).all() for p in model.parameters())


OTHER_TORCH_OPTIMIZERS = ["ASGD", "Adadelta", "Adagrad", "Adamax", "NAdam", "RAdam", "RMSprop", "Rprop"]


@pytest.mark.parametrize("name", OTHER_TORCH_OPTIMIZERS)
def test_other_torch_optimizers_take_a_scheduled_lr_as_a_tensor_and_never_recompile(name):
    def run(compiled):
        model = make_mlp()
        opt = pdt.PDT(getattr(torch.optim, name)(model.parameters(), lr=0.01, foreach=True), decay_window=None, **CONFIG)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=200)
        step = pdt.compile(step_function(model, opt), optimizer=opt, backend="aot_eager") if compiled else None
        data = batches(10, size=8)
        for index in range(75):
            x, y = data[index % len(data)]
            if not compiled:
                train(model, opt, [(x, y)])
            elif index < 25:  # warm-up: every variant compiled, the LR turned into a tensor
                step(x, y)
            else:
                with torch.compiler.set_stance("fail_on_recompile"):
                    step(x, y)
            scheduler.step()
        return model, opt, step

    eager_model, eager, _ = run(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, opt, step = run(True)
    assert not [w for w in caught if "pdt.compile" in str(w.message)]
    assert step.compiled_optimizer_step.traced
    # RAdam's compiled update drifts from its eager one on its own (plain torch.compile too), and merges amplify it
    tolerance = 1e-2 if name == "RAdam" else 1e-4
    assert_follows_eager(eager_model, eager, model, opt, tolerance, predictions=15)


def test_changed_constant_names_a_changed_float_entry_and_ignores_int_counts_and_tensor_keys():
    from pdt_compile.runtime.hyperparameters import TensorHyperparameters

    opt = torch.optim.SGD(make_mlp().parameters(), lr=0.1, momentum=0.9)
    opt.param_groups[0]["step"] = 1  # an int count some optimizers keep in the group
    watched = TensorHyperparameters(opt)
    assert watched.changed_constant() is None
    opt.param_groups[0]["step"] = 5  # Dynamo makes a changing int dynamic: no storm
    opt.param_groups[0]["lr"] = 0.05  # handed to the graphs as a tensor
    assert watched.changed_constant() is None
    opt.param_groups[0]["momentum"] = 0.8
    assert watched.changed_constant() == "momentum"


class _UnlistedSGD(torch.optim.SGD):
    """SGD under another type: its float learning rate is not handed to the graphs as a tensor."""


@pytest.mark.parametrize("case", ["unlisted optimizer, cosine lr", "SGD, cycled momentum"])
def test_a_changing_constant_hyperparameter_makes_the_step_eager_with_a_warning_not_a_recompile_storm(case):
    unlisted = case.startswith("unlisted")

    def run(compiled):
        model = make_mlp()
        inner = (_UnlistedSGD if unlisted else torch.optim.SGD)(model.parameters(), lr=0.05, momentum=0.9, foreach=True)
        opt = pdt.PDT(inner, decay_window=None, **CONFIG)
        if unlisted:
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=200)
        else:
            scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=200, cycle_momentum=True)
        return model, opt, run_steps(model, opt, batches(60, size=8), compiled, after=scheduler.step)

    eager_model, eager, _ = run(False)
    with pytest.warns(UserWarning, match=f"param-group entry '{'lr' if unlisted else 'momentum'}' changed") as caught:
        model, opt, step = run(True)
    assert len([w for w in caught if "param-group entry" in str(w.message)]) == 1
    compiled = step.compiled_optimizer_step
    assert not compiled.traced and len(compiled.graphs["predict"]) == 1  # the boundary graph, compiled once
    assert len(compiled.graphs["ordinary"]) <= 2  # no graph per learning rate
    assert_follows_eager(eager_model, eager, model, opt, 1e-5, predictions=10)


def test_a_silent_eager_fallback_after_the_recompile_limit_is_caught():
    """Once Dynamo's recompile limit is reached it runs a variant eagerly without a word, PDT's
    capture or prediction left out: each compiled graph marks its runs, so PDT sees the
    fallback, warns, and does the boundary itself. Here a momentum buffer dropped mid-run (the
    optimizer creates it again) changes the optimizer's graph, with a recompile limit of 1."""
    def drop_momentum(model, opt, index):
        if index == 20:
            del opt.optimizer.state[model[2].bias]["momentum_buffer"]

    eager_model, eager, _ = run_changed_mid_run(False, drop_momentum)
    with torch._dynamo.config.patch(recompile_limit=1), pytest.warns(UserWarning, match="ran without being compiled"):
        model, opt, step = run_changed_mid_run(True, drop_momentum)
    assert not step.compiled_optimizer_step.traced
    assert_follows_eager(eager_model, eager, model, opt, 1e-5, predictions=8)


def test_private_dynamo_touch_point_exists():
    # passes/backend.py relies on Dynamo GraphModules carrying _param_name_to_source.
    seen = []

    def backend(gm, example_inputs):
        seen.append(hasattr(gm, "_param_name_to_source"))
        return gm

    model = torch.nn.Linear(2, 2)
    torch.compile(lambda x: model(x), backend=backend)(torch.randn(1, 2))
    assert seen == [True]


@pytest.mark.inductor
def test_inductor_trains_the_demo_model_and_equals_eager():
    # The demo's model, data and optimizer (plain SGD, CPU default: the for-loop update,
    # Tensor.add_ writes) compiled end to end with Inductor.
    from pdt_compile.tasks import digits_mlp

    task = digits_mlp()
    data = [(task.train_x[i : i + 32], task.train_y[i : i + 32]) for i in range(0, 32 * 30, 32)]
    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = task.make_model()
        opt = pdt.PDT(task.make_optimizer(model.parameters(), 0.2), **CONFIG)
        step = step_function(model, opt)
        if compiled:
            step = pdt.compile(step, optimizer=opt)
        for x, y in data:
            loss = step(x, y)
            if not compiled:
                opt.report_loss(loss)  # as the compiled step reports what it returns
        runs.append((model, opt, step))
    (eager_model, eager, _), (model, opt, step) = runs
    assert opt.stats.merges == eager.stats.merges >= 1
    assert [r for _, r in opt.stats.mask_ratio_history] == pytest.approx([r for _, r in eager.stats.mask_ratio_history], abs=2e-3)
    for a, b in zip(eager_model.parameters(), model.parameters()):
        assert torch.allclose(a, b, atol=1e-4)
    assert {n.meta.get("pdt_pass") for gm in step.pdt_graphs["predict"] for n in gm.graph.nodes} >= {"predict", "merge"}


def test_constant_lr_keeps_float_constants_until_it_changes():
    from pdt_compile.runtime.hyperparameters import TensorHyperparameters

    opt = torch.optim.AdamW(make_mlp().parameters(), lr=0.01, foreach=True)
    shim = TensorHyperparameters(opt)
    with shim:
        assert isinstance(opt.param_groups[0]["lr"], float)  # as plain torch.compile sees it
    opt.param_groups[0]["lr"] = 0.02
    with shim:
        group = opt.param_groups[0]
        assert isinstance(group["lr"], torch.Tensor) and group["capturable"]
        assert all(isinstance(beta, torch.Tensor) for beta in group["betas"])
        assert float(group["lr"]) == pytest.approx(0.02)
    assert opt.param_groups[0]["lr"] == 0.02 and opt.param_groups[0]["capturable"] is False
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)


def _host_reads_in_the_prediction_graph(**config):
    """Calls of .item(), .tolist(), .cpu() and bool() on tensors while the compiled
    prediction variant runs (aot_eager runs the graph's ops in Python, so each would show)."""
    model = make_mlp()
    opt = pdt.PDT(OPTIMIZERS["sgd_momentum"](model.parameters()), **{**CONFIG, **config})
    step = pdt.compile(step_function(model, opt), optimizer=opt, backend="aot_eager")
    data = batches(16)
    for x, y in data:
        step(x, y)
    assert opt.stats.predictions >= 1
    compiled = step.compiled_optimizer_step
    variant = compiled.variants[(pdt.Phase.PREDICT, 0)]
    loss_of(model, *data[0]).backward()
    compiled.runtime.prepare_prediction()
    return _count_host_reads(variant)


def test_a_default_prediction_step_reads_nothing_on_the_host():
    assert _host_reads_in_the_prediction_graph() == []
    assert _host_reads_in_the_prediction_graph(rank="gavish_donoho")  # the host solve reads: the count works


def _count_host_reads(fn):
    reads = []
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "cpu", "__bool__")}

    def counting(name):
        def call(self, *args, **kwargs):
            reads.append(name)
            return originals[name](self, *args, **kwargs)
        return call

    try:
        for name in originals:
            setattr(torch.Tensor, name, counting(name))
        fn()
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    return reads


def test_compiled_boundaries_defer_their_host_reads_to_the_next_boundary():
    """Tau fixed: the reported losses adaptive tau reads are read by ``report_loss`` (one at a
    time on the CPU, 16 at a time on an accelerator), not by the boundaries."""
    model = make_mlp()
    opt = pdt.PDT(OPTIMIZERS["sgd_momentum"](model.parameters()), **CONFIG, adaptive=False)
    step = pdt.compile(step_function(model, opt), optimizer=opt, backend="aot_eager")
    data = batches(30)
    for x, y in data[:17]:  # compiled every variant; step 18 is a prediction boundary
        step(x, y)
    assert opt.schedule.next_phase(opt.ring.count) == pdt.Phase.PREDICT
    opt.stats  # the previous boundary's counts, which the next boundary would read
    reads = _count_host_reads(lambda: [step(x, y) for x, y in data[17:20]])  # the prediction + 2 ordinary steps
    assert reads == []
    assert opt._pending is not None
    predictions = opt.stats.predictions  # reading the stats resolves the deferred counts
    assert opt._pending is None and opt.stats.mask_ratio_history[-1][0] == 18 and predictions >= 2


def mlp_trained_by(optimizer: str, compiled: bool):
    """An MLP, PDT on ``OPTIMIZERS[optimizer]`` with CONFIG, and its training step, eager or
    under ``pdt.compile`` (aot_eager)."""
    model = make_mlp()
    opt = pdt.PDT(OPTIMIZERS[optimizer](model.parameters()), **CONFIG)
    step = step_function(model, opt)
    return model, opt, pdt.compile(step, optimizer=opt, backend="aot_eager") if compiled else step


def test_non_finite_weights_clear_the_ring_on_the_compiled_path_as_on_the_eager_path():
    # The compiled path reads the finiteness flag one boundary later; the outcome is the same.
    results = []
    for compiled in (False, True):
        model, opt, step = mlp_trained_by("sgd_momentum", compiled)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for index, (x, y) in enumerate(batches(24)):
                if index == 13:
                    with torch.no_grad():
                        model[0].weight[0, 0] = float("nan")  # the boundary at step 15 sees it
                step(x, y)
                if index == 15:  # the user repairs the model; training goes on
                    with torch.no_grad():
                        for p in model.parameters():
                            p.nan_to_num_(0.0)
                        for state in opt.state.values():
                            state["momentum_buffer"].nan_to_num_(0.0)
        stats = opt.stats
        warned = sum("non-finite" in str(w.message) for w in caught)
        results.append((warned, stats.skipped_nonfinite, opt.schedule.boundaries_since_reset, opt.ring.count, stats.predictions))
    assert results[0] == results[1]
    assert results[0][:2] == (1, 1)


def test_a_nan_batch_at_a_prediction_records_no_negative_mask_ratio_compiled_or_eager():
    # AdamW's moment filter took NaN jumps back as if accepted: a mask ratio of -1 on both paths.
    results = []
    for compiled in (False, True):
        _, opt, step = mlp_trained_by("adamw", compiled)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for index, (x, y) in enumerate(batches(24)):
                if index == 14:  # the prediction boundary at step 15: a NaN loss, every gradient NaN
                    x = x.clone()
                    x[0] = float("nan")
                step(x, y)
        ratios = [ratio for _, ratio in opt.stats.mask_ratio_history]
        assert all(0.0 <= ratio <= 1.0 for ratio in ratios), (compiled, ratios)
        results.append((opt.stats.predictions, opt.stats.skipped_nonfinite, len(ratios)))
    assert results[0] == results[1] and results[0][1] >= 1


@pytest.mark.parametrize("tau", [1, 3, 5])
def test_the_host_solve_op_matches_its_fake_kernel(tau):
    # Inductor trusts the fake kernel's shapes and strides (FSDP2 and non-default DMD options
    # reach the host op); opcheck compares them, and the schema, with real outputs.
    snapshots = torch.randn(3, 4, 20, dtype=torch.float64).cumsum(1)
    grams = snapshots @ snapshots.transpose(1, 2)
    host_state = torch.tensor([tau, 1, 4])
    rows = torch.full((3,), 20.0, dtype=torch.float64)
    for rank in ("full", "gavish_donoho"):
        torch.library.opcheck(torch.ops.pdt.solve_coefficients.default,
                              (grams, host_state, rows, 5, rank, "projected", "linear", 0, False))


def test_a_runaway_is_restored_alike_compiled_and_eager():
    """Two batches that blow the loss up (inputs 40x, wrong labels) at steps 46 and 47: both
    paths move the weights back to the same snapshot and go on alike."""
    data = batches(60)
    for index in (45, 46):
        x, y = data[index]
        data[index] = (40.0 * x, (y + 1) % 3)
    config = dict(runaway_factor=3.0)
    make_opt = OPTIMIZERS["sgd_momentum"]

    def run_eager_nudged(nudge: float):
        """Eager, every weight times 1 + ``nudge`` after the first merge (step 14)."""
        model = make_mlp()
        opt = pdt.PDT(make_opt(model.parameters()), **{**CONFIG, **config})
        with pytest.warns(RuntimeWarning, match="ran away after step 47"):
            for index, batch in enumerate(data):
                train(model, opt, [batch], report=True)
                if index == 14:
                    with torch.no_grad():
                        torch._foreach_mul_(list(model.parameters()), 1.0 + nudge)
        return model, opt

    eager_model, eager = run_eager_nudged(0.0)
    with pytest.warns(RuntimeWarning, match="ran away after step 47"):
        model, opt, _ = run_compiled(make_opt, data, **config)
    assert opt.stats.runaways == eager.stats.runaways == 1
    assert opt.stats.predictions == eager.stats.predictions >= 5
    assert [r for _, r in opt.stats.mask_ratio_history] == pytest.approx([r for _, r in eager.stats.mask_ratio_history])
    # The 40x batches' gradient, kept in the momentum, scales rounding up: the two paths, whose
    # merges sum in other orders, stay within what a one-ulp nudge does to the eager run.
    nudged_model, _ = run_eager_nudged(2.0**-23)
    rounding = max((a - b).abs().max().item() for a, b in zip(eager_model.parameters(), nudged_model.parameters()))
    assert 0.0 < rounding < 1e-3
    for a, b in zip(eager_model.parameters(), model.parameters()):
        assert (a - b).abs().max().item() <= 4 * rounding
    assert torch.allclose(opt.ring.flat(), eager.ring.flat(), atol=4 * rounding)


def test_cuda_graph_modes_are_recognised():
    # pdt.compile begins a cudagraph-trees step per call exactly when CUDA graphs run.
    from pdt_compile.passes.backend import uses_cuda_graphs

    assert uses_cuda_graphs("inductor", "reduce-overhead") and uses_cuda_graphs("inductor", "max-autotune")
    assert not uses_cuda_graphs("inductor", None) and not uses_cuda_graphs("inductor", "max-autotune-no-cudagraphs")
    assert not uses_cuda_graphs("aot_eager", "reduce-overhead")
    assert uses_cuda_graphs("inductor", None, {"triton.cudagraphs": True})


def test_the_predict_graph_solves_on_the_device_only_for_the_default_dmd_and_short_rings():
    from pdt_compile.passes.predict import DEVICE_SOLVE_MAX_HISTORY, solves_on_device

    from pdt_compile.distributed import ShardReduction, group_key

    config = pdt.PDTConfig(snap_every=4)
    sharded = group_key(ShardReduction(groups=(object(),), counted=(True,)))
    staged = group_key(ShardReduction(groups=(), counted=(True,), stages=object()))  # pipeline stages
    assert solves_on_device(config, 0) and not solves_on_device(config, sharded)
    # Per-tensor Grams need no sum over pipeline stages; the whole model's Gram does.
    assert solves_on_device(config, staged) and not solves_on_device(config.replace(granularity="model"), staged)
    assert solves_on_device(config.replace(history=DEVICE_SOLVE_MAX_HISTORY), 0)
    assert not solves_on_device(config.replace(history=DEVICE_SOLVE_MAX_HISTORY + 1), 0)
    assert not solves_on_device(config.replace(rank="gavish_donoho"), 0)


def _compiled_trajectory(stop_at: int | None, total: int = 30):
    """``total`` compiled steps of SGD-momentum (bit-equal compiled and eager); if ``stop_at``,
    checkpoint there and resume in fresh objects under a fresh ``pdt.compile`` that has already
    trained (its graphs compiled, its ring and optimizer state filled) on other batches."""
    data = batches(total, size=8)
    make = lambda m: pdt.PDT(OPTIMIZERS["sgd_momentum"](m.parameters()), **CONFIG)  # noqa: E731
    model = make_mlp()
    opt = make(model)
    step = pdt.compile(step_function(model, opt), optimizer=opt, backend="aot_eager")
    for x, y in data[: stop_at or total]:
        step(x, y)
    if stop_at is None:
        return model, opt
    assert opt._pending is not None  # the last prediction's counts are still on the device
    checkpoint = save_and_load({"model": model.state_dict(), "opt": opt.state_dict()})
    resumed = make_mlp(seed=5)
    opt2 = make(resumed)
    step2 = pdt.compile(step_function(resumed, opt2), optimizer=opt2, backend="aot_eager")
    for x, y in batches(25, seed=9, size=8):
        step2(x, y)
    assert opt2.stats.predictions >= 1
    resumed.load_state_dict(checkpoint["model"])
    opt2.load_state_dict(checkpoint["opt"])
    for x, y in data[stop_at:]:
        step2(x, y)
    return resumed, opt2


@pytest.mark.parametrize("stop_at", [21, 22])  # at a merge whose counts the device still holds, right after
def test_a_compiled_run_resumes_from_a_checkpoint_exactly(stop_at):
    reference, ref_opt = _compiled_trajectory(None)
    assert 21 in [step for step, ratio in ref_opt.stats.mask_ratio_history if ratio > 0]
    model, opt = _compiled_trajectory(stop_at)
    for a, b in zip(reference.parameters(), model.parameters()):
        assert torch.equal(a, b)
    timing = lambda stats: {k: v for k, v in stats.as_dict().items() if k != "prediction_seconds"}  # noqa: E731
    assert timing(opt.stats) == timing(ref_opt.stats)
    assert opt.schedule.state_dict() == ref_opt.schedule.state_dict()
    assert torch.equal(opt.ring.flat(), ref_opt.ring.flat())


def test_step_loss_finds_the_loss_where_steps_return_it():
    from pdt_compile.api import step_loss

    loss, logits = torch.tensor(0.5), torch.ones(4, 3)
    assert step_loss(loss) is loss and step_loss(0.5) == 0.5
    assert step_loss((loss, logits)) is loss and step_loss([loss]) is loss
    assert step_loss({"loss": loss, "logits": logits}) is loss
    assert step_loss(logits) is None and step_loss((logits, loss)) is None
    assert step_loss(None) is None and step_loss({"logits": logits}) is None and step_loss(()) is None
    assert step_loss(3) is None and step_loss(True) is None


@pytest.mark.parametrize("shape", ["tuple", "dict"])
def test_a_compiled_step_returning_the_loss_with_other_outputs_reports_it(shape):
    """Steps often return the loss with the logits or in a dict: the loss still reaches what
    reads it (here the runaway guard), with no warning that it stays idle."""
    model = make_mlp()
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), runaway_factor=3.0, **CONFIG)

    @pdt.compile(optimizer=opt, backend="aot_eager")
    def train_step(x, y):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return (loss, logits) if shape == "tuple" else {"loss": loss, "logits": logits}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for x, y in batches(24):
            train_step(x, y)
    assert opt.stats.predictions >= 2
    assert len(opt.schedule.recent_losses) + len(opt._unread_losses) > 0
    assert not [w for w in caught if "reads the training loss" in str(w.message)]


def test_a_float64_model_under_pdt_compile_follows_eager():
    """float64 weights are predicted in float64 in the compiled graphs too (jump buffers
    included): the same merges as the eager run. Right after a prediction (step 36) only the
    merged elements hold float32 values (snapshot plus predicted displacement); a float32 pass
    rounded them all."""
    data = [(x.double(), y) for x, y in batches(36)]
    runs = []
    for compiled in (False, True):
        model = make_mlp().double()
        opt = pdt.PDT(OPTIMIZERS["sgd_momentum"](model.parameters()), **CONFIG)
        run_steps(model, opt, data, compiled)
        runs.append((model, opt))
    (eager_model, eager), (model, opt) = runs
    assert opt.compiled_step is not None and all(p.dtype == torch.float64 for p in model.parameters())
    assert all(jump.dtype == torch.float64 for jump in opt.compiled_step.runtime.jumps)
    assert_follows_eager(eager_model, eager, model, opt, atol=1e-5, predictions=8)
    step, ratio = opt.stats.mask_ratio_history[-1]
    total = sum(p.numel() for p in model.parameters())
    representable = sum(int((p.float().double() == p).sum()) for p in model.parameters())
    assert step == 36 and 0 < representable == round(ratio * total) < total


def test_the_predict_graph_leaves_pieces_this_rank_does_not_count_out_of_its_local_grams():
    """Under tensor parallelism a replicated parameter enters the Gram's sum over ranks from one
    rank alone (:class:`~pdt_compile.distributed.ShardReduction`); the graph's grouping adds zero
    for it on the others."""
    grams = [torch.full((3, 3), float(i + 1), dtype=torch.float64) for i in range(3)]
    assert torch.equal(group_grams(grams, [0, 0, 0], [True, False, True]), torch.full((1, 3, 3), 4.0, dtype=torch.float64))
    assert torch.equal(group_grams(grams, [0, 1, 2], [True, False, True])[1], torch.zeros(3, 3, dtype=torch.float64))
    assert torch.equal(group_grams(grams, [0, 0, 0]), torch.full((1, 3, 3), 6.0, dtype=torch.float64))


def test_pdt_compile_traces_bitsandbytes_8bit_adamw_and_merges_as_eagerly():
    """bitsandbytes' 8-bit AdamW steps through custom ops Dynamo traces: the step compiles with
    PDT's nodes (no fallback), and merges where the eager path does, its moment filter reading
    the coded moments alike (torchao's, which compiles itself, falls back: README "Memory")."""
    bnb_optim = pytest.importorskip("bitsandbytes.optim")
    runs = []
    for compiled in (False, True):
        model = make_mlp(hidden=512)  # 8 x 512 = 4096 weights: coded moments
        opt = pdt.PDT(bnb_optim.AdamW8bit(model.parameters(), lr=0.01), snap_every=3, history=4, burn_in=4, tau=3)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*ran without being compiled")
            run_steps(model, opt, batches(30), compiled)
        runs.append((model, opt))
    (eager, eager_opt), (model, opt) = runs
    assert opt.compiled_step.runtime is not None  # the boundary graphs ran
    assert opt.stats.merges == eager_opt.stats.merges > 0
    assert opt.stats.moment_filtered == eager_opt.stats.moment_filtered > 0
    for ours, theirs in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
