"""Did a change make predictions cheaper? Two revisions, measured in alternating processes.

This VM's speed drifts by 10-20 % over minutes, as much as a change to the prediction code may
gain, so two `benchmarks.prediction_cost` runs half an hour apart cannot tell them apart. This
checks ``--base`` out into a temporary git worktree and runs the same measurement in a fresh
process for it and for the working tree, alternating (base, head, head, base, ...) for
``--rounds`` rounds. Each process trains PDT's defaults on one task (seed 0) ``--runs`` times,
each time in lock-step with the plain optimizer (one training step of each in turn), and
reports the least mean prediction time of its runs (as ``timeit`` keeps its fastest repeat),
the least training time, the median of PDT's training time over the plain optimizer's (what
PDT adds, all of it: the drift that moves both cancels), and the run's final loss and merges,
which show whether the two revisions follow the same trajectory.

    python -m benchmarks.ab --base 61130c1 [--task "digits MLP / SGD"] [--peer schedule-free] [--rounds 4] [--runs 5]
    python -m benchmarks.ab --base 61130c1 --task "mnist1d CNN / SGD-momentum" --peer '' --schedule cosine --lr 0.2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .report import write_section

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import dataclasses, json, sys, warnings
import torch
warnings.filterwarnings("ignore")
import pdt_compile as pdt
from pdt_compile.experiment import Training, train_in_lockstep
from benchmarks.ttb import peers, task_suite
from benchmarks.prediction_cost import SCHEDULE_FREE_LR
torch.set_num_threads(1)
name, peer, runs, schedule, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
task, snap_every = task_suite(quick=False)[name]
lr = task.lr
if peer:
    task = dataclasses.replace(task, make_optimizer=peers(name, task)[peer])
    lr = SCHEDULE_FREE_LR[name]
if schedule:
    task = dataclasses.replace(task, schedule=schedule)
lr = rate or lr
out = []
for index in range(runs):
    wraps = {"PDT": lambda o: pdt.PDT(o, snap_every=snap_every), "plain": lambda o: o}
    order = ["PDT", "plain"] if index % 2 == 0 else ["plain", "PDT"]
    done = dict(zip(order, train_in_lockstep([Training(task, wraps[m], seed=0, method=m, lr=lr) for m in order])))
    (run, opt), (plain, _) = done["PDT"], done["plain"]
    stats = opt.stats
    out.append({"prediction_ms": 1e3 * stats.prediction_seconds / max(stats.predictions, 1),
                "seconds": run.seconds[-1], "over_plain": run.seconds[-1] / plain.seconds[-1],
                "final_loss": run.train_loss[-1], "merges": stats.merges})
print(json.dumps(out))
"""


def measure(tree: Path, task: str, peer: str, runs: int, schedule: str = "", lr: float = 0.0) -> dict:
    """One fresh process on ``tree``'s code: the least prediction time and training time of
    ``runs`` runs, and the (deterministic) final loss and merges of the last. ``schedule``,
    ``lr``: the task's learning-rate schedule and rate instead of its own (when given)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    result = subprocess.run([sys.executable, "-c", CHILD, task, peer, str(runs), schedule, str(lr)], cwd=tree, env=env,
                            capture_output=True, text=True, check=True)
    runs_ = json.loads(result.stdout.strip().splitlines()[-1])
    return {"prediction_ms": min(r["prediction_ms"] for r in runs_), "seconds": min(r["seconds"] for r in runs_),
            "over_plain": statistics.median(r["over_plain"] for r in runs_),
            "final_loss": runs_[-1]["final_loss"], "merges": runs_[-1]["merges"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the git revision to compare the working tree against")
    parser.add_argument("--task", default="digits MLP / SGD", help="a task name of benchmarks.ttb")
    parser.add_argument("--peer", default="schedule-free", help="'schedule-free' or '' (the task's own optimizer)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--schedule", default="", help="the task's learning-rate schedule instead of its own (e.g. cosine)")
    parser.add_argument("--lr", type=float, default=0.0, help="the learning rate instead of the task's (or the peer's)")
    args = parser.parse_args()
    base_rev, head_rev = (subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True,
                                         check=True).stdout.strip() for rev in (args.base, "HEAD"))
    with tempfile.TemporaryDirectory() as scratch:
        worktree = Path(scratch) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            results: dict[str, list[dict]] = {"base": [], "head": []}
            for round_ in range(args.rounds):
                order = ["base", "head"] if round_ % 2 == 0 else ["head", "base"]
                for label in order:
                    results[label].append(measure(worktree if label == "base" else ROOT, args.task, args.peer, args.runs,
                                                  args.schedule, args.lr))
                    print(label, results[label][-1], flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=True)
    rows = [
        f"| {round_} | {b['prediction_ms']:.3f} | {h['prediction_ms']:.3f} | {b['seconds']:.3f} | {h['seconds']:.3f} "
        f"| {b['over_plain']:.3f} | {h['over_plain']:.3f} |"
        for round_, (b, h) in enumerate(zip(results["base"], results["head"]))
    ]
    median = {label: {key: statistics.median(r[key] for r in runs) for key in ("prediction_ms", "seconds", "over_plain")}
              for label, runs in results.items()}
    last = {label: runs[-1] for label, runs in results.items()}
    where = f"{args.task}" + (f", on {args.peer}" if args.peer else "") + (f", {args.schedule}" if args.schedule else "")
    where += f", lr {args.lr:g}" if args.lr else ""
    body = "\n".join([
        f"{where}, PDT's defaults, seed 0; base = {base_rev}, head = the working tree at {head_rev}; processes alternate "
        f"(base, head, head, base, ...), each the least of {args.runs} runs (PDT / plain: their median), every run "
        f"in lock-step with the plain optimizer (one training step of each in turn, which comes first alternating), "
        f"whose training time it is divided by: a drift of the machine's speed reaches both.", "",
        "| round | base: one prediction (ms) | head: one prediction (ms) | base: training s | head: training s "
        "| base: PDT / plain | head: PDT / plain |",
        "|---|---|---|---|---|---|---|",
        *rows, "",
        f"Medians: one prediction {median['base']['prediction_ms']:.3f} ms (base) and "
        f"{median['head']['prediction_ms']:.3f} ms (head), head/base "
        f"{median['head']['prediction_ms'] / median['base']['prediction_ms']:.2f}; training "
        f"{median['base']['seconds']:.3f} s and {median['head']['seconds']:.3f} s, head/base "
        f"{median['head']['seconds'] / median['base']['seconds']:.2f}; PDT's training time over the plain optimizer's "
        f"{median['base']['over_plain']:.3f} (base) and {median['head']['over_plain']:.3f} (head). Trajectory: final loss "
        f"{last['base']['final_loss']:.6g} and {last['head']['final_loss']:.6g}, merges {last['base']['merges']} and "
        f"{last['head']['merges']} (base, head).",
    ])
    print(body)
    write_section(f"A/B of two revisions, {where} (benchmarks/ab.py)", body)


if __name__ == "__main__":
    main()
