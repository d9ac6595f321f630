"""torch.hub entrypoints for mpinet-hub.

    torch.hub.load("mpinet-hub/mpinet-hub", "mpinet_resnet50", pretrained=True, tag="potsdam")
    torch.hub.load("/path/to/checkout", "mpinet_resnet18", pretrained=True, tag="loveda", source="local")
"""

import timm as _timm

import mpinet_hub as _mpinet_hub  # registers the architectures with timm

dependencies = ["torch", "timm", "huggingface_hub", "safetensors"]


def _create(arch, pretrained, tag, **kwargs):
    if tag not in _mpinet_hub.MPINET_TAGS:
        raise _mpinet_hub.UnknownTagError(
            f"Unknown tag {tag!r} for {arch}; tags that exist: {', '.join(_mpinet_hub.MPINET_TAGS)}"
        )
    return _timm.create_model(f"{arch}.{tag}", pretrained=pretrained, **kwargs)


def mpinet_resnet18(pretrained=False, tag="potsdam", **kwargs):
    """ResNet-18 encoder with MPINet self-supervised weights.

    Args:
        pretrained: load the weights of `tag` (from the Hugging Face cache or Hub).
        tag: pretraining data set: "potsdam", "loveda" or "uavid".
        **kwargs: passed to timm.create_model (features_only, out_indices, in_chans, output_stride,
            pretrained_cfg_overlay=dict(file=...), ...).
    """
    return _create("mpinet_resnet18", pretrained, tag, **kwargs)


def mpinet_resnet50(pretrained=False, tag="potsdam", **kwargs):
    """ResNet-50 encoder with MPINet self-supervised weights (the release architecture).

    Args:
        pretrained: load the weights of `tag` (from the Hugging Face cache or Hub).
        tag: pretraining data set: "potsdam", "loveda" or "uavid".
        **kwargs: passed to timm.create_model (features_only, out_indices, in_chans, output_stride,
            pretrained_cfg_overlay=dict(file=...), ...).
    """
    return _create("mpinet_resnet50", pretrained, tag, **kwargs)
