"""SMP segmentation models around our encoders, and their offline save/load.

An encoder SPEC is one of: a registered tag (`mpinet_resnet50.potsdam`), an export folder, an
`hf-hub:ORG/NAME` or `local-dir:PATH` id, `random:ARCH`/`random` or `imagenet:ARCH`/`imagenet`.
The SMP model is always built on the plain timm architecture (`tu-resnet50`) and the encoder weights are
copied in, so the saved model's config names no weights to download: `smp.from_pretrained(path)`
works offline (SMP #957).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import timm
import torch

from ..models import MPINET_ARCHS

__all__ = ["DECODERS", "EncoderSpec", "build_segmentation_model", "load_encoder", "save_segmentation_model"]

DECODERS = {
    "deeplabv3plus": smp.DeepLabV3Plus,
    "unet": smp.Unet,
    "fpn": smp.FPN,
    "upernet": smp.UPerNet,
    "pspnet": smp.PSPNet,
}


@dataclass
class EncoderSpec:
    """What an encoder SPEC resolved to."""

    spec: str
    base_arch: str
    state_dict: dict[str, torch.Tensor] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int


def load_encoder(spec: str, default_arch: str = "mpinet_resnet18") -> EncoderSpec:
    """Resolve SPEC to a plain timm architecture and its backbone weights (None for `random`)."""
    kind, _, rest = spec.partition(":")
    if kind in ("random", "imagenet") and ":" not in rest:
        arch = rest or default_arch
        base = MPINET_ARCHS[arch][0] if arch in MPINET_ARCHS else arch
        if kind == "random":
            cfg = timm.models.get_pretrained_cfg(base).to_dict()
            return EncoderSpec(spec, base, None, tuple(cfg["mean"]), tuple(cfg["std"]), 3)
        model = timm.create_model(base, pretrained=True, num_classes=0)  # timm's own weights, where cached
    elif Path(spec).is_dir():
        model = timm.create_model(f"local-dir:{Path(spec).resolve()}", pretrained=True)
    else:
        import mpinet_hub  # noqa: F401  (registers the tags)

        model = timm.create_model(spec, pretrained=True)
    cfg = model.pretrained_cfg
    base = MPINET_ARCHS.get(cfg.get("architecture"), (cfg.get("architecture"),))[0]
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    in_chans = model.conv1.in_channels
    return EncoderSpec(spec, base, state, tuple(cfg["mean"]), tuple(cfg["std"]), in_chans)


def build_segmentation_model(
    encoder: EncoderSpec, decoder: str, classes: int, **decoder_kwargs: Any
) -> torch.nn.Module:
    """An SMP model with `encoder`'s weights copied into its timm-universal encoder."""
    if decoder not in DECODERS:
        raise ValueError(f"Unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    model = DECODERS[decoder](
        encoder_name=f"tu-{encoder.base_arch}", encoder_weights=None, in_channels=encoder.in_chans,
        classes=classes, **decoder_kwargs,
    )
    if encoder.state_dict is not None:
        result = model.encoder.model.load_state_dict(encoder.state_dict, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"Encoder {encoder.spec} does not fit tu-{encoder.base_arch}: missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
    return model


def save_segmentation_model(model: torch.nn.Module, path: str | Path, **card: Any) -> Path:
    """`save_pretrained`, with `encoder_weights` stored as null so reloading never downloads (SMP #957)."""
    config = model._hub_mixin_config  # SMP keeps the constructor arguments here
    config["encoder_weights"] = None
    model.save_pretrained(str(path), **card)
    return Path(path)
