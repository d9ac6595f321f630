"""Pieces shared by the pretraining and fine-tuning loops: seeded batches, device choice, NaN stop, loss plot.

Both loops draw every step's randomness from (seed, step), so a resumed run reproduces the uninterrupted
one on CPU.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

__all__ = [
    "AUTOCAST_DTYPES",
    "EpochBatches",
    "NonFiniteLossError",
    "check_finite",
    "init_distributed",
    "normalisation",
    "plot_losses",
    "resolve_device",
]

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}  # --precision -> autocast dtype (32: none)


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; the last good checkpoint is kept."""


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


def init_distributed(device: str) -> tuple[int, int]:
    """(rank, world size) from torchrun's environment, joining the process group (nccl on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and device != "cpu" else "gloo")
    return rank, world


def resolve_device(want: str) -> torch.device:
    """`auto` -> cuda when there is one, else cpu; under torchrun, cuda means this process's LOCAL_RANK GPU."""
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(want)


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


def check_finite(terms: dict[str, torch.Tensor], step: int, last_checkpoint: Path) -> None:
    """Raise NonFiniteLossError naming the step and the first non-finite term."""
    for name, value in terms.items():
        if not torch.isfinite(value):
            raise NonFiniteLossError(
                f"step {step}: loss term '{name}' is {float(value.detach())}; stopped without saving. The last good "
                f"checkpoint is {last_checkpoint} (resume with --resume, perhaps with a lower --lr or --precision 32)")


def plot_losses(log_path: Path, png_path: Path, keys: tuple[str, ...] = ("total", "ins", "pix", "ffl")) -> None:
    """PNG of the logged loss terms in `keys` (those present) against step, from a JSON-lines log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not records:
        return
    keys = tuple(k for k in keys if k in records[-1])
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in records]
    for k in keys:
        ax.plot(steps, [r.get(k) for r in records], label=k)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"losses ({png_path.parent.name})")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)
