"""How much of a wall-time ratio is the machine? The same runs timed back to back and in lock-step.

benchmarks.ttb times the methods of one seed against each other. Until 2026-11-30 it trained
them back to back, each with its repeats (a run under 5 s is trained up to three times, keeping
the least time to each evaluation); this VM's speed drifts by 10-20 % over minutes, so a slow
spell could land on one method. Now it trains them in lock-step, one step of each in turn
(:func:`benchmarks.ttb.timed_in_lockstep`). This measures both protocols on the same seeds,
alternating which goes first: the baseline against a second copy of itself (an A/A control: the
same trajectory, so any ratio but 1.00 is the machine) and PDT's defaults against the baseline.

    python -m benchmarks.timing_protocol [--task "digits MLP / LAMB"] [--schedule cosine] [--lr 0.02]
    python -m benchmarks.timing_protocol --task "mnist1d CNN" --peer schedule-free --lr 1.6 --schedule constant
    python -m benchmarks.timing_protocol --load "char transformer"   # with that task training on the other core

``--load`` keeps the other core busy with another task's baseline training, as ``benchmarks.ttb
--workers 2`` does with another task's runs: a protocol it does not disturb keeps its A/A ratios
at 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import statistics
import subprocess
import sys
from typing import Callable

import torch

import pdt_compile as pdt
from pdt_compile.experiment import Run, speedup

from .report import write_section
from .ttb import peers, spread, task_suite, timed_in_lockstep

Timed = Callable[..., list[Run]]


def back_to_back(task, methods: list[tuple[str, Callable]], *, seed: int, lr: float) -> list[Run]:
    """The protocol ttb used before lock-step: each method with its repeats, then the next."""
    return [timed_in_lockstep(task, [method], seed=seed, lr=lr)[0] for method in methods]


PROTOCOLS: dict[str, Timed] = {"back to back": back_to_back, "lock-step": timed_in_lockstep}

LOAD = r"""
import sys, torch
from pdt_compile.experiment import train
from benchmarks.ttb import task_suite
torch.set_num_threads(1)
name, (task, _) = next((n, t) for n, t in task_suite(False).items() if sys.argv[1] in n)
while True:
    train(task, lambda opt: opt, seed=0, method="load")
"""


def load(task: str) -> subprocess.Popen:
    """A process training ``task``'s baseline over and over (until killed), on the other core."""
    return subprocess.Popen([sys.executable, "-c", LOAD, task], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="digits MLP / LAMB", help="a task of benchmarks.ttb whose name contains this")
    parser.add_argument("--schedule", default="cosine", choices=("constant", "cosine"))
    parser.add_argument("--lr", type=float, default=0.02, help="default: ttb --core's tuned cosine lr of LAMB")
    parser.add_argument("--peer", default=None, help="time the peer of benchmarks.ttb whose name contains this instead")
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--load", default=None, help="meanwhile, train the ttb task whose name contains this in another process")
    args = parser.parse_args()
    torch.set_num_threads(1)
    name, (task, snap_every) = next((n, t) for n, t in task_suite(False).items() if args.task in n)
    if args.peer:
        peer, make = next((p, m) for p, m in peers(name, task).items() if args.peer in p)
        task, name = dataclasses.replace(task, make_optimizer=make), f"{name}: PDT stacked on {peer}"
    task = dataclasses.replace(task, schedule=args.schedule)
    methods = [("A", lambda opt: opt), ("A again", lambda opt: opt),
               ("PDT", lambda opt: pdt.PDT(opt, snap_every=snap_every))]
    ratios: dict[str, dict[str, list]] = {p: {"aa": [], "wall": [], "steps": []} for p in PROTOCOLS}
    other = load(args.load) if args.load else None
    try:
        for seed in range(args.seeds):
            order = list(PROTOCOLS.items())
            for protocol, timed in order[seed % 2:] + order[: seed % 2]:
                with contextlib.redirect_stdout(io.StringIO()):
                    a, again, run = timed(task, methods, seed=seed, lr=args.lr)
                assert a.train_loss == again.train_loss, "the A/A control left its trajectory"
                steps, wall = speedup(a, run)
                ratios[protocol]["aa"].append(a.seconds[-1] / again.seconds[-1])
                ratios[protocol]["wall"].append(wall)
                ratios[protocol]["steps"].append(steps)
                print(f"seed {seed} {protocol}: A/A {ratios[protocol]['aa'][-1]:.3f}, PDT wall {wall}, steps {steps}",
                      flush=True)
    finally:
        if other is not None:
            other.kill()
    rows = []
    for protocol, values in ratios.items():
        aa = values["aa"]
        rows.append(f"| {protocol} | {spread(aa, '{:.3f}')} | {statistics.pstdev(aa):.3f} | {spread(values['wall'])} | "
                    f"{spread(values['steps'])} | {', '.join('never' if w is None else f'{w:.2f}' for w in values['wall'])} |")
    body = "\n".join([
        f"{name}, {args.schedule} schedule, lr {args.lr:g}, seeds 0-{args.seeds - 1}, 1 torch thread; each seed runs both "
        "protocols, the first alternating by seed. 'A/A': the baseline's training time over a second copy of itself "
        "(the same trajectory), which only the machine moves off 1.000; PDT: × to the baseline's final training loss."
        + (f" Meanwhile another process trained the baseline of the task matching {args.load!r} over and over, on the "
           "other core." if args.load else ""), "",
        "| protocol | A/A wall ratio, median [min–max] | A/A standard deviation | PDT wall × | PDT steps × | PDT wall × per seed |",
        "|---|---|---|---|---|---|",
        *rows])
    print(body)
    loaded = f", beside {args.load!r}" if args.load else ""
    write_section(f"Timing protocol, {name}, {args.schedule}{loaded} (benchmarks/timing_protocol.py)", body)


if __name__ == "__main__":
    main()
