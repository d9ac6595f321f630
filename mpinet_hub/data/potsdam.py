"""ISPRS Potsdam, read from the folder the official archives unpack into."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .base import Scene, SegmentationDataset
from .labels import decode_colour_label
from .raster import DataError, raster_info

__all__ = ["POTSDAM_BAND_NAMES", "POTSDAM_SPLITS", "Potsdam", "potsdam_paths"]

# mmsegmentation's and torchgeo's split (24 train, 14 test tiles), as "row_col".
POTSDAM_SPLITS = {
    "train": ("2_10 2_11 2_12 3_10 3_11 3_12 4_10 4_11 4_12 5_10 5_11 5_12 6_10 6_11 6_12 "
              "6_7 6_8 6_9 7_10 7_11 7_12 7_7 7_8 7_9").split(),
    "test": "2_13 2_14 3_13 3_14 4_13 4_14 4_15 5_13 5_14 5_15 6_13 6_14 6_15 7_13".split(),
}

# bands -> (folder, file suffix, band count)
_PRODUCTS = {
    "RGB": ("2_Ortho_RGB", "RGB", 3),
    "IRRG": ("3_Ortho_IRRG", "IRRG", 3),
    "RGBIR": ("4_Ortho_RGBIR", "RGBIR", 4),
}
POTSDAM_BAND_NAMES = {"RGB": ("R", "G", "B"), "IRRG": ("IR", "R", "G"), "RGBIR": ("R", "G", "B", "IR")}
_LABEL_FOLDERS = {"full": ("5_Labels_all", "label"), "noBoundary": ("5_Labels_all_noBoundary", "label_noBoundary")}


def potsdam_paths(root: str | Path, tile: str, bands: str = "RGB") -> dict[str, Path]:
    """Where the release keeps each file of tile "row_col"."""
    root = Path(root)
    row, col = tile.split("_")
    product = bands.removesuffix("+DSM")
    folder, suffix, _ = _PRODUCTS[product]
    return {
        "image": root / folder / f"top_potsdam_{tile}_{suffix}.tif",
        "dsm": root / "1_DSM_normalisation" / f"dsm_potsdam_{int(row):02d}_{int(col):02d}_normalized_lastools.jpg",
        "full": root / "5_Labels_all" / f"top_potsdam_{tile}_label.tif",
        "noBoundary": root / "5_Labels_all_noBoundary" / f"top_potsdam_{tile}_label_noBoundary.tif",
    }


class Potsdam(SegmentationDataset):
    """ISPRS Potsdam: 6 classes, RGB-coded labels, 6000x6000 tiles read by window.

    Args:
        root: folder holding 2_Ortho_RGB/, 3_Ortho_IRRG/, 4_Ortho_RGBIR/, 1_DSM_normalisation/, 5_Labels_all*/.
        split: "train" (24 tiles) or "test" (14 tiles).
        bands: "RGB", "IRRG", "RGBIR", optionally with "+DSM" (the normalised DSM as an extra band).
        labels: "noBoundary" (boundaries black = ignore; the usual test protocol) or "full".
        patch_size, stride: a grid of windows per tile (last row/column edge-aligned); None for whole tiles.
    """

    classes = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")
    palette = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
    split_names = ("train", "test")
    labeled_splits = ("train", "test")
    known_defects = {
        "4_12": "5_Labels_all/top_potsdam_4_12_label.tif is blended with the photo (impure colours)",
        "7_10": "labels of 7_10 are known to be wrong (UNetFormer drops this tile)",
        "3_13": "the DSM of 3_13 is 5999 px wide",
    }
    band_products = tuple(p + dsm for p in POTSDAM_BAND_NAMES for dsm in ("", "+DSM"))
    release_scenes = POTSDAM_SPLITS
    label_products = ("noBoundary", "full")

    @classmethod
    def product_band_names(cls, bands: str | None) -> tuple[str, ...] | None:
        bands = bands or "RGB"
        product = bands.removesuffix("+DSM")
        if product not in POTSDAM_BAND_NAMES:
            return None
        return POTSDAM_BAND_NAMES[product] + (("nDSM",) if bands.endswith("+DSM") else ())

    @classmethod
    def check_release(cls, root: Path, report: Any) -> None:
        for tile, text in cls.known_defects.items():
            paths = potsdam_paths(root, tile)
            if tile == "4_12" and paths["full"].is_file():
                key = str(paths["full"].relative_to(root))
                status = "present" if report.unknown_pixels.get(key) else "not seen here"
                report.warnings.append(f"known defect ({status}): {text}")
            elif tile == "7_10" and paths["image"].is_file():
                report.warnings.append(f"known defect: {text}; consider tiles=[...] without it")
            elif tile == "3_13" and paths["dsm"].is_file() and paths["image"].is_file():
                dsm, img = raster_info(paths["dsm"]), raster_info(paths["image"])
                status = f"present: {dsm.width} vs {img.width} px" if dsm.width != img.width else "not seen here"
                report.warnings.append(f"known defect ({status}): {text}; readers crop to the common extent")
        # A DSM that differs by a pixel is only seen by readers that use it: check them all here.
        for tile in POTSDAM_SPLITS["train"] + POTSDAM_SPLITS["test"]:
            paths = potsdam_paths(root, tile)
            if paths["dsm"].is_file() and paths["image"].is_file():
                dsm, img = raster_info(paths["dsm"]), raster_info(paths["image"])
                if (dsm.height, dsm.width) != (img.height, img.width) and tile != "3_13":
                    report.warnings.append(f"{paths['dsm'].name}: {dsm.height}x{dsm.width}, image "
                                           f"{img.height}x{img.width}")

    def __init__(self, root, split="train", bands="RGB", labels="noBoundary", patch_size=None, stride=None,
                 transforms=None, tiles: list[str] | None = None, value_max=None):
        if bands.removesuffix("+DSM") not in _PRODUCTS:
            raise ValueError(f"bands={bands!r}; choose RGB, IRRG or RGBIR, optionally +DSM")
        if labels not in _LABEL_FOLDERS:
            raise ValueError(f"labels={labels!r}; choose 'full' or 'noBoundary'")
        self.bands = bands
        self.labels = labels
        self._tiles = tiles
        super().__init__(root, split, patch_size, stride, transforms, value_max)

    @property
    def band_names(self) -> tuple[str, ...]:
        return self.product_band_names(self.bands)

    def _layout_hint(self) -> str:
        folder = _PRODUCTS[self.bands.removesuffix("+DSM")][0]
        return f"expected {folder}/top_potsdam_<row>_<col>_*.tif and {_LABEL_FOLDERS[self.labels][0]}/"

    def _find_scenes(self) -> list[Scene]:
        product = self.bands.removesuffix("+DSM")
        folder = self.root / _PRODUCTS[product][0]
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found; for bands={self.bands!r} unpack "
                            f"{_PRODUCTS[product][0]}.zip into {self.root}")
        label_folder = self.root / _LABEL_FOLDERS[self.labels][0]
        if not label_folder.is_dir():
            raise DataError(f"{label_folder}: label folder not found; unpack {label_folder.name}.zip into {self.root}")
        scenes, missing = [], []
        for tile in self._tiles or POTSDAM_SPLITS[self.split]:
            paths = potsdam_paths(self.root, tile, self.bands)
            if not paths["image"].is_file():
                missing.append(tile)
                continue
            images = [(paths["image"], list(range(1, _PRODUCTS[product][2] + 1)))]
            if self.bands.endswith("+DSM"):
                if not paths["dsm"].is_file():
                    raise DataError(f"{paths['dsm']}: DSM not found but bands={self.bands!r}")
                images.append((paths["dsm"], [1]))
            scenes.append(self._scene(tile, images, paths[self.labels]))
        if missing and scenes:
            warnings.warn(f"Potsdam {self.split}: {len(missing)} tile(s) of the split not found in {folder}: "
                          f"{' '.join(missing)}; using the {len(scenes)} present", stacklevel=3)
        return scenes

    def decode_label(self, array: np.ndarray) -> tuple[np.ndarray, int]:
        ignore = ((0, 0, 0),) if self.labels == "noBoundary" else ()
        return decode_colour_label(array, list(self.palette), ignore_colours=ignore)
