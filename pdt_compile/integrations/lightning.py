"""A Lightning callback that turns on PDT for a LightningModule's optimizers.

    trainer = lightning.Trainer(callbacks=[PDTCallback(snap_every=100)])

Lightning keeps stepping the optimizer as before (closures, gradient accumulation, AMP);
PDT shares the optimizer's ``param_groups``, so the configured LR schedulers act on it, and
its state is part of the optimizer state that Lightning checkpoints. Under automatic
optimization PDT reads each step's loss from Lightning's closure; under manual optimization
(``automatic_optimization = False``) the callback reports the loss ``training_step`` returns.
"""

from __future__ import annotations

from typing import Any, Callable

import lightning
from typing_extensions import Unpack

from ..api import step_loss
from ..config import PDTConfig, PDTOptions, binds, check_option_names
from ..optim import PDT


class PDTCallback(lightning.Callback):
    """Wrap every optimizer of the run with :class:`pdt_compile.PDT` when fitting starts.

    ``config`` or keyword options (``PDTConfig`` fields) as for ``PDT``. ``verify``: called
    with the LightningModule, returns a held-out loss (see ``PDT(verify=...)``). ``optimizers``
    (``opt`` after fitting) are the PDT wrappers, for reading ``stats``.

    Under manual optimization the loss ``training_step`` returns (a tensor, or the ``"loss"``
    entry of a dict) is reported to the one optimizer that stepped during the batch; where
    several stepped (a GAN's generator and discriminator) none is told, since one loss cannot
    speak for both: report each one's own loss to ``self.optimizers()[i].optimizer``.
    """

    def __init__(
        self, config: PDTConfig | None = None, *,
        verify: Callable[["lightning.LightningModule"], Any] | None = None, **options: Unpack[PDTOptions],
    ) -> None:
        check_option_names(options, "PDTCallback(...)")
        if verify is not None and not binds(verify, None):
            raise TypeError(f"PDTCallback(verify=...): {verify!r} must take one argument, the LightningModule, and "
                            "return a held-out loss: verify=lambda module: loss_fn(module(x_held_out), y_held_out)")
        self.config = config if config is not None else PDTConfig(**options)
        self.verify = verify
        self.optimizers: list[PDT] = []
        self._steps_before: list[int] = []

    def on_fit_start(self, trainer: "lightning.Trainer", pl_module: "lightning.LightningModule") -> None:
        verify = None if self.verify is None else (lambda: self.verify(pl_module))
        wrapped = [opt if isinstance(opt, PDT) else PDT(opt, self.config, verify=verify) for opt in trainer.optimizers]
        trainer.optimizers = wrapped
        self.optimizers = wrapped

    def on_train_batch_start(self, trainer: "lightning.Trainer", pl_module: "lightning.LightningModule",
                             batch: Any, batch_idx: int) -> None:
        if not pl_module.automatic_optimization:
            self._steps_before = [opt.schedule.steps for opt in self.optimizers]

    def on_train_batch_end(self, trainer: "lightning.Trainer", pl_module: "lightning.LightningModule",
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if pl_module.automatic_optimization:
            return  # the closure handed PDT its loss
        stepped = [opt for opt, before in zip(self.optimizers, self._steps_before) if opt.schedule.steps > before]
        loss = step_loss(outputs)
        if len(stepped) == 1 and loss is not None:
            stepped[0].report_loss(loss)
