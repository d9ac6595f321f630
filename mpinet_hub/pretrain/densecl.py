"""DenseCL (Wang et al., CVPR 2021): MoCo v2 plus a dense contrast on C5 whose positives are found by feature
similarity, not by geometry; the dense self-supervised method to compare MPINet with.

    online  = timm backbone (features_only C2..C5) + global MLP head + dense 1x1-conv head, both -> 128
    dense   = each query cell's positive is the key cell whose backbone C5 feature is most similar (cosine)
              ("select most similar", as lightly's recipe, examples/pytorch/densecl.py); negatives are a queue
              of each key image's mean dense embedding (as the original)
    L       = w_ins * InfoNCE(global; queue) + w_dense * InfoNCE(dense; dense queue), each symmetrised

DenseCL's weighting lambda = 0.5 is the preset (w_ins = w_dense = 0.5). As in the authors' code (and mmselfsup's
DenseCL hook), lambda is 0 for the first `dense_warmup_steps` (the preset: 20, a tenth of a study's 200-step cell;
the authors use 1000 iterations of far longer runs), since at initialisation the dense term, matched by a random
network, gave three times the instance term's gradient norm on the backbone. Everything else is shared with the
MPINet ladder so that a study compares methods, not recipes: shuffle-BN, the cosine EMA schedule, the views,
the optimiser and the queue size. Written here because no maintained library ships DenseCL as a module
(lightly ships the heads and an example script).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..models import MPINET_ARCHS
from ..settings import setting
from .base import MomentumMethod, feature_backbone
from .losses import InfoNCELoss
from .registry import register_method
from .views import TwoViews

if TYPE_CHECKING:
    from .config import PretrainConfig

__all__ = ["DenseCLModel", "DenseCLNetwork", "DenseCLSettings", "most_similar"]


@dataclass
class DenseCLSettings:
    """DenseCL's own settings (`PretrainConfig` carries them as flags and in every run's config)."""

    w_dense: float = setting(0.5, was=0.5, help="DenseCL: weight of its dense term, lambda (runs made before this "
                             "setting weighted it by w_pix, 0.5)")
    dense_warmup_steps: int = setting(0, was=0, help="DenseCL: first steps with the dense term's weight at 0 (the "
                                      "instance term weighted w_ins + w_dense), so that a random network's matches "
                                      "do not steer the start, as DenseCL's authors do for their first iterations")


class DenseCLNetwork(nn.Module):
    """Backbone + global head (pooled C5 -> MLP) + dense head (1x1 convs on C5); `backbone.*` is what is released."""

    def __init__(self, cfg: PretrainConfig, in_chans: int) -> None:
        super().__init__()
        self.backbone = feature_backbone(MPINET_ARCHS[cfg.arch][0], in_chans)
        c5 = self.backbone.feature_info.channels()[-1]
        self.instance_head = nn.Sequential(nn.Linear(c5, c5), nn.ReLU(inplace=True), nn.Linear(c5, 128))
        self.dense_head = nn.Sequential(nn.Conv2d(c5, c5, 1), nn.ReLU(inplace=True), nn.Conv2d(c5, 128, 1))

    def forward(self, x: torch.Tensor, boxes: torch.Tensor | None = None,
                predict: bool = True) -> dict[str, torch.Tensor]:
        """x: (N, C, H, W) -> instance (N, 128); dense (N, 128, HW) and features (N, C5, HW), L2-normalised.
        `boxes` and `predict` are the interface's (base.py); DenseCL needs neither."""
        c5 = self.backbone(x)[-1].float()
        return {"instance": F.normalize(self.instance_head(c5.mean((2, 3))), dim=1),
                "dense": F.normalize(self.dense_head(c5).flatten(2), dim=1),
                "features": F.normalize(c5.flatten(2), dim=1)}


def most_similar(query_features: torch.Tensor, key_features: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """For every query cell, the key embedding at the key cell of most similar feature.

    Shapes: query_features (B, C, Q), key_features (B, C, K), keys (B, D, K) -> (B, D, Q).
    """
    match = torch.einsum("bcq,bck->bqk", query_features, key_features).argmax(2)  # (B, Q)
    return torch.gather(keys, 2, match[:, None, :].expand(-1, keys.shape[1], -1))


@register_method("densecl", w_ins=0.5, w_dense=0.5, w_pix=0.0, w_ffl=0.0, dense_warmup_steps=20)
class DenseCLModel(MomentumMethod):
    """`forward(views)` returns `ins` (global) and `dense`, unweighted."""

    settings = DenseCLSettings

    def __init__(self, cfg: PretrainConfig, in_chans: int) -> None:
        super().__init__(cfg, DenseCLNetwork(cfg, in_chans))
        self.add_queue("queue", cfg.queue_size)
        self.add_queue("dense_queue", cfg.queue_size)
        self.info_nce = InfoNCELoss(cfg.t_ins)
        self.register_buffer("dense_steps", torch.zeros((), dtype=torch.long))  # steps so far (the warmup)
        self._steps_seen: int | None = None  # host copy of dense_steps: read once, lazily (a read stalls a GPU)

    @classmethod
    def term_weights(cls, cfg: PretrainConfig) -> dict[str, float | str]:
        return {"ins": cfg.w_ins, "dense": cfg.w_dense}

    def forward(self, views: TwoViews, online: nn.Module | None = None) -> dict[str, torch.Tensor]:
        b = views.view1.shape[0]
        x = torch.cat([views.view1, views.view2])
        on = (online or self.online)(x)
        tg = self.run_target(lambda x_: self.target(x_), x)
        halves = {name: (out[name][:b], out[name][b:]) for out, name in
                  ((on, "instance"), (on, "dense"), (on, "features"))}
        k_inst, k_dense, k_feat = (tg[name] for name in ("instance", "dense", "features"))
        queue, dense_queue = self.queue.clone().detach(), self.dense_queue.clone().detach()
        ins, dense = [], []
        for view, other in ((0, slice(b, None)), (1, slice(0, b))):
            q, q_dense, q_feat = (halves[name][view] for name in ("instance", "dense", "features"))
            ins.append(self.info_nce(q, k_inst[other], queue))
            positives = most_similar(q_feat.detach(), k_feat[other], k_dense[other])  # (B, 128, cells)
            dense.append(self.info_nce(q_dense.transpose(1, 2).flatten(0, 1), positives.transpose(1, 2).flatten(0, 1),
                                       dense_queue))
        self.enqueue(k_inst)
        self.enqueue(F.normalize(k_dense.mean(2), dim=1), "dense_queue")
        return {"ins": (ins[0] + ins[1]) / 2, "dense": (dense[0] + dense[1]) / 2}

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """w_ins * ins + w_dense * dense; during the warmup (lambda = 0) (w_ins + w_dense) * ins, the dense term 0."""
        if self._steps_seen is None:  # the checkpoint's count, on a resume; on the meta device (`--plan`) none
            self._steps_seen = 0 if self.dense_steps.is_meta else int(self.dense_steps)
        warming = self._steps_seen < self.cfg.dense_warmup_steps
        if self.training:
            self.dense_steps += 1
            self._steps_seen += 1
        if warming:
            return (self.cfg.w_ins + self.cfg.w_dense) * terms["ins"] + 0 * terms["dense"]
        return self.cfg.w_ins * terms["ins"] + self.cfg.w_dense * terms["dense"]
