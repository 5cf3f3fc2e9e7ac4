"""Which optimizers PDT stacks on: every optimizer of ``torch.optim``, pytorch-optimizer, torchao and bitsandbytes,
wrapped with PDT's defaults, a small MLP trained a few dozen steps.

A user may pick any optimizer, and an optimizer that keeps a copy of the weights in its state
(schedule-free's z, Lookahead's slow weights) pulls a merge back unless PDT moves that copy too
(``pdt_compile.adapters``). Per optimizer this reports whether PDT trains on it (or the error,
the optimizer's own or PDT's), how many merges it made, whether the weights stay finite, which
state tensors hold weights (shaped like their parameter and within a fifth of its mean size of
it after training: the candidates for an adapter) and which of those PDT moves with a merge.
``--layout column-major`` stores the MLP's matrices column-major, as a channels-last
convolution's weights are (not contiguous: neither they nor state made ``*_like`` them has a
flat view).

    python -m benchmarks.compatibility [--steps 60] [--only 'schedulefree,ranger'] [--layout column-major] [--hidden 512]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import warnings
from typing import Callable

import torch
from torch import nn

import pdt_compile as pdt
from pdt_compile.adapters import weight_like_keys, weight_space_keys

from .report import write_section


def optimizers() -> dict[str, Callable]:
    """Name -> optimizer class: ``torch.optim``'s, and pytorch-optimizer's, torchao's and
    bitsandbytes' (where installed)."""
    found = public_optimizers(torch.optim, "torch.optim")
    for package in ("torchao.optim", "bitsandbytes.optim"):
        try:
            found.update(public_optimizers(importlib.import_module(package), package))
        except ImportError:
            continue
    try:
        import pytorch_optimizer as po
    except ImportError:
        return found
    for name in po.get_supported_optimizers():
        try:
            found[f"pytorch_optimizer.{name}"] = po.load_optimizer(name)
        except Exception:  # noqa: BLE001 - an optional dependency of that optimizer is missing
            continue
    return found


def public_optimizers(module: object, prefix: str) -> dict[str, Callable]:
    """``prefix.Name`` -> class, for each public ``torch.optim.Optimizer`` class ``module`` exports."""
    return {f"{prefix}.{name}": cls for name, cls in vars(module).items()
            if not name.startswith("_") and inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)
            and cls is not torch.optim.Optimizer}


def try_optimizer(cls: Callable, steps: int, layout: str = "contiguous", hidden: int = 16) -> tuple[str, str, str, str, str]:
    """(outcome, merges, finite, weight-like state, moved by PDT) for one optimizer class."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 2))
    if layout == "column-major":
        for layer in (model[0], model[2]):
            layer.weight.data = layer.weight.data.t().contiguous().t()
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    y = (x.sum(1) > 0).long()
    try:
        base = cls(model.parameters(), lr=1e-3)
    except Exception as error:  # noqa: BLE001 - reported as the optimizer's own requirement
        return f"optimizer refuses the MLP: {type(error).__name__}", "", "", "", ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = pdt.PDT(base, snap_every=5)
            if hasattr(opt.optimizer, "train"):
                opt.train()
            for _ in range(steps):
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                opt.zero_grad()
    except Exception as error:  # noqa: BLE001 - reported
        return f"fails: {type(error).__name__}: {str(error)[:70]}", "", "", "", ""
    finite = all(torch.isfinite(p).all().item() for p in model.parameters())
    moved = ", ".join(weight_space_keys(base)) or "-"
    return "trains", str(opt.stats.merges), "yes" if finite else "**no**", ", ".join(weight_like_keys(base, list(model.parameters()))) or "-", moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--only", default="", help="comma-separated parts of optimizer names")
    parser.add_argument("--layout", choices=("contiguous", "column-major"), default="contiguous",
                        help="column-major: the matrices stored as a channels-last convolution's weights are")
    parser.add_argument("--hidden", type=int, default=16,
                        help="the MLP's hidden width (512: a first matrix of 4096 elements, whose moments "
                             "torchao and bitsandbytes keep in 8 bits)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    wanted = [text.lower() for text in args.only.split(",") if text]
    lines = ["| optimizer | with PDT's defaults | merges | weights finite | state holding weights | moved with a merge |",
             "|---|---|---|---|---|---|"]
    for name, cls in sorted(optimizers().items(), key=lambda item: item[0].lower()):
        if wanted and not any(text in name.lower() for text in wanted):
            continue
        lines.append(f"| {name} | " + " | ".join(try_optimizer(cls, args.steps, args.layout, args.hidden)) + " |")
    body = "\n".join(lines) + (
        f"\n\nA 2-layer MLP (8-{args.hidden}-2) on 64 fixed samples, full batch, lr 1e-3 for every optimizer, {args.steps} "
        "steps, snap_every=5, PDT's defaults otherwise. 'state holding weights': state tensors shaped like their "
        "parameter and within a fifth of its mean magnitude of it after training (a copy of the weights, an "
        "average or a fixed reference point); 'moved with a merge': the keys PDT's adapters translate by each jump "
        "(pdt_compile.adapters). Optimizers that refuse the MLP or need a closure fail on their own terms."
        + (" The matrices stored column-major (not contiguous)." if args.layout != "contiguous" else "")
    )
    title = "Which optimizers PDT stacks on (benchmarks/compatibility.py)"
    title += (f", optimizers matching {args.only!r}" if args.only else "") + (
        f", {args.layout} weights" if args.layout != "contiguous" else "") + (
        f", hidden width {args.hidden}" if args.hidden != 16 else "")
    write_section(title, body)
    print(body)


if __name__ == "__main__":
    main()
