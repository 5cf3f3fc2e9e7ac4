"""AdamW with 8-bit moments in place of a task's AdamW, for the benchmarks that compare PDT on it
(``benchmarks.variants --optimizer``, the peers of ``benchmarks.ttb``): the same betas, eps and
decoupled weight decay, the moments of tensors of 4096 elements or more kept in 8 bits, in blocks
of 256 (smaller tensors keep float32 moments)."""

from __future__ import annotations

import torch


def torchao_adamw8bit(params, lr: float, adamw: torch.optim.AdamW) -> torch.optim.Optimizer:
    """torchao's AdamW8bit with ``adamw``'s hyperparameters."""
    from torchao.optim import AdamW8bit

    return AdamW8bit(params, lr=lr, betas=adamw.defaults["betas"], eps=adamw.defaults["eps"],
                     weight_decay=adamw.defaults["weight_decay"])


def bitsandbytes_adamw8bit(params, lr: float, adamw: torch.optim.AdamW) -> torch.optim.Optimizer:
    """bitsandbytes' AdamW8bit with ``adamw``'s hyperparameters."""
    from bitsandbytes.optim import AdamW8bit

    return AdamW8bit(params, lr=lr, betas=adamw.defaults["betas"], eps=adamw.defaults["eps"],
                     weight_decay=adamw.defaults["weight_decay"])
