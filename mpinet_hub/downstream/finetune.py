"""Fine-tuning an SMP decoder + encoder on a fixed, seeded fraction of the labeled training patches.

The labeled subset depends only on (data set, bands, patch size, fraction, subset seed), never on the
encoder, and is written to `RUN/labeled_patches.json`, so every encoder of a comparison sees the same
patches. Patches are ordered by one seeded permutation and a fraction takes its prefix, so the 1% subset
lies inside the 5% one. Protocol defaults are modelled on GLCNet's downstream protocol: Adam lr 1e-4, batch 16, 256 px,
cross-entropy with the ignore index, DeepLabV3+ (output stride 16).

Run folder: config.yaml, labeled_patches.json, log.jsonl, loss.png, checkpoints/last.pt (atomic,
weights-only loadable, resumable) and model/ (SMP `save_pretrained` + mpinet.json), which
`smp.from_pretrained(RUN/"model")` reloads offline.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data import BANDS_HELP, DATA_ROOT_HELP, DATASETS, IGNORE_INDEX, VALUE_MAX_HELP, open_dataset
from ..data.labeled_subset import labeled_subset, write_labeled_patches
from ..models import MPINET_ARCHS
from ..pretrain.config import resolve_config
from ..settings import SettingsError, coerce_settings, read_yaml, setting
from ..training import (
    PRECISIONS,
    EpochBatches,
    LabeledBatches,
    StepLoop,
    plot_losses,
    register_kind,
)
from .model import (
    DECODERS,
    ENCODER_HELP,
    NORMALISATION_HELP,
    SegmentationModelInfo,
    build_segmentation_model,
    labeled_train_split_for,
    load_encoder,
    save_segmentation_model,
)

__all__ = ["FINETUNE_FORMAT", "FinetuneConfig", "Finetuner"]

FINETUNE_FORMAT = "mpinet-hub/finetune/1"


@dataclass
class FinetuneConfig:
    dataset: str = setting(choices=DATASETS, help="a named data set, or `folder` for your own labeled folders")
    data_root: str = setting(may_change="resume", help=DATA_ROOT_HELP)
    encoder: str = setting("random", help=ENCODER_HELP)
    decoder: str = setting("deeplabv3plus", choices=DECODERS, help="SMP decoder")
    label_fraction: float = setting(0.01, help="fraction of the labeled training patches to train on (0.01 is 1%%; at "
                                    "least one patch; the share used is printed and carded)")
    out: str = setting("runs/finetune", may_change="how", help="run folder")
    arch: str = setting("mpinet_resnet18", choices=MPINET_ARCHS, help="architecture of random/imagenet encoders")
    bands: str | None = setting(None, help=BANDS_HELP)
    patch: int = setting(256, help="side of the labeled patches cut from the training tiles (the subset's unit)")
    crop: int = setting(256, help="side of the random training crop of a patch")
    batch_size: int = setting(16, help="per process")
    steps: int = setting(1000, may_change="resume", help="optimiser steps")
    epochs: float | None = setting(None, may_change="resume", help="passes over the labeled subset (overrides "
                                   "--steps)")
    lr: float = setting(1e-4, help="Adam learning rate")
    weight_decay: float = setting(0.0, help="Adam weight decay")
    seed: int = setting(0, help="training seed")
    subset_seed: int = setting(0, help="seed of the labeled subset (keep it fixed across encoders)")
    workers: int = setting(0, may_change="how", help="data-loading processes")
    device: str = setting("auto", may_change="how", help="auto, cpu or cuda")
    precision: str = setting("32", choices=PRECISIONS, help="32: full precision, the same on every device; bf16 "
                             "or 16: autocast (16 with loss scaling); auto: bf16 on a GPU that supports it, else 32")
    save_every: int = setting(500, may_change="how", help="steps between checkpoints")
    log_every: int = setting(1, may_change="how", help="steps between log lines")
    mean: list[float] | None = setting(None, help=NORMALISATION_HELP)
    std: list[float] | None = setting(None, help=NORMALISATION_HELP)
    value_max: float | None = setting(None, help=VALUE_MAX_HELP)

    @classmethod
    def from_sources(cls, path: str | Path | None = None, **overrides: Any) -> FinetuneConfig:
        """YAML file values, then non-None overrides (the command line)."""
        values = coerce_settings(cls, read_yaml(resolve_config(path)) if path else {}, str(path))
        values.update(coerce_settings(cls, {k: v for k, v in overrides.items() if v is not None}, "options"))
        for required in ("dataset", "data_root"):
            if not values.get(required):
                raise SettingsError(f"--{required.replace('_', '-')} is required")
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.decoder not in DECODERS:
            raise SettingsError(f"unknown decoder {self.decoder!r}; choose one of {', '.join(DECODERS)}")
        if not 0 < self.label_fraction <= 1:
            raise SettingsError(f"--label-fraction {self.label_fraction}: give a fraction in (0, 1], e.g. 0.01 for 1%")
        if self.crop > self.patch:
            raise SettingsError(f"--crop {self.crop} is larger than --patch {self.patch} (a random crop of each "
                                f"labeled patch is trained on); pass --crop {self.patch} or less")
        if self.batch_size < 2:
            raise SettingsError("--batch-size must be at least 2 (BatchNorm in the decoder needs two samples)")
        if self.arch not in MPINET_ARCHS:
            raise SettingsError(f"unknown --arch {self.arch!r}; choose one of {', '.join(MPINET_ARCHS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@register_kind("finetune", command="mpinet_hub.downstream.cli",
               description="Fine-tune an SMP decoder + encoder on a seeded fraction of the labels")
class Finetuner(StepLoop):
    """Builds the SMP model around the encoder SPEC and trains it on the labeled subset; resumable."""

    cfg: FinetuneConfig
    kind, checkpoint_format = "fine-tuning", FINETUNE_FORMAT

    def _build(self, resume: bool) -> None:
        cfg = self.cfg
        self.dataset, encoder, cfg.value_max = labeled_train_split_for(
            lambda value_max: open_dataset(cfg.dataset, cfg.data_root, "train", bands=cfg.bands, patch_size=cfg.patch,
                                           value_max=value_max), cfg.value_max,
            lambda bands: load_encoder(cfg.encoder, default_arch=cfg.arch, in_chans=bands), cfg.dataset)
        self.subset = labeled_subset(self.dataset, cfg.label_fraction, cfg.subset_seed)
        if cfg.epochs:  # --batch-size is per process
            cfg.steps = max(1, math.ceil(cfg.epochs * math.ceil(len(self.subset) / (cfg.batch_size * self.world))))
        self.use_normalisation(cfg.mean, cfg.std, self.dataset.num_bands, default=(encoder.mean, encoder.std))
        torch.manual_seed(cfg.seed)  # the decoder's initialisation
        self.model = build_segmentation_model(encoder, cfg.decoder, self.dataset.num_classes)
        if self.world > 1 and self.device.type == "cuda":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model = self.model.to(self.device)
        self.runner = self.wrap_ddp(self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.use_precision(cfg.precision)
        self.batches = EpochBatches(len(self.subset), cfg.batch_size, cfg.seed, self.rank, self.world)
        self.total_steps, self.save_every, self.log_every = cfg.steps, cfg.save_every, cfg.log_every
        self.info = SegmentationModelInfo(
            classes=list(self.dataset.classes), mean=self.mean_std[0], std=self.mean_std[1],
            palette=[list(c) for c in self.dataset.palette] or None, bands=getattr(self.dataset, "bands", "RGB"),
            ignore_index=self.dataset.ignore_index, value_max=cfg.value_max,
            provenance={"dataset": cfg.dataset, "encoder": cfg.encoder, "decoder": cfg.decoder,
                        "label_fraction": cfg.label_fraction, "labeled_patches": len(self.subset),
                        "total_patches": len(self.dataset), "labeled_fraction": len(self.subset) / len(self.dataset),
                        "steps": cfg.steps, "run": str(self.out)},
        )
        if resume:
            self._resume()

    # --- run folder
    def write_subset(self) -> Path:
        return write_labeled_patches(self.out, self.cfg.dataset, self.dataset, self.subset, self.cfg.patch,
                                     self.cfg.label_fraction, self.cfg.subset_seed, self.info.bands)

    def state(self) -> dict[str, Any]:
        return self.training_state() | {"model": self.model.state_dict()}

    def _resume(self) -> None:
        self.model.load_state_dict(self.resume_checkpoint()["model"])

    # --- the run (training.StepLoop.run: to `cfg.steps` from the resumed step, then RUN/model, whose path it
    # returns; under torchrun every process trains on its shard of each step's batches, only rank 0 writes)
    def make_loader(self) -> DataLoader:
        cfg = self.cfg
        if self.is_main:
            self.write_subset()
        self.model.train()
        return DataLoader(LabeledBatches(self.dataset, self.subset, self.batches, cfg.crop,
                                         cfg.seed * self.world + self.rank, self.step, cfg.steps),
                          batch_size=None, num_workers=cfg.workers, pin_memory=self.device.type == "cuda")

    def label(self) -> str:
        return f"finetune {Path(self.cfg.encoder).name}"

    def finish(self, last: dict[str, float]) -> Path:
        self.model.eval()
        model_dir = self.out / "model"
        if self.is_main:
            if not self.checkpoint_path.is_file():
                self.save_checkpoint()
            save_segmentation_model(self.model, model_dir, self.info)
        if self.world > 1:
            dist.barrier()  # the model folder exists for every rank once run() returns
        return model_dir

    # --- one step (training.StepLoop runs the loop)
    def compute(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        images, masks = batch
        images = self.normalise(images.to(self.device, non_blocking=True))
        masks = masks.to(self.device, non_blocking=True)
        # dropout draws, so a resumed run matches the uninterrupted one
        torch.manual_seed(self.cfg.seed * 999_983 + self.step * self.world + self.rank)
        with self.autocast():
            logits = self.runner(images)
        # Mean over labeled pixels; a batch of ignore-only pixels gives 0, not NaN.
        loss = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX, reduction="sum")
        loss = loss / (masks != IGNORE_INDEX).sum().clamp_min(1)
        return loss, {"ce": loss}, images.shape[0]

    def checkpoint(self, final: bool) -> None:
        self.save_checkpoint()
        if self.is_main:
            plot_losses(self.out / "log.jsonl", self.out / "loss.png", keys=("ce",))
