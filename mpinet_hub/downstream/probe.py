"""Frozen-feature probe: how much segmentation a backbone's features hold, with nothing but a linear layer trained.

The field measures self-supervised encoders this way before fine-tuning: the backbone is frozen (eval mode, no
gradient), the chosen levels are upsampled to stride 4 and concatenated, normalised by a BatchNorm without
affine parameters, and a 1x1 convolution is trained on the same seeded labeled subset that `mpinet finetune`
uses. Evaluation is `mpinet evaluate`'s: whole tiles by sliding window, metrics.json in its schema.

`random-bn[:ARCH]` is the control a reviewer asks for: random weights whose BatchNorm statistics are
re-estimated on the data set's training images, so a gain over it is not just BatchNorm statistics.

Run folder: config.yaml, labeled_patches.json, log.jsonl, loss.png, checkpoints/last.pt (head and optimiser, to
resume), probe.safetensors (head), metrics.json, confusion.png, previews/.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from .. import training
from ..atomic import atomic_output
from ..data import BANDS_HELP, DATA_ROOT_HELP, DATASETS, IGNORE_INDEX, VALUE_MAX_HELP, evaluation_split, open_dataset
from ..data.labeled_subset import labeled_subset, write_labeled_patches
from ..models import MPINET_ARCHS
from ..pretrain.base import feature_backbone
from ..settings import SettingsError, setting
from ..training import (
    EpochBatches,
    LabeledBatches,
    StepLoop,
    plot_losses,
    register_kind,
)
from .evaluate import evaluate_model
from .model import (
    ENCODER_HELP,
    NORMALISATION_HELP,
    EncoderSpec,
    SegmentationModelInfo,
    labeled_train_split_for,
    load_encoder,
)

__all__ = ["LEVELS", "LinearProbe", "ProbeConfig", "Prober", "TurnedPatchFeatures", "reestimate_batchnorm",
           "resample_cells", "run_probe"]

LEVELS = ("C2", "C3", "C4", "C5")


@dataclass
class ProbeConfig:
    encoder: str = setting(help=ENCODER_HELP + "; or random-bn[:ARCH]: random weights, BatchNorm statistics "
                           "re-estimated on the training images (the control)")
    dataset: str = setting(choices=DATASETS, help="a named data set, or `folder` for your own labeled folders")
    data_root: str = setting(help=DATA_ROOT_HELP)
    out: str = setting(may_change="how", help="run folder")
    bands: str | None = setting(None, was=None, help=BANDS_HELP)
    label_fraction: float = setting(0.01, help="fraction of the labeled training patches, e.g. 0.01 for 1%%")
    levels: list[str] = setting(list(LEVELS), choices=LEVELS, help="encoder levels upsampled to stride 4 and "
                                "concatenated")
    steps: int = setting(300, help="optimiser steps of the head")
    batch_size: int = setting(16, help="labeled patches per step")
    lr: float = setting(1e-3, help="Adam learning rate of the head")
    patch: int = setting(256, help="side of the labeled patches (the subset's unit)")
    seed: int = setting(0, help="head initialisation, batch order, random weights")
    subset_seed: int = setting(0, help="seed of the labeled subset (keep it fixed across encoders)")
    split: str | None = setting(None, help="evaluation split (default: test if it has labels, else val)")
    arch: str = setting("mpinet_resnet18", choices=MPINET_ARCHS, help="for random, random-bn, imagenet")
    bn_batches: int = setting(20, help="random-bn: batches of training windows the statistics are estimated on")
    reestimate_bn: bool = setting(False, help="re-estimate BatchNorm statistics for any encoder, as random-bn does")
    window: int = setting(512, help="sliding-window side in px")
    device: str = setting("auto", may_change="how", help="auto, cpu or cuda")
    mean: list[float] | None = setting(None, help=NORMALISATION_HELP)
    std: list[float] | None = setting(None, help=NORMALISATION_HELP)
    value_max: float | None = setting(None, help=VALUE_MAX_HELP)
    save_every: int = setting(100, may_change="how", help="steps between checkpoints (OUT/checkpoints/last.pt)")
    feature_cache_mb: int = setting(2048, may_change="how", help=(
        "memory kept for the frozen backbone's features of the labeled patches, each of its 8 rotations/flips "
        "computed once (the head trains many times faster); 0 runs the backbone every step"))

    def validate(self) -> None:
        unknown = [lv for lv in self.levels if lv not in LEVELS]
        if unknown or not self.levels:
            raise SettingsError(f"--levels {' '.join(self.levels)}: choose from {' '.join(LEVELS)}")
        if not 0 < self.label_fraction <= 1:
            raise SettingsError(f"--label-fraction {self.label_fraction}: give a fraction in (0, 1], e.g. 0.01 for 1%")
        if self.batch_size < 2:
            raise SettingsError("--batch-size must be at least 2 (the feature BatchNorm needs two samples)")


class LinearProbe(nn.Module):
    """Frozen backbone -> levels upsampled to stride 4, concatenated -> BatchNorm (no affine) -> 1x1 conv.

    Shapes: x (B, C, H, W) normalised -> logits (B, K, H, W).
    """

    def __init__(self, backbone: nn.Module, levels: list[int], num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.levels = levels
        width = sum(backbone.feature_info.channels()[i] for i in levels)
        self.norm = nn.BatchNorm2d(width, affine=False)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.backbone.eval()  # frozen, BatchNorm statistics included
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen backbone's chosen levels of normalised images x at stride 4, concatenated, channels last (no
        gradient). Shapes: x (B, C, H, W) -> (B, ceil(H / 4), ceil(W / 4), width)."""
        h, w = x.shape[-2:]
        with torch.no_grad():
            feats = self.backbone(x)
            cells = (math.ceil(h / 4), math.ceil(w / 4))
            stacked = torch.cat([resample_cells(feats[i].float(), 4 * 2**i, 4, cells) for i in self.levels], 1)
            return stacked.permute(0, 2, 3, 1).contiguous()

    def head(self, stacked: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Logits (B, K, *size) from `features`' map: normalised, a 1x1 convolution, resampled to pixels.

        Training, the BatchNorm is folded into the convolution (W / sigma and b - W mu / sigma from the batch's
        statistics, which carry no gradient: the features are frozen) and both run as matrix products over the
        channels-last map: the same logits and gradients as `classifier(norm(map))`, without the strided
        reductions and the normalised copy that took most of a step. The running statistics are updated as
        `nn.BatchNorm2d` does."""
        if not self.training:  # `train()` sets the norm's mode with the head's
            return resample_cells(self.classifier(self.norm(stacked.permute(0, 3, 1, 2))), 4, 1, size)
        flat = stacked.reshape(-1, stacked.shape[-1])
        var, mean = _column_var_mean(flat)
        with torch.no_grad():
            self.norm.num_batches_tracked += 1
            momentum = self.norm.momentum
            if momentum is None:  # cumulative average, as nn.BatchNorm2d does
                momentum = 1.0 / float(self.norm.num_batches_tracked)
            self.norm.running_mean.lerp_(mean, momentum)
            self.norm.running_var.lerp_(var * len(flat) / max(len(flat) - 1, 1), momentum)
        weight = self.classifier.weight.flatten(1) * torch.rsqrt(var + self.norm.eps)  # (K, width)
        bias = self.classifier.bias - weight @ mean
        logits = torch.addmm(bias, flat, weight.t()).view(*stacked.shape[:-1], -1).permute(0, 3, 1, 2)
        return resample_cells(logits, 4, 1, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x), (x.shape[-2], x.shape[-1]))


def _column_var_mean(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column (biased) variance and mean of a (N, C) matrix, in two passes as `torch.var_mean` computes them
    (the mean, then centred squares). On the CPU `torch.var_mean(flat, 0)` is a strided reduction about 8x slower
    than summing blocks of 256 rows, which stay in cache."""
    if flat.device.type != "cpu":
        return torch.var_mean(flat, dim=0, correction=0)
    with torch.no_grad():
        blocks = flat.split(256)
        mean = (torch.stack([b.sum(0, dtype=torch.float64) for b in blocks]).sum(0) / len(flat)).to(flat.dtype)
        squares = torch.stack([(b - mean).square_().sum(0, dtype=torch.float64) for b in blocks]).sum(0)
    return (squares / len(flat)).to(flat.dtype), mean


def resample_cells(x: torch.Tensor, stride: int, new_stride: int, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling of a map whose cell i sits on input pixel stride * i (a timm ResNet's convention,
    `pretrain.method.cell_centre`) onto cells at new_stride * j; `F.interpolate` would assume centred cells and
    shift C5 by about half a cell. Beyond the last cell the edge value is repeated.

    Shapes: x (B, C, h, w) -> (B, C, *size).
    """
    h, w = x.shape[-2:]

    def axis(n_out: int, n_in: int) -> torch.Tensor:
        index = torch.arange(n_out, device=x.device, dtype=torch.float32) * new_stride / stride
        return index / max(1, n_in - 1) * 2 - 1

    gy, gx = torch.meshgrid(axis(size[0], h), axis(size[1], w), indexing="ij")
    grid = torch.stack([gx, gy], -1)[None].expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


@torch.no_grad()
def reestimate_batchnorm(backbone: nn.Module, batches: list[torch.Tensor]) -> None:
    """Replace every BatchNorm's running statistics by their average over `batches` (normalised images)."""
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    backbone.train()
    for images in batches:
        backbone(images)
    backbone.eval()


def _backbone(cfg: ProbeConfig, encoder: EncoderSpec, in_chans: int) -> nn.Module:
    """The encoder's timm backbone (random weights seeded by `cfg.seed` for random and random-bn)."""
    torch.manual_seed(cfg.seed)  # random weights of `random`/`random-bn`
    backbone = feature_backbone(encoder.base_arch, in_chans)
    if encoder.state_dict is not None:
        result = backbone.load_state_dict(encoder.state_dict, strict=False)
        if result.missing_keys:
            raise ValueError(f"encoder {cfg.encoder} does not fit {encoder.base_arch}: "
                             f"missing {result.missing_keys[:5]}")
    return backbone


def _encoder(cfg: ProbeConfig, in_chans: int) -> EncoderSpec:
    spec = cfg.encoder.replace("random-bn", "random", 1) if cfg.encoder.startswith("random-bn") else cfg.encoder
    return load_encoder(spec, default_arch=cfg.arch, in_chans=in_chans)


class FeatureBatch(NamedTuple):
    """A step's batch as `LinearProbe.features` of its images (B, h/4, w/4, width) and their masks (B, h, w)."""

    features: torch.Tensor
    masks: torch.Tensor


class TurnedPatchFeatures:
    """The backbone's features for each (labeled patch, quarter turns, flip) the head's steps draw, computed the first
    time it is drawn and kept while they fit in `budget_mb`. The probe's only augmentation is the 8 rotations/flips
    of whole patches and its backbone is frozen in eval mode, so a kept feature is the one a new forward would give
    (to float rounding); the head then trains on them without the backbone. Written here: it rests on the probe's
    own facts (whole patches, frozen backbone), which no library's feature cache knows."""

    def __init__(self, probe: LinearProbe, labeled: LabeledBatches, patch: int,
                 normalise: Callable[[torch.Tensor], torch.Tensor], budget_mb: int) -> None:
        self.probe, self.labeled, self.patch, self.normalise = probe, labeled, patch, normalise
        self.budget, self.used = budget_mb * 2**20, 0
        self.kept: dict[tuple[int, int, int, int, bool], tuple[torch.Tensor, torch.Tensor]] = {}

    def batches(self, first: int, last: int) -> Iterator[FeatureBatch]:
        """(features, masks) of steps first .. last - 1, as `LabeledBatches` would draw them."""
        for step in range(first, last):
            yield self.batch(self.labeled.placements(step, (self.patch, self.patch)))

    def batch(self, draws: list[tuple[int, int, int, int, bool]]) -> FeatureBatch:
        new = [d for d in dict.fromkeys(draws) if d not in self.kept]
        fresh = {}
        if new:
            pairs = [self.labeled.placed(d) for d in new]
            for (image, _), (j, *_) in zip(pairs, new):
                if tuple(image.shape[-2:]) != (self.patch, self.patch):  # a crop would have failed the same way
                    raise ValueError(f"labeled patch {self.labeled.subset[j]} is {tuple(image.shape[-2:])}, not "
                                     f"{self.patch} x {self.patch}: give a --patch no larger than the tiles")
            device = self.probe.classifier.weight.device
            features = self.probe.features(self.normalise(torch.stack([i for i, _ in pairs]).to(device)))
            for n, (draw, (_, mask)) in enumerate(zip(new, pairs)):
                entry = (features[n].clone(), mask.to(device))
                fresh[draw] = entry
                size = entry[0].numel() * entry[0].element_size() + mask.numel() * mask.element_size()
                if self.used + size <= self.budget:
                    self.kept[draw] = entry
                    self.used += size
        entries = [self.kept.get(d) or fresh[d] for d in draws]
        return FeatureBatch(torch.stack([e[0] for e in entries]), torch.stack([e[1] for e in entries]))


PROBE_FORMAT = "mpinet-hub/probe/1"


@register_kind("probe", command="mpinet_hub.downstream.cli",
               description="Frozen-feature linear probe of an encoder on a seeded label fraction")
class Prober(StepLoop):
    """The probe as a run: claims and locks its folder (`claim_then_build`), trains the head with a plain Adam step
    a batch (32 bits), checkpoints it every `save_every` steps and resumes from OUT/checkpoints/last.pt; the frozen
    backbone is rebuilt from the spec (and its BatchNorm re-estimated, seeded) rather than saved."""

    cfg: ProbeConfig
    distributed = False
    kind, checkpoint_format = "probe", PROBE_FORMAT

    def __init__(self, cfg: ProbeConfig, resume: bool = False, overwrite: bool = False) -> None:
        cfg.validate()
        super().__init__(cfg, resume, overwrite)

    def _build(self, resume: bool) -> None:
        cfg = self.cfg
        device = self.device
        dataset, encoder, cfg.value_max = labeled_train_split_for(
            lambda value_max: open_dataset(cfg.dataset, cfg.data_root, "train", bands=cfg.bands, patch_size=cfg.patch,
                                           value_max=value_max), cfg.value_max, lambda bands: _encoder(cfg, bands),
            cfg.dataset)
        self.dataset = dataset
        self.split = cfg.split or evaluation_split(cfg.dataset, cfg.data_root)
        self.subset = labeled_subset(dataset, cfg.label_fraction, cfg.subset_seed)
        backbone = _backbone(cfg, encoder, dataset.num_bands).to(device)
        self.use_normalisation(cfg.mean, cfg.std, dataset.num_bands, default=(encoder.mean, encoder.std))
        if cfg.reestimate_bn or cfg.encoder.startswith("random-bn"):  # statistics from training windows, no labels
            every = EpochBatches(len(dataset), cfg.batch_size, cfg.seed + 1)
            stats = LabeledBatches(dataset, list(range(len(dataset))), every, cfg.patch, cfg.seed, 0, cfg.bn_batches)
            reestimate_batchnorm(backbone, [self.normalise(stats[i][0].to(device)) for i in range(len(stats))])
        torch.manual_seed(cfg.seed)
        self.probe = LinearProbe(backbone, [LEVELS.index(lv) for lv in cfg.levels], dataset.num_classes).to(device)
        self.optimizer = torch.optim.Adam([p for p in self.probe.parameters() if p.requires_grad], lr=cfg.lr)
        self.use_precision("32")
        self.total_steps, self.save_every, self.log_every = cfg.steps, cfg.save_every, 1
        if resume:
            self._resume()

    def head_state(self) -> dict[str, torch.Tensor]:
        return {k: v.contiguous() for k, v in self.probe.state_dict().items() if not k.startswith("backbone.")}

    def state(self) -> dict[str, Any]:
        return self.training_state() | {"head": self.head_state()}

    def _resume(self) -> None:
        ckpt = self.resume_checkpoint()
        missing = self.probe.load_state_dict(ckpt["head"], strict=False).missing_keys
        if [k for k in missing if not k.startswith("backbone.")]:
            raise SettingsError(f"{self.checkpoint_path} lacks {missing[:3]}; give another --out")

    def compute(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        inputs, masks = batch
        masks = masks.to(self.device)
        if isinstance(batch, FeatureBatch):
            logits = self.probe.head(inputs, (masks.shape[-2], masks.shape[-1]))
        else:
            logits = self.probe(self.normalise(inputs.to(self.device)))
        loss = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX, reduction="sum")
        loss = loss / (masks != IGNORE_INDEX).sum().clamp_min(1)
        return loss, {"ce": loss}, masks.shape[0]

    def checkpoint(self, final: bool) -> None:
        self.save_checkpoint()

    # --- the run (training.StepLoop.run: to `steps` from the resumed step, then the head saved and evaluated;
    # returns evaluate's metrics dict)
    def make_loader(self) -> Iterable[Any]:
        cfg = self.cfg
        write_labeled_patches(self.out, cfg.dataset, self.dataset, self.subset, cfg.patch, cfg.label_fraction,
                              cfg.subset_seed, getattr(self.dataset, "bands", None))
        batches = EpochBatches(len(self.subset), cfg.batch_size, cfg.seed)
        labeled = LabeledBatches(self.dataset, self.subset, batches, cfg.patch, cfg.seed, self.step, cfg.steps)
        if cfg.feature_cache_mb > 0:
            features = TurnedPatchFeatures(self.probe, labeled, cfg.patch, self.normalise, cfg.feature_cache_mb)
            loader = features.batches(self.step, cfg.steps)
        else:
            loader = DataLoader(labeled, batch_size=None)
        self.probe.train()
        return loader

    def label(self) -> str:
        return f"probe {self.cfg.encoder}"

    def finish(self, last: dict[str, float]) -> dict[str, Any]:
        plot_losses(self.out / "log.jsonl", self.out / "loss.png", keys=("ce",))
        with atomic_output(self.out / "probe.safetensors") as tmp:  # the user's file mode, never a torn file
            save_file(self.head_state(), str(tmp))
        return self.evaluate(self.out, previews=2)

    def evaluate(self, out: Path, previews: int = 0) -> dict[str, Any]:
        """`mpinet evaluate` of the probe as it is now on the evaluation split, written to `out`; returns the
        metrics dict. The head is left in training mode."""
        cfg = self.cfg
        info = SegmentationModelInfo(
            classes=list(self.dataset.classes), mean=self.mean_std[0], std=self.mean_std[1],
            palette=[list(c) for c in self.dataset.palette] or None, bands=getattr(self.dataset, "bands", None),
            value_max=cfg.value_max,
            provenance={"dataset": cfg.dataset, "encoder": cfg.encoder,
                        "decoder": f"linear probe {'+'.join(cfg.levels)}", "label_fraction": cfg.label_fraction,
                        "labeled_patches": len(self.subset), "steps": self.step, "model_dir": str(self.out)})
        metrics = evaluate_model(self.probe, info, cfg.dataset, cfg.data_root, out, split=self.split,
                                 window=cfg.window, device=cfg.device, previews=previews)
        self.probe.train()
        return metrics


def run_probe(cfg: ProbeConfig) -> dict[str, Any]:
    """Train the probe head on the labeled subset and evaluate whole tiles; returns evaluate's metrics dict. Resumes
    the probe in `cfg.out` where it has a checkpoint, else starts it there (as the study's cells run)."""
    return training.run("probe", cfg)
