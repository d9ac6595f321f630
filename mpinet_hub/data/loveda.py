"""LoveDA, read from the folder the official archives unpack into."""

from __future__ import annotations

import numpy as np

from .base import Scene, SegmentationDataset, release_file, release_files
from .labels import decode_value_label
from .raster import DataError

__all__ = ["LoveDA"]

_SPLIT_FOLDERS = {"train": "Train", "val": "Val", "test": "Test"}
_SCENES = {"urban": ("Urban",), "rural": ("Rural",), "both": ("Urban", "Rural")}


class LoveDA(SegmentationDataset):
    """LoveDA: 7 classes (mask value - 1; 0 = no-data = ignore), 1024x1024 PNG images.

    Args:
        root: folder holding Train/, Val/, Test/, each with Urban/ and Rural/ (images_png/, masks_png/).
        split: "train", "val" or "test" (test has no masks).
        scene: "urban", "rural" or "both".
    """

    classes = ("background", "building", "road", "water", "barren", "forest", "agriculture")
    palette = ((255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0),
               (255, 195, 128))
    split_names = ("train", "val", "test")
    labeled_splits = ("train", "val")
    band_names = ("R", "G", "B")

    def __init__(self, root, split="train", scene="both", patch_size=None, stride=None, transforms=None,
                 value_max=None):
        if scene not in _SCENES:
            raise ValueError(f"scene={scene!r}; choose urban, rural or both")
        self.scene = scene
        super().__init__(root, split, patch_size, stride, transforms, value_max)

    def _layout_hint(self) -> str:
        return f"expected {_SPLIT_FOLDERS[self.split]}/{{Urban,Rural}}/images_png/*.png (or .tif after `data prepare`)"

    def _find_scenes(self) -> list[Scene]:
        scenes = []
        for domain in _SCENES[self.scene]:
            folder = self.root / _SPLIT_FOLDERS[self.split] / domain
            images = folder / "images_png"
            if not images.is_dir():
                raise DataError(f"{images}: folder not found; unpack {_SPLIT_FOLDERS[self.split]}.zip into {self.root}")
            for image in sorted(release_files(images), key=lambda p: (len(p.stem), p.stem)):
                scenes.append(self._scene(f"{domain}/{image.stem}", [(image, [1, 2, 3])],
                                          release_file(folder / "masks_png" / f"{image.stem}.png")))
        return scenes

    def decode_label(self, array: np.ndarray) -> tuple[np.ndarray, int]:
        return decode_value_label(array[0], offset=1, num_classes=len(self.classes))
