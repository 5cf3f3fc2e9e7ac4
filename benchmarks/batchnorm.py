"""BatchNorm's running statistics after a merge: what an evaluation right after one sees.

A merge moves the weights at a boundary; BatchNorm's running mean and variance, which
evaluation mode uses, were averaged over batches at the weights before it and catch up only
over the next training steps (at momentum 0.1, about ten). Where boundaries fall at the end of
an epoch (``snap_every`` = steps per epoch, the paper's setting) and the user evaluates there,
the evaluation runs with statistics of other weights. This trains a 1-D CNN with BatchNorm on
mnist1d (SGD with momentum, 40 epochs of 40 steps, one snapshot per epoch), plain and with PDT's
defaults, and at every epoch end evaluates the model three ways: as it is (stale statistics),
after ``torch.optim.swa_utils.update_bn`` over the first ``--batches`` training batches, and
after it over the whole training set (the reference; the harness's ``Task.batchnorm_batches``). It reports, over epochs 6-40, how far the
first two fall from the reference in test accuracy and in full training loss; then how much
sooner PDT reaches the plain optimizer's final training loss, evaluated both ways.

    python -m benchmarks.batchnorm [--seeds 3] [--epochs 40] [--batches 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
import warnings

import torch
from torch import nn
import pdt_compile as pdt
from pdt_compile.experiment import Task, Training, evaluate, speedup
from pdt_compile.tasks import _mnist1d

from .report import write_section

STEPS_PER_EPOCH = 40
BATCH = 100
SKIPPED_EPOCHS = 5
"""The first epochs, left out of the summaries: there the weights move fast with or without merges."""


def bn_cnn(channels: int = 32) -> nn.Module:
    """The suite's mnist1d CNN with a BatchNorm after each convolution (input ``[batch, 40]``)."""
    c = channels
    return nn.Sequential(
        nn.Unflatten(1, (1, -1)), nn.Conv1d(1, c, 5, 2, 2), nn.BatchNorm1d(c), nn.ReLU(),
        nn.Conv1d(c, c, 3, 2, 1), nn.BatchNorm1d(c), nn.ReLU(),
        nn.Conv1d(c, c, 3, 2, 1), nn.BatchNorm1d(c), nn.ReLU(),
        nn.Flatten(), nn.Linear(c * 5, 10),
    )


def bn_task(data: dict[str, torch.Tensor], epochs: int, batchnorm_batches: int, lr: float = 0.05) -> Task:
    """The BatchNorm CNN on mnist1d with SGD and momentum, evaluated after ``update_bn`` over
    ``batchnorm_batches`` training batches (0: as the model stands)."""
    return Task(name="mnist1d-bn-cnn-sgdm", train_x=data["train_x"], train_y=data["train_y"], test_x=data["test_x"],
                test_y=data["test_y"], make_model=bn_cnn,
                make_optimizer=lambda params, rate: torch.optim.SGD(params, lr=rate, momentum=0.9),
                lr=lr, batch_size=BATCH, steps=epochs * STEPS_PER_EPOCH, eval_every=STEPS_PER_EPOCH,
                batchnorm_batches=batchnorm_batches)


def run(method: str, seed: int, epochs: int, batches: int, data: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per epoch from the sixth: the accuracy lost (points) and the loss ratio of the stale and the
    ``batches``-recalibrated evaluation against the one recalibrated over every batch of an
    epoch's size; and the last epoch's stale and reference training losses."""
    stale, few, reference = (bn_task(data, epochs, k) for k in (0, batches, STEPS_PER_EPOCH))
    wrap = (lambda opt: pdt.PDT(opt, snap_every=STEPS_PER_EPOCH)) if method == "PDT" else (lambda opt: opt)
    training = Training(dataclasses.replace(stale, eval_every=stale.steps), wrap, seed=seed, method=method)
    out: dict[str, list[float]] = {"stale acc": [], "stale loss": [], "few acc": [], "few loss": []}
    while not training.done:
        training.step()
        if training.steps_done % STEPS_PER_EPOCH:
            continue
        (stale_loss, stale_acc), (few_loss, few_acc), (ref_loss, ref_acc) = (
            evaluate(task, training.model) for task in (stale, few, reference))
        if training.steps_done > SKIPPED_EPOCHS * STEPS_PER_EPOCH:
            out["stale acc"].append(100 * (ref_acc - stale_acc))
            out["stale loss"].append(stale_loss / ref_loss)
            out["few acc"].append(100 * (ref_acc - few_acc))
            out["few loss"].append(few_loss / ref_loss)
    out["final loss"] = [stale_loss, ref_loss]
    return out


def ttb_rows(data: dict[str, torch.Tensor], seeds: int, epochs: int, batches: int) -> tuple[list[str], str]:
    """Time to the plain optimizer's final training loss on the BatchNorm CNN, PDT's defaults
    against it in lock-step (as ``benchmarks.ttb`` times them), with the evaluations made on the
    model as it stands and after ``update_bn`` over ``batches`` training batches; the rate tuned
    for the plain optimizer (recomputed statistics) as ``benchmarks.ttb`` tunes it."""
    from .ttb import seed_major, spread, tune_lr

    task = bn_task(data, epochs, batches)
    lr, sweep = tune_lr(task, [0.25, 0.5, 1.0, 2.0, 4.0])
    methods = {"plain": lambda opt: opt, "PDT": lambda opt: pdt.PDT(opt, snap_every=STEPS_PER_EPOCH)}
    rows = []
    for label, variant in ((f"after update_bn over {batches} batches", task),
                           ("as the model stands", dataclasses.replace(task, batchnorm_batches=0))):
        runs = seed_major(variant, methods, seeds, lr)
        ratios = [speedup(base, run) for base, run in zip(runs["plain"], runs["PDT"])]
        accuracy = [100 * (run.test_accuracy[-1] - base.test_accuracy[-1]) for base, run in zip(runs["plain"], runs["PDT"])]
        rows.append(f"| {label} | {spread([steps for steps, _ in ratios])} | {spread([wall for _, wall in ratios])} | "
                    f"{', '.join(f'{a:+.1f}' for a in accuracy)} | "
                    f"{', '.join(f'{run.final_loss:.2e}' for run in runs['plain'])} |")
        print(rows[-1], flush=True)
    sweep_text = ", ".join(f"{rate:g} → {loss:.4f}" for rate, loss in sweep)
    return rows, f"tuned lr {lr:g} (sweep, final training loss after update_bn: {sweep_text})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batches", type=int, default=5, help="training batches the cheap recalibration reads")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning, module="pdt_compile")
    started = time.perf_counter()
    raw = _mnist1d()
    data = {"train_x": torch.tensor(raw["x"], dtype=torch.float32), "train_y": torch.tensor(raw["y"]),
            "test_x": torch.tensor(raw["x_test"], dtype=torch.float32), "test_y": torch.tensor(raw["y_test"])}
    rows = ["| method | seed | accuracy lost, stale: mean / max (points) | training loss, stale / recalibrated: mean / max | "
            f"accuracy lost, {args.batches} batches: mean / max | training loss, {args.batches} batches / all: mean / max | "
            "final training loss, stale / recalibrated |", "|---|---|---|---|---|---|---|"]
    for method in ("plain", "PDT"):
        for seed in range(args.seeds):
            r = run(method, seed, args.epochs, args.batches, data)
            rows.append(
                f"| {method} | {seed} | {statistics.mean(r['stale acc']):.2f} / {max(r['stale acc']):.1f} | "
                f"{statistics.mean(r['stale loss']):.2f} / {max(r['stale loss']):.2f} | "
                f"{statistics.mean(r['few acc']):.2f} / {max(r['few acc']):.1f} | "
                f"{statistics.mean(r['few loss']):.2f} / {max(r['few loss']):.2f} | "
                f"{r['final loss'][0]:.2e} / {r['final loss'][1]:.2e} |")
            print(rows[-1], flush=True)
    ttb, tuned = ttb_rows(data, args.seeds, args.epochs, args.batches)
    intro = (f"mnist1d 1-D CNN with BatchNorm, SGD lr 0.05 momentum 0.9, batch {BATCH}, {args.epochs} epochs of "
             f"{STEPS_PER_EPOCH} steps; PDT's defaults with snap_every = {STEPS_PER_EPOCH} (one boundary per epoch, at "
             "its last step). Every epoch end is evaluated as the model stands (stale running statistics), after "
             f"update_bn over the first {args.batches} training batches, and after update_bn over all "
             f"{STEPS_PER_EPOCH} (the whole training set: the reference); 'accuracy lost' is the reference's test accuracy minus the evaluation's, "
             "the loss columns the evaluation's full training loss over the reference's, both over epochs "
             f"{SKIPPED_EPOCHS + 1}-{args.epochs}. Total benchmark time {time.perf_counter() - started:.0f} s.")
    ttb_intro = (f"Time to the plain optimizer's final training loss, the same CNN and schedule at the plain optimizer's "
                 f"{tuned}; PDT's defaults in lock-step with it, {args.seeds} seeds, as benchmarks.ttb times them "
                 "(evaluation, and the recomputation, untimed); median [min–max].")
    ttb_table = ["| evaluations | TTB-Loss steps × | TTB-Loss wall × | final accuracy, PDT − plain, per seed (points) | "
                 "plain's final training loss, per seed |", "|---|---|---|---|---|", *ttb]
    write_section("BatchNorm statistics at a boundary (benchmarks/batchnorm.py)",
                  intro + "\n\n" + "\n".join(rows) + "\n\n" + ttb_intro + "\n\n" + "\n".join(ttb_table))


if __name__ == "__main__":
    main()
