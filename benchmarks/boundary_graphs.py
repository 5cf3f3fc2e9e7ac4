"""Eager PDT's prediction step by kernels: plain torch, per-parameter Inductor kernels, and one
compiled graph a boundary (``kernels="graph"``), on a model of few large tensors and one of many.

Each PDT step runs through the user's eager training step with its phase forced
(``benchmarks.steps.force_phase``), interleaved round by round with the plain optimizer's
step; a prediction's cost is the prediction step minus the plain step, over the bandwidth floor
(2h+2 copies of all parameters from memory, ``benchmarks.floor``). ``kernels="graph"`` is meant
for accelerators, where a call per parameter binds the eager path to the host; the CPU shows
what its single call saves there and what its compile costs.

    python -m benchmarks.boundary_graphs [--models "MLP ~2M,blocks 24x512"] [--repeats 60] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import pdt_compile as pdt

from .compile_overhead import interleaved_ms, median_ms, synchronize
from .floor import copy_floors
from .overhead import MODELS, mlp
from .report import write_section
from .steps import CORE, ready_to_predict, train_step

KERNELS = ("torch", "inductor", "graph")


def blocks(width: int, depth: int, classes: int = 10) -> nn.Module:
    """``depth`` residual-free blocks of LayerNorm and Linear: a transformer's many tensors."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.LayerNorm(width), nn.Linear(width, width), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(width, classes))


SHAPES = {**{name: ("mlp", spec) for name, spec in MODELS.items()}, "blocks 24x512": ("blocks", (512, 24))}


def model_and_data(name: str, batch: int, device: str):
    kind, spec = SHAPES[name]
    torch.manual_seed(0)
    model = (mlp(*spec) if kind == "mlp" else blocks(*spec)).to(device)
    inputs = spec[0]
    return model, torch.randn(batch, inputs, device=device), torch.randint(0, 10, (batch,), device=device)


def measure(name: str, repeats: int, batch: int, device: str) -> list[str]:
    """One model's rows: per kernels choice, the prediction step, its cost over the floor, and
    the first prediction's time (the compile, where there is one)."""
    plain_model, x, y = model_and_data(name, batch, device)
    plain_opt = torch.optim.AdamW(plain_model.parameters(), lr=1e-3, foreach=True)
    plain = train_step(plain_model, x, y, plain_opt)
    plain()
    steps, first = {}, {}
    for kernels in KERNELS:
        model, _, _ = model_and_data(name, batch, device)
        opt = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True), snap_every=1, kernels=kernels, **CORE)
        step = train_step(model, x, y, opt)
        ready_to_predict(opt, step)
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        first[kernels] = time.perf_counter() - start
        steps[kernels] = (step, opt)
    n = sum(p.numel() for p in plain_model.parameters())
    tensors = len(list(plain_model.parameters()))
    times = interleaved_ms([plain] + [steps[k][0] for k in KERNELS], repeats, device)
    for kernels in KERNELS:
        done = steps[kernels][1].stats.predictions
        if done != repeats + 1:
            raise RuntimeError(f"boundary_graphs: {kernels} predicted {done} times, expected {repeats + 1}")
    floor = copy_floors(n, 2 * CORE["history"] + 2, lambda fn: median_ms(fn, 4 * repeats, device), device)["memory"]
    lines = [f"**{name}** ({n:,} parameters in {tensors} tensors), AdamW foreach, batch {batch}, {device}; "
             f"plain step {times[0]:.3f} ms; floor (2h+2 copies from memory) {floor:.2f} ms", "",
             "| kernels | prediction step (ms) | prediction (ms) | prediction / floor | first prediction step (s) |",
             "|---|---|---|---|---|"]
    for kernels, ms in zip(KERNELS, times[1:]):
        lines.append(f"| {kernels} | {ms:.3f} | {ms - times[0]:.3f} | **{(ms - times[0]) / floor:.2f}** | {first[kernels]:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="MLP ~2M,blocks 24x512")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    lines: list[str] = []
    for name in args.models.split(","):
        lines += measure(name, args.repeats, args.batch, args.device) + [""]
    lines += ["- every PDT step runs through the eager training step, its phase forced (`benchmarks.steps.force_phase`), "
              "with `benchmarks.steps.CORE` (the prediction alone); the plain AdamW step and each kernels choice's "
              "prediction step are timed interleaved, one call of each per round",
              "- the first prediction step includes compiling its kernels or graph (before c8832a4, `graph` also compiled a "
              "capture graph per ring row at the captures before it; Inductor's on-disk cache may hold earlier compiles)"]
    body = "\n".join(lines)
    print(body)
    write_section(f"Eager prediction by kernels (benchmarks/boundary_graphs.py), {args.device}", body)


if __name__ == "__main__":
    main()
