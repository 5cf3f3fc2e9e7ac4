"""Merges move the optimizer's own weight-space state (schedule-free z, Lookahead's slow
weights) and registered averages with the weights; train()/eval() and checkpoints still work."""

from __future__ import annotations

import warnings

import pytest
import torch

import pdt_compile as pdt
from pdt_compile.runtime.schedule import Phase

from conftest import batches, make_mlp, save_and_load, step_function, train

schedulefree = pytest.importorskip("schedulefree")
po = pytest.importorskip("pytorch_optimizer")

CONFIG = dict(snap_every=3, history=4, burn_in=4, tau=3)
STACKED = {
    "sgd_schedule_free": (lambda p: schedulefree.SGDScheduleFree(p, lr=0.5, momentum=0.9, warmup_steps=3), ("z",)),
    "adamw_schedule_free": (lambda p: schedulefree.AdamWScheduleFree(p, lr=0.02, warmup_steps=3), ("z",)),
    "sgd_schedule_free_reference": (lambda p: schedulefree.SGDScheduleFreeReference(p, lr=0.5, warmup_steps=3), ("z", "x")),
    "lookahead": (lambda p: po.Lookahead(torch.optim.SGD(p, lr=0.2, momentum=0.9), k=4, alpha=0.5), ("slow_params",)),
}


def spy_on_predictions(opt):
    """Record ((tracked, followers) before, (tracked, followers) after) of every prediction
    boundary, around PDT's own boundary work."""
    records = []
    run_boundary = opt._run_boundary

    def snapshot():
        return [t.detach().clone() for t in opt.tracked()], [[f.clone() for f in fs] for fs in opt.followers()]

    def spied(phase):
        before = snapshot()
        result = run_boundary(phase)
        if phase == Phase.PREDICT:
            records.append((before, snapshot()))
        return result

    opt._run_boundary = spied
    return records


def assert_followers_moved_by_the_jump(records):
    """Every follower moved by exactly its tracked tensor's jump, and something moved."""
    moved = 0
    for (w0, f0), (w1, f1) in records:
        for index in range(len(w0)):
            jump = w1[index] - w0[index]
            moved += int((jump != 0).sum())
            for before, after in zip(f0[index], f1[index]):
                assert torch.allclose(after - before, jump.view(before.shape), atol=1e-6)
    assert moved > 0


def make(name, **options):
    model = make_mlp()
    make_opt, keys = STACKED[name]
    opt = pdt.PDT(make_opt(model.parameters()), **{**CONFIG, **options})
    opt.train()
    return model, opt, keys


@pytest.mark.parametrize("name", sorted(STACKED))
def test_a_merge_moves_the_optimizers_weight_space_state_by_the_same_jump(name):
    model, opt, keys = make(name)
    records = spy_on_predictions(opt)
    train(model, opt, batches(45))
    assert opt.stats.merges >= 2
    assert all(len(fs) == len(keys) for fs in opt.followers())
    assert_followers_moved_by_the_jump(records)


def test_schedule_free_train_and_eval_go_through_the_wrapper():
    model, opt, _ = make("sgd_schedule_free")
    train(model, opt, batches(20))
    y = [p.detach().clone() for p in model.parameters()]
    opt.eval()
    assert not torch.equal(y[0], model[0].weight)  # evaluation weights x
    with pytest.raises(Exception, match="train mode"):
        train(model, opt, batches(1))
    opt.train()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(y, model.parameters()))


@pytest.mark.parametrize("name", ["sgd_schedule_free", "lookahead"])
def test_resume_is_bit_exact(name):
    data = batches(40)
    model, opt, _ = make(name)
    train(model, opt, data[:20])
    checkpoint = save_and_load({"model": model.state_dict(), "optim": opt.state_dict()})
    train(model, opt, data[20:])
    model2, opt2, _ = make(name)
    model2.load_state_dict(checkpoint["model"])
    opt2.load_state_dict(checkpoint["optim"])
    train(model2, opt2, data[20:])
    assert opt2.stats.merges == opt.stats.merges >= 1
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))
    for fs, fs2 in zip(opt.followers(), opt2.followers()):
        assert all(torch.equal(a, b) for a, b in zip(fs, fs2))


def test_an_ema_registered_with_move_with_merges_follows_the_jumps():
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    model = make_mlp()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9), **CONFIG)
    opt.move_with_merges(ema.module.parameters())
    records = spy_on_predictions(opt)
    for x, y in batches(45):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        ema.update_parameters(model)
    assert opt.stats.merges >= 2
    for (w0, f0), (w1, f1) in records:
        for index in range(len(w0)):
            assert torch.allclose(f1[index][0] - f0[index][0], w1[index] - w0[index], atol=1e-6)
    with pytest.raises(ValueError, match="shaped like the tracked parameters"):
        opt.move_with_merges([torch.zeros(3)])


def test_optimizers_pdt_cannot_stack_on_raise_clearly():
    params = list(make_mlp().parameters())
    with pytest.raises(TypeError, match="not a torch.optim.Optimizer"):
        pdt.PDT(schedulefree.ScheduleFreeWrapper(torch.optim.SGD(params, lr=0.1)), snap_every=3)
    with pytest.raises(TypeError, match="no adapter"):
        pdt.PDT(schedulefree.AdamWScheduleFreePaper(params, lr=0.01), snap_every=3)


def test_compiled_schedule_free_follows_eager():
    data = batches(45)
    eager_model, eager, _ = make("sgd_schedule_free")
    train(eager_model, eager, data)
    model, opt, _ = make("sgd_schedule_free")
    step = pdt.compile(step_function(model, opt), optimizer=opt, backend="aot_eager")
    for x, y in data:
        step(x, y)
    assert opt.stats.merges == eager.stats.merges >= 2
    for a, b in zip(eager_model.parameters(), model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    for fs, fs2 in zip(eager.followers(), opt.followers()):
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(fs, fs2))


@pytest.mark.parametrize("name,sequence", [("sgd_schedule_free", "z"), ("sgd_schedule_free_reference", "x")])
def test_another_sequence_is_snapshot_merged_and_the_parameters_follow(name, sequence):
    model, opt, keys = make(name, sequence=sequence)
    records = spy_on_predictions(opt)
    train(model, opt, batches(45))
    params = list(model.parameters())
    tracked = opt.tracked()
    assert all(t is opt.optimizer.state[p][sequence] for t, p in zip(tracked, params))
    assert all(any(f is p for f in fs) and all(f is not t for f in fs) for fs, p, t in zip(opt.followers(), params, tracked))
    assert len(opt.followers()[0]) == len(keys)  # the parameter and the other keys
    # The ring holds the tracked sequence: its newest snapshot is that tensor (the last
    # boundary captured it), not the parameter.
    last = opt.ring.rows(0)[opt.ring.last_slot]
    assert opt.stats.merges >= 1 and records
    assert_followers_moved_by_the_jump(records)
    assert opt.schedule.steps % CONFIG["snap_every"] == 0  # the last step was a boundary
    assert torch.equal(last, tracked[0].detach().reshape(-1))
    assert not torch.equal(last, params[0].detach().reshape(-1))


def test_a_sequence_the_optimizer_does_not_keep_is_refused():
    with pytest.raises(ValueError, match=r"sequence: 'z'.*SGD.*\[\]"):
        pdt.PDT(torch.optim.SGD(make_mlp().parameters(), lr=0.1), sequence="z", **CONFIG)
    with pytest.raises(ValueError, match=r"'x'.*\['z'\]"):
        pdt.PDT(schedulefree.SGDScheduleFree(make_mlp().parameters(), lr=0.1), sequence="x", **CONFIG)


def test_stacking_on_schedule_free_warns_with_what_was_measured():
    with pytest.warns(UserWarning, match="SGDScheduleFree: measured .* worse"):
        pdt.PDT(schedulefree.SGDScheduleFree(make_mlp().parameters(), lr=0.1), **CONFIG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pdt.PDT(po.Lookahead(torch.optim.SGD(make_mlp().parameters(), lr=0.1)), **CONFIG)
