"""The pretraining loop: single process or DDP under torchrun, resumable, atomic checkpoints, NaN stop.

Randomness is derived from (seed, step): view geometry and photometric augmentation reseed at every
step, and the data order is a fixed permutation per epoch, so a resumed run reproduces the
uninterrupted one on CPU.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .. import training
from ..checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from ..data import DATASETS, DataError, UnlabeledImages, image_files, labeled_splits, pretraining_images
from ..data.unlabeled import few_windows
from ..models import MPINET_TAGS, RGB_MEAN, RGB_STD
from ..settings import SettingsError, changed_settings
from ..training import (
    EpochBatches,
    NonFiniteLossError,
    StepBatches,
    StepLoop,
    last_good_checkpoint_hint,
    plot_losses,
    prune_checkpoints,
    register_kind,
)
from .config import PretrainConfig
from .plan import check_step_fits
from .registry import build_method
from .views import PhotometricAugment, make_two_views

__all__ = ["NonFiniteLossError", "Trainer", "build_pretraining_dataset", "pretrain_or_reuse", "pretraining_paths"]


def build_pretraining_dataset(cfg: PretrainConfig) -> UnlabeledImages:
    """The windows pretraining reads: a labeled data set's train images (never its labels), and from the roots after
    the first (any root of `folder` without classes.yaml) more unlabeled imagery. No image of a labeled root's
    other splits may be among them (DataError naming it): pretraining must not see the ground that is scored."""
    if not cfg.data_root:
        raise ValueError("no --data-root given")
    return UnlabeledImages(pretraining_paths(cfg), patch_size=cfg.patch, seed=cfg.seed, keep_uint8=True,
                           value_max=cfg.value_max, windows_per_file=cfg.windows_per_file)


def pretraining_paths(cfg: PretrainConfig) -> list[str | Path]:
    """The files, folders and globs `build_pretraining_dataset` reads, checked as its docstring says."""
    if DATASETS[cfg.dataset].own_imagery:
        labeled = [r for r in cfg.data_root if (Path(r) / "classes.yaml").is_file()]
        paths = [Path(r) / "train" / "images" if r in labeled else r for r in cfg.data_root]
    else:
        labeled = cfg.data_root[:1]
        paths = [*pretraining_images(cfg.dataset, labeled[0], bands=cfg.bands), *cfg.data_root[1:]]
    if len(cfg.data_root) == 1:  # one root: its own train split, nothing to check
        return paths
    files = image_files(paths)  # expanded once: UnlabeledImages takes the files as they are
    read = {f.resolve() for f in files}
    for root in labeled:
        for split in (s for s in labeled_splits(cfg.dataset, root) if s != "train"):
            for image in pretraining_images(cfg.dataset, root, bands=cfg.bands, split=split):
                if image.resolve() in read:
                    raise DataError(f"{image}: an image of {root}'s {split} split is in the pretraining imagery; "
                                    "pretraining must not see the ground that is scored. Leave it out of the extra "
                                    "roots (give the labeled folder itself: its train images are read).")
    return files


class PretrainBatches(StepBatches):
    """Each step's stacked images (so workers load whole batches), uint8 where the files are 8-bit."""

    def __init__(self, images: UnlabeledImages, batches: EpochBatches, first: int, last: int) -> None:
        super().__init__(first, last)
        self.images, self.batches = images, batches

    def batch(self, step: int) -> tuple[torch.Tensor, list[tuple[str, tuple[int, int, int, int]]]]:
        """(images, [(file, (row, col, height, width)), ...]): where each image came from, for error messages."""
        self.images.set_epoch(step // self.batches.per_epoch)
        items = self.images.batch(self.batches.indices(step))
        images = [it["image"] for it in items]
        if len({x.dtype for x in images}) > 1:  # 8-bit and other files mixed: all as float in [0, 1]
            images = [x.float() / 255 if x.dtype == torch.uint8 else x for x in images]
        return torch.stack(images), [(it["meta"]["file"], it["meta"]["window"]) for it in items]


_SAID: set[str] = set()  # warnings about the data already printed by this process


@register_kind("pretrain", command="mpinet_hub.pretrain.cli",
               description="Self-supervised pretraining (mpinet and its ablation ladder, mocov2, densecl)")
class Trainer(StepLoop):
    """Pretraining of `cfg.method` (a PretrainConfig) in cfg.out."""

    cfg: PretrainConfig
    kind, checkpoint_format = "pretraining", CHECKPOINT_FORMAT

    def _build(self, resume: bool) -> None:
        cfg = self.cfg
        self.images = build_pretraining_dataset(cfg)
        self.in_chans = self.images.num_bands
        check_step_fits(cfg, self.in_chans, self.device)
        self.use_normalisation(cfg.mean, cfg.std, self.in_chans, default=(RGB_MEAN, RGB_STD))
        self.batches = EpochBatches(len(self.images), cfg.batch_size, cfg.seed, self.rank, self.world)
        self.total_steps = cfg.steps or max(1, math.ceil((cfg.epochs or 1) * self.batches.per_epoch))
        self.warmup_steps = min(int(cfg.warmup_epochs * self.batches.per_epoch), self.total_steps // 2)
        torch.manual_seed(cfg.seed)
        self.model = build_method(cfg, self.in_chans).to(self.device)
        if self.world > 1 and cfg.sync_bn and not cfg.shuffle_bn and self.device.type == "cuda":
            self.model.online = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model.online)
        if cfg.channels_last:  # faster on the CPU too: 0.87x the NCHW step time for mpinet (docs/benchmarks.md)
            self.model = self.model.to(memory_format=torch.channels_last)
        self.runner = self.wrap_ddp(self.model.online)
        mean, std = self.mean_std
        self.norm = {"mean": mean, "std": std, "bands": self._band_names(), "value_max": cfg.value_max}
        self.augment = PhotometricAugment(self.norm["bands"], cfg.crop, cfg.photometric, cfg.keep_colour)
        self.augment = self.augment.to(self.device)
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.use_precision(cfg.precision)
        self.save_every, self.log_every = cfg.save_every, cfg.log_every
        if resume:
            self._resume()
        if cfg.compile:
            self.model.online.backbone.forward = torch.compile(self.model.online.backbone.forward)

    # --- setup
    def _band_names(self) -> list[str]:
        named = DATASETS[self.cfg.dataset].product_band_names(self.cfg.bands)
        if named is not None:
            return list(named)
        if self.in_chans == 3:
            return list(MPINET_TAGS["potsdam"]["band_names"])
        return [f"band{i + 1}" for i in range(self.in_chans)]

    def config_note(self) -> str:
        """config.yaml's first line where `bands` (Potsdam's band product) did not choose the bands read."""
        if DATASETS[self.cfg.dataset].band_products:
            return ""
        return (f"# bands: not used for {self.cfg.dataset} data; this run read {self.in_chans} band(s) of its files, "
                f"treated as {', '.join(self.norm['bands'])} (checkpoint: norm.bands)\n")

    def _optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.model.online.named_parameters():
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        lr = self.cfg.lr * self.cfg.batch_size * self.world / 256
        return torch.optim.SGD([{"params": decay, "weight_decay": self.cfg.weight_decay},
                                {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=self.cfg.sgd_momentum)

    def _lr_factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # --- checkpoints
    def state(self) -> dict[str, Any]:
        state = self.training_state()  # views and augmentations reseed from (seed, step); the RNG for the rest
        calibrated = {f"{k}_calibrated": v for k, v in self.model.logged_scalars().items()}
        return state | {
            "arch": self.cfg.arch, "method": self.cfg.method, "inert_settings": sorted(self.cfg.inert_settings()),
            "config": state["config"] | calibrated, "norm": self.norm,
            "model": self.model.online.state_dict(), "target": self.model.target.state_dict(),
            "buffers": {name: getattr(self.model, name) for name in self.model.checkpoint_buffers},
            "scheduler": self.scheduler.state_dict(),
        }

    def _resume(self) -> None:
        ckpt = self.resume_checkpoint()
        self.model.online.load_state_dict(ckpt["model"])
        self.model.target.load_state_dict(ckpt["target"])
        for k, v in ckpt["buffers"].items():
            getattr(self.model, k).copy_(v)
        self.scheduler.load_state_dict(ckpt["scheduler"])

    # --- loop
    def _views(self, images: torch.Tensor):
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step * (self.world + 1) + self.rank)
        torch.manual_seed(self.cfg.seed * 999_983 + self.step * (self.world + 1) + self.rank)  # kornia's draws
        views = make_two_views(images, self.cfg.crop, scale=tuple(self.cfg.crop_scale),
                               min_overlap=self.cfg.min_overlap, generator=gen)
        views.view1 = self.normalise(self.augment(views.view1))
        views.view2 = self.normalise(self.augment(views.view2))
        if self.cfg.channels_last:
            views.view1 = views.view1.contiguous(memory_format=torch.channels_last)
            views.view2 = views.view2.contiguous(memory_format=torch.channels_last)
        return views

    # --- the run (training.StepLoop.run: to the configured step count; returns the last step's terms)
    def make_loader(self) -> DataLoader:
        cfg = self.cfg
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(cfg.workers, cores)  # more loader processes than cores only compete with the step
        if workers < cfg.workers and self.is_main:
            print(f"--workers {cfg.workers}: {workers} used, one per core of this machine", file=sys.stderr)
        if self.is_main and (few := few_windows(self.images.distinct_windows(), self.images.window_overlap(),
                                                cfg.patch, cfg.batch_size)) and few not in _SAID:
            _SAID.add(few)  # once a process: a study's cells on the same images need not repeat it
            print(f"warning: {few}", file=sys.stderr)  # before the first step, when it still costs nothing
        return DataLoader(PretrainBatches(self.images, self.batches, self.step, self.total_steps),
                          batch_size=None, shuffle=False, num_workers=workers, persistent_workers=False,
                          pin_memory=self.device.type == "cuda")

    def label(self) -> str:
        return f"pretrain {self.cfg.method}"

    # --- one step (training.StepLoop runs the loop)
    def compute(self, batch: tuple[torch.Tensor, list]) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        images, sources = batch
        if not torch.isfinite(images).all():
            bad = [f"{f} window (row, col, h, w) {w}" for (f, w), x in zip(sources, images)
                   if not torch.isfinite(x).all()]
            raise NonFiniteLossError(f"step {self.step}: the input batch holds NaN/inf pixels, from "
                                     f"{'; '.join(bad[:5])}. Fix or mask those files (nodata as a number), then "
                                     "resume. " + last_good_checkpoint_hint(self.checkpoint_path))
        images = images.to(self.device, non_blocking=True)
        if images.dtype == torch.uint8:  # 8-bit windows cross the loader boundary as bytes
            images = images.float().div_(255)
        views = self._views(images)
        with self.autocast():
            terms = self.model(views, online=self.runner)
            loss = self.model.total_loss(terms)
        return loss, {**terms, "total": loss}, images.shape[0]

    def after_step(self) -> None:
        self.scheduler.step()
        self.momentum = self.model.momentum_at(self.step, self.total_steps)
        self.model.update_target(self.momentum)

    def log_fields(self) -> dict[str, float]:
        return {"lr": self.optimizer.param_groups[0]["lr"], "momentum": self.momentum,
                **self.model.logged_scalars()}

    def checkpoint(self, final: bool) -> None:
        cfg = self.cfg
        self.save_checkpoint()
        if not final:
            self.save_checkpoint(f"step_{self.step:07d}.pt")
            if self.is_main:
                prune_checkpoints(self.out / "checkpoints", cfg.keep_last)
        if self.is_main:
            weights = self.model.term_weights(cfg)
            chance = self.model.instance_chance(cfg)
            plot_losses(self.out / "log.jsonl", self.out / "loss.png", keys=("total", *weights), weights=weights,
                        title=f"{cfg.method} {cfg.arch}, batch {cfg.batch_size} ({self.out.name})",
                        lines={} if chance is None else {
                            ("" if cfg.w_ins == 1 else f"{cfg.w_ins:g} x ") + f"ins at chance, ln(K+1) = {chance:.2f}":
                            cfg.w_ins * chance})


def pretrain_or_reuse(cfg: PretrainConfig) -> tuple[Path, float | None]:
    """Train `cfg` in cfg.out, resume it, or reuse it when finished; returns (run folder, seconds trained or None
    when reused). A finished or partial run made with other settings is refused, naming them, never reused under
    this command's name."""
    run = Path(cfg.out)
    last = run / "checkpoints" / "last.pt"
    if last.is_file():
        ckpt = load_checkpoint(last)
        changed = changed_settings(cfg, ckpt["config"], "reuse")
        if changed:
            raise SettingsError(f"{run} was pretrained with other settings ({', '.join(changed)}). Give another "
                                "--out, or the settings that folder was made with.")
        if ckpt["step"] >= (cfg.steps or 0):
            return run, None
    start = time.perf_counter()
    training.run("pretrain", cfg)
    return run, time.perf_counter() - start
