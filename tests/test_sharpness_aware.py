"""Sharpness-aware optimizers (SAM and its kin) train through PDT in both of their loops:
``step(closure)`` and the two-step ``first_step``/``second_step``, eagerly and under
``pdt.compile``, with the same merges."""

from __future__ import annotations

import warnings

import pytest
import torch

import pdt_compile as pdt

from conftest import batches, loss_of, make_mlp, save_and_load

po = pytest.importorskip("pytorch_optimizer")

CONFIG = dict(snap_every=3, history=4, burn_in=4, tau=3, momentum_spacing=None)


def sharpness_aware(name, params):
    if name == "WSAM":
        raise AssertionError("WSAM takes the model: build it in the test")
    return getattr(po, name)(params, torch.optim.SGD, lr=0.2, momentum=0.9, rho=0.05)


def closure_loop(model, opt, data):
    for x, y in data:
        def closure():
            opt.zero_grad()
            loss = loss_of(model, x, y)
            loss.backward()
            return loss

        closure()
        opt.step(closure)


def two_step_loop(model, opt, data, zero_grad=True):
    """The loop of SAM's README: the second step clears the gradients it was handed. It
    reports the loss at the perturbed weights, as PDT reports SAM's step(closure)'s: the
    closure's, which SAM calls there (SAM's step returns nothing)."""
    for x, y in data:
        loss_of(model, x, y).backward()
        opt.first_step(zero_grad=True)
        perturbed = loss_of(model, x, y)
        perturbed.backward()
        opt.second_step(zero_grad=zero_grad)
        opt.report_loss(perturbed)
        if not zero_grad:
            opt.zero_grad()


@pytest.mark.parametrize("name", ["SAM", "FriendlySAM", "LookSAM"])
def test_the_two_step_loop_merges_as_step_with_a_closure_does(name):
    data = batches(30)
    runs = []
    for loop in (closure_loop, two_step_loop):
        model = make_mlp()
        opt = pdt.PDT(sharpness_aware(name, model.parameters()), **CONFIG)
        loop(model, opt, data)
        runs.append((model, opt))
    (closure_model, by_closure), (model, opt) = runs
    assert opt.stats.merges == by_closure.stats.merges > 0
    for a, b in zip(closure_model.parameters(), model.parameters()):
        torch.testing.assert_close(a, b)


def test_a_second_step_that_clears_the_gradients_merges_as_one_that_does_not():
    """The gradients tell PDT which parameters trained (one without is left out of a merge):
    a second step told to clear them does so after PDT's boundary work."""
    data = batches(30)
    runs = []
    for zero_grad in (False, True):
        model = make_mlp()
        opt = pdt.PDT(sharpness_aware("SAM", model.parameters()), **CONFIG)
        two_step_loop(model, opt, data, zero_grad=zero_grad)
        runs.append((model, opt.stats.merges))
    assert runs[0][1] == runs[1][1] > 0
    assert all(p.grad is None for p in runs[1][0].parameters())
    for a, b in zip(runs[0][0].parameters(), runs[1][0].parameters()):
        torch.testing.assert_close(a, b)


def test_the_model_taking_wsam_trains_through_both_loops_alike():
    """WSAM's step(closure) calls the closure at the weights and then at the perturbed ones,
    so the gradient check reads another gradient than in the two-step loop: off here."""
    data = batches(30)
    runs = []
    for loop in (closure_loop, two_step_loop):
        model = make_mlp()
        opt = pdt.PDT(po.WSAM(model, model.parameters(), torch.optim.SGD, lr=0.2, momentum=0.9), **CONFIG,
                      gradient_limit=None)
        loop(model, opt, data)
        runs.append((model, opt.stats.merges))
    assert runs[0][1] == runs[1][1] > 0
    for a, b in zip(runs[0][0].parameters(), runs[1][0].parameters()):
        torch.testing.assert_close(a, b)


def test_resume_in_the_two_step_loop_is_bit_exact():
    data = batches(40)
    model = make_mlp()
    opt = pdt.PDT(sharpness_aware("SAM", model.parameters()), **CONFIG)
    two_step_loop(model, opt, data[:17])
    saved_model, saved_opt = save_and_load(model.state_dict()), save_and_load(opt.state_dict())
    two_step_loop(model, opt, data[17:])
    resumed = make_mlp(seed=1)
    resumed_opt = pdt.PDT(sharpness_aware("SAM", resumed.parameters()), **CONFIG)
    resumed.load_state_dict(saved_model)
    resumed_opt.load_state_dict(saved_opt)
    two_step_loop(resumed, resumed_opt, data[17:])
    assert resumed_opt.stats.merges == opt.stats.merges > 0
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_first_and_second_step_of_an_optimizer_without_them_say_what_to_call():
    opt = pdt.PDT(torch.optim.SGD(make_mlp().parameters(), lr=0.1), **CONFIG)
    assert not hasattr(opt, "first_step")
    with pytest.raises(AttributeError, match=r"SGD has no second_step\(\).*call step\(\)"):
        opt.second_step()


def test_the_two_step_loop_under_pdt_compile_follows_eager():
    data = batches(24)
    runs = []
    for compiled in (False, True):
        model = make_mlp()
        opt = pdt.PDT(sharpness_aware("SAM", model.parameters()), **CONFIG)

        def train_step(x, y):
            loss = loss_of(model, x, y)
            loss.backward()
            opt.first_step(zero_grad=True)
            loss_of(model, x, y).backward()
            opt.second_step(zero_grad=True)
            return loss

        step = pdt.compile(train_step, optimizer=opt, backend="aot_eager") if compiled else train_step
        for x, y in data:
            loss = step(x, y)
            if not compiled:
                opt.report_loss(loss)
        runs.append((model, opt.stats.merges))
    assert runs[0][1] == runs[1][1] > 0
    for a, b in zip(runs[0][0].parameters(), runs[1][0].parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_stepping_the_wrapped_sam_itself_warns_once_and_the_loops_through_pdt_never_do():
    """SAM's second_step steps its base optimizer, not SAM: PDT watches that one."""
    model = make_mlp()
    sam = sharpness_aware("SAM", model.parameters())
    pdt.PDT(sam, **CONFIG)
    with pytest.warns(UserWarning, match=r"SAM.second_step\(\) \(or step\(\)\) was called on the wrapped optimizer "
                                         r"itself.*call first_step\(\) and second_step\(\)") as caught:
        two_step_loop(model, _Reporting(sam), batches(3))
    assert sum("wrapped optimizer itself" in str(w.message) for w in caught) == 1
    for loop in (two_step_loop, closure_loop):
        model = make_mlp()
        opt = pdt.PDT(sharpness_aware("SAM", model.parameters()), **CONFIG)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loop(model, opt, batches(3))


class _Reporting:
    """``optimizer`` with a ``report_loss`` that does nothing (the loop reports to PDT)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def report_loss(self, loss):
        pass


def test_a_merge_the_gradient_check_undoes_between_sams_two_steps_stays_undone():
    """The check reads the gradient at the perturbed weights and undoes the merge there; SAM
    then copies back the weights it saved before perturbing them, which must have been moved
    too. At rho 0 SAM is its base optimizer, so PDT on it runs as PDT on SGD, undos and all."""
    data = batches(60)
    runs = []
    config = None
    for sam in (True, False):
        model = make_mlp()
        sgd = dict(lr=0.2, momentum=0.9)
        inner = (po.SAM(model.parameters(), torch.optim.SGD, rho=0.0, **sgd) if sam
                 else torch.optim.SGD(model.parameters(), **sgd))
        # SGD's own "auto" settings differ from SAM's: the same resolved configuration for both.
        opt = pdt.PDT(inner, **CONFIG, gradient_limit=1.05) if sam else pdt.PDT(inner, config=config)
        config = opt.config
        if sam:
            two_step_loop(model, opt, data)
        else:
            for x, y in data:
                loss = loss_of(model, x, y)
                loss.backward()
                opt.step()
                opt.report_loss(loss)
                opt.zero_grad()
        runs.append((model, opt.stats))
    (model, stats), (plain, plain_stats) = runs
    assert stats.gradient_undos == plain_stats.gradient_undos > 0
    assert stats.merges == plain_stats.merges
    for a, b in zip(plain.parameters(), model.parameters()):
        torch.testing.assert_close(a, b)


def test_sam_takes_its_base_optimizers_auto_settings_but_the_moment_filter():
    """SAM updates as its base optimizer does, at another gradient: PDT's per-optimizer
    settings follow the base optimizer (adaptive tau paid on SAM over SGD), but for the filter
    by Adam's moments, which cost SAM over AdamW (benchmarks.sharpness_aware)."""
    model = make_mlp()
    for base, options in ((torch.optim.SGD, dict(lr=0.1, momentum=0.9)), (torch.optim.AdamW, dict(lr=1e-3))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SGD's spacing warning
            plain = pdt.PDT(base(model.parameters(), **options), snap_every=4).config
            sam = pdt.PDT(po.SAM(model.parameters(), base, **options), snap_every=4).config
        assert sam == (plain if base is torch.optim.SGD else plain.replace(moment_ratio=None))
    assert plain.moment_ratio is not None


def test_the_two_step_loop_through_lightnings_optimizer_wrapper_runs_pdt_once_a_step():
    """Lightning hands manual optimization a LightningOptimizer, a class made on the fly from
    its own and PDT's: first_step and second_step found on it must step the PDT it wraps."""
    lightning = pytest.importorskip("lightning.pytorch")
    data = batches(30)
    runs = []
    for wrapped in (False, True):
        model = make_mlp()
        opt = pdt.PDT(sharpness_aware("SAM", model.parameters()), **CONFIG)
        handle = lightning.core.optimizer.LightningOptimizer(opt) if wrapped else opt
        two_step_loop(model, handle, data)
        runs.append((model, opt.stats.merges, opt.schedule.steps))
    assert runs[0][1:] == runs[1][1:] and runs[0][1] > 0 and runs[0][2] == 30
    for a, b in zip(runs[0][0].parameters(), runs[1][0].parameters()):
        assert torch.equal(a, b)


def test_gsam_trains_through_pdt_with_its_closure_set_on_the_optimizer_it_wraps():
    """GSAM takes its closure from set_closure and returns (outputs, loss): PDT hands that
    back, and points at the wrapped optimizer for set_closure."""
    model = make_mlp()
    sgd = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    constant = torch.optim.lr_scheduler.LambdaLR(sgd, lambda step: 1.0)
    rho = po.ProportionScheduler(constant, max_lr=0.2, min_lr=0.2, max_value=0.05, min_value=0.05)
    opt = pdt.PDT(po.GSAM(model.parameters(), sgd, model, rho), **CONFIG)
    with pytest.raises(AttributeError, match=r"GSAM\) has: use opt.optimizer.set_closure"):
        opt.set_closure
    assert not hasattr(opt, "set_closure") and not hasattr(opt, "no_such_thing")
    for x, y in batches(30):
        opt.optimizer.set_closure(torch.nn.functional.cross_entropy, x, y)
        outputs, loss = opt.step(opt.optimizer.forward_backward_func)  # the closure: the check reads its gradient
        assert outputs.shape == (len(x), 3) and loss.numel() == 1
        opt.report_loss(loss)
    assert opt.stats.merges > 0
    for x, y in batches(CONFIG["snap_every"]):  # without the closure, ordinary steps and a boundary alike
        opt.optimizer.set_closure(torch.nn.functional.cross_entropy, x, y)
        outputs, loss = opt.step()
        assert outputs.shape == (len(x), 3) and loss.numel() == 1


def test_gsam_stepped_without_a_closure_runs_as_with_the_one_it_stores():
    """``opt.step()`` after ``set_closure``: GSAM takes the gradient inside its step, from the
    closure it stores; PDT runs that step as ``opt.step(that closure)``, so the gradient check
    judges a merge by the gradient taken after it, not the step before's."""
    def run(pass_closure):
        model = make_mlp()
        sgd = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
        constant = torch.optim.lr_scheduler.LambdaLR(sgd, lambda step: 1.0)
        rho = po.ProportionScheduler(constant, max_lr=0.2, min_lr=0.2, max_value=0.05, min_value=0.05)
        opt = pdt.PDT(po.GSAM(model.parameters(), sgd, model, rho), gradient_limit=1.05, **CONFIG)
        for x, y in batches(40):
            opt.optimizer.set_closure(torch.nn.functional.cross_entropy, x, y)
            _, loss = opt.step(opt.optimizer.forward_backward_func) if pass_closure else opt.step()
        return model, opt.stats

    (model, stats), (plain_model, plain_stats) = run(True), run(False)
    assert stats.merges > 0 and stats.gradient_undos > 0
    assert plain_stats.as_dict() | {"prediction_seconds": 0} == stats.as_dict() | {"prediction_seconds": 0}
    for a, b in zip(model.parameters(), plain_model.parameters()):
        assert torch.equal(a, b)
