"""Command line: ``python -m pdt_compile demo`` (start here) and ``python -m pdt_compile explain``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import PDT, PDTConfig, tasks
from .experiment import Run, Task, Training, schedule_free, speedup, train_in_lockstep


@dataclass(frozen=True)
class DemoTask:
    """A task of the time-to-baseline suite as the demo trains it: at the learning rate
    ``python -m benchmarks.ttb --core`` tuned for it under each schedule (RESULTS.md: the runs at
    391c9d1 on an Intel Xeon and at f7ccfe3 on an AMD EPYC tuned the same rates), the baseline's
    own rate, not one that flatters PDT."""

    make: Callable[[], Task]
    snap_every: int | None  # None: one snapshot per epoch
    optimizer: str
    rates: dict[str, float]
    better: str  # the schedule whose tuned baseline reached the lower final loss
    schedule_free_rate: float  # the schedule-free optimizer's rate, tuned as python -m benchmarks.ttb --peers tunes it


DEMO_TASKS = {
    "digits": DemoTask(lambda: tasks.digits_mlp(steps=1800), None, "SGD", {"constant": 0.8, "cosine": 0.8}, "constant",
                       6.4),
    "cnn": DemoTask(lambda: tasks.mnist1d_cnn(steps=2400), None, "SGD-momentum", {"constant": 0.05, "cosine": 0.2},
                    "cosine", 1.6),
    "vit": DemoTask(lambda: tasks.mnist1d_vit(epochs=60), None, "AdamW", {"constant": 5e-4, "cosine": 2e-3}, "cosine",
                    0.004),
    "chars": DemoTask(lambda: tasks.char_transformer(steps=1000), 30, "AdamW", {"constant": 6e-3, "cosine": 0.012},
                      "cosine", 0.024),
}
"""``demo --task``: the digits MLP (seconds), the mnist1d CNN and vision transformer and the
character transformer (a few minutes each on one core); all their data ships with packages.
Schedule-free rates: the runs of ``python -m benchmarks.ttb --peers`` at d7fae86 (Intel Xeon;
digits, the character transformer) and 8169c2c (AMD EPYC; the CNN, the ViT)."""

SCHEDULE_FREE = "schedule-free"
"""``demo --optimizer``: the task's schedule-free counterpart (:func:`~pdt_compile.experiment.schedule_free`)."""


def _format_target(baseline: Run, run: Run, metric: str) -> str:
    target = baseline.final_loss if metric == "loss" else baseline.best_accuracy
    step, seconds = run.time_to(target, metric)
    if step is None:
        return "never"
    return f"{step} steps / {seconds:.2f}s"


def demo(args: argparse.Namespace) -> int:
    """Train a suite task, its optimizer alone and wrapped in PDT, from the same weights and
    batches, one step of each in turn, and compare them."""
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    chosen = DEMO_TASKS[args.task]
    free = args.optimizer == SCHEDULE_FREE
    if free and args.schedule not in (None, "constant"):
        raise SystemExit(f"demo: --schedule {args.schedule} with --optimizer {SCHEDULE_FREE}: a schedule-free "
                         "optimizer takes no schedule; leave --schedule out")
    schedule = "constant" if free else args.schedule or chosen.better
    lr = args.lr if args.lr is not None else chosen.schedule_free_rate if free else chosen.rates[schedule]
    task = chosen.make()
    task = dataclasses.replace(task, schedule=schedule, steps=args.steps or task.steps)
    optimizer_name = chosen.optimizer
    if free:
        adamw = chosen.optimizer == "AdamW"
        task = dataclasses.replace(task, make_optimizer=schedule_free(task, adamw))
        optimizer_name = f"schedule-free {'AdamW' if adamw else 'SGD'}"
    snap_every = chosen.snap_every or task.steps_per_epoch
    config = PDTConfig.paper(snap_every) if args.paper else PDTConfig(snap_every=snap_every)
    baseline_name = f"{optimizer_name} (baseline)"
    label = f"{optimizer_name} + PDT" + (" (paper config)" if args.paper else "")
    methods = {baseline_name: lambda opt: opt, label: lambda opt: PDT(opt, config)}
    trainings = [Training(task, wrap, seed=args.seed, method=name, lr=lr) for name, wrap in methods.items()]
    with tqdm(total=task.steps * len(methods), desc="training", unit="step") as bar:
        results = train_in_lockstep(trainings, on_step=lambda training, seconds: bar.update(1))
    runs: dict[str, Run] = {name: run for name, (run, _) in zip(methods, results)}
    optimizer = results[-1][1]
    baseline = runs[baseline_name]
    tuned = "given with --lr" if args.lr is not None else (
        "its rate tuned by python -m benchmarks.ttb --peers (RESULTS.md, runs at d7fae86 and 8169c2c)" if free else
        f"the tuned {schedule} rate of python -m benchmarks.ttb --core (RESULTS.md, runs at 391c9d1 on an Intel Xeon "
        "and f7ccfe3 on an AMD EPYC)")
    print(f"\n{task.name}, {optimizer_name}, {schedule} schedule, lr {lr:g} ({tuned}), batch {task.batch_size}, "
          f"{task.steps} steps, snapshot every {snap_every} steps, seed {args.seed}\n")
    width = max(26, *(len(name) for name in runs))
    header = (f"{'method':{width}s} {'to baseline final loss':>24s} {'to best test acc':>22s} {'final loss':>10s} "
              f"{'final acc':>9s} {'mask':>6s}")
    print(header)
    print("-" * len(header))
    for name, run in runs.items():
        mask = f"{run.mask_ratio[-1][1]:.3f}" if run.mask_ratio else "-"
        print(f"{name:{width}s} {_format_target(baseline, run, 'loss'):>24s} {_format_target(baseline, run, 'accuracy'):>22s} "
              f"{run.final_loss:10.4f} {run.test_accuracy[-1]:9.3f} {mask:>6s}")
    pdt_run = runs[label]
    steps_x, time_x = speedup(baseline, pdt_run)
    if steps_x is None:
        print("\nPDT did not reach the baseline's final training loss in this run.")
    else:
        print(f"\nPDT reached the baseline's final training loss {steps_x:.2f}x sooner in steps and "
              f"{time_x:.2f}x sooner in wall time (PDT's overhead included).")
    print(optimizer.stats)
    print("One seed, one machine: the time-to-baseline tables in benchmarks/RESULTS.md (python -m benchmarks.ttb) "
          "give three seeds, both schedules, controls and peers.")
    _plot(runs, Path(args.out))
    print(f"Plot: {args.out}")
    return 0


def _plot(runs: dict[str, Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    twin = right.twinx()
    for name, run in runs.items():
        left.plot(run.steps, run.train_loss, label=name)
        if run.mask_ratio:
            steps, ratios = zip(*run.mask_ratio)
            right.plot(steps, ratios, marker="o", label=f"{name}: mask ratio")
            tau_steps, taus = zip(*run.tau)
            twin.step(tau_steps, taus, where="post", color="gray", alpha=0.6, label="tau")
    left.set(xlabel="step", ylabel="training loss", yscale="log", title="Training loss")
    left.legend()
    right.set(xlabel="step", ylabel="accepted fraction", title="PDT telemetry (opt.stats)")
    twin.set_ylabel("tau")
    right.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def explain(args: argparse.Namespace) -> int:
    """Print the rewritten optimizer-step graphs of the compiled demo model."""
    from .api import explain_demo

    print(explain_demo(backend=args.backend))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pdt_compile", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="an optimizer alone vs with PDT on a task of the benchmark suite")
    demo_parser.add_argument("--task", choices=sorted(DEMO_TASKS), default="digits",
                             help="digits: an MLP on scikit-learn's digits, SGD (the default, seconds); cnn: a CNN on "
                             "mnist1d, SGD with momentum; vit: a vision transformer on mnist1d, AdamW; chars: a "
                             "character transformer, AdamW (minutes each)")
    demo_parser.add_argument("--schedule", choices=("constant", "cosine"), default=None,
                             help="the learning-rate schedule (per step, cosine to zero); default: the one whose tuned "
                             "baseline reached the lower loss on the task")
    demo_parser.add_argument("--optimizer", choices=("task", SCHEDULE_FREE), default="task",
                             help="task: the task's own optimizer (above); schedule-free: the schedulefree package's "
                             "SGD (momentum 0.9) or AdamW in its place, what a user might pick instead, alone and "
                             "with PDT stacked on it (no schedule)")
    demo_parser.add_argument("--lr", type=float, default=None, help="the learning rate (default: the tuned one)")
    demo_parser.add_argument("--steps", type=int, default=None, help="default: the task's budget in the suite")
    demo_parser.add_argument("--seed", type=int, default=0)
    demo_parser.add_argument("--paper", action="store_true", help="the paper's mask rule and rank instead of the defaults")
    demo_parser.add_argument("--threads", type=int, default=1)
    demo_parser.add_argument("--out", default="pdt_demo.png")
    demo_parser.set_defaults(run=demo)
    explain_parser = commands.add_parser("explain", help="print the compiled graphs with PDT's nodes")
    explain_parser.add_argument("--backend", default="aot_eager")
    explain_parser.set_defaults(run=explain)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
