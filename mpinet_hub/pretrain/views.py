"""Two views of each image with known geometry, made batched on the images' device.

A view is: a random resized crop (box in source pixels), resized to `out` px with RoIAlign (one batched
op), then an optional horizontal flip, vertical flip and `k` counter-clockwise 90-degree rotations.
From the two boxes we get the overlap in source coordinates and its box in each view's own (transformed)
coordinates; `undo_geometry` maps a grid sampled on that box back to the source orientation, so cell
(i, j) of both views covers the same ground.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import kornia.augmentation as K
import torch
from torch import nn
from torchvision.ops import roi_align

__all__ = ["MultibandJitter", "PhotometricAugment", "TwoViews", "ViewGeometry", "is_rgb", "make_two_views",
           "map_box_to_view", "undo_geometry"]


@dataclass
class ViewGeometry:
    """Per-sample geometry of a batch of views (all tensors of length B)."""

    boxes: torch.Tensor  # (B, 4) x0, y0, x1, y1 of the crop in source pixels
    hflip: torch.Tensor  # (B,) bool
    vflip: torch.Tensor  # (B,) bool
    rot: torch.Tensor  # (B,) int, counter-clockwise quarter turns


@dataclass
class TwoViews:
    view1: torch.Tensor  # (B, C, out, out)
    view2: torch.Tensor
    geom1: ViewGeometry
    geom2: ViewGeometry
    overlap: torch.Tensor  # (B, 4) overlap box in source pixels
    overlap1: torch.Tensor  # (B, 4) overlap box in view-1 pixels
    overlap2: torch.Tensor


def _random_boxes(b: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
                  gen: torch.Generator, device: torch.device) -> torch.Tensor:
    area = h * w * torch.empty(b).uniform_(*scale, generator=gen)
    log_r = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = torch.exp(log_r)
    cw = torch.sqrt(area * r).clamp(8, w)
    ch = torch.sqrt(area / r).clamp(8, h)
    x0 = torch.rand(b, generator=gen) * (w - cw)
    y0 = torch.rand(b, generator=gen) * (h - ch)
    return torch.stack([x0, y0, x0 + cw, y0 + ch], 1).to(device)


def _intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.maximum(a[:, 0], b[:, 0]), torch.maximum(a[:, 1], b[:, 1]),
                        torch.minimum(a[:, 2], b[:, 2]), torch.minimum(a[:, 3], b[:, 3])], 1)


def _area(box: torch.Tensor) -> torch.Tensor:
    return (box[:, 2] - box[:, 0]).clamp_min(0) * (box[:, 3] - box[:, 1]).clamp_min(0)


def map_box_to_view(box: torch.Tensor, geom: ViewGeometry, out: int) -> torch.Tensor:
    """A source-pixel box -> the same ground's box in the (cropped, resized, flipped, rotated) view."""
    crop = geom.boxes
    sx = out / (crop[:, 2] - crop[:, 0])
    sy = out / (crop[:, 3] - crop[:, 1])
    x0, x1 = (box[:, 0] - crop[:, 0]) * sx, (box[:, 2] - crop[:, 0]) * sx
    y0, y1 = (box[:, 1] - crop[:, 1]) * sy, (box[:, 3] - crop[:, 1]) * sy
    x0, x1 = torch.where(geom.hflip, out - x1, x0), torch.where(geom.hflip, out - x0, x1)
    y0, y1 = torch.where(geom.vflip, out - y1, y0), torch.where(geom.vflip, out - y0, y1)
    for _ in range(3):  # torch.rot90 (k=1) sends (x, y) to (y, out - x); apply it k times per sample
        turn = geom.rot > _
        nx0, nx1, ny0, ny1 = y0, y1, out - x1, out - x0
        x0, x1, y0, y1 = (torch.where(turn, n, o) for n, o in ((nx0, x0), (nx1, x1), (ny0, y0), (ny1, y1)))
    return torch.stack([x0, y0, x1, y1], 1)


@functools.lru_cache(maxsize=16)
def _orientation_index(size: int, inverse: bool, device: torch.device) -> torch.Tensor:
    """(16, size * size): for each transform code (hflip * 8 + vflip * 4 + quarter turns), the source cell of
    every cell of the transformed (or, with `inverse`, the restored) square image."""
    cells = torch.arange(size * size).view(size, size)
    index = []
    for code in range(16):
        h, v, k = bool(code & 8), bool(code & 4), code & 3
        part = cells
        if not inverse:
            part = part.flip(-1) if h else part
            part = part.flip(-2) if v else part
            part = torch.rot90(part, k, dims=(-2, -1))
        else:
            part = torch.rot90(part, -k, dims=(-2, -1))
            part = part.flip(-2) if v else part
            part = part.flip(-1) if h else part
        index.append(part.reshape(-1))
    return torch.stack(index).to(device)


def _apply_orientation(x: torch.Tensor, geom: ViewGeometry, inverse: bool = False) -> torch.Tensor:
    """Flip/rotate each sample of a square (B, C, S, S) batch by its geometry (or undo it).

    One gather through a precomputed cell index per transform: no host round trip and no per-transform
    loop, which on a GPU had stalled every step at each of the eight grids it undoes.
    """
    b, c, size, _ = x.shape
    codes = (geom.hflip.long() * 8 + geom.vflip.long() * 4 + geom.rot.long()).to(x.device)
    index = _orientation_index(size, inverse, x.device)[codes]  # (B, S*S)
    out = x.reshape(b, c, size * size).gather(2, index[:, None, :].expand(b, c, size * size))
    return out.view(b, c, size, size)


def undo_geometry(grid: torch.Tensor, geom: ViewGeometry) -> torch.Tensor:
    """(B, D, S, S) grid sampled on a view's overlap box -> source orientation."""
    return _apply_orientation(grid, geom, inverse=True)


def make_two_views(images: torch.Tensor, out: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), min_overlap: float = 0.1,
                   flips: bool = True, rotations: bool = True, generator: torch.Generator | None = None,
                   max_tries: int = 20) -> TwoViews:
    """Crop, resize and orient two views of every image of (B, C, H, W); pairs whose overlap is below
    `min_overlap` of the smaller crop are re-drawn (after `max_tries`, view 2 reuses view 1's box)."""
    b, _, h, w = images.shape
    gen = generator or torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
    dev = images.device
    box1 = _random_boxes(b, h, w, scale, ratio, gen, dev)
    box2 = _random_boxes(b, h, w, scale, ratio, gen, dev)
    for _ in range(max_tries):
        bad = _area(_intersection(box1, box2)) < min_overlap * torch.minimum(_area(box1), _area(box2))
        if not bad.any():
            break
        box2[bad] = _random_boxes(int(bad.sum()), h, w, scale, ratio, gen, dev)
    bad = _area(_intersection(box1, box2)) < min_overlap * torch.minimum(_area(box1), _area(box2))
    box2[bad] = box1[bad]

    def orient() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hf = (torch.rand(b, generator=gen) < 0.5) & flips
        vf = (torch.rand(b, generator=gen) < 0.5) & flips
        k = torch.randint(0, 4, (b,), generator=gen) if rotations else torch.zeros(b, dtype=torch.long)
        return hf.to(dev), vf.to(dev), k.to(dev)

    geom1 = ViewGeometry(box1, *orient())
    geom2 = ViewGeometry(box2, *orient())
    overlap = _intersection(box1, box2)
    views = []
    for geom in (geom1, geom2):
        crops = roi_align(images, [bx[None] for bx in geom.boxes], output_size=out, spatial_scale=1.0,
                          sampling_ratio=2, aligned=True)
        views.append(_apply_orientation(crops, geom))
    return TwoViews(views[0], views[1], geom1, geom2, overlap,
                    map_box_to_view(overlap, geom1, out), map_box_to_view(overlap, geom2, out))


def is_rgb(band_names: Sequence[str]) -> bool:
    """True for exactly the bands R, G, B in that order: the only set on which hue and saturation mean anything."""
    return [name.upper() for name in band_names] == ["R", "G", "B"]


class MultibandJitter(nn.Module):
    """Brightness and contrast jitter for any band set, as torchvision's ColorJitter defines them for RGB.

    Brightness multiplies every band by one factor; contrast blends each image with its own mean (over all
    bands and pixels), so it keeps that mean. Written here because kornia's per-op versions do otherwise:
    `RandomBrightness` adds (factor - 1) and `RandomContrast` is a gain without the mean, which on a flat
    0.3 image moved per-image means anywhere in [0, 0.95] and clipped 10% of the pixels.

    Args:
        brightness, contrast: factors are drawn from [1 - value, 1 + value] per sample (ColorJitter's 0.4).
        p: probability that a sample is jittered.

    Shapes:
        x: (B, C, H, W) in [0, 1]; returns the same shape, clamped to [0, 1].
    """

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, p: float = 0.8) -> None:
        super().__init__()
        self.brightness, self.contrast, self.p = brightness, contrast, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        shape = (b, 1, 1, 1)
        apply = (torch.rand(shape, device=x.device) < self.p).to(x.dtype)
        gain = 1 + (torch.rand(shape, device=x.device) * 2 - 1) * self.brightness * apply
        blend = 1 + (torch.rand(shape, device=x.device) * 2 - 1) * self.contrast * apply
        x = x * gain
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return ((x - mean) * blend + mean).clamp(0, 1)


class PhotometricAugment(nn.Module):
    """Photometric augmentation of pretraining views, batched with per-sample parameters (kornia), on any device.

    Chosen by band names, not band count (IRRG has three bands but no hue): every band set gets
    `MultibandJitter`'s brightness and contrast (0.4, p=0.8) and Gaussian blur (p=0.5); with `keep_colour=False`,
    RGB gets MoCo v2's colour jitter (0.4, 0.4, 0.4, 0.1) p=0.8 and grayscale p=0.2 instead, which teach the
    encoder to ignore colour. The default keeps colour, as `PretrainConfig.keep_colour` does;
    `enabled=False` turns every photometric change off.
    """

    def __init__(self, band_names: Sequence[str], out: int, enabled: bool = True, keep_colour: bool = True) -> None:
        super().__init__()
        if isinstance(band_names, int):
            raise TypeError("PhotometricAugment takes the band names (e.g. ['R', 'G', 'B']), not a band count")
        kernel = max(3, (out // 10) | 1)
        blur = K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=0.5)
        if not enabled:
            self.aug = nn.Identity()
        elif is_rgb(band_names) and not keep_colour:
            self.aug = nn.Sequential(K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2), blur)
        else:
            self.aug = nn.Sequential(MultibandJitter(0.4, 0.4, p=0.8), blur)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aug(x).clamp(0, 1)
