"""Benchmark tasks and the learning-rate schedules the time-to-baseline suite runs them under."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

import pdt_compile as pdt
from pdt_compile import tasks
from pdt_compile.experiment import lr_schedule, train


def test_mnist1d_vit_is_an_adamw_transformer_trained_one_epoch_per_snapshot():
    pytest.importorskip("mnist1d")
    task = tasks.mnist1d_vit(epochs=50)
    assert task.steps == 50 * task.steps_per_epoch and task.steps_per_epoch == 40
    model = task.make_model()
    assert isinstance(task.make_optimizer(model.parameters(), 1e-3), torch.optim.AdamW)
    assert model(task.train_x[:3]).shape == (3, 10)
    assert 50_000 < sum(p.numel() for p in model.parameters()) < 100_000


def test_cosine_schedule_decays_the_wrapped_optimizers_lr_to_zero():
    task = dataclasses.replace(tasks.digits_mlp(steps=90), schedule="cosine")
    run, opt = train(task, lambda o: pdt.PDT(o, snap_every=10), seed=0, method="cosine", lr=0.1)
    last = 0.1 * 0.5 * (1 + math.cos(math.pi * 90 / 90))
    assert opt.param_groups[0]["lr"] == pytest.approx(last, abs=1e-12)
    assert opt.stats.boundaries == 9 and run.steps[-1] == 90
    constant, opt = train(dataclasses.replace(task, schedule="constant"), lambda o: o, seed=0, method="c", lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.1


def test_an_unknown_schedule_is_refused():
    task = dataclasses.replace(tasks.digits_mlp(steps=10), schedule="linear")
    with pytest.raises(ValueError, match="Task.schedule: 'linear'.*'constant', 'cosine', 'warmup-cosine', 'drop', 'steps', 'exponential', 'restarts' or 'one-cycle'"):
        lr_schedule(task, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))


def rates_of(schedule: str, steps: int) -> list[float]:
    """The learning rate of each step of a digits task on ``schedule`` at lr 0.1."""
    task = dataclasses.replace(tasks.digits_mlp(steps=steps), schedule=schedule)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler, rates = lr_schedule(task, optimizer), []
    for _ in range(task.steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_the_drop_schedule_falls_once_a_third_of_the_way_and_holds():
    assert rates_of("drop", 9) == pytest.approx([0.1] * 3 + [0.07] * 6)


def test_the_step_schedule_divides_the_rate_by_ten_at_half_and_three_quarters_of_the_steps():
    assert rates_of("steps", 8) == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)


def test_the_exponential_schedule_falls_by_one_factor_a_step_to_a_hundredth_at_the_last():
    rates = rates_of("exponential", 11)
    assert rates[0] == 0.1 and rates[-1] == pytest.approx(0.001)
    assert [b / a for a, b in zip(rates, rates[1:])] == pytest.approx([0.01 ** 0.1] * 10)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))])
def test_a_task_moved_to_a_device_trains_as_it_does_in_place(device):
    from pdt_compile.experiment import on_device

    task = tasks.digits_mlp(steps=90)
    here, _ = train(task, lambda o: pdt.PDT(o, snap_every=10), seed=0, method="here", lr=0.1)
    moved, _ = train(on_device(task, device), lambda o: pdt.PDT(o, snap_every=10), seed=0, method="moved", lr=0.1)
    assert moved.steps == here.steps
    assert moved.train_loss == pytest.approx(here.train_loss, rel=1e-2 if device == "cuda" else 1e-6)  # CUDA rounds differently


def test_an_evaluation_with_batchnorm_batches_reads_a_recomputed_copy_and_leaves_the_model_alone():
    """``Task.batchnorm_batches``: the evaluation is that of a copy whose BatchNorm statistics
    ``update_bn`` recomputed over the first training batches; the model evaluated keeps its own."""
    from pdt_compile.experiment import evaluate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    task = dataclasses.replace(tasks.digits_mlp(steps=10), make_model=lambda: model, batchnorm_batches=3)
    model.train()
    model(task.train_x[:64] * 3 + 1)  # running statistics of other inputs than the training data's
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    recomputed = evaluate(task, model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in kept.items()) and model.training
    stale = evaluate(dataclasses.replace(task, batchnorm_batches=0), model)
    reference = copy.deepcopy(model)
    torch.optim.swa_utils.update_bn([task.train_x[i * task.batch_size:(i + 1) * task.batch_size] for i in range(3)], reference)
    assert recomputed == evaluate(dataclasses.replace(task, batchnorm_batches=0), reference) != stale


def test_a_larger_mnist1d_test_set_is_balanced_apart_from_the_training_set_and_the_same_each_time():
    pytest.importorskip("mnist1d")
    x, y = tasks.mnist1d_test_set(2000)
    assert x.shape == (2000, 40) and x.dtype == torch.float32 and y.shape == (2000,)
    assert y.bincount(minlength=10).tolist() == [200] * 10
    task = tasks.mnist1d_vit(epochs=1)
    assert torch.cdist(x, task.train_x).min() > 0.1 and torch.cdist(x, task.test_x).min() > 0.1  # none repeated
    again_x, again_y = tasks.mnist1d_test_set(2000)
    assert torch.equal(x, again_x) and torch.equal(y, again_y)
    assert not torch.equal(tasks.mnist1d_test_set(2000, seed=7)[0], x)
    with pytest.raises(ValueError, match="seed=42 is the standard set's"):
        tasks.mnist1d_test_set(100, seed=42)
    with pytest.raises(ValueError, match="samples=0 must be at least 1"):
        tasks.mnist1d_test_set(0)
