"""Pixel-level InfoNCE between aligned cell grids of two views (PixContrast form), in memory linear in the batch."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

NEGATIVE_SETS = ("other-images", "all-cells")
_MASKED = -1e9  # finite: a row with every negative masked (one image) gives loss 0 and a zero gradient, not NaN


class PixelInfoNCELoss(nn.Module):
    """Anchor = a cell of view 1 (online); positive = the same cell of view 2 (target); negatives = target
    cells of the batch: `num_negatives` of them drawn at random and shared by every anchor (memory and compute
    linear in the batch), or all of them (`num_negatives=None`: exact, computed in chunks of anchors that are
    recomputed in backward, so memory stays linear while compute is quadratic).

    Which cells count as negatives (`negatives`):
        "other-images": cells of the other images of the batch only (the default). Cells of the anchor's own
            image are near-duplicates of the positive (neighbours share most of their receptive field, and a
            grid finer than its feature map interpolates the positive into them): as negatives they push
            apart what should agree. DenseCL likewise takes its dense negatives from other images.
        "all-cells": every target cell except the positive (the PixContrast form).

    Args:
        temperature: t (PixContrast: 0.3).
        anchors_per_image: sample this many anchor cells per image (None: all S*S).
        num_negatives: negatives shared by all anchors, drawn uniformly with replacement; None: all.
        negatives: "other-images" or "all-cells".
        chunk_elements: exact form only; anchors per chunk x cells is kept under this.

    Shapes:
        online: (B, D, S, S) L2-normalised along D.
        target: (B, D, S, S) L2-normalised along D, aligned cell for cell with `online`, no gradient.
        returns: scalar.
    """

    def __init__(self, temperature: float = 0.3, anchors_per_image: int | None = None,
                 num_negatives: int | None = 4096, negatives: str = "other-images",
                 chunk_elements: int = 1 << 24) -> None:
        super().__init__()
        if negatives not in NEGATIVE_SETS:
            raise ValueError(f"negatives={negatives!r}; choose one of {', '.join(NEGATIVE_SETS)}")
        self.temperature = temperature
        self.anchors_per_image = anchors_per_image
        self.num_negatives = num_negatives
        self.other_images_only = negatives == "other-images"
        self.chunk_elements = chunk_elements

    def forward(self, online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        b, d, s, _ = online.shape
        cells, dev = s * s, online.device
        # 1/t folded into the anchors: no division over the (anchors x negatives) logits
        anchors = online.permute(0, 2, 3, 1).reshape(b * cells, d).float() / self.temperature
        keys = target.permute(0, 2, 3, 1).reshape(b * cells, d).detach().float()
        index = torch.arange(b * cells, device=dev)
        if self.anchors_per_image and self.anchors_per_image < cells:
            pick = torch.rand(b, cells, device=dev).argsort(1)[:, : self.anchors_per_image]
            index = (pick + torch.arange(b, device=dev)[:, None] * cells).reshape(-1)
            anchors = anchors[index]
        positive = (anchors * keys[index]).sum(1)
        owner = self._owner(index, cells)  # what a negative must not share with its anchor
        if self.num_negatives and self.num_negatives < b * cells:
            drawn = torch.randint(0, b * cells, (self.num_negatives,), device=dev)
            return self._loss(anchors, positive, keys[drawn], owner, self._owner(drawn, cells))
        keys_owner = self._owner(torch.arange(b * cells, device=dev), cells)
        step = max(1, self.chunk_elements // (b * cells))
        total = anchors.new_zeros(())
        for start in range(0, anchors.shape[0], step):
            part = slice(start, start + step)
            total = total + checkpoint(self._loss, anchors[part], positive[part], keys, owner[part], keys_owner,
                                       True, use_reentrant=False)
        return total / anchors.shape[0]

    def _owner(self, index: torch.Tensor, cells: int) -> torch.Tensor:
        return index // cells if self.other_images_only else index

    def _loss(self, anchors: torch.Tensor, positive: torch.Tensor, keys: torch.Tensor, owner: torch.Tensor,
              keys_owner: torch.Tensor, summed: bool = False) -> torch.Tensor:
        """-log softmax of the positive among [positive, negatives]; logits already divided by t. A negative
        whose owner is the anchor's is left out."""
        if anchors.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
            loss = _SoftmaxCrossEntropyCPU.apply(anchors, positive, keys, *_same_owner(owner, keys_owner))
        else:
            negative = (anchors @ keys.t()).masked_fill_(owner[:, None] == keys_owner[None], _MASKED)
            loss = torch.logaddexp(positive, torch.logsumexp(negative, 1)) - positive
        return loss.sum() if summed else loss.mean()


def _same_owner(owner: torch.Tensor, keys_owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) of the logits whose key has the anchor's owner, without an (anchors x keys) comparison:
    the keys' owners sorted once, each anchor's run of equal owners found by binary search."""
    order = keys_owner.argsort()
    sorted_owner = keys_owner[order]
    lo = torch.searchsorted(sorted_owner, owner)
    counts = torch.searchsorted(sorted_owner, owner, right=True) - lo
    rows = torch.repeat_interleave(torch.arange(len(owner), device=owner.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    within = torch.arange(len(rows), device=owner.device) - starts[rows]
    return rows, order[lo[rows] + within]


class _SoftmaxCrossEntropyCPU(torch.autograd.Function):
    """Per anchor, log(exp(positive) + sum of exp(anchor . key) over the unmasked keys) - positive, with the
    gradient written out: the same numbers as the logsumexp form (tests check values and gradients), in about a
    third of the passes over the (anchors x keys) matrix, which dominate the pixel loss on a CPU. The logits are
    exponentiated in place, masked entries zeroed, and the matrix kept for backward, where the anchors' gradient
    is one product with the keys (the keys carry none: they come from the target network).

    The logits are shifted by the row's positive: exp(logit - positive) cannot overflow while every logit is within
    80 of it (|anchor| * max |key| bounds them, with no pass over the matrix), and the loss is then
    log1p(sum of the shifted exps), exactly 0 with a gradient of exactly 0 when every negative is masked (one image).
    Where the bound is wider (unnormalised inputs), the row's maximum is subtracted instead.
    Written by hand: no library fuses a masked InfoNCE on the CPU.
    """

    @staticmethod
    def forward(ctx, anchors: torch.Tensor, positive: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor,
                cols: torch.Tensor) -> torch.Tensor:
        keys, anchors, positive = keys.detach(), anchors.detach(), positive.detach()
        weights = anchors @ keys.t()
        bound = anchors.norm(dim=1) * keys.norm(dim=1).max()
        by_positive = float((bound - positive).max()) <= 80
        shift = positive if by_positive else torch.maximum(weights.amax(1), positive)
        weights.sub_(shift[:, None]).exp_()
        weights[rows, cols] = 0
        negatives = weights.sum(1)
        positive_weight = (positive - shift).exp()  # 1 when shifted by the positive
        total = negatives + positive_weight
        ctx.save_for_backward(weights, keys, total, positive_weight)
        return torch.log1p(negatives) if by_positive else total.log() + shift - positive

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weights, keys, total, positive_weight = ctx.saved_tensors
        scale = grad / total
        grad_anchors = (weights @ keys) * scale[:, None] if ctx.needs_input_grad[0] else None
        grad_positive = grad * (positive_weight / total - 1)
        return grad_anchors, grad_positive, None, None, None
