"""Seeded batches (every step's draw from (seed, step), so a resumed run reproduces the uninterrupted one) and
per-band normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["EpochBatches", "StepBatches", "normalisation"]


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
