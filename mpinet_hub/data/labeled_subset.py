"""Which patches of a labeled train split a run learns from: a fact of the data set, the label fraction and the
subset seed, never of the encoder or the method (fine-tuning and probes draw the same subset), and the record of it
that every such run writes (RUN/labeled_patches.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text_atomic
from .base import SegmentationDataset

__all__ = ["labeled_subset", "patch_id", "patch_ids", "write_labeled_patches"]


def patch_id(scene: str, row: int, col: int) -> str:
    return f"{scene}@{row},{col}"


def patch_ids(dataset: SegmentationDataset, indices: list[int] | None = None) -> list[str]:
    """`scene@row,col` of the dataset's windows (all, or those at `indices`)."""
    windows = dataset.windows if indices is None else [dataset.windows[i] for i in indices]
    return [patch_id(dataset.scenes[s].id, int(w.row_off), int(w.col_off)) for s, w in windows]


def labeled_subset(dataset: SegmentationDataset, fraction: float, seed: int = 0) -> list[int]:
    """Indices into `dataset` of a fixed, seeded `fraction` of its patches (at least one).

    Patches are ordered by their ids (scene@row,col) before the seeded permutation, so the subset does not
    depend on file-system order, and nested fractions share their prefix.
    """
    ids = patch_ids(dataset)
    order = sorted(range(len(ids)), key=ids.__getitem__)
    perm = np.random.default_rng(seed).permutation(len(order))
    count = max(1, round(fraction * len(order)))
    return [order[i] for i in perm[:count]]


def write_labeled_patches(out: Path, name: str, dataset: Any, subset: list[int], patch: int, label_fraction: float,
                          subset_seed: int, bands: Any) -> Path:
    """OUT/labeled_patches.json: which patches of the train split a fine-tuning or probe run learned from (the
    same for every encoder at a fraction and subset seed). A run resumed on data that now gives other patches is
    refused."""
    path = out / "labeled_patches.json"
    ids = patch_ids(dataset, subset)
    record = {"dataset": name, "split": "train", "bands": bands, "patch": patch, "label_fraction": label_fraction,
              "subset_seed": subset_seed, "total_patches": len(dataset), "patch_ids": ids}
    if path.is_file() and json.loads(path.read_text())["patch_ids"] != ids:
        raise ValueError(f"{path} lists other patches than this data set gives now; the data changed since the "
                         "run started. Use a new --out.")
    return write_text_atomic(path, json.dumps(record, indent=1))
