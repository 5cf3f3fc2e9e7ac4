"""Snapshot-ring memory per parameter element for each ring option, and what each costs in
prediction quality (mask ratio) and time to baseline.

    python -m benchmarks.memory [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch

import pdt_compile as pdt
from pdt_compile import tasks
from pdt_compile.experiment import speedup, train
from pdt_compile.runtime.history import make_ring

from .report import write_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.8, help="digits SGD lr (0.8: the tuned value of benchmarks.ttb)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = tasks.digits_mlp(steps=1800)
    model = task.make_model()
    params = list(model.parameters())
    elements = sum(p.numel() for p in params)
    config = dict(snap_every=task.steps_per_epoch)  # the defaults
    lines = ["| ring | h | device bytes per parameter element | host bytes per element | target (device bytes) | "
             "mask ratio (mean over training) | TTB-Loss steps × | TTB-Loss wall × |",
             "|---|---|---|---|---|---|---|---|"]
    baselines = [train(task, lambda o: o, seed=s, method="baseline", lr=args.lr)[0] for s in range(args.seeds)]
    h = 5
    options = (("float32", "device", f"4h = {4 * h}"), ("bfloat16", "device", f"4 + 2(h-1) = {4 + 2 * (h - 1)}"),
               ("float32", "host", "~0"))
    for dtype, location, target in options:
        ring = make_ring(params, h, dtype, location)
        per_element = ring.nbytes() / elements
        on_device, on_host = (per_element, 0.0) if ring.location == "device" else (0.0, per_element)
        name = f"{dtype} on the {location}" + (" (pinned, async copies on CUDA)" if location == "host" else "")
        runs = [train(task, lambda o: pdt.PDT(o, ring_dtype=dtype, ring_location=location, **config), seed=s,
                      method=name, lr=args.lr)[0] for s in range(args.seeds)]
        masks = [statistics.mean(r for _, r in run.mask_ratio) for run in runs]
        ttb = [speedup(b, r) for b, r in zip(baselines, runs)]
        steps = [s for s, _ in ttb if s is not None]
        wall = [t for _, t in ttb if t is not None]
        fmt = lambda v: f"{statistics.median(v):.2f} [{min(v):.2f}–{max(v):.2f}]" if v else "never"
        lines.append(f"| {name} | {h} | {on_device:.1f} | {on_host:.1f} | {target} | "
                     f"{statistics.median(masks):.3f} | {fmt(steps)} | {fmt(wall)} |")
    body = "\n".join(lines) + (
        f"\n\nDigits MLP / SGD lr {args.lr}, PDT defaults (reference rule, full rank, trend filter, tau 8), one snapshot per epoch, "
        f"{args.seeds} seeds (median [min–max]); TTB against the plain SGD run of the same seed. Bytes are "
        "counted from where each ring allocates its buffers. On this CPU-only machine the host ring's "
        "'device' is the host too, so its TTB here measures only the streaming code path (same values as "
        "the float32 ring); its accelerator bytes and copy overlap are measured by benchmarks/gpu_check.py.")
    print(body)
    write_section("Snapshot-ring memory (benchmarks/memory.py)", body)


if __name__ == "__main__":
    main()
