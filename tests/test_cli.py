"""The commands a new user runs first: the demo, the explain command, the benchmark smoke run."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str, cwd=None) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_demo_prints_the_table_and_writes_the_plot(tmp_path):
    plot = tmp_path / "demo.png"
    out = run("-m", "pdt_compile", "demo", "--steps", "400", "--out", str(plot))
    assert "SGD (baseline)" in out and "SGD + PDT" in out and "to baseline final loss" in out
    assert "predictions" in out and plot.stat().st_size > 10_000


def test_demo_trains_a_transformer_at_its_tuned_rate(tmp_path):
    out = run("-m", "pdt_compile", "demo", "--task", "vit", "--schedule", "constant", "--steps", "90",
              "--out", str(tmp_path / "vit.png"))
    assert "AdamW (baseline)" in out and "AdamW + PDT" in out
    assert "constant schedule, lr 0.0005 (the tuned constant rate" in out and "snapshot every 40 steps" in out


def test_demo_stacks_pdt_on_the_schedule_free_optimizer_a_user_would_pick_instead(tmp_path):
    pytest.importorskip("schedulefree")
    out = run("-m", "pdt_compile", "demo", "--optimizer", "schedule-free", "--steps", "300", "--out", str(tmp_path / "sf.png"))
    assert "schedule-free SGD (baseline)" in out and "schedule-free SGD + PDT" in out
    assert "constant schedule, lr 6.4 (its rate tuned by python -m benchmarks.ttb --peers" in out
    failed = subprocess.run([sys.executable, "-m", "pdt_compile", "demo", "--optimizer", "schedule-free", "--schedule",
                             "cosine"], capture_output=True, text=True, timeout=600)
    assert failed.returncode != 0 and "a schedule-free optimizer takes no schedule; leave --schedule out" in failed.stderr


def test_explain_shows_the_tagged_nodes():
    out = run("-m", "pdt_compile", "explain")
    assert "[snapshot]" in out and "[predict]" in out and "[merge]" in out
    assert "solve_on_device" in out


def test_time_to_baseline_smoke_run():
    pytest.importorskip("pytorch_optimizer")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = run("-m", "benchmarks.ttb", "--quick", cwd=root)
    assert "| PDT default (reference, full rank, trend filter, tau 8) |" in out and "| linear extrapolation |" in out
