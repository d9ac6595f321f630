"""Pretraining loader throughput per data format, against what a GPU step needs.

    python bench/bench_loader.py                      # builds release-size look-alikes in runs/bench-loader
    python bench/bench_loader.py --formats loveda-png loveda-tif --windows 200
    python bench/bench_loader.py --formats loveda-png uavid-png --windows-per-file 8   # locality-aware batches

A ResNet-50 MPINet step at 256 px can consume about 850 images/s on an H100, so a 16-core machine must
deliver >= 1700 windows/s with 2x headroom: >= 106 windows per CPU-second. For each format this measures
windows per CPU-second of the package's own pretraining dataset in one process (the figure that scales with
cores), and wall windows/s through a DataLoader with N workers (batches of 32, as the trainer loads them).

Look-alikes: `mpinet data synth` images at release sizes (Potsdam 6000x6000 GeoTIFF tiles, LoveDA 1024x1024
PNG, UAVid 3840x2160 PNG frames), hard-linked under as many names as the release has files (24 Potsdam train
tiles, 1156 LoveDA train images, 200 UAVid train frames), so a one-file cache hits as rarely as on the real
data. `-tif` is the same set after `mpinet data prepare`. Appends rows to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

import torch
from benchdoc import record
from torch.utils.data import DataLoader

from mpinet_hub.data import UnlabeledImages, pretraining_images
from mpinet_hub.data.prepare import prepare_dataset
from mpinet_hub.data.synth import synth_dataset
from mpinet_hub.pretrain.trainer import PretrainBatches
from mpinet_hub.training import EpochBatches

NEED_PER_CORE = 106
# format -> (data set, synth size, distinct images synthesised, release train-file count, prepared)
FORMATS = {
    "potsdam-tif": ("potsdam", 6000, 2, 24, False),
    "loveda-png": ("loveda", 1024, 4, 1156, False),
    "loveda-tif": ("loveda", 1024, 4, 1156, True),
    "uavid-png": ("uavid", 3840, 2, 200, False),
    "uavid-tif": ("uavid", 3840, 2, 200, True),
}


def _replicate(files: list[Path], count: int) -> None:
    """Hard-link the synthesised train images (and their labels) until `count` files exist."""
    for i in range(count - len(files)):
        for src in (files[i % len(files)],):
            for twin in _with_label(src):
                dst = twin.with_name(f"{twin.stem}x{i}{twin.suffix}")
                if not dst.exists():
                    os.link(twin, dst)


def _with_label(image: Path) -> list[Path]:
    if "images_png" in image.parts:  # LoveDA
        return [image, Path(str(image).replace("images_png", "masks_png"))]
    if image.parent.name == "Images":  # UAVid
        return [image, image.parent.parent / "Labels" / image.name]
    return [image]  # Potsdam: tiles are replicated through the file list instead


def build(fmt: str, work: Path) -> list[Path]:
    """The train images of `fmt`'s look-alike, built once under `work`."""
    dataset, size, distinct, count, prepared = FORMATS[fmt]
    raw = work / f"{dataset}-raw"
    if not (raw / ".done").is_file():
        shutil.rmtree(raw, ignore_errors=True)
        tiles = {"potsdam": 3, "loveda": distinct * 2, "uavid": distinct * 2}[dataset]
        synth_dataset(dataset, raw, tiles=tiles, size=size, seed=0)
        if dataset != "potsdam":
            _replicate(pretraining_images(dataset, raw), count)
        (raw / ".done").write_text("")
    root = raw
    if prepared:
        root = work / f"{dataset}-prepared"
        if not (root / ".done").is_file():
            prepare_dataset(raw, root)
            (root / ".done").write_text("")
    files = pretraining_images(dataset, root)
    return (files * (count // len(files) + 1))[:count] if dataset == "potsdam" else files


def per_cpu_second(files: list[Path], windows: int, patch: int, per_file: int, batch: int = 32) -> float:
    images = UnlabeledImages(files, patch_size=patch, seed=1, keep_uint8=True, windows_per_file=per_file)
    batches = EpochBatches(len(images), batch, 1)
    start = time.process_time()
    for step in range(-(-windows // batch)):  # whole batches, as the trainer's workers load them
        images.batch(batches.indices(step))
    return -(-windows // batch) * batch / (time.process_time() - start)


def wall_rate(files: list[Path], workers: int, windows: int, patch: int, per_file: int, batch: int = 32) -> float:
    images = UnlabeledImages(files, patch_size=patch, seed=2, keep_uint8=True, windows_per_file=per_file)
    batches = EpochBatches(len(images), batch, 0, 0, 1)
    steps = max(windows // batch, 10 * max(1, workers)) + 1  # enough that the prefetched batches weigh little
    loader = DataLoader(PretrainBatches(images, batches, 0, steps), batch_size=None, num_workers=workers)
    it = iter(loader)
    next(it)  # worker start-up out of the timing
    start = time.perf_counter()
    n = sum(x.shape[0] for x, _ in it)
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS),
                   help="(default: all)")
    p.add_argument("--work", type=Path, default=Path("runs/bench-loader"),
                   help="where the look-alikes are built, once (default: %(default)s)")
    p.add_argument("--windows", type=int, default=200, help="windows timed per format (default: %(default)s)")
    p.add_argument("--patch", type=int, default=256, help="(default: %(default)s)")
    p.add_argument("--windows-per-file", type=int, default=1,
                   help="consecutive windows of a batch from one file (`pretrain --windows-per-file`; default: 1)")
    p.add_argument("--workers", type=int, default=os.cpu_count(),
                   help="DataLoader workers for the wall rate (default: this machine's cores, %(default)s)")
    a = p.parse_args()
    torch.set_num_threads(1)
    for fmt in a.formats:
        files = build(fmt, a.work)
        rate = per_cpu_second(files, a.windows, a.patch, a.windows_per_file)
        wall = wall_rate(files, a.workers, a.windows, a.patch, a.windows_per_file)
        label = fmt + (f", {a.windows_per_file} windows per file" if a.windows_per_file > 1 else "")
        print(f"{label}: {len(files)} files, {rate:.0f} windows/CPU-s, {wall:.0f} windows/s with {a.workers} "
              "workers", flush=True)
        record("Pretraining loader", platform.machine(), label, str(len(files)), f"{rate:.0f}",
               f"{rate / NEED_PER_CORE:.1f}x", f"{wall:.0f} ({a.workers} workers)")


if __name__ == "__main__":
    main()
