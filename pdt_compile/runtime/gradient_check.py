"""The gradient check: the optimizer's next gradient judges a merge before it acts on it.

A merge that leaves the valley the optimizer was following shows at once in the gradient at the
merged weights, which the next training step computes anyway: its norm is many times the norm
of the gradients just before the merge. Left alone, the optimizer steps with that gradient, and
an adaptive one (Adam's second moment, tuned to the small gradients of late training) takes a
step far larger than its own: the run can blow up intervals later. The check undoes such a
merge, and the optimizer takes that step with a zero gradient (the gradient belongs to weights
that are no longer there; momentum and weight decay still act).

The decision is a device tensor: the compiled path reads nothing on the host for it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch._utils import _flatten_dense_tensors

from .kernels import working_dtype
from .schedule import setback_window


CONCATENATED_NORM_ELEMENTS = 1 << 16
"""Gradients of at most this many elements in all are normed as one concatenated vector (two
torch operations); larger ones tensor by tensor (one operation per tensor, no copy). On a small
model each operation, not the bytes, sets the cost, and the check takes a norm on a quarter of
the steps."""


def gradient_norm(grads: Sequence[Tensor]) -> Tensor:
    """The 2-norm of ``grads`` taken together, float32, 0-dim (on their device)."""
    if sum(grad.numel() for grad in grads) <= CONCATENATED_NORM_ELEMENTS:
        flat = _flatten_dense_tensors(grads)  # one operation (DDP's bucketing), where a cat of views costs one per tensor
        norm = torch.linalg.vector_norm(flat, dtype=working_dtype(flat.dtype))
    else:
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    return norm if norm.dtype == torch.float32 else norm.float()  # each operation counts on a small model


def gradient_surge(before: Tensor, after: Tensor) -> Tensor:
    """The gradient norm at the merged weights (``after``, 0-dim) over the mean of the norms of
    the steps right before the merge (``before``, ``[q]``): 1 where the merge left the gradient
    as it was. A non-finite ``after`` is an infinite surge; NaN where the ratio has no meaning
    (no norms before, or their mean not positive and finite), which no limit rejects."""
    after = after.float()
    mean = before.float().mean() if before.numel() else after.new_full((), float("nan"))
    surge = (after / mean).where(after.isfinite(), float("inf"))
    return surge.where(mean.isfinite() & (mean > 0), float("nan"))


def steps_to_boundary(steps_done: int, snap_every: int) -> int:
    """How many steps from the one about to run (the ``steps_done + 1``-th) to the end of its
    interval, both included: 1 at the boundary step."""
    return snap_every - (steps_done % snap_every)


def in_window(steps_done: int, snap_every: int, window: int) -> bool:
    """Whether the step about to run (the ``steps_done + 1``-th) is one of the last ``window``
    steps of an interval, the boundary step included: a merge at that boundary is judged
    against those steps' gradient norms."""
    return steps_to_boundary(steps_done, snap_every) <= window


UNREAD_LIMIT = 64
"""Checks left on the device before PDT reads them into the stats: a run that never reads its
stats holds at most this many (one host read per 64 checked merges)."""


class GradientCheck:
    """The norms of the gradients before each boundary, whether a merge awaits its check, and
    the checks not yet read on the host."""

    def __init__(self, limit: float, snap_every: int) -> None:
        self.limit = limit
        self.snap_every = snap_every
        self.window = setback_window(snap_every)
        self.norms: deque[Tensor] = deque(maxlen=self.window)
        self.armed: Tensor | None = None
        """Set at a prediction: whether it merged (a device bool); the next gradient judges it."""
        self.unread: list[tuple[int, Tensor, Tensor, Tensor]] = []
        """(step of the prediction, surge, undone, merged) of the checks made since the last :meth:`read`."""
        self.recording: bool | None = None
        """Whether this interval's window takes its norms, decided at its first step (None: not
        yet decided)."""

    def wants(self, steps_done: int, can_predict: Callable[[], bool]) -> bool:
        """Whether the step about to run needs its gradient norm: to judge a merge, or in the
        window before a boundary that ``can_predict`` says may predict. ``can_predict`` is asked
        at the window's first step and its answer holds for the whole window, so that a window
        takes the norms of all its steps or of none (:meth:`window_taken`)."""
        if self.armed is not None:
            return True
        left = steps_to_boundary(steps_done, self.snap_every)
        if left > self.window:
            return False
        if self.recording is None or left == min(self.window, self.snap_every):
            self.recording = can_predict()
        taken = self.recording
        if left == 1:
            self.recording = None
        return taken

    def window_taken(self) -> bool:
        """Whether the window before the boundary about to run took its norms, or may still
        (asked before that boundary's own :meth:`wants`): a merge there can be judged."""
        return self.recording is not False

    def record(self, norm: Tensor) -> None:
        self.norms.append(norm if norm.dim() == 0 and not norm.requires_grad else norm.detach().reshape(()))

    def judge(self, step: int, norm: Tensor) -> Tensor:
        """Whether to undo the merge made at ``step`` (a 0-dim float tensor, 1.0 or 0.0, on the
        device): its surge exceeds the limit and it merged. Disarms the check."""
        armed, self.armed = self.armed, None  # on the parameters' device, as the norms
        before = torch.stack(list(self.norms)) if self.norms else norm.new_zeros(0)
        surge = gradient_surge(before, norm.detach().reshape(()))
        undo = ((surge > self.limit) & armed).float()
        self.unread.append((step, surge.where(armed, float("nan")), undo, armed.float()))
        return undo

    def read(self) -> list[tuple[int, float, bool]]:
        """(step, surge, undone) of every merge checked since the last read (one host read),
        in the order they were made; predictions that merged nothing are left out. The surge is
        NaN where it has no meaning (no norms before the merge): the merge then stood."""
        if not self.unread:
            return []
        values = torch.stack([torch.stack([s, u, m]) for _, s, u, m in self.unread]).tolist()
        steps = [step for step, *_ in self.unread]
        self.unread = []
        return [(step, surge, bool(undo)) for step, (surge, undo, merged) in zip(steps, values) if merged]

    def state_dict(self) -> dict[str, Any]:
        return {"norms": [float(n) for n in self.norms], "armed": None if self.armed is None else bool(self.armed),
                "recording": self.recording}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.norms.clear()
        for value in state["norms"]:
            self.norms.append(torch.tensor(value, dtype=torch.float32, device=device))
        armed = state["armed"]
        self.armed = None if armed is None else torch.tensor(bool(armed), device=device)
        self.recording = state.get("recording")
        self.unread = []
