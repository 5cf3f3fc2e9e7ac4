"""Training runs and time-to-baseline metrics shared by the demo and the benchmarks.

A run trains one model from a fixed initialisation and data order, timing only the training
steps (optimizer and PDT overhead included, evaluation excluded), and evaluates the full
training loss and the test accuracy every ``eval_every`` steps.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

Wrap = Callable[[Optimizer], Optimizer]
"""Wraps the task's optimizer (e.g. in ``pdt.PDT``). One marked by :func:`needs_model` is
called as ``wrap(optimizer, model)``."""


def needs_model(wrap: Callable[[Optimizer, nn.Module], Optimizer]) -> Wrap:
    """Mark ``wrap`` as taking the model too (to build a ``verify=`` loss, for example), or a
    task's ``make_optimizer`` as taking the model in place of its parameters (to give its
    hidden matrices to Muon, for example: :func:`build_optimizer`)."""
    wrap.needs_model = True  # type: ignore[attr-defined]
    return wrap  # type: ignore[return-value]


def schedule_free(task: "Task", adamw: bool) -> Callable[..., Optimizer]:
    """``make_optimizer(params, lr)`` of the schedule-free optimizer a user would pick instead
    of ``task``'s (the ``schedulefree`` package): its AdamW variant in place of AdamW
    (``adamw``), else its SGD with momentum 0.9; one epoch of warmup, as that package advises."""
    import schedulefree

    warmup = task.steps_per_epoch
    if adamw:
        return lambda params, lr: schedulefree.AdamWScheduleFree(params, lr=lr, warmup_steps=warmup)
    return lambda params, lr: schedulefree.SGDScheduleFree(params, lr=lr, momentum=0.9, warmup_steps=warmup)


def build_optimizer(task: "Task", model: nn.Module, lr: float) -> Optimizer:
    """``task``'s optimizer over ``model``'s parameters at ``lr``."""
    make = task.make_optimizer
    if getattr(make, "needs_model", False):
        return make(model, lr)  # type: ignore[arg-type]
    return make(model.parameters(), lr)


def verification_loss(task: "Task", model: nn.Module, samples: int = 256) -> Callable[[], Tensor]:
    """A ``verify=`` loss for ``pdt.PDT``: the training loss on a fixed batch of the first
    ``samples`` training samples (training data, so the test set stays unseen)."""
    x, y = task.train_x[:samples], task.train_y[:samples]
    return lambda: task.loss(model(x), y)


@dataclass
class Task:
    """A supervised task: data tensors, a model factory and an optimizer factory."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    make_model: Callable[[], nn.Module]
    make_optimizer: Callable[[Iterable[Tensor], float], Optimizer]
    """Parameters, lr -> optimizer; or, marked by :func:`needs_model`, model, lr -> optimizer."""
    lr: float
    batch_size: int
    steps: int
    eval_every: int
    loss: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy
    eval_train_samples: int | None = None
    """Training loss measured on the first this many training samples (None: all)."""
    batchnorm_batches: int = 0
    """Evaluate a copy of the model whose BatchNorm running statistics
    ``torch.optim.swa_utils.update_bn`` recomputed over this many training batches (the first
    ones), as the README's recipe does after a merge; 0: the model as it stands."""
    schedule: str = "constant"
    """Learning-rate schedule: ``"constant"``, ``"cosine"`` (per step, from lr to zero over
    ``steps``; a ``LambdaLR`` on the wrapped optimizer, stepped after every training step) or
    ``"warmup-cosine"`` (a linear warmup over the first :data:`WARMUP_FRACTION` of the steps,
    then the cosine over the rest: what transformers are commonly trained with) or ``"drop"``
    (the rate, then :data:`DROP_FACTOR` times it from :data:`DROP_FRACTION` of the steps on: a
    step schedule's drop, or ``SWALR``'s, to a rate that then holds) or ``"steps"`` (the classic
    step schedule: the rate times :data:`STEP_FACTOR` at each of :data:`STEP_FRACTIONS` of the
    steps) or ``"exponential"`` (per step, from lr to :data:`EXPONENTIAL_END` times it at the
    last step) or ``"restarts"`` (``CosineAnnealingWarmRestarts``, per step: :data:`RESTART_CYCLES`
    cosines from lr to zero, each back at lr) or ``"one-cycle"`` (``OneCycleLR`` with lr its peak and
    torch's defaults: up over the first 30 % of the steps from lr / 25, then down to lr / 25e4,
    momentum or Adam's beta1 cycled against it where the optimizer has momentum)."""

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.train_x) // self.batch_size)


def on_device(task: Task, device: torch.device | str) -> Task:
    """``task`` with its data and its models on ``device`` (the same initial weights: a
    model is built on the CPU, then moved)."""
    make_model = task.make_model
    return dataclasses.replace(
        task, train_x=task.train_x.to(device), train_y=task.train_y.to(device), test_x=task.test_x.to(device),
        test_y=task.test_y.to(device), make_model=lambda: make_model().to(device),
    )


@dataclass
class Run:
    """What one training run measured, at each evaluation point."""

    method: str
    seed: int
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    mask_ratio: list[tuple[int, float]] = field(default_factory=list)
    tau: list[tuple[int, int]] = field(default_factory=list)
    predictions: int = 0
    """Predictions PDT made over the run (``mask_ratio`` keeps only the latest ``history_limit``)."""
    diverged: bool = False

    @property
    def final_loss(self) -> float:
        return self.train_loss[-1]

    @property
    def best_accuracy(self) -> float:
        return max(self.test_accuracy)

    def time_to(self, target: float, metric: str = "loss") -> tuple[Optional[int], Optional[float]]:
        """First (step, seconds) where train loss <= target (or accuracy >= target)."""
        values = self.train_loss if metric == "loss" else self.test_accuracy
        for step, seconds, value in zip(self.steps, self.seconds, values):
            if (value <= target) if metric == "loss" else (value >= target):
                return step, seconds
        return None, None


@torch.no_grad()
def evaluate(task: Task, model: nn.Module, chunk: int = 4096) -> tuple[float, float]:
    """(mean training loss, test accuracy) of ``model`` (of a copy with its BatchNorm
    statistics recomputed, where ``task.batchnorm_batches`` says so)."""
    if task.batchnorm_batches:
        model = copy.deepcopy(model)
        size = task.batch_size
        torch.optim.swa_utils.update_bn(
            [task.train_x[i * size:(i + 1) * size] for i in range(task.batchnorm_batches)], model)
    was_training = model.training
    model.eval()
    total = 0.0
    samples = len(task.train_x) if task.eval_train_samples is None else task.eval_train_samples
    for start in range(0, samples, chunk):
        x, y = task.train_x[start : min(start + chunk, samples)], task.train_y[start : min(start + chunk, samples)]
        total += float(task.loss(model(x), y)) * len(x)
    correct = counted = 0
    for start in range(0, len(task.test_x), chunk):
        x, y = task.test_x[start : start + chunk], task.test_y[start : start + chunk]
        correct += int((model(x).argmax(-1) == y).sum())
        counted += y.numel()
    model.train(was_training)
    return total / samples, correct / counted


def batch_order(task: Task, seed: int) -> Iterator[Tensor]:
    """The training-sample indices of each step: shuffled epochs, the same for every method
    with the same ``seed``."""
    order = torch.Generator().manual_seed(seed + 1000)
    n = len(task.train_x)
    while True:
        permutation = torch.randperm(n, generator=order)
        for position in range(0, n - task.batch_size + 1, task.batch_size):
            yield permutation[position : position + task.batch_size]


class Training:
    """One training run, advanced a step at a time: :func:`train` runs one to its end, and
    :func:`train_in_lockstep` runs several side by side, one step of each in turn, so that a
    change in the machine's speed (this VM drifts by 10-20 % over minutes) lands on all of
    them alike. Same ``seed``, same initial weights and batch order, whatever the method.
    ``compiled``: the training step goes through ``pdt.compile`` (a PDT optimizer) or
    ``torch.compile`` (any other); the compilation time counts as training time."""

    def __init__(self, task: Task, wrap: Wrap, *, seed: int, method: str, lr: float | None = None,
                 compiled: bool = False) -> None:
        self.task = task
        torch.manual_seed(seed)
        self.model = model = task.make_model()
        optimizer = build_optimizer(task, model, task.lr if lr is None else lr)
        self.optimizer = optimizer = wrap(optimizer, model) if getattr(wrap, "needs_model", False) else wrap(optimizer)
        self.run = Run(method=method, seed=seed)
        self.scheduler = lr_schedule(task, optimizer)
        # Schedule-free optimizers train at y and are evaluated at x: train()/eval() switch.
        self.to_train, self.to_eval = getattr(optimizer, "train", None), getattr(optimizer, "eval", None)
        if self.to_train is not None:
            self.to_train()
        self.report = getattr(optimizer, "report_loss", None)

        def training_step(x: Tensor, y: Tensor) -> Tensor:
            loss = task.loss(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

        def sharpness_aware_step(x: Tensor, y: Tensor) -> Tensor:
            """SAM's loop: a gradient at the weights, one at the perturbed weights, the update."""
            loss = task.loss(model(x), y)
            loss.backward()
            optimizer.first_step(zero_grad=True)
            task.loss(model(x), y).backward()
            optimizer.second_step(zero_grad=True)
            return loss

        if hasattr(optimizer, "first_step") and hasattr(optimizer, "second_step"):
            training_step = sharpness_aware_step
        self.step_fn = training_step
        if compiled:
            from .api import compile as pdt_compile
            from .optim import PDT

            if isinstance(optimizer, PDT):
                self.step_fn, self.report = pdt_compile(training_step, optimizer=optimizer), None  # it reports the loss
            else:
                self.step_fn = torch.compile(training_step)
        self.batches = batch_order(task, seed)
        self.steps_done = 0
        self.elapsed = 0.0
        self.done = task.steps < 1

    def step(self) -> None:
        """One timed training step, then the evaluation when one is due (not timed)."""
        task, run = self.task, self.run
        index = next(self.batches).to(task.train_x.device)
        x, y = task.train_x[index], task.train_y[index]
        start = time.perf_counter()
        loss = self.step_fn(x, y)
        if self.report is not None:
            self.report(loss)
        if self.scheduler is not None:
            self.scheduler.step()
        if task.train_x.is_cuda:  # a step is timed once the device has run it
            torch.cuda.synchronize()
        self.elapsed += time.perf_counter() - start
        self.steps_done += 1
        step = self.steps_done
        self.done = step >= task.steps
        if step % task.eval_every == 0 or step == task.steps:
            if self.to_eval is not None:
                self.to_eval()
            train_loss, accuracy = evaluate(task, self.model)
            if self.to_train is not None:
                self.to_train()
            run.steps.append(step)
            run.seconds.append(self.elapsed)
            run.train_loss.append(train_loss)
            run.test_accuracy.append(accuracy)
            if not math.isfinite(train_loss):
                run.diverged = self.done = True

    def result(self) -> tuple[Run, Optimizer]:
        """The run so far, with PDT's mask ratios and horizons, and the optimizer."""
        stats = getattr(self.optimizer, "stats", None)
        if stats is not None:
            self.run.mask_ratio = list(stats.mask_ratio_history)
            self.run.tau = list(stats.tau_history)
            self.run.predictions = stats.predictions
        return self.run, self.optimizer


def train(
    task: Task,
    wrap: Wrap,
    *,
    seed: int,
    method: str,
    lr: float | None = None,
    progress: Callable[[int], None] | None = None,
    compiled: bool = False,
) -> tuple[Run, Optimizer]:
    """Train ``task`` with the optimizer wrapped by ``wrap`` (see :class:`Training`)."""
    training = Training(task, wrap, seed=seed, method=method, lr=lr, compiled=compiled)
    while not training.done:
        training.step()
        if progress is not None:
            progress(1)
    return training.result()


def train_in_lockstep(
    trainings: Sequence[Training], on_step: Callable[[Training, float], None] | None = None,
) -> list[tuple[Run, Optimizer]]:
    """Run ``trainings`` to their ends side by side: one step of each, in the given order, then
    the next (a diverged or finished one drops out). Each times only its own steps;
    ``on_step(training, seconds)`` is told each step's timed seconds."""
    while True:
        live = [training for training in trainings if not training.done]
        if not live:
            return [training.result() for training in trainings]
        for training in live:
            before = training.elapsed
            training.step()
            if on_step is not None:
                on_step(training, training.elapsed - before)


def lr_schedule(task: Task, optimizer: Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The scheduler ``task.schedule`` names, on ``optimizer`` (None for a constant rate)."""
    if task.schedule == "constant":
        return None
    if task.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, task.steps))
    if task.schedule == "warmup-cosine":
        warmup = max(1, round(WARMUP_FRACTION * task.steps))
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: (step + 1) / warmup if step < warmup else cosine_factor(step - warmup, task.steps - warmup))
    if task.schedule == "drop":
        drop = round(DROP_FRACTION * task.steps)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 if step < drop else DROP_FACTOR)
    if task.schedule == "steps":
        marks = [round(fraction * task.steps) for fraction in STEP_FRACTIONS]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=marks, gamma=STEP_FACTOR)
    if task.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=EXPONENTIAL_END ** (1 / max(1, task.steps - 1)))
    if task.schedule == "restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=max(1, task.steps // RESTART_CYCLES))
    if task.schedule == "one-cycle":
        with_momentum = any(group.get("momentum", 0) > 0 or "betas" in group for group in optimizer.param_groups)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
                                                   total_steps=task.steps, cycle_momentum=with_momentum)
    raise ValueError(f"Task.schedule: {task.schedule!r} is not a schedule; use "
                     + ", ".join(repr(name) for name in SCHEDULES[:-1]) + f" or {SCHEDULES[-1]!r}")


SCHEDULES = ("constant", "cosine", "warmup-cosine", "drop", "steps", "exponential", "restarts", "one-cycle")
"""The names :attr:`Task.schedule` takes (:func:`lr_schedule`)."""


WARMUP_FRACTION = 0.1
"""The share of a ``"warmup-cosine"`` task's steps that its learning rate rises over."""

DROP_FRACTION = 1 / 3
"""The share of a ``"drop"`` task's steps at its full rate."""

DROP_FACTOR = 0.7
"""A ``"drop"`` task's rate after :data:`DROP_FRACTION`, times its first: one stage of a step
schedule, above the default ``decay_window`` of 0.5."""


STEP_FRACTIONS = (0.5, 0.75)
"""Where a ``"steps"`` task's rate drops, as shares of its steps: the ResNet paper's CIFAR-10
recipe (divided by 10 at 32k and 48k of 64k iterations)."""

STEP_FACTOR = 0.1
"""What a ``"steps"`` task's rate is multiplied by at each drop (``MultiStepLR``'s gamma)."""

EXPONENTIAL_END = 0.01
"""An ``"exponential"`` task's rate at its last step, times its first (``ExponentialLR``)."""

RESTART_CYCLES = 4
"""How many cosines a ``"restarts"`` task's rate runs (``CosineAnnealingWarmRestarts``'s ``T_0``
is its steps over this)."""


def cosine_factor(step: int, steps: int) -> float:
    """The cosine schedule's factor at ``step`` of ``steps``: 1 at 0, 0 from ``steps`` on."""
    return 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


LOSS_FLOOR = 1e-6
"""The lowest training loss a time-to-baseline target is set to. Below it a mean cross-entropy
measures float32's saturation of the softmax, not training: the tuned Shampoo baseline on
digits ended at exactly 0 (benchmarks/RESULTS.md, runs of 2026-11-29), and PDT was timed to
reach 0 too."""


def loss_target(baseline: Run) -> float:
    """The training loss ``baseline`` is timed to: its final loss, or :data:`LOSS_FLOOR`."""
    return max(baseline.final_loss, LOSS_FLOOR)


def speedup(baseline: Run, run: Run, metric: str = "loss") -> tuple[Optional[float], Optional[float]]:
    """(step speedup, wall-time speedup) of ``run`` reaching the baseline's final train loss
    (``metric="loss"``; :func:`loss_target`) or best test accuracy (``"accuracy"``); None where
    it never does. Both sides are timed to their *first* evaluation at the target: where the
    baseline's loss is not monotonic, it reaches its own final value before its last step."""
    target = loss_target(baseline) if metric == "loss" else baseline.best_accuracy
    base_step, base_time = baseline.time_to(target, metric)
    step, seconds = run.time_to(target, metric)
    if step is None or base_step is None:
        return None, None
    return base_step / step, base_time / seconds
