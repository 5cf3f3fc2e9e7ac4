"""PDT on optimizers that keep weights in their state, with that state left behind by merges or
moved with them: what registering it (``pdt_compile.adapters.register_optimizer``) buys.

D-Adaptation AdaGrad rebuilds its weights from its initial point at every step (x = x0 - s / d),
so a merge of the weights alone is gone at the next step; D-Adaptation SGD pulls its weights
toward z = x0 - s; AccSGD keeps an iterate of its accelerated scheme in ``momentum_buffer``,
AdaSmooth its previous weights, SRMM a moving average of them, A2Grad an averaged iterate
``x_k``. Each case trains the digits MLP (batch 32, 1800 steps, one snapshot per
epoch, PDT's defaults otherwise) with the plain optimizer, PDT with the state left behind, and
PDT with it moved, from the same initial weights and batches per seed; the target is the plain
run's final training loss.

    python -m benchmarks.unregistered_state [--seeds 3] [--steps 1800]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch

import pdt_compile as pdt
from pdt_compile import adapters, tasks
from pdt_compile.experiment import batch_order, evaluate

from .report import write_section

CASES = [  # (pytorch-optimizer name, lr (None: the optimizer takes none), state keys that hold weights)
    ("dadaptadagrad", 1.0, ("x0",)),
    ("dadaptsgd", 0.3, ("x0", "z")),
    ("dadaptsgd", 0.1, ("x0", "z")),
    ("accsgd", 0.1, ("momentum_buffer",)),
    ("adasmooth", 0.01, ("prev_param",)),
    ("srmm", 0.5, ("mov_avg_param",)),
    ("a2grad", None, ("x_k",)),
]
EVERY = 60
"""Steps between evaluations of the full training loss."""


@contextmanager
def moved_keys(optimizer_class: type, keys: tuple[str, ...]) -> Iterator[None]:
    """Inside, PDTs built on ``optimizer_class`` move ``keys`` with merges (none: move nothing);
    the registry is as it was afterwards."""
    name = f"{optimizer_class.__module__}.{optimizer_class.__qualname__}"
    saved = adapters.WEIGHT_SPACE_STATE.get(name), adapters.TRAILING_STATE.get(name)
    adapters.WEIGHT_SPACE_STATE[name], adapters.TRAILING_STATE[name] = keys, ()
    try:
        yield
    finally:
        for registry, value in zip((adapters.WEIGHT_SPACE_STATE, adapters.TRAILING_STATE), saved):
            if value is None:
                registry.pop(name, None)
            else:
                registry[name] = value


def run(name: str, lr: float | None, moved: tuple[str, ...] | None, seed: int, steps: int) -> tuple[list[float], list[float], str]:
    """(full training loss every :data:`EVERY` steps, training seconds at each, PDT's stats or
    '') of one run; ``moved`` None trains the plain optimizer."""
    import pytorch_optimizer

    task = tasks.digits_mlp(steps=steps)
    torch.manual_seed(seed)
    model = task.make_model()
    cls = pytorch_optimizer.load_optimizer(name)
    optimizer = cls(model.parameters(), lr=lr)
    if moved is not None:
        with moved_keys(cls, moved), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimizer = pdt.PDT(optimizer, snap_every=len(task.train_x) // task.batch_size)
    batches = batch_order(task, seed)
    losses, seconds, elapsed = [], [], 0.0
    for step in range(1, steps + 1):
        index = next(batches)
        start = time.perf_counter()
        task.loss(model(task.train_x[index]), task.train_y[index]).backward()
        optimizer.step()
        optimizer.zero_grad()
        elapsed += time.perf_counter() - start
        if step % EVERY == 0:
            losses.append(evaluate(task, model)[0])
            seconds.append(elapsed)
    return losses, seconds, optimizer.stats.summary() if moved is not None else ""


def to_target(losses: list[float], seconds: list[float], target: float) -> tuple[float, float] | None:
    """(steps, seconds) at the first evaluation at or below ``target``; None if never."""
    for number, (loss, second) in enumerate(zip(losses, seconds), start=1):
        if loss <= target:
            return number * EVERY, second
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1800)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = ["| optimizer | lr | PDT | reaches the plain final loss (seeds) | speed-up in steps, median [min-max] | "
             "in training seconds | final loss, median | plain final loss, median |", "|---|---|---|---|---|---|---|---|"]
    for name, lr, keys in CASES:
        plain = [run(name, lr, None, seed, args.steps) for seed in range(args.seeds)]
        for label, moved in (("state left behind", ()), (f"{', '.join(keys)} moved", keys)):
            ratios_steps, ratios_seconds, finals = [], [], []
            for seed in range(args.seeds):
                losses, seconds, _ = run(name, lr, moved, seed, args.steps)
                target = plain[seed][0][-1]
                finals.append(losses[-1])
                reached = to_target(losses, seconds, target)
                if reached is not None:
                    base_steps, base_seconds = to_target(*plain[seed][:2], target)
                    ratios_steps.append(base_steps / reached[0])
                    ratios_seconds.append(base_seconds / reached[1])
            span = lambda r: f"{statistics.median(r):.2f}x [{min(r):.2f}-{max(r):.2f}]" if r else "-"  # noqa: E731
            lines.append(f"| {name} | {lr} | {label} | {len(ratios_steps)}/{args.seeds} | {span(ratios_steps)} | "
                         f"{span(ratios_seconds)} | {statistics.median(finals):.4f} | "
                         f"{statistics.median(p[0][-1] for p in plain):.4f} |")
            print(lines[-1], flush=True)
    body = "\n".join(lines) + (
        f"\n\nDigits MLP, batch 32, {args.steps} steps, PDT's defaults with one snapshot per epoch (44 steps), "
        f"{args.seeds} seeds, 1 torch thread. Full training loss every {EVERY} steps; a seed's target is its plain "
        "run's final loss, and a speed-up is the plain run's steps (or training seconds, evaluation excluded) to reach "
        "it over PDT's. The runs of a seed train one after the other (not in lock-step), so the seconds carry the "
        "machine's drift; the steps do not."
    )
    write_section("PDT on optimizers with weights in their state, left behind or moved (benchmarks/unregistered_state.py)", body)
    print(body)


if __name__ == "__main__":
    main()
