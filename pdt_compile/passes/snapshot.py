"""Snapshot pass: capture each parameter into its ring row right after its last write."""

from __future__ import annotations

from torch import Tensor, fx

from ..runtime.history import _local
from .analysis import ParameterWrites

PASS_NAME = "snapshot"


def capture_(row: Tensor, parameter: Tensor) -> None:
    """Write ``parameter`` (its local shard, if sharded) into the ring row ``row`` ``[n]``."""
    row.copy_(_local(parameter.detach()).reshape(-1).to(row.dtype))


def insert_snapshot(gm: fx.GraphModule, writes: ParameterWrites, names: dict, slot: int) -> fx.GraphModule:
    """After the last write of every parameter (``writes``), insert
    ``capture_(row, parameter_i)`` into row ``slot`` of its ring. The slot is fixed per
    graph (the runtime compiles one capture graph per slot): the write fuses into the
    optimizer's update kernel, and no other row is touched."""
    graph = gm.graph
    for index, parameter in writes.parameter_nodes.items():
        anchor = writes.last_writes.get(index, parameter)
        with graph.inserting_after(anchor):
            row = graph.get_attr(names["rings"][index][slot])
        with graph.inserting_after(row):
            call = graph.call_function(capture_, (row, parameter))
        for node in (row, call):
            node.meta["pdt_pass"] = PASS_NAME
    gm.recompile()
    return gm
