"""Where a merge's gain goes: fork the run at merges and follow both branches.

    python -m benchmarks.merge_anatomy [--forks 4] [--only transformer]

At a few merges of a PDT run (the defaults, and tau = 5 with and without the trend filter;
the task's tuned lr), the weights just
before the merge and just after it are each trained on by the plain optimizer (its state
copied, the same next batches) for tau intervals. Measured per fork:

- loss gain of the merged branch over the unmerged one (relative, on the evaluation set),
  right after the merge, after one interval and after tau intervals: does the jump help,
  and does the help last?
- how well the accepted jump J agrees with where the optimizer itself went over the next
  tau intervals (D, unmerged branch), on the accepted elements: sign agreement, cosine, and
  the realised fraction <J, D> / |J|^2 (1: the optimizer went that far in that direction);
- the noise share of one interval's displacement: 1 - |sum of h-1 interval displacements|
  / sum of their norms (0: a straight line, ~1: a random walk), measured on the ring.

The table explains time-to-baseline results per task (benchmarks/RESULTS.md).

``--oracle``: beside each fork, a third branch merges DMD's own unmasked jump J only where an
oracle that has seen the plain branch allows it (J has the sign of the optimizer's own
displacement D over the next tau intervals and |J| <= |D|: the optimizer itself goes at least
that far in that direction). Its gain bounds what any mask could get from DMD's predictions.

``--verify``: instead, one full run per task with merges verified on a fixed batch of 256
training samples (``PDT(..., verify=...)``): how often verification keeps a merge whole,
backtracks it (1/2, 1/4) or rejects it, the verify-loss change at kept merges, and its share of
the training wall time.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

import pdt_compile as pdt
from pdt_compile import tasks
from pdt_compile.experiment import Task, batch_order, evaluate, needs_model, train, verification_loss

from .report import write_section

VIT_LR = 0.0005
TASKS = {  # name -> (task factory, tuned lr, snap_every), as benchmarks.ttb measured them
    "digits MLP / SGD": (lambda: tasks.digits_mlp(steps=1800), 0.8, 44),
    "mnist1d CNN / SGD-momentum": (lambda: tasks.mnist1d_cnn(steps=2400), 0.05, 40),
    "char transformer / AdamW": (lambda: tasks.char_transformer(steps=1000), 0.006, 30),
    "mnist1d ViT / AdamW": (lambda: tasks.mnist1d_vit(epochs=60), VIT_LR, 40),
}

VARIANTS = {", defaults (trend filter, tau 8)": {}, ", tau 5, no trend filter (previous default)": {"trend": False, "tau": 5},
            ", tau 5, trend filter": {"tau": 5}}


@dataclass
class Fork:
    step: int
    mask_ratio: float
    gains: list[float]  # relative loss gain of the merged branch, per interval 0..tau
    sign_agreement: float
    cosine: float
    realised: float
    noise_share: float
    oracle_ratio: float = float("nan")
    oracle_gains: list[float] | None = None


def flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def noise_share(ring) -> float:
    """1 - |s_last - s_first| / sum |s_{i+1} - s_i| over the ring (all parameters)."""
    rows = ring.flat()[ring.order()]
    steps = rows[1:] - rows[:-1]
    return 1.0 - float((rows[-1] - rows[0]).norm() / steps.norm(dim=1).sum())


def branch(task: Task, lr: float, weights: Tensor, optimizer_state: dict, indices: list[Tensor],
           every: int) -> tuple[list[float], Tensor]:
    """Plain training from ``weights`` with a copy of the optimizer state: the evaluation
    loss every ``every`` steps (and at 0) and the final weights."""
    model = task.make_model()
    torch.nn.utils.vector_to_parameters(weights.clone(), model.parameters())
    optimizer = task.make_optimizer(model.parameters(), lr)
    optimizer.load_state_dict(copy.deepcopy(optimizer_state))
    losses = [evaluate(task, model)[0]]
    for step, index in enumerate(indices, 1):
        task.loss(model(task.train_x[index]), task.train_y[index]).backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % every == 0:
            losses.append(evaluate(task, model)[0])
    return losses, flat(model)


def unmasked_jump(rows: list[Tensor], weights: Tensor, sizes: list[int], horizon: int) -> Tensor:
    """DMD's jump for every element, no mask: s + p_tau - w per parameter (``rows``: each
    parameter's ring before the boundary, oldest first; ``weights``: flat, after the optimizer's
    step), as PDT's defaults predict (per-tensor DMD, full rank, projected modes)."""
    parts = []
    for snapshots, w in zip(rows, weights.split(sizes)):
        parts.append(pdt.forecast(snapshots, horizon, rank="full")[-1] - w)
    return torch.cat(parts)


def oracle_mask(jump: Tensor, future: Tensor) -> Tensor:
    """Elements where ``jump`` points the way the optimizer went over the next tau intervals
    (``future``) and no farther."""
    return (jump * future > 0) & (jump.abs() <= future.abs())


def anatomy(task: Task, lr: float, snap_every: int, forks: int, seed: int = 0, oracle: bool = False,
            **config) -> list[Fork]:
    torch.manual_seed(seed)
    model = task.make_model()
    # rollback_factor: keeps each merge's jump (it never triggers at this factor)
    opt = pdt.PDT(task.make_optimizer(model.parameters(), lr), snap_every=snap_every, rollback_factor=1e30, **config)
    tau = opt.schedule.tau
    horizon = tau * snap_every
    order = batch_order(task, seed)
    indices = [next(order) for _ in range(task.steps + horizon)]
    fork_steps = [int(task.steps * (i + 1) / (forks + 1)) for i in range(forks)]
    results = []
    sizes = [p.numel() for p in model.parameters()]
    for step in range(1, task.steps + 1):
        index = indices[step - 1]
        merges = opt.stats.merges
        if oracle and opt.schedule.boundary_next() and opt.ring.count == opt.ring.history:
            before = [opt.ring.snapshots(i) for i in range(len(sizes))]
        task.loss(model(task.train_x[index]), task.train_y[index]).backward()
        opt.step()
        opt.zero_grad()
        if opt.stats.merges == merges or not fork_steps or step < fork_steps[0]:
            continue
        fork_steps.pop(0)
        merged = flat(model)
        jump = torch.cat([torch.zeros(p.numel()) if j is None else j for j, p in zip(opt._jumps, model.parameters())])
        state = opt.optimizer.state_dict()
        future = indices[step : step + horizon]
        plain_losses, plain_end = branch(task, lr, merged - jump, state, future, snap_every)
        merged_losses, _ = branch(task, lr, merged, state, future, snap_every)
        accepted = jump != 0
        j, d = jump[accepted], (plain_end - (merged - jump))[accepted]
        oracle_ratio, oracle_gains = float("nan"), None
        if oracle:
            unmerged = merged - jump
            candidate = unmasked_jump(before, unmerged, sizes, opt.schedule.horizon)
            allowed = oracle_mask(candidate, plain_end - unmerged)
            oracle_losses, _ = branch(task, lr, unmerged + candidate * allowed, state, future, snap_every)
            oracle_ratio = float(allowed.float().mean())
            oracle_gains = [(a - b) / a for a, b in zip(plain_losses, oracle_losses)]
            # PDT's own jump is this jump on the elements its mask accepted
            print(f"  unmasked vs merged jump on accepted elements: {float((candidate - jump)[accepted].abs().max()):.2e}")
        results.append(Fork(
            step=step,
            mask_ratio=float(accepted.float().mean()),
            gains=[(a - b) / a for a, b in zip(plain_losses, merged_losses)],
            sign_agreement=float((torch.sign(j) == torch.sign(d)).float().mean()),
            cosine=float(torch.nn.functional.cosine_similarity(j, d, dim=0)),
            realised=float(j.dot(d) / j.dot(j)),
            noise_share=noise_share(opt.ring),
            oracle_ratio=oracle_ratio,
            oracle_gains=oracle_gains,
        ))
        print(f"  fork at step {step}: {results[-1]}", flush=True)
    return results


def summary(name: str, forks: list[Fork]) -> str:
    if not forks:
        return f"| {name} | no merge | | | | | | | |"
    tau = len(forks[0].gains) - 1
    med = lambda values: statistics.median(values)
    cells = [
        f"{med([f.mask_ratio for f in forks]):.2f}",
        f"{med([f.gains[0] for f in forks]) * 100:+.1f} %",
        f"{med([f.gains[1] for f in forks]) * 100:+.1f} %",
        f"{med([f.gains[tau] for f in forks]) * 100:+.1f} %",
        f"{med([f.sign_agreement for f in forks]):.2f}",
        f"{med([f.cosine for f in forks]):.2f}",
        f"{med([f.realised for f in forks]):.2f}",
        f"{med([f.noise_share for f in forks]):.2f}",
    ]
    return f"| {name} ({len(forks)} forks) | " + " | ".join(cells) + " |"


def verified_merges(name: str, task: Task, lr: float, snap_every: int, backoff: int) -> str:
    """One run of PDT's defaults with verified merges (seed 0; ``verify_backoff=backoff``):
    the row of the verify table."""
    wrap = needs_model(lambda opt, model: pdt.PDT(opt, snap_every=snap_every, verify=verification_loss(task, model),
                                                  verify_backoff=backoff))
    run, opt = train(task, wrap, seed=0, method="verify", lr=lr)
    stats = opt.stats
    checked = stats.merges + stats.verify_rejections
    kept = [change for _, change, fraction in stats.verify_loss_change if fraction > 0]
    whole = sum(1 for _, _, fraction in stats.verify_loss_change if fraction == 1.0)
    change = f"{statistics.median(kept):+.2e} [{min(kept):+.1e}, {max(kept):+.1e}]" if kept else "-"
    return (f"| {name} | {stats.predictions} | {checked} | {whole} | {stats.verify_backtracks} | "
            f"{stats.verify_rejections} | {change} | {stats.verify_seconds / run.seconds[-1]:.1%} |")


def selected(only: str | None) -> list[tuple[str, Callable[[], Task], float, int]]:
    """(name, task factory, tuned lr, snap_every) of the tasks whose name contains ``only``
    (any case; every task when None)."""
    return [(name, *spec) for name, spec in TASKS.items() if not only or only.lower() in name.lower()]


def oracle_table(args: argparse.Namespace) -> None:
    """The forks of PDT's defaults beside the oracle branch, one row per task."""
    lines = ["| task | forks | PDT: mask ratio | PDT: gain after 1 interval | PDT: after tau intervals | oracle: mask ratio "
             "| oracle: gain at merge | after 1 interval | after tau intervals |",
             "|---|---|---|---|---|---|---|---|---|"]
    details = []
    for name, factory, lr, snap_every in selected(args.only):
        print(name, flush=True)
        forks = anatomy(factory(), lr, snap_every, args.forks, oracle=True)
        if not forks:
            lines.append(f"| {name} | 0 | no merge | | | | | | |")
            continue
        tau = len(forks[0].gains) - 1
        med = lambda values: f"{statistics.median(values) * 100:+.1f} %"
        lines.append(
            f"| {name} | {len(forks)} | {statistics.median([f.mask_ratio for f in forks]):.3f} | "
            f"{med([f.gains[1] for f in forks])} | {med([f.gains[tau] for f in forks])} | "
            f"{statistics.median([f.oracle_ratio for f in forks]):.3f} | {med([f.oracle_gains[0] for f in forks])} | "
            f"{med([f.oracle_gains[1] for f in forks])} | {med([f.oracle_gains[tau] for f in forks])} |")
        details += [f"- {name}, step {f.step}: PDT {f.mask_ratio:.3f} of the elements, gain per interval "
                    + ", ".join(f"{g * 100:+.1f}%" for g in f.gains) + f"; oracle {f.oracle_ratio:.3f}, "
                    + ", ".join(f"{g * 100:+.1f}%" for g in f.oracle_gains) for f in forks]
    body = "\n".join(lines) + (
        "\n\nMedians over forks at merges near 20/40/60/80 % of training, seed 0, the task's tuned constant lr, PDT's "
        "defaults. Gain = (loss without the merge - loss with it) / loss without it, on the evaluation set, every branch "
        "trained by the plain optimizer (its state copied) on the same batches. The oracle branch merges DMD's unmasked "
        "jump J = s + p_tau - w (per-tensor DMD, full rank, the merge's horizon) on the elements where the plain "
        "branch's displacement D over the next tau intervals has J's sign and |D| >= |J|, and nowhere else.\n\n"
        + "\n".join(details))
    print(body)
    suffix = f", tasks matching '{args.only}'" if args.only else ""
    write_section(f"Where a merge's gain goes, beside an oracle mask (benchmarks/merge_anatomy.py --oracle){suffix}", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forks", type=int, default=4)
    parser.add_argument("--only", default=None, help="run only tasks whose name contains this")
    parser.add_argument("--verify", action="store_true", help="the verified-merges table instead of the forks")
    parser.add_argument("--oracle", action="store_true",
                        help="PDT's defaults only, each fork beside a branch whose mask has seen the future (see above)")
    parser.add_argument("--verify-backoff", type=int, default=pdt.PDTConfig(snap_every=1).verify_backoff,
                        help="with --verify: PDTConfig.verify_backoff (default: its default)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.verify:
        rows = ["| task | predictions | merges checked | kept whole | backtracked | rejected | verify-loss change at "
                "kept merges (median [min, max]) | verification share of training wall time |",
                "|---|---|---|---|---|---|---|---|"]
        for name, factory, lr, snap_every in selected(args.only):
            rows.append(verified_merges(name, factory(), lr, snap_every, args.verify_backoff))
            print(rows[-1], flush=True)
        body = "\n".join(rows) + (
            f"\n\nPDT's defaults (verify_backoff={args.verify_backoff}) with `verify=` the loss on a fixed batch of 256 "
            "training samples, seed 0, the task's "
            "tuned constant lr. A checked merge is kept whole, kept at 1/2 or 1/4 of its jump (backtracked), or undone "
            "(rejected); the loss change is the verify loss with what was kept minus without the merge.")
        held = f", verify_backoff={args.verify_backoff}" if args.verify_backoff else ""
        write_section(f"Verified merges{held} (benchmarks/merge_anatomy.py --verify)", body)
        return
    if args.oracle:
        oracle_table(args)
        return
    lines = ["| task | mask ratio | loss gain at merge | after 1 interval | after tau intervals | sign agreement "
             "J vs D | cosine(J, D) | realised <J,D>/|J|² | noise share of the ring's path |",
             "|---|---|---|---|---|---|---|---|---|"]
    details = []
    for name, factory, lr, snap_every in selected(args.only):
        for variant, config in VARIANTS.items():
            label = f"{name}{variant}"
            print(label, flush=True)
            forks = anatomy(factory(), lr, snap_every, args.forks, **config)
            lines.append(summary(label, forks))
            details += [f"- {label}, step {f.step}: gain per interval "
                        + ", ".join(f"{g * 100:+.1f}%" for g in f.gains)
                        + f"; sign {f.sign_agreement:.2f}, cos {f.cosine:.2f}, realised {f.realised:.2f}, "
                        f"noise {f.noise_share:.2f}" for f in forks]
    body = "\n".join(lines) + (
        "\n\nMedians over forks at merges near 20/40/60/80 % of training, seed 0, tuned lr, the configuration each row names. "
        "Gain = (loss without the merge - loss with it) / loss without it, both branches trained by the "
        "plain optimizer on the same batches. J = the merge's jump, D = the optimizer's own displacement "
        "over the next tau intervals, on the accepted elements.\n\n" + "\n".join(details))
    print(body)
    write_section("Where a merge's gain goes (benchmarks/merge_anatomy.py)", body)


if __name__ == "__main__":
    main()
