"""Whole-tile evaluation by a named metric protocol (data.DatasetSpec.protocols), with sliding-window inference.

Writes OUT/metrics.json (protocol, split, checkpoint, ignored pixels, per-class IoU/F1/precision/recall,
means, confusion matrix), OUT/confusion.png and a few OUT/previews/*.png, and returns the metrics dict.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_text_atomic
from ..data import DATASET_SPECS, Protocol, Window, evaluation_split, open_dataset, protocol_of
from ..data.base import Scene
from ..metrics import SegmentationMetrics
from ..progress import progress
from ..training import resolve_device
from .inference import SlidingWindow
from .model import MODEL_INFO_FILE, SegmentationModelInfo, load_segmentation_model, write_segmentation_card
from .plots import confusion_png, preview_png, thumbnail_of_strip, thumbnail_step

__all__ = ["evaluate", "evaluate_model", "format_metrics_table", "write_json"]


def write_json(obj: Any, path: Path) -> Path:
    """JSON through a temporary file + rename, so a reader never sees half a file."""
    return write_text_atomic(path, json.dumps(obj, indent=2))


def _protocol_for(dataset: str, protocol: str | None) -> tuple[str, Protocol]:
    """(name, protocol) of `dataset` to score by: `protocol`, or the data set's first."""
    allowed = DATASET_SPECS[dataset].protocols
    name = protocol or next(iter(allowed))
    if name not in allowed:
        protocol_of(name)  # an unknown protocol is named as such
        raise ValueError(f"protocol {name} is not one of {dataset}'s ({', '.join(allowed)})")
    return name, allowed[name]


def evaluate(model_path: str | Path, dataset: str, data_root: str | Path, split: str | None = None,
             out: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Sliding-window predictions of a fine-tuned model folder over every scene of `split`, scored by the data
    set's protocol; `options` are `evaluate_model`'s (protocol, window, overlap, batch_size, previews, device,
    precision, bands, f1_from_precision_recall). `split` defaults to the data set's labeled evaluation split
    (`evaluation_split`). Results go to `out` (default RUN/eval-SPLIT)."""
    split = split or evaluation_split(dataset, data_root)
    model, info = load_segmentation_model(model_path)
    model_dir = Path(info.provenance["model_dir"])
    out = Path(out) if out else model_dir.parent / f"eval-{split}"
    return evaluate_model(model, info, dataset, data_root, out, split=split, **options)


def evaluate_model(
    model: torch.nn.Module,
    info: SegmentationModelInfo,
    dataset: str,
    data_root: str | Path,
    out: str | Path,
    split: str | None = None,
    protocol: str | None = None,
    window: int = 512,
    overlap: int | None = None,
    batch_size: int | None = None,
    previews: int = 3,
    device: str = "auto",
    precision: str = "32",
    bands: str | None = None,
    f1_from_precision_recall: bool = False,
) -> dict[str, Any]:
    """`evaluate` for a model in memory (a fine-tuned SMP model, or a probe) described by `info`."""
    split = split or evaluation_split(dataset, data_root)
    model_dir = Path(info.provenance.get("model_dir", out))
    protocol, rules = _protocol_for(dataset, protocol)
    kwargs = {"labels": rules.labels} if rules.labels else {}
    ds = open_dataset(dataset, data_root, split, bands=bands or info.bands, value_max=info.value_max, **kwargs)
    if not ds.has_labels:
        labeled = ", ".join(ds.labeled_splits)
        raise ValueError(f"{dataset} split {split!r} has no labels to evaluate against; use --split {labeled}")
    if len(info.classes) != ds.num_classes:
        raise ValueError(f"{model_dir} predicts {len(info.classes)} classes ({', '.join(info.classes)}) but {dataset} "
                         f"has {ds.num_classes} ({', '.join(ds.classes)}); evaluate it on the data set it was "
                         "fine-tuned for")
    if ds.num_bands != info.in_chans:
        raise ValueError(f"{model_dir} takes {info.in_chans} band(s) ({info.bands}) but {dataset} with bands="
                         f"{getattr(ds, 'bands', 'RGB')} gives {ds.num_bands}; pass --bands {info.bands}")
    out = Path(out)
    sw = SlidingWindow(model, info.mean, info.std, window=window, overlap=overlap, batch_size=batch_size,
                       device=resolve_device(device), precision=precision)
    metrics = SegmentationMetrics.from_protocol(protocol, class_names=list(ds.classes),
                                                f1_from_precision_recall=f1_from_precision_recall)
    ignored = not_finite = 0
    total_windows = sum(sw.windows_in(s.height, s.width) for s in ds.scenes)
    with progress(total=total_windows, unit="window", desc=f"evaluate {dataset} {split}") as bar:
        for n, scene in enumerate(ds.scenes):
            step = thumbnail_step(scene.height, scene.width)
            thumbs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # only for the first `previews` scenes
            # NaN/inf pixels (float rasters' holes) are read as 0, as predict does: a NaN would spread through
            # every conv and turn the window into class 0; their truth is ignored, so they are not scored
            seen_nan = [False]  # a strip's truth is checked for holes only in a scene that has any (float rasters)

            def read(window: Window, scene: Scene = scene, seen_nan: list[bool] = seen_nan) -> np.ndarray:
                image = ds.read_image(scene, window)
                if not np.isfinite(image).all():
                    seen_nan[0] = True
                    image = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
                return image

            for top, logits in sw.strips(read, scene.height, scene.width, bar):
                rows = logits.shape[1]
                strip = logits.argmax(0).to(torch.uint8).cpu().numpy()
                band = Window(0, top, scene.width, rows)
                truth = ds.read_mask(scene, band)
                # the band's pixels, read once: for its holes (a scene that has any) and for the preview
                image = ds.read_image(scene, band) if seen_nan[0] or n < previews else None
                holes = ~np.isfinite(image).all(0) if seen_nan[0] else None
                if holes is not None and holes.any():
                    holes &= truth != ds.ignore_index
                    not_finite += int(holes.sum())
                    truth = np.where(holes, ds.ignore_index, truth)
                ignored += int((truth == ds.ignore_index).sum())
                metrics.update(torch.from_numpy(strip)[None], torch.from_numpy(truth.astype(np.int64))[None])
                if n < previews:
                    thumbs.append(tuple(thumbnail_of_strip(a, top, step) for a in (image, truth, strip)))
            if thumbs:
                image, truth, pred = (np.concatenate(parts, axis=-2) for parts in zip(*thumbs))
                preview_png(image, truth, pred, ds.palette, out / "previews" / f"{scene.id}.png",
                            title=f"{dataset} {split} {scene.id}", ignore_index=ds.ignore_index,
                            class_names=ds.classes)
    if not_finite:
        print(f"warning: {dataset} {split}: {not_finite} px of the imagery are NaN/inf; they are ignored (not "
              "scored), as predict writes them as nodata", file=sys.stderr)
    result = metrics.compute()
    result.update(not_finite_pixels=not_finite,
        dataset=dataset, split=split, checkpoint=str(model_dir), scenes=len(ds.scenes), ignored_pixels=ignored,
        protocol_description=rules.description, window=window, overlap=sw.overlap,
        f1_definition="2PR/(P+R), mmseg parity" if f1_from_precision_recall else "2TP/(2TP+FP+FN)",
        encoder=info.provenance.get("encoder"), decoder=info.provenance.get("decoder"),
        label_fraction=info.provenance.get("labeled_fraction", info.provenance.get("label_fraction")),
    )
    write_json(result, out / "metrics.json")
    result["card"] = None
    if (model_dir / MODEL_INFO_FILE).is_file():  # the model's card shows its latest evaluation (push needs it)
        if os.access(model_dir, os.W_OK):
            result["card"] = str(write_segmentation_card(model_dir, info, [result]))
        else:
            warnings.warn(f"{model_dir} is read-only: its model card (README.md) keeps its earlier results; "
                          f"these are in {out / 'metrics.json'}", stacklevel=2)
    confusion_png(np.asarray(result["confusion_matrix"]), result["class_names"], out / "confusion.png",
                  title=f"{dataset} {split} ({protocol})")
    result["out"] = str(out)
    return result


def format_metrics_table(result: dict[str, Any]) -> str:
    """Per-class IoU/F1 and the means, as a fixed-width text table."""
    def fmt(x: float | None) -> str:
        return "   n/a" if x is None or x != x else f"{x:6.2f}"

    width = max(len(n) for n in result["class_names"]) + 2
    lines = [f"{result.get('dataset', '')} {result.get('split', '')} - protocol {result['protocol']}",
             f"{'class':<{width}}   IoU     F1", "-" * (width + 16)]
    for name in result["class_names"]:
        c = result["per_class"][name]
        note = "  (not in means)" if name in result.get("excluded_from_mean", []) else ""
        lines.append(f"{name:<{width}} {fmt(c['IoU'])} {fmt(c['F1'])}{note}")
    lines.append("-" * (width + 16))
    lines.append(f"mIoU {fmt(result['mIoU'])}   OA {fmt(result['OA'])}   mF1 {fmt(result['mF1'])}   "
                 f"({result['pixels_evaluated']} px evaluated, {result.get('ignored_pixels', 0)} ignored)")
    return "\n".join(lines)
