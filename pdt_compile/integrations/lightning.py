"""A Lightning callback that turns on PDT for a LightningModule's optimizers.

    trainer = lightning.Trainer(callbacks=[PDTCallback(snap_every=100)])

Lightning keeps stepping the optimizer as before (closures, gradient accumulation, AMP);
PDT shares the optimizer's ``param_groups``, so the configured LR schedulers act on it, and
its state is part of the optimizer state that Lightning checkpoints.
"""

from __future__ import annotations

from typing import Any, Callable

import lightning

from ..config import PDTConfig, binds, check_option_names
from ..optim import PDT


class PDTCallback(lightning.Callback):
    """Wrap every optimizer of the run with :class:`pdt_compile.PDT` when fitting starts.

    ``config`` or keyword options (``PDTConfig`` fields) as for ``PDT``. ``verify``: called
    with the LightningModule, returns a held-out loss (see ``PDT(verify=...)``). ``optimizers``
    (``opt`` after fitting) are the PDT wrappers, for reading ``stats``.
    """

    def __init__(
        self, config: PDTConfig | None = None, *,
        verify: Callable[["lightning.LightningModule"], Any] | None = None, **options: Any,
    ) -> None:
        check_option_names(options, "PDTCallback(...)")
        if verify is not None and not binds(verify, None):
            raise TypeError(f"PDTCallback(verify=...): {verify!r} must take one argument, the LightningModule, and "
                            "return a held-out loss: verify=lambda module: loss_fn(module(x_held_out), y_held_out)")
        self.config = config if config is not None else PDTConfig(**options)
        self.verify = verify
        self.optimizers: list[PDT] = []

    def on_fit_start(self, trainer: "lightning.Trainer", pl_module: "lightning.LightningModule") -> None:
        verify = None if self.verify is None else (lambda: self.verify(pl_module))
        wrapped = [opt if isinstance(opt, PDT) else PDT(opt, self.config, verify=verify) for opt in trainer.optimizers]
        trainer.optimizers = wrapped
        self.optimizers = wrapped
