"""A pretraining method without a queue, written as a user would add one: this file and its registration line,
nothing changed in mpinet_hub. BYOL-like (Grill et al. 2020): the online network predicts the EMA target's
projection of the other view; the loss is 2 - 2 cos, with no negatives, so it has no chance level."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mpinet_hub.models import MPINET_ARCHS
from mpinet_hub.pretrain.base import MomentumMethod, feature_backbone
from mpinet_hub.pretrain.registry import register_method
from mpinet_hub.pretrain.views import TwoViews


def _mlp(dim_in: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Linear(256, dim_out))


class PredictorNetwork(nn.Module):
    def __init__(self, cfg: Any, in_chans: int) -> None:
        super().__init__()
        self.backbone = feature_backbone(MPINET_ARCHS[cfg.arch][0], in_chans)
        self.projector = _mlp(self.backbone.feature_info.channels()[-1], 128)
        self.predictor = _mlp(128, 128)

    def forward(self, x: torch.Tensor, boxes: torch.Tensor, predict: bool = True) -> dict[str, torch.Tensor]:
        z = self.projector(self.backbone(x)[-1].mean((2, 3)))
        return {"instance": F.normalize(self.predictor(z) if predict else z, dim=1)}


@register_method("byol-example", w_ins=1.0, w_pix=0.0, w_ffl=0.0, fusion_levels=["C5"])
class PredictorMethod(MomentumMethod):
    def __init__(self, cfg: Any, in_chans: int) -> None:
        super().__init__(cfg, PredictorNetwork(cfg, in_chans))

    @classmethod
    def instance_chance(cls, cfg: Any) -> float | None:
        return None

    def forward(self, views: TwoViews, online: nn.Module | None = None) -> dict[str, torch.Tensor]:
        b = views.view1.shape[0]
        x, boxes = torch.cat([views.view1, views.view2]), torch.cat([views.overlap1, views.overlap2])
        q = (online or self.online)(x, boxes)["instance"]
        k = self.run_target(lambda x_, boxes_: self.target(x_, boxes_, predict=False), x, boxes)["instance"]
        agreement = (q[:b] * k[b:]).sum(1) + (q[b:] * k[:b]).sum(1)
        return {"ins": (2 - agreement).mean()}  # the two directions' 2 - 2 cos, averaged

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.cfg.w_ins * terms["ins"]
