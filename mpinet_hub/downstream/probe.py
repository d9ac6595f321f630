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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from ..atomic import atomic_output
from ..checkpoint import atomic_save
from ..data import DATA_ROOT_HELP, DATASETS, IGNORE_INDEX, VALUE_MAX_HELP, evaluation_split, open_dataset
from ..data.labeled_subset import labeled_subset, write_labeled_patches
from ..models import MPINET_ARCHS
from ..pretrain.base import feature_backbone
from ..settings import SettingsError, setting
from ..training import (
    EpochBatches,
    StepLoop,
    check_finite_state,
    normalisation,
    plot_losses,
    resolve_device,
    resume_or_start,
)
from .evaluate import evaluate_model
from .finetune import LabeledBatches
from .model import ENCODER_HELP, NORMALISATION_HELP, EncoderSpec, SegmentationModelInfo, load_encoder

__all__ = ["LEVELS", "LinearProbe", "ProbeConfig", "Prober", "reestimate_batchnorm", "resample_cells", "run_probe"]

LEVELS = ("C2", "C3", "C4", "C5")


@dataclass
class ProbeConfig:
    encoder: str = setting(help=ENCODER_HELP + "; or random-bn[:ARCH]: random weights, BatchNorm statistics "
                           "re-estimated on the training images (the control)")
    dataset: str = setting(choices=DATASETS, help="a named data set, or `folder` for your own labeled folders")
    data_root: str = setting(help=DATA_ROOT_HELP)
    out: str = setting(may_change="how", help="run folder")
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        with torch.no_grad():
            feats = self.backbone(x)
            size = (math.ceil(h / 4), math.ceil(w / 4))
            stacked = torch.cat([resample_cells(feats[i].float(), 4 * 2**i, 4, size) for i in self.levels], 1)
        return resample_cells(self.classifier(self.norm(stacked)), 4, 1, (h, w))


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
    if encoder.in_chans != in_chans:
        raise ValueError(f"encoder {cfg.encoder} takes {encoder.in_chans} band(s) but {cfg.dataset} gives {in_chans}")
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


PROBE_FORMAT = "mpinet-hub/probe/1"


class Prober(StepLoop):
    """The probe as a run: claims and locks its folder (`claim_then_build`), trains the head with a plain Adam step
    a batch (32 bits), checkpoints it every `save_every` steps and resumes from OUT/checkpoints/last.pt; the frozen
    backbone is rebuilt from the spec (and its BatchNorm re-estimated, seeded) rather than saved."""

    def __init__(self, cfg: ProbeConfig, resume: bool = False, overwrite: bool = False) -> None:
        cfg.validate()
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.claim_then_build(self.out, resume, overwrite)

    def _build(self, resume: bool) -> None:
        cfg = self.cfg
        self.device = device = resolve_device(cfg.device)
        dataset = open_dataset(cfg.dataset, cfg.data_root, "train", patch_size=cfg.patch, value_max=cfg.value_max)
        encoder = _encoder(cfg, dataset.num_bands)
        if cfg.value_max is None and encoder.value_max is not None:
            cfg.value_max = encoder.value_max  # the scale the weights were trained at
            dataset = open_dataset(cfg.dataset, cfg.data_root, "train", patch_size=cfg.patch, value_max=cfg.value_max)
        if not dataset.has_labels:
            raise ValueError(f"{cfg.dataset} train split has no labels")
        self.dataset = dataset
        self.split = cfg.split or evaluation_split(cfg.dataset, cfg.data_root)
        self.subset = labeled_subset(dataset, cfg.label_fraction, cfg.subset_seed)
        backbone = _backbone(cfg, encoder, dataset.num_bands).to(device)
        self.mean_std = normalisation(cfg.mean, cfg.std, dataset.num_bands, default=(encoder.mean, encoder.std))
        self.mean = torch.tensor(self.mean_std[0], device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(self.mean_std[1], device=device).view(1, -1, 1, 1)
        if cfg.reestimate_bn or cfg.encoder.startswith("random-bn"):  # statistics from training windows, no labels
            every = EpochBatches(len(dataset), cfg.batch_size, cfg.seed + 1)
            stats = LabeledBatches(dataset, list(range(len(dataset))), every, cfg.patch, cfg.seed, 0, cfg.bn_batches)
            reestimate_batchnorm(backbone, [(stats[i][0].to(device) - self.mean) / self.std for i in range(len(stats))])
        torch.manual_seed(cfg.seed)
        self.probe = LinearProbe(backbone, [LEVELS.index(lv) for lv in cfg.levels], dataset.num_classes).to(device)
        self.optimizer = torch.optim.Adam([p for p in self.probe.parameters() if p.requires_grad], lr=cfg.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)
        self.precision, self.step, self.total_steps, self.log_every = "32", 0, cfg.steps, 1
        self.save_every = cfg.save_every
        self.checkpoint_path = self.out / "checkpoints" / "last.pt"
        if resume:
            self._resume()

    def head_state(self) -> dict[str, torch.Tensor]:
        return {k: v.contiguous() for k, v in self.probe.state_dict().items() if not k.startswith("backbone.")}

    def state(self) -> dict[str, Any]:
        return {"format": PROBE_FORMAT, "step": self.step, "config": asdict(self.cfg), "head": self.head_state(),
                "optimizer": self.optimizer.state_dict()}

    def _resume(self) -> None:
        ckpt = self.resume_checkpoint(self.cfg, PROBE_FORMAT, "probe")
        missing = self.probe.load_state_dict(ckpt["head"], strict=False).missing_keys
        if [k for k in missing if not k.startswith("backbone.")]:
            raise SettingsError(f"{self.checkpoint_path} lacks {missing[:3]}; give another --out")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step = int(ckpt["step"])

    def compute(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        images, masks = batch
        images = (images.to(self.device) - self.mean) / self.std
        masks = masks.to(self.device)
        loss = F.cross_entropy(self.probe(images), masks, ignore_index=IGNORE_INDEX, reduction="sum")
        loss = loss / (masks != IGNORE_INDEX).sum().clamp_min(1)
        return loss, {"ce": loss}, images.shape[0]

    def checkpoint(self, final: bool) -> None:
        check_finite_state(self.head_state(), self.step, self.checkpoint_path)
        atomic_save(self.state(), self.checkpoint_path)

    def run(self) -> dict[str, Any]:
        """Train to `steps` (from the resumed step), save the head, evaluate; returns evaluate's metrics dict."""
        cfg, out = self.cfg, self.out
        with self.lock:
            self.write_config(yaml.safe_dump(asdict(cfg), sort_keys=False))
            write_labeled_patches(out, cfg.dataset, self.dataset, self.subset, cfg.patch, cfg.label_fraction,
                                  cfg.subset_seed, getattr(self.dataset, "bands", None))
            batches = EpochBatches(len(self.subset), cfg.batch_size, cfg.seed)
            loader = DataLoader(LabeledBatches(self.dataset, self.subset, batches, cfg.patch, cfg.seed, self.step,
                                               cfg.steps), batch_size=None)
            self.probe.train()
            self.logged_loop(loader, f"probe {cfg.encoder}")
            plot_losses(out / "log.jsonl", out / "loss.png", keys=("ce",))
            with atomic_output(out / "probe.safetensors") as tmp:  # the user's file mode, never a torn file
                save_file(self.head_state(), str(tmp))
            info = SegmentationModelInfo(
                classes=list(self.dataset.classes), mean=list(self.mean_std[0]), std=list(self.mean_std[1]),
                palette=[list(c) for c in self.dataset.palette] or None, bands=getattr(self.dataset, "bands", None),
                value_max=cfg.value_max,
                provenance={"dataset": cfg.dataset, "encoder": cfg.encoder,
                            "decoder": f"linear probe {'+'.join(cfg.levels)}", "label_fraction": cfg.label_fraction,
                            "labeled_patches": len(self.subset), "steps": cfg.steps, "model_dir": str(out)})
            return evaluate_model(self.probe, info, cfg.dataset, cfg.data_root, out, split=self.split,
                                  window=cfg.window, device=cfg.device, previews=2)


def run_probe(cfg: ProbeConfig) -> dict[str, Any]:
    """Train the probe head on the labeled subset and evaluate whole tiles; returns evaluate's metrics dict. Resumes
    the probe in `cfg.out` where it has a checkpoint, else starts it there (as the study's cells run)."""
    return resume_or_start(Prober, cfg).run()
