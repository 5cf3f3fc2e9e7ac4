"""Would compiling PDT's per-tensor merge once per shape bound compile time? A probe.

PDT's boundary graphs unroll the merge (:func:`~pdt_compile.runtime.kernels.predict_pass_`) for
every tensor, so their compile time grows with the tensor count (benchmarks/compile_time.py).
``torch.compiler.nested_compile_region`` marks a function whose graph Inductor compiles once and
calls again for every call with the same input shapes. This times, Inductor's caches off, the
first call of one compiled function that runs the merge on every tensor of
:func:`benchmarks.boundary_graphs.blocks` (the same data for both forms), unrolled and through a
nested region, and checks that both merge alike, also when the function first writes the
weights (as the optimizer step does before PDT's merge). The passes insert their nodes after Dynamo, where
no nested region can be marked: using this would mean the boundary graphs are traced by Dynamo
from Python (not built by passes).

    python -m benchmarks.nested_regions [--depths 3,12] [--width 256]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch._inductor.config as inductor_config

from pdt_compile.config import PDTConfig
from pdt_compile.dmd import gram
from pdt_compile.passes.predict import solve_on_device
from pdt_compile.runtime.kernels import predict_pass_

from .boundary_graphs import blocks
from .report import write_section


def merge_inputs(depth: int, width: int, config: PDTConfig) -> tuple[list, tuple]:
    """Per tensor of the model (weights, rows), and the shared inputs of one prediction."""
    generator = torch.Generator().manual_seed(0)
    h, steps = config.history, config.tau_max
    tensors = []
    for p in blocks(width, depth).parameters():
        n = p.numel()
        base = torch.randn(n, generator=generator)
        drift = torch.randn(n, generator=generator) * 1e-2
        rows = [base + k * drift + torch.randn(n, generator=generator) * 1e-3 for k in range(h)]
        tensors.append((base + h * drift, rows))
    s_weights = torch.zeros(h)
    s_weights[h - 1] = 1.0
    slot_mask = torch.zeros(h, dtype=torch.bool)
    slot_mask[0] = True
    order = torch.arange(h)
    grams = torch.stack([gram(rows) for _, rows in tensors]).sum(0, keepdim=True)
    coefficients, s_coefficients = solve_on_device(grams, order, order, torch.arange(steps).clamp(max=config.tau - 1), steps)
    shared = (s_weights, slot_mask, coefficients[0], s_coefficients[0], torch.tensor(float(config.tau)), torch.tensor(True))
    return tensors, shared


def timed_first_call(depth: int, width: int, nested: bool, written_before: bool = False) -> tuple[float, list]:
    """Seconds of the first call, and its counts and tensors after it. ``written_before``: the
    function first rewrites every weight unchanged (times 1), as an optimizer step writes the
    parameters before PDT's merge."""
    torch._dynamo.reset()
    config = PDTConfig(snap_every=1)
    tensors, shared = merge_inputs(depth, width, config)
    shift = config.after_merge == "shift"

    def one(weights, rows, s_weights, slot_mask, coefficients, s_coefficients, horizon, active):
        return predict_pass_(weights, rows, s_weights, slot_mask, coefficients, s_coefficients, horizon, active, None,
                             config.rule, config.trend, config.drift, shift)

    merge = torch.compiler.nested_compile_region(one) if nested else one

    def boundary(tensors, shared):
        if written_before:
            torch._foreach_mul_([weights for weights, _ in tensors], 1.0)
        return [merge(weights, rows, *shared) for weights, rows in tensors]

    start = time.perf_counter()
    counts = torch.compile(boundary)(tensors, shared)
    return time.perf_counter() - start, [int(c) for c in counts] + [t for weights, rows in tensors for t in [weights, *rows]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="3,12")
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args()
    inductor_config.force_disable_caches = True
    lines = [f"The merge of one prediction (`predict_pass_`, PDT's defaults) over every tensor of `blocks({args.width}, depth)`, "
             f"one `torch.compile`d function, first call (compile and run), Inductor on {torch.get_num_threads()} threads, "
             "caches off; seconds", "",
             "| blocks | tensors (distinct shapes) | unrolled | nested region per tensor | same merges and weights | "
             "nested, the weights written before the regions: same merges and weights |",
             "|---|---|---|---|---|---|"]
    for depth in (int(d) for d in args.depths.split(",")):
        shapes = {tuple(p.shape) for p in blocks(args.width, depth).parameters()}
        count = len(list(blocks(args.width, depth).parameters()))
        unrolled, reference = timed_first_call(depth, args.width, nested=False)
        nested, result = timed_first_call(depth, args.width, nested=True)
        _, written = timed_first_call(depth, args.width, nested=True, written_before=True)
        same = [all(a == b if isinstance(a, int) else torch.equal(a, b) for a, b in zip(reference, other))
                for other in (result, written)]
        lines.append(f"| {depth} | {count} ({len(shapes)}) | {unrolled:.1f} | {nested:.1f} | "
                     + " | ".join("yes" if s else "**no**" for s in same) + " |")
        print(lines[-1], flush=True)
    body = "\n".join(lines)
    print(body)
    write_section("Compile time of the merge, unrolled and in nested regions (benchmarks/nested_regions.py)", body)


if __name__ == "__main__":
    main()
