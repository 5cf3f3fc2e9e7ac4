"""Shared fixtures: tiny models and data that make every test fast on 2 CPU cores."""

from __future__ import annotations

import io

import pytest
import torch

import pdt_compile as pdt


def make_mlp(seed: int = 0, hidden: int = 16) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 3))


def lazy_mlp() -> torch.nn.Module:
    """:func:`make_mlp` with a lazy first layer (its input size is inferred at the first forward)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.LazyLinear(16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


class Beside(torch.nn.Module):
    """A tracked MLP beside a part PDT leaves alone, each with its own loss, so the part left
    alone follows the optimizer's own trajectory whatever PDT merges elsewhere."""

    def __init__(self, side: torch.nn.Module) -> None:
        super().__init__()
        self.mlp, self.side = make_mlp(), side

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.mlp(x), y) + self.side(x).abs().mean()


class ComplexLinear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.weight = torch.nn.Parameter(torch.randn(8, 2, dtype=torch.complex64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.complex64) @ self.weight


def batches(count: int, seed: int = 1, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(8, 3, generator=g)
    out = []
    for _ in range(count):
        x = torch.randn(size, 8, generator=g)
        out.append((x, (x @ teacher).argmax(1)))
    return out


def step_function(model, opt, loss_fn=torch.nn.functional.cross_entropy):
    """A training step as users write it: forward, backward, step, zero_grad; returns the loss."""

    def train_step(x, y):
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    return train_step


def amp_step_function(model, opt, scaler, device_type, dtype):
    """:func:`step_function` under autocast with a GradScaler; ``poison=True`` puts an inf in a
    gradient, so that ``scaler.step`` skips that optimizer step."""

    def train_step(x, y, poison=False):
        with torch.autocast(device_type, dtype=dtype):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        if poison:
            next(model.parameters()).grad.view(-1)[0] = float("inf")
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        return loss

    return train_step


def run_steps(model, opt, data, compiled, before=None, after=None):
    """Train on ``data``, through ``pdt.compile`` (aot_eager) or eagerly; ``before(index)`` and
    ``after()`` run around each step; each loss is reported, eager and compiled alike. Returns
    the compiled training step (None when eager)."""
    step = pdt.compile(step_function(model, opt), optimizer=opt, backend="aot_eager") if compiled else None
    for index, (x, y) in enumerate(data):
        if before is not None:
            before(index)
        if compiled:
            step(x, y)
        else:
            train(model, opt, [(x, y)], report=True)  # as the compiled step reports what it returns
        if after is not None:
            after()
    return step


def save_and_load(state):
    """``state`` after a torch.save / torch.load round trip (as a checkpoint file would)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def loss_of(model, x, y):
    return torch.nn.functional.cross_entropy(model(x), y)


def train(model, opt, data, scheduler=None, report=False):
    """Plain loop: forward, backward, step, zero_grad. Returns the losses. ``report``: True
    reports each loss tensor to ``opt``; ``float`` reports it as a host float."""
    losses = []
    for x, y in data:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if report:
            opt.report_loss(float(loss.detach()) if report is float else loss)
        opt.zero_grad()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.fixture
def mlp():
    return make_mlp()
