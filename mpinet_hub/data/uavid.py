"""UAVid v1.5, read from the folder the official archives unpack into."""

from __future__ import annotations

import numpy as np

from .base import Scene, SegmentationDataset, release_file, release_files
from .labels import decode_colour_label
from .raster import DataError

__all__ = ["UAVid"]


class UAVid(SegmentationDataset):
    """UAVid: 8 classes (official train ids), RGB-coded PNG labels, 3840x2160 / 4096x2160 frames.

    Args:
        root: folder holding uavid_train/, uavid_val/, uavid_test/ with seqN/Images/ and seqN/Labels/.
        split: "train", "val" or "test" (test has no labels).
    """

    classes = ("clutter", "building", "road", "static_car", "tree", "low_vegetation", "human", "moving_car")
    palette = ((0, 0, 0), (128, 0, 0), (128, 64, 128), (192, 0, 192), (0, 128, 0), (128, 128, 0), (64, 64, 0),
               (64, 0, 128))
    split_names = ("train", "val", "test")
    labeled_splits = ("train", "val")
    band_names = ("R", "G", "B")

    def _layout_hint(self) -> str:
        return f"expected uavid_{self.split}/seq*/Images/*.png (or .tif after `data prepare`)"

    def _find_scenes(self) -> list[Scene]:
        folder = self.root / f"uavid_{self.split}"
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found; unpack uavid_{self.split}.zip into {self.root}")
        scenes = []
        seqs = sorted((p for p in folder.glob("seq*") if p.is_dir()), key=lambda p: int(p.name[3:] or 0))
        for seq in seqs:
            for image in sorted(release_files(seq / "Images"), key=lambda p: p.stem):
                scenes.append(self._scene(f"{seq.name}/{image.stem}", [(image, [1, 2, 3])],
                                          release_file(seq / "Labels" / f"{image.stem}.png")))
        return scenes

    def decode_label(self, array: np.ndarray) -> tuple[np.ndarray, int]:
        return decode_colour_label(array, list(self.palette))
