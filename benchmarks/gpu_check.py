"""Every GPU-specific check and timing in one command (for a lent GPU machine).

    python -m benchmarks.gpu_check [--copy-to DIR]

1. compiled overhead on CUDA (``benchmarks.compile_overhead.measure``, ~20M-parameter MLP,
   AdamW with a tensor learning rate, ``capturable=True``): the plain compiled step, compiled
   PDT's ordinary / capture / prediction steps and eager PDT's, against the bandwidth floor
   (2h+2 copies), each prediction's kernels profiled into the log; then the same with
   ``AdamW(fused=True)`` (part ``fused``: the optimizer step eager, PDT's predictions compiled)
   and with schedule-free AdamW (part ``schedule-free``: the predictions in a graph of their own,
   which move the parameters with z's jump);
2. host offload (``ring_location="host"``): device bytes the ring allocates, and the eager
   capture and prediction costs, against the device ring;
3. eager prediction kernels: Triton-compiled (``kernels="inductor"``) and plain torch, against
   the bandwidth floor; then, on the ~20M MLP, those two beside ``kernels="graph"`` (part ``graph``:
   ``benchmarks.boundary_graphs``);
4. the GPU tests (``tests/test_gpu.py``);
5. time to baseline on the GPU (``benchmarks.ttb``'s constant-rate table for the digits MLP,
   the mnist1d CNN and the ViT, rates swept there);
6. the compiled overhead again under ``mode="reduce-overhead"`` (CUDA graphs).

Each part that fails prints its traceback and the others still run; the section of RESULTS.md
is rewritten after each part (and copied to ``--copy-to``), so a run cut short keeps what it
measured. ``--parts ttb`` (a comma-separated list) runs only the parts named, into a section of its
own: a lease too short for all of them takes them in two calls (on an H200, 2026-12-04: every part
but ``ttb`` 219 s, ``ttb`` 321 s; the parts ``fused``, ``graph`` and ``schedule-free`` and six
GPU tests came after and have not run on a GPU). The GPU image lacks ``mnist1d`` and ``pytorch-optimizer``
(``ttb`` imports them), and may lack ``schedulefree`` (the part ``schedule-free``): carry their
wheels (``pip download --no-deps``) and install them with
``pip install --no-index --no-deps --target``. ``--device cpu --width 64 --ttb-only digits`` runs
the same code on a CPU (a dry run).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import time
import traceback
from typing import Callable

import torch
from torch import nn

import pdt_compile as pdt
from pdt_compile.runtime.schedule import Phase

from .boundary_graphs import measure as boundary_graph_rows
from .compile_overhead import fused_adamw, measure, median_ms, schedule_free_adamw
from .floor import copy_floors
from .overhead import mlp
from .report import RESULTS, write_section
from .steps import train_step

TITLE = "GPU (benchmarks/gpu_check.py)"
PARTS = ("overhead", "fused", "schedule-free", "offload", "kernels", "graph", "tests", "ttb", "reduce-overhead")


def prepared(opt: pdt.PDT, model: nn.Module, x, y) -> None:
    """Fill ``opt``'s ring with slightly different snapshots and leave gradients in place (so
    that a boundary skips no parameter)."""
    for _ in range(opt.config.history):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p), alpha=1e-4)
        opt.ring.capture_()
    nn.functional.cross_entropy(model(x), y).backward()


def offload_rows(model: nn.Module, x, y, device: str, repeats: int) -> list[str]:
    """Eager PDT with the ring on the device and on the host: device bytes, step costs."""
    n = sum(p.numel() for p in model.parameters())
    rows = ["| ring | device bytes per element | ordinary step (ms) | capture, minus an ordinary step (ms) | prediction (ms) |",
            "|---|---|---|---|---|"]
    cuda = torch.device(device).type == "cuda"
    for location in ("device", "host"):
        before = torch.cuda.memory_allocated() if cuda else 0
        opt = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True), snap_every=10**9,
                      history=5, burn_in=0, ring_location=location)
        allocated = (torch.cuda.memory_allocated() - before) if cuda else float("nan")
        step = train_step(model, x, y, opt)
        ordinary = median_ms(step, repeats, device)

        def capture() -> None:
            opt.ring.capture_()
            step()  # the next step, which an asynchronous host capture overlaps

        prepared(opt, model, x, y)
        opt.zero_grad()
        capture_ms = median_ms(capture, repeats, device) - ordinary
        prepared(opt, model, x, y)
        predict = median_ms(lambda: opt._run_boundary(Phase.PREDICT), 5, device)
        opt.zero_grad()
        rows.append(f"| {location} | {allocated / n:.1f} | {ordinary:.3f} | {capture_ms:.3f} | {predict:.3f} |")
    return rows


def kernel_rows(model: nn.Module, x, y, device: str, floor: float) -> list[str]:
    """One eager prediction (Gram, solve, fused merge) with each kernel choice, vs the floor."""
    rows = ["| eager kernels | prediction (ms) | prediction / floor |", "|---|---|---|"]
    for kernels in ("inductor", "torch"):
        opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=1e-4), snap_every=10**9, history=5, burn_in=0, kernels=kernels)
        prepared(opt, model, x, y)
        predict = median_ms(lambda: opt._run_boundary(Phase.PREDICT), 10, device)
        profile(f"eager prediction, kernels={kernels}", lambda: opt._run_boundary(Phase.PREDICT))
        opt.zero_grad()
        rows.append(f"| {kernels} | {predict:.3f} | {predict / floor:.2f} |")
    return rows


def profile(label: str, step: Callable[[], object]) -> None:
    """Print the kernels and host operations of three calls of ``step``, by device time
    (to the log only: where a prediction's time goes)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    print(f"--- profile: {label} (3 calls) ---")
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60), flush=True)


TTB_TASKS = ("digits MLP / SGD", "mnist1d CNN / SGD-momentum", "mnist1d ViT / AdamW")


def time_to_baseline(device: str, seeds: int, only: str | None = None) -> list[str]:
    """``benchmarks.ttb``'s constant-rate table (tuned baseline and PDT's defaults, each rate
    swept on this device) for the tasks whose steps are cheap enough for the lease, trained on
    ``device``: PDT's wall-clock gain where a step costs launches, not arithmetic."""
    from pdt_compile.experiment import on_device

    from .ttb import BASELINE, DEFAULT, seed_major, summarise, sweep_factors, task_suite, tune_lr

    lines = []
    for name, (task, snap_every) in task_suite(quick=False).items():
        if name not in TTB_TASKS or (only and only not in name):
            continue
        task = on_device(task, device)
        lr, sweep = tune_lr(task, sweep_factors(name))
        runs = seed_major(task, {BASELINE: lambda opt: opt, DEFAULT: lambda opt: pdt.PDT(opt, snap_every=snap_every)}, seeds, lr)
        lines += [summarise(f"{name}, on {device}", runs, lr, sweep, snap_every, task).replace("### ", "#### "), ""]
    return lines


def gpu_tests() -> list[str]:
    """``tests/test_gpu.py``, its output streamed (a hung compile is cut by pytest-timeout where installed)."""
    command = [sys.executable, "-m", "pytest", "tests/test_gpu.py", "-q", "-rA", "-p", "no:cacheprovider"]
    if importlib.util.find_spec("pytest_timeout"):
        command += ["--timeout", "240"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line.rstrip())
    process.wait()
    outcomes = [line for line in lines if line.startswith(("PASSED", "FAILED", "ERROR", "SKIPPED"))]
    summary = next((line for line in reversed(lines) if line.strip()), "no output")
    return ["GPU tests (`pytest tests/test_gpu.py`): " + summary.strip("= "), "", *[f"- {line}" for line in outcomes]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--width", type=int, default=2048, help="hidden width of the 5-layer MLP (2048: ~20M parameters)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--ttb-seeds", type=int, default=3, help="seeds of the time-to-baseline part (0: skip it)")
    parser.add_argument("--ttb-only", default=None, help="time to baseline only on the tasks whose name contains this")
    parser.add_argument("--copy-to", default=None, help="a folder RESULTS.md is copied to after each part")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of {', '.join(PARTS)} (all by default; a lease too short "
                             "for all of them splits them over calls, each part list its own section)")
    args = parser.parse_args()
    parts_wanted = args.parts.split(",")
    unknown = sorted(set(parts_wanted) - set(PARTS))
    if unknown:
        sys.exit(f"gpu_check: --parts {args.parts!r} names {unknown}; choose from {', '.join(PARTS)}")
    title = TITLE if set(parts_wanted) == set(PARTS) else f"{TITLE}, parts {args.parts}"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device (a dry run on the CPU: --device cpu --width 64)")
    device = args.device
    spec = (1024, [args.width] * 5, 10)
    name = f"MLP {args.width}x5"
    torch.manual_seed(0)
    model = mlp(*spec).to(device)
    n = sum(p.numel() for p in model.parameters())
    floor = copy_floors(n, 12, lambda fn: median_ms(fn, 4 * args.repeats, device), device)["memory"]
    header = [f"{torch.cuda.get_device_name() if device == 'cuda' else device}, {name} ({n:,} parameters), batch {args.batch}. "
              f"Bandwidth floor (12 parameter copies from memory): {floor:.3f} ms.", ""]
    parts: list[list[str]] = []

    def capturable_adamw(params) -> torch.optim.Optimizer:
        lr = torch.tensor(1e-4, device=device) if device == "cuda" else 1e-4
        return torch.optim.AdamW(params, lr=lr, capturable=device == "cuda", foreach=True)

    def run_part(key: str, label: str, part: Callable[[], list[str]]) -> None:
        if key not in parts_wanted:
            return
        start = time.perf_counter()
        try:
            lines = part()
        except Exception:  # one broken part must not lose the others' figures
            traceback.print_exc()
            lines = [f"failed: `{traceback.format_exc().strip().splitlines()[-1]}`"]
        parts.append([f"**{label}** ({time.perf_counter() - start:.0f} s)", "", *lines, ""])
        body = "\n".join(header + [line for part_lines in parts for line in part_lines])
        print(body, flush=True)
        write_section(title, body)
        if args.copy_to:
            shutil.copy(RESULTS, args.copy_to)

    def compiled_overhead(mode: str | None, make_opt: Callable = capturable_adamw, profiled: bool = True) -> list[str]:
        inspect = (lambda label, step: profile(f"{label}, mode {mode or 'default'}", step)) if profiled else None
        table, f = measure(name, spec, "inductor", args.repeats, args.batch, device, mode, make_opt, inspect=inspect)
        return table + ["", f"ordinary / plain {f['ordinary']:.3f}; capture / plain {f['capture']:.3f}; "
                            f"compiled prediction / floor **{f['compiled_prediction']:.2f}**; eager prediction / floor "
                            f"**{f['eager_prediction']:.2f}**; compiled / eager prediction step **{f['compiled_vs_eager']:.2f}**"]

    run_part("overhead", "Compiled overhead, mode default", lambda: compiled_overhead(None))
    run_part("fused", "Compiled overhead, fused AdamW (its step eager, PDT's predictions compiled), mode default",
             lambda: compiled_overhead(None, fused_adamw, profiled=False))
    run_part("schedule-free", "Compiled overhead, schedule-free AdamW (PDT's predictions in a graph of their own), mode default",
             lambda: compiled_overhead(None, schedule_free_adamw, profiled=False))
    x, y = torch.randn(args.batch, 1024, device=device), torch.randint(0, 10, (args.batch,), device=device)
    run_part("offload", "Host offload (eager, AdamW)", lambda: offload_rows(model, x, y, device, args.repeats))
    run_part("kernels", "Eager prediction kernels (SGD)", lambda: kernel_rows(model, x, y, device, floor))
    run_part("graph", "Eager prediction by kernels, kernels=\"graph\" beside them (benchmarks.boundary_graphs)",
             lambda: boundary_graph_rows("MLP ~20M", args.repeats, args.batch, device))
    if not args.skip_tests:
        run_part("tests", "GPU tests", gpu_tests)
    if args.ttb_seeds:
        run_part("ttb", "Time to baseline, trained on the GPU (constant rate)",
                 lambda: time_to_baseline(device, args.ttb_seeds, args.ttb_only))
    # Last: a CUDA error inside a graph capture leaves this process's CUDA state unusable.
    run_part("reduce-overhead", "Compiled overhead, mode reduce-overhead", lambda: compiled_overhead("reduce-overhead"))


if __name__ == "__main__":
    main()
