"""MPINet-pretrained ResNet encoders, registered with timm.

The self-supervised method changes the weights, not the architecture: `mpinet_resnet50` is timm's
`resnet50` (and `mpinet_resnet18` its `resnet18`) with pretrained cfgs that point at MPINet weights,
one tag per pretraining data set. A checkpoint therefore also loads into `timm.create_model("resnet50")`.

    >>> import mpinet_hub, timm
    >>> encoder = timm.create_model("mpinet_resnet50.potsdam", pretrained=True, features_only=True)
"""

from __future__ import annotations

import dataclasses
import os
import socket
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._pretrained import PretrainedCfg
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ..integrity import WeightsIntegrityError, verify_weights_file

__all__ = [
    "DEFAULT_HUB_ORG",
    "MPINET_ARCHS",
    "MPINET_TAGS",
    "MpinetPretrainedCfg",
    "PretrainedWeightsNotFoundError",
    "RGB_MEAN",
    "RGB_STD",
    "UnknownTagError",
    "hub_org",
    "hub_repo_id",
    "mpinet_resnet18",
    "mpinet_resnet50",
]

DEFAULT_HUB_ORG = "mpinet-hub"
PAPER_DOI = "10.1016/j.asr.2024.10.026"
PAPER_NAME = (
    "Multi-scale fusion pixel and instance contrastive self-supervised learning for semantic "
    "segmentation of high-resolution Earth surface images"
)

# Architecture -> (timm base architecture, block, layers). The base name is what exported configs name,
# so `hf-hub:` loading works in a process that never imports mpinet_hub.
MPINET_ARCHS: dict[str, tuple[str, type, tuple[int, ...]]] = {
    "mpinet_resnet18": ("resnet18", BasicBlock, (2, 2, 2, 2)),
    "mpinet_resnet50": ("resnet50", Bottleneck, (3, 4, 6, 3)),
}

# ImageNet statistics: the normalisation mmsegmentation uses for all three data sets, and the one our
# pretraining recipes use for RGB input (configs/). An export from a run with other statistics writes
# that run's values into its config.json, so a loaded checkpoint always carries what it was trained with.
RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)

# Tag -> facts about the pretraining data: the one table of them (default_cfgs below and the model cards are
# made from it). Licences are the data sets' own terms: weights trained on them inherit those terms, which is
# why a tag's licence is not the code's Apache-2.0.
MPINET_TAGS: dict[str, dict[str, Any]] = {
    "potsdam": dict(
        dataset="ISPRS Potsdam (24 training tiles, 256x256 patches, labels unused)",
        data_name="ISPRS Potsdam",
        data_description="ISPRS 2D Semantic Labeling Contest, Potsdam: 24 training tiles of 6000x6000 px at 5 cm "
                         "GSD (the release recipe cuts them into 256x256 patches; labels unused).",
        band_names=("R", "G", "B"),
        license="other",
        license_fields=dict(license_name="isprs-benchmark-research-use",
                            license_link="https://www.isprs.org/education/benchmarks/UrbanSemLab/default.aspx"),
        licence="the ISPRS benchmark data are for research use; cite the ISPRS benchmark.",
        citation="Data: ISPRS 2D Semantic Labeling Contest, Potsdam (Rottensteiner et al., ISPRS Annals 2012).",
        origin_url="https://www.isprs.org/education/benchmarks/UrbanSemLab/2d-sem-label-potsdam.aspx",
    ),
    "loveda": dict(
        dataset="LoveDA (Train split, urban + rural, labels unused)",
        data_name="LoveDA",
        data_description="LoveDA (Wang et al., NeurIPS 2021 Datasets and Benchmarks): the Train split, urban and "
                         "rural scenes of 1024x1024 px at 0.3 m GSD (masks unused).",
        band_names=("R", "G", "B"),
        license="cc-by-nc-sa-4.0",
        licence="CC BY-NC-SA 4.0 (non-commercial, share-alike).",
        citation="Data: LoveDA, Wang et al., NeurIPS 2021 Datasets and Benchmarks, doi:10.5281/zenodo.5706578.",
        origin_url="https://github.com/Junjue-Wang/LoveDA",
    ),
    "uavid": dict(
        dataset="UAVid v1.5 (train split, labels unused)",
        data_name="UAVid",
        data_description="UAVid v1.5 (Lyu et al., ISPRS J. 2020): the 200 frames of `uavid_train` (oblique UAV "
                         "video, 3840x2160 or 4096x2160 px; labels unused).",
        band_names=("R", "G", "B"),
        license="cc-by-nc-sa-4.0",
        licence="CC BY-NC-SA 4.0 (non-commercial, share-alike).",
        citation="Data: UAVid, Lyu et al., ISPRS Journal of Photogrammetry and Remote Sensing 165, 2020.",
        origin_url="https://uavid.nl/",
    ),
}


@dataclass
class MpinetPretrainedCfg(PretrainedCfg):
    """timm's PretrainedCfg plus the band names a remote-sensing user needs to feed the right inputs."""

    band_names: tuple[str, ...] | None = None


class UnknownTagError(ValueError):
    """A pretrained tag that does not exist for an architecture."""


class PretrainedWeightsNotFoundError(RuntimeError):
    """Weights of a tag are neither in the local Hugging Face cache nor reachable."""


def hub_org() -> str:
    """The Hub organisation holding the weights; `MPINET_HUB_ORG` overrides it at call time."""
    return os.environ.get("MPINET_HUB_ORG") or DEFAULT_HUB_ORG


def hub_repo_id(arch: str, tag: str, org: str | None = None) -> str:
    """`{org}/{arch}.{tag}`, e.g. `mpinet-hub/mpinet_resnet50.potsdam`."""
    return f"{org or hub_org()}/{arch}.{tag}"


def _cfg(arch: str, tag: str) -> MpinetPretrainedCfg:
    meta = MPINET_TAGS[tag]
    bands = meta["band_names"]
    return MpinetPretrainedCfg(
        hf_hub_id=hub_repo_id(arch, tag),
        hf_hub_filename="model.safetensors",
        num_classes=0,
        input_size=(len(bands), 256, 256),
        pool_size=(8, 8),
        crop_pct=1.0,
        interpolation="bilinear",
        mean=RGB_MEAN,
        std=RGB_STD,
        first_conv="conv1",
        classifier="fc",
        license=meta["license"],
        description=f"MPINet self-supervised {MPINET_ARCHS[arch][0]} pretrained on {meta['dataset']}",
        origin_url=meta["origin_url"],
        paper_name=PAPER_NAME,
        paper_ids=f"doi:{PAPER_DOI}",
        band_names=bands,
    )


default_cfgs = generate_default_cfgs({f"{arch}.{tag}": _cfg(arch, tag) for arch in MPINET_ARCHS for tag in MPINET_TAGS})


def _resolve_tag(arch: str, pretrained_cfg: Any, pretrained: bool = False) -> str | None:
    """The tag a create_model call asked for; None when a full cfg (e.g. from a config.json) was passed.

    No tag gives the first (potsdam), as timm's default tag does, with a warning when weights are loaded: the
    tags are different data sets, and SMP's `encoder_weights="loveda"` reaches here as a bare `pretrained=True`
    (SMP 0.6 turns any value into True for `tu-` encoders), so without the warning it would load potsdam
    silently."""
    if pretrained_cfg is None:
        default = next(iter(MPINET_TAGS))
        if pretrained:
            warnings.warn(
                f"{arch} without a tag loads the {default} weights. Name the data set's tag: "
                + ", ".join(f"{arch}.{t}" for t in MPINET_TAGS)
                + f"; in SMP, put it in the encoder name (tu-{arch}.loveda): encoder_weights does not choose it.",
                UserWarning, stacklevel=4)
        return default
    if isinstance(pretrained_cfg, str):
        if pretrained_cfg not in MPINET_TAGS:
            raise UnknownTagError(
                f"Unknown pretrained tag {pretrained_cfg!r} for {arch}. Tags that exist: "
                + ", ".join(f"{arch}.{t}" for t in MPINET_TAGS)
            )
        return pretrained_cfg
    return None


def _create_mpinet_resnet(arch: str, pretrained: bool = False, **kwargs: Any) -> ResNet:
    base, block, layers = MPINET_ARCHS[arch]
    pretrained_cfg = kwargs.pop("pretrained_cfg", None)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    allow_band_drop = kwargs.pop("allow_band_drop", False)
    tag = _resolve_tag(arch, pretrained_cfg, pretrained)
    if tag is not None:
        pretrained_cfg = tag
        # The org is read per call, so MPINET_HUB_ORG set after `import mpinet_hub` still applies.
        overlay.setdefault("hf_hub_id", hub_repo_id(arch, tag))
        cfg_bands = len(MPINET_TAGS[tag]["band_names"])
    else:
        cfg = pretrained_cfg if isinstance(pretrained_cfg, dict) else dataclasses.asdict(pretrained_cfg)
        cfg_bands = cfg.get("input_size", (3,))[0]
    in_chans = kwargs.get("in_chans", cfg_bands)
    if pretrained and in_chans < cfg_bands and not allow_band_drop:
        # timm would silently slice the first conv, dropping bands the weights were trained on.
        raise ValueError(
            f"{arch}.{tag or ''} was pretrained on {cfg_bands} bands but in_chans={in_chans}: loading would "
            f"drop {cfg_bands - in_chans} band(s) of the first conv. Feed all {cfg_bands} bands, or pass "
            "allow_band_drop=True to accept timm's channel adaptation."
        )
    if pretrained and overlay.get("file") and not os.path.isfile(overlay["file"]):
        raise FileNotFoundError(f"{overlay['file']}: no such weights file (pretrained_cfg_overlay file=); give the "
                                "path of a model.safetensors that `mpinet export` wrote")
    try:
        if pretrained and tag is not None and not overlay.get("file"):
            _fail_fast_when_unreachable(overlay["hf_hub_id"])
        model = build_model_with_cfg(
            ResNet,
            arch,
            pretrained,
            pretrained_cfg=pretrained_cfg,
            pretrained_cfg_overlay=overlay,
            block=block,
            layers=layers,
            **kwargs,
        )
        if pretrained:
            _verify_loaded_weights(overlay)
        return model
    except WeightsIntegrityError:
        raise
    except (FileNotFoundError, ConnectionError, OSError) as err:
        if not pretrained or overlay.get("file"):
            raise
        repo = overlay.get("hf_hub_id") or (pretrained_cfg or {}).get("hf_hub_id")
        raise _not_found(arch, tag, repo, err) from err


def _not_found(arch: str, tag: str | None, repo: str, err: BaseException) -> PretrainedWeightsNotFoundError:
    return PretrainedWeightsNotFoundError(
        f"Pretrained weights for {arch}.{tag} were not found: looked for model.safetensors in the Hugging "
        f"Face repo {repo!r} (local cache first, then the Hub) and got: {type(err).__name__}: {err}\n"
        "No release weights are published yet. Ways out:\n"
        f"  1. point at a local file: timm.create_model('{arch}.{tag}', pretrained=True, "
        "pretrained_cfg_overlay=dict(file='/path/to/model.safetensors'))\n"
        "  2. put an export folder into the Hugging Face cache once: "
        f"mpinet_hub.hub.install_to_hf_cache('/path/to/export', '{repo}')\n"
        "  3. make the weights: `mpinet pretrain ...`, then `mpinet export RUN/checkpoints/last.pt OUT "
        f"--arch {arch} --tag {tag}` and `mpinet push OUT --repo-id {repo}` (or set MPINET_HUB_ORG to "
        "the organisation that holds them).")


def _verify_loaded_weights(overlay: dict[str, Any]) -> None:
    """The sha256 recorded by `mpinet export` checked against the file just loaded (where the config.json that
    records it is local: beside a `file=` overlay, or in the Hugging Face cache)."""
    if overlay.get("file"):
        verify_weights_file(overlay["file"])
        return
    repo_id, _, revision = str(overlay.get("hf_hub_id") or "").partition("@")
    if not repo_id:
        return
    from huggingface_hub import try_to_load_from_cache

    weights = try_to_load_from_cache(repo_id, "model.safetensors", revision=revision or None)
    config = try_to_load_from_cache(repo_id, "config.json", revision=revision or None)
    if isinstance(weights, str) and isinstance(config, str):
        verify_weights_file(weights, config, fix=f"Download it again (`hf download {repo_id} "
                            "--force-download`), or install a good export with `install_to_hf_cache`.")


def _fail_fast_when_unreachable(repo_id: str, filename: str = "model.safetensors", revision: str | None = None) -> None:
    """Raise at once (OSError, turned into the helpful message above) when `filename` is not in the Hugging
    Face cache and the Hub cannot be reached: offline, huggingface_hub retries for 25-29 s before failing."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, filename, revision=revision or None), str):
        return
    if constants.HF_HUB_OFFLINE:
        raise OSError(f"HF_HUB_OFFLINE is set and {repo_id}/{filename} is not in the local cache")
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as err:
        raise OSError(f"{host} cannot be reached ({err}) and {repo_id}/{filename} is not in the local "
                      "cache") from err


def _guard_hub_downloads() -> None:
    """Make timm's `hf-hub:` loader (which SMP's `tu-hf_hub:` goes through) fail at once for MPINet repos.

    timm reads an `hf-hub:` model's config.json through `timm.models._hub.download_from_hf`; for a repo named
    `mpinet_*` the wrapper checks the cache and the route first and raises the ways out, instead of
    huggingface_hub's retries (23-47 s offline) and its generic error. Other repos go to timm unchanged. Loading
    without importing mpinet_hub keeps timm's own behaviour.
    """
    import timm.models._hub as timm_hub

    original = timm_hub.download_from_hf
    if getattr(original, "mpinet_guard", False):
        return

    def download_from_hf(model_id: str, filename: str, cache_dir: Any = None) -> str:
        repo_id, _, revision = model_id.partition("@")
        name = repo_id.rpartition("/")[2]
        if name.startswith("mpinet_") and cache_dir is None:
            try:
                _fail_fast_when_unreachable(repo_id, filename, revision or None)
            except OSError as err:
                arch, _, tag = name.partition(".")
                raise _not_found(arch, tag or None, repo_id, err) from err
        return original(model_id, filename, cache_dir=cache_dir)

    download_from_hf.mpinet_guard = True
    timm_hub.download_from_hf = download_from_hf


_guard_hub_downloads()


@register_model
def mpinet_resnet18(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with MPINet self-supervised weights (small; for tests and CPUs)."""
    return _create_mpinet_resnet("mpinet_resnet18", pretrained, **kwargs)


@register_model
def mpinet_resnet50(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with MPINet self-supervised weights (the release architecture)."""
    return _create_mpinet_resnet("mpinet_resnet50", pretrained, **kwargs)
