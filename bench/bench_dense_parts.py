"""Seconds of each part of MPINet's dense branches, forward and backward, alone, at the study's cell shape.

    OMP_NUM_THREADS=1 python bench/bench_dense_parts.py            # ResNet-18, batch 32 (64 views), 128 px

The parts the MPINet step adds to MoCo v2's (docs/benchmarks.md): the three RoIAlign grids (C2-C4 of a
ResNet-18 at 128 px, 64 views, 14 x 14 cells), the fusion pixel head (online forward and backward; the target's
forward), its 3x3 conv alone, and the pixel loss in one direction (6272 anchors, 4096 sampled negatives).
Median of --repeat timings after one untimed call. Prints one line per part; records nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from mpinet_hub.pretrain.losses import PixelInfoNCELoss
from mpinet_hub.pretrain.method import STRIDES, FusionPixelHead, roi_grid


def median_seconds(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=int, default=64, help="views per step, both of each image (default: %(default)s)")
    p.add_argument("--grid", type=int, default=14, help="cells per side (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="timed calls, median printed (default: %(default)s)")
    a = p.parse_args()
    torch.manual_seed(0)
    n, grid = a.views, a.grid
    feats = [torch.randn(n, c, s, s, requires_grad=True) for c, s in ((64, 32), (128, 16), (256, 8))]
    head = FusionPixelHead([64, 128, 256])
    rois = [torch.tensor([[10.0, 12.0, 100.0, 110.0]]) + torch.rand(1, 4) * 5 for _ in range(n)]

    def grids():
        return [roi_grid(f, rois, grid, s, lat) for f, s, lat in zip(feats, STRIDES, head.lateral)]

    fixed = [(g.detach().requires_grad_(), projected) for g, projected in grids()]
    conv = nn.Conv2d(256, 256, 3, padding=1, bias=False)
    x = torch.randn(n, 256, grid, grid, requires_grad=True)
    loss = PixelInfoNCELoss(0.3, None, 4096, "other-images")
    online = F.normalize(torch.randn(n // 2, 128, grid, grid), dim=1).requires_grad_()
    target = F.normalize(torch.randn(n // 2, 128, grid, grid), dim=1)

    def target_head():
        with torch.no_grad():
            head(fixed)

    parts = {"RoIAlign grids, 3 levels": lambda: sum(g.sum() for g, _ in grids()).backward(),
             "fusion pixel head, online": lambda: head(fixed).sum().backward(),
             "fusion pixel head, target forward": target_head,
             "its 3x3 conv alone": lambda: conv(x).sum().backward(),
             "pixel loss, one direction": lambda: loss(online, target).backward()}
    for name, fn in parts.items():
        print(f"{name}: {median_seconds(fn, a.repeat):.3f} s", flush=True)


if __name__ == "__main__":
    main()
