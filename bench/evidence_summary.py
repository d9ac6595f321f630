"""One table across several evidence studies: tree IoU of every encoder in every work folder, from the cells'
own metrics.json (what `bench/evidence_real.py` wrote), mean ± std over the seeds found and each seed in brackets.

    python bench/evidence_summary.py runs/evidence-v2="MoCo v2 aug" runs/evidence-colour="colour kept"
    python bench/evidence_summary.py runs/evidence-v2 --split val --fractions 0.1

Prints markdown: a probe table (rows: study x encoder; columns: label fractions) and, where a study has
fine-tuning cells, a fine-tuning table. Cells that several studies link (the controls) are shown once. Seeds
compare pairwise down a column: seed s is the same labeled subset for every encoder.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

TREE = "tree"


def tree_iou(metrics: Path) -> float | None:
    if not metrics.is_file():
        return None
    return json.loads(metrics.read_text())["per_class"][TREE]["IoU"] / 100


def _iou(value: float) -> str:
    return f"{value:.3f}".removeprefix("0")


def cell_text(values: list[float | None]) -> str:
    found = [v for v in values if v is not None]
    if not found:
        return "-"
    seeds = " / ".join("-" if v is None else _iou(v) for v in values)
    if len(found) == 1:
        return f"{_iou(found[0])} ({seeds})"
    return f"{_iou(statistics.mean(found))} ± {_iou(statistics.stdev(found))} ({seeds})"


def encoders(folder: Path) -> list[str]:
    """Encoders in the order of the ablation ladder, controls first, then anything else found."""
    order = ["random", "random-bn", "mocov2", "pixcontrast", "pixcontrast-c4", "mpinet-noffl", "mpinet"]
    found = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return [n for n in order if n in found] + [n for n in found if n not in order]


def unseen(folder: Path, shown: set[Path]) -> list[str]:
    """`encoders(folder)` less those whose cells an earlier study showed: studies link the controls' cells
    (random, random-bn), which are then shown once. Adds the rest to `shown`."""
    names = [n for n in encoders(folder) if (folder / n).resolve() not in shown]
    shown.update((folder / n).resolve() for n in names)
    return names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("studies", nargs="+", help="WORK or WORK=LABEL, one per study")
    p.add_argument("--split", default="test", choices=["test", "val"], help="band scored (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="(default: %(default)s)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="(default: %(default)s)")
    p.add_argument("--finetune-fraction", type=float, default=0.1, help="(default: %(default)s)")
    a = p.parse_args()
    probe_dir = "probe" if a.split == "test" else f"probe-{a.split}"
    studies = [(Path(s.split("=", 1)[0]), s.split("=", 1)[-1]) for s in a.studies]
    head = "| study | encoder | " + " | ".join(f"{100 * f:g}% labels" for f in a.fractions) + " |"
    print(f"Frozen-feature probe, tree IoU on the {a.split} band, mean ± std (seeds {a.seeds})\n")
    print(head + "\n|---|---|" + "---|" * len(a.fractions))
    shown: set[Path] = set()
    for work, label in studies:
        for name in unseen(work / probe_dir, shown):
            row = [cell_text([tree_iou(work / probe_dir / name / f"f{f:g}-s{s}" / "metrics.json") for s in a.seeds])
                   for f in a.fractions]
            if any(c != "-" for c in row):
                print(f"| {label} | {name} | " + " | ".join(row) + " |")
    rows = []
    for work, label in studies:
        for name in unseen(work / "finetune", shown):
            values = [tree_iou(work / "finetune" / name / f"f{a.finetune_fraction:g}-s{s}" / f"eval-{a.split}"
                               / "metrics.json") for s in a.seeds]
            if any(v is not None for v in values):
                rows.append(f"| {label} | {name} | {cell_text(values)} |")
    if rows:
        print(f"\nFine-tuning (DeepLabV3+) at {100 * a.finetune_fraction:g}% labels, tree IoU on the {a.split} band\n")
        print("| study | encoder | tree IoU |\n|---|---|---|")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
