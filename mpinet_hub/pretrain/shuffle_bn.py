"""Shuffling BatchNorm (MoCo): the target network never normalises a key with the statistics of its query's batch.

Online and target both see the B images of a step. If each computes BatchNorm over the same batch, the
statistics carry a signature of that batch that the query and its positive key share and the queue's keys
(from earlier batches) do not: the instance loss can fall by matching batch statistics instead of content.
MoCo stops this by running BatchNorm per GPU and shuffling the target's batch across GPUs. We do the same:

- `SplitBatchNorm2d` computes training statistics per split of the batch (MoCo's single-GPU emulation of
  per-GPU BN); its parameters and buffers are BatchNorm2d's, so state dicts and exports are unchanged.
- `shuffled` runs a module on a permuted batch (across all ranks under DDP) and restores the order of its
  outputs, so a key is normalised within a split of other images than its query's.

Written here because no maintained library ships it as a module: MoCo's and lightly's versions live in
their training scripts (lightly's `batch_shuffle`/`batch_unshuffle` work on one process only).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["SplitBatchNorm2d", "convert_split_batchnorm", "shuffled", "split_count"]


def split_count(n: int, splits: int) -> int:
    """The largest count <= `splits` that divides `n` with at least two samples per split (at least 1)."""
    for count in range(min(splits, n // 2), 1, -1):
        if n % count == 0:
            return count
    return 1


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed per split of the batch: at most `num_splits`, and
    fewer where that keeps `min_samples` per split (never fewer than two: one split would be the whole batch).

    The splits are consecutive blocks of the batch on every memory layout (one BatchNorm call per block; a block
    of a channels_last batch stays channels_last, so no copy to NCHW and back is made at every layer). Blocks,
    because the grouping matters for the online network: its batch is cat(view1, view2), so with two or more
    blocks the two views of an image never share a split, and a query's statistics never carry its positive's
    input. (Folding the splits into the channels, sample i in split i % splits, put both views of every image in
    one split whenever the batch was a multiple of the splits: a leak the instance loss can exploit.) The
    target's batch is shuffled before it is split (`shuffled`). Running statistics are updated with the mean over
    splits. In eval mode it is plain BatchNorm2d.
    """

    def __init__(self, num_features: int, num_splits: int, min_samples: int = 1, **kw) -> None:
        super().__init__(num_features, **kw)
        self.num_splits = num_splits
        self.min_samples = min_samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        splits = split_count(n, min(self.num_splits, max(2, n // self.min_samples)))
        if not self.training or splits == 1:
            return super().forward(x)
        means, variances, outs = [], [], []
        for block in x.chunk(splits):
            mean, var = self.running_mean.clone(), self.running_var.clone()
            outs.append(F.batch_norm(block, mean, var, self.weight, self.bias, True, self.momentum, self.eps))
            means.append(mean)
            variances.append(var)
        self._update_running(torch.stack(means), torch.stack(variances))
        return torch.cat(outs)

    @torch.no_grad()
    def _update_running(self, means: torch.Tensor, variances: torch.Tensor) -> None:
        """means, variances: (splits, C), each split's running statistics after its update."""
        self.running_mean.copy_(means.mean(0))
        self.running_var.copy_(variances.mean(0))
        self.num_batches_tracked.add_(1)


def convert_split_batchnorm(module: nn.Module, num_splits: int, min_samples: int = 1) -> nn.Module:
    """Replace every BatchNorm2d of `module` (in place where nested) by a SplitBatchNorm2d with its state."""
    if type(module) is nn.BatchNorm2d:
        split = SplitBatchNorm2d(module.num_features, num_splits, min_samples, eps=module.eps,
                                 momentum=module.momentum)
        split.load_state_dict(module.state_dict())
        return split.to(module.weight.device)
    for name, child in module.named_children():
        setattr(module, name, convert_split_batchnorm(child, num_splits, min_samples))
    return module


def _gather(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def shuffled(fn: Callable[..., dict[str, torch.Tensor]], *batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """`fn(*batch)` computed on a random permutation of the batch, outputs returned in the original order.

    Under DDP (as MoCo's batch_shuffle_ddp) the permutation spans every rank's samples, so each sample is
    normalised on a random rank. The permutation comes from torch's global generator (rank 0's under DDP),
    so a run seeded per step stays reproducible. No gradient flows through (the target needs none).
    """
    n = batch[0].shape[0]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        world, rank = dist.get_world_size(), dist.get_rank()
        perm = torch.randperm(n * world).to(batch[0].device)
        dist.broadcast(perm, 0)
        mine = perm.view(world, n)[rank]
        out = fn(*(_gather(t)[mine] for t in batch))
        inverse = torch.argsort(perm).view(world, n)[rank]
        return {k: _gather(v)[inverse] for k, v in out.items()}
    perm = torch.randperm(n).to(batch[0].device)
    out = fn(*(t[perm] for t in batch))
    inverse = torch.argsort(perm)
    return {k: v[inverse] for k, v in out.items()}
