"""Reading rasters by window, with errors that name the file.

GeoTIFFs are read window by window through rasterio, so serving a 256x256 patch of a 6000x6000 tile
decodes only the blocks it touches; the most recently used GeoTIFFs stay open per process (reopened in a
forked loader worker), since opening a georeferenced tile cost 2.3-2.6 ms of a 3.8 ms window read. PNG/JPEG
cannot be read partially; the last decoded file is kept per process so the patches of one image in a row cost
one decode (`mpinet data prepare` turns them into tiled GeoTIFFs).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

__all__ = ["DataError", "RasterInfo", "Window", "grid_windows", "raster_info", "read_window", "value_warnings",
           "window_starts"]

_TILED_SUFFIXES = (".tif", ".tiff")


class DataError(ValueError):
    """Bad input data; the message names the file and what to do."""


@dataclass(frozen=True)
class RasterInfo:
    path: Path
    height: int
    width: int
    count: int
    dtype: str


def raster_info(path: str | Path) -> RasterInfo:
    """Size, band count and dtype, read from the header only."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return RasterInfo(path, src.height, src.width, src.count, src.dtypes[0])
    except RasterioIOError as err:
        raise DataError(f"{path}: not a readable raster ({err}). Re-extract it from the release archive.") from err


_last_decoded: dict[str, object] = {"key": None, "array": None}
_OPEN_FILES = 32
_open: OrderedDict[tuple[str, int], rasterio.io.DatasetReader] = OrderedDict()
_open_pid = [os.getpid()]


def _open_tiff(path: Path) -> rasterio.io.DatasetReader:
    """An open reader of `path` from this process's small LRU of open GeoTIFFs (keyed by path and mtime, so a
    rewritten file is reopened). A forked worker starts with an empty cache: handles are not shared."""
    if _open_pid[0] != os.getpid():
        _open.clear()
        _open_pid[0] = os.getpid()
    key = (str(path), path.stat().st_mtime_ns)
    src = _open.get(key)
    if src is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
        _open[key] = src
        while len(_open) > _OPEN_FILES:
            _open.popitem(last=False)[1].close()
    else:
        _open.move_to_end(key)
    return src


def _check_complete(path: Path) -> None:
    """GDAL decodes a truncated PNG/JPEG without an error, filling the missing rows with zeros: check the file
    ends where its format says it must (PNG: Pillow's chunk check, a few ms; JPEG: the end-of-image marker)."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        from PIL import Image

        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as err:  # Pillow raises several types for a broken PNG
            raise RasterioIOError(f"{type(err).__name__}: {err}") from err
    elif suffix in (".jpg", ".jpeg"):
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 2))
            if f.read(2) != b"\xff\xd9":
                raise RasterioIOError("no JPEG end-of-image marker")


def _decode_whole(path: Path) -> np.ndarray:
    key = (str(path), path.stat().st_mtime_ns)
    if _last_decoded["key"] != key:
        _check_complete(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                _last_decoded["array"] = src.read()
        _last_decoded["key"] = key
    return _last_decoded["array"]  # type: ignore[return-value]


def read_window(path: str | Path, window: Window | None = None, bands: list[int] | None = None) -> np.ndarray:
    """Bands x H x W array of `window` (whole raster if None); `bands` are 1-based band indices."""
    path = Path(path)
    try:
        if path.suffix.lower() in _TILED_SUFFIXES:
            return _open_tiff(path).read(bands, window=window)
        array = _decode_whole(path)
        if bands is not None:
            array = array[[b - 1 for b in bands]]
        if window is not None:
            r, c = int(window.row_off), int(window.col_off)
            array = array[:, r : r + int(window.height), c : c + int(window.width)]
        return array
    except RasterioIOError as err:
        raise DataError(
            f"{path}: could not be read ({err}). The file is truncated or corrupt: re-extract it from the release "
            "archive, or remove it and its label."
        ) from err


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Offsets of windows of `size` every `stride` px along `length`; the last one ends at the edge."""
    if length < size:
        raise DataError(f"raster side of {length} px is smaller than the window ({size} px)")
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def grid_windows(height: int, width: int, patch: int | None, stride: int | None = None) -> list[Window]:
    """A deterministic grid of patch x patch windows; the last row/column is aligned to the edge (never padded).

    `patch=None` gives one window over the whole raster.
    """
    if patch is None:
        return [Window(0, 0, width, height)]
    stride = stride or patch
    if height < patch or width < patch:
        raise DataError(f"raster of {height}x{width} px is smaller than patch_size={patch}")
    return [Window(c, r, patch, patch) for r in window_starts(height, patch, stride)
            for c in window_starts(width, patch, stride)]


def _value_findings(path: Path, side: int, value_max: float | None) -> tuple[float | None, int | None, float]:
    """(nodata when every sampled pixel is nodata, the largest 16-bit value when it stays under 4096, the share of
    sampled pixels that are NaN/inf in a band), from a decimated read (`side` px on the longer side)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            nodata, dtype = src.nodata, src.dtypes[0]
            floating = np.issubdtype(np.dtype(dtype), np.floating)
            if nodata is None and not floating and (dtype not in ("uint16", "int16") or value_max is not None):
                return None, None, 0.0  # none can apply: no pixels read (a PNG's decimated read decodes it whole)
            step = max(1, max(src.height, src.width) // side)
            shape = (src.count, max(1, src.height // step), max(1, src.width // step))
            array = src.read(out_shape=shape)
    empty = nodata if nodata is not None and np.all(array == nodata) else None
    not_finite = float((~np.isfinite(array).all(0)).mean()) if floating else 0.0
    top = int(np.nanmax(array)) if not floating else 0
    low_bits = top if value_max is None and dtype in ("uint16", "int16") and 0 < top < 4096 else None
    return empty, low_bits, not_finite


def value_warnings(paths: Sequence[str | Path], side: int = 256, value_max: float | None = None) -> list[str]:
    """What is odd about the rasters' values, one line per kind for the whole set (with the count of files): every
    pixel nodata, or 16-bit integers that never exceed 2^k - 1 for some k < 12 or 12 (scaled by 65535 they use a
    sliver of [0, 1]; not reported when `value_max` sets the full-scale value): the line names the bit depth the
    largest value fits and the --value-max it takes."""
    paths = [Path(p) for p in paths]
    empty, low, holes = [], [], []
    for path in paths:
        nodata, top, not_finite = _value_findings(path, side, value_max)
        if nodata is not None:
            empty.append((path, nodata))
        if top is not None:
            low.append((path, top))
        if not_finite:
            holes.append((path, not_finite))
    def names(found: list[tuple[Path, Any]]) -> str:
        return ", ".join(p.name for p, _ in found[:5]) + (" ..." if len(found) > 5 else "")

    found = []
    if holes:
        share = sum(h for _, h in holes) / len(paths)
        found.append(f"{len(holes)} file(s) hold NaN/inf pixels ({names(holes)}), {100 * share:.1f}% of the "
                     "sampled pixels of all the files: evaluate and predict ignore them (not scored, nodata), "
                     "pretraining stops at them; fill them or give them a nodata value")
    if empty:
        found.append(f"{len(empty)} file(s) hold only nodata ({empty[0][1]:g}) in every sampled pixel "
                     f"({names(empty)}): they add nothing but empty windows")
    if low:
        top = max(t for _, t in low)
        bits = top.bit_length()
        full = 2**bits - 1
        where = low[0][0].parent if len({p.parent for p, _ in low}) == 1 else "several folders"
        found.append(f"{len(low)} file(s) in {where} hold 16-bit values that never exceed {top} ({bits}-bit data?); "
                     f"scaled by 65535 they fill only [0, {top / 65535:.2f}]: pass --value-max {full} (or "
                     f"`value_max: {full}` in a config) so they fill [0, 1], with --mean/--std from "
                     f"`mpinet data stats --value-max {full}`")
    return found
