"""Every reported training loss of one PDT run around its runaways, with what the guard compared
each with: why a blow-up was, or was not, called.

``benchmarks.trajectory`` shows the loss at evaluations, 40 steps apart; a runaway grows and is
called within a few steps. This trains PDT's defaults on a task (or stacked on one of its peers)
for one seed and lists, for the steps in ``--steps``, the reported loss, the runaways called so
far, the factor in force (``runaway_factor`` doubled at each of the first three runaways), the
loss the guard compared with (:func:`pdt_compile.runtime.schedule.runaway_reference`; '-' while
too few are in) and the loss over it.

    python -m benchmarks.runaway_trace --task 'mnist1d CNN / SGD-momentum' --peer schedule-free --lr 1.6 --seed 4 \\
        [--steps 1160-1200] [--verify] [--no-merges]

``--peer reference``: the reference schedule-free optimizer, as ``benchmarks.blowups`` runs it.
``--verify``: every merge verified, as ``benchmarks.ttb``'s verified rows (a fixed batch of 256
training samples, ``verify_backoff=0``).
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings

import torch

import pdt_compile as pdt
from pdt_compile.experiment import train
from pdt_compile.runtime import schedule as schedule_module

from .report import write_section
from .stacking import reference_schedule_free
from .ttb import peers, task_suite, verified


def compared_with(schedule) -> float | None:
    """``Schedule.compared_with``, or at a revision before it (2026-12-03)
    :func:`~pdt_compile.runtime.schedule.runaway_reference` of the window, or before that
    (``RUNAWAY_LAG``, 2026-12-02) the largest of the window, once ``RUNAWAY_MIN`` are in."""
    if hasattr(schedule, "compared_with"):
        return schedule.compared_with()
    recent = schedule.recent_losses
    reference = getattr(schedule_module, "runaway_reference", None)
    if reference is not None:
        return reference(recent)
    return max(recent) if len(recent) >= schedule_module.RUNAWAY_MIN else None


def threshold(factor: float, runaways: int) -> float:
    """``runaway_threshold``, or at a revision before it (2026-12-03) the factor doubled at
    every runaway."""
    capped = getattr(schedule_module, "runaway_threshold", None)
    return factor * 2**runaways if capped is None else capped(factor, runaways)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="a task of benchmarks.ttb")
    parser.add_argument("--peer", default="", help="a peer of benchmarks.ttb to stack PDT on (e.g. 'schedule-free'), "
                        "or 'reference': the reference schedule-free optimizer, as benchmarks.blowups runs it")
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", default="1160-1200", help="first-last step listed")
    parser.add_argument("--verify", action="store_true", help="verify every merge, as benchmarks.ttb's verified rows")
    parser.add_argument("--no-merges", action="store_true", help="PDT never predicts (burn-in longer than the run): "
                        "whether the optimizer alone sets the guard off")
    args = parser.parse_args()
    torch.set_num_threads(1)
    first, last = (int(s) for s in args.steps.split("-"))
    task, snap_every = task_suite(quick=False)[args.task]
    if args.peer == "reference":
        task = reference_schedule_free(args.task, task)
    elif args.peer:
        name = next(p for p in peers(args.task, task) if args.peer in p)
        task = dataclasses.replace(task, make_optimizer=peers(args.task, task)[name])
    rows = ["| step | reported loss | runaways so far | factor | compared with | loss / compared with |",
            "|---|---|---|---|---|---|"]
    report = pdt.PDT.report_loss

    def traced(self, loss, *rest, **options):
        schedule = self.schedule
        step = schedule.steps
        if first <= step <= last:
            value, reference = float(loss), compared_with(schedule)
            factor = threshold(self.config.runaway_factor, schedule.runaways)
            rows.append(f"| {step} | {value:.3g} | {schedule.runaways} | {factor:g} | "
                        + ("- | - |" if reference is None else f"{reference:.3g} | {value / reference:.3g} |"))
        return report(self, loss, *rest, **options)

    burn_in = {"burn_in": task.steps + 1} if args.no_merges else {}
    wrap = (verified(task, snap_every, verify_backoff=0, **burn_in) if args.verify
            else lambda o: pdt.PDT(o, snap_every=snap_every, **burn_in))
    pdt.PDT.report_loss = traced
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run, opt = train(task, wrap, seed=args.seed, method="PDT", lr=args.lr)
    finally:
        pdt.PDT.report_loss = report
    after = ("the window then starts again" + (
        ", and again from the first loss back at the loss the runaway was compared with, which stands in until it "
        "holds enough" if hasattr(opt.schedule, "compared_with") else ""))
    what = ("PDT's defaults" + (", every merge verified (256 training samples, verify_backoff=0)" if args.verify else "")
            + (", no prediction (burn-in past the run's end): the optimizer's own losses" if args.no_merges else ""))
    evaluations = ", ".join(f"{step}: {loss:.3g}" for step, loss in zip(run.steps, run.train_loss)
                            if first - 2 * task.eval_every <= step <= last + 2 * task.eval_every)
    intro = (f"{args.task}{' on ' + args.peer if args.peer else ''}, lr {args.lr:g}, seed {args.seed}, {what}: "
             f"{opt.stats.runaways} runaways called, final training loss {run.train_loss[-1]:.3g}, final test accuracy "
             f"{run.test_accuracy[-1] * 100:.1f} %. A runaway is called at the second loss in a row over the factor "
             f"times the loss compared with; {after}. Training loss (the whole training set, at "
             f"the evaluation weights) at the evaluations around the listed steps: {evaluations}.")
    write_section(f"Runaway trace, {args.task}{' on ' + args.peer if args.peer else ''}, seed {args.seed}, steps "
                  f"{first}-{last}{', verified merges' if args.verify else ''}{', no merges' if args.no_merges else ''} "
                  "(benchmarks/runaway_trace.py)",
                  intro + "\n\n" + "\n".join(rows))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
