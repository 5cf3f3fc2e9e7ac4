"""What PDT adds to a checkpoint, and how it grows with the run.

A PDT checkpoint holds the wrapped optimizer's state, PDT's ring rows and kept jump in each
parameter's state, and one JSON string in the first param group: the schedule, the ring's
counters and the stats, whose histories (mask ratio, tau, gradient surges) take one entry per
prediction or boundary, up to ``PDTConfig.history_limit`` (1000 by default), the latest. torch's flattened layout (``StateDictOptions(flatten_optimizer_state_dict=True)``,
torchtitan's) writes every param-group entry once per parameter of the group, that string
included. This saves the optimizer, plain and wrapped, at several points of a run through
``torch.distributed.checkpoint`` (one process) in both layouts, and counts the bytes on disk.

    python -m benchmarks.checkpoint_size [--layers 100] [--steps 40,400,2000,8000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

import pdt_compile as pdt
from pdt_compile.runtime.checkpoint import GROUP_KEY

from .report import write_section


def bytes_on_disk(model: nn.Module, optimizer: torch.optim.Optimizer, flatten: bool) -> int:
    """Size of ``optimizer``'s state saved by ``torch.distributed.checkpoint`` in that layout."""
    state = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(flatten_optimizer_state_dict=flatten))
    with tempfile.TemporaryDirectory() as path:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no process group: DCP says it saves in one process
            dcp.save({"optimizer": state}, checkpoint_id=path)
        return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=100, help="Linear(64, 64) layers: two tensors each")
    parser.add_argument("--steps", default="40,400,2000,8000", help="comma-separated steps at which to save")
    parser.add_argument("--snap-every", type=int, default=2, help="small, so that a short run makes many predictions")
    args = parser.parse_args()
    torch.manual_seed(0)
    models = [nn.Sequential(*[nn.Linear(64, 64) for _ in range(args.layers)]) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    plain = torch.optim.AdamW(models[0].parameters(), lr=1e-3)
    wrapped = pdt.PDT(torch.optim.AdamW(models[1].parameters(), lr=1e-3), snap_every=args.snap_every)
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    tensors = sum(1 for _ in models[0].parameters())
    elements = sum(p.numel() for p in models[0].parameters())
    lines = ["| step | PDT's predictions | PDT's JSON (bytes) | AdamW nested | AdamW flattened | PDT nested | PDT flattened | "
             "PDT flattened / nested |", "|---|---|---|---|---|---|---|---|"]
    step = 0
    for stop in sorted(int(s) for s in args.steps.split(",")):
        for _ in range(stop - step):
            for model, optimizer in zip(models, (plain, wrapped)):
                model(x).pow(2).mean().backward()
                optimizer.step()
                optimizer.zero_grad()
        step = stop
        text = wrapped.state_dict()["param_groups"][0][GROUP_KEY]
        sizes = [bytes_on_disk(model, optimizer, flatten) for model, optimizer in zip(models, (plain, wrapped))
                 for flatten in (False, True)]
        mb = [f"{size / 1e6:.2f} MB" for size in sizes]
        lines.append(f"| {stop} | {wrapped.stats.predictions} | {len(text)} | {' | '.join(mb)} | {sizes[3] / sizes[2]:.2f} |")
        print(lines[-1], flush=True)
    body = "\n".join(lines) + (
        f"\n\n{args.layers} `Linear(64, 64)` layers ({tensors} tensors, {elements} elements), AdamW lr 1e-3 on a fixed "
        f"batch, PDT's defaults with `snap_every={args.snap_every}`; the optimizer's state saved by "
        "`torch.distributed.checkpoint.save` (one process) from `get_optimizer_state_dict`, nested and with "
        "`flatten_optimizer_state_dict=True`, bytes on disk. PDT's JSON is the first param group's "
        f"`{GROUP_KEY}` string; its histories keep the latest {wrapped.config.history_limit} entries "
        "(`history_limit`).")
    print(body)
    where = "" if args.layers == 100 else f", {tensors} tensors"
    write_section(f"Checkpoint size{where} (benchmarks/checkpoint_size.py)", body)


if __name__ == "__main__":
    main()
