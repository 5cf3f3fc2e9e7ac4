"""Snapshot pass: capture each parameter into its ring row right after its last write."""

from __future__ import annotations

from torch import Tensor, fx

from ..runtime.history import _local
from .analysis import ParameterWrites

PASS_NAME = "snapshot"


def capture_(ring: Tensor, slot: Tensor, parameter: Tensor) -> None:
    """Write ``parameter`` (its local shard, if sharded) into row ``slot`` (a 1-element index
    tensor) of ``ring`` ``[h, n]``."""
    ring.index_copy_(0, slot, _local(parameter.detach()).reshape(1, -1).to(ring.dtype))


def insert_snapshot(gm: fx.GraphModule, writes: ParameterWrites, names: dict) -> fx.GraphModule:
    """After the last write of every parameter (``writes``), insert
    ``capture_(ring_i, slot, parameter_i)``; the rings and the slot are ``get_attr`` buffers
    (``names``: their attribute names)."""
    graph = gm.graph
    for index, parameter in writes.parameter_nodes.items():
        anchor = writes.last_writes.get(index, parameter)
        with graph.inserting_after(anchor):
            ring = graph.get_attr(names["rings"][index])
        with graph.inserting_after(ring):
            slot = graph.get_attr(names["slot"])
        with graph.inserting_after(slot):
            call = graph.call_function(capture_, (ring, slot, parameter))
        for node in (ring, slot, call):
            node.meta["pdt_pass"] = PASS_NAME
    gm.recompile()
    return gm
