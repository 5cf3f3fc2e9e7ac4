"""Where a prediction's time goes on a small model: in training, and in a warm loop.

``benchmarks.cold_ops`` found that a small operation right after a training step costs ten times
what it costs in a warm loop, so a prediction's cost in training is not its microbenchmark's.
This splits one prediction of PDT's defaults (eager path, plain torch, the tasks' small models)
into its parts: the pack Grams (``ring_grams``), the host solve (``solve_coefficients``, numpy
on h x h matrices), the forecast/mask/merge of the packs (``_update_pack``) and the rest
(bookkeeping, the per-parameter updates of parameters too large to pack, the count read). Each
part's mean over the run's predictions is timed inside a training run of seed 0 (in lock-step with
the plain optimizer, as ``benchmarks.ttb`` times), then in a warm loop: the same predictions
repeated back to back on a copy of the trained run's ring and weights.

    python -m benchmarks.prediction_parts [--tasks 'digits MLP / SGD,mnist1d CNN'] [--loop 200]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Iterator

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

import pdt_compile as pdt
import pdt_compile.optim as optim_module
from pdt_compile.experiment import Training, train_in_lockstep
from pdt_compile.runtime import predictor
from pdt_compile.runtime.history import SnapshotRing, make_ring

from .prediction_cost import cases
from .report import write_section

PARTS = ("ring_grams", "solve_coefficients", "_update_pack")
"""The functions of :mod:`pdt_compile.runtime.predictor` timed as parts of a prediction."""


@contextlib.contextmanager
def timed_parts(totals: dict[str, float]) -> Iterator[None]:
    """Add the seconds spent in each of :data:`PARTS` (and in whole predictions, under
    ``"prediction"``) to ``totals`` while inside; the module's functions are restored after."""
    originals = {name: getattr(predictor, name) for name in (*PARTS, "predict_merge_capture_")}

    def timer(name: str, key: str):
        function = originals[name]

        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[key] = totals.get(key, 0.0) + time.perf_counter() - start
        return run

    for name in PARTS:
        setattr(predictor, name, timer(name, name))
    whole = timer("predict_merge_capture_", "prediction")
    caller = optim_module.predict_merge_capture_
    optim_module.predict_merge_capture_ = predictor.predict_merge_capture_ = whole
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(predictor, name, function)
        optim_module.predict_merge_capture_ = caller


def _copies(opt: pdt.PDT) -> tuple[SnapshotRing, list[Tensor]]:
    """A copy of ``opt``'s ring and tracked weights, to predict on without touching the run."""
    params = [p.detach().clone() for p in opt.tracked()]
    ring = make_ring(params, opt.config.history, pack_limit=predictor.pack_limit(opt.config, params[0].device,
                                                                                 sum(p.numel() for p in params)))
    ring.load_state_dict(opt._ring.state_dict())
    return ring, params


def warm_loop(opt: pdt.PDT, repeats: int, totals: dict[str, float]) -> None:
    """Repeat predictions back to back on a copy of ``opt``'s ring and weights."""
    ring, params = _copies(opt)
    with torch.no_grad(), timed_parts(totals):
        for _ in range(repeats):
            predictor.predict_merge_capture_(ring, params, [False] * len(params), opt.config, opt.schedule.tau,
                                             keep_jumps=True)


class _Operations(TorchDispatchMode):
    """Counts the ATen operations dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def operations(opt: pdt.PDT) -> int:
    """ATen operations (views included) in one prediction on a copy of ``opt``'s ring and
    weights: on small models, what a prediction's time follows."""
    ring, params = _copies(opt)
    with torch.no_grad():
        predictor.predict_merge_capture_(ring, params, [False] * len(params), opt.config, opt.schedule.tau,
                                         keep_jumps=True)  # fills the packs' caches, as in a run
        with _Operations() as counted:
            predictor.predict_merge_capture_(ring, params, [False] * len(params), opt.config, opt.schedule.tau,
                                             keep_jumps=True)
    return counted.count


def measure(task, snap_every: int, lr: float, loop: int) -> dict[str, dict[str, float]]:
    """Mean µs per prediction of each part, in training and in a warm loop."""
    in_training: dict[str, float] = {}
    with timed_parts(in_training):
        trainings = [Training(task, lambda o: pdt.PDT(o, snap_every=snap_every), seed=0, method="PDT", lr=lr),
                     Training(task, lambda o: o, seed=0, method="plain", lr=lr)]
        (_, opt), _ = train_in_lockstep(trainings)
    predictions = opt.stats.predictions
    warm: dict[str, float] = {}
    warm_loop(opt, loop, warm)
    return {"training": {k: v / predictions * 1e6 for k, v in in_training.items()},
            "warm": {k: v / loop * 1e6 for k, v in warm.items()}, "predictions": predictions,
            "operations": operations(opt)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="digits MLP / SGD,mnist1d CNN",
                        help="comma-separated substrings of task names (default: the two small models)")
    parser.add_argument("--loop", type=int, default=200, help="predictions in the warm loop")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = ["| task | where | predictions | one prediction (µs) | pack Grams | host solve | packs' forecast, mask, merge | "
             "the rest | torch operations |", "|---|---|---|---|---|---|---|---|---|"]
    for name, task, snap_every, lr in cases([s for s in args.tasks.split(",") if s]):
        result = measure(task, snap_every, lr, args.loop)
        for where, label, count in (("training", "in training", result["predictions"]), ("warm", "warm loop", args.loop)):
            parts = result[where]
            whole = parts.get("prediction", 0.0)
            rest = whole - sum(parts.get(p, 0.0) for p in PARTS)
            cells = " | ".join(f"{parts.get(p, 0.0):.0f} ({parts.get(p, 0.0) / whole:.0%})" for p in PARTS)
            lines.append(f"| {name} | {label} | {count} | **{whole:.0f}** | {cells} | {rest:.0f} ({rest / whole:.0%}) | "
                         f"{result['operations']} |")
            print(lines[-1], flush=True)
    body = "\n".join(lines) + (
        "\n\nPDT's defaults, eager path, seed 0, 1 torch thread. 'in training': the mean over the run's predictions, "
        "the run in lock-step with the plain optimizer (one training step of each in turn); 'warm loop': the mean of "
        "predictions repeated back to back on a copy of that run's final ring and weights (every parameter active). "
        "Parts: the pack Grams (`ring_grams`), the host solve (`solve_coefficients`: numpy on h x h matrices, and the "
        "device-host copies), the packs' forecast, mask, merge and ring update (`_update_pack`), and the rest "
        "(bookkeeping, parameters too large to pack, the read of the accepted counts). Schedule-free rows stack PDT on "
        "the schedule-free peer of benchmarks.ttb at the rate that run tuned. 'torch operations': the ATen operations, views "
        "included, that one prediction dispatches (on a copy of the run's final ring, its caches filled).")
    write_section("Where a prediction's time goes, in training and in a warm loop (benchmarks/prediction_parts.py)", body)


if __name__ == "__main__":
    main()
