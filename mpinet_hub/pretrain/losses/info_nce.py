"""InfoNCE against a queue of negatives (MoCo v2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InfoNCELoss(nn.Module):
    """L = -log( exp(q.k/t) / (exp(q.k/t) + sum_n exp(q.n/t)) ), averaged over the batch.

    Args:
        temperature: t (MoCo v2: 0.2).

    Shapes:
        q: (B, D) online queries, L2-normalised.
        k: (B, D) target keys, L2-normalised, no gradient.
        queue: (K, D) negatives, L2-normalised, or None (then the other keys of the batch are negatives).
        returns: scalar.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor | None = None) -> torch.Tensor:
        if queue is None:
            logits = q @ k.t()
            labels = torch.arange(q.shape[0], device=q.device)
        else:
            positive = (q * k).sum(1, keepdim=True)
            logits = torch.cat([positive, q @ queue.t()], 1)
            labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits.float() / self.temperature, labels)
