"""PDT on fine-tuning: a pretrained transformer trained further on a new task, in full or
through LoRA adapters on frozen weights, as most users who train a transformer today do.

A fine-tune is short (a few epochs, so few snapshots at one per epoch) and starts from weights
that already sit in a basin. The pretrained model is the suite's vision transformer on mnist1d
(:class:`pdt_compile.tasks.PatchTransformer`), trained on the digits 0-4; it is fine-tuned on
5-9 for :data:`EPOCHS` epochs at batch :data:`BATCH`, with AdamW and a warmup-cosine schedule or
a constant rate, the rate tuned for the plain optimizer as ``benchmarks.ttb`` tunes it (seed 0,
lowest final training loss). For each seed, side by side in lock-step (one step of each in
turn, so a drift of the machine's speed lands on all alike): the plain AdamW, the plain AdamW
nudged by a millionth at PDT's boundaries (:class:`benchmarks.controls.Nudge`: how much any
perturbation moves a run this short) and PDT's defaults with one snapshot per epoch (the README's
``snap_every=len(train_loader)``). Wall time includes PDT's overhead.

    python -m benchmarks.fine_tune [--seeds 5] [--first-seed 0] [--only LoRA]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import statistics
import time
import warnings
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

import pdt_compile as pdt
from pdt_compile.experiment import Run, Task, Training, speedup, train_in_lockstep
from pdt_compile.tasks import PatchTransformer, mnist1d_vit

from .controls import Nudge
from .report import write_section
from .ttb import spread, tune_lr

EPOCHS = 10
BATCH = 32
PRETRAIN_EPOCHS = 40
RANK, ALPHA = 4, 8
"""LoRA's rank and scale numerator (the update is ``ALPHA / RANK * B @ A``), peft's common choice."""


class LoRA(nn.Module):
    """A low-rank update added to a frozen weight, as a parametrization: ``W + s B A`` with ``A``
    initialised as ``nn.Linear``'s weight and ``B`` at zero (the fine-tune starts at the
    pretrained model), as peft's LoRA does."""

    def __init__(self, weight: Tensor, rank: int = RANK, alpha: float = ALPHA) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, weight.shape[1]))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(weight.shape[0], rank))
        self.scale = alpha / rank

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.scale * (self.B @ self.A)


def with_lora(model: PatchTransformer) -> PatchTransformer:
    """``model`` frozen but for its head, with :class:`LoRA` on every block's attention
    projections (in and out) and both MLP matrices."""
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.blocks.layers:
        for module, name in ((layer.self_attn, "in_proj_weight"), (layer.self_attn.out_proj, "weight"),
                             (layer.linear1, "weight"), (layer.linear2, "weight")):
            parametrize.register_parametrization(module, name, LoRA(getattr(module, name)))
    for p in model.head.parameters():
        p.requires_grad_(True)
    return model


def _split(task: Task, digits: range) -> Task:
    wanted = torch.tensor(list(digits))
    keep, keep_test = torch.isin(task.train_y, wanted), torch.isin(task.test_y, wanted)
    return dataclasses.replace(task, train_x=task.train_x[keep], train_y=task.train_y[keep],
                               test_x=task.test_x[keep_test], test_y=task.test_y[keep_test])


@functools.cache
def pretrained() -> dict[str, Tensor]:
    """The suite's ViT trained on mnist1d's digits 0-4 (AdamW at the suite's rate, warmup-cosine,
    :data:`PRETRAIN_EPOCHS` epochs; seed 12345, apart from the fine-tunes' seeds)."""
    task = _split(mnist1d_vit(), range(5))
    task = dataclasses.replace(task, schedule="warmup-cosine", steps=PRETRAIN_EPOCHS * task.steps_per_epoch,
                               eval_every=PRETRAIN_EPOCHS * task.steps_per_epoch)
    training = Training(task, lambda opt: opt, seed=12345, method="pretraining")
    while not training.done:
        training.step()
    return {name: value.clone() for name, value in training.model.state_dict().items()}


def fine_tune_task(adapters: bool, schedule: str) -> Task:
    """The fine-tune on digits 5-9: the whole model (``adapters`` False) or LoRA adapters and the
    head; AdamW (weight decay 0.01) over the trainable parameters."""
    state = pretrained()

    def make_model() -> nn.Module:
        model = PatchTransformer()
        model.load_state_dict(state)
        return with_lora(model) if adapters else model

    task = _split(mnist1d_vit(), range(5, 10))
    steps = EPOCHS * (len(task.train_x) // BATCH)
    return dataclasses.replace(
        task, name="fine-tune", make_model=make_model, batch_size=BATCH, steps=steps, eval_every=max(1, steps // 100),
        make_optimizer=lambda params, lr: torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr,
                                                            weight_decay=0.01),
        lr=2e-3 if adapters else 5e-4, schedule=schedule)


CASES = {f"{what}, {schedule}": (what == "LoRA", schedule)
         for what in ("full fine-tune", "LoRA") for schedule in ("warmup-cosine", "constant")}


TAIL = 0.1
"""The share of a run's last evaluations whose mean the table also compares: at a constant
rate the final evaluation is one draw of the minibatch noise."""


def _last(values: list[float], tail: bool) -> float:
    """The last value, or (``tail``) the mean of the last :data:`TAIL` of them."""
    return statistics.mean(values[-max(1, round(TAIL * len(values))):]) if tail else values[-1]


def _accuracy_change(baseline: Run, run: Run, tail: bool = False) -> float:
    return 100 * (_last(run.test_accuracy, tail) - _last(baseline.test_accuracy, tail))


def _tail_loss_ratio(baseline: Run, run: Run) -> float:
    return _last(run.train_loss, True) / _last(baseline.train_loss, True)


def case_rows(name: str, seeds: int, first_seed: int = 0) -> list[str]:
    """One case: its tuned rate, then the nudge's and PDT's ratios to the baseline, per seed."""
    task = fine_tune_task(*CASES[name])
    lr, sweep = tune_lr(task, [0.25, 0.5, 1.0, 2.0, 4.0])
    snap_every = task.steps_per_epoch
    wraps: dict[str, Callable] = {
        "baseline nudged by 1e-6 at every prediction boundary": lambda opt: Nudge(opt, snap_every=snap_every),
        f"PDT default, snap_every={snap_every} (one epoch)": lambda opt: pdt.PDT(opt, snap_every=snap_every)}
    baselines: list[Run] = []
    runs: dict[str, list[tuple[Run, pdt.PDT]]] = {method: [] for method in wraps}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(first_seed, first_seed + seeds):
            trainings = [Training(task, lambda opt: opt, seed=seed, method="baseline", lr=lr)]
            trainings += [Training(task, wrap, seed=seed, method=method, lr=lr) for method, wrap in wraps.items()]
            (baseline, _), *rest = train_in_lockstep(trainings)
            baselines.append(baseline)
            for method, result in zip(wraps, rest):
                runs[method].append(result)
    trainable = sum(p.numel() for p in task.make_model().parameters() if p.requires_grad)
    case = (f"{name}, lr {lr:g} ({trainable:,} trainable parameters, {task.steps} steps; sweep "
            f"{', '.join(f'{rate:g} → {loss:.3g}' for rate, loss in sweep)})")
    rows = [f"| {case} | baseline | final loss {', '.join(f'{b.final_loss:.3g}' for b in baselines)}; test accuracy "
            f"{', '.join(f'{100 * b.test_accuracy[-1]:.1f}' for b in baselines)} | | | | | | | | |"]
    for method, results in runs.items():
        ratios = [speedup(b, r) for b, (r, _) in zip(baselines, results)]
        walls, steps = [w for _, w in ratios], [s for s, _ in ratios]
        finals = [r.final_loss / b.final_loss for b, (r, _) in zip(baselines, results)]
        accuracy = [_accuracy_change(b, r) for b, (r, _) in zip(baselines, results)]
        tail_loss = [_tail_loss_ratio(b, r) for b, (r, _) in zip(baselines, results)]
        tail_accuracy = [_accuracy_change(b, r, tail=True) for b, (r, _) in zip(baselines, results)]
        below = sum(v is None or v < 0.98 for v in walls)
        merges = ", ".join(str(opt.stats.merges) for _, opt in results) if method.startswith("PDT") else "-"
        rows.append(
            f"| {case} | {method} | {', '.join('never' if v is None else f'{v:.2f}' for v in walls)} | {spread(walls)} | "
            f"{spread(steps)} | {below}/{len(walls)} | {', '.join(f'{f:.2f}' for f in finals)} "
            f"(median {statistics.median(finals):.2f}) | {', '.join(f'{a:+.1f}' for a in accuracy)} "
            f"(median {statistics.median(accuracy):+.1f}) | {statistics.median(tail_loss):.2f} "
            f"[{min(tail_loss):.2f}–{max(tail_loss):.2f}] | {statistics.median(tail_accuracy):+.1f} "
            f"[{min(tail_accuracy):+.1f} to {max(tail_accuracy):+.1f}] | {merges} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--only", default="", help="the cases whose name contains this text")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = ["| case | run | wall × per seed (baseline's time / run's time to the baseline's final training loss) | "
            "median [min–max] | steps ×, median [min–max] | seeds below 0.98 or never | final training loss / the "
            "baseline's, per seed | test accuracy − the baseline's (points), per seed | over the last 10 % of the "
            "evaluations: mean training loss / the baseline's, median [min–max] | and mean test accuracy − the "
            "baseline's, median [min–max] | merges, per seed |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in CASES:
        if args.only and args.only not in name:
            continue
        rows += case_rows(name, args.seeds, args.first_seed)
        print("\n".join(rows[-3:]), flush=True)
    intro = (f"mnist1d's ViT pretrained on the digits 0-4 ({PRETRAIN_EPOCHS} epochs), fine-tuned on 5-9 for {EPOCHS} "
             f"epochs at batch {BATCH} with AdamW; LoRA: rank {RANK}, scale {ALPHA}/{RANK}, on each block's attention "
             "in- and out-projections and MLP matrices, the head trained too, the rest frozen. The rate tuned for "
             f"the plain AdamW on seed 0; {args.seeds} seeds from seed {args.first_seed}, each seed's three runs in lock-step from the same "
             "initial adapters and batch order. × = the baseline's time (or steps) over the run's to the baseline's "
             "final training loss, first evaluation at it (every 1 % of the steps), as benchmarks.ttb counts them; "
             "wall time includes PDT's overhead, not the evaluations. The nudge multiplies every trained weight by "
             "1 + 1e-6 e (e standard normal) at every boundary where PDT's defaults would predict. 1 torch thread. "
             f"Total benchmark time {time.perf_counter() - started:.0f} s.")
    title = "Fine-tuning" + (f", cases matching {args.only!r}" if args.only else "")
    title += f", {args.seeds} seeds" if args.seeds != 5 else ""
    title += f" from seed {args.first_seed}" if args.first_seed else ""
    write_section(title + " (benchmarks/fine_tune.py)", intro + "\n\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
