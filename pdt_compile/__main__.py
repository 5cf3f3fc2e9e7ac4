"""Command line: ``python -m pdt_compile demo`` (start here) and ``python -m pdt_compile explain``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import PDT, PDTConfig
from .experiment import Run, speedup, train
from .tasks import digits_mlp


def _format_target(baseline: Run, run: Run, metric: str) -> str:
    target = baseline.final_loss if metric == "loss" else baseline.best_accuracy
    step, seconds = run.time_to(target, metric)
    if step is None:
        return "never"
    return f"{step} steps / {seconds:.2f}s"


def demo(args: argparse.Namespace) -> int:
    """Train the digits MLP with SGD, baseline and PDT, and compare them."""
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    task = digits_mlp(steps=args.steps)
    config = PDTConfig.paper(task.steps_per_epoch) if args.paper else PDTConfig(snap_every=task.steps_per_epoch)
    label = "SGD + PDT (paper config)" if args.paper else "SGD + PDT"
    methods = {"SGD (baseline)": lambda opt: opt, label: lambda opt: PDT(opt, config)}
    runs: dict[str, Run] = {}
    with tqdm(total=task.steps * len(methods), desc="training", unit="step") as bar:
        for name, wrap in methods.items():
            runs[name], optimizer = train(task, wrap, seed=args.seed, method=name, progress=bar.update)
    baseline = runs["SGD (baseline)"]
    print(f"\nDigits MLP, SGD lr={task.lr}, batch {task.batch_size}, {task.steps} steps, "
          f"snapshot every {task.steps_per_epoch} steps (one epoch), seed {args.seed}\n")
    header = f"{'method':24s} {'to baseline final loss':>24s} {'to best test acc':>22s} {'final loss':>10s} {'final acc':>9s} {'mask':>6s}"
    print(header)
    print("-" * len(header))
    for name, run in runs.items():
        mask = f"{run.mask_ratio[-1][1]:.3f}" if run.mask_ratio else "-"
        print(f"{name:24s} {_format_target(baseline, run, 'loss'):>24s} {_format_target(baseline, run, 'accuracy'):>22s} "
              f"{run.final_loss:10.4f} {run.test_accuracy[-1]:9.3f} {mask:>6s}")
    pdt_run = runs[label]
    steps_x, time_x = speedup(baseline, pdt_run)
    if steps_x is None:
        print("\nPDT did not reach the baseline's final training loss in this run.")
    else:
        print(f"\nPDT reached the baseline's final training loss {steps_x:.2f}x sooner in steps and "
              f"{time_x:.2f}x sooner in wall time (PDT's overhead included).")
    print(optimizer.stats)
    print("Note: this baseline uses an untuned lr. Against a tuned lr, and against controls, see the "
          "time-to-baseline tables in benchmarks/RESULTS.md (python -m benchmarks.ttb).")
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
    demo_parser = commands.add_parser("demo", help="baseline vs PDT on scikit-learn digits")
    demo_parser.add_argument("--steps", type=int, default=1800)
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
