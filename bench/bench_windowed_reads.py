"""Patches/s served from a 6000x6000 GeoTIFF tile by windowed reads vs decoding the whole tile per patch.

    python bench/bench_windowed_reads.py [--size 6000] [--patches 200]

Appends a row to docs/benchmarks.md (machine, date, both rates and their ratio).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from benchdoc import record
from rasterio.windows import Window

from mpinet_hub.data.synth import _write_tif, render_urban_scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=6000)
    ap.add_argument("--patches", type=int, default=200)
    ap.add_argument("--whole-reads", type=int, default=5, help="whole-tile decodes to time (they are slow)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tile = Path(tmp) / "top_potsdam_2_10_RGB.tif"
        image, _, _ = render_urban_scene((args.size, args.size), rng)
        _write_tif(tile, image[:3])  # tiled 256x256 deflate, like a cloud-optimised tile
        starts = rng.integers(0, args.size - 256, (args.patches, 2))
        t = time.perf_counter()
        with rasterio.open(tile) as src:
            for r, c in starts:
                src.read(window=Window(int(c), int(r), 256, 256))
        windowed = args.patches / (time.perf_counter() - t)
        t = time.perf_counter()
        for r, c in starts[: args.whole_reads]:
            with rasterio.open(tile) as src:
                src.read()[:, r : r + 256, c : c + 256]
        whole = args.whole_reads / (time.perf_counter() - t)
    record("Windowed reads", platform.processor() or platform.machine(), f"{args.size}x{args.size} tiled deflate "
           "GeoTIFF", f"{windowed:.1f}", f"{whole:.2f}", f"{windowed / whole:.0f}x")


if __name__ == "__main__":
    main()
