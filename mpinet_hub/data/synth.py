"""Synthetic look-alikes of Potsdam, LoveDA and UAVid, written in the exact release layouts.

The real data cannot be downloaded here, so readers, pretraining and fine-tuning are exercised on
miniature copies. Scenes are drawn, not noise: a label map of roads, buildings, trees, cars, fields and
water is laid out first, then rendered with per-class colours, textures, roof ridges and cast shadows,
so that a segmentation model has something to learn and self-supervised pretraining has structure to find.
Everything is deterministic for a seed. Written by hand: no maintained library draws such scenes.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from PIL import Image
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from .labels import encode_colour_label
from .potsdam import POTSDAM_SPLITS, Potsdam, potsdam_paths
from .uavid import UAVid

__all__ = ["render_urban_scene", "render_loveda_scene", "synth_dataset"]


def _noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth noise in about [-1, 1] with features of `cell` px (bilinear upsampling of a coarse grid)."""
    coarse = torch.from_numpy(rng.standard_normal((1, 1, h // cell + 2, w // cell + 2)).astype(np.float32))
    fine = F.interpolate(coarse, size=(h + 2 * cell, w + 2 * cell), mode="bicubic", align_corners=False)
    return fine[0, 0, cell : cell + h, cell : cell + w].numpy().clip(-2.5, 2.5) / 2.5


def _disk(lab: np.ndarray, cy: float, cx: float, r: float, value: int, where: np.ndarray | None = None) -> None:
    h, w = lab.shape
    y0, y1, x0, x1 = max(0, int(cy - r)), min(h, int(cy + r) + 1), max(0, int(cx - r)), min(w, int(cx + r) + 1)
    yy, xx = np.ogrid[y0:y1, x0:x1]
    m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if where is not None:
        m &= where[y0:y1, x0:x1]
    lab[y0:y1, x0:x1][m] = value


# Urban classes shared by the Potsdam and UAVid look-alikes (mapped to each data set's ids by the writers).
ROAD, BUILDING, LOW_VEG, TREE, CAR, CLUTTER, MOVING_CAR, HUMAN = range(8)


def render_urban_scene(size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGBI image 4xHxW uint8, nDSM HxW uint8, label HxW of the urban classes above)."""
    h, w = size
    s = min(h, w)
    lab = np.full((h, w), LOW_VEG, np.uint8)
    road = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 3))):
        y, rw = int(rng.integers(0, h)), int(rng.integers(s // 28, s // 14))
        road[max(0, y - rw) : y + rw, :] = True
    for _ in range(int(rng.integers(1, 3))):
        x, rw = int(rng.integers(0, w)), int(rng.integers(s // 28, s // 14))
        road[:, max(0, x - rw) : x + rw] = True
    lab[road] = ROAD
    buildings = []
    for _ in range(int(rng.integers(12, 24)) * max(1, (h * w) // (512 * 512))):
        bh, bw = int(rng.integers(s // 16, s // 5)), int(rng.integers(s // 16, s // 5))
        y, x = int(rng.integers(0, max(1, h - bh))), int(rng.integers(0, max(1, w - bw)))
        pad = 4
        region = lab[max(0, y - pad) : y + bh + pad, max(0, x - pad) : x + bw + pad]
        if (region == ROAD).any() or (region == BUILDING).any():
            continue
        lab[y : y + bh, x : x + bw] = BUILDING
        buildings.append((y, x, bh, bw))
    free = lab == LOW_VEG
    for _ in range(int(rng.integers(3, 8))):  # paved yards and sidewalks: clutter-free impervious patches
        ph, pw = int(rng.integers(s // 40, s // 10)), int(rng.integers(s // 40, s // 10))
        y, x = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        patch = lab[y : y + ph, x : x + pw]
        patch[patch == LOW_VEG] = ROAD
    for _ in range(int(rng.integers(12, 30)) * max(1, (h * w) // (512 * 512))):
        _disk(lab, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(s / 70, s / 28), TREE, where=free)
    clutter = []
    for _ in range(int(rng.integers(2, 6))):
        clutter.append((rng.uniform(0, h), rng.uniform(0, w), rng.uniform(s / 90, s / 45)))
        _disk(lab, *clutter[-1], CLUTTER, where=lab == LOW_VEG)
    # cars on roads, aligned with the road direction; some moving (mid-road), some parked (edges)
    ys, xs = np.nonzero(road)
    wanted, placed, cars = int(rng.integers(6, 14)), 0, []
    for _ in range(200 if len(ys) else 0):
        if placed == wanted:
            break
        i = int(rng.integers(0, len(ys)))
        cy, cx = ys[i], xs[i]
        horizontal = road[cy, max(0, cx - 10) : cx + 10].all()
        lh, lw = (max(4, s // 90), max(8, s // 45)) if horizontal else (max(8, s // 45), max(4, s // 90))
        spot = lab[cy : cy + lh, cx : cx + lw]
        if spot.shape == (lh, lw) and (spot == ROAD).all():
            spot[:] = CAR if rng.random() < 0.5 else MOVING_CAR
            cars.append((cy, cx, lh, lw))
            placed += 1
    for _ in range(int(rng.integers(2, 8))):
        y, x = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
        if lab[y, x] == ROAD:
            lab[y : y + 2, x : x + 2] = HUMAN

    # Classes that need context, as in real imagery: roofs share the road's greys (a building is a rectangle
    # with a ridge and a shadow, not a colour), trees and low vegetation share one green (a tree is rough texture
    # and casts a shadow; a lawn is smooth), and clutter comes in the cars' random colours (a car is a small
    # rectangle on a road). Shadows (below) darken roads to the greys of dark roofs.
    n = _noise(rng, h, w, max(2, s // 24))
    fine = _noise(rng, h, w, 2)
    img = np.zeros((h, w, 3), np.float32)
    green = (88, 128, 58)
    base = {ROAD: (128, 126, 122), LOW_VEG: green, TREE: green, HUMAN: (210, 60, 50)}
    for cls, colour in base.items():
        img[lab == cls] = colour
    img[lab == LOW_VEG] += (n[lab == LOW_VEG] * 22)[:, None]
    img[lab == TREE] += (fine[lab == TREE] * 40)[:, None]
    img[lab == ROAD] += (fine[lab == ROAD] * 8)[:, None]
    roofs = [(136, 133, 128), (118, 117, 120), (74, 72, 78), (150, 146, 140)]
    for (y, x, bh, bw) in buildings:
        roof = np.array(roofs[int(rng.integers(0, len(roofs)))], np.float32)
        img[y : y + bh, x : x + bw] = roof
        if bh > bw:  # ridge along the long side: one half of the roof catches more sun
            img[y : y + bh, x + bw // 2 : x + bw] *= 0.8
        else:
            img[y + bh // 2 : y + bh, x : x + bw] *= 0.8
    for cy, cx, lh, lw in cars:  # every car its own colour
        img[cy : cy + lh, cx : cx + lw] = rng.integers(30, 255, size=3)
    paint = np.zeros((h, w), np.uint8)
    for i, (cy, cx, r) in enumerate(clutter, 1):
        _disk(paint, cy, cx, r, i, where=lab == CLUTTER)
    for i in range(1, len(clutter) + 1):
        img[paint == i] = rng.integers(30, 255, size=3)
    # cast shadows to the south-east of buildings and trees (label unchanged, image darker)
    shadow = np.zeros((h, w), bool)
    off = max(2, s // 60)
    tall = (lab == BUILDING) | (lab == TREE)
    shadow[off:, off:] = tall[:-off, :-off]
    shadow &= ~tall
    img[shadow] *= 0.55
    img += (fine * 4)[..., None]
    rgb = img.clip(0, 255)
    veg = np.isin(lab, (LOW_VEG, TREE))
    ir = np.where(veg, 190 + 30 * n, 0.75 * rgb[..., 0]).clip(0, 255)
    image = np.concatenate([rgb.transpose(2, 0, 1), ir[None]], 0).astype(np.uint8)
    dsm = np.where(lab == BUILDING, 200.0, np.where(lab == TREE, 120 + 40 * fine, 8 + 6 * n))
    return image, dsm.clip(0, 255).astype(np.uint8), lab


def render_loveda_scene(size: int, rng: np.random.Generator, urban: bool) -> tuple[np.ndarray, np.ndarray]:
    """(RGB 3xHxW uint8, train ids HxW with LoveDA's 7 classes) of an urban or rural scene."""
    bg, building, road, water, barren, forest, agri = range(7)
    h = w = size
    lab = np.full((h, w), bg if urban else agri, np.uint8)
    field_colour = np.zeros((h, w, 3), np.float32)
    if not urban:  # a patchwork of fields, with some forest and barren parcels
        edges_y = np.sort(rng.integers(0, h, int(rng.integers(2, 5))))
        edges_x = np.sort(rng.integers(0, w, int(rng.integers(2, 5))))
        for ys in np.split(np.arange(h), edges_y):
            for xs in np.split(np.arange(w), edges_x):
                if not len(ys) or not len(xs):
                    continue
                kind = rng.choice([agri, agri, agri, forest, barren])
                lab[np.ix_(ys, xs)] = kind
                field_colour[np.ix_(ys, xs)] = [(150, 170, 80), (190, 175, 110), (120, 150, 70)][int(rng.integers(3))]
    else:
        for _ in range(int(rng.integers(2, 5))):
            y, x = rng.integers(0, h, 2)
            _disk(lab, y, x, rng.uniform(size / 20, size / 8), forest)
    yy = np.arange(h)[:, None]
    xx = np.arange(w)[None, :]
    if rng.random() < 0.7:  # a meandering river
        centre = w * rng.uniform(0.2, 0.8) + (w / 10) * np.sin(yy / h * rng.uniform(2, 6))
        lab[np.abs(xx - centre) < size * rng.uniform(0.02, 0.06)] = water
    n_roads = int(rng.integers(3, 6)) if urban else int(rng.integers(1, 3))
    for _ in range(n_roads):
        rw = max(2, int(size * rng.uniform(0.008, 0.02)))
        if rng.random() < 0.5:
            y = int(rng.integers(0, h))
            lab[max(0, y - rw) : y + rw, :] = road
        else:
            x = int(rng.integers(0, w))
            lab[:, max(0, x - rw) : x + rw] = road
    n_build = int(rng.integers(25, 50)) if urban else int(rng.integers(3, 10))
    for _ in range(n_build):
        bh, bw = (int(v) for v in rng.integers(size // 60, size // 18, 2))
        y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        region = lab[y : y + bh, x : x + bw]
        if np.isin(region, (road, water)).any():
            continue
        region[:] = building
    if urban:
        for _ in range(int(rng.integers(1, 3))):
            y, x = rng.integers(0, h, 2)
            _disk(lab, y, x, rng.uniform(size / 30, size / 14), barren, where=lab == bg)
    n = _noise(rng, h, w, max(2, size // 20))
    fine = _noise(rng, h, w, 2)
    colours = {bg: (150, 146, 140), building: (186, 176, 170), road: (96, 96, 100), water: (40, 70, 100),
               barren: (176, 150, 120), forest: (40, 80, 44)}
    img = np.zeros((h, w, 3), np.float32)
    for cls, c in colours.items():
        img[lab == cls] = c
    fields = lab == agri
    stripes = 12 * np.sin(xx / max(2.0, size / 150) + yy * 0.1)
    crop_colour = field_colour[fields] if not urban else np.array((140, 160, 80), np.float32)
    img[fields] = crop_colour + np.broadcast_to(stripes, (h, w))[fields, None]
    img[lab == forest] += (fine[lab == forest] * 25)[:, None]
    img += (n * 14)[..., None] + (fine * 5)[..., None]
    return img.clip(0, 255).astype(np.uint8).transpose(2, 0, 1), lab


def _boundary(lab: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` of a class change (how the noBoundary labels erode objects)."""
    edge = np.zeros(lab.shape, bool)
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:-1, :] |= lab[1:, :] != lab[:-1, :]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[:, :-1] |= lab[:, 1:] != lab[:, :-1]
    if width == 0:
        return edge
    grown = torch.from_numpy(edge[None, None].astype(np.float32))
    grown = F.max_pool2d(grown, 2 * width + 1, stride=1, padding=width)
    return grown[0, 0].numpy() > 0


def _write_tif(path: Path, array: np.ndarray, transform=None, crs=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", height=array.shape[1], width=array.shape[2], count=array.shape[0], dtype="uint8",
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    if transform is not None:
        profile.update(transform=transform, crs=crs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array)


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.transpose(1, 2, 0) if array.ndim == 3 else array).save(path)


# urban class -> Potsdam / UAVid train id
_TO_POTSDAM = np.array([0, 1, 2, 3, 4, 5, 4, 5], np.uint8)
_TO_UAVID = np.array([2, 1, 5, 4, 3, 0, 7, 6], np.uint8)


def synth_potsdam(out: Path, tiles: int, size: int, rng: np.random.Generator,
                 defects: bool = False) -> list[str]:
    n_train = max(1, math.ceil(tiles * 24 / 38))
    chosen = POTSDAM_SPLITS["train"][:n_train] + POTSDAM_SPLITS["test"][: max(1, tiles - n_train)]
    if defects:
        chosen = sorted(set(chosen) | {"4_12", "3_13"})
    gsd = 0.05 * 6000 / size  # the miniature covers the real tile's 300 m footprint
    crs = CRS.from_epsg(32633)
    for tile in chosen:
        row, col = (int(v) for v in tile.split("_"))
        image, dsm, lab = render_urban_scene((size, size), rng)
        ids = _TO_POTSDAM[lab]
        transform = from_origin(364000.0 + 300 * col, 5812000.0 - 300 * row, gsd, gsd)
        paths = potsdam_paths(out, tile, "RGB")
        _write_tif(paths["image"], image[:3], transform, crs)
        paths["image"].with_suffix(".tfw").write_text(
            "\n".join(str(v) for v in (gsd, 0.0, 0.0, -gsd, transform.c + gsd / 2, transform.f - gsd / 2)) + "\n")
        _write_tif(potsdam_paths(out, tile, "IRRG")["image"], image[[3, 0, 1]], transform, crs)
        _write_tif(potsdam_paths(out, tile, "RGBIR")["image"], image, transform, crs)
        if defects and tile == "3_13":
            dsm = dsm[:, :-1]
        paths["dsm"].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(dsm).save(paths["dsm"], quality=95)
        colour = encode_colour_label(ids, list(Potsdam.palette))
        if defects and tile == "4_12":
            colour = (0.7 * colour + 0.3 * image[:3]).astype(np.uint8)
        _write_tif(paths["full"], colour, transform, crs)
        eroded = np.where(_boundary(ids, size // 2000), 255, ids)  # about 3 px at the real 6000 px.astype(np.uint8)
        _write_tif(paths["noBoundary"], encode_colour_label(eroded, list(Potsdam.palette)), transform, crs)
    return chosen


def _split_counts(total: int, minimum: int, unit: str, why: str) -> dict[str, int]:
    """`total` split about 2:1:1 into train, val and test, each with at least `minimum` (exactly `total` in all)."""
    if total < 3 * minimum:
        raise ValueError(f"--tiles {total}: at least {3 * minimum} {unit}, since train, val and test each need {why}")
    held_out = max(minimum, round(total / 4))
    return {"train": total - 2 * held_out, "val": held_out, "test": held_out}


def synth_loveda(out: Path, tiles: int, size: int, rng: np.random.Generator,
                defects: bool = False) -> list[str]:
    written = []
    first_id = {"Train": 0, "Val": 2522, "Test": 4191}
    for split_name, count in _split_counts(tiles, minimum=2, unit="images", why="an urban and a rural scene").items():
        split = split_name.capitalize()
        for k in range(count):
            domain = "Urban" if k % 2 == 0 else "Rural"
            image, ids = render_loveda_scene(size, rng, urban=domain == "Urban")
            name = f"{first_id[split] + k}.png"
            folder = out / split / domain
            _write_png(folder / "images_png" / name, image)
            if split != "Test":
                mask = (ids + 1).astype(np.uint8)
                mask[: size // 32, : size // 32] = 0  # a no-data corner, as some real scenes have
                _write_png(folder / "masks_png" / name, mask)
            written.append(f"{split}/{domain}/{name}")
    return written


def synth_uavid(out: Path, tiles: int, size: int, rng: np.random.Generator,
               defects: bool = False) -> list[str]:
    written = []
    h, w = size * 9 // 16, size  # the frames' 16:9 aspect
    seq = 1
    for split, count in _split_counts(tiles, minimum=1, unit="sequences", why="a sequence").items():
        for _ in range(count):
            for frame in range(2):
                image, _, lab = render_urban_scene((h, w), rng)
                name = f"{frame * 100:06d}.png"
                folder = out / f"uavid_{split}" / f"seq{seq}"
                _write_png(folder / "Images" / name, image[:3])
                if split != "test":
                    _write_png(folder / "Labels" / name, encode_colour_label(_TO_UAVID[lab], list(UAVid.palette)))
                written.append(f"uavid_{split}/seq{seq}/{name}")
            seq += 1
    return written


def synth_dataset(name: str, out: str | Path, tiles: int = 6, size: int = 512, seed: int = 0,
                  defects: bool = False) -> list[str]:
    """Write a miniature `name` data set into `out` in its release layout; returns what was written.

    `tiles` counts Potsdam tiles (split in the release's 24:14 ratio), LoveDA images or UAVid sequences;
    `size` is the tile/image side (UAVid frames are size x size*9/16). `defects` (Potsdam) reproduces the
    release's known defects (blended 4_12 label, 5999-px DSM of 3_13) for `mpinet data check`.
    """
    from . import DATASET_SPECS  # the registry imports this module

    synthesisable = [n for n, spec in DATASET_SPECS.items() if spec.synth is not None]
    if name not in synthesisable:
        raise ValueError(f"no synthetic copy of {name!r}; choose {', '.join(synthesisable)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return DATASET_SPECS[name].synth(out, tiles, size, np.random.default_rng(seed), defects)

