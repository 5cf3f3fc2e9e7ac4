"""A networkx view of a Dynamo FX graph: which node is each parameter, and which writes it last."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import networkx as nx
import torch
from torch import fx


def _is_in_place(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.startswith("_")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return name.endswith("_") and not name.endswith("__")
    return False


def _first_argument_nodes(node: fx.Node) -> list[fx.Node]:
    first = node.args[0] if node.args else None
    items = first if isinstance(first, (list, tuple)) else [first]
    return [item for item in items if isinstance(item, fx.Node)]


@dataclass
class ParameterWrites:
    """For each tracked parameter: its ``get_attr`` node and the node that writes it last."""

    graph: nx.DiGraph
    parameter_nodes: dict[int, fx.Node]
    last_writes: dict[int, fx.Node]

    @property
    def is_optimizer_step(self) -> bool:
        """True when the graph updates every tracked parameter it reads in place."""
        return bool(self.last_writes)


def dependency_graph(gm: fx.GraphModule) -> nx.DiGraph:
    """Nodes of ``gm.graph`` with an edge from each node to every node that uses it."""
    graph = nx.DiGraph()
    for position, node in enumerate(gm.graph.nodes):
        graph.add_node(node, position=position)
        for used in node.all_input_nodes:
            graph.add_edge(used, node)
    return graph


def find_parameter_writes(gm: fx.GraphModule, params: Sequence[torch.Tensor]) -> ParameterWrites:
    """Locate ``params`` (by identity) among ``gm``'s ``get_attr`` nodes and their last
    in-place writer (``_foreach_*_`` lists or ``Tensor.*_`` methods, as Dynamo emits them)."""
    graph = dependency_graph(gm)
    index_of = {id(p): i for i, p in enumerate(params)}
    parameter_nodes: dict[int, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            value = getattr(gm, node.target, None)
            if id(value) in index_of:
                parameter_nodes[index_of[id(value)]] = node
    last_writes: dict[int, fx.Node] = {}
    for index, node in parameter_nodes.items():
        writers = [user for user in graph.successors(node) if _is_in_place(user) and node in _first_argument_nodes(user)]
        if writers:
            # Program order, not a topological one: two in-place writes of one parameter
            # (weight decay, then the update) share no data edge, so a topological sort may
            # put either first.
            last_writes[index] = max(writers, key=lambda user: graph.nodes[user]["position"])
    return ParameterWrites(graph, parameter_nodes, last_writes)
