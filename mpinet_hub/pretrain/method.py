"""The MPINet method and its baselines: online network (backbone + heads), EMA target, queue, losses.

    online  = timm backbone (features_only C2..C5) + instance MLP + fusion pixel head + FFL head/predictor
    target  = EMA of online (no gradient); momentum m0 -> 1 on a cosine schedule, or fixed (MoCo v2)
    L       = w_ins * InfoNCE(q, k; queue) + w_pix * PixelInfoNCE + w_ffl * FFL, each symmetrised
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ..models import MPINET_ARCHS
from ..settings import setting
from .base import MomentumMethod, feature_backbone
from .losses import FocalFrequencyLoss, InfoNCELoss, PixelInfoNCELoss
from .registry import register_method
from .views import TwoViews, undo_geometry

if TYPE_CHECKING:
    from .config import PretrainConfig

__all__ = ["LEVELS", "STRIDES", "MPINetModel", "OnlineNetwork", "cell_centre", "roi_grid", "separable_roi_align"]

LEVELS = {"C2": 0, "C3": 1, "C4": 2, "C5": 3}  # index into the backbone's (C2, C3, C4, C5) outputs
STRIDES = (4, 8, 16, 32)


def _conv_bn_relu(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


@dataclass
class MPINetSettings:
    """MPINet's own settings, read by MPINet and its ladder and by no other method: the multi-scale pixel
    contrast's and the focal frequency loss's (`PretrainConfig` carries them as flags and in every run's config)."""

    w_pix: float = setting(1.0, help="weight of the multi-scale pixel contrastive loss")
    w_ffl: float | str = setting("auto", help="weight of the focal frequency loss, or auto: calibrated so that "
                                 "w_ffl x mean L_ffl = ffl-calibration-ratio x mean L_ins")
    ffl_calibration_ratio: float = setting(0.5, help="auto w_ffl: the FFL term's size as a share of the instance "
                                           "term's (chosen on the val band of two real sets)")
    ffl_calibration_steps: int = setting(10, help="auto w_ffl: steps averaged, once the queue holds only real keys "
                                         "and the FFL heads have warmed up")
    ffl_head_warmup: int = setting(50, help="steps the FFL heads train alone, detached from the backbone")
    ffl_head_loss: str = setting("log", was="raw", choices=("log", "raw"), help="what the FFL heads train on during "
                                 "that warmup: log L_ffl (its direction at a scale-free size) or raw L_ffl (~0.006, "
                                 "whose gradient barely moves them; docs/method.md, FFL weight)")
    fusion_levels: list[str] = setting(["C2", "C3", "C4"], help="levels fused for the pixel contrast")
    t_pix: float = setting(0.3, help="pixel InfoNCE temperature")
    pixel_grid: int = setting(14, help="cells per side the fused features are pooled to for the pixel contrast")
    pixel_anchors: int | None = setting(None, help="anchor cells per image (default: all)")
    pixel_negatives: str = setting("other-images", choices=("other-images", "all-cells"),
                                   help="the pixel contrast's negatives: cells of other images, or every other cell")
    pixel_num_negatives: int | None = setting(4096, help="shared negatives per step (memory linear in the batch)")
    ffl_grid: int = setting(7, help="cells per side of the features the FFL compares")
    ffl_alpha: float = setting(1.0, help="focal frequency loss: exponent of the spectrum weight")
    ffl_patch_factor: int = setting(1, help="focal frequency loss: patches per side")
    ffl_log_matrix: bool = setting(False, help="focal frequency loss: log-scaled spectrum weight")
    ffl_batch_matrix: bool = setting(False, help="focal frequency loss: spectrum weight from the whole batch")


FFL_SETTINGS = {f.name for f in dataclasses.fields(MPINetSettings) if f.name.startswith("ffl_")}
PIXEL_SETTINGS = {f.name for f in dataclasses.fields(MPINetSettings)
                  if f.name.startswith("pixel_")} | {"t_pix", "fusion_levels"}


class FusionPixelHead(nn.Module):
    """RoIAligned grids of several levels -> 1x1 conv each to 256, sum, 3x3 conv-BN-ReLU, projector -> 128."""

    def __init__(self, channels: list[int], width: int = 256, out: int = 128) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.fuse = _conv_bn_relu(width, width, 3)
        self.projector = nn.Sequential(_conv_bn_relu(width, width), nn.Conv2d(width, out, 1))

    def forward(self, grids: list[torch.Tensor]) -> torch.Tensor:
        """grids: per level (N, C_l, S, S), or already through its lateral conv when `projected`."""
        fused = sum(g if projected else lat(g) for lat, (g, projected) in zip(self.lateral, grids))
        return F.normalize(self.projector(self.fuse(fused)), dim=1)


def roi_grid(feat: torch.Tensor, rois: list[torch.Tensor], size: int, stride: int,
             project: nn.Conv2d) -> tuple[torch.Tensor, bool]:
    """RoIAlign `feat` on `rois` (one box per image, in view pixels) into size x size cells; returns (grid,
    whether `project` was applied).

    Where the cells are: in a timm ResNet, cell i of a stride-s map is centred on input pixel s*i, i.e. at
    continuous coordinate s*i + 0.5 (`cell_centre`), not at (i + 0.5)*s as RoIAlign's `aligned=True` with
    `spatial_scale=1/s` assumes. The boxes are shifted by the difference, (s - 1)/2, so every level samples the
    ground the box covers; otherwise flips and rotations push the two views' cells apart by up to half a cell.

    A 1x1 conv and RoIAlign are both linear (RoIAlign's bilinear weights sum to one inside the map), so they
    commute. When the conv shrinks the channels and the map is not much larger than the grid (C4/C5 of a
    ResNet-50 at 256 px), running it first moves 4x fewer numbers through RoIAlign; when the map is smaller than
    the grid, the conv itself is cheaper first. The result is the same up to rounding.

    On the CPU the sampling is `separable_roi_align` (two small matrix products per image): torchvision's CPU
    RoIAlign backward is a single-threaded scatter and took about a tenth of an MPINet step (docs/benchmarks.md).
    Elsewhere torchvision's RoIAlign.
    """
    h, w = feat.shape[-2:]
    cin, cout, cells = project.in_channels, project.out_channels, size * size
    first = (cout <= cin and h * w <= cells) or (cout < cin and h * w <= 2 * cells)
    x = project(feat.float()) if first else feat.float()
    shift = (stride - 1) / 2
    if x.device.type == "cpu" and all(len(r) == 1 for r in rois) and len(rois) == len(x):
        return separable_roi_align(x, torch.cat(rois) + shift, size, 1 / stride), first
    grid = roi_align(x, [r + shift for r in rois], size, spatial_scale=1 / stride, sampling_ratio=2, aligned=True)
    return grid, first


def _roi_axis_weights(start: torch.Tensor, end: torch.Tensor, size: int, length: int) -> torch.Tensor:
    """(N, size, length): the weight of each map row (or column) in each output cell along one axis, for
    RoIAlign with `aligned=True` and 2 samples per cell and axis: the mean of the samples' bilinear weights, with
    torchvision's edge rules (a sample below -1 or past `length` weighs nothing, one in [-1, 0] reads index 0, one
    past the last index reads the last)."""
    bin_size = (end - start) / size
    offsets = (torch.arange(2 * size, device=start.device, dtype=start.dtype) + 0.5) / 2  # (p*2 + s + 0.5) / 2
    coords = start[:, None] + bin_size[:, None] * offsets  # (N, 2 * size)
    valid = ((coords >= -1) & (coords <= length)).to(start.dtype)
    coords = coords.clamp_min(0)
    low = coords.floor().long()
    at_end = low >= length - 1
    low = low.clamp_max(length - 1)
    high = torch.where(at_end, low, low + 1)
    frac = torch.where(at_end, torch.zeros_like(coords), coords - low)
    weights = start.new_zeros(len(start), 2 * size, length)
    weights.scatter_add_(2, low[..., None], ((1 - frac) * valid)[..., None])
    weights.scatter_add_(2, high[..., None], (frac * valid)[..., None])
    return weights.view(len(start), size, 2, length).mean(2)


def separable_roi_align(feat: torch.Tensor, boxes: torch.Tensor, size: int, spatial_scale: float) -> torch.Tensor:
    """torchvision's `roi_align(feat, boxes as one box per image, size, spatial_scale, sampling_ratio=2,
    aligned=True)` as `W_y @ feat @ W_x^T` per image: the same numbers up to rounding (tests check values and
    gradients against torchvision's op).

    Written by hand because with one axis-aligned box per image RoIAlign's bilinear samples are separable: each
    cell is the mean of 2 x 2 samples, each a product of a row weight and a column weight, and the edge rules act
    on each axis alone. Its forward and backward are then dense matrix products, which the CPU runs far faster
    than torchvision's per-sample loops (its backward is single-threaded).

    feat: (N, C, H, W); boxes: (N, 4) x1, y1, x2, y2 in input pixels. Returns (N, C, size, size).
    """
    h, w = feat.shape[-2:]
    scaled = boxes.to(feat.dtype) * spatial_scale - 0.5
    rows = _roi_axis_weights(scaled[:, 1], scaled[:, 3], size, h)  # (N, size, H)
    cols = _roi_axis_weights(scaled[:, 0], scaled[:, 2], size, w)  # (N, size, W)
    return torch.einsum("nih,nchw,njw->ncij", rows, feat, cols)


def cell_centre(index: int, stride: int) -> float:
    """Continuous input coordinate of the centre of feature cell `index` at `stride` (timm ResNets)."""
    return stride * index + 0.5


class OnlineNetwork(nn.Module):
    """Backbone + heads. `backbone.*` keys are what `mpinet export` releases."""

    def __init__(self, cfg: PretrainConfig, in_chans: int) -> None:
        super().__init__()
        base = MPINET_ARCHS[cfg.arch][0]
        self.backbone = feature_backbone(base, in_chans)
        chans = self.backbone.feature_info.channels()
        c5 = chans[-1]
        self.levels = [LEVELS[name] for name in cfg.fusion_levels]
        self.instance_head = nn.Sequential(nn.Linear(c5, c5), nn.ReLU(inplace=True), nn.Linear(c5, 128))
        self.pixel_head = FusionPixelHead([chans[i] for i in self.levels]) if cfg.w_pix else None
        self.use_ffl = cfg.w_ffl != 0
        if self.use_ffl:
            self.ffl_head = nn.Sequential(_conv_bn_relu(c5, 512), nn.Conv2d(512, 256, 1))
            self.ffl_predictor = nn.Sequential(_conv_bn_relu(256, 512), nn.Conv2d(512, 256, 1))
        self.pixel_grid = cfg.pixel_grid
        self.ffl_grid = cfg.ffl_grid

    def forward(self, x: torch.Tensor, boxes: torch.Tensor, predict: bool = True,
                detach_ffl: bool = False) -> dict[str, torch.Tensor]:
        """x: (N, C, H, W) views; boxes: (N, 4) overlap boxes in view pixels. Grids still in view orientation.
        `detach_ffl`: the FFL branch reads C5 without a gradient path into the backbone (its heads still learn)."""
        feats = self.backbone(x)
        out = {"instance": F.normalize(self.instance_head(feats[-1].float().mean((2, 3))), dim=1)}
        rois = [b[None] for b in boxes.float()]
        if self.pixel_head is not None:
            grids = [roi_grid(feats[i], rois, self.pixel_grid, STRIDES[i], lat)
                     for i, lat in zip(self.levels, self.pixel_head.lateral)]
            out["pixel"] = self.pixel_head(grids)
        if self.use_ffl:
            conv, bn_relu = self.ffl_head[0][0], self.ffl_head[0][1:]
            c5 = feats[-1].detach() if detach_ffl else feats[-1]
            grid, projected = roi_grid(c5, rois, self.ffl_grid, STRIDES[-1], conv)
            proj = self.ffl_head[1:](bn_relu(grid if projected else conv(grid)))
            out["ffl"] = F.normalize(self.ffl_predictor(proj) if predict else proj, dim=1)
        return out


# The ablation ladder and MoCo v2 as presets of one implementation (config.ABLATION_LADDER): one factor per rung.
# All share everything else (the cosine EMA schedule included); MoCo v2's own settings (fixed momentum 0.999)
# stay available as `mocov2-original`. "auto" FFL weight: calibrated on real keys (`_calibrate_ffl`).
@register_method("mocov2-original", w_ins=1.0, w_pix=0.0, w_ffl=0.0, fusion_levels=["C5"],
                 momentum_schedule="fixed", momentum=0.999)
@register_method("mpinet", w_ins=1.0, w_pix=1.0, w_ffl="auto", fusion_levels=["C2", "C3", "C4"])
@register_method("mpinet-noffl", w_ins=1.0, w_pix=1.0, w_ffl=0.0, fusion_levels=["C2", "C3", "C4"])
@register_method("pixcontrast-c4", w_ins=1.0, w_pix=1.0, w_ffl=0.0, fusion_levels=["C4"])
@register_method("pixcontrast", w_ins=1.0, w_pix=1.0, w_ffl=0.0, fusion_levels=["C5"])
@register_method("mocov2", w_ins=1.0, w_pix=0.0, w_ffl=0.0, fusion_levels=["C5"])
class MPINetModel(MomentumMethod):
    """MPINet and its ladder: `forward(views)` returns the loss terms (unweighted) of one step: `ins`, and `pix`
    and `ffl` where their weights are not 0."""

    settings = MPINetSettings

    def __init__(self, cfg: PretrainConfig, in_chans: int) -> None:
        super().__init__(cfg, OnlineNetwork(cfg, in_chans))
        self.add_queue("queue", cfg.queue_size)
        self.register_buffer("w_ffl_value", torch.tensor(float(cfg.w_ffl) if cfg.w_ffl != "auto" else -1.0))
        self.register_buffer("calibration", torch.zeros(3))  # sum of L_ins, sum of L_ffl, steps (auto w_ffl)
        self.register_buffer("ffl_head_steps", torch.zeros((), dtype=torch.long))  # head-only steps so far (auto)
        self.info_nce = InfoNCELoss(cfg.t_ins)
        self.pixel_nce = PixelInfoNCELoss(cfg.t_pix, cfg.pixel_anchors, cfg.pixel_num_negatives, cfg.pixel_negatives)
        self.ffl = FocalFrequencyLoss(cfg.ffl_alpha, cfg.ffl_patch_factor, cfg.ffl_log_matrix, cfg.ffl_batch_matrix)
        self._queue_was_real = False
        self._ffl_pending: bool | None = None  # host copy of "auto w_ffl not calibrated yet"; read once, lazily

    @classmethod
    def term_weights(cls, cfg: PretrainConfig) -> dict[str, float | str]:
        return {"ins": cfg.w_ins, "pix": cfg.w_pix, "ffl": "w_ffl"}

    @classmethod
    def inert_settings(cls, cfg: PretrainConfig) -> set[str]:
        """Other methods' settings; the FFL's when its weight is 0, the pixel contrast's when w_pix is."""
        inert = super().inert_settings(cfg) | (FFL_SETTINGS if cfg.w_ffl == 0 else set())
        return inert | (PIXEL_SETTINGS if cfg.w_pix == 0 else set())

    def logged_scalars(self) -> dict[str, float]:
        return {"w_ffl": self.ffl_weight()}

    def forward(self, views: TwoViews, online: nn.Module | None = None) -> dict[str, torch.Tensor]:
        b = views.view1.shape[0]
        x = torch.cat([views.view1, views.view2])
        boxes = torch.cat([views.overlap1, views.overlap2])
        # While `auto` calibrates, the FFL heads learn on C5 without moving the backbone (see `total_loss`).
        calibrating = self._ffl_calibrating()
        on = (online or self.online)(x, boxes, detach_ffl=calibrating)
        tg = self.run_target(lambda x_, boxes_: self.target(x_, boxes_, predict=False), x, boxes)
        geoms = (views.geom1, views.geom2)
        terms: dict[str, torch.Tensor] = {}
        q1, q2 = on["instance"][:b], on["instance"][b:]
        k1, k2 = tg["instance"][:b], tg["instance"][b:]
        queue = self.queue.clone().detach()
        # Read on the host only while `auto` calibrates: a host read stalls the GPU's queue of work.
        self._queue_was_real = calibrating and bool(self.queue_real >= self.queue.shape[0])
        terms["ins"] = (self.info_nce(q1, k2, queue) + self.info_nce(q2, k1, queue)) / 2
        for name, loss_fn in (("pixel", self.pixel_nce), ("ffl", self.ffl)):
            if name not in on:
                continue
            o1, o2 = (undo_geometry(on[name][i * b : (i + 1) * b], geoms[i]) for i in (0, 1))
            t1, t2 = (undo_geometry(tg[name][i * b : (i + 1) * b], geoms[i]) for i in (0, 1))
            terms["pix" if name == "pixel" else "ffl"] = (loss_fn(o1, t2) + loss_fn(o2, t1)) / 2
        self.enqueue(torch.cat([k1, k2]))
        return terms

    def _ffl_calibrating(self) -> bool:
        """Whether `auto` w_ffl is still to be calibrated: read from the buffer at the first step (so a resumed run
        sees its checkpoint's value), then tracked on the host."""
        if self._ffl_pending is None:  # (on the meta device, `--plan`, there is no value: planned as calibrated)
            self._ffl_pending = (self.online.use_ffl and not self.w_ffl_value.is_meta
                                 and float(self.w_ffl_value) < 0)
        return self._ffl_pending

    def ffl_weight(self) -> float:
        """The FFL weight in force: the configured one, or the calibrated one (0 until `auto` has calibrated)."""
        return max(0.0, float(self.w_ffl_value))

    @torch.no_grad()
    def _calibrate_ffl(self, terms: dict[str, torch.Tensor]) -> None:
        """`auto`: once the FFL heads have trained `ffl_head_warmup` steps and the queue holds only real keys,
        average L_ins and L_ffl over `ffl_calibration_steps` steps and fix w_ffl so that
        w_ffl * L_ffl = `ffl_calibration_ratio` * L_ins over that window.

        Against the initial random queue L_ins is far from what it is once real keys compete, and a weight
        taken there (w_ffl 236-265 on ResNet-18) had little to do with the losses of the run. Against heads that
        have not learned, L_ffl is that of a random projection: measured so, w_ffl came out 327 and w_ffl * L_ffl
        halved within 55 steps once the heads trained. So the heads train first (on detached C5 features).
        """
        self.ffl_head_steps += 1
        if not self._queue_was_real or int(self.ffl_head_steps) <= self.cfg.ffl_head_warmup:
            return
        self.calibration += torch.stack([terms["ins"].detach().float(), terms["ffl"].detach().float(),
                                         torch.ones((), device=self.calibration.device)])
        if self.calibration[2] < self.cfg.ffl_calibration_steps:
            return
        sums = self.calibration.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        self.w_ffl_value.copy_(self.cfg.ffl_calibration_ratio * sums[0] / sums[1].clamp_min(1e-12))
        self._ffl_pending = False

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum. While `auto` calibrates, the FFL adds 0 to the value and its gradient reaches only
        the FFL head and predictor (their input was detached in `forward`), so the weight is measured on heads
        that learn and the backbone trains on the other terms alone."""
        calibrating = "ffl" in terms and self._ffl_calibrating()
        if calibrating:
            self._calibrate_ffl(terms)
        total = self.cfg.w_ins * terms["ins"]
        if "pix" in terms:
            total = total + self.cfg.w_pix * terms["pix"]
        if "ffl" in terms:
            if calibrating:  # value 0: the heads' gradient only
                heads = terms["ffl"].log() if self.cfg.ffl_head_loss == "log" else terms["ffl"]
                ffl = heads - heads.detach()
            else:
                ffl = self.w_ffl_value.clamp_min(0) * terms["ffl"]
            total = total + ffl
        return total
