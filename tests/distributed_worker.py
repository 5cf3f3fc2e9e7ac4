"""A PDT training run for the distributed tests: plain (1 process), DDP, FSDP2, HSDP, tensor
parallelism, FSDP2 with it, or a pipeline of two stages (gloo).

    python -m torch.distributed.run --nproc_per_node=2 tests/distributed_worker.py --mode fsdp --out F
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist

import pdt_compile as pdt

from conftest import step_function  # tests/ is the script's folder, on sys.path

CONFIG = dict(snap_every=3, history=4, burn_in=4, tau=3, rule="reference", adaptive=False, momentum_spacing=None)  # SGD's momentum too: predictions within a few steps
"""Tau fixed unless ``--adaptive``: jumps up to 2 tau long carry the float32 rounding between
all-reduced and full-batch gradients further than the tolerances of the tests that compare
against one process allow."""
GLOBAL_BATCH = 16


def make_model(hidden: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    # Linear(8, 5): FSDP2 shards its 5 rows unevenly over 2 ranks (3 + 2). Tensor parallelism
    # wants even pieces: hidden 6.
    return torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 3))


BLOW_UP = (20, 21)
"""Steps at which, with ``--runaway``, rank 0 alone reports 100 times its loss: the ranks' own
losses differ, their mean runs away."""


def batch(step: int, rank: int, world: int):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(GLOBAL_BATCH, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    part = GLOBAL_BATCH // world
    return x[rank * part : (rank + 1) * part], y[rank * part : (rank + 1) * part]


def make_optimizer(name: str, params) -> torch.optim.Optimizer:
    if name == "zero":  # DDP's ZeroRedundancyOptimizer: each rank steps its partition, then broadcasts it
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.SGD, lr=0.1, momentum=0.9)
    if name == "schedule-free":  # merges move its z and its parameters (followers)
        import schedulefree

        opt = schedulefree.SGDScheduleFree(params, lr=0.5, momentum=0.9, warmup_steps=3)
        opt.train()
        return opt
    if name == "torchao-adamw8bit":  # moments of shards of 4096 elements or more coded in 8 bits
        from torchao.optim import AdamW8bit

        # torchao compiles its step per parameter; with uneven shards (a (2, n) and a (1, n)
        # shard on the two ranks) a warm AOTAutograd cache hands one rank the other's kernel,
        # which fails its shape check, PDT or not (benchmarks/FINDINGS.md, round twenty-four).
        torch._functorch.config.enable_autograd_cache = False
        return AdamW8bit(params, lr=0.01)
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


TENSOR_PARALLEL = 2
"""Ranks a layer is split over in the ``tp`` and ``fsdp_tp`` modes (and HSDP's shard groups)."""


def held_out_batch(part: int, parts: int):
    """Part ``part`` of ``parts`` of a batch that training never sees (``--verify``)."""
    return batch(10_000, part, parts)


def data_coordinates(mode: str, rank: int, world: int) -> tuple[int, int]:
    """Which part of the global batch ``rank`` trains on, of how many: tensor-parallel ranks
    and pipeline stages share a batch; a 2-D mesh is laid out data-parallel dimension first."""
    if mode in ("tp", "pp"):
        return 0, 1
    if mode == "fsdp_tp":
        return rank // TENSOR_PARALLEL, world // TENSOR_PARALLEL
    return rank, world


def parallelize(model: torch.nn.Module, mode: str, world: int) -> torch.nn.Module:
    """``model`` under ``mode``'s parallelism: DDP; FSDP2 over every rank; HSDP (replicated
    over pairs of ranks, each sharded over a pair); tensor parallelism over every rank (the
    first layer split by rows, the second by columns, its bias replicated); or FSDP2 over
    pairs of tensor-parallel pairs."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    plan = {"0": ColwiseParallel(), "2": RowwiseParallel()}
    if mode == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    if mode == "fsdp":
        fully_shard(model, mesh=init_device_mesh("cpu", (world,)))
    elif mode == "hsdp":
        fully_shard(model, mesh=init_device_mesh("cpu", (world // TENSOR_PARALLEL, TENSOR_PARALLEL),
                                                 mesh_dim_names=("replicate", "shard")))
    elif mode == "tp":
        parallelize_module(model, init_device_mesh("cpu", (world,)), plan)
    elif mode == "fsdp_tp":
        mesh = init_device_mesh("cpu", (world // TENSOR_PARALLEL, TENSOR_PARALLEL), mesh_dim_names=("dp", "tp"))
        parallelize_module(model, mesh["tp"], plan)
        fully_shard(model, mesh=mesh["dp"])
    return model


class Pipeline(torch.nn.Module):
    """This rank's stage of ``model`` split in two after the hidden layer's activation,
    scheduled by ``torch.distributed.pipelining`` (GPipe, two microbatches)."""

    def __init__(self, model: torch.nn.Sequential, rank: int, world: int) -> None:
        from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

        super().__init__()
        self.stage = model[:2] if rank == 0 else model[2:]
        self.last = rank == world - 1
        self.schedule = ScheduleGPipe(PipelineStage(self.stage, rank, world, torch.device("cpu")), n_microbatches=2,
                                      loss_fn=torch.nn.functional.cross_entropy)

    def loss(self, x, y, training: bool = True):
        """The batch's mean loss on the last stage, None on the others (a training step when
        ``training``: forward and backward over the microbatches)."""
        run = self.schedule.step if training else self.schedule.eval
        if not self.last:
            run(x)
            return None
        losses: list = []
        run(target=y, losses=losses)
        return torch.stack(losses).mean()


def build(mode: str, world: int, granularity: str = "tensor", ring_location: str = "device", runaway: bool = False,
          radial: str = "auto", optimizer: str = "sgd", adaptive: bool | str = False, hidden: int = 5,
          loss_reads: int | None = None, verify: bool = False, kernels: str = "auto"):
    """The model (under ``mode``'s parallelism; this rank's :class:`Pipeline` stage for
    ``pp``) and its PDT; ``verify``: merges verified on the rank's part of a held-out batch."""
    model = make_model(hidden)
    rank = dist.get_rank() if mode != "plain" else 0
    if mode == "pp":
        model = Pipeline(model, rank, world)
    elif mode != "plain":
        model = parallelize(model, mode, world)
    options = {} if loss_reads is None else {"loss_reads": loss_reads}
    if verify:
        part = data_coordinates(mode, rank, world)
        held_out = held_out_batch(*part)
        options["verify"] = ((lambda: model.loss(*held_out, training=False)) if mode == "pp" else
                             (lambda: torch.nn.functional.cross_entropy(model(held_out[0]), held_out[1])))
    if mode == "pp":
        options["pipeline_group"] = dist.group.WORLD
    opt = pdt.PDT(make_optimizer(optimizer, model.parameters()), granularity=granularity,
                  ring_location=ring_location, runaway_factor=3.0 if runaway else None, radial=radial, kernels=kernels,
                  **{**CONFIG, "adaptive": adaptive}, **options)
    return model, opt


def pipeline_step_function(model: Pipeline, opt):
    """:func:`step_function` through the pipeline: returns the loss on the last stage, None on the others."""

    def train_step(x, y):
        loss = model.loss(x, y)
        opt.step()
        opt.zero_grad()
        return loss

    return train_step


def train(model, opt, steps: range, part: int, parts: int, compiled: str | None, runaway: bool = False,
          dynamic: bool | None = None, reports: bool = True) -> None:
    """Train on part ``part`` of ``parts`` of each global batch; ``dynamic`` goes to
    torch.compile (False under tensor parallelism, where torch 2.13's Dynamo fails on the
    forward with automatic dynamic shapes, as plain ``torch.compile`` of the same step does);
    ``reports`` False: report None for the loss, as a pipeline stage without one would."""
    step = pipeline_step_function(model, opt) if isinstance(model, Pipeline) else step_function(model, opt)
    if compiled:
        step = pdt.compile(step, optimizer=opt, backend=compiled, dynamic=dynamic)
    for i in steps:
        loss = step(*batch(i, part, parts))
        if not compiled:  # a compiled step reports what it returns
            blown_up = loss is not None and reports and runaway and i in BLOW_UP and part == 0
            opt.report_loss(loss * 100.0 if blown_up else loss if reports else None)


def full_parameters(model) -> list[torch.Tensor]:
    return [p.full_tensor().detach() if hasattr(p, "full_tensor") else p.detach().clone() for p in model.parameters()]


def checkpoint_state(model, opt, api: str) -> dict:
    """What a trainer hands torch.distributed.checkpoint (see ``--checkpoint-api``)."""
    if api == "state_dict":
        return {"model": model.state_dict(), "optim": opt.state_dict()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    model_state, optim_state = get_state_dict(model, opt, options=StateDictOptions(
        full_state_dict=api == "dsd-full", flatten_optimizer_state_dict=api == "dsd-flat"))
    return {"model": model_state, "optim": optim_state}


def load_checkpoint_state(model, opt, state: dict, api: str) -> None:
    if api == "state_dict":
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict

    if api == "dsd-flat":  # torchtitan's layout: torch's set_optimizer_state_dict would drop PDT's state
        set_model_state_dict(model, state["model"])
        pdt.set_optimizer_state_dict(model, opt, state["optim"],
                                     options=StateDictOptions(flatten_optimizer_state_dict=True))
        return
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=StateDictOptions(full_state_dict=api == "dsd-full"))


def resume_through_rank0(args, model, opt, rank: int, world: int, stop: int) -> None:
    """Lightning's ModelParallelStrategy with a full checkpoint: full tensors on the CPU, the
    optimizer's keyed by parameter index, saved by rank 0 with torch.save; at the load every
    rank reads the file, keys it by name again, and rank 0's values are broadcast. Then train to
    the end (the model and optimizer in ``.resumed``)."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict, set_model_state_dict,
                                                         set_optimizer_state_dict)
    from torch.distributed.fsdp import FullyShardedDataParallel, OptimStateKeyType

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optim_state = get_optimizer_state_dict(model, opt, options=options)
    path = args.out + ".full.pt"
    if rank == 0:
        optim_state = FullyShardedDataParallel.rekey_optim_state_dict(optim_state, OptimStateKeyType.PARAM_ID, model)
        torch.save({"model": model_state, "optim": optim_state}, path)
    dist.barrier()
    model, opt = build(args.mode, world, args.granularity, args.ring_location, hidden=args.hidden)  # fresh objects, as after a restart
    train(model, opt, range(1), *data_coordinates(args.mode, rank, world), None)  # different state, to be overwritten
    saved = torch.load(path, weights_only=True)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, saved["model"], options=options)
    optim_state = FullyShardedDataParallel.rekey_optim_state_dict(saved["optim"], OptimStateKeyType.PARAM_NAME, model)
    set_optimizer_state_dict(model, opt, optim_state, options=options)
    train(model, opt, range(stop, args.steps), *data_coordinates(args.mode, rank, world), None)
    resume_through_rank0.resumed = model, opt


def reshard(args, model, opt, rank: int, world: int, stop: int) -> None:
    """Save the run at ``stop`` through torch.distributed.checkpoint (``--save-to``), or resume
    it there from such a checkpoint (``--load-from``), possibly saved by another number of
    processes, and train to the end."""
    import torch.distributed.checkpoint as dcp

    if args.save_to is not None:
        dcp.save(checkpoint_state(model, opt, args.checkpoint_api), checkpoint_id=args.save_to)
        return
    train(model, opt, range(1), *data_coordinates(args.mode, rank, world), None)  # different state, to be overwritten
    state = checkpoint_state(model, opt, args.checkpoint_api)
    dcp.load(state, checkpoint_id=args.load_from)
    load_checkpoint_state(model, opt, state, args.checkpoint_api)
    train(model, opt, range(stop, args.steps), *data_coordinates(args.mode, rank, world), None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["plain", "ddp", "fsdp", "hsdp", "tp", "fsdp_tp", "pp"], required=True)
    parser.add_argument("--verify", action="store_true", help="verify merges on each rank's part of a held-out batch")
    parser.add_argument("--kernels", default="auto", help="PDTConfig.kernels")
    parser.add_argument("--hidden", type=int, default=5, help="hidden width (tensor parallelism: even)")
    parser.add_argument("--loss-on-rank0", action="store_true", help="the other ranks report None for the loss")
    parser.add_argument("--loss-reads", type=int, default=None, help="PDTConfig.loss_reads")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--compile", nargs="?", const="aot_eager", default=None, help="Dynamo backend")
    parser.add_argument("--checkpoint-at", type=int, default=None)
    parser.add_argument("--checkpoint-api", choices=["state_dict", "dsd", "dsd-full", "dsd-flat", "dsd-rank0"],
                        default="state_dict",
                        help="opt.state_dict() into DCP, or torch.distributed.checkpoint.state_dict's get/set "
                             "(sharded, or full tensors into DCP, or flattened as torchtitan saves them, or as "
                             "Lightning's ModelParallelStrategy does with a full checkpoint: see resume_through_rank0)")
    parser.add_argument("--save-to", default=None,
                        help="with --checkpoint-at: save the checkpoint in this folder and stop there")
    parser.add_argument("--load-from", default=None,
                        help="with --checkpoint-at: resume from the checkpoint in this folder (saved by any number of "
                             "processes) and train to the end")
    parser.add_argument("--granularity", default="tensor")
    parser.add_argument("--ring-location", default="device")
    parser.add_argument("--runaway", action="store_true", help="runaway_factor 3, losses reported, a blow-up on rank 0")
    parser.add_argument("--radial", default="auto", help="PDTConfig.radial")
    parser.add_argument("--optimizer", choices=["sgd", "schedule-free", "zero", "torchao-adamw8bit"], default="sgd")
    parser.add_argument("--adaptive", action="store_const", const="auto", default=False,
                        help='adaptive="auto" (the default of PDTConfig), losses reported')
    args = parser.parse_args()
    distributed = args.mode != "plain"
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    model, opt = build(args.mode, world, args.granularity, args.ring_location, args.runaway, args.radial, args.optimizer,
                       args.adaptive, args.hidden, args.loss_reads, args.verify, args.kernels)
    stop = args.checkpoint_at or args.steps
    if args.load_from is None:
        train(model, opt, range(stop), *data_coordinates(args.mode, rank, world), args.compile, args.runaway,
              dynamic=False if args.mode in ("tp", "fsdp_tp") else None, reports=not args.loss_on_rank0 or rank == 0)
    if args.load_from is not None or args.save_to is not None:
        reshard(args, model, opt, rank, world, stop)
    elif args.checkpoint_at is not None and args.checkpoint_api == "dsd-rank0":
        resume_through_rank0(args, model, opt, rank, world, stop)
        model, opt = resume_through_rank0.resumed
    elif args.checkpoint_at is not None:
        import torch.distributed.checkpoint as dcp

        folder = args.out + ".dcp"
        dcp.save(checkpoint_state(model, opt, args.checkpoint_api), checkpoint_id=folder)
        model, opt = build(args.mode, world, args.granularity, args.ring_location, hidden=args.hidden)  # fresh objects, as after a restart
        train(model, opt, range(1), *data_coordinates(args.mode, rank, world), None)  # different state, to be overwritten
        state = checkpoint_state(model, opt, args.checkpoint_api)
        dcp.load(state, checkpoint_id=folder)
        load_checkpoint_state(model, opt, state, args.checkpoint_api)
        train(model, opt, range(stop, args.steps), *data_coordinates(args.mode, rank, world), None)
    params = full_parameters(model)
    result = {"params": params, "stats": opt.stats.as_dict(), "schedule": opt.schedule.state_dict(),
              "boundary_graphs": opt.compiled_step is not None and opt.compiled_step.runtime is not None,
              "state_types": sorted({type(getattr(value, "_local_tensor", value)).__name__
                                     for state in opt.state.values() for value in state.values()})}
    torch.save(result, f"{args.out}.rank{rank}")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    # The results are written: skip the interpreter's teardown, where a C++ thread left joinable
    # (seen after DCP checkpoints) aborted a finished worker with "terminate called without an
    # active exception" now and then.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
