"""DDP, FSDP2, HSDP, tensor and pipeline parallelism (gloo, 2 or 4 processes on CPU) follow the
1-process run; DCP checkpoints resume."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.distributed
WORKER = Path(__file__).with_name("distributed_worker.py")


def launch(tmp_path, mode: str, processes: int, *extra: str) -> list[dict]:
    out = tmp_path / mode
    out.parent.mkdir(parents=True, exist_ok=True)
    if processes == 1 and mode == "plain":
        command = [sys.executable, str(WORKER)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                   "--standalone", str(WORKER)]
    for attempt in range(2):
        done = subprocess.run([*command, "--mode", mode, "--out", str(out), *extra],
                              capture_output=True, text=True, timeout=300)
        # Rarely (seen in the DCP checkpoint test) a worker aborts with "terminate called
        # without an active exception" (SIGABRT: a C++ thread destroyed while running, not a
        # Python check); such a launch is run once more. A failed check or a Python error in
        # the worker exits with 1, not a signal, and still fails.
        if done.returncode == 0 or "SIGABRT" not in done.stderr:
            break
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(f"{out}.rank{r}", weights_only=False) for r in range(processes)]


def timing_free(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if not k.endswith("_seconds")}


SCHEDULE_COUNTERS = ("steps", "boundaries", "merges", "tau", "horizon")
"""What every run of the same training decides alike (the loss sums differ by rounding)."""


def assert_same_run(runs: list[dict], reference: dict, atol: float) -> None:
    for run in runs:
        for a, b in zip(run["params"], reference["params"]):
            assert torch.allclose(a, b, atol=atol), (a - b).abs().max()
        assert all(run["schedule"][k] == reference["schedule"][k] for k in SCHEDULE_COUNTERS)
        stats, expected = timing_free(run["stats"]), timing_free(reference["stats"])
        assert stats["predictions"] == expected["predictions"] and stats["merges"] == expected["merges"] >= 1
        ratios = [r for _, r in stats["mask_ratio_history"]]
        assert ratios == pytest.approx([r for _, r in expected["mask_ratio_history"]], abs=1e-3)
    # every rank holds identical stats and schedule
    assert all(timing_free(r["stats"]) == timing_free(runs[0]["stats"]) for r in runs)
    assert all(r["schedule"] == runs[0]["schedule"] for r in runs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return launch(tmp_path_factory.mktemp("plain"), "plain", 1)[0]


# Tolerance: gradients averaged by gloo (sum of two halves / 2) differ from the full-batch
# mean by float32 rounding; over 30 steps with merges that stays below 1e-5.
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_follow_the_single_process_run(tmp_path, reference, mode):
    assert_same_run(launch(tmp_path, mode, 2), reference, atol=1e-5)


def test_adaptive_tau_decides_alike_on_every_rank_and_as_one_process(tmp_path):
    """The default ``adaptive="auto"`` judges merges from the loss averaged over the ranks:
    every rank and the single process choose the same horizons. Jumps up to 2 tau long carry
    the rounding above (all-reduced against full-batch gradients) to 1e-4."""
    reference = launch(tmp_path / "plain", "plain", 1, "--adaptive")[0]
    assert reference["schedule"]["tau"] != 3  # tau moved from the worker's 3
    assert_same_run(launch(tmp_path / "ddp", "ddp", 2, "--adaptive"), reference, atol=1e-4)


def test_fsdp_with_one_dmd_for_the_whole_model(tmp_path):
    # granularity="model": one Gram over all local shards of all parameters, all-reduced.
    reference = launch(tmp_path / "plain", "plain", 1, "--granularity", "model")[0]
    assert_same_run(launch(tmp_path / "fsdp", "fsdp", 2, "--granularity", "model"), reference, atol=1e-5)


def test_ddp_with_zero_redundancy_optimizer_follows_the_single_process_run(tmp_path, reference):
    """ZeroRedundancyOptimizer steps each rank's partition and broadcasts it: every rank then
    holds every parameter and predicts alike, as under DDP."""
    assert_same_run(launch(tmp_path, "ddp", 2, "--optimizer", "zero"), reference, atol=1e-5)


def test_verified_merges_are_kept_alike_on_every_rank(tmp_path):
    """Each rank verifies merges on its own half of a held-out batch: PDT keeps the fraction of
    a merge that the ranks' mean loss says, so the replicas stay one model, the 1-process run
    verified on the whole batch (each rank's own loss had them keep different fractions)."""
    reference = launch(tmp_path / "plain", "plain", 1, "--hidden", "6", "--verify")[0]
    assert reference["stats"]["verify_rejections"] >= 1 and reference["stats"]["verify_backtracks"] >= 1
    assert_same_run(launch(tmp_path / "ddp", "ddp", 2, "--hidden", "6", "--verify"), reference, atol=1e-5)


def pipeline_run(stages: list[dict]) -> list[dict]:
    """Each stage's run as the whole model's: every stage's parameters in order, the stats but
    the per-tensor mask ratios (of the stage's own tensors)."""
    params = [p for stage in stages for p in stage["params"]]
    return [{**stage, "params": params, "stats": model_stats(stage["stats"])} for stage in stages]


def model_stats(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k != "mask_ratio_per_tensor"}


@pytest.mark.parametrize("extra", [(), ("--granularity", "model"), ("--kernels", "graph", "--granularity", "model"), ("--verify",),
                                   ("--runaway",), ("--compile", "aot_eager")])
def test_a_pipeline_of_two_stages_follows_the_single_process_run(tmp_path, extra):
    """``torch.distributed.pipelining`` (GPipe, two microbatches) over two stages, each with a
    PDT of its own parameters and ``pipeline_group``: the gradient check's norm, the accepted
    counts and the finite-weights flag are the model's, summed over the stages (as is the Gram
    of one DMD for the whole model), eager, through boundary graphs and under ``pdt.compile``
    (the schedule's communication outside its graphs); the last stage alone has the loss, the
    first reports None (a compiled step returns it), for the runaway guard and for verified
    merges alike."""
    reference = launch(tmp_path / "plain", "plain", 1, "--hidden", "6", *extra)[0]
    reference = {**reference, "stats": model_stats(reference["stats"])}
    runs = launch(tmp_path / "pp", "pp", 2, "--hidden", "6", *extra)
    assert all(run["boundary_graphs"] == ("--kernels" in extra or "--compile" in extra) for run in runs)
    assert len(runs[0]["params"]) == len(runs[1]["params"]) == 2  # each stage holds its own layer
    assert_same_run(pipeline_run(runs), reference, atol=1e-5)
    assert_same_surges(runs, reference)
    assert runs[0]["stats"]["runaways"] == reference["stats"]["runaways"] == int("--runaway" in extra)
    assert runs[0]["stats"]["verify_rejections"] == reference["stats"]["verify_rejections"]


def test_a_pipeline_resumes_from_a_flattened_dcp_checkpoint_exactly(tmp_path):
    """torchtitan's layout (``flatten_optimizer_state_dict=True``, loaded with
    ``pdt.set_optimizer_state_dict``) keys each stage's PDT state by its own parameters' names:
    both stages resume bit for bit. (The nested layout is not: DCP saves the param groups, keyed
    alike on every stage, once, so every stage but one loads another's; a plain SGD then fails
    at its next step on the missing "momentum", PDT or not.)"""
    uninterrupted = launch(tmp_path / "a", "pp", 2, "--hidden", "6")
    resumed = launch(tmp_path / "b", "pp", 2, "--hidden", "6", "--checkpoint-at", "15", "--checkpoint-api", "dsd-flat")
    for a, b in zip(uninterrupted, resumed):
        assert all(torch.equal(p, q) for p, q in zip(a["params"], b["params"]))
        assert timing_free(a["stats"]) == timing_free(b["stats"]) and a["stats"]["merges"] >= 1


def test_pipeline_group_is_checked_with_the_fix(tmp_path):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    import pdt_compile as pdt

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    with pytest.raises(RuntimeError, match=r"pipeline_group.*not initialized.*init_process_group"):
        pdt.PDT(opt, snap_every=2, pipeline_group=object())
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        with pytest.raises(TypeError, match=r"pipeline_group.*ProcessGroup or a 1-D DeviceMesh, got str"):
            pdt.PDT(opt, snap_every=2, pipeline_group="pp")
        with pytest.raises(ValueError, match=r'pipeline_group.*2 dimensions.*world_mesh\["pp"\]'):
            pdt.PDT(opt, snap_every=2, pipeline_group=init_device_mesh("cpu", (1, 1)))
        mesh = init_device_mesh("cpu", (1,), mesh_dim_names=("pp",))
        wrapped = pdt.PDT(opt, snap_every=2, pipeline_group=mesh["pp"])
        assert wrapped.ring.reduction.stages is mesh.get_group()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def even_reference(tmp_path_factory):
    """The 1-process run of the model with an even hidden width, which tensor parallelism splits."""
    return launch(tmp_path_factory.mktemp("plain-even"), "plain", 1, "--hidden", "6")[0]


def assert_same_surges(runs: list[dict], reference: dict) -> None:
    """The gradient check measured the 1-process run's surges: every piece of every gradient
    entered the norm once."""
    expected = reference["stats"]["gradient_surges"]
    assert expected
    for run in runs:
        surges = run["stats"]["gradient_surges"]
        assert [step for step, _ in surges] == [step for step, _ in expected]
        assert [value for _, value in surges] == pytest.approx([value for _, value in expected], rel=1e-4)


@pytest.mark.parametrize("mode,processes,extra", [("tp", 2, ()), ("hsdp", 4, ()), ("fsdp_tp", 4, ()),
                                                  ("fsdp_tp", 4, ("--compile", "aot_eager"))])
def test_hsdp_and_tensor_parallelism_follow_the_single_process_run(tmp_path, even_reference, mode, processes, extra):
    """HSDP (replicated over pairs, sharded within them), tensor parallelism (rows, columns and a
    replicated bias) and FSDP2 over it (``_StridedShard``), eager and under ``pdt.compile``: the
    Grams, counts and gradient norms sum each parameter's pieces once, over every mesh dimension
    it is split over."""
    runs = launch(tmp_path, mode, processes, "--hidden", "6", *extra)
    assert_same_run(runs, even_reference, atol=1e-5)
    assert_same_surges(runs, even_reference)


@pytest.mark.parametrize("extra", [("--granularity", "model"), ("--radial", "undo"), ("--compile", "aot_eager")])
def test_tensor_parallelism_counts_a_replicated_bias_once(tmp_path, extra):
    """One DMD for the whole model (the replicated bias's Gram in the sum once), radial parts
    over whole tensors (its sums once), and the compiled boundaries (its Gram in the graph and
    its count once) follow the 1-process run."""
    reference = launch(tmp_path / "plain", "plain", 1, "--hidden", "6", *extra)[0]
    runs = launch(tmp_path / "tp", "tp", 2, "--hidden", "6", *extra)
    assert_same_run(runs, reference, atol=1e-5)
    assert_same_surges(runs, reference)


@pytest.mark.parametrize("loss_reads", ["1", "4"])
def test_ranks_without_a_loss_report_none_and_decide_on_the_others(tmp_path, loss_reads):
    """As pipeline stages before the last: only rank 0 reports its loss, the other reports
    None; the runaway guard decides on the mean over the ranks that have one. Under tensor
    parallelism every rank computes the same loss (blown up at steps 20 and 21), so the run is
    the 1-process run (losses read one at a time, or four together)."""
    extra = ("--hidden", "6", "--runaway", "--loss-reads", loss_reads)
    reference = launch(tmp_path / "plain", "plain", 1, *extra)[0]
    assert reference["stats"]["runaways"] == 1
    assert_same_run(launch(tmp_path / "tp", "tp", 2, *extra, "--loss-on-rank0"), reference, atol=1e-5)


def test_fsdp_over_tensor_parallelism_resumes_from_a_dcp_checkpoint_exactly(tmp_path, even_reference):
    """The ring is saved as DTensors placed like the parameters (``_StridedShard`` and
    ``Shard``, ``Replicate`` for the bias) and resumes bit for bit."""
    uninterrupted = launch(tmp_path / "a", "fsdp_tp", 4, "--hidden", "6")
    resumed = launch(tmp_path / "b", "fsdp_tp", 4, "--hidden", "6", "--checkpoint-at", "15")
    for a, b in zip(uninterrupted, resumed):
        for p, q in zip(a["params"], b["params"]):
            assert torch.equal(p, q)
        assert timing_free(a["stats"]) == timing_free(b["stats"])
    assert_same_run(resumed, even_reference, atol=1e-5)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_radial_parts_are_undone_over_the_whole_tensor_across_shards(tmp_path, mode):
    # FSDP2: each rank holds rows of a tensor; the radial part is the whole tensor's (sums all-reduced).
    reference = launch(tmp_path / "plain", "plain", 1, "--radial", "undo")[0]
    assert_same_run(launch(tmp_path / mode, mode, 2, "--radial", "undo"), reference, atol=1e-5)


@pytest.mark.parametrize("mode,backend", [("ddp", "aot_eager"), ("fsdp", "aot_eager"), ("fsdp", "inductor")])
def test_pdt_compile_with_two_processes(tmp_path, reference, mode, backend):
    # FSDP2: the graphs capture and merge local shards; the Grams are all-reduced in the solve op.
    assert_same_run(launch(tmp_path, mode, 2, "--compile", backend), reference, atol=1e-5)


def test_pdt_compile_on_schedule_free_moves_the_sharded_followers_in_its_boundary_graphs(tmp_path):
    # The boundary graphs capture each rank's shard of z and move its parameter shard by 1 - beta.
    pytest.importorskip("schedulefree")
    reference = launch(tmp_path / "plain", "plain", 1, "--optimizer", "schedule-free")[0]
    runs = launch(tmp_path / "fsdp", "fsdp", 2, "--optimizer", "schedule-free", "--compile", "aot_eager")
    assert all(run["boundary_graphs"] for run in runs)
    assert_same_run(runs, reference, atol=1e-5)


def test_fsdp_on_torchaos_8bit_adamw_reads_each_ranks_coded_moment_shards(tmp_path):
    # torchao keeps each coded moment as a DTensor of its rank's coded shard (4096 elements each).
    pytest.importorskip("torchao")
    runs = launch(tmp_path, "fsdp", 2, "--optimizer", "torchao-adamw8bit", "--hidden", "1024")
    for run in runs:
        assert "OptimState8bit" in run["state_types"]
        assert run["stats"]["merges"] >= 1 and run["stats"]["moment_filtered"] > 0
        assert all(torch.isfinite(p).all() for p in run["params"])


@pytest.mark.parametrize("stop,ring", [(10, "device"), (15, "device"), (15, "host")])  # burn-in; right after the first merge
def test_fsdp_checkpoint_through_dcp_resumes_exactly(tmp_path, reference, stop, ring):
    uninterrupted = launch(tmp_path / "a", "fsdp", 2, "--ring-location", ring)
    resumed = launch(tmp_path / "b", "fsdp", 2, "--checkpoint-at", str(stop), "--ring-location", ring)
    for a, b in zip(uninterrupted, resumed):
        for p, q in zip(a["params"], b["params"]):
            assert torch.equal(p, q)
        assert timing_free(a["stats"]) == timing_free(b["stats"])
    if ring == "host":  # the host ring follows the same run as the device ring
        assert_same_run(uninterrupted, reference, atol=1e-5)


@pytest.mark.parametrize("api", ["dsd", "dsd-full", "dsd-flat", "dsd-rank0"])
def test_fsdp_checkpoint_through_the_distributed_state_dict_api_resumes_exactly(tmp_path, api):
    """``get_state_dict``/``set_state_dict`` (what Lightning's ModelParallelStrategy and
    Accelerate's FSDP2 path save through) keep only the optimizer's per-parameter state and
    param groups: PDT's ring and schedule travel there, sharded or as full tensors, flattened as
    torchtitan saves them (loaded through ``pdt.set_optimizer_state_dict``), and through
    Lightning's own full-checkpoint round (rank 0 saves, keyed by index; every rank loads, rank
    0's values broadcast)."""
    uninterrupted = launch(tmp_path / "a", "fsdp", 2)
    resumed = launch(tmp_path / "b", "fsdp", 2, "--checkpoint-at", "15", "--checkpoint-api", api)
    for a, b in zip(uninterrupted, resumed):
        for p, q in zip(a["params"], b["params"]):
            assert torch.equal(p, q)
        assert timing_free(a["stats"]) == timing_free(b["stats"])


@pytest.mark.parametrize("saved,resumed,api", [(2, 1, "state_dict"), (1, 2, "dsd-flat"), (2, 1, "dsd")])
def test_fsdp_checkpoint_resumes_on_another_number_of_processes(tmp_path, reference, saved, resumed, api):
    """torch.distributed.checkpoint reshards PDT's ring and kept jumps with the parameters: a
    run saved by ``saved`` processes goes on in ``resumed`` as the one-process run does."""
    folder = str(tmp_path / "checkpoint")
    launch(tmp_path / "save", "fsdp", saved, "--checkpoint-at", "15", "--save-to", folder, "--checkpoint-api", api)
    runs = launch(tmp_path / "load", "fsdp", resumed, "--checkpoint-at", "15", "--load-from", folder,
                  "--checkpoint-api", api)
    assert_same_run(runs, reference, atol=1e-5)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_ranks_decide_a_runaway_together(tmp_path, mode):
    """Only rank 0 reports a loss that runs away (steps 20 and 21): PDT decides on the ranks'
    mean loss, so both restore the same snapshot and stay identical."""
    runs = launch(tmp_path, mode, 2, "--runaway")
    assert all(run["stats"]["runaways"] == 1 for run in runs)
    assert all(run["schedule"] == runs[0]["schedule"] for run in runs)
    for a, b in zip(runs[0]["params"], runs[1]["params"]):
        assert torch.equal(a, b)


def test_a_parameter_of_partial_sums_is_refused_with_the_fix():
    from torch.distributed.tensor import Partial, Replicate

    from pdt_compile.distributed import shard_reduction

    partial = SimpleNamespace(placements=(Replicate(), Partial()), shape=(4, 3))
    with pytest.raises(NotImplementedError, match=r"shape \(4, 3\).*Partial.*Shard or Replicate.*\"pdt\": False"):
        shard_reduction([torch.zeros(2), partial])
    assert shard_reduction([torch.zeros(2), SimpleNamespace(placements=(Replicate(),), shape=(2,))]) is None


FSDP1_SCRIPT = """
import sys, torch, torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel
import pdt_compile as pdt
dist.init_process_group("gloo")
use_orig_params, pdt_first = sys.argv[1] == "orig", sys.argv[2] == "pdt-first"
model = torch.nn.Sequential(torch.nn.Linear(8, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
if pdt_first:  # the optimizer made before wrapping: FSDP1 keeps the parameter objects, flattening their weights
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=2)
model = FullyShardedDataParallel(model, use_orig_params=use_orig_params, device_id=torch.device("cpu"))
if not pdt_first:
    opt = pdt.PDT(torch.optim.SGD(model.parameters(), lr=0.1), snap_every=2)
for _ in range(4):
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    opt.zero_grad()
print("trained")
"""


@pytest.mark.parametrize("params, made", [("flat", "pdt-after"), ("orig", "pdt-after"), ("orig", "pdt-first")])
def test_fsdp1_parameters_are_refused_with_the_fix(tmp_path, params, made):
    """FSDP1's flattened shards (either ``use_orig_params``), wrapped before PDT is made or
    after: refused, naming FSDP2, at PDT's construction or its first boundary, not at the first
    checkpoint (``FSDP.optim_state_dict`` fails on the ring's snapshots)."""
    script = tmp_path / "fsdp1.py"
    script.write_text(FSDP1_SCRIPT)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--standalone",
                           str(script), params, made], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "trained" not in done.stdout
    assert "FSDP1's flattened shards" in done.stderr and "fully_shard" in done.stderr, done.stderr[-3000:]


def test_losses_read_in_one_process_keep_their_precision_and_none_is_no_loss():
    from pdt_compile.distributed import means_across_ranks

    precise = torch.tensor(1.0 + 1e-12, dtype=torch.float64)  # a float64 model's loss
    read = means_across_ranks([precise, None, torch.tensor(0.5), 0.25], torch.device("cpu"))
    assert read == [1.0 + 1e-12, None, 0.5, 0.25]
