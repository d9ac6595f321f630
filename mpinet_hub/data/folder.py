"""A labeled folder of a user's own imagery: any band count and dtype, class names from classes.yaml.

    ROOT/classes.yaml                      names: [...]; optional palette: [[r, g, b], ...]; optional ignore_index
    ROOT/{train,val,test}/images/NAME.{tif,tiff,png,jpg,jpeg}
    ROOT/{train,val,test}/masks/NAME.{tif,tiff,png}   same stem: class indices (one band), or RGB colours
                                                      of the palette (three bands)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from .base import Scene, SegmentationDataset
from .labels import IGNORE_INDEX, decode_colour_label
from .raster import DataError

__all__ = ["LabeledFolder", "folder_labeled_splits", "read_classes"]

_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
# Colours for previews and predictions when classes.yaml has no palette (matplotlib's tab10, then grey levels).
_DEFAULT_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
_MASK_SUFFIXES = (".png", ".tif", ".tiff")


def read_classes(root: str | Path) -> dict:
    """ROOT/classes.yaml checked: `names` (list of str), optional `palette` (one [r, g, b] per name) and
    `ignore_index` (default 255)."""
    path = Path(root) / "classes.yaml"
    if not path.is_file():
        raise DataError(f"{path}: not found; a labeled folder needs classes.yaml with `names: [...]`")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    names = spec.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: `names` must be a non-empty list of class names")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: class name(s) {', '.join(repeated)} listed more than once; each class needs its "
                        "own name (its position is its value in the masks)")
    palette = spec.get("palette")
    if palette is not None and (len(palette) != len(names) or any(len(c) != 3 for c in palette)):
        raise DataError(f"{path}: `palette` needs one [r, g, b] per class ({len(names)} classes)")
    ignore = int(spec.get("ignore_index", IGNORE_INDEX))
    if 0 <= ignore < len(names):
        raise DataError(f"{path}: ignore_index {ignore} is a class index; use a value >= {len(names)} (e.g. 255)")
    return {"names": list(names), "palette": [tuple(int(v) for v in c) for c in palette] if palette else None,
            "ignore_index": ignore}


def folder_labeled_splits(root: str | Path) -> tuple[str, ...]:
    """The splits of a labeled folder that have masks/."""
    return tuple(s for s in LabeledFolder.split_names if (Path(root) / s / "masks").is_dir())


def _default_palette(n: int) -> list[tuple[int, int, int]]:
    grey = [(v, v, v) for v in np.linspace(30, 230, max(0, n - len(_DEFAULT_PALETTE))).astype(int).tolist()]
    return (list(_DEFAULT_PALETTE) + grey)[:n]


class LabeledFolder(SegmentationDataset):
    """Your own labeled imagery in the layout of the module docstring; splits without masks/ are unlabeled."""

    split_names = ("train", "val", "test")
    own_imagery = True

    @classmethod
    def labeled_splits_at(cls, root: str | Path) -> tuple[str, ...]:
        return folder_labeled_splits(root)

    @classmethod
    def split_present(cls, root: str | Path, split: str) -> bool:
        return (Path(root) / split / "images").is_dir()  # a labeled folder may leave out val or test

    def __init__(self, root, split="train", patch_size=None, stride=None, transforms=None,
                 value_max=None):
        spec = read_classes(root)
        self.classes = tuple(spec["names"])
        self.palette = tuple(spec["palette"] or _default_palette(len(self.classes)))
        self.masks_are_colours = spec["palette"] is not None
        self.mask_ignore_index = spec["ignore_index"]
        self.labeled_splits = folder_labeled_splits(root)
        super().__init__(root, split, patch_size, stride, transforms, value_max)

    def _layout_hint(self) -> str:
        return f"expected {self.split}/images/NAME.tif|png|jpg and {self.split}/masks/NAME.tif|png"

    def _find_scenes(self) -> list[Scene]:
        images = self.root / self.split / "images"
        if not images.is_dir():
            raise DataError(f"{images}: folder not found ({self._layout_hint()})")
        scenes = []
        for image in sorted(p for p in images.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES):
            masks = [image.parent.parent / "masks" / (image.stem + s) for s in _MASK_SUFFIXES]
            mask = next((m for m in masks if m.is_file()), masks[0])
            scenes.append(self._scene(image.stem, [(image, None)], mask))
        return scenes

    def decode_label(self, array: np.ndarray) -> tuple[np.ndarray, int]:
        if array.shape[0] == 3 and self.masks_are_colours:
            return decode_colour_label(array, list(self.palette))
        if array.shape[0] != 1:
            raise DataError(f"masks must be one band of class indices, or RGB with a palette in classes.yaml; "
                            f"got {array.shape[0]} bands")
        values = array[0].astype(np.int64)
        ignored = values == self.mask_ignore_index
        known = (values >= 0) & (values < len(self.classes))
        ids = np.where(known, values, IGNORE_INDEX).astype(np.uint8)
        return ids, int((~known & ~ignored).sum())
