"""SMP segmentation models around our encoders, and their offline save/load.

An encoder SPEC is one of: a registered tag (`mpinet_resnet50.potsdam`), an export folder, a pretraining
run folder or its checkpoint file (RUN or RUN/checkpoints/last.pt), an
`hf-hub:ORG/NAME` or `local-dir:PATH` id, `random:ARCH`/`random` or `imagenet:ARCH`/`imagenet`.
The SMP model is always built on the plain timm architecture (`tu-resnet50`) and the encoder weights are
copied in, so the saved model's config names no weights to download: `smp.from_pretrained(path)`
works offline (SMP #957).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import timm
import torch
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError
from segmentation_models_pytorch.base import SegmentationModel

from ..atomic import atomic_folder, write_text_atomic
from ..hub.card import MODEL_INFO_FILE, segmentation_card
from ..integrity import file_sha256, verify_weights_file
from ..models import MPINET_ARCHS, RGB_MEAN, RGB_STD

__all__ = [
    "DECODERS",
    "ENCODER_HELP",
    "NORMALISATION_HELP",
    "MODEL_INFO_FILE",
    "write_segmentation_card",
    "EncoderSpec",
    "SegmentationModelInfo",
    "build_segmentation_model",
    "labeled_train_split_for",
    "load_encoder",
    "load_segmentation_model",
    "save_segmentation_model",
]


ENCODER_HELP = ("a registered tag (mpinet_resnet50.potsdam), an export folder, a pretraining run folder or its "
                "checkpoints/last.pt, hf-hub:ORG/NAME, local-dir:PATH, `random` or `imagenet` (optionally "
                "random:ARCH / imagenet:ARCH)")
NORMALISATION_HELP = "per-band normalisation (default: the encoder's)"
# Every SMP architecture, by the name `smp.create_model` takes (so a new SMP release brings its new decoders).
DECODERS = tuple(sorted(name.lower() for name, obj in vars(smp).items() if isinstance(obj, type)
                        and issubclass(obj, SegmentationModel) and obj is not SegmentationModel))


@dataclass
class EncoderSpec:
    """What an encoder SPEC resolved to."""

    spec: str
    base_arch: str
    state_dict: dict[str, torch.Tensor] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int
    value_max: float | None = None  # the full-scale pixel value the weights were trained with (None: the file type's)
    band_names: tuple[str, ...] | None = None  # the bands the weights were trained on, where recorded


def load_encoder(spec: str, default_arch: str = "mpinet_resnet18", in_chans: int = 3) -> EncoderSpec:
    """Resolve SPEC to a plain timm architecture and its backbone weights (None for `random`).

    `in_chans` applies to `random` and `imagenet` (timm adapts the first conv); pretrained MPINet weights
    keep the bands they were trained on.
    """
    kind, _, rest = spec.partition(":")
    if kind in ("random", "imagenet") and ":" not in rest:
        arch = rest or default_arch
        base = MPINET_ARCHS[arch][0] if arch in MPINET_ARCHS else arch
        if kind == "random":
            cfg = timm.models.get_pretrained_cfg(base).to_dict()
            return EncoderSpec(spec, base, None, tuple(cfg["mean"]), tuple(cfg["std"]), in_chans)
        try:
            model = timm.create_model(base, pretrained=True, num_classes=0, in_chans=in_chans)
        except Exception as err:  # no network and not in the HF cache
            raise RuntimeError(f"encoder {spec}: timm's ImageNet weights for {base} could not be loaded ({err}); "
                               "they must be in the Hugging Face cache on an offline machine") from err
    elif (checkpoint := _training_checkpoint(spec)) is not None:
        return _encoder_from_checkpoint(spec, checkpoint)
    elif Path(spec).is_dir():
        verify_weights_file(Path(spec) / "model.safetensors")
        model = timm.create_model(f"local-dir:{Path(spec).resolve()}", pretrained=True)
    else:
        import mpinet_hub  # noqa: F401  (registers the tags)

        model = timm.create_model(spec, pretrained=True)
    cfg = model.pretrained_cfg
    base = MPINET_ARCHS.get(cfg.get("architecture"), (cfg.get("architecture"),))[0]
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    in_chans = model.conv1.in_channels
    recorded = _export_record(spec)
    band_names = recorded.get("band_names") or cfg.get("band_names")  # a tag's are in its timm config
    return EncoderSpec(spec, base, state, tuple(cfg["mean"]), tuple(cfg["std"]), in_chans, recorded.get("value_max"),
                       tuple(band_names) if band_names else None)


def _export_record(spec: str) -> dict[str, Any]:
    """What an export's config.json records beside timm's config (`mpinet`: value_max, band_names), for an export
    folder, `local-dir:PATH` or a `hf-hub:` repo in the local cache (timm fetched it; nothing is downloaded here).
    A training checkpoint's are read with its weights; a tag's band names are in its timm config."""
    if spec.startswith("hf-hub:"):
        repo, _, revision = spec.removeprefix("hf-hub:").partition("@")
        cached = try_to_load_from_cache(repo, "config.json", revision=revision or None)
        config = Path(cached) if isinstance(cached, str) else None
    else:
        config = Path(spec.removeprefix("local-dir:")) / "config.json"
    if config is None or not config.is_file():
        return {}
    return json.loads(config.read_text()).get("mpinet", {})


def labeled_train_split_for(open_train: Callable[[float | None], Any], value_max: float | None,
                            load: Callable[[int], EncoderSpec], dataset: str) -> tuple[Any, EncoderSpec, float | None]:
    """(labeled train split, encoder, value_max) of a run that trains on an encoder: `load(bands)` loads it for
    the split `open_train(value_max)` gives; without a value_max of the run's own, the scale the weights were
    trained at (the encoder's) is used and the split read again at it. An encoder of other bands is refused; one
    pretrained on another of the data set's band products (Potsdam's IRRG read as RGB: the same count) is warned
    of, with the flag that reads its bands (not refused: a cross-band fine-tuning may be meant)."""
    split = open_train(value_max)
    encoder = load(split.num_bands)
    if encoder.in_chans != split.num_bands:
        if split.band_products:
            read, fix = f"with --bands {split.bands}", "choose --bands to match the encoder, or pass an encoder"
        else:
            read, fix = "read with its files' own bands", "pass an encoder"
        raise ValueError(f"encoder {encoder.spec} takes {encoder.in_chans} band(s) but {dataset}, {read}, gives "
                         f"{split.num_bands}: {fix} pretrained on {split.num_bands}-band images (mpinet pretrain on "
                         "them gives one)")
    learned = [p for p in split.band_products if split.product_band_names(p) == encoder.band_names]
    if learned and split.band_names != encoder.band_names:
        print(f"warning: encoder {encoder.spec} was pretrained on bands {', '.join(encoder.band_names)}, but "
              f"{dataset} is read as {', '.join(split.band_names)} here: pass --bands {learned[0]} to read the bands "
              "it learned", file=sys.stderr)
    if value_max is None and encoder.value_max is not None:
        value_max = encoder.value_max
        split = open_train(value_max)
    if not split.has_labels:
        raise ValueError(f"{dataset} train split has no labels")
    return split, encoder, value_max


def _training_checkpoint(spec: str) -> Path | None:
    """A pretraining checkpoint named by SPEC: the file itself, or RUN/checkpoints/last.pt of a run folder."""
    path = Path(spec)
    if path.is_file() and path.suffix == ".pt":
        return path
    if path.is_dir() and (path / "checkpoints" / "last.pt").is_file() and not (path / "config.json").is_file():
        return path / "checkpoints" / "last.pt"
    return None


def _encoder_from_checkpoint(spec: str, path: Path) -> EncoderSpec:
    """The backbone of a pretraining checkpoint, without exporting it first (normalisation from the run)."""
    from ..hub import load_source_weights

    state, meta = load_source_weights(path)
    if meta.get("arch") not in MPINET_ARCHS:
        raise ValueError(f"{path}: not an mpinet pretraining checkpoint (arch {meta.get('arch')!r}); export the "
                         "weights or pass an export folder")
    norm = meta.get("norm") or {}
    mean, std = tuple(norm.get("mean") or RGB_MEAN), tuple(norm.get("std") or RGB_STD)
    return EncoderSpec(spec, MPINET_ARCHS[meta["arch"]][0], state, mean, std, len(mean), norm.get("value_max"),
                       tuple(norm["bands"]) if norm.get("bands") else None)


def build_segmentation_model(
    encoder: EncoderSpec, decoder: str, classes: int, **decoder_kwargs: Any
) -> torch.nn.Module:
    """An SMP model with `encoder`'s weights copied into its timm-universal encoder."""
    if decoder not in DECODERS:
        raise ValueError(f"Unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    model = smp.create_model(decoder, encoder_name=f"tu-{encoder.base_arch}", encoder_weights=None,
                             in_channels=encoder.in_chans, classes=classes, **decoder_kwargs)
    if encoder.state_dict is not None:
        result = model.encoder.model.load_state_dict(encoder.state_dict, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"Encoder {encoder.spec} does not fit tu-{encoder.base_arch}: missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
    return model


@dataclass
class SegmentationModelInfo:
    """What a fine-tuned model needs at inference (classes, value scale, normalisation, bands) and where it came
    from."""

    classes: list[str]
    mean: list[float]
    std: list[float]
    palette: list[list[int]] | None = None
    bands: str | None = None
    ignore_index: int = 255
    provenance: dict[str, Any] = field(default_factory=dict)  # dataset, encoder, decoder, label fraction, steps
    value_max: float | None = None  # the pixel value read as 1.0 (None: the dtype's maximum), as in training

    @property
    def in_chans(self) -> int:
        return len(self.mean)


def save_segmentation_model(
    model: torch.nn.Module, path: str | Path, info: SegmentationModelInfo | None = None, **card: Any
) -> Path:
    """`save_pretrained` (+ `mpinet.json`), with `encoder_weights` stored as null so reloading never downloads
    (SMP #957). Written to a staging folder and renamed into place, so `path` is never half-written."""
    path = Path(path)
    config = model.config  # SMP's constructor arguments, what from_pretrained rebuilds the model from
    config["encoder_weights"] = None
    encoder = str(config.get("encoder_name", ""))
    if encoder.startswith("tu-mpinet_"):  # same layers as timm's ResNet: reloadable without this package
        config["encoder_name"] = "tu-" + MPINET_ARCHS[encoder[3:].split(".")[0]][0]
    with atomic_folder(path) as staging:
        model.save_pretrained(str(staging), **card)
        if info is not None:
            (staging / MODEL_INFO_FILE).write_text(json.dumps(asdict(info), indent=2))
            write_segmentation_card(staging, info)
    return path


def write_segmentation_card(model_dir: Path, info: SegmentationModelInfo,
                            metrics: list[dict[str, Any]] | None = None) -> Path:
    """README.md of a fine-tuned model folder (replacing SMP's MIT / "More Information Needed" card)."""
    name = Path(str(info.provenance.get("run") or model_dir)).name
    card = segmentation_card(name, info.provenance, info.classes, metrics or [],
                             sha256=file_sha256(model_dir / "model.safetensors"))
    return write_text_atomic(model_dir / "README.md", card)


def load_segmentation_model(path: str | Path) -> tuple[torch.nn.Module, SegmentationModelInfo]:
    """An SMP model folder (or a fine-tuning run folder holding `model/`), offline, in eval mode, with its info."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
        path = path / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no SMP model here (config.json missing); pass the folder written by "
                                "`mpinet finetune` (RUN or RUN/model) or by SMP's save_pretrained")
    try:
        model = smp.from_pretrained(str(path)).eval()
    except SafetensorError as err:
        raise OSError(f"{path / 'model.safetensors'}: not a readable safetensors file ({err}); copy the model folder "
                      "again or re-run `mpinet finetune`") from err
    info_path = path / MODEL_INFO_FILE
    if info_path.is_file():
        info = SegmentationModelInfo(**json.loads(info_path.read_text()))
    else:  # a plain SMP folder: class ids as names, ImageNet normalisation for RGB
        in_chans = int(model.config.get("in_channels", 3))
        if in_chans != 3:
            raise ValueError(f"{path}: no {MODEL_INFO_FILE} telling the normalisation of its {in_chans} bands; "
                             "write one (see SegmentationModelInfo) or re-save the model with mpinet")
        info = SegmentationModelInfo([str(i) for i in range(int(model.config["classes"]))], list(RGB_MEAN),
                                     list(RGB_STD))
    info.provenance.setdefault("model_dir", str(path))
    return model, info
