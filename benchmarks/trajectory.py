"""The training loss at every evaluation of one task and seed, the plain optimizer and PDT's
defaults side by side: where a time-to-baseline ratio comes from.

For each run it also gives the first evaluation at or below the target (the baseline's final
loss, or ``LOSS_FLOOR``: what ``benchmarks.ttb`` times) and the evaluation from which the loss
stays at or below it to the end (what a run that merely dips below does not do).

    python -m benchmarks.trajectory --task 'digits MLP / Shampoo' --lr 6.4 [--seed 0] [--unchecked] [--adaptive] [--peer Lookahead]
        [--stop-at STEP]

``--unchecked`` adds PDT with ``gradient_limit=None`` (no gradient check) beside the default,
``--adaptive`` PDT with ``adaptive="auto"`` (and where its tau changed);
``--peer`` runs the task's peer (``benchmarks.ttb.peers``) whose name contains it as the baseline,
PDT stacked on it; ``--stop-at`` adds PDT's defaults with no prediction from that step on (the
boundaries then only capture): whether a late rise of the loss comes from the merges.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Optional

import torch

import pdt_compile as pdt
from pdt_compile.experiment import SCHEDULES, Run, Training, loss_target, train, train_in_lockstep

from .report import write_section
from .ttb import peers, task_suite


def stays_below(run: Run, target: float) -> Optional[int]:
    """The first evaluation step from which every later training loss is at or below ``target``."""
    step = None
    for s, loss in zip(run.steps, run.train_loss):
        if loss > target:
            step = None
        elif step is None:
            step = s
    return step


def tau_changes(history: list[tuple[int, int]]) -> str:
    """``history`` (step, tau) at each boundary, kept only where tau changed."""
    kept = [(step, tau) for i, (step, tau) in enumerate(history) if i == 0 or tau != history[i - 1][1]]
    return ", ".join(f"{step}: {tau}" for step, tau in kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="a task of benchmarks.ttb, e.g. 'digits MLP / Shampoo'")
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unchecked", action="store_true", help="also PDT with gradient_limit=None")
    parser.add_argument("--stop-at", type=int, default=None, help="also PDT with no prediction from this step on")
    parser.add_argument("--adaptive", action="store_true", help='also PDT with adaptive="auto" (its tau at each change)')
    parser.add_argument("--peer", default="", help="a peer of benchmarks.ttb (e.g. 'Lookahead') instead of the task's optimizer")
    parser.add_argument("--schedule", choices=SCHEDULES, default="constant",
                        help="the learning-rate schedule (pdt_compile.experiment.Task.schedule; cosine: per step to zero, "
                             "as benchmarks.ttb's cosine sections)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    suite = task_suite(quick=False)
    if args.task not in suite:
        raise SystemExit(f"--task {args.task!r}: not a ttb task; one of {', '.join(suite)}")
    task, snap_every = suite[args.task]
    task = dataclasses.replace(task, schedule=args.schedule)
    title = args.task + ("" if args.schedule == "constant" else f", {args.schedule}")
    if args.peer:
        matching = [peer for peer in peers(args.task, task) if args.peer in peer]
        if len(matching) != 1:
            raise SystemExit(f"--peer {args.peer!r}: expected one of {', '.join(peers(args.task, task))}")
        task = dataclasses.replace(task, make_optimizer=peers(args.task, task)[matching[0]])
        title = f"{args.task}: PDT on {matching[0]}"
    baseline, _ = train(task, lambda opt: opt, seed=args.seed, method="baseline", lr=args.lr)
    variants = {"PDT default": {}}
    if args.unchecked:
        variants["PDT, gradient_limit=None"] = {"gradient_limit": None}
    if args.adaptive:
        variants['PDT, adaptive="auto"'] = {"adaptive": "auto"}
    runs, merges = {"baseline": baseline}, []
    for name, options in variants.items():
        runs[name], opt = train(task, lambda opt, o=options: pdt.PDT(opt, snap_every=snap_every, **o),
                                seed=args.seed, method=name, lr=args.lr)
        merges.append(f"{name} merged {opt.stats.merges} times, undid {opt.stats.gradient_undos} by the gradient check")
        if options.get("adaptive"):
            merges.append(f"{name}'s tau (step: tau, at each change) {tau_changes(opt.stats.tau_history)}")
    if args.stop_at is not None:
        name = f"PDT default, no prediction from step {args.stop_at}"
        training = Training(task, lambda opt: pdt.PDT(opt, snap_every=snap_every), seed=args.seed, method=name, lr=args.lr)

        def hold(training: Training, seconds: float) -> None:
            if training.steps_done >= args.stop_at:
                training.optimizer.schedule.held_boundaries = task.steps  # every later boundary only captures

        [(runs[name], opt)] = train_in_lockstep([training], hold)
        merges.append(f"{name} merged {opt.stats.merges} times")
    target = loss_target(baseline)
    lines = [f"{title}, seed {args.seed}, lr {args.lr:g}, snapshot every {snap_every} steps; target {target:.3g} "
             f"(the baseline's final loss {baseline.final_loss:.3g}, floored); {'; '.join(merges)}.", "",
             "| run | first evaluation at the target | stays at or below it from | final test accuracy |",
             "|---|---|---|---|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r.time_to(target)[0]} | {stays_below(r, target)} | {100 * r.test_accuracy[-1]:.1f} |")
    lines += ["", "| step | " + " | ".join(f"{name} training loss" for name in runs) + " |",
              "|---|" + "---|" * len(runs)]
    lines += [f"| {s} | " + " | ".join(f"{loss:.2e}" for loss in losses) + " |"
              for s, *losses in zip(baseline.steps, *(r.train_loss for r in runs.values()))]
    body = "\n".join(lines)
    print(body)
    suffix = ", with and without the gradient check" if args.unchecked else ""
    suffix += ', with adaptive="auto"' if args.adaptive else ""
    write_section(f"Trajectory, {title}, seed {args.seed}, lr {args.lr:g}{suffix} (benchmarks/trajectory.py)", body)


if __name__ == "__main__":
    main()
