"""Every Python block in README.md runs as written, on a tiny model and a few batches."""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from conftest import batches, make_mlp

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def namespace(tmp_path: Path) -> dict:
    """What the README's snippets assume exists: a model, a loader, a loss, a schedule."""
    import pdt_compile as pdt

    data = batches(4, size=8)
    return {
        "torch": torch, "pdt": pdt, "model": make_mlp(), "sharded_model": make_mlp(seed=1),
        "train_loader": data, "loss_fn": torch.nn.functional.cross_entropy, "epochs": 2,
        "steps_per_epoch": len(data), "checkpoint_dir": str(tmp_path / "checkpoint"),
        "tp_model": make_mlp(seed=2), "device_type": "cpu", "dp": 1, "tp": 1,
    }


def test_the_readme_has_the_blocks_this_file_runs():
    assert len(BLOCKS) == 6
    assert "pdt.PDT(" in BLOCKS[0] and "@pdt.compile" in BLOCKS[1] and "schedulefree" in BLOCKS[2]
    assert "update_bn" in BLOCKS[3] and "fully_shard" in BLOCKS[4] and "PipelineStage" in BLOCKS[5]


def test_eager_block_runs():
    scope = namespace(Path("."))
    exec(compile(BLOCKS[0], "README.md[eager]", "exec"), scope)
    assert scope["opt"].stats.boundaries == 1  # snap_every = one epoch of 4 steps


@pytest.mark.inductor
def test_compiled_block_runs_with_inductor():
    scope = namespace(Path("."))
    exec(compile(BLOCKS[1], "README.md[compiled]", "exec"), scope)
    assert "predict" in scope["train_step"].pdt_graphs
    assert all(torch.isfinite(p).all() for p in scope["model"].parameters())


def test_stacking_block_runs():
    scope = namespace(Path("."))
    scope["train_loader"] = batches(40, size=8)  # ten epochs of 4 steps
    with pytest.warns(UserWarning, match="momentum remembers"):
        exec(compile(BLOCKS[2], "README.md[stacking]", "exec"), scope)
    # z would be snapshot every half epoch of 4 steps (base_spacing), but schedule-free SGD's
    # momentum of 0.9 keeps its snapshots 20 steps apart (momentum_spacing)
    assert scope["opt"].config.snap_every == 20 and scope["opt"].stats.boundaries == 2
    assert not scope["opt"].param_groups[0]["train_mode"]  # left in eval mode, as the block says


def test_batchnorm_block_recomputes_the_statistics_after_each_epoch_that_merged(monkeypatch):
    """The BatchNorm recipe runs ``update_bn`` over five training batches after exactly the
    epochs in which a merge happened, and leaves the statistics those batches give."""
    scope = namespace(Path("."))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    scope.update(model=model, train_loader=batches(8, size=16), epochs=12)
    calls, merges_seen, original = [], [], torch.optim.swa_utils.update_bn

    def counted(loader, net, *args, **kwargs):
        calls.append(len(list(loader)))
        merges_seen.append(scope["opt"].stats.merges)
        original(itertools.islice(scope["train_loader"], 5), net, *args, **kwargs)

    monkeypatch.setattr(torch.optim.swa_utils, "update_bn", counted)
    exec(compile(BLOCKS[3], "README.md[batchnorm]", "exec"), scope)
    opt = scope["opt"]
    assert opt.stats.merges >= 2 and calls and set(calls) == {5}
    assert merges_seen == sorted(set(merges_seen))  # once per epoch that merged, never twice for the same merges
    expected = copy.deepcopy(model)
    original(itertools.islice(scope["train_loader"], 5), expected)
    assert merges_seen[-1] == opt.stats.merges  # the last epoch merged: its recomputation is what the model keeps
    assert torch.allclose(model[1].running_mean, expected[1].running_mean)
    assert torch.allclose(model[1].running_var, expected[1].running_var)


@pytest.mark.distributed
def test_distributed_block_runs_in_a_one_process_group(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        scope = namespace(tmp_path)
        exec(compile(BLOCKS[4], "README.md[distributed]", "exec"), scope)
        assert (tmp_path / "checkpoint").exists()
        x, y = batches(1, size=8)[0]
        torch.nn.functional.cross_entropy(scope["tp_model"](x), y).backward()
        scope["tp_opt"].step()  # a step over parameters on a 2-D mesh
        assert scope["tp_opt"].ring.reduction is not None
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_pipeline_block_runs_as_one_stage_in_a_one_process_group(tmp_path):
    """The pipeline block as the single stage of a 1-process group (first and last at once:
    it takes the batch and computes the loss); two stages are tests/test_distributed.py's."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        scope = {**namespace(tmp_path), "stage_module": make_mlp(seed=3), "stage_index": 0, "num_stages": 1,
                 "device": torch.device("cpu"), "pp_group": dist.group.WORLD}
        exec(compile(BLOCKS[5], "README.md[pipeline]", "exec"), scope)
        opt = scope["pp_opt"]
        assert opt.ring.reduction.stages is dist.group.WORLD
        assert opt.stats.boundaries == 1 and opt.schedule.steps == 4
        trained = list(scope["stage_module"].parameters())
        assert all(p.grad is None and torch.isfinite(p).all() for p in trained)
        assert not all(torch.equal(p, q) for p, q in zip(trained, make_mlp(seed=3).parameters()))  # it learned
    finally:
        dist.destroy_process_group()
