"""Time to baseline: PDT against a tuned baseline, its own ablations and simple controls.

For each task: sweep the baseline learning rate (seed 0), keep the best; then train every
method from the same initial weights and data order, for several seeds, and report the time
(steps, and wall seconds with every overhead included) to reach the tuned baseline's final
training loss (TTB-Loss) and best test accuracy (TTB-Acc). Each task is also run under a
cosine schedule (per step, to zero) with its own tuned baseline, and PDT's defaults are timed
on each schedule against each baseline.

    python -m benchmarks.ttb            # full suite, writes RESULTS.md and PNG plots
    python -m benchmarks.ttb --core     # baselines and PDT's defaults only, both schedules
    python -m benchmarks.ttb --core --cosine-only   # only the cosine sections
    python -m benchmarks.ttb --peers    # only the peers (schedule-free, Lookahead; Muon on the AdamW transformers)
    python -m benchmarks.ttb --peers --peer Muon --peer-schedule cosine   # a peer on a per-step cosine schedule
    python -m benchmarks.ttb --core --peers   # both: what issues 11 and 12 measure, without the ablations
    python -m benchmarks.ttb --peers --only ViT LAMB   # tasks whose name contains one of these
    python -m benchmarks.ttb --peers --peer schedule-free   # one peer only
    python -m benchmarks.ttb --workers 2   # two tasks at a time, one per core (a full run in about half the time)
    python -m benchmarks.ttb --workers 2 --resume   # keep the units (a task, or its peers) a stopped run finished, measure the rest
    python -m benchmarks.ttb --quick    # smoke run (< 1 min), prints only
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.util
import io
import math
import multiprocessing
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn
from torch.optim import Optimizer

import pdt_compile as pdt
from pdt_compile import tasks
from pdt_compile.experiment import (LOSS_FLOOR, Run, Task, Training, build_optimizer, loss_target, needs_model,
                                    schedule_free, speedup, train, train_in_lockstep, verification_loss)

from .controls import LinearExtrapolation
from .low_bit import bitsandbytes_adamw8bit
from .report import cpu_label, read_section, remove_section, revision, write_section

HERE = Path(__file__).parent


def task_suite(quick: bool) -> dict[str, tuple[Task, int]]:
    """Task -> (task, snap_every). The paper snapshots once per epoch; the transformer's
    budget holds few epochs, so it snapshots every 30 steps."""
    import pytorch_optimizer as po

    if quick:
        digits = tasks.digits_mlp(steps=600)
        return {"digits MLP / SGD": (digits, digits.steps_per_epoch)}
    digits = tasks.digits_mlp(steps=1800)
    mnist = tasks.mnist1d_cnn(steps=2400)
    chars = tasks.char_transformer(steps=1000)
    vit = tasks.mnist1d_vit(epochs=60)
    lamb = dataclasses.replace(digits, name="digits-mlp-lamb", lr=0.01,
                               make_optimizer=lambda params, lr: po.Lamb(params, lr=lr))
    shampoo = dataclasses.replace(digits, name="digits-mlp-shampoo", lr=0.05,
                                  make_optimizer=lambda params, lr: po.Shampoo(params, lr=lr, momentum=0.9))
    return {
        "digits MLP / SGD": (digits, digits.steps_per_epoch),
        "mnist1d CNN / SGD-momentum": (mnist, mnist.steps_per_epoch),
        "char transformer / AdamW": (chars, 30),
        "mnist1d ViT / AdamW": (vit, vit.steps_per_epoch),
        "digits MLP / LAMB": (lamb, digits.steps_per_epoch),
        "digits MLP / Shampoo": (shampoo, digits.steps_per_epoch),
    }


def add_test_samples_argument(parser: argparse.ArgumentParser) -> None:
    """``--test-samples``, as every time-to-baseline benchmark takes it (:func:`on_test_samples`)."""
    parser.add_argument("--test-samples", type=int, default=None,
                        help="measure the mnist1d tasks' test accuracy on this many samples generated apart instead of "
                             "the standard 1000, to resolve smaller differences (the other tasks keep their test sets)")


def on_test_samples(name: str, task: Task, samples: int | None) -> Task:
    """The suite's task ``name`` with its test accuracy measured on ``samples`` mnist1d samples
    generated apart from its training set (:func:`pdt_compile.tasks.mnist1d_test_set`): 1000
    resolve 0.1 point per sample, and seeds of one method differ by a point. Unchanged where
    ``samples`` is None or the task is not mnist1d's (digits and the text have no more)."""
    if samples is None or not name.startswith("mnist1d"):
        return task
    test_x, test_y = tasks.mnist1d_test_set(samples)
    return dataclasses.replace(task, test_x=test_x, test_y=test_y)


def verified(task: Task, snap_every: int, **options) -> Callable:
    """PDT's defaults (and ``options``) with every merge verified on a fixed batch of 256
    training samples."""
    return needs_model(lambda opt, model: pdt.PDT(opt, snap_every=snap_every, verify=verification_loss(task, model),
                                                  **options))


def methods(snap_every: int, quick: bool) -> dict[str, Callable]:
    """Method name -> wrap(optimizer). Every PDT-like method uses the same schedule."""
    import pytorch_optimizer as po

    schedule = dict(snap_every=snap_every)
    unfiltered = dict(snap_every=snap_every, tau=5, trend=False)  # the paper's tau, no trend filter
    out = {
        "baseline (tuned lr)": lambda opt: opt,
        "PDT paper config (paper rule, Gavish-Donoho rank)": lambda opt: pdt.PDT(opt, pdt.PDTConfig.paper(snap_every)),
        "PDT reference rule, Gavish-Donoho rank, tau 5": lambda opt: pdt.PDT(opt, rule="reference", rank="gavish_donoho", **unfiltered),
        "PDT reference, full rank, tau 5 (previous default)": lambda opt: pdt.PDT(opt, rule="reference", rank="full", **unfiltered),
        "PDT reference, full rank, tau 5, affine": lambda opt: pdt.PDT(opt, rule="reference", rank="full", dynamics="affine", **unfiltered),
        "PDT reference, full rank, tau 5, adaptive tau": lambda opt: pdt.PDT(opt, rule="reference", rank="full", adaptive=True, **unfiltered),
        "PDT reference, full rank, tau 5, trend filter": lambda opt: pdt.PDT(opt, **{**unfiltered, "trend": True}),
        "PDT default (reference, full rank, trend filter, tau 8)": lambda opt: pdt.PDT(opt, **schedule),
        UNCHECKED: lambda opt: pdt.PDT(opt, gradient_limit=None, **schedule),
        "PDT default + adaptive tau": lambda opt: pdt.PDT(opt, adaptive=True, **schedule),
        FIXED_TAU: lambda opt: pdt.PDT(opt, adaptive=False, **schedule),
        "DMD no mask, full rank": lambda opt: pdt.PDT(opt, rule="none", rank="full", **unfiltered),
        "DMD no mask, rank 3": lambda opt: pdt.PDT(opt, rule="none", rank=3, **unfiltered),
        "linear extrapolation": lambda opt: LinearExtrapolation(opt, **unfiltered),
        "Lookahead (k=5, alpha=0.5)": lambda opt: po.Lookahead(opt, k=5, alpha=0.5),
    }
    if quick:
        keep = ("baseline (tuned lr)", "PDT default (reference, full rank, trend filter, tau 8)", "linear extrapolation")
        out = {k: v for k, v in out.items() if k in keep}
    return out


def peers(name: str, task: Task) -> dict[str, Callable]:
    """What a user would pick instead of PDT on ``task``: a schedule-free optimizer (the
    AdamW variant for AdamW tasks, else SGD with momentum 0.9; one epoch of warmup),
    Lookahead on the task's optimizer, and on the AdamW transformers Muon (:func:`muon`) and,
    where installed, bitsandbytes' 8-bit AdamW (what users pick to save memory).
    Peer name -> make_optimizer(params, lr), or (Muon) make_optimizer(model, lr)."""
    import pytorch_optimizer as po

    out = {
        "schedule-free": schedule_free(task, adamw="AdamW" in name),
        "Lookahead (k=5, alpha=0.5)": lambda params, lr: po.Lookahead(task.make_optimizer(params, lr), k=5, alpha=0.5),
    }
    if "AdamW" in name:
        out[MUON] = needs_model(lambda model, lr: muon(model, lr, task))
        if importlib.util.find_spec("bitsandbytes") is not None:
            adamw = lambda: task.make_optimizer([torch.zeros(1, requires_grad=True)], task.lr)
            out[EIGHT_BIT] = lambda params, lr: bitsandbytes_adamw8bit(params, lr, adamw())
    return out


EIGHT_BIT = "AdamW8bit (bitsandbytes; the task's betas and decay)"


MUON = "Muon (hidden matrices; AdamW at lr/10 on the rest)"


def muon(model: nn.Module, lr: float, task: Task) -> Optimizer:
    """pytorch-optimizer's Muon as a transformer is trained with it: Newton-Schulz
    orthogonalised momentum (0.95, Nesterov) at ``lr`` on the 2-D weights of the blocks
    (``model.blocks``), AdamW (betas 0.9, 0.95) at ``lr / 10`` with the task's AdamW weight
    decay on the rest (embeddings, positions, norms, biases, the head). One tuned rate with a
    fixed ratio: Muon's own defaults (0.02 and 3e-4) and modded-nanogpt's (0.05 against
    0.008 for the head) bracket it."""
    import pytorch_optimizer as po

    hidden = [p for p in model.blocks.parameters() if p.ndim >= 2]
    chosen = {id(p) for p in hidden}
    rest = [p for p in model.parameters() if id(p) not in chosen]
    decay = task.make_optimizer([torch.zeros(1, requires_grad=True)], task.lr).defaults.get("weight_decay", 0.0)
    return po.Muon([dict(params=hidden, use_muon=True), dict(params=rest, use_muon=False)], lr=lr,
                   adamw_lr=lr / 10, adamw_wd=decay)


def peer_sections(name: str, task: Task, snap_every: int, seeds: int, quick: bool, only: str | None = None,
                  schedule: str = "constant") -> list[str]:
    """For each peer (or the peers whose name contains ``only``): tune its learning rate like
    the baseline's, then time the peer alone, PDT's defaults stacked on it, those with tau
    fixed (``adaptive=False``, the default before 2026-12-05; from then on, until that date
    ``setback_limit=0.3``) and without the gradient check, and PDT verifying every merge on a
    fixed batch of training samples, to the tuned peer's final training loss. ``schedule``
    ``"cosine"``: every rate follows a per-step cosine to zero, for the peers that take a
    schedule (not schedule-free optimizers, which are left out)."""
    sections = []
    for peer, make_optimizer in peers(name, task).items():
        if only and only not in peer:
            continue
        peer_task = dataclasses.replace(task, make_optimizer=make_optimizer, schedule=schedule)
        if schedule != "constant" and evaluation_moves_weights(peer_task):
            continue
        if quick:
            lr, sweep = task.lr, [(task.lr, float("nan"))]
        else:
            lr, sweep = tune_lr(peer_task, sweep_factors(name))
        suite = {f"{peer} (tuned lr)": lambda opt: opt,
                 f"PDT default on {peer}": lambda opt: pdt.PDT(opt, snap_every=snap_every),
                 f"PDT default with adaptive=False (tau fixed) on {peer}": lambda opt: pdt.PDT(opt, snap_every=snap_every, adaptive=False),
                 f"PDT default with gradient_limit=None on {peer}": lambda opt: pdt.PDT(opt, snap_every=snap_every, gradient_limit=None),
                 f"PDT verified (256 training samples, verify_backoff=0) on {peer}": verified(peer_task, snap_every, verify_backoff=0)}
        runs = seed_major(peer_task, suite, seeds, lr)
        title = f"{name}: PDT stacked on {peer}" + ("" if schedule == "constant" else f", {schedule} schedule")
        sections.append(summarise(title, runs, lr, sweep, snap_every, peer_task))
    return sections


DEFAULT = "PDT default (reference, full rank, trend filter, tau 8)"
UNCHECKED = "PDT default with gradient_limit=None (no gradient check)"
BASELINE = "baseline (tuned lr)"
VERIFIED = "PDT default + verify (256 training samples)"
UNHELD = "PDT default + verify, verify_backoff=0 (every boundary verified)"
FIXED_TAU = "PDT default with adaptive=False (tau fixed: the default before 2026-12-05)"
NO_WINDOW = "PDT default with decay_window=None (merges at every rate), cosine"


def sweep_factors(name: str) -> list[float]:
    return [0.5, 1.0, 2.0] if "transformer" in name else [0.25, 0.5, 1.0, 2.0, 4.0]


def schedule_sections(name: str, task: Task, snap_every: int, seeds: int, constant: dict[str, list[Run]] | None,
                      constant_lr: float | None, ablations: bool = True) -> list[str]:
    """The cosine schedule (per step, to zero) beside the constant one: tune the cosine
    baseline's learning rate, run it and PDT's defaults on it (with and without verified
    merges, and without the decay window; with ``ablations``, also verified merges without
    backoff and ``lr_horizon`` flipped), and time PDT on each schedule against each tuned
    baseline (the better one is the baseline that counts; skipped without ``constant``)."""
    cosine_task = dataclasses.replace(task, schedule="cosine")
    lr, sweep = tune_lr(cosine_task, sweep_factors(name))
    flipped = not pdt.PDTConfig(snap_every=1).lr_horizon
    suite = {"baseline, cosine (tuned lr)": lambda opt: opt, "PDT default, cosine": lambda opt: pdt.PDT(opt, snap_every=snap_every),
             "PDT default + verify, cosine": verified(cosine_task, snap_every),
             "PDT default with gradient_limit=None, cosine": lambda opt: pdt.PDT(opt, snap_every=snap_every, gradient_limit=None),
             NO_WINDOW: lambda opt: pdt.PDT(opt, snap_every=snap_every, decay_window=None)}
    if ablations:
        suite["PDT default + verify, verify_backoff=0, cosine"] = verified(cosine_task, snap_every, verify_backoff=0)
        suite[f"PDT default with lr_horizon={flipped}, cosine"] = lambda opt: pdt.PDT(opt, snap_every=snap_every,
                                                                                    lr_horizon=flipped)
    cosine = seed_major(cosine_task, suite, seeds, lr)
    table = summarise(f"{name}: cosine schedule", cosine, lr, sweep, snap_every, cosine_task)
    if constant is None:
        return [table]
    baselines = {"constant": constant[BASELINE], "cosine": cosine["baseline, cosine (tuned lr)"]}
    pdt_runs = {"constant": constant[DEFAULT], "cosine": cosine["PDT default, cosine"],
                "constant, verified": constant[VERIFIED], "cosine, verified": cosine["PDT default + verify, cosine"],
                "cosine, decay_window=None": cosine[NO_WINDOW]}
    finals = {k: statistics.median(r.final_loss for r in v) for k, v in baselines.items()}
    targets = {k: statistics.median(loss_target(r) for r in v) for k, v in baselines.items()}
    reach = {k: statistics.median(r.time_to(loss_target(r))[1] or math.inf for r in v) for k, v in baselines.items()}
    better = min(finals, key=lambda k: (targets[k], reach[k]))  # at the floor alike: the sooner there
    lines = [f"#### {name}: which schedule, and PDT against each", "",
             f"Tuned baselines: constant lr {constant_lr:g}, final loss {finals['constant']:.4g}; cosine lr {lr:g}, "
             f"final loss {finals['cosine']:.4g}. The better baseline is **{better}**.", "",
             "| PDT default on (+ verify) | TTB-Loss wall × vs constant baseline | TTB-Loss wall × vs cosine baseline | "
             "TTB-Loss steps × vs constant | TTB-Loss steps × vs cosine | final acc | baseline final acc (same schedule) |",
             "|---|---|---|---|---|---|---|"]
    for schedule, runs in pdt_runs.items():
        versus = {k: [speedup(b, r, "loss") for b, r in zip(v, runs)] for k, v in baselines.items()}
        final = [r.test_accuracy[-1] * 100 for r in runs if not r.diverged]
        base_final = [r.test_accuracy[-1] * 100 for r in baselines[schedule.split(",")[0]] if not r.diverged]
        lines.append(
            f"| {schedule} | {spread([t for _, t in versus['constant']])} | {spread([t for _, t in versus['cosine']])} | "
            f"{spread([s for s, _ in versus['constant']])} | {spread([s for s, _ in versus['cosine']])} | "
            f"{spread(final, '{:.1f}')} | {spread(base_final, '{:.1f}')} |"
        )
    return [table, "\n".join(lines)]


COMPILED = {  # compiled row -> the eager method it compiles; on the main three tasks only
    "baseline, torch.compile (Inductor)": "baseline (tuned lr)",
    "PDT default, pdt.compile (Inductor)": "PDT default (reference, full rank, trend filter, tau 8)",
}
COMPILED_TASKS = ("digits MLP / SGD", "mnist1d CNN / SGD-momentum", "char transformer / AdamW")


def tune_lr(task: Task, factors: list[float], extend: int = 12) -> tuple[float, list[tuple[float, float]]]:
    """Best baseline learning rate (lowest final training loss, seed 0). The sweep doubles
    (or halves) past its edge, up to ``extend`` times, while the best value sits on the edge
    (6 times until 2026-11-29 18:00, which left schedule-free on the LAMB task at its edge);
    :func:`summarise` says when it still does. A sweep compares final losses only, so its runs
    skip the evaluations in between (on the character transformer they take longer than the
    training), unless evaluating moves the weights: a schedule-free optimizer's ``eval()`` and
    ``train()`` do, and its sweep then follows the timed runs' trajectory, evaluations and all."""
    results: dict[float, float] = {}
    timed = task
    if not evaluation_moves_weights(task):
        task = dataclasses.replace(task, eval_every=task.steps)

    def measure(lr: float) -> None:
        run, _ = train(task, lambda opt: opt, seed=0, method="sweep", lr=lr)
        results[lr] = max(run.final_loss, LOSS_FLOOR) if not run.diverged else float("inf")

    for factor in factors:
        measure(task.lr * factor)
    for _ in range(extend):
        best = min(results, key=results.get)
        if best == max(results):
            measure(best * 2)
        elif best == min(results):
            measure(best / 2)
        else:
            break
    return fastest_to_floor(timed, results), sorted(results.items())


def fastest_to_floor(task: Task, results: dict[float, float]) -> float:
    """The best rate of a sweep's ``results``: the lowest final loss; among several rates at
    :data:`LOSS_FLOOR`, the one that reaches it in the fewest steps (each run again with the
    task's evaluations, seed 0), so the baseline is the fastest of them, not the first found."""
    floored = sorted(lr for lr, loss in results.items() if loss <= LOSS_FLOOR)
    if len(floored) < 2:
        return min(results, key=results.get)
    steps = {lr: train(task, lambda opt: opt, seed=0, method="sweep", lr=lr)[0].time_to(LOSS_FLOOR)[0] for lr in floored}
    return min(floored, key=lambda lr: (steps[lr] is None, steps[lr] or 0, lr))


def evaluation_moves_weights(task: Task) -> bool:
    """Whether ``task``'s optimizer switches weights for evaluation (``eval()``/``train()``, as
    schedule-free optimizers do): the float round trip then changes the trajectory, so where
    a run evaluates changes where it ends."""
    return callable(getattr(build_optimizer(task, task.make_model(), task.lr), "eval", None))


def at_edge(lr: float, sweep: list[tuple[float, float]]) -> bool:
    """Whether ``lr`` is the lowest or highest rate of a sweep of several: a better rate may lie beyond."""
    swept = [rate for rate, _ in sweep]
    return len(swept) > 1 and lr in (min(swept), max(swept))


def spread(values: list[float | None], fmt: str = "{:.2f}") -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "never"
    text = fmt.format(statistics.median(present))
    if len(present) > 1:
        text += f" [{fmt.format(min(present))}–{fmt.format(max(present))}]"
    missing = len(values) - len(present)
    return text + (f" ({missing} never)" if missing else "")


SHORT_RUN_SECONDS = 5.0
TIMING_REPEATS = 3


def lockstep(task: Task, methods: list[tuple[str, Callable]], *, seed: int, lr: float) -> list[Run]:
    """``methods`` (name, wrap) on ``task`` at ``seed``, trained in lock-step
    (:func:`~pdt_compile.experiment.train_in_lockstep`): one step of each in turn."""
    trainings = [Training(task, wrap, seed=seed, method=method, lr=lr) for method, wrap in methods]
    return [run for run, _ in train_in_lockstep(trainings)]


def timed_in_lockstep(task: Task, methods: list[tuple[str, Callable]], *, seed: int, lr: float) -> list[Run]:
    """:func:`lockstep`, trained again (all of ``methods``, in lock-step as before) up to
    ``TIMING_REPEATS`` times in all while a run's training takes under ``SHORT_RUN_SECONDS``:
    the same seed follows the same trajectory (weights, batches, merges), so only the timings
    differ, and every run keeps at each evaluation the least time a repeat took to get there,
    as timeit keeps its fastest repeat. A run of half a second is otherwise at the mercy of one
    scheduling hiccup of this VM. The whole block is repeated, never the short runs alone: a
    run trained beside fewer others has the caches to itself and steps faster (a CNN's
    schedule-free baseline repeated alone made PDT look 1.08x at 1.36x in steps, run of
    2026-11-30 13:34, discarded). A repeat that leaves the trajectory (a nondeterministic
    kernel) is not used."""
    runs = lockstep(task, methods, seed=seed, lr=lr)
    for _ in range(TIMING_REPEATS - 1):
        if all(run.seconds[-1] >= SHORT_RUN_SECONDS for run in runs):
            break
        for run, other in zip(runs, lockstep(task, methods, seed=seed, lr=lr)):
            if other.train_loss == run.train_loss:
                run.seconds = [min(a, b) for a, b in zip(run.seconds, other.seconds)]
    return runs


def rotated(items: list, start: int) -> list:
    """``items`` starting at index ``start`` (modulo their count), wrapping around: which run
    steps first in a lock-step round."""
    shift = start % len(items)
    return items[shift:] + items[:shift]


def seed_major(task: Task, methods: dict[str, Callable], seeds: int, lr: float, first_seed: int = 0) -> dict[str, list[Run]]:
    """Every method on ``task`` at ``lr``, seed by seed, each seed's methods in lock-step
    (:func:`timed_in_lockstep`: a drift in the machine's speed hits every method alike, step
    by step), training output silenced; seeds ``first_seed`` on. Seed s puts the s-th method
    first in each round of steps, so no method always steps first."""
    runs: dict[str, list[Run]] = {method: [] for method in methods}
    order = list(methods.items())
    with contextlib.redirect_stdout(io.StringIO()):
        for seed in range(first_seed, first_seed + seeds):
            first = rotated(order, seed)
            for (method, _), run in zip(first, timed_in_lockstep(task, first, seed=seed, lr=lr)):
                runs[method].append(run)
    return runs


def summarise(name: str, runs: dict[str, list[Run]], lr: float, sweep, snap_every: int, task: Task) -> str:
    """The table of ``runs``; the first method is the baseline every × is measured against."""
    baselines = next(iter(runs.values()))
    edge = " **The best rate is at the sweep's edge: the peer or baseline may be under-tuned.**" if at_edge(lr, sweep) else ""
    lines = [f"### {name}", "",
             f"{task.steps} steps, batch {task.batch_size}, snapshot every {snap_every} steps; "
             + (f"tuned lr {lr:g} (sweep: {', '.join(f'{l:g} → {v:.4f}' for l, v in sweep)}){edge}" if sweep
                else f"lr {lr:g} (given, not tuned here)"), "",
             "| method | TTB-Loss steps × | TTB-Loss wall × | TTB-Acc steps × | TTB-Acc wall × | final acc | diverged | mean mask ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for method, method_runs in runs.items():
        loss = [speedup(b, r, "loss") for b, r in zip(baselines, method_runs)]
        acc = [speedup(b, r, "accuracy") for b, r in zip(baselines, method_runs)]
        final = [r.test_accuracy[-1] * 100 for r in method_runs if not r.diverged]
        masks = [statistics.mean(v for _, v in r.mask_ratio) for r in method_runs if r.mask_ratio]
        diverged = sum(r.diverged for r in method_runs)
        lines.append(
            f"| {method} | {spread([s for s, _ in loss])} | {spread([t for _, t in loss])} | "
            f"{spread([s for s, _ in acc])} | {spread([t for _, t in acc])} | "
            f"{spread(final, '{:.1f}') if final else '-'} | {diverged}/{len(method_runs)} | "
            f"{spread(masks, '{:.3f}') if masks else '-'} |"
        )
    return "\n".join(lines)


def plot(name: str, runs: dict[str, list[Run]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for method, method_runs in runs.items():
        run = method_runs[0]
        left.plot(run.steps, run.train_loss, label=method)
        if run.mask_ratio:
            steps, ratios = zip(*run.mask_ratio)
            right.plot(steps, ratios, marker=".", label=method)
    left.set(xlabel="step", ylabel="training loss (full train set)", yscale="log", title=f"{name}: seed 0")
    left.legend(fontsize=7)
    right.set(xlabel="step", ylabel="accepted fraction", title="mask ratio per prediction (seed 0)")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save(args: argparse.Namespace, seeds: int, started: float, sections: list[str], done: list[str] | None,
         origins: dict[str, str]) -> None:
    """Write the sections so far into RESULTS.md: after every task into a section of its own
    (``done``: the tasks finished; a run stopped early keeps what it measured, and the last
    finished run's section stays as it was), and at the end into the run's section (``done=None``).
    ``origins``: task -> the revision and run that measured it (``--resume`` joins runs)."""
    progress = "" if done is None else f" **Run in progress: {len(done)} unit(s) done ({', '.join(done)}).**"
    where = "; ".join(f"{name} ({origin})" for name, origin in origins.items())
    intro = (f"Median over {seeds} seeds [min–max]; × = baseline time / method time to the tuned baseline's final "
             f"training loss (TTB-Loss; {LOSS_FLOOR:g} where it ends below, float32's saturation, from 2026-11-30 02:18 UTC) "
             "or best test accuracy (TTB-Acc); wall time counts every training step with "
             "all PDT overhead (evaluation excluded), 1 torch thread; seeds run one after the other, each with every method "
             "of its table in lock-step, one training step of each in turn, seed s putting the s-th method first (from "
             "2026-11-30 13:20 UTC; from 2026-11-29 11:32 UTC the methods ran back to back, and before that each method's "
             "seeds did, which let a drift in this VM's speed favour one method); a run whose "
             f"training takes under {SHORT_RUN_SECONDS:g} s is repeated up to {TIMING_REPEATS} times on the same trajectory and "
             "keeps the least time to each evaluation (from 2026-11-29 11:32 UTC; under 2 s until 12:55 UTC). 'never' = did not reach the target within the "
             "budget. Compiled rows (main three tasks) include their compilation time in wall time: on these "
             "small CPU trainings (0.4 s to 26 s of training steps) it dominates, so compare their step columns. "
             "Peer sections ('PDT stacked on ...', every task): the peer's learning rate is tuned like the "
             "baseline's and × is measured against the tuned peer itself. "
             + (f"{args.workers} worker processes, one unit of work each at a time (from 2026-11-30 14:00 UTC; a unit is a task, or from "
                "2026-11-30 19:12 UTC a task's main sections or its peers). " if args.workers > 1 else "")
             + f"Where each task was measured: {where}. "
             + f"Total benchmark time {time.perf_counter() - started:.0f} s (this process).{progress}")
    title, in_progress = titles(args)
    write_section(title if done is None else in_progress, intro + "\n\n" + "\n\n".join(sections))
    if done is None:
        remove_section(in_progress)


def titles(args: argparse.Namespace) -> tuple[str, str]:
    """The RESULTS.md titles of the run ``args`` selects: finished, and in progress."""
    part = (", core and peers" if args.core and args.peers else ", peers" if args.peers else ", cosine only" if args.cosine_only
            else ", core" if args.core else "")
    part += f", tasks matching {', '.join(map(repr, args.only))}" if args.only else ""
    part += f", peers matching {args.peer!r}" if args.peer else ""  # a partial run gets its own section
    part += f", peers on a {args.peer_schedule} schedule" if args.peer_schedule != "constant" else ""
    part += ", denormals flushed" if getattr(args, "flush_denormal", False) else ""
    part += f", mnist1d test accuracy on {args.test_samples} samples" if getattr(args, "test_samples", None) else ""
    return f"Time to baseline{part} (benchmarks/ttb.py)", f"Time to baseline{part}, run in progress (benchmarks/ttb.py)"


DONE = re.compile(r"\*\*Run in progress: \d+ unit\(s\) done \((.*)\)\.\*\*")
WHERE = re.compile(r"Where each task was measured: (.*?)\. Total benchmark time")
MACHINE = re.compile(r"^Machine: .*? CPUs \((.+?), (\w+)\), ", re.M)


def resumable(section: str, names: list[str]) -> dict[str, tuple[list[str], str]]:
    """The units of work (:func:`units`) an in-progress section (its text, heading included)
    holds, each with its sections and where it was measured: unit -> (sections, origin). A
    unit's sections are the headings (``###``, ``####``) and plots that name its task (a peers
    unit: the 'PDT stacked on' ones), each with what follows up to the next. A unit whose revision
    the section does not record (written before 2026-11-30 18:00) is measured again: its code is
    unknown. An origin that does not name its CPU (written before 2026-12-03 06:30) takes the one
    of the section's Machine line, which a resumed run on another CPU replaces."""
    found = DONE.search(section)
    recorded = WHERE.search(section)
    if found is None or recorded is None:
        return {}
    origins = dict(re.findall(r"(?:^|; )([^;()]+?) \(([^()]*)\)", recorded.group(1)))
    cpu = MACHINE.search(section)
    if cpu is not None:  # a unit measured before origins named the CPU: the section's Machine line does
        named = f" on {cpu_label(*cpu.groups())}, run of"
        origins = {name: origin if " on " in origin else origin.replace(", run of", named, 1)
                   for name, origin in origins.items()}
    done = [name for name in found.group(1).split(", ") if name in names and name in origins]
    chunks: dict[str, list[list[str]]] = {name: [] for name in done}
    owner = None
    for line in section.splitlines():
        heading = re.match(r"^(?:#{3,4} |!\[)(.*)", line)
        if heading:
            text = heading.group(1)
            tasks = [n for n in names if text == n or text.startswith(n + ":") or text.startswith(n + "]")]
            owner = max(tasks, key=len, default=None)
            if owner is not None and text.startswith(owner + ": PDT stacked on") and owner + PEERS in names:
                owner += PEERS
            owner = owner if owner in chunks else None
            if owner is not None:
                chunks[owner].append([])
        if owner is not None:
            chunks[owner][-1].append(line)
    return {name: (["\n".join(chunk).strip() for chunk in chunks[name]], origins[name]) for name in done if chunks[name]}


PEERS = ": peers"
"""Suffix of the unit that measures a task's peer sections alone (:func:`units`)."""


def splits(args: argparse.Namespace) -> bool:
    """Whether the mode ``args`` selects measures a task's peers beside its other sections
    (the full suite, ``--core --peers``): there each task is two units of work."""
    return not args.quick and not args.cosine_only and (args.core == args.peers)


def units(args: argparse.Namespace, names: list[str]) -> list[str]:
    """The units of work of a run, in report order: each task, and where :func:`splits`, its
    peers (``name + PEERS``) as a unit of its own, so that ``--workers`` can measure a long task's
    two halves at once and ``--resume`` keeps each half (the character transformer's full
    sections took longer than a session beside another task, 2026-11-30)."""
    return [unit for name in names for unit in ([name, name + PEERS] if splits(args) else [name])]


def task_sections(args: argparse.Namespace, unit: str, task: Task, snap_every: int, seeds: int) -> Iterator[str]:
    """The RESULTS.md sections of one unit (:func:`units`) for the mode ``args`` selects, each as
    soon as it is measured."""
    name = unit.removesuffix(PEERS)
    if unit != name or (args.peers and not args.core):
        yield from peer_sections(name, task, snap_every, seeds, args.quick, args.peer, args.peer_schedule)
        return
    if args.cosine_only:
        yield from schedule_sections(name, task, snap_every, seeds, None, None)
        return
    if args.quick:
        lr, sweep = task.lr, [(task.lr, float("nan"))]
    else:
        lr, sweep = tune_lr(task, sweep_factors(name))
    suite = methods(snap_every, args.quick)
    suite[VERIFIED] = verified(task, snap_every)
    suite[UNHELD] = verified(task, snap_every, verify_backoff=0)
    if args.core:
        suite = {method: suite[method] for method in (BASELINE, DEFAULT, UNCHECKED, VERIFIED, FIXED_TAU)}
    runs = seed_major(task, suite, seeds, lr)
    if name in COMPILED_TASKS and not (args.quick or args.core):
        for method, eager_method in COMPILED.items():
            runs[method] = [train(task, suite[eager_method], seed=seed, method=method, lr=lr, compiled=True)[0]
                            for seed in range(seeds)]
    yield summarise(name, runs, lr, sweep, snap_every, task)
    if not args.quick:
        image = HERE / f"ttb_{'core_' if args.core else ''}{task.name}.png"
        plot(name, runs, image)
        yield f"![{name}]({image.name})"
        yield from schedule_sections(name, task, snap_every, seeds, runs, lr, ablations=not args.core)
    if (args.peers or not args.core) and not splits(args):
        yield from peer_sections(name, task, snap_every, seeds, args.quick, args.peer, args.peer_schedule)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: one task, one seed, no sweep, prints only")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", nargs="+", default=None, help="run the tasks whose name contains one of these texts")
    parser.add_argument("--core", action="store_true",
                        help="only the tuned baselines and PDT's defaults, under both schedules (no ablations, controls, "
                             "compiled rows or peers)")
    parser.add_argument("--cosine-only", action="store_true", help="with --core: only the cosine sections")
    parser.add_argument("--peers", action="store_true",
                        help="only the peer sections: schedule-free and Lookahead (and Muon on the AdamW "
                             "transformers), alone and with PDT, every task; with --core, the core sections and then "
                             "the peer sections of each task")
    parser.add_argument("--peer", default=None, help="only the peers whose name contains this text (e.g. schedule-free)")
    parser.add_argument("--peer-schedule", choices=("constant", "cosine"), default="constant",
                        help="the peers' learning-rate schedule (cosine: per step to zero; schedule-free peers "
                             "are left out)")
    parser.add_argument("--workers", type=int, default=1,
                        help="tasks measured at once, each in its own process (2 on a 2-core machine: about half the time)")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="flush denormal floats to zero (torch.set_flush_denormal), every method alike: on the CPU "
                             "arithmetic on denormals is many times slower, so a run that reaches tiny gradients sooner "
                             "pays for it in time per step (benchmarks/FINDINGS.md, 'Denormals')")
    add_test_samples_argument(parser)
    parser.add_argument("--resume", action="store_true",
                        help="keep the units of work (a task, or its peers) that the same mode's in-progress section "
                             "of RESULTS.md holds (a run stopped early, e.g. at the end of a session) and measure only "
                             "the others; the section says where each was measured")
    args = parser.parse_args()
    torch.set_num_threads(1)  # steadier timings on a shared 2-core machine
    torch.set_flush_denormal(args.flush_denormal)
    seeds = 1 if args.quick else args.seeds
    tasks = [name for name in task_suite(args.quick) if not args.only or any(text in name for text in args.only)]
    names = units(args, tasks)
    started, measured, origins = time.perf_counter(), {}, {}
    if args.resume and not args.quick:
        kept = resumable(read_section(titles(args)[1]) or "", names)
        measured = {name: texts for name, (texts, _) in kept.items()}
        origins = {name: origin for name, (_, origin) in kept.items()}
        print(f"resumed: {', '.join(kept) or 'nothing'}", flush=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    here = f"revision {revision()} on {cpu_label()}, run of {now:%Y-%m-%d %H:%M} UTC"
    for name, texts in measure_tasks(args, [n for n in names if n not in measured], seeds):
        print("\n\n".join(texts) + "\n", flush=True)
        measured[name], origins[name] = texts, here
        if not args.quick:
            done = [n for n in names if n in measured]
            save(args, seeds, started, [text for n in done for text in measured[n]], done, {n: origins[n] for n in done})
    if not args.quick:
        save(args, seeds, started, [text for n in names for text in measured[n]], None, {n: origins[n] for n in names})


LONGEST_FIRST = ("mnist1d ViT / AdamW", "char transformer / AdamW", "mnist1d ViT / AdamW" + PEERS,
                 "char transformer / AdamW" + PEERS, "mnist1d CNN / SGD-momentum", "digits MLP / Shampoo",
                 "mnist1d CNN / SGD-momentum" + PEERS, "digits MLP / SGD", "digits MLP / LAMB",
                 "digits MLP / Shampoo" + PEERS, "digits MLP / SGD" + PEERS, "digits MLP / LAMB" + PEERS)
"""The units of work (:func:`units`) by how long their sections took (the ViT's and the
transformer's most): the order in which ``--workers`` hands them out, so that the last one to
start is a short one."""


def longest_first(names: list[str]) -> list[str]:
    """``names`` in the order of :data:`LONGEST_FIRST`, units it does not list last."""
    return sorted(names, key=lambda name: LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST))


def measure_task(job: tuple[argparse.Namespace, str, int]) -> tuple[str, list[str]]:
    """All the sections of one unit of work (:func:`units`; a worker's job)."""
    args, unit, seeds = job
    torch.set_num_threads(1)
    torch.set_flush_denormal(getattr(args, "flush_denormal", False))
    name = unit.removesuffix(PEERS)
    task, snap_every = task_suite(args.quick)[name]
    task = on_test_samples(name, task, getattr(args, "test_samples", None))
    return unit, list(task_sections(args, unit, task, snap_every, seeds))


def measure_tasks(args: argparse.Namespace, names: list[str], seeds: int) -> Iterator[tuple[str, list[str]]]:
    """(unit, its sections) as each unit of work (:func:`units`) finishes: one after the other, or
    with ``args.workers`` processes, one unit each at a time. Every comparison is within one unit,
    whose methods run in lock-step in one process, so a unit on the other core slows them alike
    (``benchmarks.timing_protocol --load`` measures it)."""
    jobs = [(args, name, seeds) for name in names]
    if args.workers <= 1:
        yield from map(measure_task, jobs)
        return
    jobs = [jobs[names.index(name)] for name in longest_first(names)]
    with multiprocessing.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        yield from pool.imap_unordered(measure_task, jobs)


if __name__ == "__main__":
    main()
