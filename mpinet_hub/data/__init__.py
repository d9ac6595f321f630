"""Dataset readers (Potsdam, LoveDA, UAVid, unlabeled imagery), synthetic look-alikes and checks.

Every reader takes the folder the official archives unpack into, unchanged, and yields dicts with
"image" (float32 C x H x W in [0, 1]), "mask" (int64 H x W train ids, 255 = ignore) and "meta".
"""

from pathlib import Path
from typing import Any

from .base import VALUE_MAX_HELP, Scene, SegmentationDataset, to_unit_float
from .folder import LabeledFolder, folder_labeled_splits, read_classes
from .labels import IGNORE_INDEX, decode_colour_label, decode_value_label, encode_colour_label
from .loveda import LoveDA
from .potsdam import POTSDAM_SPLITS, Potsdam
from .raster import DataError, Window, grid_windows, raster_info, read_window, window_starts
from .uavid import UAVid
from .unlabeled import UnlabeledImages, pretraining_images

DATASETS = {"potsdam": Potsdam, "loveda": LoveDA, "uavid": UAVid, "folder": LabeledFolder}
# data set -> the metric protocol its results are reported under by default
DEFAULT_PROTOCOL = {"potsdam": "potsdam-mmseg", "loveda": "loveda", "uavid": "uavid", "folder": "folder"}


def evaluation_split(name: str, root: str | Path) -> str:
    """The split a data set is evaluated on by default: test where it has labels, else val (LoveDA and UAVid
    publish no test labels; a labeled folder may or may not have test masks)."""
    labeled = folder_labeled_splits(root) if name == "folder" else DATASETS[name].labeled_splits
    return "test" if "test" in labeled else "val"


def open_dataset(
    name: str, root: str | Path, split: str, bands: str | None = None, **kwargs: Any
) -> SegmentationDataset:
    """A reader by data set name; `bands` (RGB, IRRG, RGBIR, optionally +DSM) applies to Potsdam only."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "potsdam":
        kwargs["bands"] = bands or "RGB"
    elif bands not in (None, "RGB"):
        raise ValueError(f"{name} images are RGB only; --bands {bands} applies to Potsdam")
    return DATASETS[name](root, split=split, **kwargs)

__all__ = [
    "DATASETS",
    "DEFAULT_PROTOCOL",
    "IGNORE_INDEX",
    "LabeledFolder",
    "POTSDAM_SPLITS",
    "DataError",
    "LoveDA",
    "Potsdam",
    "Scene",
    "SegmentationDataset",
    "UAVid",
    "UnlabeledImages",
    "VALUE_MAX_HELP",
    "Window",
    "decode_colour_label",
    "decode_value_label",
    "encode_colour_label",
    "evaluation_split",
    "grid_windows",
    "open_dataset",
    "pretraining_images",
    "raster_info",
    "read_classes",
    "read_window",
    "to_unit_float",
    "window_starts",
]
