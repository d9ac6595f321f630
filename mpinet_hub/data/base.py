"""The dataset API shared by the readers (torchgeo-like): items are dicts of image, mask and meta."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..settings import SettingsError
from .labels import IGNORE_INDEX
from .raster import DataError, Window, grid_windows, raster_info, read_window

__all__ = ["DATA_ROOT_HELP", "VALUE_MAX_HELP", "Scene", "SegmentationDataset", "band_statistics", "check_value_max",
           "release_file", "release_files", "to_unit_float"]

VALUE_MAX_HELP = ("the pixel value read as 1.0, e.g. 4095 for 12-bit data in a uint16 file (default: the file type's "
                  "maximum, 255 or 65535; float files as they are)")


BANDS_HELP = ("Potsdam's band product: RGB, IRRG or RGBIR, optionally +DSM; none given: RGB (other data sets are read "
              "as their files are)")


DATA_ROOT_HELP = ("the data set's root: the folder its release archives unpack into, or for --dataset folder your "
                  "labeled folder (ROOT/classes.yaml; ROOT/train|val|test/images/NAME.* with ROOT/SPLIT/masks/NAME.*)")


class PatchTooLargeError(DataError, SettingsError):
    """A --patch the data's images are smaller than: a setting that does not fit the data (exit 2)."""


def to_unit_float(array: np.ndarray, value_max: float | None = None) -> np.ndarray:
    """Values divided by `value_max`, the value that means full scale (e.g. 4095 for 12-bit data in uint16), as
    float32. Without it, integer rasters are scaled by their dtype's maximum and float rasters kept as they are."""
    if value_max is not None:
        return array.astype(np.float32) / np.float32(value_max)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    return array.astype(np.float32)


def check_value_max(value_max: float | None) -> float | None:
    """`value_max` if it is a usable full-scale value (positive and finite), else a SettingsError saying so."""
    if value_max is not None and not (np.isfinite(value_max) and value_max > 0):
        raise SettingsError(f"value_max (--value-max) {value_max}: give the positive pixel value that means full "
                            "scale, e.g. 4095 for 12-bit data or 10000 for reflectance scaled by 10^4")
    return value_max


def release_files(folder: Path, suffix: str = ".png") -> list[Path]:
    """The files of `folder` that the release names with `suffix`, each as itself or as the tiled `.tif` twin
    that `mpinet data prepare` writes in its place (the twin wins where both exist)."""
    found = {p.stem: p for p in folder.glob(f"*{suffix}")}
    found.update({p.stem: p for p in folder.glob("*.tif")})
    return list(found.values())


def release_file(path: Path) -> Path:
    """`path`, or its tiled `.tif` twin from `mpinet data prepare` when only that exists."""
    twin = path.with_suffix(".tif")
    return twin if not path.is_file() and twin.is_file() else path


@dataclass
class Scene:
    """One whole tile/frame: the image file(s) whose bands are stacked, and its label file.

    Each image entry is (path, 1-based bands to read); the file must hold exactly that many bands.
    """

    id: str
    images: list[tuple[Path, list[int] | None]]
    label: Path | None
    height: int = 0
    width: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [p for p, _ in self.images] + ([self.label] if self.label else [])


class SegmentationDataset(Dataset):
    """Base of Potsdam, LoveDA and UAVid.

    Subclasses set `classes`, `palette`, `split_names` and implement `_find_scenes` and `decode_label`.
    With `patch_size`, items are a deterministic grid of windows over every scene; without it, whole scenes.
    `value_max`: the pixel value that means full scale (see `to_unit_float`); default the dtype's maximum.
    """

    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    ignore_index = IGNORE_INDEX
    split_names: tuple[str, ...] = ()
    labeled_splits: tuple[str, ...] = ()
    # Facts the commands read instead of comparing data set names (a torchgeo dataset class carries its own too):
    own_imagery = False  # a folder of the user's own images (classes.yaml), not a published data set
    band_products: tuple[str, ...] = ()  # the choices of the reader's `bands=`; (): the files' bands, as they are
    label_products: tuple[str, ...] = ()  # the choices of the reader's `labels=` (label products of the release)
    release_scenes: dict[str, list[str]] = {}  # split -> the scenes of the official release, to count missing ones
    # Tiles of some releases are a pixel off in size; a larger difference is a real mismatch.
    size_tolerance_px = 1

    @classmethod
    def labeled_splits_at(cls, root: str | Path) -> tuple[str, ...]:
        """The splits with labels under `root` (a published data set's are fixed)."""
        return cls.labeled_splits

    @classmethod
    def split_present(cls, root: str | Path, split: str) -> bool:
        """Whether `root` has `split` at all (a published data set has every split it names)."""
        return True

    @classmethod
    def product_band_names(cls, bands: str | None) -> tuple[str, ...] | None:
        """The bands read with `bands=` where the reader chooses them (None: the files decide)."""
        return None

    @classmethod
    def check_release(cls, root: Path, report: Any) -> None:
        """Add the release's known defects found under `root` to `mpinet data check`'s report."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        patch_size: int | None = None,
        stride: int | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        value_max: float | None = None,
    ) -> None:
        if split not in self.split_names:
            raise ValueError(f"{type(self).__name__}: unknown split {split!r}; choose one of {self.split_names}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data set folder not found")
        self.split = split
        self.patch_size = patch_size
        self.stride = stride
        self.transforms = transforms
        self.value_max = check_value_max(value_max)
        self.has_labels = split in self.labeled_splits
        self.scenes = self._find_scenes()
        if not self.scenes:
            raise DataError(f"{self.root}: no {type(self).__name__} {split} images found ({self._layout_hint()})")
        for scene in self.scenes:
            self._measure(scene)
        small = [s for s in self.scenes if patch_size is not None and min(s.height, s.width) < patch_size]
        if small:
            fits = min(min(s.height, s.width) for s in self.scenes)
            raise PatchTooLargeError(
                f"{small[0].images[0][0]}: {small[0].height}x{small[0].width} px is smaller than the patch size "
                f"{patch_size} ({len(small)} of {len(self.scenes)} {split} scenes are); pass --patch {fits} or less "
                "(where the command has --crop, no larger)")
        self.windows: list[tuple[int, Window]] = [
            (i, w) for i, s in enumerate(self.scenes) for w in grid_windows(s.height, s.width, patch_size, stride)
        ]
        self._warned: set[Path] = set()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_bands(self) -> int:
        """Bands of an image item (all scenes have the same files), from the file headers."""
        return sum(len(bands) if bands is not None else raster_info(path).count
                   for path, bands in self.scenes[0].images)

    # --- for subclasses
    def _find_scenes(self) -> list[Scene]:
        raise NotImplementedError

    def _layout_hint(self) -> str:
        return "expected: the folder the official archive unpacks into; `mpinet data synth` writes a miniature copy"

    def decode_label_file(self, path: Path, window: Window | None = None) -> tuple[np.ndarray, int]:
        """`decode_label` of a window of the label file `path`; its errors name the file."""
        try:
            return self.decode_label(read_window(path, window))
        except DataError as err:
            raise err if str(path) in str(err) else DataError(f"{path}: {err}") from err

    def decode_label(self, array: np.ndarray) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def _scene(self, scene_id: str, images: list[tuple[Path, list[int] | None]], label: Path) -> Scene:
        """A scene with `label` on labeled splits (where it must exist) and without one on the others."""
        if not self.has_labels:
            return Scene(scene_id, images, None)
        if not label.is_file():
            raise DataError(f"{label}: label of scene {scene_id} not found (image {images[0][0].name} exists)")
        return Scene(scene_id, images, label)

    # --- shared
    def _measure(self, scene: Scene) -> None:
        """Sizes from headers; a pixel off is cropped to the common extent (with a warning), more is an error."""
        sizes = {}
        for path, bands in scene.images:
            info = raster_info(path)
            if bands is not None and info.count != len(bands):
                raise DataError(f"{path}: has {info.count} band(s), but {len(bands)} were expected for this file "
                                f"(bands={getattr(self, 'bands', '?')!r}); is it the right product folder?")
            sizes[path] = (info.height, info.width)
        if scene.label is not None:
            info = raster_info(scene.label)
            sizes[scene.label] = (info.height, info.width)
        heights = [h for h, _ in sizes.values()]
        widths = [w for _, w in sizes.values()]
        if max(heights) - min(heights) > self.size_tolerance_px or max(widths) - min(widths) > self.size_tolerance_px:
            listing = ", ".join(f"{_relative(p, self.root)}: {h}x{w}" for p, (h, w) in sizes.items())
            raise DataError(f"scene {scene.id}: image and label sizes differ ({listing}); they must cover the same "
                            "pixels. Re-extract the files or remove the scene.")
        scene.height, scene.width = min(heights), min(widths)
        if len(set(sizes.values())) > 1:
            note = (f"scene {scene.id}: files differ by a pixel in size "
                    f"({', '.join(f'{p.name} {h}x{w}' for p, (h, w) in sizes.items())}); "
                    f"using the common extent {scene.height}x{scene.width} from the top-left corner")
            scene.notes.append(note)
            warnings.warn(note, stacklevel=3)

    def __len__(self) -> int:
        return len(self.windows)

    def read_image(self, scene: Scene, window: Window) -> np.ndarray:
        parts = [read_window(path, window, bands) for path, bands in scene.images]
        image = np.concatenate([to_unit_float(p, self.value_max) for p in parts], axis=0)
        return image

    def read_mask(self, scene: Scene, window: Window) -> np.ndarray:
        mask, unknown = self.decode_label_file(scene.label, window)
        if unknown and scene.label not in self._warned:
            self._warned.add(scene.label)
            warnings.warn(f"{scene.label}: {unknown} pixel(s) of unknown label colour/value in window "
                          f"{window_tuple(window)} mapped to ignore ({self.ignore_index})", stacklevel=2)
        return mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene_index, window = self.windows[index]
        scene = self.scenes[scene_index]
        item: dict[str, Any] = {
            "image": torch.from_numpy(self.read_image(scene, window)),
            "meta": {"scene": scene.id, "file": str(scene.images[0][0]), "window": window_tuple(window)},
        }
        if self.has_labels and scene.label is not None:
            item["mask"] = torch.from_numpy(self.read_mask(scene, window).astype(np.int64))
        if self.transforms is not None:
            item = self.transforms(item)
        return item


def band_statistics(ds: SegmentationDataset, desc: str = "stats") -> tuple[list[float], list[float], int,
                                                                            dict[str, int]]:
    """Per-band (mean, std) over every finite pixel of `ds`'s images, the pixel count, and per file the pixels left
    out for a NaN/inf in any band: what `mpinet data stats` prints and a study normalises non-RGB imagery with."""
    from ..progress import progress

    count, total, squares, skipped = 0, 0.0, 0.0, {}
    for i in progress(range(len(ds)), desc=desc, unit="scene"):
        item = ds[i]
        x = item["image"].double().flatten(1)
        finite = torch.isfinite(x).all(0)  # a pixel with NaN/inf in any band is left out of every band's sums
        if not finite.all():
            skipped[item["meta"]["file"]] = int((~finite).sum())
            x = x[:, finite]
        count, total, squares = count + x.shape[1], total + x.sum(1), squares + (x * x).sum(1)
    if not count:
        raise DataError(f"{ds.root}: no finite pixels in the {ds.split} split")
    mean = total / count
    std = (squares / count - mean**2).clamp_min(0).sqrt()
    return mean.tolist(), std.tolist(), count, skipped


def window_tuple(window: Window) -> tuple[int, int, int, int]:
    """(row_off, col_off, height, width)."""
    return int(window.row_off), int(window.col_off), int(window.height), int(window.width)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
