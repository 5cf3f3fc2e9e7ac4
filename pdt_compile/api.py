"""``@pdt.compile``: compile a training step with PDT inside the optimizer-step graphs.

The user's function (forward, backward, ``optimizer.step()``, ``zero_grad``) is compiled
once with torch.compile. ``Optimizer.step`` graph-breaks on purpose, so PDT's own
``PDT.step`` stays outside Dynamo and calls one of three compiled variants of the wrapped
optimizer's step, each built by :class:`~pdt_compile.passes.backend.PDTBackend`:

- ``ORDINARY``: the optimizer step, untouched (no overhead on ordinary steps);
- ``CAPTURE``: plus the ring capture fused after the parameter writes (one graph per ring
  row, so a capture writes only its row);
- ``PREDICT``: plus Gram, host solve and fused forecast/mask/merge/capture.

The runtime picks the variant on the host from its counters; the rows a prediction reads
and writes and tau live in tensors the graphs read, so neither boundaries nor tau changes
recompile, and float learning rates are handed to the graphs as tensors, so schedulers
do not recompile either.
"""

from __future__ import annotations

import functools
import inspect
import time
import types
import warnings
from typing import Any, Callable, Generic, Mapping, ParamSpec, Protocol, Sequence, TypeVar, overload

import torch
from torch import Tensor, fx

from .distributed import global_numel, group_key, sum_parameter_pieces_
from .optim import PDT, calls_step_hooks
from .passes.backend import PDTBackend, uses_cuda_graphs
from .runtime.hyperparameters import TENSOR_HYPERPARAMETERS, TensorHyperparameters, rewrites_constants_every_step
from .runtime.kernels import working_dtype
from .runtime.predictor import Prediction, group_of, group_rows, one_hot, write_from_host_
from .runtime.schedule import Phase


def boundary_tensors(optimizer: PDT) -> tuple[list[Tensor], list[list[tuple[Tensor, float]]]]:
    """What a boundary graph reads and writes besides the ring: the tracked tensors
    (:meth:`~pdt_compile.PDT.tracked`) and, per tracked tensor, the followers a jump moves with
    their fractions of it (none at 0)."""
    followers = optimizer._moved_fractions() if optimizer.has_followers else [[] for _ in optimizer.ring.params]
    return optimizer.tracked(), [[(t, f) for t, f in moved if f] for moved in followers]


def identities(tracked: list[Tensor], followers: list[list[tuple[Tensor, float]]]) -> tuple:
    """A key of :func:`boundary_tensors` that changes when a graph built on them would be stale
    (optimizer state created or replaced, a follower's fraction turned to or from 0); the
    fractions themselves are a buffer the graphs read."""
    return tuple(id(t) for t in tracked), tuple(tuple(id(t) for t, _ in moved) for moved in followers)


def fractions_of(followers: list[list[tuple[Tensor, float]]]) -> list[float]:
    """Every follower's fraction of its jump, parameter after parameter: the order of the
    graphs' ``fractions`` buffer."""
    return [f for moved in followers for _, f in moved]


class GraphRuntime:
    """Buffers shared by the host runtime and the compiled graphs (fixed addresses)."""

    def __init__(self, optimizer: PDT) -> None:
        self.optimizer = optimizer
        self.config = optimizer.config
        ring = optimizer.ring
        ring.unpack_()  # the graphs take every ring row as a buffer of its own
        self.params, self.followers = boundary_tensors(optimizer)
        """The tensors the graphs capture and merge (the parameters, or the optimizer state
        ``PDTConfig.sequence`` names), and the followers each merge moves."""
        self.fractions = fractions_of(self.followers)
        """The current fractions (:meth:`CompiledOptimizerStep._boundaries_apart` updates them)."""
        self.key = identities(self.params, self.followers)
        count, device, h = len(self.params), ring.device, ring.history
        self.groups = group_of(self.config, count)
        self.reduction = ring.reduction
        self.shard_group = group_key(self.reduction)
        self.steps = self.config.tau_max
        numels = [global_numel(p) for p in self.params]
        self.buffers = {
            "s_weights": torch.zeros(h, dtype=torch.float32, device=device),
            "slot_mask": torch.zeros(h, dtype=torch.bool, device=device),
            "horizon": torch.tensor(float(self.config.tau), device=device),
            "active": torch.ones(count, dtype=torch.bool, device=device),
            "counts": torch.zeros(count, dtype=torch.int64, device=device),
            "host_state": torch.zeros(3, dtype=torch.int64),
            "perm": torch.arange(h, device=device),
            "inverse_perm": torch.arange(h, device=device),
            "row_index": torch.zeros(self.steps, dtype=torch.int64, device=device),
            "rows": group_rows(tuple(numels), tuple(self.groups)).clone(),
            "fractions": torch.tensor(self.fractions, dtype=torch.float32, device=device),
        }
        self.jumps = (
            [torch.zeros(n, dtype=working_dtype(p.dtype), device=device) for n, p in zip(ring.numels, self.params)]
            if optimizer.keeps_jumps else []
        )

    def register(self, gm: fx.GraphModule, register_buffer: Callable) -> dict[str, Any]:
        """Register each parameter's ring rows, jump buffers and the shared buffers on ``gm``;
        returns their attribute names."""
        ring = self.optimizer.ring
        names: dict[str, Any] = {"rings": {}, "jumps": {}, "followers": {}}
        for index in range(len(self.params)):
            names["rings"][index] = [f"pdt_ring_{index}_{slot}" for slot in range(ring.history)]
            for name, row in zip(names["rings"][index], ring.row_tensors(index)):
                register_buffer(gm, name, row)
            names["followers"][index] = [f"pdt_follower_{index}_{number}" for number in range(len(self.followers[index]))]
            for name, (follower, _) in zip(names["followers"][index], self.followers[index]):
                register_buffer(gm, name, follower.detach())
        for index, jump in enumerate(self.jumps):
            names["jumps"][index] = f"pdt_jump_{index}"
            register_buffer(gm, names["jumps"][index], jump)
        for key, tensor in self.buffers.items():
            names[key] = f"pdt_{key}"
            register_buffer(gm, names[key], tensor)
        return names

    def prepare_prediction(self) -> None:
        """Write this prediction's rows, horizon and active parameters into the buffers, every
        copy queued (:func:`~pdt_compile.runtime.predictor.write_from_host_`): six waiting
        copies would stall the host until the GPU had finished the backward pass."""
        ring, h = self.optimizer.ring, self.optimizer.ring.history
        tau = self.optimizer.schedule.horizon
        cpu = torch.device("cpu")
        write_from_host_(self.buffers["s_weights"], one_hot(ring.last_slot, h, torch.float32, cpu))
        write_from_host_(self.buffers["slot_mask"], one_hot(ring.next_slot, h, torch.bool, cpu))
        self.buffers["horizon"].fill_(float(tau))
        self.buffers["host_state"].copy_(torch.tensor([tau, ring.next_slot, ring.count]))
        order = torch.tensor(ring.order())
        write_from_host_(self.buffers["perm"], order)
        write_from_host_(self.buffers["inverse_perm"], torch.argsort(order))
        write_from_host_(self.buffers["row_index"], torch.arange(self.steps).clamp(max=tau - 1))
        self.active = [not skipped for skipped in self.optimizer._skipped()]
        write_from_host_(self.buffers["active"], torch.tensor(self.active))
        if self.fractions:
            write_from_host_(self.buffers["fractions"], torch.tensor(self.fractions, dtype=torch.float32))


def _own_code(fn: Callable, name: str) -> Callable:
    """A copy of ``fn`` with a code object of its own. Dynamo caches graphs (and counts
    recompiles) per code object: variants and PDT instances must not share one."""
    code = fn.__code__.replace(co_name=name, co_qualname=name) if hasattr(fn.__code__, "co_qualname") else fn.__code__.replace(co_name=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


class CompiledOptimizerStep:
    """The compiled variants of the wrapped optimizer's step, called by ``PDT.step``: ordinary,
    one capture graph per ring row, and prediction.

    With a ring that is not the float32 device ring (``ring_dtype="bfloat16"``,
    ``ring_location="host"``), only the ordinary variant is compiled and the boundary work runs
    after it through the eager path's kernels. When merges also move optimizer state or an
    average (:meth:`~pdt_compile.PDT.followers`: schedule-free's base iterate, Lookahead's slow
    weights, an EMA), the prediction runs after the ordinary variant, in a graph of its own that
    merges the tracked tensors and moves every follower inside the merge's loop (see below).
    A step at which some learning rate is exactly 0 runs the optimizer eagerly (see
    :class:`~pdt_compile.runtime.hyperparameters.TensorHyperparameters`),
    and so does some parameter's first step, at which optimizers create their state: a state tensor
    created inside a CUDA-graph-captured step lives in that graph's memory pool, and the next
    graph run overwrites it (SGD's momentum buffer under ``mode="reduce-overhead"`` did, on an
    H200); eagerly it is an ordinary allocation, and a graph that runs once is not compiled.

    A fused optimizer (``fused=True``: one kernel per step already) is not traced: torch keeps
    Dynamo out of it on purpose (``torch.compiler.disable``), so its step runs eagerly and the
    prediction runs in a graph of its own, compiled from a stand-in step that rewrites every
    tracked tensor unchanged (:class:`ParameterTouch`) so that the same passes find the writes to
    follow. Nor is a schedule-free optimizer traced, nor one that counts its steps in its param
    groups (pytorch-optimizer's): its step rewrites a number of its param groups at every step
    (:data:`~pdt_compile.runtime.hyperparameters.STEP_COUNTERS`), nor one whose step reads
    tensors to the host (:data:`HOST_READING_STEPS`: torch's Adafactor). The wrapped optimizer's
    step hooks (and profiler label), which a variant traced from its undecorated step leaves out,
    run around the variant that steps when some are registered; with post hooks the boundary work
    runs after the ordinary variant, so that they see the step as ``optimizer.step()`` would show
    it, before any merge. A step replaced on the instance (:func:`replaced_step`) runs eagerly,
    through the replacement. Apart from the
    optimizer step a capture has no update to fuse into: it is the eager path's, one foreach copy
    (no graph to compile per ring row, and no rewrite of the weights).
    An optimizer step that Dynamo falls back to eager for anyway (a
    recompile limit, an untraceable step) is run the same way from then on, and where even the
    stand-in falls back, the boundary work runs through the eager path's code; each with a warning.
    """

    def __init__(self, optimizer: PDT, backend: str, mode: str | None, trace_step: bool = True) -> None:
        self.optimizer = optimizer
        self.backend, self.mode = backend, mode
        self.trace_step = trace_step
        """False: the optimizer step always runs eagerly, only the boundaries are compiled
        (``PDTConfig.kernels="graph"``)."""
        self.graphs: dict[str, list[fx.GraphModule]] = {phase.name.lower(): [] for phase in Phase}
        """The rewritten optimizer-step graphs of each phase (print them to see PDT's nodes)."""
        self.traced = False
        self.deferred = not optimizer.ring_ready
        """Whether the variants wait for PDT's ring (lazy modules before their first forward):
        built at the first step (:meth:`~pdt_compile.PDT._materialise`)."""
        if not self.deferred:
            self.rebuild()

    def rebuild(self) -> None:
        """Build the variants for the optimizer's current parameters (again, after
        ``PDT.add_param_group``): new code objects, so Dynamo compiles them afresh; the old
        graphs are dropped from :attr:`graphs`."""
        optimizer = self.optimizer
        inner = optimizer.optimizer
        self.deferred = False
        self.traced = self.trace_step and not (
            uses_fused_kernels(inner) or rewrites_constants_every_step(inner) or reads_to_the_host(inner)
        )
        """Whether the optimizer step runs in compiled graphs (not for fused optimizers, nor for
        schedule-free ones, whose step changes a float of its param groups every time, nor for
        :data:`HOST_READING_STEPS`)."""
        self.fused = optimizer.ring.fused and boundaries_in_graphs(optimizer)
        """Whether the boundary work runs in compiled graphs (the float32 device ring, and
        :func:`boundaries_in_graphs`)."""
        self.follows = optimizer.has_followers
        """Whether merges move followers (:meth:`~pdt_compile.PDT.followers`): the boundaries then
        run after the optimizer step, apart from its graph, so that they see the optimizer state
        they capture or move as it is at that boundary."""
        self.runtime: GraphRuntime | None = None
        self.hyperparameters = TensorHyperparameters(inner)
        self.stepped: set[int] = set()  # ids of the parameters that have had their first (eager) step
        self.stepped_all = -1  # the parameter count when every parameter had had it
        for graphs in self.graphs.values():
            graphs.clear()
        self.backends: dict[tuple[Phase, int], PDTBackend] = {}
        self.variants: dict[tuple[Phase, int], Callable[[], None]] = {}
        self.ran_once: set[tuple[Phase, int]] = set()
        """Variants called before: a first call compiles, which the prediction time leaves out."""
        self._hooked: Callable[[], None] | None = None
        self._with_hooks = torch.optim.Optimizer.profile_hook_step(lambda stepped: self._hooked())
        """torch's own wrapper of an optimizer step (step hooks, profiler label), which the
        variants, traced from the undecorated step, leave out: :meth:`_run_variant` calls a
        variant inside it, with the wrapped optimizer as ``inner.step()`` would."""
        if self.traced:
            self._build_variants(inner, ordinary=True, boundaries=self.fused and not self.follows)

    @property
    def apart(self) -> bool:
        """Whether the boundaries run after the optimizer step (eager, or the ordinary variant):
        a prediction in a graph of its own, compiled from :class:`ParameterTouch`, a capture
        through the eager path."""
        return not self.traced or self.follows

    def _build_variants(self, stepped: torch.optim.Optimizer, ordinary: bool, boundaries: bool) -> None:
        """Compiled variants of ``stepped``'s undecorated step (its decorator graph-breaks
        around the body on purpose): the ordinary one when ``ordinary``, the boundary ones
        (which build :attr:`runtime`) when ``boundaries``."""
        raw_step = inspect.unwrap(type(stepped).step)

        def optimizer_step() -> None:
            with torch.no_grad():
                raw_step(stepped)

        keys: list[tuple[Phase, int]] = [(Phase.ORDINARY, 0)] if ordinary else []
        if boundaries:
            self.runtime = GraphRuntime(self.optimizer)
            if self.apart:  # no update to fuse a capture into: the eager path's capture does it
                keys += [(Phase.PREDICT, 0)]
            else:
                keys += [(Phase.CAPTURE, slot) for slot in range(self.optimizer.ring.history)] + [(Phase.PREDICT, 0)]
        for key in keys:
            self.backends[key] = PDTBackend(key[0], self.runtime, self.backend, self.mode, slot=key[1],
                                            graphs=self.graphs[key[0].name.lower()])
            self.variants[key] = torch.compile(_own_code(optimizer_step, _variant_name(*key)), backend=self.backends[key])
            self.ran_once.discard(key)

    def _trace_boundaries_only(self) -> None:
        """From now on the optimizer steps eagerly and the boundaries run apart from it (see
        :meth:`_boundaries_apart`)."""
        self.traced = False
        self.runtime = None

    def _boundaries_apart(self) -> None:
        """Make the prediction variant that runs after the optimizer step current: compiled from
        :class:`ParameterTouch` on the tracked tensors (see the class docstring), again whenever
        those tensors or their followers are other tensors than the graphs were built on (a
        schedule-free optimizer creates its base iterate at its first step; ``load_state_dict``
        replaces optimizer state)."""
        tracked, followers = boundary_tensors(self.optimizer)
        if self.runtime is not None and self.runtime.key == identities(tracked, followers):
            self.runtime.fractions = fractions_of(followers)
            return
        for graphs in (self.graphs["capture"], self.graphs["predict"]):
            graphs.clear()
        self._build_variants(ParameterTouch(tracked), ordinary=False, boundaries=True)

    def _check_constants(self) -> None:
        """Stop tracing the optimizer step once a param-group entry its graphs take as a
        constant changes (an unlisted optimizer's scheduled learning rate), or a step counter
        appears (:data:`~pdt_compile.runtime.hyperparameters.STEP_COUNTERS`, added by the
        optimizer's first step): each change would recompile every variant, as plain
        ``torch.compile`` recompiles the step, until Dynamo's recompile limit. A counter stops it
        quietly, as one present from the start does."""
        if rewrites_constants_every_step(self.optimizer.optimizer):  # a counter its first step added
            self._trace_boundaries_only()
            return
        changed = self.hyperparameters.changed_constant()
        if changed is None:
            return
        self._trace_boundaries_only()
        name = type(self.optimizer.optimizer).__name__
        warnings.warn(
            f"pdt.compile: {name}'s param-group entry {changed!r} changed; a compiled optimizer step takes it as "
            "a constant, and Dynamo would recompile the step at every change (plain torch.compile does the same). "
            f"From now on {name} steps eagerly and PDT's predictions stay compiled. Learning rates of "
            f"{', '.join(sorted(cls.__name__ for cls in TENSOR_HYPERPARAMETERS))} are handed to the graphs as tensors instead",
            stacklevel=3,
        )

    def __call__(self, phase: Phase) -> Prediction | None:
        optimizer, ring = self.optimizer, self.optimizer.ring
        ring.before_update_()
        if self.traced:
            self._check_constants()
        traced = self.traced and not (
            self.hyperparameters.has_zero_lr() or self.creates_state() or replaced_step(optimizer.optimizer)
        )
        hooked = traced and calls_step_hooks(optimizer.optimizer)
        hooked_after = hooked and calls_step_hooks(optimizer.optimizer, before=False, profiler=False)
        in_step = self.fused and not self.apart  # the boundary graphs hold the optimizer step
        # A tracked parameter without a gradient is left out of the traced step, where its
        # capture or merge would be: such a boundary runs apart (the eager path skips it too).
        gradless = in_step and traced and phase != Phase.ORDINARY and any(optimizer._skipped())
        if phase == Phase.ORDINARY or not (in_step and traced) or hooked_after or gradless:
            if traced:
                self._run_variant((Phase.ORDINARY, 0), hooked)
            else:
                optimizer.optimizer.step()  # eager: see the class docstring
            if phase != Phase.PREDICT or not self.fused or in_step:
                return optimizer._run_boundary(phase)  # apart from the step, a capture is one foreach copy
            self._boundaries_apart()
        key = (phase, ring.next_slot if phase == Phase.CAPTURE else 0)
        if phase == Phase.PREDICT:
            self.runtime.prepare_prediction()
        backend = self.backends[key]
        backend.ran = False
        start = time.perf_counter()
        if in_step:
            self._run_variant(key, hooked)
        else:
            self.variants[key]()  # the boundary alone, after the optimizer step
        if not backend.ran:
            self._fell_back(phase, in_step)
            return optimizer._run_boundary(phase)  # which times its own prediction
        if phase == Phase.PREDICT and key in self.ran_once:  # the host's view: on CUDA, queued work is not in it
            optimizer._stats.prediction_seconds += time.perf_counter() - start
        self.ran_once.add(key)
        ring.advance_()
        if phase == Phase.CAPTURE:
            return None
        counts = sum_parameter_pieces_(self.runtime.buffers["counts"].clone(), self.runtime.reduction)
        active = self.runtime.active
        jumps = self.runtime.jumps or [None] * len(active)
        # Counts stay on the device: PDT reads them when it must (see PDT.defers_host_reads).
        return Prediction(list(active), [j if a else None for j, a in zip(jumps, active)], pending=counts)

    def _run_variant(self, key: tuple[Phase, int], hooked: bool) -> None:
        """Run a variant that holds the optimizer step, with its hyperparameters handed over as
        tensors and, where ``hooked``, inside the wrapped optimizer's step hooks and profiler
        label. A post hook sees the step before PDT's boundary work (as in eager), so a step
        with post hooks runs its boundary apart (:meth:`__call__`); pre hooks and the profiler
        keep it in the step's graph."""
        with self.hyperparameters:
            if not hooked:
                self.variants[key]()
                return
            self._hooked = self.variants[key]
            try:
                self._with_hooks(self.optimizer.optimizer)
            finally:
                self._hooked = None

    def _fell_back(self, phase: Phase, in_step: bool) -> None:
        """A boundary variant ran without PDT's nodes (Dynamo's eager fallback at a recompile
        limit or on a step it cannot trace, or graph breaks that hide the parameter writes):
        step eagerly from now on, with compiled boundaries, or, where those fell back too, the
        eager path's boundary work."""
        if in_step:
            self._trace_boundaries_only()
            then = "the optimizer steps eagerly and PDT's predictions run in a graph of their own"
        else:
            self.fused = False
            then = "PDT's boundary work runs eagerly, as in pdt.PDT"
        warnings.warn(
            f"pdt.compile: the {phase.name.lower()} {'optimizer step' if in_step else 'boundary'} ran without being "
            "compiled with PDT's nodes (Dynamo fell back to eager: a recompile limit, a step it cannot trace; or "
            f"graph breaks split the step where PDT's passes do not see its parameter writes); from now on {then}, "
            "with the same results. TORCH_LOGS=recompiles,graph_breaks says why",
            stacklevel=3,
        )

    def creates_state(self) -> bool:
        """Whether this step is some parameter's first (one with a gradient that no eager step
        has updated yet): optimizers create their state then. Once every parameter has had its
        first step this is not checked again until a parameter group is added; while some
        parameter has never had a gradient (frozen), each step looks at every parameter's."""
        groups = self.optimizer.optimizer.param_groups
        count = sum(len(group["params"]) for group in groups)
        if count == self.stepped_all:
            return False
        new = [p for group in groups for p in group["params"] if p.grad is not None and id(p) not in self.stepped]
        self.stepped.update(id(p) for p in new)
        if len(self.stepped) == count:
            self.stepped_all = count
        return bool(new)


class ParameterTouch(torch.optim.Optimizer):
    """A stand-in optimizer whose step rewrites every parameter unchanged (times 1). Compiled in
    place of an optimizer step Dynamo does not trace, it gives PDT's passes the parameter
    writes they insert the capture and the prediction after (Dynamo lifts an optimizer's
    parameters as graph attributes, which the passes look for)."""

    def __init__(self, params: list[Tensor]) -> None:
        super().__init__(params, {})

    def step(self, closure: Callable[[], Any] | None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            torch._foreach_mul_(group["params"], 1.0)


GRAPH_TENSORS_CPU = 16
"""Under ``pdt.compile`` with ``kernels="auto"``, the most tensors for which the boundaries of a
CPU run are compiled into graphs (see :func:`boundaries_in_graphs`)."""


def boundaries_in_graphs(optimizer: PDT) -> bool:
    """Whether ``pdt.compile`` compiles PDT's boundaries (captures fused into the optimizer step,
    the prediction) into graphs, or runs them after the compiled optimizer step through the eager
    path's kernels (``PDTConfig.kernels``: per-parameter Inductor kernels, or plain torch).

    ``kernels="graph"``: graphs; ``"inductor"`` or ``"torch"``: those kernels; ``"auto"``: graphs,
    except on the CPU past :data:`GRAPH_TENSORS_CPU` tensors. The graphs unroll PDT's maths for
    every tensor, 1.5-2 s of compiling per tensor on a 2-core CPU (``python -m
    benchmarks.compile_time``), against nothing for the eager kernels below 2**20 elements (plain
    torch) and 3-7 s above (per-parameter Inductor kernels). A prediction in the graphs is faster:
    at 98 tensors (6.3M parameters) 17.9 ms against the per-parameter kernels' 35.4 ms, whose
    graph took 234 s to compile, and plain torch ran 7.8-15.5x the bandwidth floor against the
    graphs' 0.9-1.1x (``python -m benchmarks.boundary_graphs``): on the CPU the graphs repay their
    compile only after thousands of predictions. On accelerators the eager path is
    bound by its host calls (33x the bandwidth floor on an H200 against 5.4x compiled), so there
    the graphs stay whatever the count."""
    kernels = optimizer.config.kernels
    if kernels in ("inductor", "torch"):
        return False
    if kernels == "graph":
        return True
    return optimizer.ring.device.type != "cpu" or len(optimizer.ring.params) <= GRAPH_TENSORS_CPU


def uses_fused_kernels(optimizer: torch.optim.Optimizer) -> bool:
    """Whether some param group of ``optimizer`` asks for torch's fused update (``fused=True``)."""
    return any(group.get("fused") for group in optimizer.param_groups)


HOST_READING_STEPS: tuple[type, ...] = (torch.optim.Adafactor,)
"""Optimizer classes (and their subclasses) whose step reads tensors to the host at every step (torch's
Adafactor: its step count and each parameter's norm, by ``.item()``, in both its for-loop and
foreach forms). Dynamo breaks the graph at each read, so the parameter writes land in pieces
where PDT's passes cannot see them: ``pdt.compile`` runs such a step eagerly from the start, its
predictions compiled, rather than compile it, find no PDT node ran, and warn."""


def reads_to_the_host(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` is one of :data:`HOST_READING_STEPS`."""
    return isinstance(optimizer, HOST_READING_STEPS)


def replaced_step(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` was replaced on the instance (``optimizer.step = wrapper``, as
    some libraries and users do) by something other than an LR scheduler's marker, which only
    records that the step ran. The compiled variants are traced from the class's step, so they
    would skip the replacement: such a step runs eagerly, through it."""
    step = vars(optimizer).get("step")
    return step is not None and not getattr(step, "_wrapped_by_lr_sched", False)


def _variant_name(phase: Phase, slot: int) -> str:
    return f"pdt_{phase.name.lower()}_step" + (f"_{slot}" if phase == Phase.CAPTURE else "")


P = ParamSpec("P")
R = TypeVar("R", covariant=True)
Graphs = dict[str, list[fx.GraphModule]]


class CompiledStep(Protocol, Generic[P, R]):
    """What ``@pdt.compile(optimizer=opt)`` returns for one optimizer: the training step, called
    as the undecorated one (type checkers keep its signature and return type), with PDT's
    rewritten graphs to inspect."""

    pdt_graphs: Graphs
    """The rewritten optimizer-step graphs of each phase (``"ordinary"``, ``"capture"``,
    ``"predict"``)."""
    compiled_optimizer_step: CompiledOptimizerStep
    """The compiled variants PDT's step runs through."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...


class CompiledSteps(Protocol, Generic[P, R]):
    """:class:`CompiledStep` for a step that steps several optimizers: one entry per optimizer,
    in their order."""

    pdt_graphs: list[Graphs]
    compiled_optimizer_step: list[CompiledOptimizerStep]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...


@overload
def compile(fn: Callable[P, R], *, optimizer: PDT, backend: str = ..., mode: str | None = ...,
            **torch_compile_kwargs: Any) -> CompiledStep[P, R]: ...
@overload
def compile(fn: Callable[P, R], *, optimizer: Sequence[PDT], backend: str = ..., mode: str | None = ...,
            **torch_compile_kwargs: Any) -> CompiledSteps[P, R]: ...
@overload
def compile(fn: None = None, *, optimizer: PDT, backend: str = ..., mode: str | None = ...,
            **torch_compile_kwargs: Any) -> Callable[[Callable[P, R]], CompiledStep[P, R]]: ...
@overload
def compile(fn: None = None, *, optimizer: Sequence[PDT], backend: str = ..., mode: str | None = ...,
            **torch_compile_kwargs: Any) -> Callable[[Callable[P, R]], CompiledSteps[P, R]]: ...
def compile(
    fn: Callable[..., Any] | None = None,
    *,
    optimizer: PDT | Sequence[PDT] | None = None,
    backend: str = "inductor",
    mode: str | None = None,
    **torch_compile_kwargs: Any,
) -> Any:
    """Compile a training step so that PDT runs inside its optimizer-step graphs.

    ``fn`` runs forward, ``loss.backward()``, ``optimizer.step()``, ``optimizer.zero_grad()``
    and returns the loss (fed to what reads losses: :func:`step_loss` finds it alone, first in a
    tuple or under ``"loss"`` in a mapping). ``optimizer`` is the
    :class:`~pdt_compile.PDT` that ``fn`` steps, or a sequence of them where ``fn`` steps
    several (Muon on the matrices and AdamW on the rest, as two optimizers): each gets
    compiled steps of its own. ``backend``: ``"inductor"`` (default) or any
    Dynamo backend name such as ``"aot_eager"``; ``mode`` is passed to Inductor.
    The returned callable (:class:`CompiledStep`, or :class:`CompiledSteps` for several
    optimizers) keeps ``fn``'s signature for type checkers and exposes ``pdt_graphs``
    (rewritten graphs per phase; with several optimizers, one such dict per optimizer, in their
    order).

    With CUDA graphs (``mode="reduce-overhead"``), each call begins a cudagraph-trees step
    (``torch.compiler.cudagraph_mark_step_begin()``): PDT's optimizer graphs are compiled
    functions of their own, and entering one would otherwise start a new generation that
    frees the gradients the backward graph just wrote. Tensors the previous call returned are
    overwritten by the next call, as with plain torch.compile in that mode.
    """
    if optimizer is None:
        raise TypeError("pdt.compile: optimizer= is required, the pdt.PDT that the step steps: "
                        "@pdt.compile(optimizer=opt) (with parentheses) above the training step")
    if fn is None:
        return lambda f: compile(f, optimizer=optimizer, backend=backend, mode=mode, **torch_compile_kwargs)
    optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    for item in optimizers:
        if not isinstance(item, PDT):
            raise TypeError(
                f"pdt.compile(optimizer=...): expected a pdt.PDT or a list of them, got {type(item).__name__}; "
                "wrap it first: opt = pdt.PDT(opt, snap_every=...)"
            )
    if not optimizers or len({id(item) for item in optimizers}) < len(optimizers):
        raise ValueError(f"pdt.compile(optimizer=...): expected distinct pdt.PDT optimizers, got {len(optimizers)} "
                         f"({len({id(item) for item in optimizers})} distinct)")
    if torch_compile_kwargs.get("fullgraph"):
        raise ValueError(
            "pdt.compile(fullgraph=True): the optimizer step runs as PDT's own compiled graphs, called "
            "between the graphs of the rest of the step (a graph break by design); drop fullgraph=True"
        )
    steps = [CompiledOptimizerStep(item, backend, mode) for item in optimizers]
    for item, step in zip(optimizers, steps):
        item.compiled_step = step
    options = dict(torch_compile_kwargs)
    if backend == "inductor" and mode is not None:
        options["mode"] = mode
    compiled = torch.compile(fn, backend=backend, **options)
    cuda_graphs = uses_cuda_graphs(backend, mode, options.get("options"))

    @functools.wraps(fn)
    def training_step(*args: Any, **kwargs: Any) -> Any:
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        output = compiled(*args, **kwargs)
        loss = step_loss(output)
        if loss is not None:
            for item in optimizers:
                item.report_loss(loss)
        return output

    single = isinstance(optimizer, PDT)
    training_step.pdt_graphs = steps[0].graphs if single else [step.graphs for step in steps]  # type: ignore[attr-defined]
    training_step.compiled_optimizer_step = steps[0] if single else steps  # type: ignore[attr-defined]
    return training_step


def step_loss(output: Any) -> Tensor | float | None:
    """The training loss in what a step returned: the output itself (a one-element tensor or a
    float), the first item of a tuple or list, or the ``"loss"`` entry of a mapping (Hugging
    Face's model outputs); None where it holds none."""
    if isinstance(output, Mapping):
        output = output.get("loss")
    elif isinstance(output, (tuple, list)) and output:
        output = output[0]
    if isinstance(output, Tensor):
        return output if output.numel() == 1 else None
    return output if isinstance(output, float) else None


def format_graphs(graphs: dict[str, list[fx.GraphModule]]) -> str:
    """The graphs as text, with every node a PDT pass inserted listed under its pass name."""
    lines = []
    for phase, modules in graphs.items():
        for number, gm in enumerate(modules):
            lines.append(f"=== {phase} graph {number} ===")
            lines.append(str(gm.graph))
            tagged = [f"  [{n.meta['pdt_pass']}] {n.format_node()}" for n in gm.graph.nodes if "pdt_pass" in n.meta]
            lines.append(f"PDT nodes ({len(tagged)}):" if tagged else "PDT nodes: none (plain optimizer step)")
            lines.extend(tagged)
    return "\n".join(lines)


def explain_demo(backend: str = "aot_eager", steps: int = 12) -> str:
    """Compile the demo MLP's training step and return its rewritten optimizer graphs."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = PDT(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=True),  # a prediction within 12 steps
              snap_every=2, history=3, burn_in=2, tau=2, momentum_spacing=None)

    @compile(optimizer=opt, backend=backend)
    def train_step(x: Tensor, y: Tensor) -> Tensor:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        train_step(torch.randn(16, 64, generator=g), torch.randint(0, 10, (16,), generator=g))
    return format_graphs(train_step.pdt_graphs)
