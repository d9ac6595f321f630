"""Pixel-level InfoNCE between aligned cell grids of two views (PixContrast form)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelInfoNCELoss(nn.Module):
    """Anchor = a cell of view 1 (online); positive = the same cell of view 2 (target); negatives = every
    other target cell of the batch (B*S*S - 1).

    Args:
        temperature: t (PixContrast: 0.3).
        anchors_per_image: sample this many anchor cells per image to bound memory (None: all S*S).

    Shapes:
        online: (B, D, S, S) L2-normalised along D.
        target: (B, D, S, S) L2-normalised along D, aligned cell for cell with `online`, no gradient.
        returns: scalar.
    """

    def __init__(self, temperature: float = 0.3, anchors_per_image: int | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.anchors_per_image = anchors_per_image

    def forward(self, online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        b, d, s, _ = online.shape
        anchors = online.permute(0, 2, 3, 1).reshape(b * s * s, d)
        keys = target.permute(0, 2, 3, 1).reshape(b * s * s, d)
        labels = torch.arange(b * s * s, device=online.device)
        if self.anchors_per_image and self.anchors_per_image < s * s:
            pick = torch.rand(b, s * s, device=online.device).argsort(1)[:, : self.anchors_per_image]
            labels = (pick + torch.arange(b, device=online.device)[:, None] * s * s).reshape(-1)
            anchors = anchors[labels]
        logits = anchors @ keys.t()
        return F.cross_entropy(logits.float() / self.temperature, labels)
