"""What one small operation costs right after a training step, against the same operation in a
warm loop: why trims that halve PDT's cost in a warm loop barely move its cost in training.

PDT's per-step and per-boundary work on a small model is a few dozen small torch, numpy and
Python operations between training steps. A training step's convolutions and matrix products
leave the caches full of their own code and data, so the first operations after it run cold.
This trains a task's plain optimizer and, after each training step (forward, backward, step,
zero_grad), times one probe operation, taking the probes in turn; then times each probe
``timeit``-style in a loop with nothing in between.

    python -m benchmarks.cold_ops [--tasks 'mnist1d CNN / SGD-momentum;digits MLP / SGD'] [--steps 1800]
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from pdt_compile.experiment import batch_order

from .prediction_cost import cases
from .report import write_section

Probe = tuple[Callable[[Tensor], object] | None, Callable[[Tensor], object]]

SMALL = torch.zeros(8)
SMALL_ARRAY = np.zeros(8)

PROBES: dict[str, Probe] = {
    "nothing (the timer alone)": (None, lambda loss: None),
    "loss.item() (the runaway guard's read)": (None, lambda loss: loss.item()),
    "float(loss.detach())": (None, lambda loss: float(loss.detach())),
    "an 8-element torch add, in place": (None, lambda loss: SMALL.add_(1)),
    "an 8-element torch add, new tensor": (None, lambda loss: torch.add(SMALL, 1)),
    "the same add right after a first one": (lambda loss: torch.add(SMALL, 1), lambda loss: torch.add(SMALL, 1)),
    "an 8-element numpy add": (None, lambda loss: np.add(SMALL_ARRAY, 1)),
}
"""Probe name -> (an untimed operation run just before it, or None; the timed operation on the
step's loss)."""


def after_steps(name: str, steps: int) -> tuple[dict[str, float], float]:
    """Per probe, the median seconds it takes right after a training step of the task ``name``
    (its plain optimizer, seed 0), and the median training step."""
    _, task, _, lr = next(case for case in cases([name.split(",")[0]]) if case[0] == name)
    torch.manual_seed(0)
    model = task.make_model()
    optimizer = task.make_optimizer(model.parameters(), lr)
    if hasattr(optimizer, "train"):
        optimizer.train()
    batches = batch_order(task, 0)
    names = list(PROBES)
    times: dict[str, list[float]] = {probe: [] for probe in names}
    step_times = []
    for step in range(steps):
        index = next(batches)
        start = time.perf_counter()
        loss = task.loss(model(task.train_x[index]), task.train_y[index])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_times.append(time.perf_counter() - start)
        before, probe = PROBES[names[step % len(names)]]
        if before is not None:
            before(loss)
        start = time.perf_counter()
        probe(loss)
        if step >= 10 * len(names):  # past the first steps' allocations
            times[names[step % len(names)]].append(time.perf_counter() - start)
    return {probe: statistics.median(values) for probe, values in times.items()}, statistics.median(step_times)


def warm(repeats: int = 20000) -> dict[str, float]:
    """Per probe, its least mean seconds over 5 loops of ``repeats`` calls with nothing between."""
    loss = torch.nn.functional.cross_entropy(torch.randn(4, 3, requires_grad=True), torch.tensor([0, 1, 2, 0]))
    out = {}
    for name, (before, probe) in PROBES.items():
        def call() -> None:
            if before is not None:
                before(loss)
            probe(loss)
        out[name] = min(timeit.repeat(call, number=repeats, repeat=5)) / repeats
        if before is not None:  # the untimed first operation ran in the loop too
            out[name] -= min(timeit.repeat(lambda: before(loss), number=repeats, repeat=5)) / repeats
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="mnist1d CNN / SGD-momentum, on schedule-free;digits MLP / SGD",
                        help="task names (benchmarks.prediction_cost's rows), separated by ';'")
    parser.add_argument("--steps", type=int, default=1800)
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [name.strip() for name in args.tasks.split(";") if name.strip()]
    measured = {name: after_steps(name, args.steps) for name in names}
    in_loop = warm()
    header = "| operation | " + " | ".join(f"after a step of {name} (µs)" for name in names) + " | in a warm loop (µs) |"
    lines = [header, "|---" * (len(names) + 2) + "|"]
    for probe in PROBES:
        cells = [f"{1e6 * measured[name][0][probe]:.1f}" for name in names]
        lines.append(f"| {probe} | " + " | ".join(cells) + f" | {1e6 * in_loop[probe]:.2f} |")
    steps = ", ".join(f"{name} {1e3 * measured[name][1]:.2f} ms" for name in names)
    body = "\n".join(lines) + (
        f"\n\nEach cell: the median time of one operation, timed right after a training step of the task's plain optimizer "
        f"(forward, backward, step, zero_grad; seed 0, 1 torch thread; the operations taken in turn, one after each of "
        f"{args.steps} steps), or its least mean time in a loop of 20000 calls with nothing between (timeit, best of 5). "
        f"'the same add right after a first one': a second add, timed after an untimed first. Median training step: {steps}."
    )
    write_section("What a small operation costs right after a training step (benchmarks/cold_ops.py)", body)
    print(body)


if __name__ == "__main__":
    main()
