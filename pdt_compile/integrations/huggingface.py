"""Hugging Face ``Trainer`` recipe: hand it a PDT optimizer and its scheduler.

    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      optimizers=pdt_optimizers(optimizer, get_linear_schedule_with_warmup, snap_every=200,
                                                num_warmup_steps=0, num_training_steps=1000))

The Trainer steps the optimizer it is given (through Accelerate); PDT shares the wrapped
optimizer's ``param_groups``, so the scheduler may be built on either.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..config import PDTConfig
from ..optim import PDT

_PDT_FIELDS = set(PDTConfig.__dataclass_fields__)


def pdt_optimizers(
    optimizer: torch.optim.Optimizer,
    make_scheduler: Callable[..., Any] | None = None,
    *,
    verify: Callable[[], Any] | None = None,
    **options: Any,
) -> tuple[PDT, Any]:
    """``(PDT(optimizer), scheduler)`` for ``Trainer(optimizers=...)``.

    ``options`` that are ``PDTConfig`` fields configure PDT; the others go to
    ``make_scheduler(pdt_optimizer, ...)`` (e.g. ``num_training_steps``). Without
    ``make_scheduler`` the learning rate stays constant. ``verify``: a held-out loss, as for
    ``PDT(verify=...)``.
    """
    pdt_options = {k: v for k, v in options.items() if k in _PDT_FIELDS}
    scheduler_options = {k: v for k, v in options.items() if k not in _PDT_FIELDS}
    wrapped = PDT(optimizer, verify=verify, **pdt_options)
    if make_scheduler is None:
        scheduler = torch.optim.lr_scheduler.LambdaLR(wrapped, lambda step: 1.0)
    else:
        scheduler = make_scheduler(wrapped, **scheduler_options)
    return wrapped, scheduler
