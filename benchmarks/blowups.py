"""Seeds that a merge sets back: per seed, PDT's final loss and accuracy and the largest rise of
the training loss between two evaluations, on a task stacked on the reference schedule-free
optimizer (at ``benchmarks.prediction_cost.SCHEDULE_FREE_LR``'s rate), for each horizon given.

Time-to-target tables say that a seed never reached the target, not why. A rise of the loss by
hundreds of times between two evaluations, where the schedule-free optimizer alone falls
steadily, is a run thrown out of its basin; one that ends at chance accuracy never came back.
Whether a merge threw it out or the optimizer's own motion ran away first (which PDT then
extrapolates), ``--trace`` tells: on the seed it traced (run of 2026-11-29 22:42), the latter.

    python -m benchmarks.blowups [--task 'mnist1d CNN'] [--seeds 10] [--first-seed 0] [--taus 8,4] [--runaway 3]
    python -m benchmarks.blowups --trace 4 --taus 8   # one seed's merges: jump against z's own motion
    python -m benchmarks.blowups --trace 4 --taus 8 --stop-merges 400,600,700   # no merge from there on

``--trace SEED`` (with the runaway guard off, to see what it guards against) records, at every merge of that seed, the size of the jump of z (its norm
over every tracked parameter), of z itself, and of z's own motion since the previous merge:
whether a blow-up starts with a large jump or with the optimizer's own motion, which PDT then
extrapolates.

``--runaway R`` adds, for each horizon, a row with ``runaway_factor=R`` (two losses in a row
over R times the largest of the 40 before them, but the newest 10, move the weights back to the last snapshot
before them); ``--runaway 0`` adds rows with the guard off. PDT's default on schedule-free is
R = 3 (from 2026-11-30 00:00; before then, off).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import pdt_compile as pdt
from pdt_compile.experiment import Run, train
from pdt_compile.runtime.schedule import Phase

from .prediction_cost import SCHEDULE_FREE_LR
from .report import write_section
from .stacking import reference_schedule_free
from .ttb import task_suite


def worst_rise(run: Run) -> tuple[float, int]:
    """The largest ratio of one evaluation's training loss to the previous one's, and where."""
    losses = run.train_loss
    ratios = [(losses[i] / max(losses[i - 1], 1e-30), i) for i in range(1, len(losses))]
    return max(ratios)


def patched_run(task, snap_every: int, lr: float, seed: int, tau: int, method: str, wrap) -> Run:
    """One run of PDT without the runaway guard (what it guards against), with its ``method``
    replaced by ``wrap(original)``."""
    original = getattr(pdt.PDT, method)
    setattr(pdt.PDT, method, wrap(original))
    try:
        return train(task, lambda opt: pdt.PDT(opt, snap_every=snap_every, tau=tau, runaway_factor=None),
                     seed=seed, method="PDT", lr=lr)[0]
    finally:
        setattr(pdt.PDT, method, original)


def trace(task, snap_every: int, lr: float, seed: int, tau: int) -> list[str]:
    """Per merge of one run: the step, |J| (the jump of z), |z| and |z - z at the previous merge|."""
    rows, previous = [], {}

    def recording(original):
        def record(self, jumps, scale):
            zs = [self.optimizer.state[p]["z"] for p in self._ring.params]
            jump = sum(float(j.norm()) ** 2 for j in jumps if j is not None) ** 0.5
            norm = sum(float(z.norm()) ** 2 for z in zs) ** 0.5
            moved = sum(float((z - previous[i]).norm()) ** 2 for i, z in enumerate(zs)) ** 0.5 if previous else float("nan")
            previous.update({i: z.detach().clone() for i, z in enumerate(zs)})
            rows.append(f"| {self.schedule.steps} | {jump:.3g} | {norm:.4g} | {moved:.3g} |")
            return original(self, jumps, scale)
        return record

    run = patched_run(task, snap_every, lr, seed, tau, "_move_followers_", recording)
    rise, at = worst_rise(run)
    losses = ", ".join(f"{step}: {loss:.2g}" for step, loss in zip(run.steps, run.train_loss))
    return [f"Seed {seed}, tau {tau}: largest loss rise {rise:.1f}x at step {run.steps[at]}; training loss by step: "
            f"{losses}.", "", "| step | jump of z | z | z's motion since the previous merge |", "|---|---|---|---|"] + rows


def stopped(task, snap_every: int, lr: float, seed: int, tau: int, stop: int) -> str:
    """One run of PDT whose predictions stop at step ``stop`` (snapshots go on): whether the
    schedule-free optimizer alone holds the state PDT brought it to."""
    def capturing(original):
        return lambda self, phase: original(self, Phase.CAPTURE if phase == Phase.PREDICT and self.schedule.steps >= stop else phase)

    run = patched_run(task, snap_every, lr, seed, tau, "_run_boundary", capturing)
    rise, at = worst_rise(run)
    risen = f"diverged (NaN) by step {run.steps[-1]}" if run.diverged else f"{rise:.1f}x at step {run.steps[at]}"
    losses = ", ".join(f"{step}: {loss:.2g}" for step, loss in list(zip(run.steps, run.train_loss))[1::4])
    return f"| {stop} | {run.final_loss:.2e} | {100 * run.test_accuracy[-1]:.1f} | {risen} | {losses} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="mnist1d CNN")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--taus", default="8,4", help="horizons in snap_every intervals (the default is 8)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--runaway", type=float, default=None,
                        help="also rows with this runaway_factor (0: also rows with it off)")
    parser.add_argument("--stop-merges", default=None,
                        help="with --trace: comma-separated steps; one run per step whose predictions stop there")
    parser.add_argument("--trace", type=int, default=None, help="only this seed, every merge of the first tau in --taus")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="PDT on")
    started = time.perf_counter()
    name = next(n for n in task_suite(quick=False) if args.task in n)
    task, snap_every = task_suite(quick=False)[name]
    task = reference_schedule_free(name, task)
    lr = SCHEDULE_FREE_LR[name]
    if args.trace is not None and args.stop_merges is not None:
        tau = int(args.taus.split(",")[0])
        lines = [f"Seed {args.trace}, tau {tau}, runaway guard off: PDT's predictions stop at the given step, snapshots and the "
                 "optimizer go on.",
                 "", "| predictions stop at step | final loss | final acc | largest loss rise between evaluations | "
                 "training loss by step |", "|---|---|---|---|---|"]
        for stop in args.stop_merges.split(","):
            lines.append(stopped(task, snap_every, lr, args.trace, tau, int(stop)))
            print(lines[-1], flush=True)
        write_section(f"Merges stopped, one seed, {name} on schedule-free (benchmarks/blowups.py --trace --stop-merges)",
                      f"{name} on the reference schedule-free optimizer, lr {lr:g}.\n\n" + "\n".join(lines))
        return
    if args.trace is not None:
        lines = trace(task, snap_every, lr, args.trace, int(args.taus.split(",")[0]))
        print("\n".join(lines))
        write_section(f"Merges of one seed, {name} on schedule-free (benchmarks/blowups.py --trace)",
                      f"{name} on the reference schedule-free optimizer, lr {lr:g}; norms over every tracked parameter.\n\n"
                      + "\n".join(lines))
        return
    lines = ["| seed | method | final loss | final acc | steps to schedule-free's final loss | runaways | "
             "largest loss rise between evaluations (at step) |", "|---|---|---|---|---|---|---|"]
    guards = {"": {}}
    if args.runaway is not None:
        guards[f", runaway_factor {args.runaway or 'off'}"] = {"runaway_factor": args.runaway or None}
    outcomes: dict[str, list[tuple[float | None, float]]] = {}  # method -> (steps x or None, final accuracy)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        methods = {"schedule-free alone": lambda opt: opt}
        methods.update({f"PDT, tau {tau}{label}": (lambda opt, t=int(tau), g=guard: pdt.PDT(opt, snap_every=snap_every, tau=t, **g))
                        for tau in args.taus.split(",") for label, guard in guards.items()})
        target = None
        for method, wrap in methods.items():
            run, optimizer = train(task, wrap, seed=seed, method=method, lr=lr)
            target = run.final_loss if target is None else target
            reached = run.time_to(target)[0]
            outcomes.setdefault(method, []).append((None if reached is None else task.steps / reached, run.test_accuracy[-1]))
            stats = getattr(optimizer, "stats", None)
            rise, at = worst_rise(run)
            lines.append(f"| {seed} | {method} | {run.final_loss:.2e} | {100 * run.test_accuracy[-1]:.1f} | "
                         f"{reached if reached is not None else 'never'} | {stats.runaways if stats is not None else '-'} | "
                         f"{rise:.1f}x ({run.train_loss[at - 1]:.1e} -> {run.train_loss[at]:.1e}, step {run.steps[at]}) |")
            print(lines[-1], flush=True)
    lines += ["", "| method | seeds that never reach schedule-free's final loss | median steps × on the others | "
              "seeds ending at chance (below 20 % accuracy) |", "|---|---|---|---|"]
    for method, values in list(outcomes.items())[1:]:  # PDT's rows, against schedule-free alone
        reached = sorted(ratio for ratio, _ in values if ratio is not None)
        chance = sum(1 for _, accuracy in values if accuracy < 0.2)
        median = f"{statistics.median(reached):.2f}x" if reached else "-"
        lines.append(f"| {method} | {len(values) - len(reached)} of {len(values)} | {median} | {chance} |")
    intro = (f"{name} on the reference schedule-free optimizer, lr {lr:g}, {task.steps} steps, evaluation every "
             f"{task.eval_every} steps, seeds {args.first_seed}-{args.first_seed + args.seeds - 1}; PDT's defaults with tau as given (in snap_every intervals; "
             f"z is snapshot every snap_every / 2 steps). Total benchmark time {time.perf_counter() - started:.0f} s.")
    guarded = "" if args.runaway is None else f", runaway_factor {args.runaway or 'off'}"
    write_section(f"Seeds a merge sets back, {name} on schedule-free{guarded} (benchmarks/blowups.py)",
                  intro + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
