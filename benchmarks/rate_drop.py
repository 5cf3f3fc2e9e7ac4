"""PDT where the learning rate drops once and then holds: a step schedule's stage, SWALR's
constant SWA rate, a ReduceLROnPlateau cut. The task's rate falls to ``DROP_FACTOR`` (0.7) of
itself a third of the way through (``experiment.DROP_FRACTION``) and stays there, above
``decay_window`` (0.5) of its peak. With ``rate_settle=None`` PDT reads any rate below its peak
as a decay and holds every prediction there, for the rest of training; with ``rate_settle=5`` a
rate that held for 5 boundaries is the new peak, and PDT predicts as at any constant rate (what
``rate_settle="auto"`` chooses on SGD; on the other optimizers it chooses None). For each task:
the baseline's rate is tuned on that schedule as ``benchmarks.ttb`` tunes its baselines, then
the baseline and PDT's defaults with each setting train in lock-step, seed by seed.

    python -m benchmarks.rate_drop [--only 'digits MLP'] [--seeds 3] [--first-seed 0] [--lr 0.002] [--peer Lookahead]
"""

from __future__ import annotations

import argparse

import torch

import pdt_compile as pdt
from pdt_compile.experiment import DROP_FACTOR, DROP_FRACTION, Run, build_optimizer, speedup

from .report import run_title, write_section
from .ttb import summarise
from .warmup import on_schedule

TASKS = ("digits MLP / SGD", "mnist1d CNN / SGD-momentum", "mnist1d ViT / AdamW", "char transformer / AdamW",
         "digits MLP / LAMB")

SETTLES = "PDT, rate_settle=5 (predicts once the rate holds)"
NEVER_SETTLES = "PDT, rate_settle=None (holds after the drop)"


def per_seed(runs: dict[str, list[Run]], first_seed: int) -> str:
    """Each seed's PDT runs against its own baseline: steps and wall time to the baseline's
    final training loss, predictions made, and the final training losses and test accuracies."""
    baselines = next(iter(runs.values()))
    lines = []
    for index, base in enumerate(baselines):
        parts = []
        for method, method_runs in list(runs.items())[1:]:
            run = method_runs[index]
            steps, wall = speedup(base, run, "loss")
            reached = "never" if steps is None else f"{steps:.2f}x in steps, {wall:.2f}x in wall time"
            parts.append(f"{method}: {reached}, {run.predictions} predictions, "
                         f"final training loss {run.final_loss:.3g}, test accuracy {run.test_accuracy[-1] * 100:.1f} %")
        lines.append(f"- seed {first_seed + index} (baseline final training loss {base.final_loss:.3g}, test accuracy "
                     f"{base.test_accuracy[-1] * 100:.1f} %): " + "; ".join(parts))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run only the tasks whose name contains this")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, first-seed + 1, ...")
    parser.add_argument("--lr", type=float, default=None, help="train at this rate instead of tuning one")
    parser.add_argument("--peer", default=None, help="train the peer whose name contains this (Lookahead, Muon, "
                                                    "schedule-free) instead of the task's optimizer")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sections = []
    for name in (n for n in TASKS if args.only in n):
        task, snap_every, lr, sweep, runs = on_schedule(name, "drop", lambda snap_every: {
            "baseline, rate drop (tuned lr)": lambda opt: opt,
            SETTLES: lambda opt: pdt.PDT(opt, snap_every=snap_every, rate_settle=5),
            NEVER_SETTLES: lambda opt: pdt.PDT(opt, snap_every=snap_every, rate_settle=None),
        }, args.seeds, args.lr, args.first_seed, args.peer)
        settle = pdt.PDT(build_optimizer(task, task.make_model(), lr), snap_every=snap_every).config.rate_settle
        default = f"rate_settle={settle}"
        on = f" on the peer {args.peer!r}" if args.peer else ""
        title = f"{name}{on}: rate x{DROP_FACTOR:g} from step {round(DROP_FRACTION * task.steps)} on (default: {default})"
        sections.append(summarise(title, runs, lr, sweep, snap_every, task) + "\n\n" + per_seed(runs, args.first_seed))
        print(sections[-1], flush=True)
    title = run_title("Time to baseline where the rate drops once, then holds (benchmarks/rate_drop.py)",
                      args.only, args.seeds, args.first_seed, args.lr)
    if args.peer is not None:
        title += f", peer {args.peer!r}"
    write_section(title, "\n\n".join(sections))


if __name__ == "__main__":
    main()
