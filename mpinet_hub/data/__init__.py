"""Dataset readers (Potsdam, LoveDA, UAVid, unlabeled imagery), synthetic look-alikes and checks.

Every reader takes the folder the official archives unpack into, unchanged, and yields dicts with
"image" (float32 C x H x W in [0, 1]), "mask" (int64 H x W train ids, 255 = ignore) and "meta".
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import BANDS_HELP, DATA_ROOT_HELP, VALUE_MAX_HELP, Scene, SegmentationDataset, to_unit_float
from .folder import LabeledFolder, read_classes
from .labels import IGNORE_INDEX, decode_colour_label, decode_value_label, encode_colour_label
from .loveda import LoveDA
from .potsdam import POTSDAM_SPLITS, Potsdam
from .raster import DataError, Window, grid_windows, raster_info, read_window, window_starts
from .synth import synth_loveda, synth_potsdam, synth_uavid
from .uavid import UAVid
from .unlabeled import UnlabeledImages, image_files, pretraining_images


@dataclass(frozen=True)
class Protocol:
    """How results on a data set are reported (mmsegmentation's and GeoSeg's conventions): the class ids left out
    of mIoU and mF1 (not of OA) and the label product scored, where the data set has more than one."""

    description: str
    exclude_from_mean: tuple[int, ...] = ()
    labels: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """What the package knows about a data set, in one place (as timm keeps a model's facts in its default_cfgs):
    its reader (classes, palette, splits), the metric protocols its results are reported under (the first is
    the default), the function writing a miniature copy in its release layout (`mpinet data synth`), and
    whether `mpinet data prepare` applies (images that cannot be read by window). Licence and citation of the
    weights pretrained on it live with its pretrained tag (`mpinet_hub.models.MPINET_TAGS`)."""

    reader: type[SegmentationDataset]
    protocols: dict[str, Protocol]
    synth: Callable[..., list[str]] | None = None
    preparable: bool = True


DATASET_SPECS: dict[str, DatasetSpec] = {
    "potsdam": DatasetSpec(Potsdam, {
        "potsdam-mmseg": Protocol("all 6 classes in the means, noBoundary labels", labels="noBoundary"),
        "potsdam-geoseg": Protocol("means over the 5 classes without clutter, OA over all, noBoundary labels",
                                   exclude_from_mean=(5,), labels="noBoundary")}, synth_potsdam, preparable=False),
    "loveda": DatasetSpec(LoveDA, {"loveda": Protocol("7 classes")}, synth_loveda),
    "uavid": DatasetSpec(UAVid, {"uavid": Protocol("8 classes")}, synth_uavid),
    "folder": DatasetSpec(LabeledFolder, {"folder": Protocol("every class of classes.yaml")}),
}
# name -> reader, for the code that needs only that
DATASETS = {name: spec.reader for name, spec in DATASET_SPECS.items()}
# protocol name -> protocol, over every data set (`protocol_of` finds its data set)
PROTOCOLS = {name: p for spec in DATASET_SPECS.values() for name, p in spec.protocols.items()}


def protocol_of(name: str) -> tuple[DatasetSpec, Protocol]:
    """The data set a metric protocol belongs to, and the protocol."""
    for spec in DATASET_SPECS.values():
        if name in spec.protocols:
            return spec, spec.protocols[name]
    raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")


def labeled_splits(name: str, root: str | Path) -> tuple[str, ...]:
    """The splits of a data set with labels (a labeled folder's: those with masks/)."""
    return DATASETS[name].labeled_splits_at(root)


def evaluation_split(name: str, root: str | Path) -> str:
    """The split a data set is evaluated on by default: test where it has labels, else val (LoveDA and UAVid
    publish no test labels; a labeled folder may or may not have test masks)."""
    return "test" if "test" in labeled_splits(name, root) else "val"


def open_dataset(
    name: str, root: str | Path, split: str, bands: str | None = None, **kwargs: Any
) -> SegmentationDataset:
    """A reader by data set name; `bands` (Potsdam's RGB, IRRG, RGBIR, optionally +DSM) applies to the readers
    with band products only."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if DATASETS[name].band_products:
        kwargs["bands"] = bands or "RGB"
    elif bands not in (None, "RGB"):
        with_bands = ", ".join(n for n, reader in DATASETS.items() if reader.band_products)
        raise ValueError(f"{name} images are read with the files' own bands; --bands {bands} applies to {with_bands}")
    return DATASETS[name](root, split=split, **kwargs)

__all__ = [
    "DATASETS",
    "DATASET_SPECS",
    "DatasetSpec",
    "IGNORE_INDEX",
    "LabeledFolder",
    "POTSDAM_SPLITS",
    "PROTOCOLS",
    "Protocol",
    "DataError",
    "LoveDA",
    "Potsdam",
    "Scene",
    "SegmentationDataset",
    "UAVid",
    "UnlabeledImages",
    "BANDS_HELP",
    "DATA_ROOT_HELP",
    "VALUE_MAX_HELP",
    "Window",
    "decode_colour_label",
    "decode_value_label",
    "encode_colour_label",
    "evaluation_split",
    "grid_windows",
    "image_files",
    "labeled_splits",
    "open_dataset",
    "pretraining_images",
    "protocol_of",
    "raster_info",
    "read_classes",
    "read_window",
    "to_unit_float",
    "window_starts",
]
