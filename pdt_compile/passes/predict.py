"""Predict/merge pass: Gram over the ring, host solve, fused forecast + mask + merge per parameter.

Inserted after the optimizer's last write. The Gram and the merge are the kernels the eager
path runs (:func:`~pdt_compile.runtime.kernels.gram_pass`,
:func:`~pdt_compile.runtime.kernels.predict_pass_`), inlined here into the optimizer-step
graph; the h x h solve is the custom op ``pdt::solve_coefficients``, which runs on the host
and is tagged ``cudagraph_unsafe`` so that CUDA-graph partitioning keeps it outside capture.
"""

from __future__ import annotations

import ast
import operator
from typing import Sequence

import torch
from torch import Tensor, fx

from ..config import PDTConfig
from ..distributed import group_from_key, sum_grams_
from ..dmd import full_rank_coefficients
from ..runtime.history import flat_elements, write_elements_
from ..runtime.kernels import gram_pass, predict_pass_
from ..runtime.predictor import solve_coefficients
from .analysis import ParameterWrites

PREDICT, MERGE = "predict", "merge"
_TAGS = (torch.Tag.cudagraph_unsafe,) if hasattr(torch.Tag, "cudagraph_unsafe") else ()


def _decode_rank(text: str):
    return text if text in ("gavish_donoho", "full") else ast.literal_eval(text)


@torch.library.custom_op("pdt::solve_coefficients", mutates_args=(), tags=_TAGS)
def solve_coefficients_op(
    grams: Tensor, host_state: Tensor, rows: Tensor, steps: int, rank: str, modes: str, dynamics: str,
    shard_group: int, whole_model: bool,
) -> tuple[Tensor, Tensor]:
    """Host solve for the compiled path. host_state (CPU int64): ``[tau, next_slot, count]``.
    ``shard_group`` (a :func:`~pdt_compile.distributed.group_key`, 0 for none): the Grams are
    local and summed over the ranks of its :class:`~pdt_compile.distributed.ShardReduction`
    first, as the eager path does (over the pipeline stages too where ``whole_model``: the
    one DMD group of ``granularity="model"``). Returns float32 coefficients ``[G, steps, h]`` and
    s-coefficients ``[G, steps]`` on the Gram's device; rows past tau repeat row tau (the
    horizon is dynamic, the shape is not)."""
    tau, next_slot, count = (int(v) for v in host_state.tolist())
    h = grams.shape[-1]
    order = [(next_slot - count + i) % h for i in range(count)]
    grams = sum_grams_(grams.detach().clone(), group_from_key(shard_group), whole_model)
    coefficients, s_coefficients = solve_coefficients(
        grams, order, rows, steps, tau, rank=_decode_rank(rank), modes=modes, dynamics=dynamics
    )
    device = grams.device
    return coefficients.to(device, torch.float32), s_coefficients.to(device, torch.float32)


@solve_coefficients_op.register_fake
def _(grams, host_state, rows, steps, rank, modes, dynamics, shard_group, whole_model):
    groups, h = grams.shape[0], grams.shape[-1]
    return grams.new_empty(groups, steps, h, dtype=torch.float32), grams.new_empty(groups, steps, dtype=torch.float32)


def solve_on_device(
    grams: Tensor, perm: Tensor, inverse_perm: Tensor, row_index: Tensor, steps: int,
) -> tuple[Tensor, Tensor]:
    """The default solve (full rank, projected, linear) as device ops with no host read
    (:func:`~pdt_compile.dmd.full_rank_coefficients`), so a CUDA graph can hold the whole
    prediction. perm ``[h]``: physical row of each logical snapshot; inverse_perm its inverse;
    row_index ``[steps]``: ``min(k, tau - 1)`` (rows past tau repeat p_tau). Same outputs as
    ``pdt::solve_coefficients``."""
    logical = grams.index_select(-2, perm).index_select(-1, perm)
    coefficients, s_coefficients = full_rank_coefficients(logical, steps)
    coefficients = coefficients.index_select(-1, inverse_perm).index_select(1, row_index)
    return coefficients.float(), s_coefficients.index_select(1, row_index).float()


DEVICE_SOLVE_MAX_HISTORY = 16
"""The longest ring the predict graph solves on the device: the solve is O(history) tensor
operations (:func:`~pdt_compile.dmd.small_cholesky_solve`), whose compilation time grows with
it; a longer ring solves on the host (``pdt::solve_coefficients``)."""


def solves_on_device(config: PDTConfig, shard_group: int) -> bool:
    """Whether the predict graph solves on the device: the default DMD, on Grams that need no
    sum over ranks (sharded Grams, and a whole model's split over pipeline stages, are
    all-reduced by the host solve), with at most :data:`DEVICE_SOLVE_MAX_HISTORY` snapshots."""
    default = config.dmd_options() == {"rank": "full", "modes": "projected", "dynamics": "linear"}
    reduction = group_from_key(shard_group)
    local = reduction is None or not reduction.groups and (reduction.stages is None or config.granularity == "tensor")
    return default and local and config.history <= DEVICE_SOLVE_MAX_HISTORY


def group_grams(grams: Sequence[Tensor], groups: Sequence[int], counted: Sequence[bool] | None = None) -> Tensor:
    """Per-parameter Grams ``[h, h]`` summed into their DMD groups: ``[G, h, h]``. ``counted``
    (:attr:`~pdt_compile.distributed.ShardReduction.counted`): the pieces this rank adds to
    the sums over ranks; the others add zero."""
    if counted is not None:
        grams = [gram if keep else torch.zeros_like(gram) for gram, keep in zip(grams, counted)]
    count = max(groups) + 1
    if count == len(grams):
        return torch.stack(list(grams))
    return torch.stack(list(grams)).sum(0, keepdim=True)


def merge_parameter_(
    parameter: Tensor, rows: list[Tensor], s_weights: Tensor, slot_mask: Tensor, coefficients: Tensor,
    s_coefficients: Tensor, horizon: Tensor, active: Tensor, counts: Tensor, jump: Tensor | None,
    index: int, group: int, rule: str, trend: bool, drift: float | None, shift: bool,
    followers: Sequence[Tensor] = (), fractions: Tensor | None = None, first_follower: int = 0,
) -> None:
    """:func:`~pdt_compile.runtime.kernels.predict_pass_` on one parameter (its local shard, if
    sharded), moving its ``followers`` by their fractions of the jump (``fractions`` from
    ``first_follower`` on); its accepted count goes to ``counts[index]``."""
    weights = flat_elements(parameter)
    moved = [flat_elements(follower) for follower in followers]
    count = predict_pass_(
        weights, rows, s_weights, slot_mask, coefficients[group], s_coefficients[group], horizon,
        active[index], jump, rule, trend, drift, shift, moved,
        None if fractions is None else fractions[first_follower : first_follower + len(moved)],
    )
    for tensor, flat in zip((parameter, *followers), (weights, *moved)):
        write_elements_(tensor, flat)
    counts.select(0, index).copy_(count)


def insert_predict_merge(
    gm: fx.GraphModule, writes: ParameterWrites, names: dict, groups: Sequence[int],
    steps: int, config: PDTConfig, shard_group: int = 0,
) -> fx.GraphModule:
    """After the optimizer's last parameter write, insert: one ``gram_pass`` per parameter (tagged
    ``predict``), the grouped Grams and ``pdt::solve_coefficients`` (``predict``), and one
    ``merge_parameter_`` per parameter (``merge``), as ``config`` says. ``names`` maps the
    runtime buffers (``rings[i]``: parameter i's h row buffers; ``jumps``: per-parameter jump
    buffers when rollback is on; ``followers[i]``: the tensors parameter i's jump moves, each by
    its entry of ``fractions``, parameter after parameter); ``shard_group`` is the key of the
    parameters' :class:`~pdt_compile.distributed.ShardReduction` (0: none)."""
    dmd_options, shift = config.dmd_options(), config.after_merge == "shift"
    graph = gm.graph
    # Right after the last parameter write, still inside the step's no_grad region: Dynamo
    # re-enables grad before the output, and a merge traced with grad on gets a backward graph.
    order = {node: position for position, node in enumerate(graph.nodes)}
    after_writes = max(writes.last_writes.values(), key=order.__getitem__).next
    inserted: list[tuple[fx.Node, str]] = []

    def attr(name: str, tag: str) -> fx.Node:
        node = graph.get_attr(name)
        inserted.append((node, tag))
        return node

    def call(fn, args, tag: str) -> fx.Node:
        node = graph.call_function(fn, args)
        inserted.append((node, tag))
        return node

    with graph.inserting_before(after_writes):
        rings = {i: [attr(name, PREDICT) for name in names["rings"][i]] for i in writes.parameter_nodes}
        grams = [call(gram_pass, (rings[i],), PREDICT) for i in sorted(rings)]
        reduction = group_from_key(shard_group)
        counted = None if reduction is None else [reduction.counted[i] for i in sorted(rings)]
        stacked = call(group_grams, (grams, list(groups), counted), PREDICT)
        if solves_on_device(config, shard_group):
            indices = [attr(names[key], PREDICT) for key in ("perm", "inverse_perm", "row_index")]
            solved = call(solve_on_device, (stacked, *indices, steps), PREDICT)
        else:
            solved = call(
                torch.ops.pdt.solve_coefficients.default,
                (stacked, attr(names["host_state"], PREDICT), attr(names["rows"], PREDICT), steps,
                 str(dmd_options["rank"]), dmd_options["modes"], dmd_options["dynamics"], shard_group,
                 config.granularity == "model"),
                PREDICT,
            )
        coefficients = call(operator.getitem, (solved, 0), PREDICT)
        s_coefficients = call(operator.getitem, (solved, 1), PREDICT)
        shared = [attr(names[key], MERGE) for key in ("s_weights", "slot_mask")]
        horizon, active, counts = (attr(names[key], MERGE) for key in ("horizon", "active", "counts"))
        moved_before = 0
        for index, parameter in sorted(writes.parameter_nodes.items()):
            jump = attr(names["jumps"][index], MERGE) if names["jumps"] else None
            followers = [attr(name, MERGE) for name in names["followers"].get(index, ())]
            fractions = attr(names["fractions"], MERGE) if followers else None
            call(
                merge_parameter_,
                (parameter, rings[index], *shared, coefficients, s_coefficients, horizon, active, counts, jump,
                 index, groups[index], config.rule, config.trend, config.drift, shift, followers, fractions,
                 moved_before),
                MERGE,
            )
            moved_before += len(followers)
    for node, tag in inserted:
        node.meta["pdt_pass"] = tag
    gm.recompile()
    return gm
