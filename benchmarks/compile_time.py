"""How long compiling takes as a model's tensor count grows, Inductor's caches off (a first run).

For stacks of LayerNorm + Linear blocks (width 256; a transformer's many tensors): the first call
of a plain ``torch.compile``d training step (AdamW foreach), and, under ``@pdt.compile``, the
first ordinary step, the captures and the first prediction step, with PDT's defaults and with
``kernels="graph"``; then eager ``pdt.PDT`` with ``kernels="graph"`` (its prediction graph; its captures, foreach copies, since c8832a4)
and with ``kernels="inductor"`` (per-parameter kernels: its first prediction). Each graph unrolls
PDT's maths for every tensor, so its compile time grows with the tensor count; Inductor's
on-disk cache makes later runs of the same model and configuration load it instead.

    python -m benchmarks.compile_time [--depths 1,3,6,12] [--width 256]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch._inductor.config as inductor_config

import pdt_compile as pdt
from pdt_compile.api import GRAPH_TENSORS_CPU
from pdt_compile.runtime import kernels
from pdt_compile.runtime.schedule import Phase

from .boundary_graphs import blocks
from .report import write_section
from .steps import CORE, force_phase, ready_to_predict, train_step


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def row(depth: int, width: int) -> str:
    torch._dynamo.reset()

    def setup():
        torch.manual_seed(0)
        model = blocks(width, depth)
        return model, torch.randn(32, width), torch.randint(0, 10, (32,))

    model, x, y = setup()
    tensors = len(list(model.parameters()))
    plain = torch.compile(train_step(model, x, y, torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)))
    plain_s = seconds(plain)
    cells = []
    for compiled, kernels_option in ((True, "auto"), (True, "graph"), (False, "graph")):
        torch._dynamo.reset()
        model, x, y = setup()
        opt = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True), snap_every=1,
                      kernels=kernels_option, **CORE)
        step = train_step(model, x, y, opt)
        if compiled:
            step = pdt.compile(step, optimizer=opt)
        step()  # the parameters' first step (eager)
        ordinary = seconds(step)
        force_phase(opt, Phase.CAPTURE)
        captures = sum(seconds(step) for _ in range(opt.config.history))
        force_phase(opt, Phase.PREDICT)
        predict = seconds(step)
        cells.append((ordinary, captures, predict))
    (ordinary, captures, predict), (_, forced_captures, forced_predict), (_, graph_captures, graph_predict) = cells
    return (f"| {depth} | {tensors} | {plain_s:.1f} | {ordinary:.1f} | {captures:.1f} | {predict:.1f} | "
            f"{forced_captures:.1f} | {forced_predict:.1f} | "
            f"{graph_captures:.1f} | {graph_predict:.1f} | {kernel_prediction(setup):.1f} |")


def kernel_prediction(setup) -> float:
    """Seconds of eager ``pdt.PDT``'s first prediction step with ``kernels="inductor"`` (what
    ``"auto"`` picks on CUDA and from 1M elements on the CPU): per-parameter kernels, compiled
    once per configuration and argument layout, whatever the tensor count."""
    torch._dynamo.reset()
    kernels._compiled.cache_clear()
    model, x, y = setup()
    opt = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True), snap_every=1, kernels="inductor",
                  **CORE)
    step = train_step(model, x, y, opt)
    ready_to_predict(opt, step)
    predictions = opt.stats.predictions
    elapsed = seconds(step)
    assert opt.stats.predictions == predictions + 1
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="1,3,6,12")
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args()
    inductor_config.force_disable_caches = True
    lines = [f"Blocks of LayerNorm({args.width}) + Linear({args.width}, {args.width}), AdamW foreach, "
             f"`benchmarks.steps.CORE` (history 5), Inductor on {torch.get_num_threads()} threads, caches off; seconds", "",
             "| blocks | tensors | plain torch.compile, first step | pdt.compile ordinary (first) | captures (5) | "
             "first prediction | pdt.compile, kernels=\"graph\": captures (5) | pdt.compile, kernels=\"graph\": first "
             "prediction | eager, kernels=\"graph\": captures | eager, kernels=\"graph\": first prediction | "
             "eager, kernels=\"inductor\": first prediction |",
             "|---|---|---|---|---|---|---|---|---|---|---|",
             ]
    for depth in (int(d) for d in args.depths.split(",")):
        lines.append(row(depth, args.width))
        print(lines[-1], flush=True)
    body = "\n".join(lines) + (
        f"\n\n'pdt.compile' columns: PDT's defaults (`kernels=\"auto\"`: on the CPU the captures and the prediction are "
        f"compiled into graphs up to {GRAPH_TENSORS_CPU} tensors, past that they run after the compiled optimizer step "
        "through the eager path's kernels); 'pdt.compile, kernels=\"graph\"': graphs whatever the count (what the "
        "defaults did at every count before fe2b4fe). 'eager': `pdt.PDT` without `pdt.compile`."
    )
    print(body)
    write_section("Compile time by tensor count (benchmarks/compile_time.py)", body)


if __name__ == "__main__":
    main()
