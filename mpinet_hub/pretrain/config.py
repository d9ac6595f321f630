"""Pretraining configuration: one dataclass, method presets (the ablation ladder), YAML in, flags over YAML."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..settings import SettingsError, added_field, coerce_settings, read_yaml, run_field
from .registry import METHODS

__all__ = ["ABLATION_LADDER", "METHODS", "PretrainConfig", "packaged_configs", "resolve_config"]

# The baselines from the same machinery (presets registered in method.py), as a ladder that changes one factor
# per rung:
#   mocov2 -(+ dense contrast on C5)-> pixcontrast -(C5 -> C4)-> pixcontrast-c4 -(C4 -> C2+C3+C4 fusion)->
#   mpinet-noffl -(+ FFL)-> mpinet
ABLATION_LADDER = ("mocov2", "pixcontrast", "pixcontrast-c4", "mpinet-noffl", "mpinet")


def packaged_configs() -> list[str]:
    """Names of the recipes installed with the package (`--config NAME`)."""
    return sorted(p.name[: -len(".yaml")] for p in resources.files("mpinet_hub.configs").iterdir()
                  if p.name.endswith(".yaml"))


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


@dataclass
class PretrainConfig:
    # data
    dataset: str = "folder"  # potsdam | loveda | uavid | folder
    data_root: list[str] = run_field(default_factory=list, may_change="resume")
    bands: str = "RGB"
    patch: int = 256  # side of the windows read from the images
    crop: int = 256  # side of each view
    mean: list[float] | None = None  # per band; default: the tag's (ImageNet statistics for RGB)
    std: list[float] | None = None
    value_max: float | None = None  # pixel value read as 1.0 (e.g. 4095 for 12-bit data); default the dtype's max
    windows_per_file: int = 1  # windows of a batch drawn from one file in a row: for PNG/JPEG not `data prepare`d
    # method
    method: str = "mpinet"
    arch: str = "mpinet_resnet50"
    w_ins: float = 1.0
    w_pix: float = 1.0
    w_ffl: float | str = "auto"
    ffl_calibration_ratio: float = 0.5  # "auto": w_ffl * mean L_ffl = ratio * mean L_ins ...
    ffl_calibration_steps: int = 10  # ... over this many steps once the queue holds only real keys ...
    ffl_head_warmup: int = 50  # ... and the FFL heads have trained this many steps alone (detached from the backbone)
    # what the FFL heads train on during that warmup: "log", log L_ffl, the direction of L_ffl at a scale-free size;
    # "raw", L_ffl itself (~0.006), whose gradient barely moves them (docs/method.md, FFL weight). Runs made before
    # this setting existed trained on "raw".
    ffl_head_loss: str = added_field("log", was="raw")
    fusion_levels: list[str] = field(default_factory=lambda: ["C2", "C3", "C4"])
    queue_size: int = 8192
    t_ins: float = 0.2
    t_pix: float = 0.3
    pixel_grid: int = 14
    pixel_anchors: int | None = None  # anchor cells per image (None: all)
    pixel_negatives: str = "other-images"  # other-images | all-cells (see losses/pixel_info_nce.py)
    pixel_num_negatives: int | None = 4096  # shared negatives per step, memory linear in the batch; None: all
    ffl_grid: int = 7
    ffl_alpha: float = 1.0
    ffl_patch_factor: int = 1
    ffl_log_matrix: bool = False
    ffl_batch_matrix: bool = False
    momentum_schedule: str = "cosine"  # cosine (PixPro: m0 -> 1) | fixed (MoCo v2)
    momentum: float = 0.99
    min_overlap: float = 0.1
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    photometric: bool = True
    # RGB: brightness/contrast jitter only, no saturation/hue jitter, no grayscale (chosen on the val band of two
    # real sets; False gives MoCo v2's colour jitter)
    keep_colour: bool = True
    # optimisation
    batch_size: int = 256
    lr: float = 0.03  # per 256 images; scaled by the global batch
    weight_decay: float = 1e-4
    sgd_momentum: float = 0.9
    warmup_epochs: float = 10.0
    epochs: float | None = run_field(200.0, may_change="resume")
    steps: int | None = run_field(None, may_change="resume")  # overrides epochs
    precision: str = "32"  # auto | 32 | bf16 | 16 (auto: bf16 on a GPU that supports it, else 32)
    compile: bool = run_field(False, may_change="how")
    channels_last: bool = True
    shuffle_bn: bool = True  # MoCo's shuffling BN: split BN statistics, target batch shuffled (all methods)
    bn_splits: int = 8  # BN splits per process with shuffle_bn, at most ...
    bn_split_samples: int = 32  # ... and fewer where that keeps this many samples per split (MoCo: 32 per GPU)
    sync_bn: bool = True  # SyncBN under DDP on CUDA; only without shuffle_bn (global statistics would leak)
    # run
    out: str = run_field("runs/pretrain", may_change="how")
    save_every: int = run_field(1000, may_change="how")
    keep_last: int | None = run_field(5, may_change="how")  # periodic checkpoints kept, the newest; None: all
    log_every: int = run_field(1, may_change="how")
    workers: int = run_field(4, may_change="how")
    seed: int = 0
    device: str = run_field("auto", may_change="how")

    @classmethod
    def from_sources(cls, yaml_path: str | Path | None = None, **overrides: Any) -> PretrainConfig:
        """Defaults < method preset < YAML file < explicit overrides (None means 'not given')."""
        values: dict[str, Any] = {}
        if yaml_path:
            path = resolve_config(yaml_path)
            values.update(coerce_settings(cls, read_yaml(path), str(yaml_path)))
        overrides = coerce_settings(cls, {k: v for k, v in overrides.items() if v is not None}, "options")
        method = overrides.get("method", values.get("method", cls.method))
        if method not in METHODS:
            source = "options" if "method" in overrides else str(yaml_path)
            raise SettingsError(f"{source}: unknown method {method!r}; choose one of {', '.join(METHODS)}")
        cfg = cls(**{**METHODS[method], **values, **overrides})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Refuse settings that would fail later (or silently never save), naming the setting."""
        at_least = {"batch_size": 2, "save_every": 1, "log_every": 1, "queue_size": 1, "patch": 8, "crop": 8,
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
        """Fields with no effect on this run: the FFL's when its weight is 0, the dense branch's when w_pix is 0
        (so a changed FFL default does not make a finished MoCo v2 cell a different run)."""
        fields = {f.name for f in dataclasses.fields(self)}
        inert = set()
        if self.w_ffl == 0:
            inert |= {name for name in fields if name.startswith("ffl_")}
        if self.w_pix == 0:
            inert |= {name for name in fields if name.startswith("pixel_")} | {"t_pix", "fusion_levels"}
        return inert

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
