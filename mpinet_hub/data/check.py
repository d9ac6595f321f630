"""`mpinet data check`: validate a data set folder and report what a user must know before training."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .base import SegmentationDataset
from .raster import DataError, grid_windows, read_window, value_warnings

__all__ = ["CheckReport", "check_dataset"]


@dataclass
class CheckReport:
    rows: list[dict] = field(default_factory=list)  # one per split
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unknown_pixels: dict[str, int] = field(default_factory=dict)  # label file -> unknown-colour pixels

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self) -> str:
        lines = [f"{'split':<8} {'scenes':>7} {'labeled':>8} {'missing':>8} {'size':>14}"]
        for r in self.rows:
            lines.append(f"{r['split']:<8} {r['scenes']:>7} {r['labeled']:>8} {r['missing']:>8} {r['size']:>14}")
        if self.unknown_pixels:
            lines.append("unknown label colours/values (mapped to ignore):")
            lines += [f"  {k}: {v} px" for k, v in sorted(self.unknown_pixels.items())]
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"ERROR: {e}" for e in self.errors]
        lines.append("OK" if self.ok else f"{len(self.errors)} error(s)")
        return "\n".join(lines)


def _read_images(ds: SegmentationDataset, report: CheckReport, full: bool = False) -> None:
    """Read each image's last window (a truncated file passes the header reads and fails there; a PNG/JPEG is
    decoded whole either way), or with `full` every window."""
    readable = []
    for scene in ds.scenes:
        for path, bands in scene.images:
            try:
                windows = grid_windows(scene.height, scene.width, min(1024, scene.height, scene.width))
                for window in windows if full else windows[-1:]:
                    read_window(path, window, bands)
            except DataError as err:
                report.errors.append(str(err))
                continue
            readable.append(path)
    report.warnings += value_warnings(readable)  # one line per kind for the split, not one per file


def _count_unknown(ds: SegmentationDataset, report: CheckReport) -> None:
    for scene in ds.scenes:
        if scene.label is None:
            continue
        total = 0
        for window in grid_windows(scene.height, scene.width, min(1024, scene.height, scene.width)):
            try:
                _, unknown = ds.decode_label_file(scene.label, window)
            except DataError as err:
                report.errors.append(str(err))
                break
            total += unknown
        if total:
            report.unknown_pixels[str(scene.label.relative_to(ds.root))] = total


def check_dataset(name: str, root: str | Path, full: bool = False, **kwargs) -> CheckReport:
    """Open every split of `name` under `root` as the readers would, and collect what is wrong; `full` decodes
    every window of every image instead of the last one."""
    from . import DATASETS

    root = Path(root)
    report = CheckReport()
    cls = DATASETS[name]
    for split in cls.split_names:
        if not cls.split_present(root, split):
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ds = cls(root, split=split, **kwargs)
            except DataError as err:
                report.errors.append(f"{split}: {err}")
                report.rows.append(dict(split=split, scenes=0, labeled=0, missing="-", size="-"))
                continue
            _read_images(ds, report, full)
            _count_unknown(ds, report)
        report.warnings += [str(w.message) for w in caught]
        sizes = sorted({(s.height, s.width) for s in ds.scenes})
        size = f"{sizes[0][0]}x{sizes[0][1]}" + (f" (+{len(sizes) - 1})" if len(sizes) > 1 else "")
        missing = len(cls.release_scenes[split]) - len(ds.scenes) if cls.release_scenes else "-"
        report.rows.append(dict(split=split, scenes=len(ds.scenes), labeled=sum(s.label is not None for s in ds.scenes),
                                missing=missing, size=size))
    cls.check_release(root, report)
    return report


