"""Every GPU-specific check and timing in one command (for a lent GPU machine).

    python -m benchmarks.gpu_check

1. runs the GPU tests (``tests/test_gpu.py``: compiled CUDA step, with and without
   ``mode="reduce-overhead"``, equal to eager PDT);
2. times, on a ~20M-parameter MLP with AdamW: the plain compiled step, the compiled PDT
   ordinary / capture / prediction steps, eager PDT's prediction, and the bandwidth floor
   (2h+2 parameter copies), and writes the table to RESULTS.md;
3. host offload (``ring_location="host"``): device bytes the ring allocates, and the eager
   capture and prediction costs, against the device ring;
4. eager prediction kernels: Triton-compiled (``kernels="inductor"``) and plain torch, against
   the bandwidth floor.
"""

from __future__ import annotations

import subprocess
import sys

import torch
from torch import nn

import pdt_compile as pdt
from pdt_compile.runtime.schedule import Phase

from .floor import copy_floors
from .report import write_section
from .steps import phase_step, train_step


def cuda_ms(fn, repeats: int = 20) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def offload_rows(model: nn.Module, x, y) -> list[str]:
    """Eager PDT with the ring on the device and on the host: device bytes, step costs."""
    n = sum(p.numel() for p in model.parameters())
    rows = ["| ring | device bytes per element | ordinary step (ms) | capture cost (ms, next step included) | prediction (ms) |",
            "|---|---|---|---|---|"]
    for location in ("device", "host"):
        before = torch.cuda.memory_allocated()
        opt = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True), snap_every=10**9,
                      history=5, burn_in=0, ring_location=location)
        allocated = torch.cuda.memory_allocated() - before
        step = train_step(model, x, y, opt)
        ordinary = cuda_ms(step)

        def capture() -> None:
            step()
            opt.ring.capture_()
            step()  # the next step, which the asynchronous capture overlaps

        for _ in range(5):
            opt.ring.capture_()
        capture_ms = cuda_ms(capture) - 2 * ordinary
        nn.functional.cross_entropy(model(x), y).backward()  # gradients present: no parameter is skipped
        predict = cuda_ms(lambda: opt._run_boundary(Phase.PREDICT), 5)
        opt.zero_grad()
        rows.append(f"| {location} | {allocated / n:.1f} | {ordinary:.3f} | {capture_ms:.3f} | {predict:.3f} |")
    return rows


def kernel_rows(model: nn.Module, floor: float) -> list[str]:
    """One eager prediction (Gram, solve, fused merge) with each kernel choice, vs the floor."""
    params = list(model.parameters())
    rows = ["| eager kernels | prediction (ms) | prediction / floor |", "|---|---|---|"]
    for kernels in ("inductor", "torch"):
        opt = pdt.PDT(torch.optim.SGD(params, lr=1e-4), snap_every=10**9, history=5, burn_in=0, kernels=kernels)
        for _ in range(5):
            with torch.no_grad():
                for p in params:
                    p.add_(torch.randn_like(p), alpha=1e-4)
            opt.ring.capture_()
        nn.functional.cross_entropy(model(torch.randn(8, params[0].shape[1], device="cuda")),
                                    torch.randint(0, 10, (8,), device="cuda")).backward()
        predict = cuda_ms(lambda: opt._run_boundary(Phase.PREDICT), 10)
        opt.zero_grad()
        rows.append(f"| {kernels} | {predict:.3f} | {predict / floor:.2f} |")
    return rows


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device")
    tests = subprocess.run([sys.executable, "-m", "pytest", "tests/test_gpu.py", "-q"], capture_output=True, text=True)
    print(tests.stdout[-2000:])
    width, depth = 2048, 5
    torch.manual_seed(0)
    layers = [nn.Linear(1024, width), nn.ReLU()] + [m for _ in range(depth - 1) for m in (nn.Linear(width, width), nn.ReLU())]
    model = nn.Sequential(*layers, nn.Linear(width, 10)).cuda()
    n = sum(p.numel() for p in model.parameters())
    x, y = torch.randn(256, 1024, device="cuda"), torch.randint(0, 10, (256,), device="cuda")
    rows = []
    for mode in (None, "reduce-overhead"):
        opt = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=torch.tensor(1e-4, device="cuda"), capturable=True, foreach=True),
                      snap_every=10**9, history=5, burn_in=0)

        step = pdt.compile(train_step(model, x, y, opt), optimizer=opt, mode=mode)

        phase = lambda p: phase_step(model, x, y, opt, p)
        ordinary = cuda_ms(step)
        for _ in range(5):
            phase(Phase.CAPTURE)()
        capture = cuda_ms(phase(Phase.CAPTURE))
        predict = cuda_ms(phase(Phase.PREDICT), 5)
        rows.append((mode or "default", ordinary, capture, predict))
    floors = copy_floors(n, 12, cuda_ms, "cuda")
    floor = floors["memory"]
    lines = [f"{torch.cuda.get_device_name()}, MLP {n:,} parameters, AdamW (capturable, tensor lr), batch 256", "",
             "| mode | ordinary step (ms) | capture step (ms) | prediction step (ms) | prediction / (ordinary + floor) |",
             "|---|---|---|---|---|"]
    lines += [f"| {m} | {o:.3f} | {c:.3f} | {p:.3f} | {p / (o + floor):.2f} |" for m, o, c, p in rows]
    lines.append(f"\nBandwidth floor (12 parameter copies from memory): {floor:.3f} ms (cache-resident: {floors['cached']:.3f} ms). GPU tests: {tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else tests.stderr[-300:]}")
    lines += ["", *offload_rows(model, x, y), "", *kernel_rows(model, floor)]
    body = "\n".join(lines)
    print(body)
    write_section("GPU (benchmarks/gpu_check.py)", body)


if __name__ == "__main__":
    main()
