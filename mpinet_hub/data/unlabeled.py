"""Pretraining data: random windows from any collection of rasters, or from a data set's training images."""

from __future__ import annotations

import glob
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import PatchTooLargeError, check_value_max, to_unit_float, window_tuple
from .raster import DataError, Window, raster_info, read_window, value_warnings

__all__ = ["few_windows", "UnlabeledImages", "image_files", "pretraining_images"]

_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def image_files(paths_or_globs: str | Path | list[str | Path]) -> list[Path]:
    """The GeoTIFF/PNG/JPEG files of files, folders (searched recursively) and glob patterns, in order."""
    if isinstance(paths_or_globs, (str, Path)):
        paths_or_globs = [paths_or_globs]
    files: list[Path] = []
    for entry in paths_or_globs:
        p = Path(entry)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in _SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            matched = sorted(Path(m) for m in glob.glob(str(entry), recursive=True))
            if not matched:
                raise DataError(f"{entry}: no such file, folder or matching glob")
            files += [f for f in matched if f.suffix.lower() in _SUFFIXES]
    if not files:
        raise DataError(f"no GeoTIFF/PNG/JPEG images found in {', '.join(map(str, paths_or_globs))}")
    return files


class UnlabeledImages(Dataset):
    """Random `patch_size` windows from GeoTIFF/PNG/JPEG files of any size, sampled in proportion to area.

    Item `i` of epoch `e` is drawn from a generator seeded by (seed, e, i): reproducible, and different per
    epoch once `set_epoch` is called. Files smaller than a patch are skipped with a warning naming them.

    A PNG/JPEG must be decoded whole for every window. `windows_per_file` > 1 makes `batch(indices)` draw each
    run of that many consecutive items from one file (the file drawn from the run's first index, each window
    from its own), so a worker decodes the image once per run instead of once per window; the files are still
    drawn in proportion to area over the whole collection, and the batch stays a function of its indices.

    Args:
        paths_or_globs: files, folders (searched recursively) or glob patterns.
        patch_size: side of the square windows.
        bands: 1-based bands to read (default: all; every file must then have the same count).
        length: items per epoch (default: total area / patch area, i.e. one pass over the pixels).
        keep_uint8: 8-bit sources stay uint8 (4x fewer bytes from a loader worker to the trainer, which
            scales them on the device); other types are float32 in [0, 1] either way.
        value_max: the pixel value that means full scale (e.g. 4095 for 12-bit data in uint16); default the
            dtype's maximum. Given, every item is float32 (scaled here, not on the device).
        windows_per_file: consecutive items of a `batch` that share one file (1: every window on its own).
    """

    def __init__(self, paths_or_globs: str | Path | list[str | Path], patch_size: int = 256,
                 bands: list[int] | None = None, length: int | None = None, seed: int = 0,
                 keep_uint8: bool = False, value_max: float | None = None, windows_per_file: int = 1) -> None:
        files = image_files(paths_or_globs)
        self.patch_size = patch_size
        if windows_per_file < 1:
            raise ValueError(f"windows_per_file={windows_per_file}: give 1 (every window from a file of its own "
                             "draw) or more")
        self.windows_per_file = windows_per_file
        self.value_max = check_value_max(value_max)
        self.keep_uint8 = keep_uint8 and value_max is None
        self.bands = bands
        self.seed = seed
        self.epoch = 0
        self.infos = []
        small, largest_side = [], 0
        for f in files:
            info = raster_info(f)
            if info.height < patch_size or info.width < patch_size:
                small.append(f.name)
                largest_side = max(largest_side, min(info.height, info.width))
                continue
            if bands and max(bands) > info.count:
                raise DataError(f"{f}: has {info.count} band(s); bands={bands} asked for")
            self.infos.append(info)
        if small:
            warnings.warn(f"skipped {len(small)} image(s) smaller than {patch_size}px: {', '.join(small[:10])}",
                          stacklevel=2)
        for message in value_warnings([info.path for info in self.infos], value_max=value_max):
            warnings.warn(message, stacklevel=2)
        if not self.infos:
            raise PatchTooLargeError(f"every image is smaller than the patch size {patch_size} (--patch); pass --patch "
                            f"{largest_side} or less (and --crop no larger)")
        counts = {len(bands) if bands else i.count for i in self.infos}
        if len(counts) > 1:
            raise DataError(f"images have different band counts {sorted(counts)}; pass bands=[...] to choose")
        self.num_bands = counts.pop()
        areas = np.array([(i.height - patch_size + 1) * (i.width - patch_size + 1) for i in self.infos], dtype=float)
        self.weights = areas / areas.sum()
        total = sum(i.height * i.width for i in self.infos)
        self.length = length or max(1, total // (patch_size * patch_size))

    def distinct_windows(self) -> float:
        """The imagery's area in windows (total area / patch area): how many windows it holds without overlap."""
        return sum(i.height * i.width for i in self.infos) / self.patch_size**2

    def window_overlap(self) -> float:
        """The share of a window's area that a second window drawn like it covers, on average: windows from two
        files share nothing, windows from one file overlap as their offsets allow (rows and columns independent,
        each uniform over the file's positions). Near 0 on a large collection; on one small scene the instance task's
        negatives are views of the same ground. Exact for this sampler; written here because it is its own."""
        def along(side: int) -> float:  # mean shared share of one axis: offsets d = |a - b|, a, b uniform on 0..L
            positions = side - self.patch_size + 1
            d = np.arange(min(positions, self.patch_size))  # offsets of a patch or more share nothing
            p_d = np.where(d == 0, 1.0, 2.0 * (positions - d)) / positions**2
            return float(((self.patch_size - d) * p_d).sum() / self.patch_size)

        return float(sum(w * w * along(i.height) * along(i.width) for w, i in zip(self.weights, self.infos)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._item(index, index)

    def batch(self, indices: list[int]) -> list[dict[str, Any]]:
        """The items of `indices`, runs of `windows_per_file` consecutive ones from one file (see the class)."""
        k = self.windows_per_file
        return [self._item(index, indices[p - p % k]) for p, index in enumerate(indices)]

    def _item(self, index: int, file_index: int) -> dict[str, Any]:
        """Item `index`, its window placed in the file that item `file_index` draws."""
        rng = np.random.default_rng((self.seed, self.epoch, index))
        chosen = rng.choice(len(self.infos), p=self.weights)  # drawn either way: the window's draws follow it
        if file_index != index:
            chosen = np.random.default_rng((self.seed, self.epoch, file_index)).choice(len(self.infos), p=self.weights)
        info = self.infos[chosen]
        row = int(rng.integers(0, info.height - self.patch_size + 1))
        col = int(rng.integers(0, info.width - self.patch_size + 1))
        window = Window(col, row, self.patch_size, self.patch_size)
        image = read_window(info.path, window, self.bands)
        if not (self.keep_uint8 and image.dtype == np.uint8):
            image = to_unit_float(image, self.value_max)
        return {"image": torch.from_numpy(image), "meta": {"file": str(info.path), "window": window_tuple(window)}}


def pretraining_images(dataset: str, root: str | Path, bands: str = "RGB", split: str = "train") -> list[Path]:
    """Image files of a data set's training split (labels unused), for `UnlabeledImages`; of another split, to make
    sure pretraining does not read the ground that is scored."""
    from . import open_dataset

    ds = open_dataset(dataset, root, split, bands=bands)
    if any(len(s.images) > 1 for s in ds.scenes):
        raise ValueError("pretraining reads one file per scene; use bands without +DSM")
    return [s.images[0][0] for s in ds.scenes]


def few_windows(distinct: float, overlap: float, patch: int, batch: int) -> str | None:
    """The warning for images that hold fewer windows than a batch draws, with what to try; None when they hold
    enough. `distinct`, `overlap`: `UnlabeledImages.distinct_windows()` and `.window_overlap()`."""
    if distinct >= batch:
        return None
    return (f"the images hold about {distinct:.0f} non-overlapping {patch} px windows, fewer than a batch of {batch}: "
            f"two random windows share {100 * overlap:.0f}% of their area on average, so the instance task's "
            "negatives are views of the same ground. Give more images, or a smaller --patch.")
