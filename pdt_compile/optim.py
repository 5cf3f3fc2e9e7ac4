"""``PDT``: Predictive Differential Training around any ``torch.optim.Optimizer`` (eager path).

The reference implementation: the compiled path (``pdt.compile``) runs the same runtime and
the same maths inside its graphs and is tested against this class.
"""

from __future__ import annotations

import functools
import math
import numbers
import time
import warnings
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor
from torch.nn.parameter import is_lazy
from torch.optim import Optimizer
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks
from torch.utils.hooks import RemovableHandle
from typing_extensions import Unpack

from .adapters import (adam_moments, adapts_tau, averaging, coupled_decay, decoupled_decay, filters_moments, companions,
                       learning_rates, momentum_memory, settles_rate, shares, sharpness_aware, spaces_by_momentum,
                       stacking_warning, stored_closure, steps_by_sign, trailing_keys, unmoved_weight_keys,
                       weight_space_keys)
from .config import PDTConfig, PDTOptions, binds, check_option_names
from .distributed import (global_numel, mean_across_ranks, means_across_ranks, pipeline_group_of, refuse_fsdp1,
                          single_process, spans_stages, sum_across_shards_, sum_across_stages_, sum_over_model_, sum_parameter_pieces_)
from .mask import moment_mask, saturation_mask
from .radial import radial_coefficient
from .runtime import checkpoint
from .runtime.history import SnapshotRing, _local, changed_ring_settings, make_ring, ring_settings
from .runtime.hyperparameters import learning_rate
from .runtime.gradient_check import UNREAD_LIMIT, GradientCheck, gradient_norm
from .runtime.kernels import Kernels, working_dtype
from .runtime.predictor import PendingBoundary, Prediction, pack_limit, predict_merge_capture_
from .runtime.schedule import RUNAWAY_DOUBLINGS, Phase, Schedule, runaway_threshold
from .runtime.stats import Stats

try:  # at run time too: typing.get_type_hints(PDT.__init__) resolves (jsonargparse, pydantic read it)
    from torch.distributed import ProcessGroup
    from torch.distributed.device_mesh import DeviceMesh
except ImportError:  # a torch built without distributed support
    if not TYPE_CHECKING:
        ProcessGroup = DeviceMesh = Any

if TYPE_CHECKING:
    from .api import CompiledOptimizerStep

_HOOK_DICTS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)


LOSS_READS_ON_ACCELERATORS = 16
"""``PDTConfig.loss_reads="auto"`` for losses off the CPU: reading one on the host every step
would be a device synchronisation every step."""

AUTO_MOMENT_RATIO = 0.3
"""``PDTConfig.moment_ratio="auto"`` on Adam and AdamW (``benchmarks.variants --variants 'moment ratio'``)."""

AUTO_RATE_SETTLE = 5
"""``PDTConfig.rate_settle="auto"`` on SGD and Lookahead over SGD (``benchmarks.rate_drop``):
the default ``history``."""

AUTO_SATURATION = 0.5
"""``PDTConfig.saturation="auto"`` on Lion (``benchmarks.variants --optimizer lion --variants saturation``)."""

AUTO_MOMENTUM_SPACING = 2.0
"""``PDTConfig.momentum_spacing="auto"`` on :data:`~pdt_compile.adapters.MOMENTUM_SPACED` (``benchmarks.short_epochs --spacings 2
--factors 1,2,4``): snapshots at least twice as many steps apart as the momentum remembers."""

SCHEDULE_FREE_RUNAWAY_FACTOR = 3.0
"""``PDTConfig.runaway_factor="auto"`` on a schedule-free optimizer (``benchmarks/blowups.py``)."""



def options_reading_losses(config: PDTConfig) -> list[str]:
    """The fields of ``config`` that are on and read reported training losses."""
    on = {"adaptive": config.adaptive is not False, "rollback_factor": config.rollback_factor is not None,
          "setback_limit": config.setback_limit is not None, "loss_hold": config.loss_hold is not None,
          "runaway_factor": config.runaway_factor is not None}
    return [name for name, reading in on.items() if reading]


def options_idle_without_losses(config: PDTConfig) -> list[str]:
    """:func:`options_reading_losses` that PDT warns about when no loss is reported: all but
    ``adaptive="auto"``, which then keeps tau fixed, as without it."""
    return [name for name in options_reading_losses(config) if not (name == "adaptive" and config.adaptive == "auto")]


def trainable_parameters(param_groups: list[dict[str, Any]]) -> list[Tensor]:
    """The parameters PDT snapshots and merges: trainable (``requires_grad``) and real-valued,
    in param groups that do not opt out with ``"pdt": False``; each once, where a group lists it
    twice (tied weights; torch warns, and its optimizers step it twice)."""
    unique = {id(p): p for p in _opted_in(param_groups) if p.requires_grad and not p.is_complex()}
    return list(unique.values())


def _unmaterialised(p: Tensor) -> bool:
    """Whether ``p`` holds no values yet: a lazy module's parameter, or one on the meta device."""
    return is_lazy(p) or _local(p).is_meta


def _opted_in(param_groups: list[dict[str, Any]]) -> list[Tensor]:
    """The parameters of the param groups that do not opt out with ``"pdt": False``."""
    return [p for group in param_groups if group.get("pdt", True) for p in group["params"]]


def loss_sign(param_groups: list[dict[str, Any]]) -> float:
    """-1.0 where every param group PDT predicts has ``maximize=True``: the optimizer climbs
    what it is handed, so PDT reads the negation of each reported or verified value as the loss
    its guards and adaptive tau compare; else 1.0."""
    sign = 1.0  # read at every reported loss: it returns at the first group that minimises
    for group in param_groups:
        if group.get("pdt", True):
            if not group.get("maximize", False):
                return 1.0
            sign = -1.0
    return sign


def mixes_maximize(param_groups: list[dict[str, Any]]) -> bool:
    """Whether some of the param groups PDT predicts maximize and others minimise."""
    return len({bool(group.get("maximize", False)) for group in param_groups if group.get("pdt", True)}) > 1


_DIRECT_STEP_WATCHES: "weakref.WeakKeyDictionary[Optimizer, RemovableHandle]" = weakref.WeakKeyDictionary()
"""The one direct-step watch (:meth:`PDT._warn_direct_step`) of each wrapped optimizer: the
latest PDT's."""


class PDT(Optimizer):
    """Wrap ``optimizer`` with Predictive Differential Training.

    Shares the wrapped optimizer's ``param_groups`` and ``state`` (LR schedulers, GradScaler
    and trainers work on it unchanged). ``step`` runs the wrapped step, then the runtime:
    every ``snap_every`` steps a boundary snapshots the weights; after burn-in a boundary
    predicts the weights tau intervals ahead by DMD and merges the elements that pass the
    dynamic-consistency mask. ``config`` or keyword options (``PDTConfig`` fields) set it up.
    PDT tracks the trainable real-valued parameters (:func:`trainable_parameters`); a param
    group with ``"pdt": False`` is stepped by the optimizer alone.

    ``verify``: a callable returning a loss of the model at its current weights (a held-out
    batch, under no_grad). With it, a merge stands only where it does not raise that loss: PDT
    evaluates the merged weights and the weights without the merge, then half and a quarter of
    the jump (``verify_backtracks``), and keeps the largest fraction that is no worse, or none.
    Under ``torch.distributed`` the loss is averaged over the ranks that return one (a pipeline
    stage without the loss returns None), so that every rank keeps the same fraction.

    ``pipeline_group``: under pipeline parallelism (``torch.distributed.pipelining``), where this
    optimizer holds one stage's parameters, the process group (or 1-D ``DeviceMesh``) of this
    rank and its peers holding the other stages. What PDT totals over the model (the gradient
    check's norm, accepted counts, the finite-weights flag, ``granularity="model"``'s Gram) is
    then summed over the stages, and every stage decides as one process holding the model would.

    ``config`` is the configuration in force: on a schedule-free optimizer its ``snap_every``
    is the base iterate's snapshot spacing and its horizons count those intervals
    (``PDTConfig.base_spacing`` applied by :meth:`PDTConfig.spaced`).

    ``stats`` (:class:`~pdt_compile.runtime.stats.Stats`) reports what it did;
    ``state_dict()`` carries the ring, the schedule and the stats, so a resumed run
    continues exactly.
    """

    def __init__(
        self, optimizer: Optimizer, config: PDTConfig | None = None, *,
        verify: Callable[[], Any] | None = None, pipeline_group: ProcessGroup | DeviceMesh | None = None,
        **options: Unpack[PDTOptions],
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            weight_space_keys(optimizer)  # names the fix for wrappers PDT knows
            raise TypeError(
                f"PDT(optimizer=...): expected a torch.optim.Optimizer, got {type(optimizer).__name__}; PDT wraps "
                "an optimizer: pdt.PDT(torch.optim.AdamW(model.parameters(), lr=...), snap_every=...)"
            )
        if isinstance(optimizer, PDT):
            raise TypeError("PDT(optimizer=...): the optimizer is already wrapped by PDT")
        self._weight_space_keys = weight_space_keys(optimizer)
        self._trailing_keys = trailing_keys(optimizer)
        warning = stacking_warning(optimizer)
        if warning is not None:
            warnings.warn(warning, UserWarning, stacklevel=2)
        check_option_names(options, "PDT(...)")
        if verify is not None and not callable(verify):
            raise TypeError(f"PDT(verify=...): expected a callable that returns a held-out loss, got {verify!r}; "
                            "e.g. verify=lambda: loss_fn(model(x_held_out), y_held_out)")
        if verify is not None and not binds(verify):
            raise TypeError(f"PDT(verify=...): {verify!r} needs arguments, but PDT calls it with none; close over "
                            "what it needs: verify=lambda: loss_fn(model(x_held_out), y_held_out)")
        if config is None:
            if "snap_every" not in options:
                raise TypeError(
                    "PDT: snap_every is required (optimizer steps between snapshots, e.g. the "
                    "number of steps in an epoch): PDT(optimizer, snap_every=100)"
                )
            config = PDTConfig(**options)
        elif options:
            config = config.replace(**options)
        self._averaging = averaging(optimizer) if config.averages == "stay" else None
        self._sequence = self._resolve_sequence(optimizer, config)
        given, base_spacing = config.snap_every, config.base_spacing
        if self._averaging is not None and config.base_spacing != 1.0:
            config = config.spaced(config.base_spacing)
        if config.adaptive == "auto" and not adapts_tau(optimizer):
            config = config.replace(adaptive=False)
        if config.runaway_factor == "auto":
            config = config.replace(runaway_factor=SCHEDULE_FREE_RUNAWAY_FACTOR if self._averaging is not None else None)
        if config.moment_ratio == "auto":
            config = config.replace(moment_ratio=AUTO_MOMENT_RATIO if filters_moments(optimizer) else None)
        if config.rate_settle == "auto":
            config = config.replace(rate_settle=AUTO_RATE_SETTLE if settles_rate(optimizer) else None)
        if config.saturation == "auto":
            config = config.replace(saturation=AUTO_SATURATION if steps_by_sign(optimizer) else None)
        if config.momentum_spacing == "auto":
            config = config.replace(momentum_spacing=AUTO_MOMENTUM_SPACING if spaces_by_momentum(optimizer) else None)
        memory = momentum_memory(optimizer.param_groups)
        spaced = config.momentum_spaced(memory)
        if spaced.snap_every != config.snap_every:
            base = (f" (snapshots of the base iterate every {config.snap_every}, base_spacing={base_spacing:g})"
                    if config.snap_every != given else "")
            warnings.warn(f"PDT: snap_every={given}{base} is shorter than {config.momentum_spacing:g} times the "
                          f"{memory:.3g} steps {type(optimizer).__name__}'s momentum remembers; PDT snapshots every "
                          f"{spaced.snap_every} steps (momentum_spacing={config.momentum_spacing:g}): merges fitted to "
                          "closer snapshots blew runs up or cost more than they saved. momentum_spacing=None keeps "
                          "snap_every", UserWarning, stacklevel=2)
            config = spaced
        self.optimizer = optimizer
        self.config = config
        self._loss_readers = self._readers_of(config)
        """Resolved once: :meth:`report_loss` runs every training step."""
        self._awaiting_losses = bool(options_idle_without_losses(config))
        """True while an option reads losses and none has been reported yet, until PDT has said at
        the first prediction which options stay idle."""
        self._verify = verify
        if mixes_maximize(optimizer.param_groups):
            warnings.warn("PDT: some param groups have maximize=True and others not; PDT reads the losses it is "
                          "handed (report_loss, a closure's, verify) as losses to minimise", UserWarning, stacklevel=2)
        self._pipeline_group = pipeline_group_of(pipeline_group)
        self.defaults = optimizer.defaults
        for name in _HOOK_DICTS:
            setattr(self, name, OrderedDict())
        self._zero_grad_profile_name = "Optimizer.zero_grad#PDT.zero_grad"
        self.schedule = Schedule(config)
        self._stats = Stats(tau=config.tau, tau_waits_for_losses=config.adaptive is not False,
                            history_limit=config.history_limit)
        self._pending: PendingBoundary | None = None
        self._unread_losses: list[tuple[int, Tensor | None]] = []  # None: this rank had no loss
        """(step, loss) reported as tensors and not read on the host yet (:meth:`report_loss`)."""
        self._jumps: list[Tensor | None] | None = None
        self._nonfinite_warned = False
        """Whether the last boundary found non-finite weights and said so (:meth:`_clear_nonfinite`)."""
        self._filtered: dict[str, Tensor | int] = {"moment_filtered": 0, "saturation_filtered": 0}
        """Elements ``moment_ratio`` and ``saturation`` undid, device counts read into the stats
        (under these names) when they are read."""
        self._gradient_check = None if config.gradient_limit is None else GradientCheck(config.gradient_limit, config.snap_every)
        self.compiled_step: CompiledOptimizerStep | None = None
        """The compiled variants the steps run through: set by ``pdt.compile``, or at the first
        boundary by ``kernels="graph"``."""
        self._snapshot_ring: SnapshotRing | None = None
        self._moved_with_merges: list[list[Tensor]] = []
        self._frozen_at_build: list[Tensor] = []
        self._state_checked = False
        """Whether the optimizer's state was searched for weights merges leave behind (at the first prediction)."""
        self._direct_step_watch: RemovableHandle | None = None
        """Warns when the wrapped optimizer is stepped before PDT is: removed at PDT's first step."""
        # A sharpness-aware optimizer's second_step steps its base optimizer, not itself.
        watched = optimizer.base_optimizer if sharpness_aware(optimizer) else optimizer
        if hasattr(watched, "_optimizer_step_pre_hooks"):  # e.g. AcceleratedOptimizer has none
            earlier = _DIRECT_STEP_WATCHES.pop(watched, None)
            if earlier is not None:  # an earlier PDT on it (a notebook cell run twice): this one steps it now
                earlier.remove()
            self._direct_step_watch = _DIRECT_STEP_WATCHES[watched] = watched.register_step_pre_hook(
                self._warn_direct_step)
        if not any(_unmaterialised(p) for group in self.param_groups for p in group["params"]):
            self._set_ring(self._build_ring())

    def _resolve_sequence(self, optimizer: Optimizer, config: PDTConfig) -> str:
        """``config.sequence`` with ``"auto"`` resolved; raises for a sequence the optimizer
        does not keep, or one that ``averages="stay"`` cannot jump."""
        if self._averaging is not None:
            if config.sequence not in ("auto", self._averaging.base):
                raise ValueError(
                    f"PDTConfig.sequence: {config.sequence!r} on {type(optimizer).__name__} with averages=\"stay\": "
                    f"PDT predicts the base iterate {self._averaging.base!r} and leaves the average in place; use "
                    f"sequence=\"auto\" or averages=\"move\" (every sequence translated by the same jump)"
                )
            return self._averaging.base
        if config.sequence == "auto":
            return "parameters"
        if config.sequence != "parameters" and config.sequence not in self._weight_space_keys:
            raise ValueError(
                f"PDTConfig.sequence: {config.sequence!r} is not a weight-space state key of "
                f"{type(optimizer).__name__} (it has {list(self._weight_space_keys)}); use \"parameters\" or one of "
                "those (pdt_compile.adapters)"
            )
        return config.sequence

    # The wrapped optimizer replaces its param_groups list in load_state_dict: always share.
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.optimizer.state = value

    @property
    def ring(self) -> SnapshotRing:
        """The snapshot ring of the tracked (trainable) parameters."""
        return self._ring

    @property
    def ring_ready(self) -> bool:
        """Whether the ring is built: false only until the first step of a model whose lazy
        modules waited for a forward, or whose parameters were on the meta device when PDT
        was created."""
        return self._snapshot_ring is not None

    @property
    def _ring(self) -> SnapshotRing:
        """Built at construction, or, where lazy modules' parameters (``nn.LazyLinear``) or
        parameters on the meta device are not materialised yet, at first use: after the first
        forward, or the model's ``to_empty``, as a plain optimizer allows."""
        if self._snapshot_ring is None:
            self._set_ring(self._build_ring())
        return self._snapshot_ring

    def _set_ring(self, ring: SnapshotRing) -> None:
        """Use ``ring``; tensors registered with :meth:`move_with_merges` keep following their
        parameters."""
        old = [] if self._snapshot_ring is None else self._snapshot_ring.params
        moved = {id(p): tensors for p, tensors in zip(old, self._moved_with_merges)}
        self._snapshot_ring = ring
        self._moved_with_merges = [moved.get(id(p), []) for p in ring.params]
        self._frozen_at_build = [p for p in _opted_in(self.param_groups) if not p.requires_grad and not p.is_complex()]
        """The parameters PDT would track were they trainable (:meth:`_unfrozen` watches them)."""

    def _build_ring(self) -> SnapshotRing:
        lazy = sum(is_lazy(p) for group in self.param_groups for p in group["params"])
        if lazy:
            raise RuntimeError(
                f"PDT: {lazy} parameters of lazy modules (nn.LazyLinear, ...) are not initialized yet; "
                "run a forward pass (a dummy batch will do) before the first optimizer step"
            )
        meta = [tuple(p.shape) for group in self.param_groups for p in group["params"] if _local(p).is_meta]
        if meta:
            raise RuntimeError(
                f"PDT: {len(meta)} parameters (shapes {meta[:4]}{', ...' if len(meta) > 4 else ''}) are still on the meta "
                "device at the first optimizer step: the model was materialised after the optimizer was made "
                "(model.to_empty(...) gives it new parameters, so the optimizer would step the meta ones and the model "
                "would never train); create the optimizer and PDT after to_empty, or call "
                "torch.__future__.set_swap_module_params_on_conversion(True) before it to keep the parameter objects"
            )
        complex_ = [tuple(p.shape) for p in _opted_in(self.param_groups) if p.requires_grad and p.is_complex()]
        if complex_:
            warnings.warn(
                f"PDT: complex parameters of shapes {complex_} are left to the optimizer alone (PDT predicts "
                'real-valued weights); put them in a param group with "pdt": False to silence this, or keep '
                "them as real tensors (torch.view_as_real) to have them predicted",
                UserWarning,
                stacklevel=3,
            )
        params = trainable_parameters(self.param_groups)
        if not params:
            raise ValueError(
                "PDT: the optimizer has no parameter PDT can predict (trainable, real-valued, in a param group "
                'without "pdt": False)'
            )
        refuse_fsdp1(params)
        locals_ = [_local(p) for p in params]
        limit = pack_limit(self.config, locals_[0].device, sum(t.numel() for t in locals_))
        return make_ring(params, self.config.history, self.config.ring_dtype, self.config.ring_location, limit,
                         self._pipeline_group)

    def __repr__(self) -> str:
        return f"PDT({self.optimizer!r}, {self.config})"

    def __getstate__(self) -> dict[str, Any]:
        """All of PDT (``torch.optim.Optimizer`` keeps only defaults, state and param_groups), so
        that ``copy.deepcopy`` and ``torch.save`` of the optimizer object keep the ring, the
        schedule and the stats. Compiled graphs are not copied: a copy steps eagerly until
        ``pdt.compile`` or ``kernels="graph"`` builds its own."""
        state = dict(self.__dict__)
        state["compiled_step"] = None
        state["_direct_step_watch"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the wrapped optimizer (progressive unfreezing). PDT's ring is rebuilt
        and burn-in restarts; the last merge can no longer be undone; tensors registered with
        :meth:`move_with_merges` keep following their parameters; under ``pdt.compile`` the
        optimizer-step graphs are compiled again for the new parameter list."""
        self.optimizer.add_param_group(param_group)
        if getattr(self, "_snapshot_ring", None) is not None:  # None: not built yet (lazy modules)
            self._retrack()

    def _retrack(self) -> None:
        """Track the parameters trainable now (a group added, a layer unfrozen): the ring is
        rebuilt, burn-in restarts, the last merge can no longer be undone, and under
        ``pdt.compile`` the optimizer-step graphs are compiled again."""
        self._resolve_pending()  # its counts are per parameter of the old ring
        self._set_ring(self._build_ring())
        self._jumps = None
        self.schedule.boundaries_since_reset = 0
        if self.compiled_step is not None:
            self.compiled_step.rebuild()

    def _unfrozen(self) -> bool:
        """Whether a parameter has become trainable since the ring was built (``requires_grad``
        turned on: progressive unfreezing). One frozen since is left in the ring, where its
        missing gradient skips it, so that freezing does not restart burn-in."""
        return any(p.requires_grad for p in self._frozen_at_build)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def train(self) -> None:
        """The wrapped optimizer's ``train()`` (schedule-free optimizers), if it has one."""
        if hasattr(self.optimizer, "train"):
            self.optimizer.train()

    def eval(self) -> None:
        """The wrapped optimizer's ``eval()`` (schedule-free optimizers), if it has one."""
        if hasattr(self.optimizer, "eval"):
            self.optimizer.eval()

    def reset_snapshots(self) -> None:
        """Forget every snapshot: PDT fills its ring again and predicts after burn-in, as at the
        start. Call it after moving the weights outside the optimizer without restoring PDT's
        state with them, as a "restore the best epoch" that loads the model's weights alone does:
        the snapshots describe a path the weights have left, and a prediction fitted across that
        gap would merge against it. (Loading the optimizer's state dict with the model's, from
        the same checkpoint, restores PDT's snapshots too: nothing to call.) A merge the gradient
        check had still to judge is left as it is, and so are the stats."""
        self._resolve_pending()
        self._forget_snapshots()

    def _forget_snapshots(self) -> None:
        """Empty the ring and restart burn-in; without its jump, a merge the gradient check
        has still to judge is left standing."""
        self._ring.reset_()
        self._jumps = None
        self.schedule.boundaries_since_reset = 0

    def move_with_merges(self, tensors: Any) -> None:
        """Apply every merge's jump to ``tensors`` too: one tensor per tracked parameter, in
        the same order and shape (e.g. ``ema_model.module.parameters()`` of a
        ``torch.optim.swa_utils.AveragedModel``), so a weight average follows the jumps
        instead of averaging across them. Under ``pdt.compile`` (before or after compiling) the
        predictions then run in a graph of their own after the optimizer step, whose merge moves
        these tensors too."""
        tensors = list(tensors)
        params = self._ring.params
        if len(tensors) != len(params) or any(t.shape != p.shape for t, p in zip(tensors, params)):
            raise ValueError(
                f"PDT.move_with_merges: expected {len(params)} tensors shaped like the tracked parameters "
                f"{[tuple(p.shape) for p in params]}, got {[tuple(t.shape) for t in tensors]}"
            )
        for moved, tensor in zip(self._moved_with_merges, tensors):
            moved.append(tensor.detach() if tensor.requires_grad else tensor)
        if self.compiled_step is not None:  # its boundaries now move followers: built again
            self.compiled_step.rebuild()

    def tracked(self) -> list[Tensor]:
        """Per tracked parameter, the tensor PDT snapshots and merges: the parameter, or its
        optimizer state under ``config.sequence`` (the parameter itself where that state does
        not exist yet)."""
        params, key = self._ring.params, self._sequence
        if key == "parameters":
            return list(params)
        return [own[0] if own else p for p, own in zip(params, companions(self.optimizer, params, [key]))]

    def followers(self) -> list[list[Tensor]]:
        """Per tracked parameter, the tensors a merge moves besides :meth:`tracked`'s: the
        parameter (when another sequence is tracked), the wrapped optimizer's other
        weight-space state (:mod:`pdt_compile.adapters`) and :meth:`move_with_merges`'."""
        return [[t for t, _ in moved] for moved in self._moved_fractions()]

    def _moved_fractions(self, restoring: bool = False) -> list[list[tuple[Tensor, float]]]:
        """:meth:`followers` with the fraction of the jump each one takes (1 unless
        ``averages="stay"`` leaves a schedule-free average in place). ``restoring``: for a
        restore to a snapshot, without the followers that trail the weights (the optimizer's
        trailing state, :func:`~pdt_compile.adapters.trailing_keys`, and
        :meth:`move_with_merges`' averages), which a restore leaves in place."""
        params = self._ring.params
        extras = [[] for _ in params] if restoring else self._moved_with_merges
        if self._averaging is not None:
            moved = shares(self.optimizer, self._averaging, params)
            return [own + [(t, 1.0) for t in extra] for own, extra in zip(moved, extras)]
        keys = [key for key in self._weight_space_keys if not (restoring and key in self._trailing_keys)]
        state = companions(self.optimizer, params, keys)
        tracked = self.tracked()
        return [
            [(t, 1.0) for t in [p, *own] if t is not merged] + [(t, 1.0) for t in extra]
            for p, own, merged, extra in zip(params, state, tracked, extras)
        ]

    @property
    def has_followers(self) -> bool:
        """Whether merges move tensors besides the parameters."""
        return bool(self._weight_space_keys) or any(self._moved_with_merges)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Run the wrapped optimizer's step, then PDT's boundary work when one is due.

        With a ``closure``, its loss is also reported (see :meth:`report_loss`). Step hooks
        and the profiler label run as for any optimizer, but only when a hook is registered
        or the profiler is on (the wrapper costs ~10 µs a step otherwise). Inside a region
        ``torch.compile`` traces, the step runs eagerly, outside the graph. Without a
        ``closure``, the one the wrapped optimizer stores for such a step (GSAM's
        ``set_closure``) is passed, as the optimizer would use it."""
        if closure is None:
            closure = stored_closure(self.optimizer)
        if torch.compiler.is_compiling():
            return self._step_outside_graph(closure)
        return self._step_eagerly(closure)

    step.hooked = True  # type: ignore[attr-defined]  # Optimizer must not wrap it again

    def __getattr__(self, name: str) -> Any:
        """Only reached for an attribute PDT lacks: an error that says where a method of the
        wrapped optimizer is (GSAM's ``set_closure``), which PDT does not forward, since one that
        steps the optimizer past PDT would leave PDT blind."""
        inner = self.__dict__.get("optimizer")
        if inner is not None and name in ("first_step", "second_step"):  # their properties raised: say why
            self._sharpness_step(name)
        if inner is not None and not name.startswith("_") and hasattr(inner, name):
            raise AttributeError(
                f"'PDT' object has no attribute {name!r}; the optimizer it wraps ({type(inner).__name__}) has: "
                f"use opt.optimizer.{name} where it does not step the optimizer (steps go through PDT: step(), "
                "or first_step() and second_step())")
        raise AttributeError(f"'PDT' object has no attribute {name!r}")

    @property
    def first_step(self) -> Callable[..., Any]:
        """A sharpness-aware optimizer's first step (SAM and its kin keep
        ``first_step``/``second_step`` beside ``step(closure)``): the wrapped optimizer's own,
        which moves the weights to where the second gradient is taken. PDT does no work there;
        :attr:`second_step` counts as the training step. Absent (``hasattr`` False) where the
        wrapped optimizer has no such step."""
        owner = self._owner()
        return functools.partial(owner._first_step, owner._sharpness_step("first_step"))

    @property
    def second_step(self) -> Callable[..., Any]:
        """A sharpness-aware optimizer's second step (it puts the weights back and takes the
        update), run as PDT's :meth:`step`: snapshots, predictions and merges at its
        boundaries, as with ``step(closure)``. Report the loss (:meth:`report_loss`) for what
        reads it. Its ``zero_grad=True`` clears the gradients after PDT's boundary work, which
        reads them (a parameter without a gradient is left out of a merge, as a frozen one)."""
        owner = self._owner()
        return functools.partial(owner._second_step, owner._sharpness_step("second_step"))

    def _owner(self) -> "PDT":
        """This PDT; or, where this is read on a wrapper that subclasses PDT's class on the fly
        to pass ``isinstance`` checks (Lightning's ``LightningOptimizer``), the PDT it wraps."""
        return self if "schedule" in vars(self) else self.optimizer

    def _first_step(self, first: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._snapshot_ring is not None:
            self._ring.before_update_()
        if torch.compiler.is_compiling():
            return _outside_graph(first, *args, **kwargs)
        return first(*args, **kwargs)

    def _second_step(self, second: Callable[..., Any], zero_grad: bool = False) -> Any:
        if torch.compiler.is_compiling():
            result = self._step_outside_graph(None, second)
        else:
            result = self._step_eagerly(None, second)
        if zero_grad:
            self.zero_grad()
        return result

    def _sharpness_step(self, name: str) -> Callable[..., Any]:
        method = getattr(self.optimizer, name, None)
        if method is None:
            raise AttributeError(
                f"PDT: {type(self.optimizer).__name__} has no {name}(); PDT's first_step() and second_step() "
                "forward a sharpness-aware optimizer's (SAM's) two steps: call step() with this optimizer")
        return method

    @torch.compiler.disable
    def _step_outside_graph(self, closure: Callable[[], Any] | None, update: Callable[[], Any] | None = None) -> Any:
        """:meth:`step`, run eagerly from a traced region (a graph break). Plain calls skip this
        decorator: its frame switching costs microseconds every training step."""
        return self._step_eagerly(closure, update)

    def _step_eagerly(self, closure: Callable[[], Any] | None, update: Callable[[], Any] | None = None) -> Any:
        if calls_step_hooks(self):
            return _STEP_WITH_HOOKS(self, closure, update)
        return self._step(closure, update)

    @property
    def stats(self) -> Stats:
        """What PDT did (:class:`~pdt_compile.runtime.stats.Stats`), up to the last step."""
        self._resolve_pending()
        self._read_gradient_checks()
        self._stats.loss_holds = self.schedule.loss_holds
        self._stats.decay_holds = self.schedule.decay_holds
        self._read_filtered()
        return self._stats

    def _read_filtered(self) -> None:
        for name, count in self._filtered.items():
            if isinstance(count, Tensor):
                setattr(self._stats, name, getattr(self._stats, name) + int(count))
                self._filtered[name] = 0

    def _read_gradient_checks(self) -> None:
        """Record the gradient checks made since the last read (one host read): in the stats,
        and in the schedule's streak of undone merges, which holds predictions back
        (:meth:`~pdt_compile.runtime.schedule.Schedule.record_gradient_check`)."""
        if self._gradient_check is None:
            return
        for step, surge, undone in self._gradient_check.read():
            if surge == surge:
                self._stats.log("gradient_surges", (step, surge))
            self._stats.gradient_undos += int(undone)
            self.schedule.record_gradient_check(kept=not undone)

    @property
    def defers_host_reads(self) -> bool:
        """Whether a compiled prediction's accepted counts and finiteness flag may be read on
        the host later (at the next boundary, or when ``stats`` or ``state_dict`` is read)
        rather than right after the step: true unless something must react to a merge at
        once (rollback, ``setback_limit``, verification, ``after_merge="reset"``; adaptive tau
        judges a merge at the boundary after it, when its counts have been read)."""
        config = self.config
        return not (self._needs_jumps_later or self._verify is not None or config.after_merge == "reset")

    def _warn_direct_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        name = type(self.optimizer).__name__
        if optimizer is not self.optimizer:  # a sharpness-aware optimizer's base optimizer
            called, call = f"{name}.second_step() (or step())", "first_step() and second_step() (or step(closure))"
        else:
            called, call = f"{name}.step()", "step()"
        warnings.warn(
            f"PDT: {called} was called on the wrapped optimizer itself, so PDT sees no steps and never "
            f"predicts; call {call} on the object pdt.PDT({name}(...), ...) returned, and hand that one to "
            "GradScaler, trainers and pdt.compile",
            UserWarning, stacklevel=3,
        )
        self._stop_watching_direct_steps()

    def _stop_watching_direct_steps(self) -> None:
        if self._direct_step_watch is not None:
            self._direct_step_watch.remove()
            self._direct_step_watch = None

    def _step(self, closure: Callable[[], Any] | None = None, update: Callable[[], Any] | None = None) -> Any:
        """:meth:`step`; ``update``, where given, runs in place of the wrapped optimizer's
        ``step()`` (a sharpness-aware optimizer's ``second_step``)."""
        if self._direct_step_watch is not None:
            self._stop_watching_direct_steps()
        ring = self._snapshot_ring
        if ring is None:
            self._materialise()
        elif ring.params[0].device != ring.device:
            self._follow_parameters()
        stepping = update is None
        update = update or self.optimizer.step
        if closure is None and not self.optimizer.state and self._moves_nothing():
            return update()
        if closure is None and (light := self._light_next()) is not None:
            if light and self._gradient_check is not None:  # a step of the check's window: its norm
                self._check_gradient(self._gradient_check)
            self._ring.before_update_()
            result = update()
            self.schedule.commit(Phase.ORDINARY, False, False)
            return result
        boundary = self.schedule.boundary_next()
        if boundary and self._unfrozen():
            self._retrack()
        if self._pending is not None and boundary:
            self._resolve_pending()
        if boundary and self._gradient_check is not None and self._gradient_check.unread:
            self._read_gradient_checks()  # before the boundary's phase: undone merges may hold it
        check = self._gradient_check
        judged = check is None or check.window_taken()
        phase = self.schedule.next_phase(self._ring.count, self._learning_rate() if boundary else None, judged)
        if phase != Phase.ORDINARY:
            self._check_parameters()
        if check is not None and check.wants(self.schedule.steps, self._may_predict_next):
            if closure is None:
                self._check_gradient(check)
            else:
                closure = self._checked_closure(check, closure)
        if self.compiled_step is None and closure is None and stepping and phase != Phase.ORDINARY and self._graph_kernels():
            self.compiled_step = boundary_graphs(self)
        if self.compiled_step is not None and closure is None and stepping:
            loss = None
            self._finish_boundary(phase, self.compiled_step(phase))
        else:
            self._ring.before_update_()
            returned: list[Any] = []
            loss = update(_returning_into(closure, returned)) if closure is not None else update()
            self._finish_boundary(phase, self._run_boundary(phase))
            if loss is None and returned and _is_loss(returned[0]):  # SAM's step(closure) returns nothing
                self.report_loss(returned[0])
        if _is_loss(loss):  # not GSAM's (outputs, loss)
            self.report_loss(loss)
        return loss

    def _moves_nothing(self) -> bool:
        """Whether this step is no training step: every learning rate 0 and every gradient zero.
        ``torch.distributed.checkpoint.state_dict`` takes one to create an optimizer's state
        before reading it (when the optimizer has none and no gradient is set: a stateless one
        after ``zero_grad``); PDT leaves such steps to the optimizer and does not count them, so
        a checkpoint taken that way does not shift PDT's boundaries."""
        first = self.param_groups[0].get("lr")
        if isinstance(first, float) and first != 0.0:  # every step of a stateless optimizer asks: answer fast
            return False
        # A rate on an accelerator is a training one (that API's zero is a CPU tensor): never read here.
        if any(lr is None or isinstance(lr, Tensor) and lr.device.type != "cpu" or float(lr) != 0.0
               for lr in map(learning_rate, self.param_groups)):
            return False
        grads = [_local(p.grad) for group in self.param_groups for p in group["params"] if p.grad is not None]
        reduction = self._ring.reduction
        if not grads and reduction is None:
            return True
        nonzero = (torch.stack([g.ne(0).any() for g in grads]).sum(dtype=torch.float32) if grads
                   else torch.zeros((), device=self._ring.device))
        # Sharded gradients (FSDP2), pipeline stages: every rank decides on the whole model, as every rank steps alike.
        return float(sum_over_model_(nonzero, reduction)) == 0.0

    def _materialise(self) -> None:
        """Build the ring, and the compiled variants built on it, at the first step of a model
        whose lazy modules waited for a forward."""
        self._set_ring(self._build_ring())
        if self.compiled_step is not None and self.compiled_step.deferred:
            self.compiled_step.rebuild()

    def _follow_parameters(self) -> None:
        """Move the ring, the last merge's jump and the gradient check's norms to the device
        the parameters are on now: a model moved after its optimizer was made (``model.to("cuda")``,
        Accelerate's ``prepare``), which a plain optimizer follows. The snapshots are kept, and
        under ``pdt.compile`` the optimizer-step graphs are built again."""
        self._resolve_pending()
        self._read_gradient_checks()
        self._read_filtered()
        old = self._ring
        ring = self._build_ring()  # raises where the parameters now live on several devices
        ring.load_state_dict(old.state_dict())
        self._set_ring(ring)
        if self._jumps is not None:
            self._jumps = [None if jump is None else jump.to(ring.device) for jump in self._jumps]
        check = self._gradient_check
        if check is not None:
            check.load_state_dict(check.state_dict(), ring.device)
        if self.compiled_step is not None and not self.compiled_step.deferred:
            self.compiled_step.rebuild()

    def _graph_kernels(self) -> bool:
        """Whether ``kernels="graph"`` applies: the boundaries run as compiled graphs."""
        return self.config.kernels == "graph" and self._ring.fused

    def _light_next(self) -> bool | None:
        """How little the eager step about to run does besides the optimizer's step: False,
        nothing (an ordinary step no gradient check reads); True, only take its gradient norm
        (a step of the window before a boundary that may predict); None, more (a boundary, the
        step after a merge, whose gradient judges it, or a traced compiled step). Most steps are
        False; right after a training step has left the caches cold, an ordinary step cost 9-53
        µs more than the plain one, and a window step 33-43 µs (``benchmarks.interval_cost``)."""
        if (self.compiled_step is not None and self.compiled_step.traced) or self.schedule.boundary_next():
            return None
        check = self._gradient_check
        if check is None:
            return False
        if check.armed is not None:
            return None
        return check.wants(self.schedule.steps, self._may_predict_next)

    def _may_predict_next(self) -> bool:
        return self.schedule.may_predict_next(self._ring.count, self._learning_rate())

    def _gradient_norm(self) -> Tensor | None:
        """The norm of every tracked parameter's gradient (summed over shards), on the device."""
        # A sparse gradient is refused at the next boundary (_check_parameters).
        grads = [(index, grad) for index, p in enumerate(self._ring.params)
                 if (grad := p.grad) is not None and not grad.is_sparse]
        reduction = self._ring.reduction
        if not grads and not spans_stages(reduction):
            return None
        if reduction is None:
            return gradient_norm([grad for _, grad in grads])
        counted = [_local(grad) for index, grad in grads if reduction.counted[index]]  # a replicated piece once
        local = gradient_norm(counted) if counted else torch.zeros((), device=self._ring.device)
        return sum_over_model_(local.square().view(1), reduction).sqrt()

    def _check_gradient(self, check: GradientCheck) -> None:
        """Take this step's gradient norm: into the window before a boundary, or, right after
        a merge, to judge it (``PDTConfig.gradient_limit``): a rejected merge is undone and
        the gradient, taken at weights that are no longer there, zeroed. Deferring host reads,
        the undo is a device-side scale (the jump times 0 or 1); else one read decides it."""
        norm = self._gradient_norm()
        if norm is None:
            return
        if check.armed is None:
            check.record(norm)
            return
        if self._jumps is None:  # undone already (a runaway restored the weights)
            check.armed = None
            return
        undo = check.judge(self.schedule.steps, norm)
        if len(check.unread) >= UNREAD_LIMIT:
            self._read_gradient_checks()
        if self.compiled_step is not None and self.defers_host_reads:
            # Deferring excludes rollback and setback_limit: nothing needs the jump after this.
            self._translate_(self._jumps, -undo)
            torch._foreach_mul_(self._grads(), 1.0 - undo)
            self._jumps = None
        elif bool(undo):
            self._undo_merge_()
            torch._foreach_zero_(self._grads())
        elif not self._needs_jumps_later:
            self._jumps = None

    def _grads(self) -> list[Tensor]:
        return [p.grad for p in self._ring.params if p.grad is not None]

    def _checked_closure(self, check: GradientCheck, closure: Callable[[], Any]) -> Callable[[], Any]:
        """``closure``, followed on its first call by :meth:`_check_gradient` (the gradient
        exists only once the closure ran)."""
        pending = [True]

        def checked() -> Any:
            loss = closure()
            if pending[0]:
                pending[0] = False
                self._check_gradient(check)
            return loss

        return checked

    def _learning_rate(self) -> float | None:
        """The summed learning rate of the param groups (what ``lr_horizon``, ``decay_window``
        and ``moment_ratio`` compare), or None when all are off or a group holds no number there."""
        config = self.config
        if not config.lr_horizon and config.decay_window is None and config.moment_ratio is None and config.adaptive != "auto":
            return None
        rates = [learning_rate(group) for group in self.param_groups]
        return None if any(lr is None for lr in rates) else sum(float(lr) for lr in rates)

    def _check_parameters(self) -> None:
        refuse_fsdp1(self._ring.params)  # wrapped by FSDP1 after PDT was made: the same objects, flattened
        if self._ring.moved():
            self._follow_parameters()
        self._ring.check_unchanged()
        for p in self._ring.params:
            if p.grad is not None and p.grad.is_sparse:
                raise RuntimeError(
                    "PDT: sparse gradients are not supported (a parameter of shape "
                    f"{tuple(p.shape)} has a sparse grad); use dense gradients "
                    '(e.g. nn.Embedding(sparse=False)) or put that parameter in a param group with "pdt": False, '
                    "which PDT leaves to the optimizer alone"
                )

    def _skipped(self) -> list[bool]:
        """Parameters the optimizer did not update this step (no gradient)."""
        return [p.grad is None for p in self._ring.params]

    def _run_boundary(self, phase: Phase) -> Prediction | None:
        """Eager boundary work after the optimizer step: capture, or predict+merge+capture."""
        if phase == Phase.CAPTURE:
            self._ring.capture_(self.tracked())
            return None
        if phase == Phase.PREDICT:
            start = time.perf_counter()
            scaled = self._averaging is not None
            prediction = predict_merge_capture_(
                self._ring,
                self.tracked(),
                self._skipped(),
                self.config,
                self.schedule.horizon,
                keep_jumps=self.keeps_jumps or scaled,
                followers=self.followers() if self.has_followers and not scaled else None,
            )
            if scaled:
                self._move_followers_(prediction.jumps, 1.0)
                if not self.keeps_jumps:
                    prediction.jumps = [None] * len(prediction.jumps)
            self._stats.prediction_seconds += time.perf_counter() - start
            return prediction
        return None

    def _move_followers_(self, jumps: list[Tensor | None], scale: float | Tensor, restoring: bool = False) -> None:
        """Add ``scale`` times each jump, times each follower's fraction, to the followers
        (one foreach addition per fraction for a host ``scale``; ``restoring``: as
        :meth:`_moved_fractions`)."""
        by_fraction: dict[float, tuple[list[Tensor], list[Tensor]]] = {}
        for moved, jump in zip(self._moved_fractions(restoring), jumps):
            if jump is None:
                continue
            for tensor, fraction in moved:
                if fraction:
                    local = _local(tensor).detach()
                    if isinstance(scale, Tensor):
                        local.add_((jump * (scale * fraction)).view(local.shape).to(local.dtype))
                    else:
                        tensors, steps = by_fraction.setdefault(fraction, ([], []))
                        tensors.append(local)
                        steps.append(jump.view(local.shape).to(local.dtype))
        for fraction, (tensors, steps) in by_fraction.items():
            torch._foreach_add_(tensors, steps, alpha=scale * fraction)

    def _finish_boundary(self, phase: Phase, prediction: Prediction | None) -> None:
        """Bookkeeping shared by the eager and the compiled path."""
        if phase == Phase.ORDINARY:
            self.schedule.commit(phase, merged=False, ring_reset=False)
            return
        if phase == Phase.PREDICT and self._awaiting_losses:
            self._warn_no_losses()
        if phase == Phase.PREDICT and not self._state_checked:
            self._warn_unmoved_weights()
        if prediction is not None and self.config.moment_ratio is not None and not self.schedule.decaying:
            self._filter_by_moments_(prediction)
        if prediction is not None and self.config.saturation is not None:
            self._filter_by_saturation_(prediction)
        if prediction is not None and self.config.radial != "keep":
            self._undo_radial_(prediction)
        if prediction is not None:
            self._total_over_stages_(prediction)
        if self.compiled_step is not None and self.defers_host_reads and (prediction is None or prediction.pending is not None):
            self._pending = PendingBoundary(self.schedule.steps + 1, prediction, self._nonfinite_count())
            if prediction is not None and self._gradient_check is not None:
                self._jumps = prediction.jumps
                merged = prediction.pending.sum() if prediction.totals is None else prediction.totals[0]
                self._gradient_check.armed = merged > 0
            self._commit(phase, merged=False, reset=False)
            return
        merged = False
        if prediction is not None:
            merged = self._record(self.schedule.steps + 1, prediction)
            if merged and self._verify is not None:
                start = time.perf_counter()
                merged = self._verify_merge(prediction.jumps)
                self._stats.verify_seconds += time.perf_counter() - start
                self.schedule.record_verification(kept=merged)
            self._jumps = prediction.jumps if merged else None
            if merged and self._gradient_check is not None:
                self._gradient_check.armed = torch.tensor(True, device=self._ring.device)
        reset = bool(int(self._nonfinite_count()))
        if reset:
            self._clear_nonfinite(self.schedule.steps + 1)
        else:
            self._nonfinite_warned = False
            if merged and self.config.after_merge == "reset":
                self._ring.reset_()
                self._ring.capture_(self.tracked())
                reset = True
        self._commit(phase, merged, reset)

    def _filter_by_moments_(self, prediction: Prediction) -> None:
        """Undo the jump of every element whose Adam moments call its gradient noise
        (``PDTConfig.moment_ratio``)."""
        strong = [None if moments is None else
                  moment_mask(*(_local(m).detach().reshape(-1) for m in moments), self.config.moment_ratio)
                  for moments in adam_moments(self.optimizer, self._ring.params)]
        self._undo_outside_(prediction, strong, "moment_filtered")

    def _filter_by_saturation_(self, prediction: Prediction) -> None:
        """Undo the jump of every element that a sign optimizer moved by less than
        ``PDTConfig.saturation`` of the most its steps could over the last interval. That
        interval's displacement is the newest snapshot (the merged weights) minus the one before
        it, which the merge translated by the jump too unless ``after_merge`` keeps the snapshots."""
        ring, steps, shifted = self._ring, self.config.snap_every, self.config.after_merge == "shift"
        strong = []
        for index, (lr, jump) in enumerate(zip(learning_rates(self.optimizer, ring.params), prediction.jumps)):
            if lr is None or jump is None:
                strong.append(None)
                continue
            displacement = ring.last_displacement(index)
            if not shifted:
                displacement = displacement - jump
            strong.append(saturation_mask(displacement, steps, lr, self.config.saturation))
        self._undo_outside_(prediction, strong, "saturation_filtered")

    def _undo_outside_(self, prediction: Prediction, strong: list[Tensor | None], counter: str) -> None:
        """Undo each parameter's jump outside its ``strong`` mask (None: keep it all), from the
        weights, the snapshots and the followers alike, take those elements off the prediction's
        accepted counts (on the device where they wait there) and add them to ``counter``."""
        undo: list[Tensor | None] = []
        dropped: list[Tensor] = []  # per parameter
        for keep, jump in zip(strong, prediction.jumps):
            part = None if jump is None or keep is None else jump * (~keep).to(jump.dtype)
            undo.append(part)
            # NaN jumps (on NaN weights) were never accepted: abs() > 0 is False for them, != 0 is not.
            dropped.append(torch.zeros((), dtype=torch.int64, device=self._ring.device) if part is None
                           else (part.abs() > 0).sum().to(torch.int64))
        reduction = self._ring.reduction
        if all(part is None for part in undo) and not spans_stages(reduction):
            return
        self._translate_(undo, -1.0)
        for jump, part in zip(prediction.jumps, undo):
            if jump is not None and part is not None:
                jump.sub_(part)
        counts = sum_parameter_pieces_(torch.stack(dropped), reduction)
        self._filtered[counter] = self._filtered[counter] + sum_across_stages_(counts.sum().to(self._ring.device), reduction)
        if prediction.pending is not None:
            prediction.pending = prediction.pending - counts.to(prediction.pending.dtype)
        else:
            prediction.accepted = [None if a is None else a - c for a, c in zip(prediction.accepted, counts.tolist())]

    def _radial_modes(self, decaying: bool | None = None) -> list[str]:
        """For each parameter, what merges do with its jumps' radial part (``PDTConfig.radial``
        resolved: ``"keep"``, ``"inward"`` or ``"undo"``); ``decaying``: whether the learning rate
        decays (default: the schedule's reading at the last boundary)."""
        radial, params = self.config.radial, self._ring.params
        if radial != "auto":
            return [radial] * len(params)
        decaying = self.schedule.decaying if decaying is None else decaying
        if steps_by_sign(self.optimizer):
            return ["keep" if decaying else "undo"] * len(params)
        return ["inward" if coupled or (decoupled and decaying) else "keep" for coupled, decoupled in
                zip(coupled_decay(self.optimizer, params), decoupled_decay(self.optimizer, params))]

    @property
    def _undoes_radial(self) -> bool:
        """Whether a merge may ever take back a radial part (at some rate)."""
        return any(mode != "keep" for rate_decays in (False, True) for mode in self._radial_modes(rate_decays))

    def _undo_radial_(self, prediction: Prediction) -> None:
        """Take back the radial part of the jumps ``PDTConfig.radial`` names, weights, snapshots
        and followers alike, on the device (summed over the shards of a sharded tensor)."""
        modes = self._radial_modes()
        live = [(index, jump) for index, jump in enumerate(prediction.jumps)
                if jump is not None and modes[index] != "keep"]
        if not live:
            return
        tracked, kernels = self.tracked(), Kernels(self.config, self._ring.device, sum(self._ring.numels))
        merged = [_local(tracked[index]).detach().reshape(-1) for index, _ in live]
        sums = torch.stack([kernels.radial_sums(jump, w) for (_, jump), w in zip(live, merged)])  # [k, 2]
        sums = sum_across_shards_(sums, self._ring.reduction)  # ratios: a replicated piece summed twice cancels
        undo: list[Tensor | None] = [None] * len(prediction.jumps)
        for position, ((index, jump), w) in enumerate(zip(live, merged)):
            undo[index] = kernels.radial_part(jump, w, radial_coefficient(sums[position], modes[index] == "inward"))
        self._translate_(undo, -1.0)
        for jump, part in zip(prediction.jumps, undo):
            if part is not None:
                jump.sub_(part)

    def _record(self, step: int, prediction: Prediction) -> bool:
        """Record a prediction's accepted counts in the stats; returns whether it merged."""
        numels = [global_numel(p) for p in self._ring.params]
        pairs = [(a, n) for a, n in zip(prediction.resolved(), numels) if a is not None]
        totals = None if prediction.totals is None else tuple(int(v) for v in prediction.totals.tolist())
        return self._stats.record_prediction(step, [a for a, _ in pairs], [n for _, n in pairs], totals)

    def _total_over_stages_(self, prediction: Prediction) -> None:
        """Under pipeline parallelism, set ``prediction.totals``: the model's accepted and
        predicted elements, summed over the stages on the device at the boundary (every stage
        is there; a later host read of the stats may run on one rank alone)."""
        reduction = self._ring.reduction
        if not spans_stages(reduction):
            return
        device = self._ring.device
        if prediction.pending is not None:
            active = [bool(a) for a in prediction.accepted]
            flags = torch.tensor(active, dtype=prediction.pending.dtype, device=device)
            accepted = (prediction.pending * flags).sum().to(torch.float64)
        else:
            active = [a is not None for a in prediction.accepted]
            accepted = torch.tensor(float(sum(a for a in prediction.accepted if a is not None)), dtype=torch.float64,
                                    device=device)
        predicted = float(sum(global_numel(p) for p, a in zip(self._ring.params, active) if a))
        totals = torch.stack([accepted, torch.tensor(predicted, dtype=torch.float64, device=device)])
        prediction.totals = sum_across_stages_(totals, reduction)

    def _commit(self, phase: Phase, merged: bool, reset: bool) -> None:
        self.schedule.commit(phase, merged=merged, ring_reset=reset, lr=self._learning_rate())
        self._stats.boundaries = self.schedule.boundaries
        self._stats.tau = self.schedule.tau
        self._stats.log("tau_history", (self.schedule.steps, self.schedule.tau))

    def _clear_nonfinite(self, step: int) -> None:
        """Forget the ring at a boundary whose weights hold a NaN/Inf. Warns at the first such
        boundary after finite ones: a run that diverged for good would otherwise warn at every
        boundary to its end (``stats.skipped_nonfinite`` counts them all)."""
        self._stats.skipped_nonfinite += 1
        if not self._nonfinite_warned:
            self._nonfinite_warned = True
            warnings.warn(
                f"PDT: non-finite weights after step {step}; the snapshot ring "
                "was cleared so no poisoned snapshot is used (burn-in restarts). The NaN/Inf came "
                "from the optimizer's update, not from a merge. Boundaries that find them again are "
                "counted in stats.skipped_nonfinite without a warning until the weights are finite.",
                RuntimeWarning,
                stacklevel=4,
            )
        self._ring.reset_()
        self._jumps = None

    def _nonfinite_count(self) -> Tensor:
        """Tracked tensors holding a NaN/Inf, summed over ranks (so every rank takes the same
        decision): a device tensor, not read here."""
        # One foreach pass: a norm is NaN/Inf when any element is (or the weights are ~1e38).
        norms = torch._foreach_norm([_local(p).detach() for p in self._ring.params])
        bad = (~torch.isfinite(torch.stack(norms))).sum().view(1)
        return sum_over_model_(bad, self._ring.reduction)

    def _resolve_pending(self) -> None:
        """Read a deferred prediction's counts and finiteness flag and record them as the
        boundary itself would have (one host read, long after the device finished)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if pending.prediction is not None and self._record(pending.step, pending.prediction):
            self.schedule.merged_at(pending.step)
        elif pending.prediction is not None and self._gradient_check is not None and pending.step == self.schedule.steps:
            # Nothing merged, which the eager path knows at once: the check is disarmed, so the
            # step about to run puts its norm in the window before a boundary, not in a judgement.
            self._gradient_check.armed = None
            self._jumps = None
        if int(pending.nonfinite):
            self._clear_nonfinite(pending.step)
            self.schedule.boundaries_since_reset = 0
        else:
            self._nonfinite_warned = False

    def report_loss(self, loss: Tensor | float | None) -> None:
        """Tell PDT the training loss of the step just taken (drives ``adaptive`` tau,
        ``rollback_factor``, ``setback_limit`` and ``runaway_factor``; free when none is on).
        Where the optimizer maximizes (``maximize=True`` in every predicted param group), report
        the objective it climbs, as ``verify`` returns it: PDT reads its negation. Under
        ``torch.distributed`` every rank reports, PDT decides on the mean (one scalar
        all-reduce), so that every rank decides alike; a rank that has no loss (a pipeline
        stage before the last) reports None, and the mean is over the ranks that have one.

        When the runaway guard is the only reader, tensor losses are read on the host in
        batches of ``PDTConfig.loss_reads`` (by default 1 on the CPU, 16 on an accelerator), and
        always before a snapshot is taken: one host read and one all-reduce per batch rather than
        a device synchronisation every step. A runaway is then acted on up to that many steps
        late, from the same snapshot."""
        readers = self._loss_readers
        if readers is None:
            return
        if isinstance(loss, Tensor) and loss.numel() != 1:
            raise ValueError(f"PDT.report_loss: loss has {loss.numel()} elements; pass the step's scalar loss "
                             "(e.g. loss.mean())")
        if loss is not None and (not isinstance(loss, (Tensor, numbers.Real)) or isinstance(loss, bool)):
            raise TypeError(f"PDT.report_loss: expected the step's loss as a one-element tensor or a float (None on "
                            f"a rank without one), got {loss!r}")
        if readers != 1 and (loss is None or isinstance(loss, Tensor)):
            on_cpu = self._ring.device.type == "cpu" if loss is None else loss.is_cpu
            reads = (1 if on_cpu else LOSS_READS_ON_ACCELERATORS) if readers == "auto" else readers
            if reads > 1:
                # an attached loss would keep its graph
                self._unread_losses.append((self.schedule.steps, None if loss is None else loss.detach()))
                if len(self._unread_losses) >= reads or self.schedule.boundary_next():
                    self._read_losses()
                return
        if self._unread_losses:
            self._read_losses()
        value = mean_across_ranks(loss, self._ring.device)
        if value is not None:
            self._take_loss(self.schedule.steps, value)

    def _warn_unmoved_weights(self) -> None:
        """Say, once, which tensors of the optimizer's state hold weights that merges leave
        behind (an optimizer PDT has no adapter for: a user's own, or one the registry lacks)."""
        self._state_checked = True
        moved = {*self._weight_space_keys, self._sequence}
        if self._averaging is not None:
            moved |= {self._averaging.base, *self._averaging.interpolations}
        keys = unmoved_weight_keys(self.optimizer, _opted_in(self.param_groups), sorted(moved))
        if keys:
            name = type(self.optimizer).__name__
            warnings.warn(
                f"PDT: {name} keeps weights in its state ({', '.join(repr(k) for k in keys)}: tensors within a fifth of "
                "the parameters' size of them) and merges leave them where they are. If the optimizer pulls the weights "
                "toward them or rebuilds the weights from them (an average, slow weights, an iterate, a dual-averaging "
                "origin), it undoes every merge: declare them, pdt_compile.adapters.register_optimizer("
                f"{name}, {keys!r}), and merges move them too. If they are a reference the optimizer only measures "
                "from, nothing to do",
                UserWarning, stacklevel=6,
            )

    def _warn_no_losses(self) -> None:
        """Say, once, which options wait for losses that no one reports."""
        self._awaiting_losses = False
        idle = [name + (" (the runaway guard, on by default on schedule-free optimizers)" if name == "runaway_factor" else "")
                for name in options_idle_without_losses(self.config)]
        warnings.warn(
            f"PDT: {', '.join(idle)} reads the training loss, and none was reported by step "
            f"{self.schedule.steps + 1}, so it stays idle. Report it: opt.report_loss(loss) after each step, "
            "opt.step(closure), or a @pdt.compile step that returns it (alone, first in a tuple, or as 'loss' in "
            "a dict); or turn the option off (None, or False for adaptive)",
            RuntimeWarning,
            stacklevel=4,
        )

    @staticmethod
    def _readers_of(config: PDTConfig) -> int | str | None:
        """None when no option of ``config`` reads reported losses (:meth:`report_loss` returns
        at once); else how many loss tensors may wait to be read together:
        ``PDTConfig.loss_reads`` (``"auto"``: by device) where no reader acts on a single loss
        at once (the runaway guard acts from a snapshot taken before the loss rose, adaptive tau
        and ``loss_hold`` on an interval's mean, all read before the boundary), else 1."""
        reading = options_reading_losses(config)
        if not reading:
            return None
        return 1 if {"rollback_factor", "setback_limit"} & set(reading) else config.loss_reads

    def _read_losses(self) -> None:
        """Take the losses reported as tensors and not read yet, in order (one host read); those
        after a runaway are dropped: they were computed at weights the restore left."""
        if not self._unread_losses:
            return
        unread, self._unread_losses = self._unread_losses, []
        values = means_across_ranks([loss for _, loss in unread], self._ring.device)
        for (step, _), value in zip(unread, values):
            if value is not None and not self._take_loss(step, value):
                return

    def _take_loss(self, step: int, value: float) -> bool:
        """Act on the loss reported at ``step``; False when it called a runaway (and the
        weights were restored)."""
        config = self.config
        value *= loss_sign(self.optimizer.param_groups)
        self._awaiting_losses = False
        self._stats.tau_waits_for_losses = False
        if self.schedule.runaway(value):
            self._restore_(step)
            return False
        if self.schedule.report_loss(value):
            self._rollback_()
        if config.setback_limit is not None:
            if self.schedule.track_setback(value) and self._undo_merge_():
                self._stats.setback_undos += 1
            self._stats.setbacks = self.schedule.setbacks
        return True

    @property
    def keeps_jumps(self) -> bool:
        """Whether predictions keep each merge's jump (the gradient check, rollback,
        ``setback_limit``, verification, the moment and saturation filters and ``radial`` need it)."""
        return (self.config.gradient_limit is not None or self._needs_jumps_later or self._verify is not None
                or self.config.moment_ratio is not None or self.config.saturation is not None or self._undoes_radial)

    @property
    def _needs_jumps_later(self) -> bool:
        """Whether a merge may still be undone after the step that follows it."""
        return self.config.rollback_factor is not None or self.config.setback_limit is not None

    def _translate_(self, jumps: list[Tensor | None], scale: float | Tensor, restoring: bool = False) -> None:
        """Move the weights, their followers and the snapshots a merge moved by ``scale`` times
        its ``jumps`` (-1: undo the merge; a 0-dim tensor: decided on the device; ``restoring``:
        a restore's way back, which leaves trailing followers in place)."""
        ring = self._ring
        shifted = self.config.after_merge == "shift"
        for index, (p, jump) in enumerate(zip(self.tracked(), jumps)):
            if jump is None:
                continue
            tensor = _local(p).detach()
            if isinstance(scale, Tensor):
                step = jump * scale
                tensor.add_(step.view(tensor.shape).to(tensor.dtype))
                ring.undo_jump_(index, step, shifted, alpha=-1.0)
            else:  # no temporary as large as the tensor (exact for the powers of two merges are scaled by)
                tensor.add_(jump.view(tensor.shape).to(tensor.dtype), alpha=scale)
                ring.undo_jump_(index, jump, shifted, alpha=-scale)
        self._move_followers_(jumps, scale, restoring)

    def _verified_loss(self) -> float:
        with torch.no_grad():
            value = self._verify()
        no_loss_here = value is None and not single_process()  # a pipeline stage without the loss
        if not (no_loss_here or isinstance(value, numbers.Real) and not isinstance(value, bool)
                or isinstance(value, Tensor) and value.numel() == 1):
            shape = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else repr(value)
            raise TypeError(f"PDT(verify=...): the held-out loss must be one number (a float or a one-element "
                            f"tensor), got {shape}; return the mean, e.g. loss_fn(model(x), y) with reduction='mean'")
        value = mean_across_ranks(value, self._ring.device)  # a stage without the loss: None
        if value is None:
            raise TypeError("PDT(verify=...): the held-out loss was None on every rank; return the loss (None only "
                            "on the ranks of a pipeline that do not compute it)")
        self._stats.verify_evaluations += 1
        return loss_sign(self.param_groups) * value

    def _verify_merge(self, jumps: list[Tensor | None]) -> bool:
        """Keep the largest fraction of the merge just made (1, 1/2, 1/4, ...) whose verify
        loss is no higher than without the merge; scales ``jumps`` in place to what stands.
        Returns whether any of it stands."""
        fractions = [0.5**k for k in range(self.config.verify_backtracks + 1)]
        losses = {1.0: self._verified_loss()}
        self._translate_(jumps, -1.0)
        plain = self._verified_loss()
        for fraction in fractions:
            if fraction not in losses:
                self._translate_(jumps, fraction)
                losses[fraction] = self._verified_loss()
                self._translate_(jumps, -fraction)
            if math.isfinite(losses[fraction]) and losses[fraction] <= plain:
                self._translate_(jumps, fraction)
                for jump in jumps:
                    if jump is not None:
                        jump.mul_(fraction)
                self._stats.verify_backtracks += int(fraction < 1.0)
                self._stats.log("verify_loss_change", (self.schedule.steps + 1, losses[fraction] - plain, fraction))
                return True
        self._stats.merges -= 1
        self._stats.verify_rejections += 1
        self._stats.log("verify_loss_change", (self.schedule.steps + 1, 0.0, 0.0))
        return False

    def _undo_merge_(self) -> bool:
        """Subtract the last merge's jump from the weights, the snapshots and the followers it
        moved; False when there is none to undo."""
        if self._jumps is None:
            return False
        self._translate_(self._jumps, -1.0)
        self._jumps = None
        return True

    def _rollback_(self) -> None:
        """Undo the last merge (``rollback_factor``) and halve tau."""
        if not self._undo_merge_():
            return
        self._stats.rollbacks += 1
        self.schedule.shrink()
        self._stats.tau = self.schedule.tau

    def _restore_(self, called_at: int) -> None:
        """The run blew up (``PDTConfig.runaway_factor``; the loss reported at step
        ``called_at`` said so): move the tracked weights, and what is tied to them, back to
        the newest snapshot taken before the loss rose, so that PDT does not extrapolate the
        runaway and the run resumes from where it was sound; then forget the snapshots and
        burn in again. Followers that trail the weights (Lookahead's slow weights, averages)
        stay: moved by the weights' way back, they would land past the snapshot."""
        self._resolve_pending()
        ring, back = self._ring, self.schedule.clean_snapshot(called_at)
        self._stats.runaways += 1
        warnings.warn(
            f"PDT: the training loss ran away after step {called_at} (over "
            f"{runaway_threshold(self.config.runaway_factor, self.schedule.runaways - 1):g} times the largest of the "
            f"last ones, runaway_factor doubled at each of the first {RUNAWAY_DOUBLINGS} runaways); "
            + ("the weights were moved back to the last snapshot before it and " if ring.count > back else "")
            + "burn-in restarts",
            RuntimeWarning,
            stacklevel=4,
        )
        if ring.count > back:
            slot = ring.order()[-1 - back]
            jumps = [ring.block(i, slice(None))[slot] - _local(t).detach().reshape(-1).float()
                     for i, t in enumerate(self.tracked())]
            self._translate_(jumps, 1.0, restoring=True)
        ring.reset_()
        ring.capture_(self.tracked())
        self._jumps = None
        self.schedule.boundaries_since_reset = 0

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The wrapped optimizer's state dict holding PDT's (ring, schedule, stats): its tensors
        in their parameters' state, the rest in the first param group (:mod:`~pdt_compile.runtime.checkpoint`),
        where ``torch.distributed.checkpoint.state_dict`` and the trainers built on it keep them."""
        self._resolve_pending()
        self._read_gradient_checks()
        self._read_filtered()
        pdt_state = {
            "ring": self._ring.state_dict(),
            "ring_settings": self._ring_settings(),
            "schedule": self.schedule.state_dict(),
            "stats": self._stats.checkpoint_dict(),
            **self._jumps_state(),
            "gradient_check": None if self._gradient_check is None else self._gradient_check.state_dict(),
            "unread_losses": [(step, None if loss is None else float(loss)) for step, loss in self._unread_losses],
        }
        return checkpoint.embed(self.optimizer.state_dict(), pdt_state, self._ring_positions())

    def _ring_positions(self) -> list[int]:
        """Where each of the ring's parameters is among the optimizer's, param group after param group."""
        positions = {id(p): i for i, p in enumerate(p for group in self.param_groups for p in group["params"])}
        return [positions[id(p)] for p in self._ring.params]

    def _ring_settings(self) -> dict[str, Any]:
        config = self.config
        return ring_settings(config.snap_every, config.history, config.ring_dtype,
                             [global_numel(p) for p in self._ring.params])

    def _jumps_state(self) -> dict[str, Any]:
        """The last merge's jumps, for an undo after a resume. Where jumps are kept, one tensor
        per parameter (zeros where none is kept; ``jumps_kept``, a character per parameter, says
        which are real) so that the entry has the same structure whatever the moment
        (torch.distributed.checkpoint loads into a fresh optimizer's state dict, key by key),
        sharded like the parameters."""
        if not self.keeps_jumps:
            return {"jumps": self._jumps}
        jumps = self._jumps or [None] * len(self._ring.params)
        tensors = [
            (jump if jump is not None else torch.zeros(
                _local(p).numel(), dtype=working_dtype(p.dtype), device=self._ring.device)).reshape(-1)
            for p, jump in zip(self._ring.params, jumps)
        ]
        kept = None if self._jumps is None else "".join("1" if jump is not None else "0" for jump in jumps)
        return {"jumps": [self._ring.sharded_copy(i, t) for i, t in enumerate(tensors)], "jumps_kept": kept}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        self._pending = None
        self._unread_losses = []
        state, pdt_state = checkpoint.extract(state_dict, self._ring_positions())
        self.optimizer.load_state_dict(state)
        if pdt_state is None:
            warnings.warn(
                "PDT.load_state_dict: the checkpoint holds no PDT state (saved from the plain optimizer, or "
                "through code that keeps only part of a param group?); PDT starts its burn-in afresh. A dict that "
                "torch.distributed.checkpoint.state_dict flattened (flatten_optimizer_state_dict=True, torchtitan's) "
                "keeps it: load that with pdt.set_optimizer_state_dict (torch's arguments) to resume PDT too",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        saved = pdt_state.get("ring_settings")
        changes = [] if saved is None else changed_ring_settings(saved, self._ring_settings())
        if not changes:
            self._ring.load_state_dict(pdt_state["ring"])
        self.schedule.load_state_dict(pdt_state["schedule"])
        self._stats.load_dict(pdt_state["stats"])
        self._unread_losses = [(step, None if value is None else torch.tensor(value, device=self._ring.device))
                               for step, value in pdt_state.get("unread_losses", [])]
        check_state = pdt_state.get("gradient_check")
        if self._gradient_check is not None and check_state is not None:
            self._gradient_check.load_state_dict(check_state, self._ring.device)
        jumps = None if changes else pdt_state.get("jumps")  # per tracked parameter: only where they still fit
        if jumps is not None and "jumps_kept" in pdt_state:
            kept = pdt_state["jumps_kept"]  # a character a parameter ("1": kept); a list of bools before 5123275
            kept = [k == "1" for k in kept] if isinstance(kept, str) else kept
            jumps = None if kept is None else [_local(j).reshape(-1) if k else None for j, k in zip(jumps, kept)]
        self._jumps = None if jumps is None else [None if j is None else j.to(self._ring.device) for j in jumps]
        if changes:
            warnings.warn(
                f"PDT.load_state_dict: the checkpoint's snapshots do not fit this PDT ({'; '.join(changes)}); "
                "the optimizer's state, the schedule and the stats are loaded, and PDT starts its burn-in afresh "
                "(resume with the checkpoint's settings to keep its snapshots)",
                RuntimeWarning,
                stacklevel=2,
            )
            self._forget_snapshots()


def boundary_graphs(optimizer: PDT) -> CompiledOptimizerStep:
    """``kernels="graph"``: the optimizer step stays eager, each boundary runs as one graph."""
    from .api import CompiledOptimizerStep  # api imports this module

    return CompiledOptimizerStep(optimizer, "inductor", None, trace_step=False)


def calls_step_hooks(optimizer: Optimizer, before: bool = True, profiler: bool = True) -> bool:
    """Whether ``optimizer.step()`` would call step hooks (its own, or torch's global ones; pre
    hooks only with ``before``) or, with ``profiler``, label a profiler range: what torch's
    wrapper of every optimizer's step does, and what PDT skips where there is nothing to call,
    and runs around a compiled step where there is."""
    return bool(
        getattr(optimizer, "_optimizer_step_post_hooks", None) or _global_optimizer_post_hooks
        or (before and (getattr(optimizer, "_optimizer_step_pre_hooks", None) or _global_optimizer_pre_hooks))
        or (profiler and torch.autograd._profiler_enabled())
    )


def _is_loss(value: Any) -> bool:
    """Whether ``value`` is what a step returns as its loss, a tensor or a real number (a
    tensor of more than one element is then refused by :meth:`PDT.report_loss`), not
    something else a step may return (GSAM's ``(outputs, loss)``)."""
    return isinstance(value, Tensor) or isinstance(value, numbers.Real) and not isinstance(value, bool)


def _returning_into(closure: Callable[[], Any], returned: list[Any]) -> Callable[[], Any]:
    """``closure``, whose first result is also appended to ``returned``."""

    def returning() -> Any:
        result = closure()
        if not returned:
            returned.append(result)
        return result

    return returning


@torch.compiler.disable
def _outside_graph(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, run eagerly from a traced region (a graph break)."""
    return function(*args, **kwargs)


# torch's own hook-and-profiler wrapper, used only when hooks or the profiler are active.
_STEP_WITH_HOOKS = Optimizer.profile_hook_step(PDT._step)
