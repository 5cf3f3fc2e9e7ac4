"""Benchmark bookkeeping that decides what a figure means (a few training steps at most)."""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pdt_compile import tasks  # noqa: E402
from pdt_compile.experiment import Run  # noqa: E402


def test_seed_major_runs_each_seeds_methods_together_and_rotates_which_steps_first(monkeypatch):
    import benchmarks.ttb as ttb

    calls = []

    def fake_timed(task, methods, *, seed, lr):
        calls.append((seed, [method for method, _ in methods]))
        return [f"{method}{seed}" for method, _ in methods]

    monkeypatch.setattr(ttb, "timed_in_lockstep", fake_timed)
    runs = ttb.seed_major(None, {"a": None, "b": None, "c": None}, seeds=4, lr=0.1)
    assert calls == [(0, ["a", "b", "c"]), (1, ["b", "c", "a"]), (2, ["c", "a", "b"]), (3, ["a", "b", "c"])]
    assert list(runs) == ["a", "b", "c"]  # the first method stays the baseline of every table
    assert runs["b"] == ["b0", "b1", "b2", "b3"]
    calls.clear()
    later = ttb.seed_major(None, {"a": None, "b": None}, seeds=2, lr=0.1, first_seed=3)
    assert calls == [(3, ["b", "a"]), (4, ["a", "b"])] and later["a"] == ["a3", "a4"]


def test_the_rate_drop_report_names_each_seed_from_the_first_it_ran():
    from benchmarks.rate_drop import per_seed

    def run(method, seed, losses):
        return Run(method=method, seed=seed, steps=[10, 20], seconds=[1.0, 2.0], train_loss=losses,
                   test_accuracy=[0.5, 0.9], mask_ratio=[(10, 0.1)] if method != "baseline" else [],
                   predictions=int(method != "baseline"))

    runs = {"baseline": [run("baseline", 5, [0.5, 0.2]), run("baseline", 6, [0.5, 0.3])],
            "PDT": [run("PDT", 5, [0.2, 0.1]), run("PDT", 6, [0.4, 0.35])]}
    lines = per_seed(runs, first_seed=5).splitlines()
    assert lines[0].startswith("- seed 5 ") and "PDT: 2.00x in steps, 2.00x in wall time, 1 predictions" in lines[0]
    assert lines[1].startswith("- seed 6 ") and "PDT: never" in lines[1]


def test_a_run_title_names_only_what_differs_from_the_full_default_run():
    from benchmarks.report import run_title

    assert run_title("T") == "T"
    assert run_title("T", "ViT", 5, 2, 0.002, ("steps",)) == "T, tasks matching 'ViT', steps, 5 seeds from seed 2, lr 0.002"
    assert run_title("T", seeds=3, first_seed=3) == "T, 3 seeds from seed 3"


def test_the_schedules_benchmark_adds_the_no_window_control_on_the_exponential_decay_only():
    """On the step schedule each drop lands below half the peak, so PDT without the decay
    window would make the defaults' predictions: that row is left out there."""
    from benchmarks.schedules import NO_WINDOW, methods

    assert list(methods("steps", 10))[1:] == ["PDT default"]
    exponential = methods("exponential", 10)
    assert list(exponential)[1:] == ["PDT default", NO_WINDOW]
    made = exponential[NO_WINDOW](torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1))
    assert made.config.decay_window is None and made.config.snap_every == 10


def test_the_short_epochs_benchmark_runs_each_spacing_with_and_without_momentum_spacing():
    """Each short spacing twice, so that the table shows what spacing to the momentum's memory
    changes; the task's own spacing at PDT's defaults for reference; the baseline first."""
    from benchmarks.short_epochs import methods

    made = methods([2, 4], 40)
    assert list(made)[:2] == ["baseline (tuned constant lr)", "PDT default, snap_every=40 (the task's epoch)"]
    sgd = lambda: torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1, momentum=0.9)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the spacing warning
        spacings = {name: made[name](sgd()).config.snap_every for name in list(made)[2:]}
    assert spacings == {"PDT, snap_every=2, momentum_spacing=None": 2, "PDT, snap_every=2, momentum_spacing=2.0": 20,
                        "PDT, snap_every=4, momentum_spacing=None": 4, "PDT, snap_every=4, momentum_spacing=2.0": 20}
    assert list(methods([2], 40, (1.0, 4.0)))[2:] == ["PDT, snap_every=2, momentum_spacing=None", "PDT, snap_every=2, momentum_spacing=1.0",
                                                       "PDT, snap_every=2, momentum_spacing=4.0"]


def test_the_sharpness_aware_benchmark_trains_sam_in_its_two_step_loop_and_its_base_alone():
    """SAM takes two gradients a step (the harness's two-step loop, the second at perturbed
    weights), PDT on it merges, and the base optimizer alone takes one."""
    import pdt_compile as pdt
    from benchmarks.sharpness_aware import methods, sharpness_aware
    from pdt_compile.experiment import train

    task = sharpness_aware(tasks.digits_mlp(steps=60, hidden=16), rho=0.05)
    wraps = methods(5)
    sam, alone = "SAM (the baseline)", "the task's optimizer alone (no SAM)"
    gradients = {}
    for method in (sam, alone):
        counted = []

        def counting_model(make=task.make_model, counted=counted):
            model = make()
            next(model.parameters()).register_hook(lambda grad: counted.append(1))
            return model

        train(dataclasses.replace(task, make_model=counting_model), wraps[method], seed=0, method=method)
        gradients[method] = len(counted)
    assert gradients[sam] == 2 * gradients[alone] == 120
    run, opt = train(task, lambda opt: pdt.PDT(opt, snap_every=5, burn_in=2), seed=0, method="PDT on SAM")
    assert opt.stats.merges > 0


def test_a_run_counts_every_prediction_beyond_the_history_its_stats_keep():
    """``Run.predictions`` is PDT's count over the whole run; the mask-ratio history stops at
    ``history_limit``, and a report that counted it would undercount a long run."""
    import pdt_compile as pdt
    from benchmarks.rate_drop import per_seed
    from pdt_compile.experiment import train

    task = tasks.digits_mlp(steps=90, hidden=16)
    base, _ = train(task, lambda opt: opt, seed=0, method="baseline")
    run, opt = train(task, lambda opt: pdt.PDT(opt, snap_every=5, burn_in=2, history_limit=2), seed=0, method="PDT")
    assert run.predictions == opt.stats.predictions > len(run.mask_ratio) == 2
    assert f"{opt.stats.predictions} predictions" in per_seed({"baseline": [base], "PDT": [run]}, first_seed=0)


def fake_lockstep(monkeypatch, repeats):
    """Make ``benchmarks.ttb.lockstep`` return, per method and one call after another, the
    given (seconds, losses)."""
    import benchmarks.ttb as ttb

    made = {method: iter(values) for method, values in repeats.items()}
    calls = []

    def fake(task, methods, *, seed, lr):
        calls.append([method for method, _ in methods])
        runs = []
        for method, _ in methods:
            seconds, losses = next(made[method])
            runs.append(Run(method=method, seed=seed, steps=[10, 20], seconds=seconds, train_loss=losses))
        return runs

    monkeypatch.setattr(ttb, "lockstep", fake)
    return ttb, calls


def test_a_block_with_a_short_run_is_repeated_whole_and_keeps_the_least_time_to_each_evaluation(monkeypatch):
    long = [3.0, ttb_short() + 1]
    ttb, calls = fake_lockstep(monkeypatch, {
        "a": [([0.3, 0.9], [1.0, 0.5]), ([0.4, 0.7], [1.0, 0.5]), ([0.2, 0.8], [1.0, 0.5])],
        "b": [(long, [1.0, 0.4]), ([2.0, ttb_short() + 2], [1.0, 0.4]), ([3.5, ttb_short() + 0.5], [1.0, 0.4])],
        "c": [([0.3, 0.9], [1.0, 0.6]), ([0.1, 0.2], [1.0, 0.7]), ([0.2, 0.8], [1.0, 0.6])],
    })
    a, b, c = ttb.timed_in_lockstep(None, [("a", None), ("b", None), ("c", None)], seed=2, lr=0.1)
    assert calls == [["a", "b", "c"]] * 3  # never the short runs alone: they would have the caches to themselves
    assert a.seconds == [0.2, 0.7] and a.train_loss == [1.0, 0.5]
    assert b.seconds == [2.0, ttb_short() + 0.5]
    assert c.seconds == [0.2, 0.8]  # the repeat that left c's trajectory is not used


def test_a_block_of_long_runs_is_not_repeated(monkeypatch):
    long = [3.0, ttb_short() + 1]
    ttb, calls = fake_lockstep(monkeypatch, {"a": [(long, [1.0, 0.5])], "b": [(long, [1.0, 0.4])]})
    ttb.timed_in_lockstep(None, [("a", None), ("b", None)], seed=0, lr=0.1)
    assert calls == [["a", "b"]]


def test_workers_take_the_longest_tasks_first_and_every_suite_task_has_a_place():
    import benchmarks.ttb as ttb

    import argparse

    full = argparse.Namespace(quick=False, core=False, peers=False, cosine_only=False)
    names = ttb.units(full, list(ttb.task_suite(quick=False)))
    assert sorted(ttb.LONGEST_FIRST) == sorted(names)
    assert ttb.longest_first(["digits MLP / LAMB", "new task", "mnist1d ViT / AdamW"]) == [
        "mnist1d ViT / AdamW", "digits MLP / LAMB", "new task"]


def ttb_short() -> float:
    import benchmarks.ttb as ttb

    return ttb.SHORT_RUN_SECONDS


def test_lockstep_training_follows_each_methods_own_trajectory():
    """Training side by side, one step of each in turn, changes no run: each equals the same
    run trained alone (same weights, batches, merges, evaluations)."""
    import pdt_compile as pdt
    from pdt_compile.experiment import Training, train, train_in_lockstep

    task = tasks.digits_mlp(steps=90, hidden=16)
    wraps = {"plain": lambda opt: opt, "pdt": lambda opt: pdt.PDT(opt, snap_every=10, burn_in=1, history=3)}
    alone = {method: train(task, wrap, seed=1, method=method)[0] for method, wrap in wraps.items()}
    together = train_in_lockstep([Training(task, wrap, seed=1, method=method) for method, wrap in wraps.items()])
    for (run, optimizer), method in zip(together, wraps):
        assert run.method == method and run.steps == alone[method].steps
        assert run.train_loss == alone[method].train_loss and run.test_accuracy == alone[method].test_accuracy
    assert together[1][1].stats.merges > 0
    assert alone["plain"].train_loss != alone["pdt"].train_loss


def test_the_learning_rate_sweep_follows_a_best_rate_far_past_its_first_edge(monkeypatch):
    """Schedule-free on the LAMB task is best 512x above LAMB's rate: a sweep that stops
    doubling early times PDT against an under-tuned peer."""
    import benchmarks.ttb as ttb

    best = 0.01 * 2**9

    def fake_train(task, wrap, *, seed, method, lr):
        assert task.eval_every == task.steps  # SGD: no evaluation between, a sweep compares final losses only
        return Run(method=method, seed=seed, steps=[10], seconds=[1.0], train_loss=[abs(math.log2(lr / best)) + 1]), None

    monkeypatch.setattr(ttb, "train", fake_train)
    task = dataclasses.replace(tasks.digits_mlp(steps=10), lr=0.01)
    lr, sweep = ttb.tune_lr(task, [0.25, 0.5, 1.0, 2.0, 4.0])
    assert lr == best and max(l for l, _ in sweep) == 2 * best  # one past the best, which is worse
    assert not ttb.at_edge(lr, sweep)
    assert ttb.at_edge(2.56, [(0.64, 0.009), (1.28, 0.002), (2.56, 0.0006)])  # the 18:00 run's LAMB peer
    assert ttb.at_edge(0.64, [(0.64, 0.0001), (1.28, 0.002)]) and not ttb.at_edge(0.1, [(0.1, float("nan"))])


def test_a_schedule_free_sweep_evaluates_where_its_timed_runs_do(monkeypatch):
    """Schedule-free's eval()/train() round trip changes its trajectory: a sweep without the
    evaluations would tune the rate on other runs than those it times (on the character
    transformer it chose 0.024 where the timed runs' trajectory is best at 0.048)."""
    import schedulefree

    import benchmarks.ttb as ttb

    def fake_train(task, wrap, *, seed, method, lr):
        assert task.eval_every == 45
        return Run(method=method, seed=seed, steps=[10], seconds=[1.0], train_loss=[abs(math.log2(lr))]), None

    monkeypatch.setattr(ttb, "train", fake_train)
    task = dataclasses.replace(tasks.digits_mlp(steps=90), lr=1.0,
                               make_optimizer=lambda params, lr: schedulefree.SGDScheduleFree(params, lr=lr))
    assert ttb.evaluation_moves_weights(task) and not ttb.evaluation_moves_weights(tasks.digits_mlp(steps=90))
    assert ttb.tune_lr(task, [0.5, 1.0, 2.0])[0] == 1.0


def test_a_peer_filter_times_only_the_peers_it_names(monkeypatch):
    import benchmarks.ttb as ttb

    timed = []
    monkeypatch.setattr(ttb, "tune_lr", lambda task, factors: (0.1, [(0.1, 1.0)]))
    schedules = []
    monkeypatch.setattr(ttb, "seed_major", lambda task, suite, seeds, lr: schedules.append(task.schedule) or {m: [] for m in suite})
    monkeypatch.setattr(ttb, "summarise", lambda name, runs, *rest: timed.append(name) or name)
    task = tasks.digits_mlp(steps=90)
    assert len(ttb.peer_sections("digits MLP / SGD", task, 10, 1, False)) == 2
    timed.clear()
    assert ttb.peer_sections("digits MLP / SGD", task, 10, 1, False, "schedule-free") == timed
    assert timed == ["digits MLP / SGD: PDT stacked on schedule-free"]
    timed.clear()
    assert ttb.peer_sections("digits MLP / SGD", task, 10, 1, False, schedule="cosine") == timed
    assert timed == ["digits MLP / SGD: PDT stacked on Lookahead (k=5, alpha=0.5), cosine schedule"]
    assert schedules[-1] == "cosine" and set(schedules[:-1]) == {"constant"}


def test_the_muon_peer_gives_the_blocks_matrices_to_muon_and_the_rest_to_adamw_at_a_tenth_of_its_rate():
    import benchmarks.ttb as ttb
    from pdt_compile.experiment import build_optimizer

    task = tasks.mnist1d_vit(epochs=1)
    assert ttb.MUON not in ttb.peers("mnist1d CNN / SGD-momentum", tasks.mnist1d_cnn(steps=10))
    peer_task = dataclasses.replace(task, make_optimizer=ttb.peers("mnist1d ViT / AdamW", task)[ttb.MUON])
    model = task.make_model()
    optimizer = build_optimizer(peer_task, model, 0.02)
    muon, adamw = optimizer.param_groups
    hidden = {id(p) for p in model.blocks.parameters() if p.ndim == 2}
    assert muon["use_muon"] and {id(p) for p in muon["params"]} == hidden and muon["lr"] == 0.02
    assert not adamw["use_muon"] and adamw["lr"] == pytest.approx(0.002) and adamw["weight_decay"] == 0.05
    assert len(muon["params"]) + len(adamw["params"]) == len(list(model.parameters()))
    assert {id(p) for p in adamw["params"]} >= {id(model.head.weight), id(model.embed.weight), id(model.position)}
    assert not ttb.evaluation_moves_weights(peer_task)


def test_the_torch_muon_pair_steps_both_halves_shares_their_rates_and_wraps_only_the_halves_named():
    import benchmarks.torch_muon as torch_muon
    import pdt_compile as pdt
    from benchmarks.controls import Nudge
    from pdt_compile.experiment import lr_schedule

    task = dataclasses.replace(tasks.mnist1d_vit(epochs=1), schedule="cosine")
    model = task.make_model()
    pair = torch_muon.torch_muon_pair(model, 0.02, task)
    muon, adamw = pair.members["muon"], pair.members["adamw"]
    assert type(muon) is torch.optim.Muon and type(adamw) is torch.optim.AdamW
    assert {id(p) for g in muon.param_groups for p in g["params"]} == {id(p) for p in model.blocks.parameters() if p.ndim == 2}
    assert adamw.param_groups[0]["lr"] == pytest.approx(0.002) and adamw.param_groups[0]["weight_decay"] == 0.05
    assert sum(len(g["params"]) for g in pair.param_groups) == len(list(model.parameters()))
    wrapped = pair.wrapped({"adamw": lambda o: pdt.PDT(o, snap_every=5, moment_ratio=None)})
    assert wrapped.members["muon"] is muon and isinstance(wrapped.members["adamw"], pdt.PDT)
    assert wrapped.members["adamw"].config.moment_ratio is None and wrapped.stats is wrapped.members["adamw"].stats
    scheduler = lr_schedule(task, wrapped)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = task.train_x[:8], task.train_y[:8]
    task.loss(model(x), y).backward()
    wrapped.step()
    wrapped.zero_grad()
    scheduler.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # both halves stepped
    assert all(p.grad is None for p in model.parameters())
    assert muon.param_groups[0]["lr"] < 0.02 and adamw.param_groups[0]["lr"] < 0.002  # the schedule reaches both
    assert muon.param_groups[0]["lr"] / adamw.param_groups[0]["lr"] == pytest.approx(10)
    nudged = torch_muon.wrap_of(5, torch_muon.SETTINGS[torch_muon.NUDGED])(torch_muon.torch_muon_pair(task.make_model(), 0.02, task))
    assert all(type(member) is Nudge and member.config.snap_every == 5 for member in nudged.members.values())


def test_the_8bit_peer_of_the_adamw_tasks_is_bitsandbytes_adamw8bit_with_the_tasks_betas_and_decay():
    pytest.importorskip("bitsandbytes")
    import benchmarks.ttb as ttb
    from pdt_compile.experiment import build_optimizer

    task = tasks.mnist1d_vit(epochs=1)
    assert ttb.EIGHT_BIT not in ttb.peers("mnist1d CNN / SGD-momentum", tasks.mnist1d_cnn(steps=10))
    peer_task = dataclasses.replace(task, make_optimizer=ttb.peers("mnist1d ViT / AdamW", task)[ttb.EIGHT_BIT])
    optimizer = build_optimizer(peer_task, task.make_model(), 0.004)
    adamw = task.make_optimizer([torch.zeros(1, requires_grad=True)], 0.004)
    assert type(optimizer).__module__ == "bitsandbytes.optim.adamw" and type(optimizer).__name__ == "AdamW8bit"
    assert all(group["lr"] == 0.004 and group["weight_decay"] == adamw.defaults["weight_decay"] > 0
               and tuple(group["betas"]) == tuple(adamw.defaults["betas"]) for group in optimizer.param_groups)


def test_the_largest_loss_rise_is_found_between_two_evaluations():
    from benchmarks.blowups import worst_rise

    run = Run(method="m", seed=0, steps=[0, 10, 20, 30], seconds=[0, 1, 2, 3], train_loss=[1.0, 0.01, 3.0, 2.0])
    assert worst_rise(run) == (300.0, 2)


def test_a_baseline_that_ends_at_zero_loss_is_timed_to_the_floor():
    # The Shampoo baseline on digits ended at exactly 0: the target is float32 saturation.
    from pdt_compile.experiment import LOSS_FLOOR, speedup

    baseline = Run(method="b", seed=0, steps=[10, 20, 30], seconds=[1.0, 2.0, 3.0], train_loss=[1e-3, 5e-7, 0.0])
    run = Run(method="p", seed=0, steps=[10, 20, 30], seconds=[1.0, 2.0, 3.0], train_loss=[8e-7, 1e-7, 1e-8])
    assert LOSS_FLOOR == 1e-6 and speedup(baseline, run) == (2.0, 2.0)
    assert speedup(baseline, Run(method="q", seed=0, steps=[30], seconds=[3.0], train_loss=[2e-6])) == (None, None)


def test_rates_that_all_reach_the_floor_are_told_apart_by_how_soon(monkeypatch):
    import benchmarks.ttb as ttb

    reach = {0.5: None, 1.0: 30, 2.0: 10, 4.0: 20}  # step at which each rate first reaches the floor

    def fake_train(task, wrap, *, seed, method, lr):
        if task.eval_every == task.steps:  # the sweep: final losses only
            return Run(method=method, seed=seed, steps=[30], seconds=[1.0], train_loss=[0.01 if reach[lr] is None else 0.0]), None
        losses = [1e-3 if reach[lr] is None or step < reach[lr] else 0.0 for step in (10, 20, 30)]
        return Run(method=method, seed=seed, steps=[10, 20, 30], seconds=[1.0, 2.0, 3.0], train_loss=losses), None

    monkeypatch.setattr(ttb, "train", fake_train)
    task = dataclasses.replace(tasks.digits_mlp(steps=30), lr=1.0, eval_every=10)
    lr, sweep = ttb.tune_lr(task, [0.5, 1.0, 2.0, 4.0], extend=0)
    assert lr == 2.0 and dict(sweep)[4.0] == ttb.LOSS_FLOOR


def test_a_run_stays_below_a_target_from_its_last_crossing():
    from benchmarks.trajectory import stays_below

    run = Run(method="b", seed=0, steps=[10, 20, 30, 40], seconds=[1.0] * 4, train_loss=[1e-7, 1e-2, 5e-7, 1e-8])
    assert stays_below(run, 1e-6) == 30 and run.time_to(1e-6)[0] == 10
    assert stays_below(Run(method="c", seed=0, steps=[10], seconds=[1.0], train_loss=[1.0]), 1e-6) is None


def test_a_trajectory_lists_tau_only_where_it_changed():
    from benchmarks.trajectory import tau_changes

    assert tau_changes([(40, 8), (80, 8), (120, 9), (160, 9), (200, 4)]) == "40: 8, 120: 9, 200: 4"
    assert tau_changes([]) == ""


def test_a_merges_setback_compares_the_losses_on_either_side_of_it():
    import math
    from types import SimpleNamespace

    from benchmarks.setbacks import merge_setbacks

    # snap_every 8: q = 2. losses[i] is step i + 1's loss; merges after steps 4 and 8 (not 6: nothing accepted).
    losses = [9.0, 9.0, 1.0, 1.0, 2.0, 2.0, 5.0, 4.0, 2.0, 2.0, 7.0]
    opt = SimpleNamespace(config=SimpleNamespace(snap_every=8), losses=losses,
                          stats=SimpleNamespace(mask_ratio_history=[(4, 0.2), (6, 0.0), (8, 0.1), (10, 0.3)]))
    assert merge_setbacks(opt) == [math.log(2.0), math.log(2.0 / 4.5)]  # step 10 lacks q losses after it


def test_the_oracle_mask_allows_a_jump_only_as_far_as_the_optimizer_goes_its_way():
    from benchmarks.merge_anatomy import oracle_mask

    jump = torch.tensor([1.0, 1.0, -1.0, 1.0, 0.0])
    future = torch.tensor([2.0, 0.5, -1.0, -3.0, 1.0])
    assert oracle_mask(jump, future).tolist() == [True, False, True, False, False]


def test_the_unmasked_jump_is_each_parameters_own_forecast_minus_its_weights():
    import pdt_compile as pdt
    from benchmarks.merge_anatomy import unmasked_jump

    generator = torch.Generator().manual_seed(0)
    rows = [torch.randn(5, 2, generator=generator).cumsum(0), torch.randn(5, 3, generator=generator).cumsum(0)]
    weights = torch.randn(5, generator=generator)
    jump = unmasked_jump(rows, weights, [2, 3], horizon=4)
    expected = [pdt.forecast(r, 4, rank="full")[-1] - w for r, w in zip(rows, weights.split([2, 3]))]
    assert torch.equal(jump, torch.cat(expected))
    # one DMD per parameter: fitted to both together, the forecast differs
    assert not torch.allclose(jump, pdt.forecast(torch.cat(rows, 1), 4, rank="full")[-1] - weights)


def test_the_nudge_moves_every_weight_by_about_a_millionth_at_prediction_boundaries_only():
    from benchmarks.controls import Nudge

    w = torch.nn.Parameter(torch.linspace(1.0, 2.0, 1000))
    opt = Nudge(torch.optim.SGD([w], lr=0.1), snap_every=2, history=3, burn_in=3)
    moved = []
    for step in range(1, 15):
        w.grad = torch.full_like(w, 1e-3)
        before = w.detach().clone()
        opt.step()
        relative = ((w.detach() - (before - 1e-4)) / before).abs()  # beside SGD's own step
        if relative.max() > 0:
            moved.append(step)
            assert 1e-8 < relative.median() < 1e-5 and relative.max() < 1e-5
    assert moved == [8, 10, 12, 14]  # every boundary from the first that can predict
    assert opt.stats.merges == 0


def test_a_resumed_run_keeps_each_finished_tasks_sections_and_where_they_were_measured(monkeypatch):
    import argparse

    import benchmarks.ttb as ttb

    written = {}
    monkeypatch.setattr(ttb, "write_section", lambda title, body: written.update({title: f"## {title}\n\nDate: D\n\n{body}"}))
    monkeypatch.setattr(ttb, "remove_section", lambda title: None)
    names = ["digits MLP / SGD", "digits MLP / Shampoo", "mnist1d ViT / AdamW"]
    sections = {"digits MLP / SGD": ["### digits MLP / SGD\n\n| a |\n|---|", "![digits MLP / SGD](x.png)",
                                     "### digits MLP / SGD: cosine schedule\n\n| b |",
                                     "#### digits MLP / SGD: which schedule, and PDT against each\n\ntext"],
                "mnist1d ViT / AdamW": ["### mnist1d ViT / AdamW: PDT stacked on schedule-free\n\n| c |"]}
    origins = {"digits MLP / SGD": "revision abc, run of 2026-11-30 15:58 UTC",
               "mnist1d ViT / AdamW": "revision def with uncommitted changes, run of 2026-12-01 08:00 UTC"}
    args = argparse.Namespace(core=False, peers=False, cosine_only=False, only=None, peer=None, peer_schedule="constant", workers=2)
    done = list(sections)
    ttb.save(args, 3, 0.0, [t for n in done for t in sections[n]], done, origins)
    [(title, text)] = written.items()
    assert title == ttb.titles(args)[1]
    kept = ttb.resumable(text, names)
    assert list(kept) == done
    assert {n: texts for n, (texts, _) in kept.items()} == sections
    assert {n: origin for n, (_, origin) in kept.items()} == origins
    # A section written before the origins were recorded: its code is unknown, nothing is kept.
    old = text.replace(text[text.index("Where each task"):text.index("Total benchmark time")], "")
    assert ttb.resumable(old, names) == {}
    assert ttb.resumable("## finished\n\nno progress line", names) == {}


def test_a_resumed_unit_keeps_the_cpu_that_measured_it():
    import benchmarks.ttb as ttb

    names = ["digits MLP / SGD", "mnist1d ViT / AdamW"]
    section = ("## t\n\nDate: D  \nMachine: vm: 2 CPUs (Intel(R) Xeon(R) Processor, AVX512), no GPU, torch x\n\n"
               "Where each task was measured: digits MLP / SGD (revision abc, run of D); mnist1d ViT / AdamW "
               "(revision def on AMD EPYC AVX2, run of E). Total benchmark time 1 s. **Run in progress: 2 unit(s) "
               "done (digits MLP / SGD, mnist1d ViT / AdamW).**\n\n### digits MLP / SGD\n\n| a |\n\n"
               "### mnist1d ViT / AdamW\n\n| b |")
    kept = ttb.resumable(section, names)
    assert kept["digits MLP / SGD"][1] == "revision abc on Intel Xeon Processor AVX512, run of D"
    assert kept["mnist1d ViT / AdamW"][1] == "revision def on AMD EPYC AVX2, run of E"


def test_a_task_and_its_peers_are_two_units_only_where_a_run_measures_both():
    import argparse

    import benchmarks.ttb as ttb

    def mode(**flags):
        return argparse.Namespace(**{"quick": False, "core": False, "peers": False, "cosine_only": False, **flags})

    tasks = ["digits MLP / SGD", "mnist1d ViT / AdamW"]
    split = ["digits MLP / SGD", "digits MLP / SGD: peers", "mnist1d ViT / AdamW", "mnist1d ViT / AdamW: peers"]
    assert ttb.units(mode(), tasks) == split
    assert ttb.units(mode(core=True, peers=True), tasks) == split
    for whole in (mode(core=True), mode(peers=True), mode(core=True, cosine_only=True), mode(quick=True)):
        assert ttb.units(whole, tasks) == tasks


def test_a_peers_unit_is_resumed_on_its_own(monkeypatch):
    import argparse

    import benchmarks.ttb as ttb

    written = {}
    monkeypatch.setattr(ttb, "write_section", lambda title, body: written.update({title: f"## {title}\n\nDate: D\n\n{body}"}))
    monkeypatch.setattr(ttb, "remove_section", lambda title: None)
    args = argparse.Namespace(core=False, peers=False, cosine_only=False, only=None, peer=None, peer_schedule="constant", workers=2)
    names = ttb.units(argparse.Namespace(quick=False, **vars(args)), ["digits MLP / SGD", "mnist1d ViT / AdamW"])
    peers = "### mnist1d ViT / AdamW: PDT stacked on schedule-free\n\n| c |"
    main = ["### mnist1d ViT / AdamW\n\n| a |", "### mnist1d ViT / AdamW: cosine schedule\n\n| b |"]
    ttb.save(args, 3, 0.0, [peers], ["mnist1d ViT / AdamW: peers"], {"mnist1d ViT / AdamW: peers": "revision abc, run of D"})
    [text] = written.values()
    assert ttb.resumable(text, names) == {"mnist1d ViT / AdamW: peers": ([peers], "revision abc, run of D")}
    # Both halves done, each on its own commit: the task's unit does not take its peers' sections.
    both = {"mnist1d ViT / AdamW": "revision def, run of E", "mnist1d ViT / AdamW: peers": "revision abc, run of D"}
    ttb.save(args, 3, 0.0, [*main, peers], list(both), both)
    [text] = written.values()
    assert ttb.resumable(text, names) == {"mnist1d ViT / AdamW": (main, "revision def, run of E"),
                                          "mnist1d ViT / AdamW: peers": ([peers], "revision abc, run of D")}


def test_resume_measures_only_the_tasks_the_in_progress_section_lacks(monkeypatch):
    import benchmarks.ttb as ttb

    names = ["digits MLP / SGD", "digits MLP / Shampoo", "mnist1d ViT / AdamW"]
    in_progress = ("## Time to baseline, run in progress (benchmarks/ttb.py)\n\nDate: D\n\nintro Where each task was "
                   "measured: mnist1d ViT / AdamW (revision abc, run of D); mnist1d ViT / AdamW: peers (revision abc, run "
                   "of D). Total benchmark time 1 s (this process). **Run in progress: 2 unit(s) done (mnist1d ViT / "
                   "AdamW, mnist1d ViT / AdamW: peers).**\n\n### mnist1d ViT / AdamW\n\n| old |\n\n"
                   "### mnist1d ViT / AdamW: PDT stacked on Lookahead\n\n| old peers |")
    asked, written = [], {}
    monkeypatch.setattr(ttb, "task_suite", lambda quick: dict.fromkeys(names))
    monkeypatch.setattr(ttb, "read_section", lambda title: in_progress if "in progress" in title else None)
    def measure_tasks(args, todo, seeds):
        asked.extend(todo)
        return [(name, [f"### {name}\n\n| new |"]) for name in todo]

    monkeypatch.setattr(ttb, "measure_tasks", measure_tasks)
    monkeypatch.setattr(ttb, "write_section", lambda title, body: written.update({title: body}))
    monkeypatch.setattr(ttb, "remove_section", lambda title: None)
    monkeypatch.setattr(sys, "argv", ["ttb", "--resume", "--workers", "2"])
    ttb.main()
    assert asked == ["digits MLP / SGD", "digits MLP / SGD: peers", "digits MLP / Shampoo", "digits MLP / Shampoo: peers"]
    final = written["Time to baseline (benchmarks/ttb.py)"]
    assert (final.index("### digits MLP / SGD\n") < final.index("### digits MLP / SGD: peers") < final.index("### digits MLP / Shampoo\n")
            < final.index("| old |") < final.index("| old peers |"))
    assert "mnist1d ViT / AdamW (revision abc, run of D); mnist1d ViT / AdamW: peers (revision abc, run of D)" in final


def test_every_variant_is_a_valid_configuration_and_its_cases_include_schedule_free_adamw():
    import pdt_compile as pdt
    import benchmarks.variants as variants

    task = tasks.digits_mlp()
    for fields in variants.VARIANTS.values():
        pdt.PDTConfig(snap_every=30, **{k: v for k, v in fields.items() if k not in variants.RUN_FIELDS})  # validated
        wrap = variants.wrap_of(task, 30, fields)
        assert getattr(wrap, "needs_model", False) == bool(fields.get("verify"))
    cases = variants.variant_cases("char transformer")
    assert "char transformer / AdamW: PDT on schedule-free" in cases
    task, snap_every, lr, _ = cases["char transformer / AdamW: PDT on schedule-free"]
    assert lr == 0.048 and type(task.make_optimizer([torch.zeros(2, requires_grad=True)], lr)).__name__ == "AdamWScheduleFree"


def test_the_optimizer_option_replaces_adamw_and_keeps_its_betas_and_decay():
    import pytorch_optimizer as po

    from benchmarks.variants import IN_PLACE_OF_ADAMW, in_place_of_adamw

    params = [torch.zeros(2, requires_grad=True)]
    make_adamw = lambda p, lr: torch.optim.AdamW(p, lr=lr, betas=(0.8, 0.95), weight_decay=0.05)
    for name, kind in (("nadamw", torch.optim.NAdam), ("radamw", torch.optim.RAdam)):
        opt = in_place_of_adamw(make_adamw, name)(iter(params), 0.01)
        group = opt.param_groups[0]
        assert type(opt) is kind and group["params"] == params and group["lr"] == 0.01
        assert group["betas"] == (0.8, 0.95) and group["weight_decay"] == 0.05 and group["decoupled_weight_decay"]
    lion = in_place_of_adamw(make_adamw, "lion")(params, 1e-4)
    assert type(lion) is po.Lion and lion.param_groups[0]["weight_decay"] == pytest.approx(0.5)
    for name, module in (("adamw8bit", "torchao.optim.adam"), ("bnb-adamw8bit", "bitsandbytes.optim.adamw")):
        low_bit = in_place_of_adamw(make_adamw, name)(params, 0.01)
        group = low_bit.param_groups[0]
        assert type(low_bit).__module__ == module and type(low_bit).__name__ == "AdamW8bit"
        assert tuple(group["betas"]) == (0.8, 0.95) and group["weight_decay"] == 0.05 and float(group["lr"]) == pytest.approx(0.01)
    lion8bit = in_place_of_adamw(make_adamw, "bnb-lion8bit")(params, 1e-4)
    assert type(lion8bit).__module__ == "bitsandbytes.optim.lion" and type(lion8bit).__name__ == "Lion8bit"
    assert lion8bit.param_groups[0]["weight_decay"] == pytest.approx(0.5)
    assert set(IN_PLACE_OF_ADAMW) == {"nadamw", "radamw", "lion", "adamw8bit", "bnb-adamw8bit", "bnb-lion8bit"}
    with pytest.raises(ValueError, match="--optimizer nadamw: the case trains SGD"):
        in_place_of_adamw(lambda p, lr: torch.optim.SGD(p, lr=lr), "nadamw")(params, 0.1)


def test_a_variant_that_stops_at_a_fraction_of_training_predicts_before_it_only():
    from benchmarks.variants import run_variant

    task = tasks.digits_mlp(steps=160)
    full, whole = run_variant(task, 10, {}, seed=0, method="default", lr=task.lr)
    run, half = run_variant(task, 10, {"stop_at": 0.5}, seed=0, method="half", lr=task.lr)
    assert whole.stats.predictions > half.stats.predictions > 0
    assert max(step for step, _ in half.stats.mask_ratio_history) <= 80 < max(step for step, _ in whole.stats.mask_ratio_history)
    assert half.stats.boundaries == whole.stats.boundaries  # snapshots go on
    assert run.train_loss[0] == full.train_loss[0] and run.final_loss != full.final_loss  # the same run until the stop


def test_a_variant_row_tells_how_far_each_seeds_final_loss_ends_from_the_baselines():
    from benchmarks.variants import case_rows, run_variant
    from pdt_compile.experiment import train

    task = tasks.digits_mlp(steps=100)
    [row] = case_rows("tiny", (task, 10, task.lr, None), {"default": {}}, seeds=range(1))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    baseline, _ = train(task, lambda opt: opt, seed=0, method="baseline", lr=task.lr)
    run, opt = run_variant(task, 10, {}, seed=0, method="default", lr=task.lr)
    assert cells[-2] == f"{(run.final_loss / baseline.final_loss - 1) * 100:+.1f}" and cells[-1] == str(opt.stats.merges)


def test_a_variant_row_survives_a_baseline_that_ends_at_zero_loss():
    from benchmarks.variants import loss_change

    assert loss_change(0.5, 0.25) == "+100.0" and loss_change(0.0, 0.0) == "0.0e+00 (baseline 0)"
    assert loss_change(3e-7, 0.0) == "3.0e-07 (baseline 0)"


def test_the_harm_probe_merges_only_the_parameters_it_allows():
    from benchmarks.sf_harm import SubsetPDT

    def run(allowed_index):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(50)) for _ in range(2)]
        drift = [torch.linspace(0.5, 1.5, 50), -torch.linspace(0.5, 1.5, 50)]
        allowed = {id(params[i]) for i in allowed_index}
        opt = SubsetPDT(torch.optim.SGD(params, lr=0.01), allowed, snap_every=2, history=3, burn_in=3)
        for _ in range(20):
            for p, g in zip(params, drift):
                p.grad = g.clone()
            opt.step()
        return [p.detach().clone() for p in params], opt.stats.merges

    (plain_a, plain_b), no_merges = run([])
    assert no_merges == 0
    (a, b), merges = run([0])
    assert merges > 0 and not torch.equal(a, plain_a)  # the allowed parameter jumped ahead
    assert torch.equal(b, plain_b)  # the other one moved with SGD alone


def test_the_harm_probe_undoes_a_jump_only_where_it_moves_against_the_averaged_weights():
    from benchmarks.sf_harm import disagreeing_part

    jump = torch.tensor([1.0, -1.0, 2.0, 0.0, -3.0])
    displacement = torch.tensor([0.5, 0.5, -1.0, 1.0, -0.1])
    assert disagreeing_part(jump, displacement).tolist() == [0.0, -1.0, 2.0, 0.0, 0.0]


def _radial_run(wrap, steps=24):
    """SGD on a matrix whose gradient drifts it along its own direction (its norm grows, it does
    not turn) and a vector that drifts elementwise: the parameters, and the optimizer."""
    torch.manual_seed(0)
    matrix, vector = torch.nn.Parameter(torch.randn(5, 10)), torch.nn.Parameter(torch.randn(50))
    drift = [-matrix.detach().clone(), torch.linspace(0.5, 1.5, 50)]
    opt = wrap(torch.optim.SGD([matrix, vector], lr=0.01))
    for _ in range(steps):
        for p, g in zip((matrix, vector), drift):
            p.grad = g.clone()
        opt.step()
    return matrix.detach().clone(), vector.detach().clone(), opt


def test_the_tangential_probe_undoes_a_matrix_jump_that_only_grows_its_norm_and_keeps_the_rest():
    import pdt_compile as pdt
    from benchmarks.sf_harm import TangentialPDT

    options = dict(snap_every=2, history=3, burn_in=3)
    plain_matrix, plain_vector, _ = _radial_run(lambda o: o)
    merged_matrix, _, opt = _radial_run(lambda o: pdt.PDT(o, **options))
    matrix, vector, probe = _radial_run(lambda o: TangentialPDT(o, **options))
    assert opt.stats.merges > 0 and probe.stats.merges > 0
    assert merged_matrix.norm() > plain_matrix.norm() * 1.01  # PDT's jumps grew the matrix
    assert torch.allclose(matrix, plain_matrix, atol=1e-5)  # the probe's did not
    assert not torch.allclose(vector, plain_vector)  # the vector still jumped ahead


def test_the_radial_benchmark_reads_growth_the_gradient_drives_as_downhill():
    import benchmarks.radial as radial

    _, _, probe = _radial_run(lambda o: radial.RadialProbe(o, snap_every=2, history=3, burn_in=3))
    assert probe.readings and probe.stats.merges >= len(probe.readings)
    for r in probe.readings:
        assert r.own_growth > 0 and r.jump_growth > 0 and r.first_order < 0
    cells = radial.summary_cells(probe.readings).split("|")
    assert int(cells[0]) == len(probe.readings) and cells[3].strip() == f"0% of {len(probe.readings)}"


def test_a_variant_filter_keeps_the_names_containing_any_text_and_always_the_baseline():
    from benchmarks.report import chosen

    variants = {"default": 0, "tau 12": 1, "tau 16": 2, "burn-in 16": 3}
    assert chosen(variants, "", always="default") == variants
    assert chosen(variants, "tau 1,burn", always="default") == variants
    assert chosen(variants, "tau 12,", always="default") == {"default": 0, "tau 12": 1}
    assert chosen(variants, "nothing", always="default") == {"default": 0}


def test_the_harm_benchmark_sets_the_peers_weight_decay_on_every_group_only_when_asked():
    from benchmarks.sf_harm import with_weight_decay

    def make(params, lr):
        return torch.optim.AdamW([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.3}], lr=lr)

    params = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    assert [g["weight_decay"] for g in with_weight_decay(make, 0.01)(params, 0.1).param_groups] == [0.01, 0.01]
    assert [g["weight_decay"] for g in with_weight_decay(make, None)(params, 0.1).param_groups] == [0.01, 0.3]


def test_interval_places_match_where_the_gradient_check_takes_norms():
    """benchmarks.interval_cost names each place in the interval by what runs there: the
    window places are exactly the steps GradientCheck.wants a norm for before a boundary."""
    from benchmarks.interval_cost import place
    from pdt_compile.runtime.gradient_check import GradientCheck

    period = 20
    check = GradientCheck(limit=4.0, snap_every=period)
    places = [place(position, period, check.window) for position in range(period)]
    assert places[0] == "boundary" and places[1] == "after a boundary"
    window = [p for p in range(2, period) if places[p] == "gradient-check window"]
    # a step at position p ran with p - 1 steps done in its interval (position 0 ends it)
    wanted = [p for p in range(2, period) if check.wants(p - 1, lambda: True)]
    assert window == wanted == list(range(period - check.window + 1, period))
    assert places.count("ordinary") == period - 2 - len(window)


def test_cold_ops_times_every_probe_after_training_steps_and_in_a_warm_loop():
    """benchmarks.cold_ops: each probe gets timed samples after real training steps (past the
    first ones) and a warm-loop time; the untimed first addition is left out of the second's."""
    from benchmarks.cold_ops import PROBES, after_steps, warm

    steps = 11 * len(PROBES)  # the first 10 rounds of probes are not timed
    medians, step = after_steps("digits MLP / SGD", steps)
    loop = warm(repeats=200)
    assert set(medians) == set(loop) == set(PROBES) and step > 0
    assert all(seconds > 0 for seconds in medians.values())
    assert all(math.isfinite(seconds) for seconds in loop.values())


def test_the_machine_line_names_the_cpu_its_kernels_and_the_packages_that_move_trajectories():
    from importlib import metadata

    from benchmarks.report import TRAJECTORY_PACKAGES, cpu_model, machine

    line = machine()
    assert cpu_model() in line and torch.backends.cpu.get_cpu_capability() in line
    for name in TRAJECTORY_PACKAGES:
        try:
            assert f"{name} {metadata.version(name)}" in line
        except metadata.PackageNotFoundError:
            assert name not in line


def test_prediction_parts_time_every_part_of_real_predictions_and_put_the_functions_back():
    import benchmarks.prediction_parts as parts
    import pdt_compile as pdt
    import pdt_compile.optim as optim_module
    from pdt_compile.runtime import predictor

    before = {name: getattr(predictor, name) for name in (*parts.PARTS, "predict_merge_capture_")}
    caller = optim_module.predict_merge_capture_
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=2, burn_in=0)
    totals: dict[str, float] = {}
    with parts.timed_parts(totals):
        for _ in range(16):
            model(torch.randn(8, 6)).square().mean().backward()
            opt.step()
            opt.zero_grad()
    assert opt.stats.predictions > 0
    assert set(totals) == {*parts.PARTS, "prediction"}  # the tiny model's four tensors share one pack
    assert totals["prediction"] >= sum(totals[name] for name in parts.PARTS) > 0
    warm: dict[str, float] = {}
    parts.warm_loop(opt, 3, warm)
    assert set(warm) == {*parts.PARTS, "prediction"}
    assert {name: getattr(predictor, name) for name in before} == before
    assert optim_module.predict_merge_capture_ is caller
    count = parts.operations(opt)
    assert count == parts.operations(opt) > 10  # one pack: a few dozen operations, the same each time


def test_follow_through_projects_the_optimizers_move_after_each_merge_on_its_jump():
    from benchmarks.follow_through import SPANS, follow_through, summary_rows
    from pdt_compile import tasks

    task = tasks.digits_mlp(steps=160)
    merges = follow_through(task, snap_every=10, lr=task.lr, seed=0)
    assert len(merges) >= 3
    assert all(len(ratios) == len(SPANS) for _, ratios in merges)
    first = [ratios[0] for step, ratios in merges if step + 5 <= task.steps]
    assert first and all(r is not None and r == r for r in first)  # measured wherever the run went on
    assert [ratios[-1] for step, ratios in merges if step + 40 > task.steps] == [None] * sum(step + 40 > task.steps for step, _ in merges)
    rows = summary_rows("digits", merges, task.steps)
    assert len(rows) == 2 and rows[0].startswith("| digits | first half |")
    # the first merge's r after half an interval, from a replay of the same run
    import pdt_compile as pdt
    from pdt_compile.experiment import Training

    replay = Training(task, lambda opt: pdt.PDT(opt, snap_every=10), seed=0, method="PDT", lr=task.lr)
    flat = lambda tensors: torch.cat([t.detach().reshape(-1) for t in tensors])
    step, ratios = merges[0]
    while replay.steps_done < step:
        replay.step()
    jump, after = flat(replay.optimizer._jumps), flat(replay.model.parameters())
    while replay.steps_done < step + 5:
        replay.step()
    moved = flat(replay.model.parameters()) - after
    assert ratios[0] == pytest.approx(float(moved @ jump / (jump @ jump)), rel=1e-5)


def test_a_longer_case_scales_its_steps_and_evaluation_grain_and_refuses_no_steps():
    from benchmarks.variants import longer

    task = tasks.digits_mlp(steps=100)
    long = longer(task, 3)
    assert (long.steps, long.eval_every) == (300, 3 * task.eval_every) and long.train_x is task.train_x
    with pytest.raises(ValueError, match="--length"):
        longer(task, 0.001)


def test_a_rate_scaled_variant_trains_pdt_at_that_multiple_of_the_rate():
    import pdt_compile as pdt
    from benchmarks.variants import run_variant
    from pdt_compile.experiment import train

    task = tasks.digits_mlp(steps=60)
    scaled, _ = run_variant(task, 10, {"lr_scale": 0.5}, seed=0, method="half", lr=task.lr)
    direct, _ = train(task, lambda opt: pdt.PDT(opt, snap_every=10), seed=0, method="direct", lr=task.lr * 0.5)
    full, _ = run_variant(task, 10, {}, seed=0, method="default", lr=task.lr)
    assert scaled.train_loss == direct.train_loss != full.train_loss


def test_the_plateau_ratio_is_the_median_over_the_second_half_and_the_plateau_task_trains():
    from benchmarks.plateau import conv_net, plateau_ratio, plateau_task

    plain = Run(method="plain", seed=0, steps=[10, 20, 30, 40], train_loss=[1.0, 1.0, 2.0, 4.0])
    run = Run(method="PDT", seed=0, steps=[10, 20, 30, 40], train_loss=[9.0, 9.0, 2.0, 12.0])
    assert plateau_ratio(plain, run) == 2.0  # steps 30 and 40 (past half of 40): ratios 1 and 3
    for batch_norm in (True, False):
        assert conv_net(batch_norm)(torch.rand(5, 64)).shape == (5, 10)
    task = plateau_task(batch_norm=True, weight_decay=5e-4)
    assert task.steps == 24 * task.steps_per_epoch and task.eval_every * 2 == task.steps_per_epoch
    [group] = task.make_optimizer(conv_net(True).parameters(), task.lr).param_groups
    assert (group["nesterov"], group["momentum"], group["weight_decay"], group["lr"]) == (True, 0.9, 5e-4, 0.1)
    adam = plateau_task(batch_norm=False, weight_decay=5e-4, optimizer="adam")
    made = adam.make_optimizer(conv_net(False).parameters(), adam.lr)
    assert type(made) is torch.optim.Adam and (made.param_groups[0]["weight_decay"], adam.lr) == (5e-4, 1e-3)


def test_a_plateau_method_trains_with_the_probe_its_field_names_and_the_rest_as_options():
    import pdt_compile as pdt
    from benchmarks import plateau
    from benchmarks.controls import Nudge

    model = torch.nn.Linear(3, 2)
    for fields, cls in [({}, pdt.PDT), ({"conv_tangential": True, "tau": 4}, plateau.ConvolutionsTangentialPDT),
                        ({"runaway_factor": 3.0}, pdt.PDT), ({"nudge": True}, Nudge)]:
        opt = plateau.wrap(fields, snap_every=5)(torch.optim.SGD(model.parameters(), lr=0.1))
        assert type(opt) is cls and opt.config.snap_every == 5
        assert opt.config.tau == fields.get("tau", pdt.PDTConfig(snap_every=5).tau)
        assert opt.config.runaway_factor == fields.get("runaway_factor")
    assert plateau.ConvolutionsTangentialPDT.selects(torch.zeros(2, 1, 3, 3))
    assert not plateau.ConvolutionsTangentialPDT.selects(torch.zeros(10, 64))
    assert plateau.HeadTangentialPDT.selects(torch.zeros(10, 64)) and not plateau.HeadTangentialPDT.selects(torch.zeros(4))


def test_a_verified_plateau_method_checks_merges_on_the_task_and_keeps_its_options():
    from benchmarks import plateau
    from pdt_compile.experiment import Training

    task = plateau.plateau_task(batch_norm=False, weight_decay=0.0, optimizer="adam")
    task = dataclasses.replace(task, steps=2)
    verified = next(fields for name, fields in plateau.METHODS.items() if "verify_backoff=0" in name)
    training = Training(task, plateau.wrap(verified, snap_every=5, task=task), seed=0, method="verified")
    opt = training.optimizer
    assert opt._verify is not None and opt.config.verify_backoff == 0
    assert float(opt._verify()) == pytest.approx(float(task.loss(training.model(task.train_x[:256]), task.train_y[:256])))


def test_the_refreshed_loss_recomputes_batchnorm_statistics_on_a_copy():
    from benchmarks.plateau import conv_net, plateau_task, refreshed_loss
    from pdt_compile.experiment import evaluate

    task = plateau_task(batch_norm=True, weight_decay=5e-4)
    torch.manual_seed(0)
    model = conv_net(batch_norm=True)
    before = [b.clone() for b in model.buffers()]
    fresh = refreshed_loss(task, model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))  # the model's statistics untouched
    assert fresh != evaluate(task, model)[0]  # its statistics are the initial ones, not the data's
    plain = conv_net(batch_norm=False)
    assert refreshed_loss(task, plain) == pytest.approx(evaluate(task, plain)[0], rel=1e-6)


def test_the_interval_mean_probe_snapshots_each_interval_s_mean_and_moves_the_weights_by_the_jump_alone():
    from benchmarks.interval_mean import IntervalMeanPDT
    from conftest import batches, make_mlp
    from pdt_compile.runtime.schedule import Phase

    model = make_mlp()
    opt = IntervalMeanPDT(torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9), snap_every=3, history=4,
                          burn_in=4, tau=3, momentum_spacing=None)
    flat = lambda: torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    reached: list[torch.Tensor] = []  # the weights the optimizer reached at each boundary, before PDT's work
    run_boundary = opt._run_boundary

    def spied(phase):
        if phase != Phase.ORDINARY:
            reached.append(flat())
        return run_boundary(phase)

    opt._run_boundary = spied
    interval: list[torch.Tensor] = []
    captures = predictions_seen = 0
    for x, y in batches(30):
        predictions = opt.stats.predictions
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        if opt.schedule.steps % 3:
            interval.append(flat())
            continue
        mean = torch.stack(interval + [reached[-1]]).mean(0)
        newest = opt.ring.flat()[opt.ring.last_slot]
        if opt.stats.predictions == predictions:  # a capture: the mean as the snapshot, the weights untouched
            captures += 1
            assert torch.allclose(newest, mean, atol=1e-6) and torch.equal(flat(), reached[-1])
        else:  # the weights moved by the jump the merge made to the mean, nothing else
            predictions_seen += 1
            assert torch.allclose(flat() - reached[-1], newest - mean, atol=1e-5)
        interval = []
    assert captures >= 4 and predictions_seen >= 2 and opt.stats.merges >= 1


def test_the_forget_only_probe_leaves_the_weights_at_a_runaway_and_forgets_the_ring():
    """benchmarks.sf_harm.ForgetOnlyPDT: a runaway is counted and the ring starts again from the
    weights as the optimizer has them (z and y where they were), where PDT moves them back."""
    import schedulefree

    import pdt_compile as pdt
    from conftest import batches, make_mlp, train
    from benchmarks.sf_harm import ForgetOnlyPDT

    config = dict(snap_every=4, history=4, burn_in=4, tau=3, momentum_spacing=None, runaway_factor=3.0)
    moved = {}
    for cls in (pdt.PDT, ForgetOnlyPDT):
        model = make_mlp()
        opt = cls(schedulefree.SGDScheduleFree(model.parameters(), lr=0.5, momentum=0.8, warmup_steps=3), **config)
        opt.train()
        params = list(model.parameters())
        train(model, opt, batches(31), report=True)
        before = [p.detach().clone() for p in params] + [opt.optimizer.state[p]["z"].clone() for p in params]
        with pytest.warns(RuntimeWarning, match="ran away") if cls is pdt.PDT else warnings.catch_warnings():
            opt.report_loss(float("nan"))
            opt.report_loss(float("nan"))
        after = [p.detach() for p in params] + [opt.optimizer.state[p]["z"] for p in params]
        assert opt.stats.runaways == 1 and opt.ring.count == 1 and opt.schedule.boundaries_since_reset == 0
        moved[cls] = any(not torch.equal(a, b) for a, b in zip(before, after))
    assert moved == {pdt.PDT: True, ForgetOnlyPDT: False}


def test_the_clock_probe_advances_schedule_free_s_average_by_the_merged_share_of_the_horizon():
    import schedulefree

    from benchmarks.sf_harm import ClockPDT

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(50))]
    drift = torch.linspace(0.5, 1.5, 50)
    opt = ClockPDT(schedulefree.SGDScheduleFree(params, lr=0.01, momentum=0.9), snap_every=4, history=3, burn_in=3,
                   momentum_spacing=None)
    opt.train()
    group = opt.param_groups[0]
    merged_steps = 0.0
    for _ in range(40):
        params[0].grad = drift.clone()
        before, predictions = group["weight_sum"], opt.stats.predictions
        opt.step()
        added = group["weight_sum"] - before - group["lr_max"] ** group["weight_lr_power"]  # past the step's own weight
        if opt.stats.predictions == predictions:
            assert added == pytest.approx(0.0, abs=1e-12)
        else:
            merged_steps += added / group["lr_max"] ** group["weight_lr_power"]
    # a steady drift: every merge takes every element the whole horizon ahead
    assert opt.stats.merges > 0 and opt.stats.mask_ratio == pytest.approx(1.0)
    assert merged_steps == pytest.approx(opt.stats.merges * opt.config.tau * opt.config.snap_every)


def test_the_muon_peer_has_cosine_variant_cases_at_their_tuned_rates():
    import benchmarks.variants as variants

    cases = variants.variant_cases("PDT on Muon")
    cosine = {title: case for title, case in cases.items() if title.endswith(", cosine")}
    assert len(cosine) == 2 and all(case[0].schedule == "cosine" for case in cosine.values())
    assert {case[2] for case in cosine.values()} == {0.048, 0.032}
    assert all(case[0].schedule == "constant" for title, case in cases.items() if title not in cosine)


def test_the_backtest_misses_nothing_on_linear_dynamics_and_flags_jumps_below_its_miss():
    from benchmarks.backtest import backtest_residual, noisy_part

    torch.manual_seed(0)
    modes = torch.randn(2, 40, dtype=torch.float64)
    decaying = torch.stack([0.9**k * modes[0] + 0.5**k * modes[1] for k in range(5)])  # two modes: within DMD's reach
    assert backtest_residual(decaying, rank="full", modes="projected", dynamics="linear").abs().max() < 1e-6
    noisy = decaying + 0.1 * torch.randn(5, 40, dtype=torch.float64)
    assert backtest_residual(noisy, rank="full", modes="projected", dynamics="linear").abs().max() > 1e-3
    with pytest.raises(ValueError, match="at least 3"):
        backtest_residual(decaying[:2])
    jump, residual = torch.tensor([0.0, 1.0, -1.0, 0.3]), torch.tensor([5.0, 0.1, 1.0, 0.0])
    assert torch.equal(noisy_part(jump, residual, 2.0), torch.tensor([0.0, 0.0, -1.0, 0.0]))


def _trained_mlp(make):
    """(the wrapped optimizer, the final weights) of the test MLP trained 40 steps by SGD with
    momentum, wrapped by ``make``: how the probes' tests compare a probe with PDT and with SGD."""
    from conftest import batches, make_mlp

    model = make_mlp()
    opt = make(torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9))
    for x, y in batches(40):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return opt, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _backtest_probe(optimizer, every: bool, **options):
    from benchmarks.backtest import BacktestPDT

    return BacktestPDT(optimizer, factor=1e9 if every else 0.0, **options)


def _saturation_probe(optimizer, every: bool, **options):
    from benchmarks.saturation import SaturationPDT

    return SaturationPDT(optimizer, bar=1e9 if every else 0.0, **options)


@pytest.mark.parametrize("probe", [_backtest_probe, _saturation_probe])
def test_each_undoing_probe_takes_back_every_jump_under_its_bar_and_keeps_the_rest(probe):
    import pdt_compile as pdt

    options = dict(snap_every=3, history=4, burn_in=4, tau=3, gradient_limit=1e30,  # a check that never undoes
                   momentum_spacing=None)
    plain, plain_weights = _trained_mlp(lambda o: pdt.PDT(o, **options))
    _, bare_weights = _trained_mlp(lambda o: o)
    none, weights = _trained_mlp(lambda o: probe(o, True, **options))  # every jump under the bar
    assert none.stats.merges > 0 and none.kept[0] == 0 and none.kept[1] > 0
    assert torch.allclose(weights, bare_weights, atol=1e-5)  # every merge taken back: SGD's own trajectory
    assert not torch.allclose(plain_weights, bare_weights, atol=1e-3)
    every, weights = _trained_mlp(lambda o: probe(o, False, **options))  # no jump under the bar
    assert every.kept[0] == every.kept[1] > 0 and torch.equal(weights, plain_weights)
    with pytest.raises(ValueError, match="gradient_limit"):
        probe(torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1), True, snap_every=3, gradient_limit=None)


def test_saturation_is_the_share_of_a_sign_steps_most_and_flags_jumps_under_its_bar():
    from benchmarks.saturation import saturation, unsaturated_part
    from pdt_compile.adapters import learning_rates

    # 10 steps of 0.1: 1.0 is every step one way, 0.2 a coin toss's typical net
    share = saturation(torch.tensor([1.0, -0.2, 0.0, -1.0]), 10, 0.1)
    assert torch.allclose(share, torch.tensor([1.0, 0.2, 0.0, 1.0]))
    jump = torch.tensor([0.5, 0.5, 0.0, -0.5])
    assert torch.equal(unsaturated_part(jump, share, 0.5), torch.tensor([0.0, 0.5, 0.0, 0.0]))
    with pytest.raises(ValueError, match="lr=0"):
        saturation(share, 10, 0.0)
    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    assert learning_rates(opt, [b, a, c]) == [0.5, 0.1, None]


def test_the_saturation_probe_reads_what_the_optimizer_moved_since_the_newest_snapshot():
    import benchmarks.saturation as module
    from benchmarks.saturation import SaturationPDT

    # A constant gradient: SGD moves every element by lr each step, so over the last interval of
    # snap_every steps the share is 1 exactly; an older snapshot would give 2, 3, ...
    options = dict(snap_every=3, history=4, burn_in=4, tau=3, gradient_limit=1e30, momentum_spacing=None)
    weight = torch.nn.Parameter(torch.zeros(6))
    probe = SaturationPDT(torch.optim.SGD([weight], lr=0.1), bar=0.5, **options)
    shares = []
    real = module.unsaturated_part
    module.unsaturated_part = lambda jump, share, bar: shares.append(share) or real(jump, share, bar)
    try:
        for _ in range(40):
            weight.sum().backward()
            probe.step()
            probe.zero_grad()
    finally:
        module.unsaturated_part = real
    assert len(shares) == probe.stats.predictions >= 3 and probe.stats.merges >= 1
    assert all(torch.allclose(share, torch.ones(6)) for share in shares)


def test_a_forced_phase_runs_at_every_step_of_the_training_step():
    # benchmarks.compile_overhead times one kind of PDT step through the user's training step.
    import pdt_compile as pdt
    from benchmarks.steps import CORE, force_phase, train_step
    from pdt_compile.runtime.schedule import Phase

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    opt = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=1e-2), snap_every=1, **CORE)
    step = train_step(model, x, y, opt)
    force_phase(opt, Phase.CAPTURE)
    for _ in range(opt.config.history + 2):
        step()
    assert opt.ring.count == opt.config.history and opt.stats.predictions == 0
    force_phase(opt, Phase.PREDICT)
    for _ in range(4):
        step()
    assert opt.stats.predictions == 4


@pytest.mark.parametrize("schedule", ["cosine", "warmup-cosine"])
def test_the_task_schedules_rise_then_fall_to_zero(schedule):
    """The rates a task's schedule sets at each step: the warmup rises linearly over the
    first tenth of the steps to the task's rate, then both fall as a cosine to zero."""
    from pdt_compile.experiment import WARMUP_FRACTION, lr_schedule
    from pdt_compile.tasks import digits_mlp

    task = dataclasses.replace(digits_mlp(steps=100), schedule=schedule)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    scheduler = lr_schedule(task, opt)
    rates = []
    for _ in range(task.steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    warmup = round(WARMUP_FRACTION * task.steps) if schedule == "warmup-cosine" else 0
    assert rates[:warmup] == pytest.approx([2.0 * (k + 1) / warmup for k in range(warmup)])
    assert max(rates) == pytest.approx(2.0) and rates[warmup] == pytest.approx(2.0)
    assert all(a >= b for a, b in zip(rates[warmup:], rates[warmup + 1:])) and rates[-1] < 1e-3


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_the_restarts_and_one_cycle_schedules(momentum):
    """``"restarts"``: RESTART_CYCLES cosines, each from the task's rate to near zero, each back at
    it. ``"one-cycle"``: up from a 25th of the rate to the rate at 30 % of the steps, then down to
    near zero; momentum cycled against it only where the optimizer has momentum (plain SGD stays
    plain)."""
    from pdt_compile.experiment import RESTART_CYCLES, lr_schedule
    from pdt_compile.tasks import digits_mlp

    for schedule in ("restarts", "one-cycle"):
        task = dataclasses.replace(digits_mlp(steps=100), schedule=schedule)
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0, momentum=momentum)
        scheduler = lr_schedule(task, opt)
        rates, momenta = [], []
        for _ in range(task.steps):
            rates.append(opt.param_groups[0]["lr"])
            momenta.append(opt.param_groups[0]["momentum"])
            opt.step()
            scheduler.step()
        if schedule == "restarts":
            cycle = task.steps // RESTART_CYCLES
            assert [rates[k * cycle] for k in range(RESTART_CYCLES)] == pytest.approx([2.0] * RESTART_CYCLES)
            assert all(rates[(k + 1) * cycle - 1] < 0.01 for k in range(RESTART_CYCLES))
            assert momenta == [momentum] * task.steps
        else:
            peak = rates.index(max(rates))
            assert rates[0] == pytest.approx(2.0 / 25) and max(rates) == pytest.approx(2.0) and peak in (29, 30)
            assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1:])) and rates[-1] < 1e-3
            if momentum:
                assert momenta[0] == pytest.approx(0.95) and min(momenta) == pytest.approx(0.85)
            else:
                assert momenta == [0.0] * task.steps


def test_the_compatibility_sweep_reports_weight_copies_and_what_pdt_moves():
    from benchmarks.compatibility import try_optimizer

    outcome, merges, finite, holding, moved = try_optimizer(torch.optim.ASGD, 30)
    assert (outcome, finite, holding, moved) == ("trains", "yes", "ax", "ax") and int(merges) >= 1
    assert try_optimizer(torch.optim.SGD, 30)[3:] == ("-", "-")
    assert try_optimizer(torch.optim.LBFGS, 30)[0].startswith("fails: TypeError")



def test_gram_forms_times_predictions_with_each_form_and_restores_the_default():
    """benchmarks.gram_forms: inside ``eager_form`` the plain-torch predictions compute their
    Gram with the given form (and predict), and the default form is back afterwards."""
    from benchmarks.gram_forms import FORMS, eager_form, prediction_seconds
    from pdt_compile.runtime import kernels, predictor

    calls = []

    def counted(rows):
        calls.append(len(rows))
        return kernels.gram_pass(rows)

    seconds, params = prediction_seconds(200, counted, steps=30)  # 200 x 200 > the 2^15-element packing limit
    assert seconds > 0 and params == 32 * 200 + 200 + 200 * 200 + 200 + 200 * 2 + 2
    assert calls and set(calls) == {5}
    assert predictor.eager_gram is kernels.eager_gram is FORMS["float64 copy + matrix product (eager_gram)"]
    with eager_form(counted):
        assert predictor.eager_gram is counted
    assert predictor.eager_gram is kernels.eager_gram


def test_unregistered_state_moves_the_keys_only_inside_and_finds_the_first_evaluation_at_target():
    """benchmarks.unregistered_state: ``moved_keys`` sets what PDT moves for a class only
    inside (a registered class gets its own keys back, an unknown one leaves no entry), and
    ``to_target`` counts the evaluations up to the first at or below the target."""
    from benchmarks.unregistered_state import EVERY, moved_keys, to_target
    from pdt_compile import adapters

    class Unknown(torch.optim.SGD):
        pass

    registered = adapters.class_name(torch.optim.ASGD([torch.zeros(1, requires_grad=True)]))
    with moved_keys(torch.optim.ASGD, ()), moved_keys(Unknown, ("x0",)):
        assert adapters.WEIGHT_SPACE_STATE[registered] == ()
        assert adapters.weight_space_keys(Unknown([torch.zeros(1, requires_grad=True)], lr=0.1)) == ("x0",)
    assert adapters.WEIGHT_SPACE_STATE[registered] == ("ax",)
    assert adapters.weight_space_keys(Unknown([torch.zeros(1, requires_grad=True)], lr=0.1)) == ()
    assert to_target([0.5, 0.3, 0.2], [1.0, 2.0, 3.0], 0.3) == (2 * EVERY, 2.0)
    assert to_target([0.5, 0.4], [1.0, 2.0], 0.3) is None


def test_the_regression_benchmark_counts_steps_as_ttb_does_and_its_end_ratio_over_the_last_tenth():
    from benchmarks.regression import CASES, end_ratio, noisy_plateau, steps_ratio, train

    plain, run = [4.0, 3.0, 2.0, 1.0], [3.0, 0.9, 0.5, 0.4]
    assert steps_ratio(plain, run) == 2.0 and steps_ratio(plain, [5.0] * 4) is None
    assert end_ratio([1.0] * 20, [2.0] * 18 + [0.5, 0.3]) == pytest.approx(0.4) and set(CASES) == {"diabetes MLP", "noisy plateau"}
    case = dataclasses.replace(noisy_plateau(), steps=80)
    losses, wrapped = train(case, 0.05, seed=0, options={"momentum_spacing": None})  # snapshots every 10 steps
    assert len(losses) == 8 and wrapped.stats.boundaries == 8 and wrapped.stats.merges >= 1
    again, _ = train(case, 0.05, seed=0, options={"momentum_spacing": None})
    assert again == losses
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the spacing warning
        assert train(case, 0.05, seed=0, options={})[1].stats.boundaries == 4  # by default twice momentum 0.9's 10 steps


def test_checkpoint_size_sees_the_flattened_layout_repeat_pdts_json_per_parameter():
    """What README's Memory section says of checkpoints: torch's flattened layout writes the
    first group's entries once per parameter of the group, PDT's JSON string included, so the
    flattened checkpoint outgrows the nested one by about that string per parameter."""
    import pdt_compile as pdt
    from benchmarks.checkpoint_size import bytes_on_disk
    from pdt_compile.runtime.checkpoint import GROUP_KEY

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(3)])
    opt = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=1e-3), snap_every=2)
    x = torch.randn(4, 8)
    for _ in range(40):
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    assert opt.stats.predictions > 10
    text = opt.state_dict()["param_groups"][0][GROUP_KEY]
    nested, flattened = bytes_on_disk(model, opt, False), bytes_on_disk(model, opt, True)
    assert flattened - nested > (len(list(model.parameters())) - 1) * len(text)


def test_a_run_with_denormals_flushed_gets_sections_of_its_own():
    import argparse

    import benchmarks.ttb as ttb

    args = argparse.Namespace(core=True, peers=False, cosine_only=False, only=["mnist1d CNN"], peer=None,
                              peer_schedule="constant")
    flushed = argparse.Namespace(**vars(args), flush_denormal=True)
    assert ttb.titles(flushed)[0] == "Time to baseline, core, tasks matching 'mnist1d CNN', denormals flushed (benchmarks/ttb.py)"
    assert set(ttb.titles(flushed)).isdisjoint(ttb.titles(args))


def test_ttb_measures_the_mnist1d_tasks_accuracy_on_more_samples_in_a_section_of_its_own(monkeypatch):
    import argparse

    import benchmarks.ttb as ttb

    args = argparse.Namespace(core=True, peers=False, cosine_only=False, only=None, peer=None, peer_schedule="constant",
                              quick=False, flush_denormal=False, test_samples=None)
    more = argparse.Namespace(**{**vars(args), "test_samples": 300})
    assert ttb.titles(more)[0] == "Time to baseline, core, mnist1d test accuracy on 300 samples (benchmarks/ttb.py)"
    assert set(ttb.titles(more)).isdisjoint(ttb.titles(args))
    trained = {}
    monkeypatch.setattr(ttb, "task_sections", lambda args, unit, task, snap_every, seeds: iter([trained.setdefault(unit, task)]))
    for unit in ("mnist1d ViT / AdamW", "digits MLP / SGD" + ttb.PEERS):
        ttb.measure_task((more, unit, 1))
    standard = ttb.task_suite(quick=False)
    assert trained["mnist1d ViT / AdamW"].test_x.shape == (300, 40)
    assert torch.equal(trained["mnist1d ViT / AdamW"].test_y, tasks.mnist1d_test_set(300)[1])
    assert torch.equal(trained["digits MLP / SGD" + ttb.PEERS].test_x, standard["digits MLP / SGD"][0].test_x)


def test_the_full_batch_tasks_train_on_all_their_data_at_every_step_and_every_optimizer_steps_them():
    """A full-batch case: one batch is the whole training set (its order aside, every step the
    same loss), evaluated at every 1 % of the steps; each optimizer of the benchmark trains
    each task's model."""
    from benchmarks.full_batch import CASES, OPTIMIZERS, TASKS
    from pdt_compile.experiment import batch_order, train

    for name, make in TASKS.items():
        task = make()
        first = next(batch_order(task, seed=0))
        assert sorted(first.tolist()) == list(range(len(task.train_x))), name
        assert task.eval_every == max(1, task.steps // 100)
    for name, optimizer in CASES:
        task = dataclasses.replace(TASKS[name](), make_optimizer=OPTIMIZERS[optimizer][0], steps=2, eval_every=1)
        run, _ = train(task, lambda opt: opt, seed=0, method="baseline", lr=OPTIMIZERS[optimizer][1] / 10)
        assert run.train_loss[1] < run.train_loss[0], (name, optimizer)


def test_the_fine_tunes_start_at_the_pretrained_model_and_lora_trains_only_its_adapters_and_head(monkeypatch):
    """A fine-tune's model is the pretrained one (LoRA's update starts at zero), trained on the
    digits the pretraining never saw; with LoRA only the adapters and the head train, and PDT
    snapshots them alone, leaving the frozen weights as they were through a merge."""
    import benchmarks.fine_tune as fine_tune
    import pdt_compile as pdt
    from pdt_compile.tasks import PatchTransformer

    monkeypatch.setattr(fine_tune, "PRETRAIN_EPOCHS", 1)
    fine_tune.pretrained.cache_clear()
    try:
        state = fine_tune.pretrained()
        pretrained = PatchTransformer()
        pretrained.load_state_dict(state)
        for name, (adapters, _) in fine_tune.CASES.items():
            task = fine_tune.fine_tune_task(adapters, "constant")
            assert set(task.train_y.tolist()) == {5, 6, 7, 8, 9} and set(task.test_y.tolist()) == {5, 6, 7, 8, 9}
            model = task.make_model()
            torch.testing.assert_close(model(task.train_x[:8]), pretrained(task.train_x[:8]), rtol=0, atol=0)
            trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            if not adapters:
                assert trainable == {n for n, _ in model.named_parameters()}, name
                continue
            assert trainable == {n for n in trainable if n.endswith((".A", ".B")) or n.startswith("head.")}
            assert sum(n.endswith(".B") for n in trainable) == 4 * len(model.blocks.layers)
            frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
            opt = pdt.PDT(task.make_optimizer(model.parameters(), 0.01), snap_every=1, burn_in=3, history=3, tau=2)
            trained = {id(p) for p in model.parameters() if p.requires_grad}
            assert {id(p) for p in opt.ring.params} == trained
            every = pdt.PDT(torch.optim.AdamW(model.parameters(), lr=0.01), snap_every=1)  # frozen weights given too
            assert {id(p) for p in every.ring.params} == trained
            for step in range(12):
                x, y = task.train_x[32 * step:32 * step + 32], task.train_y[32 * step:32 * step + 32]
                loss = task.loss(model(x), y)
                loss.backward()
                opt.step()
                opt.report_loss(loss)
                opt.zero_grad()
            assert opt.stats.merges > 0
            for n, p in model.named_parameters():
                if n in frozen:
                    assert torch.equal(p, frozen[n]), n
    finally:
        fine_tune.pretrained.cache_clear()


def test_warmup_per_seed_sets_each_method_beside_the_baseline() -> None:
    """The warmup benchmark's seed lines: each method against that seed's own baseline, then
    each method's accuracy differences seed by seed, so that PDT's stand beside the nudged
    control's."""
    from benchmarks.warmup import per_seed

    def run(method: str, seed: int, losses: list[float], accuracy: float) -> Run:
        return Run(method=method, seed=seed, steps=[10, 20], seconds=[1.0, 2.0], train_loss=losses,
                   test_accuracy=[0.5, accuracy])

    runs = {
        "base": [run("base", 3, [1.0, 0.5], 0.90), run("base", 4, [1.0, 0.5], 0.80)],
        "pdt": [run("pdt", 3, [0.4, 0.3], 0.88), run("pdt", 4, [1.0, 0.6], 0.81)],
        "nudged": [run("nudged", 3, [1.0, 0.5], 0.904), run("nudged", 4, [1.0, 0.5], 0.79)],
    }
    text = per_seed(runs, first_seed=3)
    assert "- seed 3 (baseline final training loss 0.5, test accuracy 90.0 %): pdt: 2.00x in steps, 2.00x in wall time" in text
    assert "- seed 4 (baseline final training loss 0.5, test accuracy 80.0 %): pdt: never" in text
    assert "nudged: 1.00x in steps" in text
    assert ("- pdt, test accuracy minus the baseline's per seed (points): -2.0, +1.0; median -0.50; "
            "mean -0.50 ± 1.50 (standard error); 1 of 2 below -0.5") in text
    assert ("- nudged, test accuracy minus the baseline's per seed (points): +0.4, -1.0; median -0.30; "
            "mean -0.30 ± 0.70 (standard error); 1 of 2 below -0.5") in text


def test_a_variant_with_saturation_none_turns_pdts_filter_off_and_one_with_a_bar_runs_the_probe():
    import pytorch_optimizer as po

    from benchmarks.saturation import SaturationPDT
    from benchmarks.variants import wrap_of

    task = tasks.digits_mlp(steps=100)
    lion = lambda: po.Lion([torch.zeros(2, requires_grad=True)], lr=1e-4)
    assert wrap_of(task, 10, {})(lion()).config.saturation == 0.5  # "auto" on Lion
    assert wrap_of(task, 10, {"saturation": None})(lion()).config.saturation is None
    assert type(wrap_of(task, 10, {"saturation": 0.3})(lion())) is SaturationPDT


def test_warmup_runs_the_baseline_pdt_the_control_and_the_variants_named():
    from benchmarks.warmup import BASELINE, NUDGED, PDT_DEFAULT, warmup_methods

    methods = warmup_methods("mnist1d ViT / AdamW", 10, nudged=True, variants="radial keep")
    [variant] = [name for name in methods if name.startswith("PDT, radial keep")]
    assert list(methods) == [BASELINE, PDT_DEFAULT, NUDGED, variant]
    model = torch.nn.Linear(4, 2)
    assert methods[variant](torch.optim.AdamW(model.parameters())).config.radial == "keep"
    assert methods[PDT_DEFAULT](torch.optim.AdamW(model.parameters())).config.radial == "auto"
    assert list(warmup_methods("mnist1d ViT / AdamW", 10)) == [BASELINE, PDT_DEFAULT]
    with pytest.raises(SystemExit, match="changes the run, not the wrapper"):
        warmup_methods("mnist1d ViT / AdamW", 10, variants="first half")


def test_warmup_measures_accuracy_on_more_mnist1d_samples_only_where_the_generator_makes_them(monkeypatch):
    from benchmarks import warmup

    with pytest.raises(SystemExit, match="--test-samples: char transformer / AdamW is not an mnist1d task"):
        warmup.on_schedule("char transformer / AdamW", "warmup-cosine", lambda snap_every: {}, 1, lr=0.01, test_samples=100)
    monkeypatch.setattr(warmup, "seed_major", lambda task, *rest: {})  # the task it would train, not the training
    task, *_ = warmup.on_schedule("mnist1d ViT / AdamW", "warmup-cosine", lambda snap_every: {}, 1, lr=0.01,
                                  test_samples=300)
    assert task.test_x.shape == (300, 40) and torch.equal(task.test_y, tasks.mnist1d_test_set(300)[1])
