"""Optimizers with 8-bit state in place of a task's AdamW, for the benchmarks that compare PDT on
them (``benchmarks.variants --optimizer``, the peers of ``benchmarks.ttb``): AdamW with the same
betas, eps and decoupled weight decay, and Lion, the state of tensors of 4096 elements or more
kept in 8 bits, in blocks of 256 (smaller tensors keep float32 state)."""

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


def bitsandbytes_lion8bit(params, lr: float, adamw: torch.optim.AdamW) -> torch.optim.Optimizer:
    """bitsandbytes' Lion8bit at its own betas and ten times ``adamw``'s decoupled weight decay,
    as ``benchmarks.variants`` pairs pytorch-optimizer's Lion with the AdamW it replaces."""
    from bitsandbytes.optim import Lion8bit

    return Lion8bit(params, lr=lr, weight_decay=10 * adamw.defaults["weight_decay"])
