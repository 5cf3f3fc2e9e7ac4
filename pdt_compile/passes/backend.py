"""The torch.compile backend of the optimizer step: run PDT's passes, then lower.

The only place that touches private torch internals: Dynamo must be told that buffers
the passes register are graph inputs (``GraphModule._param_name_to_source``, torch 2.11-2.13;
``tests/test_compile.py`` fails loudly if that changes).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import fx

from ..runtime.schedule import Phase
from .analysis import find_parameter_writes
from .predict import insert_predict_merge
from .snapshot import insert_snapshot


def register_buffer(gm: fx.GraphModule, name: str, tensor: torch.Tensor) -> None:
    """Register ``tensor`` on ``gm`` as a buffer that Dynamo/AOT treat as a graph input."""
    from torch._dynamo.source import ConstantSource

    gm.register_buffer(name, tensor)
    sources = getattr(gm, "_param_name_to_source", None)
    if sources is None:
        raise RuntimeError(
            "pdt_compile: this torch version's Dynamo GraphModule has no _param_name_to_source; "
            "the compiled path needs updating for it (the eager pdt.PDT still works)"
        )
    sources[name] = ConstantSource(name)


def lower(gm: fx.GraphModule, example_inputs: list, backend: str, mode: str | None) -> Callable:
    """Compile the rewritten graph with ``backend`` (Inductor options from ``mode``)."""
    if backend == "inductor":
        from torch._inductor.compile_fx import compile_fx

        patches = torch._inductor.list_mode_options(mode) if mode else {}
        return compile_fx(gm, example_inputs, config_patches=patches)
    return torch._dynamo.lookup_backend(backend)(gm, example_inputs)


def uses_cuda_graphs(backend: str, mode: str | None, options: dict[str, Any] | None = None) -> bool:
    """Whether torch.compile with ``backend``, ``mode`` and Inductor ``options`` runs CUDA
    graphs (Inductor's cudagraph trees): ``mode="reduce-overhead"`` or ``"max-autotune"``."""
    if backend != "inductor":
        return False
    settings = {**(torch._inductor.list_mode_options(mode) if mode else {}), **(options or {})}
    return bool(settings.get("triton.cudagraphs"))


class PDTBackend:
    """A Dynamo backend for one phase of the optimizer step.

    ``runtime`` (``api.GraphRuntime``) owns the buffers and the parameters; graphs that do
    not update the tracked parameters pass through unchanged. ``slot``: the ring row a
    capture graph writes; ``graphs``: the list the rewritten graphs are appended to.
    """

    def __init__(
        self, phase: Phase, runtime: Any, backend: str, mode: str | None, slot: int = 0,
        graphs: list[fx.GraphModule] | None = None,
    ) -> None:
        self.phase, self.runtime, self.backend, self.mode, self.slot = phase, runtime, backend, mode, slot
        self.graphs: list[fx.GraphModule] = [] if graphs is None else graphs
        self.ran = False
        """Set by every run of a graph into which this backend inserted PDT's nodes: the caller
        clears it before a call and reads it after, to tell a capture or prediction that ran
        from Dynamo's eager fallback (which a recompile limit makes silent) and from a step
        split where the passes do not see its parameter writes (graph breaks)."""

    def __call__(self, gm: fx.GraphModule, example_inputs: list, **_: Any) -> Callable:
        writes = find_parameter_writes(gm, self.runtime.params) if self.phase != Phase.ORDINARY else None
        inserted = writes is not None and writes.is_optimizer_step
        if inserted:
            missing = sorted(set(range(len(self.runtime.params))) - set(writes.parameter_nodes))
            if missing:
                raise RuntimeError(
                    f"pdt.compile: the optimizer-step graph does not read tracked parameters {missing}; "
                    "every parameter PDT tracks must be updated by the optimizer"
                )
            names = self.runtime.register(gm, register_buffer)
            if self.phase == Phase.CAPTURE:
                insert_snapshot(gm, writes, names, self.slot)
            else:
                insert_predict_merge(gm, writes, names, self.runtime.groups, self.runtime.steps,
                                     self.runtime.config, self.runtime.shard_group)
        self.graphs.append(gm)
        compiled = lower(gm, example_inputs, self.backend, self.mode)
        if not inserted:
            return compiled

        @functools.wraps(compiled)  # keeps its calling convention (``_boxed_call``)
        def run(*args: Any, **kwargs: Any) -> Any:
            self.ran = True
            return compiled(*args, **kwargs)

        return run
