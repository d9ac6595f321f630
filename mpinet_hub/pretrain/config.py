"""Pretraining configuration: the settings every method reads and each method's own (declared beside the method),
method presets (the ablation ladder), YAML in, flags over YAML."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..data import BANDS_HELP, DATASETS, VALUE_MAX_HELP
from ..models import MPINET_ARCHS
from ..settings import SettingsError, coerce_settings, read_yaml, setting
from ..training import PRECISIONS
from .densecl import DenseCLSettings
from .method import MPINetSettings
from .registry import METHODS, method_class

__all__ = ["ABLATION_LADDER", "METHODS", "PretrainConfig", "SharedSettings", "packaged_configs",
           "refuse_preset_changes", "resolve_config"]

# The baselines from the same machinery (presets registered in method.py), as a ladder that changes one factor
# per rung:
#   mocov2 -(+ dense contrast on C5)-> pixcontrast -(C5 -> C4)-> pixcontrast-c4 -(C4 -> C2+C3+C4 fusion)->
#   mpinet-noffl -(+ FFL)-> mpinet
ABLATION_LADDER = ("mocov2", "pixcontrast", "pixcontrast-c4", "mpinet-noffl", "mpinet")


FINETUNE_PREFIX = "finetune_"  # fine-tuning recipes are named finetune_DECODER_DATASET; the others pretrain


def packaged_configs(kind: str | None = None) -> list[str]:
    """Names of the recipes installed with the package (`--config NAME`): all, or those of `kind` ("pretrain" or
    "finetune")."""
    names = sorted(p.name[: -len(".yaml")] for p in resources.files("mpinet_hub.configs").iterdir()
                   if p.name.endswith(".yaml"))
    if kind is None:
        return names
    return [n for n in names if n.startswith(FINETUNE_PREFIX) == (kind == "finetune")]


def resolve_config(name_or_path: str | Path) -> Path:
    """A YAML path, or the name of a packaged recipe (with or without .yaml), e.g. mpinet_resnet50_potsdam."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    if stem in packaged_configs():
        with resources.as_file(resources.files("mpinet_hub.configs") / f"{stem}.yaml") as packaged:
            return Path(packaged)
    raise FileNotFoundError(f"--config {name_or_path}: no such file and no packaged recipe of that name; "
                            f"packaged: {', '.join(packaged_configs())}")


def refuse_preset_changes(method: str, values: dict[str, Any], source: str) -> None:
    """A recipe may not change what a method is: refuse `values` (from `source`) that set a key of `method`'s preset
    to another value, naming them. (A recipe written for mpinet once turned mocov2-original's fixed 0.999 momentum
    into the cosine schedule, and a study's recipe with w_pix turned mocov2 into a pixel method, silently.)"""
    preset = METHODS[method]
    clash = sorted(k for k in preset if k in values and values[k] != preset[k])
    if clash:
        raise SettingsError(
            f"{source}: sets {', '.join(f'{k} {values[k]!r}' for k in clash)}, which the method {method} fixes at "
            f"{', '.join(f'{preset[k]!r}' for k in clash)}: a recipe cannot change what a method is. Drop the key "
            "from the recipe, or give it as a flag (in a study: a variant METHOD:KEY=VALUE)")


@dataclass
class SharedSettings:
    """The settings every method reads: data, views, the instance term and queue, optimisation, the run."""

    # data
    dataset: str = setting("folder", choices=DATASETS, help="a data set's training images (labels unused), or "
                           "`folder` for your own rasters")
    data_root: list[str] = setting([], may_change="resume", help="the data set's root (its train images are read), "
                                   "then any more unlabeled imagery: files, folders, globs (with --dataset folder, any "
                                   "mix of labeled folders and imagery); an image of a labeled root's val or test "
                                   "split is refused")
    bands: str = setting("RGB", help=BANDS_HELP)
    patch: int = setting(256, help="side of the windows read from the images")
    crop: int = setting(256, help="side of each view")
    mean: list[float] | None = setting(None, help="per-band normalisation (default: the tag's; ImageNet for RGB)")
    std: list[float] | None = setting(None, help="per-band normalisation (default: the tag's; ImageNet for RGB)")
    value_max: float | None = setting(None, help=VALUE_MAX_HELP)
    windows_per_file: int = setting(1, help="windows of a batch drawn from one file in a row; a PNG/JPEG is decoded "
                                    "whole for each file drawn, so 4-8 multiply the loader's speed on PNG data you "
                                    "have not `mpinet data prepare`d (docs/benchmarks.md)")
    # method
    method: str = setting("mpinet", choices=METHODS, help="mpinet or a baseline from the same machinery")
    arch: str = setting("mpinet_resnet50", choices=MPINET_ARCHS, help="the encoder")
    w_ins: float = setting(1.0, help="weight of the instance (MoCo) loss")
    queue_size: int = setting(8192, help="instance negatives K")
    t_ins: float = setting(0.2, help="instance InfoNCE temperature")
    momentum_schedule: str = setting("cosine", choices=("cosine", "fixed"),
                                     help="EMA momentum of the target encoder: cosine (m0 -> 1) or fixed (MoCo v2)")
    momentum: float = setting(0.99, help="EMA momentum (the cosine schedule's start)")
    min_overlap: float = setting(0.1, help="least share of a view the other view must cover")
    crop_scale: list[float] = setting([0.2, 1.0], help="area range of the random resized crops")
    photometric: bool = setting(True, help="photometric jitter of the views")
    keep_colour: bool = setting(True, help="RGB views get brightness and contrast jitter only (what other band "
                                "sets get): no saturation/hue jitter and no grayscale, so the encoder may use colour; "
                                "--no-keep-colour gives MoCo v2's colour jitter and grayscale")
    # optimisation
    batch_size: int = setting(256, help="per process")
    lr: float = setting(0.03, help="learning rate per 256 images (scaled by the global batch)")
    weight_decay: float = setting(1e-4, help="SGD weight decay")
    sgd_momentum: float = setting(0.9, help="SGD momentum")
    warmup_epochs: float = setting(10.0, help="linear warmup of the learning rate")
    epochs: float | None = setting(200.0, may_change="resume", help="passes over the windows the images hold")
    steps: int | None = setting(None, may_change="resume", help="optimiser steps (overrides --epochs)")
    precision: str = setting("32", choices=PRECISIONS, help="32: full precision, the same on every device; bf16 "
                             "or 16: autocast (16 with loss scaling); auto: bf16 on a GPU that supports it, else 32")
    compile: bool = setting(False, may_change="how", help="torch.compile the backbone")
    channels_last: bool = setting(True, help="channels-last memory format")
    shuffle_bn: bool = setting(True, help="MoCo's shuffling BN: split BN statistics, target batch shuffled")
    bn_splits: int = setting(8, help="shuffle-bn: BN splits per process, at most ...")
    bn_split_samples: int = setting(32, help="... and fewer where that keeps this many samples a split")
    sync_bn: bool = setting(True, help="SyncBN under DDP on CUDA, only without shuffle-bn")
    # run
    out: str = setting("runs/pretrain", may_change="how", help="run folder (config.yaml, log.jsonl, loss.png, "
                       "checkpoints/)")
    save_every: int = setting(1000, may_change="how", help="steps between checkpoints")
    keep_last: int | None = setting(5, may_change="how", help="keep only the newest N periodic checkpoints "
                                    "(step_*.pt); last.pt is always kept")
    log_every: int = setting(1, may_change="how", help="steps between log lines")
    workers: int = setting(4, may_change="how", help="data-loading processes")
    seed: int = setting(0, help="seed of the weights, views and batches")
    device: str = setting("auto", may_change="how", help="auto (a GPU when there is one, else the CPU), cpu or cuda")


@dataclass
class PretrainConfig(DenseCLSettings, MPINetSettings, SharedSettings):
    """A pretraining run's settings: those every method reads, then each method's own (declared beside the
    method: `MPINetSettings`, `DenseCLSettings`), one flat set of flags and one config.yaml."""

    @classmethod
    def from_sources(cls, yaml_path: str | Path | None = None, *, saved: bool = False,
                     **overrides: Any) -> PretrainConfig:
        """Defaults < method preset < YAML file < explicit overrides (None means 'not given'). A method chosen
        over a recipe written for another method keeps every value its preset sets: such a recipe that sets one
        otherwise is refused, naming the key (`refuse_preset_changes`). An override the method never reads is
        said in a warning, unless `saved` says the overrides are a run's recorded settings, not a user's."""
        values: dict[str, Any] = {}
        if yaml_path:
            if Path(str(yaml_path)).name.removesuffix(".yaml") in packaged_configs("finetune"):
                raise SettingsError(f"--config {yaml_path}: a fine-tuning recipe; give it to `mpinet finetune "
                                    f"--config` (pretraining recipes: {', '.join(packaged_configs('pretrain'))})")
            path = resolve_config(yaml_path)
            values.update(coerce_settings(cls, read_yaml(path), str(yaml_path)))
        overrides = coerce_settings(cls, {k: v for k, v in overrides.items() if v is not None}, "options")
        method = overrides.get("method", values.get("method", cls.method))
        if method not in METHODS:
            source = "options" if "method" in overrides else str(yaml_path)
            raise SettingsError(f"{source}: unknown method {method!r}; choose one of {', '.join(METHODS)}")
        preset = METHODS[method]
        if "method" in values and values["method"] != method:  # another method's recipe under this method
            refuse_preset_changes(method, {k: v for k, v in values.items() if k not in overrides}, str(yaml_path))
        cfg = cls(**{**preset, **values, **overrides})
        cfg.validate()
        unread = sorted(set(overrides) & cfg.inert_settings())
        if unread and not saved:  # e.g. DenseCL's weight given as w_pix, MPINet's before w_dense was DenseCL's own
            effect = "it has" if len(unread) == 1 else "they have"
            warnings.warn(f"{method} never reads {', '.join(unread)}, so {effect} no effect on this run (what the "
                          f"method sets: {', '.join(f'{k} {v}' for k, v in preset.items())})", stacklevel=2)
        return cfg

    def validate(self) -> None:
        """Refuse settings that would fail later (or silently never save), naming the setting."""
        at_least = {"batch_size": 2, "save_every": 1, "log_every": 1, "queue_size": 1, "patch": 8, "crop": 8,
                    "dense_warmup_steps": 0,
                    "bn_splits": 1, "bn_split_samples": 1, "pixel_grid": 1, "ffl_grid": 1, "windows_per_file": 1}
        for key, low in at_least.items():
            if getattr(self, key) < low:
                raise SettingsError(f"{key.replace('_', '-')} {getattr(self, key)}: must be at least {low}")
        for key in ("steps", "keep_last"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise SettingsError(f"{key.replace('_', '-')} {getattr(self, key)}: must be at least 1")
        if self.ffl_head_loss not in ("raw", "log"):
            raise SettingsError(f"ffl_head_loss {self.ffl_head_loss!r}: raw or log")

    def inert_settings(self) -> set[str]:
        """Fields with no effect on this run, as its method says (`MomentumMethod.inert_settings`): e.g. the FFL's
        for MoCo v2, so a changed FFL default does not make a finished MoCo v2 cell a different run."""
        return method_class(self.method).inert_settings(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
