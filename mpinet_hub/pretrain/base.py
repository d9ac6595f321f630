"""What every pretraining method shares: an online network, its EMA target, queues of keys, shuffle-BN.

A method subclasses `MomentumMethod` and registers itself (registry.py). The trainer, `--plan` and
`mpinet diagnose` use only this interface:

- `online`: an nn.Module holding the encoder to release as `.backbone` (a timm `features_only` model, C2..C5);
  `online(x, boxes)` and `target(x, boxes, predict=False)` return a dict with at least `"instance"`, (N, 128)
  L2-normalised embeddings of the views (boxes: (N, 4) overlap boxes, which a method may ignore);
- `forward(views, online)` -> the unweighted loss terms of one step, by name (`"ins"` among them);
- `total_loss(terms)` -> the scalar to minimise;
- `term_weights(cfg)` -> how each term enters the total (a number, or the name of a logged scalar), for plots
  and term shares;
- `logged_scalars()` -> values the method settles during the run (logged every step; the checkpoint's config
  keeps each as NAME_calibrated);
- `instance_chance(cfg)` -> the `ins` term's value at chance (the loss plot's reference line, `mpinet diagnose`'s
  test of whether the run learned): ln(K+1) against a queue of K negatives; None for a loss without negatives;
- every buffer registered on the method itself (queues, pointers, calibration state) is checkpointed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .registry import implementations
from .shuffle_bn import convert_split_batchnorm, shuffled
from .views import TwoViews

__all__ = ["MomentumMethod", "feature_backbone"]


def feature_backbone(base_arch: str, in_chans: int) -> nn.Module:
    """The encoder a method trains, a probe reads and `mpinet export` releases: timm's `features_only` model of
    `base_arch` (e.g. resnet50) with C2..C5 (strides 4-32), randomly initialised."""
    return timm.create_model(base_arch, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4),
                             in_chans=in_chans)


class MomentumMethod(nn.Module):
    """Online network + EMA target (no gradient) + queues. With `cfg.shuffle_bn` (every method's default)
    BatchNorm runs per split of the batch and the target sees a shuffled batch (shuffle_bn.py), so keys and
    their queries are never normalised together."""

    def __init__(self, cfg: Any, online: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.online = convert_split_batchnorm(online, cfg.bn_splits, cfg.bn_split_samples) if cfg.shuffle_bn \
            else online
        self.target = copy.deepcopy(self.online)
        for p in self.target.parameters():
            p.requires_grad_(False)

    # --- the interface a method implements
    def forward(self, views: TwoViews, online: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """`online`: the module to run the online network through (its DDP wrapper under torchrun)."""
        raise NotImplementedError

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def term_weights(cls, cfg: Any) -> dict[str, float | str]:
        return {"ins": cfg.w_ins}

    def logged_scalars(self) -> dict[str, float]:
        return {}

    settings: type | None = None  # the dataclass of the settings only this method reads (`PretrainConfig` has them)

    @classmethod
    def own_settings(cls, cfg: Any) -> set[str]:
        """The settings only this method reads: its `settings` dataclass's fields (the shared machinery reads the
        rest)."""
        return {f.name for f in dataclasses.fields(cls.settings)} if cls.settings else set()

    @classmethod
    def inert_settings(cls, cfg: Any) -> set[str]:
        """The settings with no effect on a run of `cfg` by this method (left out of its identity, so that a
        changed default of another method's setting does not make a finished run another one): those the other
        registered methods own (`own_settings`) and this one does not."""
        others = [impl.own_settings(cfg) for impl in implementations() if impl is not cls]
        return set().union(*others) - cls.own_settings(cfg)

    @classmethod
    def instance_chance(cls, cfg: Any) -> float | None:
        """InfoNCE over one positive and `queue_size` negatives scores ln(K+1) when the query cannot tell them
        apart; a method whose instance term has no negatives (BYOL-like) returns None: it has no chance level."""
        return math.log(cfg.queue_size + 1)

    # --- shared machinery
    @property
    def checkpoint_buffers(self) -> list[str]:
        return [name for name, _ in self.named_buffers(recurse=False)]

    def add_queue(self, name: str, size: int, dim: int = 128) -> None:
        """A FIFO of `size` L2-normalised keys (random to start), with `NAME_ptr` and `NAME_real` (keys enqueued
        so far, capped at `size`: until it reaches `size`, some negatives are the random start)."""
        self.register_buffer(name, F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer(f"{name}_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer(f"{name}_real", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, name: str = "queue") -> None:
        if dist.is_available() and dist.is_initialized():  # MoCo: keys of every rank enter the queue
            gathered = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, keys)
            keys = torch.cat(gathered)
        queue, ptr, real = getattr(self, name), getattr(self, f"{name}_ptr"), getattr(self, f"{name}_real")
        k, size = keys.shape[0], queue.shape[0]
        idx = (ptr + torch.arange(k, device=keys.device)) % size
        queue[idx] = keys.float()
        ptr.copy_((ptr + k) % size)
        real.copy_((real + k).clamp_max(size))

    @torch.no_grad()
    def run_target(self, fn: Callable[..., dict[str, torch.Tensor]], *batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """`fn(*batch)` (the target's forward), on a shuffled batch when shuffle-BN is on."""
        return shuffled(fn, *batch) if self.cfg.shuffle_bn else fn(*batch)

    def momentum_at(self, step: int, total_steps: int) -> float:
        if self.cfg.momentum_schedule == "fixed":
            return self.cfg.momentum
        m0 = self.cfg.momentum
        return 1 - (1 - m0) * (math.cos(math.pi * step / max(1, total_steps)) + 1) / 2

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        for t, o in zip(self.target.parameters(), self.online.parameters()):
            t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)
        for t, o in zip(self.target.buffers(), self.online.buffers()):
            t.copy_(o)
