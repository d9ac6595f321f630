"""Class maps for your own imagery: GeoTIFF in -> single-band uint8 GeoTIFF out, with the input's CRS and
transform, written strip by strip so rasters larger than memory stream through with bounded memory.

Pixels that are nodata in every input band, or NaN/inf in any band, are written as 255, the output's nodata
value (NaN/inf enter the model as 0, so they do not spread to their neighbours' predictions; their count is
reported in a warning).
A non-georeferenced input (plain PNG/JPEG/TIFF) gets a PNG (or, if asked for, an ungeoreferenced TIFF) and a
warning. Outputs are written to a temporary file of their own, read back, and renamed (`mpinet_hub.atomic`), so
a failure (a full disk included) leaves nothing behind and is never reported as success, and an existing output,
or one another process wrote meanwhile, is refused unless `overwrite`.
"""

from __future__ import annotations

import errno
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning

from ..atomic import atomic_output, remove_orphaned_partials
from ..data import DataError, Window, raster_info, read_window, to_unit_float
from ..progress import progress
from .inference import SlidingWindow
from .model import SegmentationModelInfo
from .plots import IGNORE_COLOUR, preview_png, thumbnail_of_strip, thumbnail_step

__all__ = ["INPUT_SUFFIXES", "NODATA_CLASS", "check_output", "find_inputs", "is_georeferenced", "predict_raster"]

INPUT_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
NODATA_CLASS = 255  # written where every input band equals the input's nodata value


def find_inputs(path: Path) -> list[Path]:
    """`path` itself, or the rasters directly inside a folder (sorted)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in INPUT_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"{path}: no rasters ({', '.join(INPUT_SUFFIXES)}) in this folder")
        return files
    raise FileNotFoundError(f"{path}: no such file or folder")


def _georeferencing(path: Path) -> tuple[bool, dict, float | None]:
    """(georeferenced?, its crs/transform for the output profile, nodata value), from the header."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            georeferenced = src.crs is not None or not src.transform.is_identity or bool(src.gcps[0])
            return georeferenced, {"crs": src.crs, "transform": src.transform} if georeferenced else {}, src.nodata


def is_georeferenced(path: Path) -> bool:
    return _georeferencing(path)[0]


def default_output(src: Path, out_dir: Path) -> Path:
    """`out_dir/STEM_classes.tif`, or .png for a non-georeferenced input."""
    suffix = ".tif" if is_georeferenced(src) else ".png"
    return out_dir / f"{src.stem}_classes{suffix}"


def _palette_lut(palette: list[list[int]] | None, classes: int) -> dict[int, tuple[int, int, int, int]]:
    colours = palette or [[int(v) for v in np.random.default_rng(i).integers(0, 256, 3)] for i in range(classes)]
    lut = {i: (*map(int, c), 255) for i, c in enumerate(colours)}
    lut[NODATA_CLASS] = (*IGNORE_COLOUR, 0)
    return lut


def check_output(dst: Path, overwrite: bool = False) -> None:
    """Refuse an output that exists (without `overwrite`), has another format, or cannot be written."""
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass --overwrite to replace it")
    if dst.suffix.lower() not in (".png", ".tif", ".tiff"):
        raise ValueError(f"{dst}: write .tif/.tiff (GeoTIFF) or .png")
    folder = next((p for p in (dst.parent, *dst.parent.parents) if p.exists()), None)
    if folder is None or not os.access(folder, os.W_OK):
        raise PermissionError(f"{dst}: {folder} is not writable; choose another --output")


def predict_raster(sw: SlidingWindow, info: SegmentationModelInfo, src: Path, dst: Path,
                   bands: list[int] | None = None, preview: bool = False, overwrite: bool = False) -> Path:
    """Write the class map of `src` to `dst` (.tif/.tiff: GeoTIFF; .png: paletted PNG); returns `dst`.

    A GeoTIFF carries the class names: band description `classes: 0=name, 1=name, ...` (what QGIS shows) and a
    `CLASS_NAMES` tag (JSON list)."""
    meta = raster_info(src)
    check_output(dst, overwrite)
    if bands is None:
        if meta.count != info.in_chans:
            example = ",".join(map(str, range(1, info.in_chans + 1)))
            raise ValueError(f"{src} has {meta.count} band(s) but the model takes {info.in_chans} ({info.bands}); "
                             f"choose them with --bands, e.g. --bands {example}")
    else:
        if len(bands) != info.in_chans or max(bands) > meta.count or min(bands) < 1:
            raise ValueError(f"--bands {bands}: the model takes {info.in_chans} band(s) and {src} has {meta.count}")
    georeferenced, geo_profile, nodata = _georeferencing(src)
    as_png = dst.suffix.lower() == ".png"
    if not georeferenced:
        warnings.warn(f"{src} has no georeferencing (CRS/transform); {dst.name} is written without it",
                      stacklevel=2)
    lut = _palette_lut(info.palette, len(info.classes))
    step = thumbnail_step(meta.height, meta.width, side=1024)
    thumb = []
    profile = {"driver": "GTiff", "height": meta.height, "width": meta.width, "count": 1, "dtype": "uint8",
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate", **geo_profile}
    floating = np.issubdtype(np.dtype(meta.dtype), np.floating)
    if nodata is not None or floating:  # mosaics' empty borders (and NaN pixels) stay empty instead of getting a class
        profile["nodata"] = NODATA_CLASS
    non_finite = 0
    remove_orphaned_partials(dst.parent)  # a killed predict's; a running one's are left alone
    # GDAL's own lines for a write that fails (a full disk: `ERROR 1: TIFFWriteDirectorySec ...`) go to the null
    # device: the failure is found by reading the map back and said in one line naming the file and the space
    with rasterio.Env(CPL_LOG=os.devnull), \
            atomic_output(dst, overwrite=overwrite, verify=_reads_back(meta.height, meta.width)) as tmp, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # an ungeoreferenced TIFF, if asked for
        full = np.empty((meta.height, meta.width), np.uint8) if as_png else None
        sink = None if as_png else rasterio.open(tmp, "w", photometric="palette", **profile)
        if sink is not None:  # before any pixel: GDAL cannot change the photometric tag once data is written
            sink.write_colormap(1, lut)
        try:
            with progress(total=sw.windows_in(meta.height, meta.width), unit="window", desc=src.name) as bar:
                def read(w: Window) -> np.ndarray:  # NaN/inf would spread through the convolutions: zeroed
                    values = to_unit_float(read_window(src, w, bands), info.value_max)
                    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)

                for top, logits in sw.strips(read, meta.height, meta.width, bar):
                    strip = logits.argmax(0).to(torch.uint8).cpu().numpy()
                    if nodata is not None or floating:
                        raw = read_window(src, Window(0, top, meta.width, strip.shape[0]), bands)
                        if nodata is not None:
                            strip[np.all(raw == nodata, axis=0)] = NODATA_CLASS
                        if floating:
                            bad = ~np.all(np.isfinite(raw), axis=0)
                            strip[bad] = NODATA_CLASS
                            non_finite += int(bad.sum())
                    if full is not None:
                        full[top : top + strip.shape[0]] = strip
                    else:
                        sink.write(strip[None], window=((top, top + strip.shape[0]), (0, meta.width)))
                    thumb.append(thumbnail_of_strip(strip, top, step))
            if sink is not None:
                names = ", ".join(f"{i}={name}" for i, name in enumerate(info.classes))
                sink.set_band_description(1, f"classes: {names}")
                sink.update_tags(CLASS_NAMES=json.dumps(list(info.classes)), NODATA_CLASS=str(NODATA_CLASS))
        finally:
            if sink is not None:
                sink.close()
        if full is not None:
            image = Image.fromarray(full, mode="P")
            image.putpalette([v for i in range(256) for v in lut.get(i, (0, 0, 0, 0))[:3]])
            image.save(tmp, format="PNG")
        if preview:  # before the map is published: a failed preview leaves no map that a rerun would refuse
            preview_png(None, None, np.concatenate(thumb),
                        info.palette or [lut[i][:3] for i in range(len(info.classes))],
                        dst.with_name(f"{dst.stem}.preview.png"), title=f"{src.name}: predicted classes",
                        ignore_index=NODATA_CLASS, class_names=info.classes)
    if non_finite:
        warnings.warn(f"{src}: {non_finite} pixel(s) with NaN/inf in a band were written as nodata "
                      f"({NODATA_CLASS}) in {dst.name}", stacklevel=2)
    return dst


def _reads_back(height: int, width: int) -> Callable[[Path], None]:
    """A check that a written class map opens with the raster's size and decodes block by block."""
    def verify(path: Path) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as written:
                    size = (written.height, written.width)
                    for _, window in written.block_windows(1):
                        written.read(1, window=window)
        except rasterio.errors.RasterioError as err:
            raise OSError(errno.EIO, f"the written file does not read back: {err}") from err
        if size != (height, width):
            raise OSError(errno.EIO, f"the written file reads back as {size[0]}x{size[1]} px")
    return verify
