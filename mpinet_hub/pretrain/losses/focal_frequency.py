"""Focal frequency loss (Jiang et al., ICCV 2021), between two feature maps.

Written after the formula rather than imported: the reference package (`focal-frequency-loss`) is
image-oriented and unmaintained; tests check this module against the formula and that package's maths.
"""

from __future__ import annotations

import torch
from torch import nn


class FocalFrequencyLoss(nn.Module):
    """L = mean( w * |F_P - F_T|^2 ) with F = fft2(x, norm="ortho") over the spatial grid per channel and
    w = |F_P - F_T| ** alpha (optionally log(w + 1)), normalised by its max per (sample, channel) (or over
    the batch with `batch_matrix`), clamped to [0, 1] and detached.

    Args:
        alpha: focusing exponent.
        patch_factor: split the grid into patch_factor x patch_factor patches, each transformed separately.
        log_matrix: use log(1 + w) before normalising.
        batch_matrix: normalise w by its max over the whole batch.

    Shapes:
        pred: (B, C, H, W); target: (B, C, H, W) (no gradient needed); H and W divisible by patch_factor.
        returns: scalar.
    """

    def __init__(self, alpha: float = 1.0, patch_factor: int = 1, log_matrix: bool = False,
                 batch_matrix: bool = False) -> None:
        super().__init__()
        self.alpha = alpha
        self.patch_factor = patch_factor
        self.log_matrix = log_matrix
        self.batch_matrix = batch_matrix

    def _spectrum(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch_factor
        if h % p or w % p:
            raise ValueError(f"grid {h}x{w} is not divisible by patch_factor={p}")
        x = x.reshape(b, c, p, h // p, p, w // p).permute(0, 2, 4, 1, 3, 5)  # (B, p, p, C, h', w')
        return torch.fft.fft2(x.float(), norm="ortho")

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = self._spectrum(pred) - self._spectrum(target)
        distance = diff.real**2 + diff.imag**2
        with torch.no_grad():
            weight = distance.sqrt() ** self.alpha
            if self.log_matrix:
                weight = torch.log(weight + 1.0)
            if self.batch_matrix:
                weight = weight / weight.max().clamp_min(1e-12)
            else:
                weight = weight / weight.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
            weight = weight.nan_to_num(0.0).clamp(0.0, 1.0)
        return (weight * distance).mean()
