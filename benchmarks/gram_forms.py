"""The float64 Gram of a prediction in plain torch: h(h+1)/2 row products (the form compiled
graphs fuse into one pass) against one float64 copy and a matrix product (what the eager
plain-torch kernels use on the CPU, :func:`pdt_compile.runtime.kernels.eager_gram`).

Two tables: the Gram alone on h = 5 float32 rows of several lengths (the CPU's eager chunk is
65,536 elements), and one whole prediction (``stats.prediction_seconds / predictions``) of
PDT's defaults on AdamW with ``kernels="torch"``, on MLPs whose weight matrices are too large to
be packed with others, with each form in turn.

    python -m benchmarks.gram_forms [--lengths 4096,16384,65536,262144] [--widths 440,900]
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

import pdt_compile as pdt
from pdt_compile.runtime import kernels, predictor

from .report import write_section

FORMS: dict[str, Callable[[list[Tensor]], Tensor]] = {
    "row products (gram_pass)": kernels.gram_pass,
    "float64 copy + matrix product (eager_gram)": kernels.eager_gram,
}


def gram_seconds(length: int, form: Callable[[list[Tensor]], Tensor], history: int = 5) -> float:
    """Least mean seconds of one Gram of ``history`` float32 rows of ``length`` (best of 5 loops)."""
    rows = [torch.randn(length) for _ in range(history)]
    number = max(5, 2_000_000 // length)
    return min(timeit.repeat(lambda: form(rows), number=number, repeat=5)) / number


@contextmanager
def eager_form(form: Callable[[list[Tensor]], Tensor]) -> Iterator[None]:
    """Plain-torch predictions compute their Gram with ``form`` while inside."""
    saved = predictor.eager_gram, kernels.eager_gram
    predictor.eager_gram = kernels.eager_gram = form
    try:
        yield
    finally:
        predictor.eager_gram, kernels.eager_gram = saved


def prediction_seconds(width: int, form: Callable[[list[Tensor]], Tensor], steps: int = 120) -> tuple[float, int]:
    """Mean seconds of one prediction of PDT's defaults (AdamW, ``kernels="torch"``, snapshots
    every 2 steps, seed 0) on a 32-``width``-``width``-2 MLP, and its parameter count."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 2))
    opt = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=1e-3), snap_every=2, kernels="torch")
    x, y = torch.randn(64, 32), torch.randint(0, 2, (64,))
    with eager_form(form):
        for _ in range(steps):
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    stats = opt.stats
    return stats.prediction_seconds / stats.predictions, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="4096,16384,65536,262144", help="row lengths of the Gram table")
    parser.add_argument("--widths", default="440,900", help="hidden widths of the prediction table's MLPs")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each form per MLP, alternating (median)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = list(FORMS)
    lengths = [int(v) for v in args.lengths.split(",")]
    lines = ["| row length | " + " | ".join(f"{name} (µs)" for name in names) + " | ratio |", "|---" * (len(names) + 2) + "|"]
    for length in lengths:
        times = [gram_seconds(length, FORMS[name]) for name in names]
        lines.append(f"| {length:,} | " + " | ".join(f"{1e6 * t:.1f}" for t in times) + f" | **{times[0] / times[1]:.2f}x** |")
    lines += ["", "| MLP | params | " + " | ".join(f"one prediction, {name} (ms)" for name in names) + " | ratio |",
              "|---" * (len(names) + 3) + "|"]
    for width in (int(v) for v in args.widths.split(",")):
        samples: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(args.rounds):
            for name in (names if round_ % 2 == 0 else names[::-1]):
                seconds, params = prediction_seconds(width, FORMS[name])
                samples[name].append(seconds)
        medians = [statistics.median(samples[name]) for name in names]
        lines.append(f"| 32-{width}-{width}-2 | {params:,} | " + " | ".join(f"{1e3 * m:.2f}" for m in medians)
                     + f" | **{medians[0] / medians[1]:.2f}x** |")
    body = "\n".join(lines) + (
        "\n\nh = 5 float32 rows, 1 torch thread. Gram table: least mean time of one Gram over 5 loops. Prediction "
        "table: `stats.prediction_seconds / predictions` of PDT's defaults on AdamW with `kernels=\"torch\"` (the "
        "plain-torch kernels `kernels=\"auto\"` picks below 2^20 tracked elements), snapshots every 2 steps, 120 "
        f"steps, seed 0, median of {args.rounds} runs per form, the forms alternating. The weight matrices are larger "
        "than the 2^15 elements up to which predictions pack parameters side by side (packs already used a matrix "
        "product), so their Gram runs on 65,536-element chunks. 'ratio': row products over the matrix form."
    )
    title = "The Gram in plain torch: row products or a matrix product (benchmarks/gram_forms.py)"
    write_section(title, body)
    print(body)


if __name__ == "__main__":
    main()
