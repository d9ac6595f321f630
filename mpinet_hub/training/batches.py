"""Seeded batches (every step's draw from (seed, step), so a resumed run reproduces the uninterrupted one) and
per-band normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["EpochBatches", "LabeledBatches", "StepBatches", "normalisation"]


class EpochBatches:
    """Deterministic batches: epoch e is a permutation of range(n) seeded by (seed, e), sharded across ranks."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if n < 1:
            raise ValueError("no items to draw batches from")
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.per_epoch = max(1, n // (batch * world))

    def indices(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.per_epoch)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch)).tolist()
        start = (k * self.world + self.rank) * self.batch
        return [perm[(start + j) % self.n] for j in range(self.batch)]


def normalisation(mean: list[float] | None, std: list[float] | None, in_chans: int,
                  default: tuple[Sequence[float], Sequence[float]] | None = None) -> tuple[list[float], list[float]]:
    """Per-band (mean, std): the given ones (one value per band), else `default` if it has one per band."""
    if mean and std:
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(f"--mean/--std need {in_chans} values (one per band)")
        return list(mean), list(std)
    if default is not None and len(default[0]) == in_chans:
        return list(default[0]), list(default[1])
    raise ValueError(f"{in_chans}-band input: give --mean and --std (see `mpinet data stats`)")


class StepBatches(Dataset):
    """A DataLoader dataset of one item per step, steps `first` to `last` (exclusive): the whole batch of that
    step, made by `batch(step)` in the loader's workers. Every training loop feeds its loader through a subclass,
    so a resumed run starts at its step and each step's draw depends on (seed, step) only."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last

    def __len__(self) -> int:
        return self.last - self.first

    def __getitem__(self, i: int) -> Any:
        return self.batch(self.first + i)

    def batch(self, step: int) -> Any:
        raise NotImplementedError


class LabeledBatches(StepBatches):
    """Each step's (images, masks) from the labeled subset (positions in `dataset`, a labeled
    `data.SegmentationDataset`), randomly cropped, flipped and rotated by (seed, step)."""

    def __init__(self, dataset: Any, subset: list[int], batches: EpochBatches, crop: int,
                 seed: int, first: int, last: int) -> None:
        super().__init__(first, last)
        self.dataset, self.subset, self.batches, self.crop, self.seed = dataset, subset, batches, crop, seed

    def placements(self, step: int, shape: tuple[int, int]) -> list[tuple[int, int, int, int, bool]]:
        """Step `step`'s draws, (subset position, top, left, quarter turns, flipped) for each patch of the batch,
        without reading the patches: every patch is `shape` (h, w), as the probe's whole patches are."""
        gen = self._generator(step)
        return [self._draw(gen, j, *shape) for j in self.batches.indices(step)]

    def placed(self, draw: tuple[int, int, int, int, bool],
               item: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The (image, mask) of one draw: its patch (`item`, read if not given) cropped, turned and flipped."""
        j, top, left, k, flip = draw
        item = item or self.dataset[self.subset[j]]
        image = item["image"][:, top : top + self.crop, left : left + self.crop]
        mask = item["mask"][top : top + self.crop, left : left + self.crop]
        image, mask = torch.rot90(image, k, (1, 2)), torch.rot90(mask, k, (0, 1))
        if flip:
            image, mask = image.flip(2), mask.flip(1)
        return image, mask

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = self._generator(step)
        images, masks = [], []
        for j in self.batches.indices(step):
            item = self.dataset[self.subset[j]]
            image, mask = self.placed(self._draw(gen, j, *item["mask"].shape), item)
            images.append(image)
            masks.append(mask)
        return torch.stack(images).contiguous(), torch.stack(masks).contiguous()

    def _generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + step)

    def _draw(self, gen: torch.Generator, j: int, h: int, w: int) -> tuple[int, int, int, int, bool]:
        top = int(torch.randint(h - self.crop + 1, (1,), generator=gen))
        left = int(torch.randint(w - self.crop + 1, (1,), generator=gen))
        k = int(torch.randint(4, (1,), generator=gen))  # aerial images have no "up"
        return j, top, left, k, bool(torch.randint(2, (1,), generator=gen))
