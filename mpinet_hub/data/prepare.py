"""`mpinet data prepare`: a one-time copy of a data set whose PNG/JPEG images become tiled GeoTIFFs.

A PNG or JPEG cannot be read partially: every training window pays a decode of the whole image (a UAVid
frame: 170-470 ms), and under random sampling the one-image cache almost never hits. A tiled, compressed
GeoTIFF serves a window by decoding only the blocks it touches. The copy keeps the release layout, file for
file: `images_png/0001.png` becomes `images_png/0001.tif`, labels likewise; every other file (classes.yaml,
world files, notes) is copied unchanged. Every reader accepts the `.tif` twin where its layout names a PNG,
so OUT is a data root for the same data set, with the same scenes, splits and labels.

Lossless: pixels are written as decoded (deflate compression, horizontal predictor for 8/16-bit data), and
each file is read back and compared with its source before it is kept. Resumable: each output is written to
a temporary name and renamed when verified, so a stopped run leaves no half-written file, and a rerun skips
what is done.
"""

from __future__ import annotations

import errno
import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from ..atomic import atomic_output, remove_orphaned_partials, write_text_atomic
from ..progress import progress
from .raster import DataError, read_window

__all__ = ["DECODE_WHOLE_SUFFIXES", "PrepareReport", "prepare_dataset", "verify_prepared", "windowable_twin"]

DECODE_WHOLE_SUFFIXES = (".png", ".jpg", ".jpeg")
MARKER = ".mpinet-prepared.json"
BLOCK = 256


@dataclass
class PrepareReport:
    converted: int = 0
    copied: int = 0
    skipped: int = 0  # already done by an earlier run
    bytes_in: int = 0
    bytes_out: int = 0
    files: list[str] = field(default_factory=list)

    def render(self) -> str:
        ratio = f", {self.bytes_out / self.bytes_in:.2f}x the source size" if self.bytes_in else ""
        return (f"{self.converted} image(s) converted to tiled GeoTIFF, {self.copied} other file(s) copied, "
                f"{self.skipped} already done{ratio}")


def windowable_twin(path: Path) -> Path:
    """The `.tif` a PNG/JPEG becomes in a prepared copy; a reader prefers it where both exist."""
    return path.with_suffix(".tif")


def _write_tiled(src: Path, dst: Path) -> None:
    array = read_window(src)  # (bands, H, W), exactly as every reader decodes it
    bands, height, width = array.shape
    profile = {"driver": "GTiff", "height": height, "width": width, "count": bands, "dtype": array.dtype.name,
               "compress": "deflate", "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK,
               "interleave": "pixel"}
    if array.dtype in (np.uint8, np.uint16, np.int16, np.uint32, np.int32):
        profile["predictor"] = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(src) as source:
            if source.crs is not None:
                profile.update(crs=source.crs, transform=source.transform)
        try:
            with rasterio.open(dst, "w", **profile) as out:
                out.write(array)
            with rasterio.open(dst) as back:
                written = back.read()
        except rasterio.errors.RasterioError as err:  # GDAL's "Write/Read failed": a full or failing disk
            raise OSError(errno.EIO, f"the converted image does not read back ({err})") from err
    if written.shape != array.shape or not np.array_equal(written, array):
        raise OSError(errno.EIO, f"the converted image reads back other than {src}")


def _same_size_as(src: Path) -> Callable[[Path], None]:
    def verify(copy: Path) -> None:
        if copy.stat().st_size != src.stat().st_size:
            raise OSError(errno.EIO, f"the copy is {copy.stat().st_size} bytes, {src} {src.stat().st_size}")
    return verify


_UNREADABLE = "unreadable marker"


def _read_marker(marker: Path) -> dict | None:
    """The marker's record; an unreadable one (cut short by a full disk or a kill before markers were written
    atomically) is taken as a stopped prepare, with a warning, since no other program writes that name."""
    if not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text())
        if isinstance(record, dict) and "source" in record:
            return record
    except (ValueError, OSError):
        pass
    warnings.warn(f"{marker} is unreadable (a prepare stopped by a full disk or a kill?); taking the folder as a "
                  "stopped prepare: finished files are kept and the rest is written", stacklevel=3)
    return {"source": _UNREADABLE}


def prepare_dataset(root: str | Path, out: str | Path, show_progress: bool = True) -> PrepareReport:
    """Copy the data set at `root` to `out`, PNG/JPEG images as tiled GeoTIFFs (see the module docstring).

    `out` must be new, empty, or an earlier (possibly stopped) prepare of the same `root`.
    """
    root, out = Path(root).resolve(), Path(out).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: data set folder not found")
    if out == root or root in out.parents:
        raise DataError(f"{out}: the prepared copy must lie outside the source folder {root}")
    marker = out / MARKER
    if out.exists() and any(out.iterdir()):
        previous = _read_marker(marker)
        if previous is None or previous["source"] not in (str(root), _UNREADABLE):
            raise DataError(f"{out}: not empty and not a prepared copy of {root}; choose a new folder "
                            "(nothing was written)")
    sources = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in sources:
        if path.suffix.lower() in DECODE_WHOLE_SUFFIXES and windowable_twin(path).is_file():
            raise DataError(f"{path} and {windowable_twin(path)} both exist; a prepared copy would have two files "
                            "for one scene. Remove one of them.")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(marker, json.dumps({"source": str(root), "format": "tiled GeoTIFF, deflate", "block": BLOCK}))
    remove_orphaned_partials(out, recursive=True)  # a killed prepare's; a live one's are left alone
    report = PrepareReport()
    for path in progress(sources, desc="prepare", unit="file", disable=not show_progress):
        relative = path.relative_to(root)
        convert = path.suffix.lower() in DECODE_WHOLE_SUFFIXES
        target = out / (windowable_twin(relative) if convert else relative)
        if target.is_file():
            report.skipped += 1
            continue
        with atomic_output(target, verify=None if convert else _same_size_as(path)) as partial:
            if convert:
                _write_tiled(path, partial)  # reads its result back
            else:
                shutil.copy2(path, partial)
        report.bytes_in += path.stat().st_size
        report.bytes_out += target.stat().st_size
        if convert:
            report.converted += 1
        else:
            report.copied += 1
        report.files.append(str(relative))
    return report


def verify_prepared(dataset: str, root: str | Path, out: str | Path) -> str:
    """Check that `out` opens as `dataset` with the same scenes per split as `root`; returns a one-line summary."""
    from . import DATASETS

    counts = []
    for split in DATASETS[dataset].split_names:
        try:
            before = DATASETS[dataset](root, split=split)
        except DataError:
            continue  # a split the release does not have
        after = DATASETS[dataset](out, split=split)
        ids = ([s.id for s in before.scenes], [s.id for s in after.scenes])
        if ids[0] != ids[1]:
            raise DataError(f"{out}: {split} split has {len(ids[1])} scenes, the source {len(ids[0])}; "
                            "rerun `mpinet data prepare` to complete it")
        if any(s.label is None for s in after.scenes) != any(s.label is None for s in before.scenes):
            raise DataError(f"{out}: {split} labels missing in the prepared copy; rerun `mpinet data prepare`")
        counts.append(f"{split} {len(ids[1])}")
    return f"{out} opens as {dataset} with the source's scenes ({', '.join(counts)})"
