"""Hugging Face ``Trainer``: PDT on the optimizer the Trainer builds, or a recipe that hands it one.

    trainer = with_pdt(Trainer(model=model, args=args, train_dataset=data), snap_every=200)
    trainer.train()

keeps everything the ``TrainingArguments`` choose (``optim=``, including bitsandbytes' and
schedule-free optimizers, the learning rate, the weight-decay groups, ``lr_scheduler_type``)
and wraps the optimizer the Trainer makes in PDT before Accelerate prepares it. Or build the
optimizer yourself:

    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      optimizers=pdt_optimizers(optimizer, get_linear_schedule_with_warmup, snap_every=200,
                                                num_warmup_steps=0, num_training_steps=1000))

The Trainer steps the optimizer it is given (through Accelerate); PDT shares the wrapped
optimizer's ``param_groups``, so the scheduler may be built on either. The Trainer hands no loss
to the optimizer; given ``model=``, the recipe reports the loss of the model's own outputs
(:func:`report_losses_of`), which the options that read losses need (on by default: the
runaway guard on schedule-free optimizers, adaptive tau on SGD, LAMB and Muon).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.hooks import RemovableHandle

from ..api import step_loss
from ..config import PDTConfig
from ..optim import PDT

_PDT_FIELDS = set(PDTConfig.__dataclass_fields__)


def pdt_optimizers(
    optimizer: torch.optim.Optimizer,
    make_scheduler: Callable[..., Any] | None = None,
    *,
    verify: Callable[[], Any] | None = None,
    model: torch.nn.Module | None = None,
    **options: Any,
) -> tuple[PDT, Any]:
    """``(PDT(optimizer), scheduler)`` for ``Trainer(optimizers=...)``.

    ``options`` that are ``PDTConfig`` fields configure PDT; the others go to
    ``make_scheduler(pdt_optimizer, ...)`` (e.g. ``num_training_steps``). Without
    ``make_scheduler`` the learning rate stays constant. ``verify``: a held-out loss, as for
    ``PDT(verify=...)``. ``model``: the model the Trainer trains, whose outputs carry the loss
    (``labels`` given): PDT then gets it (:func:`report_losses_of`).
    """
    pdt_options = {k: v for k, v in options.items() if k in _PDT_FIELDS}
    scheduler_options = {k: v for k, v in options.items() if k not in _PDT_FIELDS}
    wrapped = PDT(optimizer, verify=verify, **pdt_options)
    if model is not None:
        report_losses_of(model, wrapped)
    if make_scheduler is None:
        scheduler = torch.optim.lr_scheduler.LambdaLR(wrapped, lambda step: 1.0)
    else:
        scheduler = make_scheduler(wrapped, **scheduler_options)
    return wrapped, scheduler


def with_pdt(trainer: Any, *, verify: Callable[[], Any] | None = None, **options: Any) -> Any:
    """``trainer`` (a ``transformers.Trainer``), its optimizer wrapped in PDT when the Trainer
    makes it (``create_optimizer``, before Accelerate prepares it and before the scheduler is
    built on it), with ``options`` (``PDTConfig`` fields; ``snap_every`` at least) and
    ``verify`` as for ``PDT(...)``. The losses of the model's outputs are reported to PDT
    (:func:`report_losses_of`). Checkpoints the Trainer saves hold PDT's state, and
    ``train(resume_from_checkpoint=...)`` restores it. Returns ``trainer``."""
    unknown = sorted(set(options) - _PDT_FIELDS)
    if unknown:
        raise TypeError(f"with_pdt(...): {', '.join(map(repr, unknown))} "
                        f"{'is not a PDTConfig field' if len(unknown) == 1 else 'are not PDTConfig fields'}; "
                        "the Trainer's own settings go to its TrainingArguments")
    make = trainer.create_optimizer

    def create_optimizer(*args: Any, **kwargs: Any) -> torch.optim.Optimizer:
        make(*args, **kwargs)
        if not isinstance(trainer.optimizer, PDT):
            trainer.optimizer = PDT(trainer.optimizer, verify=verify, **options)
            report_losses_of(trainer.model, trainer.optimizer)
        return trainer.optimizer

    trainer.create_optimizer = create_optimizer
    return trainer


def report_losses_of(model: torch.nn.Module, optimizer: PDT) -> tuple[RemovableHandle, RemovableHandle]:
    """Report to ``optimizer`` the training loss that ``model``'s forward returns (its output,
    or the first item or ``"loss"`` entry of it: :func:`~pdt_compile.api.step_loss`), for
    loops that do not hand it over themselves. The losses of the forwards in training mode
    since the last step (several under gradient accumulation) are reported as their mean right
    after the next optimizer step. Returns the two hook handles (``.remove()`` to stop)."""
    pending: list[torch.Tensor] = []

    def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
        loss = step_loss(output) if module.training and torch.is_grad_enabled() else None
        if isinstance(loss, torch.Tensor):
            pending.append(loss.detach().reshape(()))

    def report(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if pending:
            optimizer.report_loss(pending[0] if len(pending) == 1 else torch.stack(pending).mean())
            pending.clear()

    return model.register_forward_hook(keep), optimizer.register_step_post_hook(report)
