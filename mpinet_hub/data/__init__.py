"""Dataset readers (Potsdam, LoveDA, UAVid, unlabeled imagery), synthetic look-alikes and checks.

Every reader takes the folder the official archives unpack into, unchanged, and yields dicts with
"image" (float32 C x H x W in [0, 1]), "mask" (int64 H x W train ids, 255 = ignore) and "meta".
"""

from .base import Scene, SegmentationDataset, to_unit_float
from .labels import IGNORE_INDEX, decode_colour_label, decode_value_label, encode_colour_label
from .loveda import LoveDA
from .potsdam import POTSDAM_SPLITS, Potsdam
from .raster import DataError, grid_windows, raster_info, read_window
from .uavid import UAVid
from .unlabeled import UnlabeledImages, pretraining_images

DATASETS = {"potsdam": Potsdam, "loveda": LoveDA, "uavid": UAVid}
# data set -> the metric protocol its results are reported under by default
DEFAULT_PROTOCOL = {"potsdam": "potsdam-mmseg", "loveda": "loveda", "uavid": "uavid"}

__all__ = [
    "DATASETS",
    "DEFAULT_PROTOCOL",
    "IGNORE_INDEX",
    "POTSDAM_SPLITS",
    "DataError",
    "LoveDA",
    "Potsdam",
    "Scene",
    "SegmentationDataset",
    "UAVid",
    "UnlabeledImages",
    "decode_colour_label",
    "decode_value_label",
    "encode_colour_label",
    "grid_windows",
    "pretraining_images",
    "raster_info",
    "read_window",
    "to_unit_float",
]
