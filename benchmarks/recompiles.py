"""Recompiles of a compiled training step on optimizers that keep a step counter in their param
groups or state, and what they cost: plain ``torch.compile`` against ``@pdt.compile``.

Many optimizers outside ``torch.optim`` (pytorch-optimizer's LAMB, AdaBelief, Ranger, ...) count
their steps in ``group["step"]``, a Python int their step rewrites and feeds to Python maths
(bias corrections by ``math.pow``). Dynamo specialises a compiled step on it and compiles it
again at every step until its recompile limit, then runs it eagerly. Per optimizer this trains
a small MLP for ``--steps`` steps through each compiled training step (Inductor, fresh Dynamo
state, caches as they are) and reports the optimizer-step graphs compiled, the wall time of the
first steps (compiling included) and of the last ten.

    python -m benchmarks.recompiles [--steps 40] [--only lamb,adabelief]
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Callable

import torch
from torch import nn

import pdt_compile as pdt

from .report import write_section


def candidates() -> dict[str, Callable]:
    """Name -> optimizer factory: torch's AdamW (no counter in its groups) beside pytorch-optimizer's,
    and Hugging Face's Adafactor (a counter in each parameter's state)."""
    import pytorch_optimizer as po
    from transformers.optimization import Adafactor

    return {
        "transformers.Adafactor": lambda p: Adafactor(p, lr=None, relative_step=True),
        "torch.optim.AdamW": lambda p: torch.optim.AdamW(p, lr=1e-3),
        "pytorch_optimizer.Lamb": lambda p: po.Lamb(p, lr=1e-3),
        "pytorch_optimizer.AdaBelief": lambda p: po.AdaBelief(p, lr=1e-3),
        "pytorch_optimizer.Ranger": lambda p: po.Ranger(p, lr=1e-3),
        "pytorch_optimizer.Lion": lambda p: po.Lion(p, lr=1e-4),
    }


def run(make_opt: Callable, with_pdt: bool, steps: int) -> tuple[int, float, float]:
    """(optimizer-step graphs compiled, seconds of the first steps - 10, seconds of the last 10)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # reset() leaves the counters
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 4))
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(1))
    y = (x.sum(1) > 0).long()
    base = make_opt(model.parameters())
    opt = pdt.PDT(base, snap_every=5, momentum_spacing=None) if with_pdt else base  # predictions within --steps on LAMB too

    def step(x, y):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    compiled = pdt.compile(step, optimizer=opt) if with_pdt else torch.compile(step)
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            start = time.perf_counter()
            compiled(x, y)
            times.append(time.perf_counter() - start)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    return graphs, sum(times[:-10]), sum(times[-10:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--only", default="", help="comma-separated parts of optimizer names")
    args = parser.parse_args()
    wanted = [text.lower() for text in args.only.split(",") if text]
    lines = ["| optimizer | step | graphs compiled | first steps (s) | last 10 steps (ms) |", "|---|---|---|---|---|"]
    for name, make_opt in candidates().items():
        if wanted and not any(text in name.lower() for text in wanted):
            continue
        for label, with_pdt in (("plain torch.compile", False), ("@pdt.compile", True)):
            try:
                graphs, first, last = run(make_opt, with_pdt, args.steps)
                lines.append(f"| {name} | {label} | {graphs} | {first:.1f} | {1e3 * last:.1f} |")
            except Exception as error:  # noqa: BLE001 - a compiler failure is a result here
                lines.append(f"| {name} | {label} | fails: {type(error).__name__}: {str(error).splitlines()[0][:80]} | | |")
            print(lines[-1], flush=True)
    body = "\n".join(lines) + (
        f"\n\nA 32-64-4 MLP, full batch of 64, {args.steps} steps through the compiled training step (Inductor), "
        "Dynamo reset before each run, Inductor's caches as they are. 'graphs compiled': Dynamo's unique graphs "
        "(the training step's forward and backward, and each compile of an optimizer-step graph; under "
        "@pdt.compile also PDT's capture and prediction graphs). 'first steps': the wall time of all but the last "
        "ten steps, compiling included; 'last 10 steps': after warm-up."
    )
    title = "Recompiles under step counters (benchmarks/recompiles.py)"
    write_section(title + (f", optimizers matching {args.only!r}" if args.only else ""), body)
    print(body)


if __name__ == "__main__":
    main()
