"""Does a PDT setting beat the defaults on every task, or only on the one where it was found?

The full suite's ViT task measured one variant past the defaults at a constant rate: tau 5
with affine dynamics and no trend filter, 1.16x in steps against the default's 1.03x
(``benchmarks.ttb``, section "Time to baseline"). A default must pay on every
task, so this trains, for every case of ``benchmarks.tau_ramp`` (each task at the rates
``benchmarks.ttb`` tuned: constant, cosine where it is the better baseline, and the peers) and
the character transformer on schedule-free AdamW, the
baseline, PDT's defaults and each variant from the same initial weights and batches, and
counts the steps to the baseline's final training loss per seed, with the final test accuracy
against the baseline's. Steps only, no wall time: it may run beside a timed benchmark.

    python -m benchmarks.variants [--seeds 3] [--first-seed 0] [--only 'char transformer'] [--variants 'affine'] [--lr 0.2] [--length 3] [--optimizer radamw]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from typing import Callable

import torch

import pdt_compile as pdt
from pdt_compile.experiment import Task, Wrap, speedup, train

from .adam_moments import MomentScalingPDT
from .backtest import BacktestPDT
from .saturation import SaturationPDT
from .chaos import seed_cells
from .interval_mean import IntervalMeanPDT
from .low_bit import bitsandbytes_adamw8bit, bitsandbytes_lion8bit, torchao_adamw8bit
from .report import chosen, write_section
from .plateau import ProgressHoldPDT
from .sf_harm import ClockPDT, ForgetOnlyPDT, TangentialPDT, with_weight_decay
from .tau_ramp import selected
from .ttb import MUON, peers, task_suite, verified

VARIANTS: dict[str, dict] = {
    "default": {},
    "affine": dict(dynamics="affine"),
    "tau 5, affine": dict(tau=5, dynamics="affine"),
    "tau 5, affine, no trend filter (the ViT's lead)": dict(tau=5, trend=False, dynamics="affine"),
    "tau 5, no trend filter (the previous default)": dict(tau=5, trend=False),
    "runaway guard at factor 3 (on by default on schedule-free only)": dict(runaway_factor=3.0),
    "runaway guard off (runaway_factor=None)": dict(runaway_factor=None),
    "runaway forget only (a runaway forgets the snapshots, the weights stay; benchmarks.sf_harm's probe)":
        dict(forget_only=True),
    "tau ramp 1 (the first merge one interval ahead)": dict(tau_ramp=1),
    "tau 4 (jumps half as far)": dict(tau=4),
    "tau 12 (jumps half as far again)": dict(tau=12),
    "tau 16 (jumps twice as far)": dict(tau=16),
    "burn-in 10": dict(burn_in=10),
    "burn-in 16 (on schedule-free, no merge in the first quarter of the character transformer)": dict(burn_in=16),
    "burn-in 33 (on schedule-free, no merge in the first half of the character transformer)": dict(burn_in=33),
    "rollback at factor 1.5": dict(rollback_factor=1.5),
    "progress hold (no prediction without progress over the ring's span; benchmarks.plateau's probe)":
        dict(progress_hold=True),
    "verify (256 training samples)": dict(verify=True),
    "verify (256 training samples), verify_backoff=0": dict(verify=True, verify_backoff=0),
    "predict at every 2nd boundary": dict(predict_every=2),
    "undo backoff off (verify_backoff=0: merges the gradient check undoes in a row hold nothing back, the default "
    "before 2026-12-07 08:30)": dict(verify_backoff=0),
    "undo backoff 2 (verify_backoff=2: at most two boundaries held after undone merges in a row)": dict(verify_backoff=2),
    "snapshots of z every snap_every (base_spacing=1: on schedule-free, half the boundaries)": dict(base_spacing=1.0),
    "adaptive tau (halves after a merge whose interval's reported loss rose, +1 after one that paid, up to 2 tau)":
        dict(adaptive=True, loss_tolerance=0.0),
    "adaptive tau, capped at tau (halves after a merge that did not pay, +1 after one that did, up to tau)":
        dict(adaptive=True, tau_max=8, loss_tolerance=0.0),
    "adaptive tau, loss_tolerance 0.1 (halves only after a merge whose interval's loss rose by over 10 %)":
        dict(adaptive=True, loss_tolerance=0.1),
    "adaptive auto (as loss_tolerance 0.1 while the rate holds at its peak, tau fixed while it decays; until 2026-12-05 13:30 "
    "off on schedule-free, the Adam family and Lion, since then on SGD, alone or in Lookahead, LAMB and Muon only)":
        dict(adaptive="auto"),
    "tau fixed (adaptive=False, the default before 2026-12-05 13:30)": dict(adaptive=False),
    "adaptive auto, capped at tau (only ever shorter jumps than the defaults': halves as auto does, grows back up to tau)":
        dict(adaptive="auto", tau_max=8),
    "history 3 (a ring of 3 snapshots)": dict(history=3),
    "history 8 (a ring of 8 snapshots)": dict(history=8),
    "granularity model (one DMD over all the parameters, not one per tensor)": dict(granularity="model"),
    "rank gavish_donoho (the paper's truncation, not full rank)": dict(rank="gavish_donoho"),
    "merges in the first quarter of training only": dict(stop_at=0.25),
    "merges in the first half of training only": dict(stop_at=0.5),
    "the radial part of matrices' jumps undone (benchmarks.sf_harm's probe)": dict(tangential=True),
    "radial inward (the radial part of every jump undone where it shrinks the tensor; by default under SGD's weight decay, and AdamW's while the rate decays)":
        dict(radial="inward"),
    "radial keep (jumps as predicted: the defaults before radial=\"auto\")": dict(radial="keep"),
    "radial undo (every radial part of every jump undone)": dict(radial="undo"),
    "drift 1.5 (jumps only where the ring's path drifts)": dict(drift=1.5),
    "drift 2 (jumps only where the ring's path drifts)": dict(drift=2.0),
    "clock (on schedule-free, a merge advances the averaging clock by the steps it skips; benchmarks.sf_harm's probe)":
        dict(clock=True),
    "backtest 1 (jumps undone where they move less per interval than DMD's one-interval backtest missed by; benchmarks.backtest's probe)":
        dict(backtest=1.0),
    "backtest 0.5 (jumps undone where they move less per interval than half the backtest's miss)": dict(backtest=0.5),
    "saturation 0.3 (on Lion, jumps undone where the last interval moved less than 0.3 of its steps' most; benchmarks.saturation's probe)":
        dict(saturation=0.3),
    "saturation 0.5 (on Lion, jumps undone where the last interval moved less than half its steps' most)": dict(saturation=0.5),
    "saturation 0.5 with tau 4 (both at once)": dict(saturation=0.5, tau=4),
    "interval mean (snapshots are each interval's mean weights; benchmarks.interval_mean's probe)": dict(interval_mean=True),
    "loss hold 2 (no prediction while the interval's loss is over twice its lowest)": dict(loss_hold=2.0),
    "loss hold 3 (no prediction while the interval's loss is over 3 times its lowest)": dict(loss_hold=3.0),
    "no moment filter (moment_ratio=None, the default before 2026-12-02 14:00)": dict(moment_ratio=None),
    "as an unmeasured optimizer (no moment filter, jumps as predicted)": dict(moment_ratio=None, radial="keep"),
    "as an optimizer PDT takes for none it measured (no moment or saturation filter, jumps as predicted: what "
    "bitsandbytes' Lion got before 2026-12-07)": dict(moment_ratio=None, radial="keep", saturation=None),
    "moment ratio 0.3 (jumps only where Adam's abs(m)/sqrt(v) is at least 0.3)": dict(moment_ratio=0.3),
    "moment ratio 0.5 (jumps only where Adam's abs(m)/sqrt(v) is at least 0.5)": dict(moment_ratio=0.5),
    "first moment 0 (Adam's first moment of the merged elements zeroed at each merge; benchmarks.adam_moments's probe)":
        dict(first_moment=0.0),
    "first moment 0.5 (Adam's first moment of the merged elements halved at each merge)": dict(first_moment=0.5),
    "rate x0.5 (PDT at half the baseline's tuned learning rate)": dict(lr_scale=0.5),
    "rate x0.7 (PDT at 0.7 times the baseline's tuned learning rate)": dict(lr_scale=0.7),
    "rate x1.4 (PDT at 1.4 times the baseline's tuned learning rate)": dict(lr_scale=1.4),
}
"""Variant name -> PDTConfig fields set on top of the defaults (and the task's ``snap_every``);
``verify=True`` verifies every merge on a fixed batch of training samples (``benchmarks.ttb.verified``);
``stop_at=f``: no prediction after the first f of the task's steps (where in a run merges help or harm);
``tangential=True``: :class:`benchmarks.sf_harm.TangentialPDT` (a probe, not a PDTConfig field);
``progress_hold=True``: :class:`benchmarks.plateau.ProgressHoldPDT` (a probe);
``interval_mean=True``: :class:`benchmarks.interval_mean.IntervalMeanPDT` (a probe);
``clock=True``: :class:`benchmarks.sf_harm.ClockPDT` (a probe: merges move schedule-free's averaging clock);
``backtest=f``: :class:`benchmarks.backtest.BacktestPDT` at that factor (a probe: the ring's fit residual as noise);
``saturation=b``: :class:`benchmarks.saturation.SaturationPDT` at that bar (a probe: a sign step's share kept, as noise);
``first_moment=f``: :class:`benchmarks.adam_moments.MomentScalingPDT` (a probe: Adam's first moment of merged elements times f);
``lr_scale=c``: PDT trains at c times the rate the baseline was tuned to (is PDT's best rate the
baseline's?)."""

RUN_FIELDS = ("verify", "stop_at", "tangential", "lr_scale", "progress_hold", "interval_mean", "clock", "backtest",
              "saturation", "first_moment", "forget_only")
"""Variant fields that set how a run is made, not PDTConfig fields."""

BEYOND_THE_WRAPPER = ("stop_at", "lr_scale")
"""Of :data:`RUN_FIELDS`, those :func:`run_variant` acts on outside :func:`wrap_of` (when predictions
stop, the rate trained at): a benchmark that takes only the wrapper cannot run them."""


def wrap_of(task: Task, snap_every: int, fields: dict) -> Wrap:
    """How a variant wraps the task's optimizer."""
    # saturation=None is PDTConfig's (the filter off); a bar runs benchmarks.saturation's probe
    options = {key: value for key, value in fields.items() if key not in RUN_FIELDS or (key == "saturation" and value is None)}
    if fields.get("verify"):
        return verified(task, snap_every, **options)
    if fields.get("tangential"):
        return lambda opt: TangentialPDT(opt, snap_every=snap_every, **options)
    if fields.get("progress_hold"):
        return lambda opt: ProgressHoldPDT(opt, snap_every=snap_every, **options)
    if fields.get("interval_mean"):
        return lambda opt: IntervalMeanPDT(opt, snap_every=snap_every, **options)
    if fields.get("clock"):
        return lambda opt: ClockPDT(opt, snap_every=snap_every, **options)
    if fields.get("forget_only"):
        return lambda opt: ForgetOnlyPDT(opt, snap_every=snap_every, **options)
    if fields.get("backtest"):
        return lambda opt: BacktestPDT(opt, snap_every=snap_every, factor=fields["backtest"], **options)
    if fields.get("first_moment") is not None:
        return lambda opt: MomentScalingPDT(opt, snap_every=snap_every, factor=fields["first_moment"], **options)
    if fields.get("saturation"):
        return lambda opt: SaturationPDT(opt, snap_every=snap_every, bar=fields["saturation"], **options)
    return lambda opt: pdt.PDT(opt, snap_every=snap_every, **options)


def run_variant(task: Task, snap_every: int, fields: dict, *, seed: int, method: str, lr: float) -> tuple:
    """Train ``task`` with PDT set as ``fields`` say; with ``stop_at``, predictions stop (only
    snapshots are taken) once that fraction of the task's steps is done."""
    wrap = wrap_of(task, snap_every, fields)
    lr = lr * fields.get("lr_scale", 1.0)
    stop_at = fields.get("stop_at")
    if stop_at is None:
        return train(task, wrap, seed=seed, method=method, lr=lr)
    made: list = []
    steps = [0]

    def wrapped(opt):
        made.append(wrap(opt))
        return made[0]

    def progress(n: int) -> None:
        steps[0] += n
        if steps[0] == math.ceil(stop_at * task.steps):
            made[0].config.predict_every = 2**62  # the next prediction boundary never comes

    return train(task, wrapped, seed=seed, method=method, lr=lr, progress=progress)


EXTRA_PEER_LRS = {
    ("char transformer / AdamW", "schedule-free"): 0.048, ("mnist1d ViT / AdamW", "schedule-free"): 0.008,
    ("char transformer / AdamW", "Lookahead (k=5, alpha=0.5)"): 0.012, ("char transformer / AdamW", MUON): 0.024,
    ("mnist1d ViT / AdamW", MUON): 0.0005,
    ("digits MLP / LAMB", "Lookahead (k=5, alpha=0.5)"): 0.01, ("digits MLP / Shampoo", "Lookahead (k=5, alpha=0.5)"): 25.6,
}
"""Peer cases ``benchmarks.tau_ramp`` does not run, at the rate ``benchmarks.ttb --peers`` tuned
(the character transformer: section "Time to baseline, peers, tasks matching 'char transformer'",
2026-11-29 20:38; the ViT: "Time to baseline, core and peers, on an Intel Xeon with the moment
filter", 2026-12-02 16:47, as on the AMD EPYC that morning; the character transformer on Lookahead:
the same run; Muon: "Time to baseline, peers, tasks matching 'mnist1d ViT', 'char transformer', peers
matching 'Muon', on an AMD EPYC", 2026-12-03 23:29; LAMB and Shampoo on Lookahead: "Time to baseline",
2026-11-30 21:22)."""


COSINE_PEER_LRS = {("char transformer / AdamW", MUON): 0.048, ("mnist1d ViT / AdamW", MUON): 0.032}
"""Peer cases on a per-step cosine schedule, at the rate ``benchmarks.ttb --peers --peer Muon
--peer-schedule cosine`` tuned (sections "..., peers on a cosine schedule", runs of 2026-12-04
00:04 and 00:58)."""


def variant_cases(only: str) -> dict[str, tuple]:
    """The cases of ``benchmarks.tau_ramp``, :data:`EXTRA_PEER_LRS` and :data:`COSINE_PEER_LRS`
    whose title contains ``only``."""
    out = selected(only)
    suite = task_suite(quick=False)
    extra = [(name, peer, lr, "constant") for (name, peer), lr in EXTRA_PEER_LRS.items()]
    extra += [(name, peer, lr, "cosine") for (name, peer), lr in COSINE_PEER_LRS.items()]
    for name, peer, lr, schedule in extra:
        title = f"{name}: PDT on {peer}" + ("" if schedule == "constant" else f", {schedule}")
        if only in title:
            task, snap_every = suite[name]
            peer_task = dataclasses.replace(task, make_optimizer=peers(name, task)[peer], schedule=schedule)
            out[title] = (peer_task, snap_every, lr, peer)
    return out


def _decoupled(kind: type) -> Callable:
    """make(params, lr, adamw): ``kind`` (torch's NAdam or RAdam) with the AdamW's betas and weight
    decay, decoupled."""
    return lambda params, lr, adamw: kind(params, lr=lr, betas=adamw.defaults["betas"],
                                          weight_decay=adamw.defaults["weight_decay"], decoupled_weight_decay=True)


def _lion(params, lr: float, adamw: torch.optim.AdamW) -> torch.optim.Optimizer:
    import pytorch_optimizer as po

    return po.Lion(params, lr=lr, weight_decay=10 * adamw.defaults["weight_decay"])


IN_PLACE_OF_ADAMW: dict[str, tuple[str, Callable]] = {
    "nadamw": ("NAdam with decoupled decay", _decoupled(torch.optim.NAdam)),
    "radamw": ("RAdam with decoupled decay", _decoupled(torch.optim.RAdam)),
    "lion": ("Lion with 10 times the weight decay", _lion),
    "adamw8bit": ("torchao's AdamW8bit", torchao_adamw8bit),
    "bnb-adamw8bit": ("bitsandbytes' AdamW8bit", bitsandbytes_adamw8bit),
    "bnb-lion8bit": ("bitsandbytes' Lion8bit with 10 times the weight decay", bitsandbytes_lion8bit),
}
"""``--optimizer`` name -> (how a section's title names it, make(params, lr, the AdamW it
replaces)): torch's NAdam and RAdam with AdamW's betas and weight decay, decoupled (Adam's
relatives, whose moments PDT reads like Adam's), and pytorch-optimizer's Lion (sign of an
interpolated momentum; no second moment) at its own betas and ten times AdamW's decoupled weight
decay, as its authors pair a rate 3-10 times smaller with a decay 3-10 times larger; torchao's
AdamW8bit (AdamW with its moments kept in 8 bits, blocks of 256; tensors under 4096 elements
keep float32 moments) with AdamW's betas, eps and decay; bitsandbytes' AdamW8bit likewise (the
same blocks and threshold, its own kernels), and its Lion8bit as Lion above, its momentum in 8 bits."""


def in_place_of_adamw(make_optimizer: Callable, name: str) -> Callable:
    """``make_optimizer``, which must make an AdamW, as :data:`IN_PLACE_OF_ADAMW`'s ``name``."""
    def make(params, lr):
        params = list(params)
        adamw = make_optimizer(params, lr)
        if type(adamw) is not torch.optim.AdamW:
            raise ValueError(f"--optimizer {name}: the case trains {type(adamw).__name__}, not AdamW; "
                             "choose AdamW cases with --only")
        return IN_PLACE_OF_ADAMW[name][1](params, lr, adamw)
    return make


def longer(task: Task, factor: float) -> Task:
    """``task`` trained ``factor`` times as many steps, evaluated at the same fraction of its
    budget (does PDT pay more on a longer run of the same model and data?)."""
    steps = round(task.steps * factor)
    if steps < 1:
        raise ValueError(f"--length: {factor!r} leaves {task.name} no step; use a factor of at least {1 / task.steps:g}")
    return dataclasses.replace(task, steps=steps, eval_every=max(1, round(task.eval_every * factor)))


def loss_change(loss: float, baseline: float) -> str:
    """A run's final loss against the baseline's, in percent; where the baseline ended at
    exactly 0 (Shampoo on digits can), the run's own loss."""
    if baseline == 0:
        return f"{loss:.1e} (baseline 0)"
    return f"{(loss / baseline - 1) * 100:+.1f}"


def case_rows(title: str, case: tuple, variants: dict[str, dict], seeds: range) -> list[str]:
    """The table rows of one case: per-seed step ratios and accuracy changes of every variant."""
    task, snap_every, lr, _ = case
    ratios: dict[str, list[float | None]] = {name: [] for name in variants}
    accuracy: dict[str, list[float]] = {name: [] for name in variants}
    merges: dict[str, int] = {name: 0 for name in variants}
    final_loss: dict[str, list[str]] = {name: [] for name in variants}
    for seed in seeds:
        baseline, _ = train(task, lambda opt: opt, seed=seed, method="baseline", lr=lr)
        for name, fields in variants.items():
            run, opt = run_variant(task, snap_every, fields, seed=seed, method=name, lr=lr)
            ratios[name].append(speedup(baseline, run)[0])
            accuracy[name].append((run.test_accuracy[-1] - baseline.test_accuracy[-1]) * 100)
            final_loss[name].append(loss_change(run.final_loss, baseline.final_loss))
            merges[name] += opt.stats.merges
            print(f"{title}, seed {seed}, {name}: x {ratios[name][-1]}, accuracy {accuracy[name][-1]:+.1f}, "
                  f"final loss {final_loss[name][-1]} % (the baseline's {baseline.final_loss:.4g})", flush=True)
    rows = []
    for name, values in ratios.items():
        losses = ", ".join(final_loss[name])
        rows.append(f"| {title}, lr {lr:g} | {name} | {seed_cells(values, accuracy[name])} | {losses} | {merges[name]} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, first-seed + 1, ...")
    parser.add_argument("--only", default="", help="run only the cases whose title contains this")
    parser.add_argument("--lr", type=float, default=None, help="train every case at this learning rate instead of "
                                                                 "the rate benchmarks.ttb tuned for it (e.g. one another "
                                                                 "machine's tuning chose)")
    parser.add_argument("--length", type=float, default=1.0,
                        help="train every case this many times as long (steps and the evaluation grain scale together; "
                             "a cosine schedule decays over the longer run; the data stay the same)")
    parser.add_argument("--variants", default="", help="comma-separated texts: run only the variants whose name "
                                                       "contains one (the default always runs)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="set every param group's weight_decay to this (the learning rate stays the tuned one)")
    parser.add_argument("--optimizer", choices=sorted(IN_PLACE_OF_ADAMW), default=None,
                        help="train AdamW cases with this optimizer instead, at the same rate (IN_PLACE_OF_ADAMW; with --lr for another)")
    args = parser.parse_args()
    variants = chosen(VARIANTS, args.variants, always="default")
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = ["| case | PDT | steps × per seed (baseline steps / PDT's to the baseline's final loss) | median [min–max] | "
            "seeds below 0.98 or never | final accuracy − the baseline's, per seed (points) | "
            "final training loss against the baseline's, per seed (%) | merges (all seeds) |",
            "|---|---|---|---|---|---|---|---|"]
    for title, case in variant_cases(args.only).items():
        if args.lr is not None:
            case = (case[0], case[1], args.lr, *case[3:])
        if args.length != 1.0:
            case = (longer(case[0], args.length), *case[1:])
        if args.weight_decay is not None:
            case = (dataclasses.replace(case[0], make_optimizer=with_weight_decay(case[0].make_optimizer, args.weight_decay)),
                    *case[1:])
        if args.optimizer is not None:
            case = (dataclasses.replace(case[0], make_optimizer=in_place_of_adamw(case[0].make_optimizer, args.optimizer)),
                    *case[1:])
        rows += case_rows(title, case, variants, range(args.first_seed, args.first_seed + args.seeds))
        print("\n".join(rows[-len(variants):]), flush=True)
    seeds = f"{args.seeds} seeds" + (f" from seed {args.first_seed}" if args.first_seed else "")
    intro = (f"{seeds} per case, every run of a seed from the same initial weights and batches; × = the "
             "baseline's steps over PDT's to the baseline's final training loss (floored at 1e-6), first evaluation "
             "at it, as benchmarks.ttb counts them. Variants set these fields on top of the defaults (PDTConfig's, "
             f"or how the run is made: {', '.join(RUN_FIELDS)}): "
             + "; ".join(f"{name}: {fields or 'none'}" for name, fields in variants.items())
             + f". Total benchmark time {time.perf_counter() - started:.0f} s.")
    part = (f", cases matching {args.only!r}" if args.only else "") + (f", variants matching {args.variants!r}"
                                                                       if args.variants else "")
    part += f", lr {args.lr:g}" if args.lr is not None else ""
    part += f", seeds from {args.first_seed}" if args.first_seed else ""
    part += f", {args.length:g} times as long" if args.length != 1.0 else ""
    part += f", weight decay {args.weight_decay:g}" if args.weight_decay is not None else ""
    part += f", {IN_PLACE_OF_ADAMW[args.optimizer][0]} for AdamW" if args.optimizer else ""
    write_section(f"PDT variants against the defaults on every task{part} (benchmarks/variants.py)",
                  intro + "\n\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
