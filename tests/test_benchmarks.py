"""Benchmark bookkeeping that decides what a figure means (no training here)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def test_seed_major_runs_each_seed_back_to_back_and_rotates_which_method_goes_first(monkeypatch):
    import benchmarks.ttb as ttb

    calls = []

    def fake_train(task, wrap, *, seed, method, lr):
        calls.append((seed, method))
        return f"{method}{seed}", None

    monkeypatch.setattr(ttb, "train", fake_train)
    runs = ttb.seed_major(None, {"a": None, "b": None, "c": None}, seeds=4, lr=0.1)
    assert calls == [(0, "a"), (0, "b"), (0, "c"), (1, "b"), (1, "c"), (1, "a"),
                     (2, "c"), (2, "a"), (2, "b"), (3, "a"), (3, "b"), (3, "c")]
    assert list(runs) == ["a", "b", "c"]  # the first method stays the baseline of every table
    assert runs["b"] == ["b0", "b1", "b2", "b3"]
