"""Compiled PDT overhead, one run, the overhead benchmark's two models: plain compiled step,
compiled PDT ordinary, capture and prediction steps, eager PDT steps, and the compile times.

    python -m benchmarks.compile_overhead [--backend inductor] [--models "MLP ~2M,MLP ~20M"] [--fused | --schedule-free]

``--models`` also takes :data:`SMALL_MODELS`, where a step is bound by the host's per-call work
rather than by bytes: what PDT's per-step Python and the optimizer step's own compiled frame
(a graph break at ``opt.step()``) add to a plain compiled training step shows there.

``--fused``: AdamW with ``fused=True``, whose step torch keeps out of Dynamo: every optimizer
step runs eagerly, PDT's captures and predictions in graphs of their own, the forward and
backward compiled (the section title says so). ``--schedule-free``: schedule-free AdamW
(``schedulefree.AdamWScheduleFree``), PDT at its defaults there (z snapshot and jumped, the
parameters moved by 1 - beta1 of the jump, x left in place): its boundaries run in graphs of
their own after the optimizer step, which move the parameters inside the merge.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import nn

import pdt_compile as pdt
from pdt_compile.runtime.schedule import Phase

from .floor import copy_floors
from .overhead import MODELS, mlp
from .report import write_section
from .steps import CORE, force_phase, ready_to_predict, train_step


SMALL_MODELS = {"MLP ~4K": (64, [32, 32], 10), "MLP ~90K": (64, [256, 256], 10)}
"""Models small enough that a step is bound by per-call host work (not in the default run)."""


def model_and_data(spec, batch: int, device: str = "cpu"):
    torch.manual_seed(0)
    model = mlp(*spec).to(device)
    return model, torch.randn(batch, spec[0], device=device), torch.randint(0, spec[2], (batch,), device=device)


def synchronize(device: str) -> None:
    """Wait for the device's queued work, so that a host clock times it (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, repeats: int, device: str = "cpu") -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def interleaved_ms(functions: list, repeats: int, device: str = "cpu") -> list[float]:
    """Median time of each function, called in turn every round, so that the machine's
    drift (2 shared vCPUs) lands on all of them alike."""
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for samples, fn in zip(times, functions):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            samples.append(time.perf_counter() - start)
    return [statistics.median(samples) * 1e3 for samples in times]


def adamw(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, foreach=True)


def fused_adamw(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, fused=True)


def schedule_free_adamw(params) -> torch.optim.Optimizer:
    import schedulefree

    opt = schedulefree.AdamWScheduleFree(params, lr=1e-3)
    opt.train()
    return opt


OPTIMIZERS = {"adamw": adamw, "fused": fused_adamw, "schedule-free": schedule_free_adamw}
TITLES = {"adamw": "", "fused": ", fused AdamW", "schedule-free": ", schedule-free AdamW"}


def measure(name: str, spec, backend: str, repeats: int, batch: int, device: str = "cpu", mode: str | None = None,
            make_opt: Callable[..., torch.optim.Optimizer] = adamw,
            inspect: Callable[[str, Callable[[], object]], None] | None = None) -> tuple[list[str], dict]:
    """One model's table (steps in ms, compile seconds) and its ratios; ``mode`` is
    torch.compile's (``"reduce-overhead"``: CUDA graphs). ``inspect(label, step)``, when given,
    is called with the compiled and the eager prediction steps once they are timed (to profile them)."""
    model, x, y = model_and_data(spec, batch, device)
    n = sum(p.numel() for p in model.parameters())
    plain_opt = make_opt(model.parameters())
    plain_compiled = torch.compile(train_step(model, x, y, plain_opt), backend=backend, mode=mode)

    def plain_step() -> None:
        torch.compiler.cudagraph_mark_step_begin()  # as pdt.compile does under CUDA graphs
        plain_compiled()

    start = time.perf_counter()
    plain_step()
    plain_step()
    plain_compile = time.perf_counter() - start

    model2, _, _ = model_and_data(spec, batch, device)
    opt = pdt.PDT(make_opt(model2.parameters()), snap_every=10**9, **CORE)
    pdt_step = pdt.compile(train_step(model2, x, y, opt), optimizer=opt, backend=backend, mode=mode)
    start = time.perf_counter()
    pdt_step()
    pdt_step()
    ordinary_compile = time.perf_counter() - start

    # Captures, then predictions, each at every step of the compiled training step.
    model3, _, _ = model_and_data(spec, batch, device)
    boundary_opt = pdt.PDT(make_opt(model3.parameters()), snap_every=1, **CORE)
    boundary_step = pdt.compile(train_step(model3, x, y, boundary_opt), optimizer=boundary_opt, backend=backend,
                                mode=mode)
    boundary_step()  # the parameters' first step runs eagerly (pdt.compile)
    force_phase(boundary_opt, Phase.CAPTURE)
    start = time.perf_counter()
    for _ in range(boundary_opt.config.history):  # one capture graph per ring row
        boundary_step()
    capture_compile = time.perf_counter() - start
    plain, ordinary, capture = interleaved_ms([plain_step, pdt_step, boundary_step], repeats, device)
    force_phase(boundary_opt, Phase.PREDICT)
    start = time.perf_counter()
    boundary_step()
    synchronize(device)
    predict_compile = time.perf_counter() - start
    predictions = boundary_opt.stats.predictions
    rounds = max(5, repeats // 3)
    plain_again, predict = interleaved_ms([plain_step, boundary_step], rounds, device)
    if boundary_opt.stats.predictions != predictions + rounds:
        done = boundary_opt.stats.predictions - predictions
        raise RuntimeError(f"compile_overhead: {done} of {rounds} timed steps predicted")

    model4, _, _ = model_and_data(spec, batch, device)
    eager_opt = pdt.PDT(make_opt(model4.parameters()), snap_every=1, **CORE)
    eager_step = train_step(model4, x, y, eager_opt)
    ready_to_predict(eager_opt, eager_step)
    eager_step()
    eager_plain_step = train_step(model4, x, y, eager_opt.optimizer)
    eager_plain, eager_predict = interleaved_ms([eager_plain_step, eager_step], rounds, device)

    if inspect is not None:
        inspect("compiled PDT prediction step", boundary_step)
        inspect("eager PDT prediction step", eager_step)
    floors = copy_floors(n, 2 * opt.config.history + 2, lambda fn: median_ms(fn, 4 * repeats, device), device)
    floor = floors["memory"]
    rows = [
        ("compiled plain step", plain, plain_compile),
        ("compiled PDT ordinary step", ordinary, ordinary_compile),
        ("compiled PDT capture step", capture, capture_compile),
        ("compiled PDT prediction step", predict, predict_compile),
        ("eager plain step", eager_plain, None),
        ("eager PDT prediction step", eager_predict, None),
    ]
    figures = {
        "model": name, "params": n, "ordinary": ordinary / plain, "capture": capture / plain,
        "compiled_prediction": (predict - plain_again) / floor, "eager_prediction": (eager_predict - eager_plain) / floor,
        "compiled_vs_eager": predict / eager_predict, "floor": floor,
        "compiled_cached": (predict - plain_again) / floors["cached"], "eager_cached": (eager_predict - eager_plain) / floors["cached"],
    }
    kind = "fused" if opt.optimizer.defaults.get("fused") else "foreach"
    lines = [f"**{name}** ({n:,} parameters), {type(opt.optimizer).__name__} {kind}, batch {batch}, backend {backend}, "
             f"mode {mode or 'default'}, {device}; "
             f"floor (2h+2 copies from memory) {floor:.2f} ms; 2h+2 cache-resident copies {floors['cached']:.2f} ms", "",
             "| step | median (ms) | compile (s) |", "|---|---|---|"]
    lines += [f"| {label} | {ms:.3f} | {'' if c is None else f'{c:.1f}'} |" for label, ms, c in rows]
    return lines, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--fused", action="store_true", help="AdamW(fused=True) instead of foreach")
    which.add_argument("--schedule-free", action="store_true", help="schedulefree.AdamWScheduleFree instead of AdamW")
    args = parser.parse_args()
    optimizer = "fused" if args.fused else "schedule-free" if args.schedule_free else "adamw"
    lines: list[str] = []
    figures = []
    for name in args.models.split(","):
        table, result = measure(name, {**MODELS, **SMALL_MODELS}[name], args.backend, args.repeats, args.batch,
                                make_opt=OPTIMIZERS[optimizer])
        lines += table + [""]
        figures.append(result)
    lines += ["| model | ordinary / plain (target <= 1.02) | capture / plain | compiled prediction / floor (target <= 2) | "
              "eager prediction / floor (target <= 2) | compiled / eager prediction step (target <= 1) | "
              "compiled / cache-resident copies | eager / cache-resident copies |",
              "|---|---|---|---|---|---|---|---|"]
    for f in figures:
        lines.append(f"| {f['model']} | **{f['ordinary']:.3f}** | {f['capture']:.3f} | **{f['compiled_prediction']:.2f}** | "
                     f"**{f['eager_prediction']:.2f}** | **{f['compiled_vs_eager']:.2f}** | {f['compiled_cached']:.2f} | {f['eager_cached']:.2f} |")
    lines += ["",
              f"- plain, ordinary and capture steps are timed interleaved (one call of each per round, {args.repeats} rounds); "
              "a prediction's cost is the prediction step minus the plain step timed interleaved with it (compiled and eager alike), "
              "over the floor of 2h+2 copies of all parameters from memory (2h+2 n-element copies between distinct buffers, one after the other; "
              "the cache-resident columns repeat one n-element copy instead, as runs before 2026-11-28 12:30 did: benchmarks/floor.py). PDT's compiled variants call the optimizer's undecorated step "
              "(no hook/profiler wrapper), which is why a ratio can sit just below 1",
              "- eager PDT runs its default kernels (`kernels=\"auto\"`: Inductor-compiled at these sizes)",
              "- every PDT step runs through the training step itself (compiled: forward and backward compiled too), "
              "PDT's phase forced at each step (`benchmarks.steps.force_phase`; before 2026-12-04 the compiled capture and "
              "prediction steps ran an eager forward and backward), compiled and eager PDT alike with `benchmarks.steps.CORE`: "
              "the prediction alone, no gradient check, moment filter or radial handling (before, the eager one ran them)"]
    body = "\n".join(lines)
    print(body)
    title = f"Compiled overhead (benchmarks/compile_overhead.py, {args.backend})"
    write_section(title + TITLES[optimizer], body)


if __name__ == "__main__":
    main()
