"""Sliding-window inference of one large GeoTIFF tile through `predict_raster` (read, infer, blend, write):
SlidingWindow's defaults for the device (or `--batch`) against one window at a time in NCHW (the CPU default
before 2026-11-26); wall time and peak memory, each mode in a fresh process.

    python bench/bench_sliding_window.py                       # 6000x6000 tile, DeepLabV3+ ResNet-18, CPU
    python bench/bench_sliding_window.py --batch 8             # a fixed batch instead of the default
    python bench/bench_sliding_window.py --arch mpinet_resnet50 --precision bf16 --batch 16   # on a GPU

Peak memory is the process's maximum resident set (CPU) and, on CUDA, torch's peak allocated memory.
Appends a row to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from benchdoc import record
from rasterio.transform import from_origin


def write_tile(path: Path, size: int) -> None:
    rng = np.random.default_rng(0)
    profile = dict(driver="GTiff", height=size, width=size, count=3, dtype="uint8", tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", crs="EPSG:32633",
                   transform=from_origin(366000.0, 5808000.0, 0.05, 0.05))
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 512):
            h = min(512, size - row)
            block = rng.integers(0, 256, (3, h, size), dtype=np.uint8)
            dst.write(block, window=((row, row + h), (0, size)))


def run_mode(args) -> dict:
    from mpinet_hub.downstream import SegmentationModelInfo, SlidingWindow, build_segmentation_model, load_encoder
    from mpinet_hub.downstream.predict import predict_raster
    from mpinet_hub.models import RGB_MEAN, RGB_STD

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build_segmentation_model(load_encoder(f"random:{args.arch}"), "deeplabv3plus", 6)
    info = SegmentationModelInfo([str(i) for i in range(6)], list(RGB_MEAN), list(RGB_STD))
    sw = SlidingWindow(model, info.mean, info.std, window=args.window, overlap=args.overlap,
                       batch_size=args.batch_size or None, device=device, precision=args.precision,
                       channels_last=None if args._mode == "batched" else False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    predict_raster(sw, info, Path(args.tile), Path(args.out), overwrite=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "windows": sw.windows_in(args.size, args.size),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
            "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.machine(),
            "batch": sw.batch_size, "layout": "channels_last" if sw.channels_last else "NCHW"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=6000)
    ap.add_argument("--arch", default="mpinet_resnet18")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=128)
    ap.add_argument("--batch", type=int, default=0,
                    help="windows per forward pass in the first mode (default 0: SlidingWindow's default)")
    ap.add_argument("--precision", default="32", choices=["32", "bf16", "16"])
    ap.add_argument("--_mode", help=argparse.SUPPRESS)
    ap.add_argument("--tile", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._mode:
        print(json.dumps(run_mode(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tile = Path(tmp) / "tile.tif"
        write_tile(tile, args.size)
        results = {}
        for mode, batch in (("batched", args.batch), ("single", 1)):  # batched: the defaults, or --batch
            cmd = [sys.executable, __file__, "--_mode", mode, "--tile", str(tile), "--out", str(Path(tmp) / "c.tif"),
                   "--batch-size", str(batch), "--size", str(args.size), "--arch", args.arch, "--window",
                   str(args.window), "--overlap", str(args.overlap), "--precision", args.precision]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
            print(mode, results[mode], flush=True)
    b, s = results["batched"], results["single"]

    def mem(r):
        return f"{r['peak_rss_mb']:.0f} MB RSS" + (f", {r['peak_cuda_mb']:.0f} MB CUDA" if r["peak_cuda_mb"] else "")

    precision = "fp32" if args.precision == "32" else args.precision
    record("Sliding-window inference", b["device"], f"{args.size}x{args.size}, DeepLabV3+ {args.arch} {precision}, "
           f"window {args.window}/overlap {args.overlap}, {b['windows']} windows",
           f"{b['seconds']:.1f} (batch {b['batch']}, {b['layout']})", mem(b), f"{s['seconds']:.1f}", mem(s),
           f"{s['seconds'] / b['seconds']:.2f}x")


if __name__ == "__main__":
    main()
