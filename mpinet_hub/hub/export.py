"""`mpinet export`: training checkpoint (or plain backbone state dict) -> Hugging Face Hub folder.

The folder holds `model.safetensors` (backbone only), `config.json` in timm's layout naming the plain
timm architecture (so `hf-hub:` loading needs no `import mpinet_hub`), and `README.md` rendered from the
tag's card with the weights' sha256.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch
from timm.models._hub import save_config_for_hf

from ..atomic import atomic_folder
from ..checkpoint import backbone_state_dict, is_training_checkpoint
from ..data import DATASETS
from ..integrity import file_sha256
from ..models import MPINET_ARCHS, MPINET_TAGS, hub_repo_id
from .card import render_card

__all__ = ["ExportError", "ExportResult", "export_weights", "file_sha256", "load_source_weights"]

WEIGHTS_NAME = "model.safetensors"


class ExportError(ValueError):
    """The source is not something `mpinet export` can turn into a hub folder."""


@dataclass
class ExportResult:
    out_dir: Path
    sha256: str
    num_tensors: int
    dropped_keys: list[str]


EXPORT_FILES = frozenset({WEIGHTS_NAME, "config.json", "README.md"})


def refuse_to_replace(out_dir: Path, src: Path) -> None:
    """`--overwrite` replaces an earlier export only: a folder of exactly an export's files whose config.json
    carries our `mpinet` record, and never one that holds the source. Anything else may be the user's files."""
    if src.resolve().is_relative_to(out_dir.resolve()):
        raise ExportError(f"{out_dir} holds the source {src}; --overwrite would delete it. Export to another folder.")
    names = {p.name for p in out_dir.iterdir()}
    foreign = sorted(names - EXPORT_FILES)
    try:
        ours = "mpinet" in json.loads((out_dir / "config.json").read_text())
    except (OSError, ValueError):
        ours = False
    if foreign or not ours:
        listed = ", ".join(foreign[:5]) or "no mpinet config.json"
        raise ExportError(f"{out_dir} is not an earlier export ({listed}); --overwrite only replaces a folder that "
                          "`mpinet export` wrote. Choose a new folder, or empty this one yourself.")


def refuse_foreign_tag(src: str | Path, meta: dict[str, Any], tag: str) -> None:
    """A tag names the data set the weights were pretrained on, and gives them its licence and card. Weights
    pretrained on other data (a user's own folder, another data set) must not claim them."""
    cfg = meta.get("config") or {}
    dataset = cfg.get("dataset")
    if dataset is None or dataset == tag:
        return
    roots = ", ".join(str(r) for r in cfg.get("data_root") or []) or "unrecorded"
    what = f"your own images ({roots})" if dataset in DATASETS and DATASETS[dataset].own_imagery else \
        f"{dataset} ({roots})"
    raise ExportError(f"{src} was pretrained on {what}, not on {MPINET_TAGS[tag]['dataset']}: the {tag} tag would "
                      f"give these weights that data set's name and licence. "
                      + (f"Export it with --tag {dataset}." if dataset in MPINET_TAGS else
                         "Use the run folder itself as the encoder (`mpinet finetune/probe --encoder RUN`); a tag "
                         "for your own imagery, with the licence you state, is not there yet."))


def load_source_weights(src: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Backbone state dict and training metadata (empty for a plain state dict) from `src`."""
    src = Path(src)
    if not src.is_file():
        raise ExportError(f"{src}: no such file")
    if src.suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(str(src), device="cpu"), {}
        except safetensors.SafetensorError as err:
            raise OSError(f"{src}: not a readable safetensors file ({err}); copy or export it again") from err
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ExportError(
            f"{src} is neither a safetensors file nor a weights-only torch file ({type(err).__name__}: {err}). "
            "Only tensors travel: re-save the state dict with safetensors or torch.save(state_dict)."
        ) from err
    if is_training_checkpoint(obj):
        meta = {k: obj.get(k) for k in ("arch", "method", "step", "config", "norm", "inert_settings")}
        return backbone_state_dict(obj), meta
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        # DDP-wrapped models save with a "module." prefix.
        return {k.removeprefix("module."): v for k, v in obj.items()}, {}
    raise ExportError(
        f"{src} is neither an mpinet-hub training checkpoint (no 'format' key) nor a flat state dict of tensors "
        f"(top-level keys: {sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__})."
    )


def _recipe(meta: dict[str, Any]) -> str:
    cfg = meta.get("config") or {}
    if not cfg:
        return "Exported from a plain state dict: the pretraining recipe was not recorded with the weights."
    keys = ("method", "dataset", "arch", "bands", "crop", "batch_size", "steps", "epochs", "lr", "optimizer", "w_ins",
            "w_pix", "w_ffl", "w_dense", "fusion_levels", "queue_size", "momentum_schedule", "precision", "seed")
    unread = set(meta.get("inert_settings") or [])  # settings the method never read (MPINet's FFL for DenseCL)
    rows = [f"| {k} | {cfg[k]} |" for k in keys if k in cfg and cfg[k] is not None and k not in unread]
    rows.append(f"| trained steps | {meta.get('step')} |")
    return "| setting | value |\n|---|---|\n" + "\n".join(rows)


def _run_description(meta: dict[str, Any]) -> str:
    """What these weights were actually trained on, from the checkpoint's own config (not the release's)."""
    cfg = meta.get("config") or {}
    if not cfg:
        return "exported from a plain state dict; the data and steps were not recorded with the weights."
    roots = ", ".join(Path(str(r)).name or str(r) for r in cfg.get("data_root") or []) or "an unrecorded folder"
    return (f"{meta.get('step')} steps of {cfg.get('batch_size')} windows of {cfg.get('patch')} px "
            f"({cfg.get('crop')} px views) from the {cfg.get('dataset')} data in `{roots}`.")


def export_weights(
    src: str | Path,
    out_dir: str | Path,
    arch: str,
    tag: str,
    metrics: list[dict[str, Any]] | None = None,
    overwrite: bool = False,
    org: str | None = None,
) -> ExportResult:
    """Write the hub folder for `arch.tag` from `src`; nothing is left behind if any step fails."""
    if arch not in MPINET_ARCHS:
        raise ExportError(f"Unknown --arch {arch!r}; choose one of {', '.join(MPINET_ARCHS)}")
    if tag not in MPINET_TAGS:
        raise ExportError(f"Unknown --tag {tag!r}; choose one of {', '.join(MPINET_TAGS)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExportError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")
        refuse_to_replace(out_dir, Path(src))

    state, meta = load_source_weights(src)
    if meta.get("arch") and meta["arch"] != arch:
        raise ExportError(f"{src} was trained with --arch {meta['arch']}, not {arch}")
    refuse_foreign_tag(src, meta, tag)
    dropped = sorted(k for k in state if k.startswith("fc."))  # a classifier is not part of an encoder
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}

    norm = meta.get("norm") or {}
    bands = tuple(norm.get("bands") or MPINET_TAGS[tag]["band_names"])
    base_arch = MPINET_ARCHS[arch][0]
    model = timm.create_model(base_arch, pretrained=False, num_classes=0, in_chans=len(bands))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ExportError(
            f"{src} does not match {arch} ({base_arch}, {len(bands)} bands): "
            f"{len(missing)} missing key(s) {missing[:8]}{' ...' if len(missing) > 8 else ''}; "
            f"{len(unexpected)} unexpected key(s) {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    bad_shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if state[k].shape != v.shape]
    if bad_shapes:
        raise ExportError(f"{src}: tensor shapes do not match {base_arch}: " + "; ".join(bad_shapes[:5]))
    model.load_state_dict(state, strict=True)

    cfg = timm.models.get_pretrained_cfg(f"{arch}.{tag}").to_dict()
    cfg.pop("band_names", None)  # not a timm field: a process without mpinet_hub could not parse it
    crop = int((meta.get("config") or {}).get("crop") or cfg["input_size"][-1])
    cfg.update(
        architecture=base_arch,
        tag=tag,
        # the tag's release description alone would claim a data set and a budget these weights may not have
        description=f"{cfg.get('description', '')}; these weights: {_run_description(meta)}",
        input_size=(len(bands), crop, crop),
        mean=tuple(float(v) for v in norm.get("mean", cfg["mean"])),
        std=tuple(float(v) for v in norm.get("std", cfg["std"])),
    )
    model.pretrained_cfg = cfg

    with atomic_folder(out_dir) as staging:
        weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        safetensors.torch.save_file(weights, str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
        sha = file_sha256(staging / WEIGHTS_NAME)
        repo_id = hub_repo_id(arch, tag, org)
        mpinet_meta = {
            "arch": arch,
            "tag": tag,
            "band_names": list(bands),
            "sha256": sha,
            "method": meta.get("method"),
            "value_max": norm.get("value_max"),  # the full-scale pixel value; fine-tuning and probes take it from here
            "pretrain_steps": meta.get("step"),
            "repo_id": repo_id,
        }
        save_config_for_hf(model, str(staging / "config.json"), model_config={"mpinet": mpinet_meta})
        card = render_card(
            tag,
            arch=arch,
            base_arch=base_arch,
            repo_id=repo_id,
            sha256=sha,
            bands=bands,
            in_chans=len(bands),
            mean=cfg["mean"],
            std=cfg["std"],
            crop=crop,
            recipe=_recipe(meta),
            run_description=_run_description(meta),
            method=meta.get("method"),
            metrics=metrics or [],
        )
        (staging / "README.md").write_text(card, encoding="utf-8")
    return ExportResult(out_dir=out_dir, sha256=sha, num_tensors=len(weights), dropped_keys=dropped)

