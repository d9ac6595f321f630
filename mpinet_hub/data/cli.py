"""`mpinet data synth|check|stats|prepare`."""

from __future__ import annotations

import argparse
import json
import sys

from ..cli import HelpFormatter
from . import DATA_ROOT_HELP, DATASET_SPECS, DATASETS, VALUE_MAX_HELP
from .base import band_statistics
from .check import check_dataset
from .prepare import prepare_dataset, verify_prepared
from .synth import synth_dataset


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    s = sub.add_parser("synth", help="write a miniature copy of a data set in its exact release layout",
                       formatter_class=HelpFormatter)
    s.add_argument("dataset", choices=[d for d, spec in DATASET_SPECS.items() if spec.synth is not None],
                   help="whose release layout to write")
    s.add_argument("out", help="folder to write into (the data set's root)")
    s.add_argument("--tiles", type=int, default=6, help="Potsdam tiles / LoveDA images / UAVid sequences")
    s.add_argument("--size", type=int, default=512, help="tile/image side in pixels")
    s.add_argument("--seed", type=int, default=0, help="seed of the scenes (the same seed writes the same files)")
    s.add_argument("--defects", action="store_true", help="Potsdam: reproduce the release's known defects")
    c = sub.add_parser("check", help="validate a data set folder; exit code 1 on errors",
                       formatter_class=HelpFormatter)
    c.add_argument("dataset", choices=list(DATASETS), help="a named data set, or folder for your labeled folder")
    c.add_argument("root", help=DATA_ROOT_HELP)
    c.add_argument("--labels", default="full", choices=["full", "noBoundary"], help="Potsdam label product")
    c.add_argument("--full", action="store_true",
                   help="decode every window of every image (default: the last window of each, which finds a "
                   "truncated GeoTIFF; PNG/JPEG are checked whole either way)")
    st = sub.add_parser("stats", help="per-band mean/std of a split (for --mean/--std of pretrain)",
                        description="Per-band mean and standard deviation of every finite pixel of one split, "
                        "in the 0-1 range training uses (--value-max applied), printed as JSON with the split "
                        "named: pass them as --mean/--std to pretrain, finetune and probe.",
                        formatter_class=HelpFormatter)
    st.add_argument("dataset", choices=list(DATASETS), help="a named data set, or folder for your labeled folder")
    st.add_argument("root", help=DATA_ROOT_HELP)
    st.add_argument("--split", default="train", help="split whose images are measured (train: what training sees)")
    st.add_argument("--bands", default="RGB", help="Potsdam's band product (RGB, IRRG, RGBIR); others as their files")
    st.add_argument("--value-max", type=float, help=VALUE_MAX_HELP + "; give the value training will use")
    pr = sub.add_parser(
        "prepare", formatter_class=HelpFormatter,
        help="one-time copy with PNG/JPEG images as tiled GeoTIFFs, so training reads windows, not whole images",
        description="Copy a data set to OUT with every PNG/JPEG image and label written as a tiled, compressed "
        "GeoTIFF (lossless, each file verified against its source) and every other file copied. OUT keeps the "
        "release layout and is a --data-root for the same data set. A PNG must be decoded whole for every "
        "window; a tiled GeoTIFF decodes only the blocks a window touches (docs/benchmarks.md, loader table). "
        "Resumable: run the same command again after a stop.")
    pr.add_argument("dataset", choices=[d for d, spec in DATASET_SPECS.items() if spec.preparable],
                    help="(Potsdam ships GeoTIFFs, which are read by window already)")
    pr.add_argument("root", help="the data set as released (read only)")
    pr.add_argument("out", help="new folder for the prepared copy (or the one a stopped prepare left)")


def run_data(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        written = synth_dataset(args.dataset, args.out, tiles=args.tiles, size=args.size, seed=args.seed,
                                defects=args.defects)
        print(f"wrote {len(written)} {args.dataset} scene(s) to {args.out}")
        return 0
    if args.data_command == "prepare":
        report = prepare_dataset(args.root, args.out)
        print(report.render())
        print(verify_prepared(args.dataset, args.root, args.out))
        return 0
    if args.data_command == "check":
        kwargs = {"labels": args.labels} if DATASETS[args.dataset].label_products else {}
        report = check_dataset(args.dataset, args.root, full=args.full, **kwargs)
        print(report.render())
        return 0 if report.ok else 1
    kwargs = {"bands": args.bands} if DATASETS[args.dataset].band_products else {}
    ds = DATASETS[args.dataset](args.root, split=args.split, value_max=args.value_max, **kwargs)
    mean, std, count, skipped = band_statistics(ds)
    for file, n in skipped.items():
        print(f"mpinet data stats: {file}: {n} pixel(s) with NaN/inf left out", file=sys.stderr)
    print(json.dumps({"split": args.split, "pixels": count, "mean": [round(v, 4) for v in mean],
                      "std": [round(v, 4) for v in std]}))
    return 0
