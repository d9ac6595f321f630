"""Does MPINet pretraining help? A seeded label-efficiency study on real aerial imagery, one command, resumable.

    pip install -e . && python bench/evidence_real.py                 # the whole study (see --help for budgets)
    python bench/evidence_real.py --work runs/evidence --report-only  # rebuild docs/evidence.md from finished cells

Data: NEON airborne RGB (~0.1 m) with tree-crown boxes that ships inside the `deepforest` wheel (MIT), fetched
with `pip download --no-deps` (bench/realdata.py; never committed), rasterised to tree/background masks, each
image cut into train (top 60%), val and test (bottom 30%) bands: pretraining reads the train band only and
never sees test ground. The first study's settings were fixed before any test number was looked at; each later
change is described in the reading with what prompted it, and `--eval-split val` scores cells on the val band, to
choose settings without the test band.

Per pretraining seed: the ablation ladder (mocov2, pixcontrast, pixcontrast-c4, mpinet-noffl, mpinet; ResNet-18), and
the two inits without pretraining, random and random-bn (random weights, BatchNorm statistics re-estimated on
the training images). Each encoder is probed (frozen C2-C5, linear head) at every label fraction and fine-tuned
(DeepLabV3+) at one; seed s pairs pretraining seed s with probe/fine-tuning seed s, so the spread covers both.
Every cell is a folder with its metrics.json; finished cells are reused, so a stopped study continues.
Writes WORK/results.json, docs/evidence.md and docs/evidence.png (tree IoU vs label fraction); with --eval-split
val, WORK/results-val.json and evidence-val.md/.png, cells in WORK/probe-val. A finished pretraining cell made with
other settings is refused, never reused. bench/evidence_summary.py tabulates several studies' cells side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from realdata import fetch_wheel, write_labeled_folder, write_unlabeled_folder  # noqa: E402

from mpinet_hub.downstream.evaluate import evaluate  # noqa: E402
from mpinet_hub.downstream.finetune import FinetuneConfig, Finetuner  # noqa: E402
from mpinet_hub.downstream.probe import ProbeConfig, run_probe  # noqa: E402
from mpinet_hub.pretrain.config import ABLATION_LADDER, PretrainConfig  # noqa: E402
from mpinet_hub.pretrain.diagnose import diagnose  # noqa: E402
from mpinet_hub.pretrain.trainer import pretrain_or_reuse  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TREE = "tree"


def pretrain(method: str, seed: int, a: argparse.Namespace, data: Path) -> Path:
    run = a.work / "pretrain" / f"{method}-s{seed}"
    roots = [str(data)] + ([str(a.work / "unlabeled")] if a.extra_unlabeled else [])
    cfg = PretrainConfig.from_sources(
        None, dataset="folder", data_root=roots, method=method, arch="mpinet_resnet18", patch=a.patch,
        crop=a.crop, batch_size=a.batch, steps=a.pretrain_steps, lr=a.lr, queue_size=a.queue, warmup_epochs=1,
        workers=a.workers, windows_per_file=a.windows_per_file, seed=seed, out=str(run),
        save_every=max(50, a.pretrain_steps // 4), device=a.device, precision=a.precision,
        keep_colour=a.keep_colour)
    return pretrain_or_reuse(cfg)[0]  # refuses a finished cell made with other settings, naming them


def probe_cell(name: str, spec: str, fraction: float, seed: int, a: argparse.Namespace, data: Path) -> dict:
    out = a.work / f"probe{_band(a)}" / name / f"f{fraction:g}-s{seed}"
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    cfg = ProbeConfig(spec, "folder", str(data), str(out), label_fraction=fraction, steps=a.probe_steps,
                      batch_size=16, patch=a.label_patch, seed=seed, subset_seed=seed, split=a.eval_split,
                      device=a.device, window=512)
    return run_probe(cfg)


def _band(a: argparse.Namespace) -> str:
    """Suffix of the probe cells, results, report and plot of a val-band study, which live beside the test band's
    and never overwrite them."""
    return "" if a.eval_split == "test" else f"-{a.eval_split}"


def finetune_cell(name: str, spec: str, fraction: float, seed: int, a: argparse.Namespace, data: Path) -> dict:
    out = a.work / "finetune" / name / f"f{fraction:g}-s{seed}"
    metrics = out / f"eval-{a.eval_split}" / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text())
    cfg = FinetuneConfig(dataset="folder", data_root=str(data), encoder=spec, label_fraction=fraction, out=str(out),
                         patch=a.label_patch, crop=a.label_patch, batch_size=8, steps=a.finetune_steps, seed=seed,
                         subset_seed=seed, device=a.device, save_every=a.finetune_steps)
    last = out / "checkpoints" / "last.pt"
    Finetuner(cfg, resume=last.is_file(), overwrite=not last.is_file()).train()
    return evaluate(out, "folder", str(data), split=a.eval_split, device=a.device, previews=1)


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def report(results: dict, a: argparse.Namespace, seconds: float) -> None:
    names = list(results["probe"])
    fractions = a.fractions
    lines = ["# Evidence on real aerial imagery", "",
             f"Written by `python bench/evidence_real.py {' '.join(sys.argv[1:])}` on "
             f"{time.strftime('%Y-%m-%d')} ({seconds / 60:.0f} min of compute on this machine for the cells run "
             "this time; finished cells are reused).", "",
             __doc__.split("\n\n")[2], "",
             *(["The hand-written reading after these tables starts with every study run at a glance, including "
                "those with other options (`--keep-colour`, more steps, more images).", ""]
               if a.eval_split == "test" and not a.notes else []),
             f"Budget: ResNet-18, pretraining {a.pretrain_steps} steps x batch {a.batch} ({a.patch} px windows, "
             f"{a.crop} px views, queue {a.queue}, lr {a.lr} per 256), probe {a.probe_steps} steps"
             + ("" if a.no_finetune else f", fine-tuning {a.finetune_steps} steps")
             + f"; labeled patches of {a.label_patch} px; seeds {a.seeds}; device {a.device}, pretraining precision "
             f"{a.precision}, {a.workers} loader workers."
             + (" Pretraining also read the extra unlabeled scenes (bench/realdata.py, EXTRA_UNLABELED)."
                if a.extra_unlabeled else "")
             + (" Pretraining kept colour (`keep_colour`: no hue jitter, no grayscale)." if a.keep_colour else ""),
             "",
             f"## Frozen-feature probe: tree IoU on the {a.eval_split} band (mean ± std over seeds)", "",
             "| encoder | " + " | ".join(f"{f:g} labels" for f in fractions) + " |",
             "|---|" + "---|" * len(fractions)]
    for name in names:
        row = [_mean_std([c["per_class"][TREE]["IoU"] / 100 for c in results["probe"][name][f"{f:g}"]])
               for f in fractions]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    if results["finetune"]:
        lines += ["", f"## Fine-tuning (DeepLabV3+) at {a.finetune_fraction:g} labels: tree IoU / mIoU", "",
                  "| encoder | tree IoU | mIoU |", "|---|---|---|"]
    for name, cells in results["finetune"].items():
        lines.append(f"| {name} | {_mean_std([c['per_class'][TREE]['IoU'] / 100 for c in cells])} | "
                     f"{_mean_std([c['mIoU'] / 100 for c in cells])} |")
    lines += ["", "## Did the instance branch learn? (`ins` against ln(K+1), keys of the last queue, retrieval)", "",
              "| run | ln(K+1) | ins, last 10% of steps | ins, lowest once the queue held real keys | "
              "key mean cosine | key effective rank | "
              "view retrieval top-1 (random weights: " + f"{results['retrieval_random'] or 0:.3f}; chance 1/256) |",
              "|---|---|---|---|---|---|---|"]
    for run, d in results["instance"].items():
        lines.append(f"| {run} | {d['chance']:.2f} | {d['ins_last10pct']:.2f} | {d['ins_min']:.2f} | "
                     f"{d['key_mean_cosine']:.2f} | {d['key_effective_rank']:.1f} | {d['retrieval']:.3f} |")
    stem = f"evidence{_band(a)}"
    lines += ["", f"![tree IoU vs label fraction]({stem}.png)", ""]
    # the hand-written reading is about the test band; a val-band report gets only notes passed explicitly
    notes = a.notes or (Path(__file__).with_name("evidence_notes.md") if a.eval_split == "test" else None)
    reading = notes.read_text() if notes and notes.is_file() else ""
    (a.docs / f"{stem}.md").write_text("\n".join(lines) + "\n" + reading)
    study = (f"{a.pretrain_steps} pretraining steps, " + ("colour kept" if a.keep_colour else "MoCo v2 colour jitter")
             + (", + 5 unlabeled scenes" if a.extra_unlabeled else ""))
    _plot(results, fractions, a.eval_split, study, a.docs / f"{stem}.png")


# one colour per encoder in every study's plot; the two controls dashed
_STYLE = {"random": ("tab:gray", "--"), "random-bn": ("black", "--"), "mocov2": ("tab:blue", "-"),
          "pixcontrast": ("tab:green", "-"), "pixcontrast-c4": ("tab:olive", "-"),
          "mpinet-noffl": ("tab:orange", "-"), "mpinet": ("tab:red", "-")}


def _plot(results: dict, fractions: list[float], split: str, study: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    n = len(results["probe"])
    for i, (name, cells) in enumerate(results["probe"].items()):
        means = [statistics.mean(c["per_class"][TREE]["IoU"] / 100 for c in cells[f"{f:g}"]) for f in fractions]
        errs = [statistics.stdev(c["per_class"][TREE]["IoU"] / 100 for c in cells[f"{f:g}"])
                if len(cells[f"{f:g}"]) > 1 else 0 for f in fractions]
        dodge = 10 ** (0.025 * (i - (n - 1) / 2))  # side by side on the log axis, so the error bars stay apart
        colour, style = _STYLE.get(name, (None, "-"))
        ax.errorbar([f * dodge for f in fractions], means, yerr=errs, marker="o", capsize=3, label=name,
                    color=colour, linestyle=style)
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{100 * f:g}%" for f in fractions])
    ax.set_xlabel("labeled training patches")
    ax.set_ylabel(f"tree IoU ({split} band)")
    ax.set_title(f"Frozen-feature probe, ResNet-18, {study}\nNEON RGB tree crowns, {split} band "
                 "(mean ± std over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("runs/evidence"), help="cells and data (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="(default: %(default)s)")
    p.add_argument("--methods", nargs="+", default=list(ABLATION_LADDER), help="(default: %(default)s)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="(default: %(default)s)")
    p.add_argument("--finetune-fraction", type=float, default=0.1, help="(default: %(default)s)")
    p.add_argument("--pretrain-steps", type=int, default=200, help="(default: %(default)s)")
    p.add_argument("--probe-steps", type=int, default=100, help="(default: %(default)s)")
    p.add_argument("--finetune-steps", type=int, default=200, help="(default: %(default)s)")
    p.add_argument("--batch", type=int, default=32, help="pretraining batch (default: %(default)s)")
    p.add_argument("--patch", type=int, default=96, help="pretraining window px (default: %(default)s)")
    p.add_argument("--crop", type=int, default=64, help="pretraining view px (default: %(default)s)")
    p.add_argument("--queue", type=int, default=256, help="instance queue K (default: %(default)s)")
    p.add_argument("--lr", type=float, default=0.03,
                   help="pretraining lr per 256 images, MoCo v2's; 0.3 collapsed the keys (default: %(default)s)")
    p.add_argument("--label-patch", type=int, default=96, help="labeled patch px (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto, for every cell (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="pretraining loader processes (default: %(default)s)")
    p.add_argument("--keep-colour", action="store_true",
                   help="pretraining jitters brightness and contrast only: no hue jitter, no grayscale")
    p.add_argument("--windows-per-file", type=int, default=1,
                   help="pretraining windows drawn from one decoded PNG in a row; more feeds a GPU from these "
                        "few large PNGs (default: %(default)s)")
    p.add_argument("--precision", default="32", choices=["32", "bf16"], help="pretraining (default: %(default)s)")
    p.add_argument("--docs", type=Path, default=REPO / "docs",
                   help="where evidence.md and evidence.png are written (default: the repo's docs/)")
    p.add_argument("--no-finetune", action="store_true", help="probe only")
    p.add_argument("--extra-unlabeled", action="store_true",
                   help="pretraining also reads five unlabeled scenes of other places and sensors (a second "
                        "deepforest wheel; bench/realdata.py); probes and fine-tuning are unchanged")
    p.add_argument("--eval-split", default="test", choices=["test", "val"],
                   help="band the cells are scored on: choose settings on val, report test (default: %(default)s)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from finished cells")
    p.add_argument("--notes", type=Path,
                   help="markdown appended to docs/evidence.md (default: bench/evidence_notes.md, the reading)")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mpinet-hub" / "realdata",
                   help="where the deepforest wheel is kept (default: %(default)s)")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.time()
    data = a.work / "data"
    if not (data / "classes.yaml").is_file():
        print("labeled folder:", write_labeled_folder(fetch_wheel(a.cache), data))
    if a.extra_unlabeled and not a.report_only:
        print("extra unlabeled scenes:", *write_unlabeled_folder(a.cache, a.work / "unlabeled"))
    results: dict = {"probe": {}, "finetune": {}, "instance": {},
                     "retrieval_random": None}
    encoders: dict[str, list[str]] = {"random": ["random"] * len(a.seeds), "random-bn": ["random-bn"] * len(a.seeds)}
    for method in a.methods:
        encoders[method] = []
        for seed in a.seeds:
            run = a.work / "pretrain" / f"{method}-s{seed}"
            if not a.report_only:
                pretrain(method, seed, a, data)
            encoders[method].append(str(run))
            diagnosis = diagnose(run, retrieval_windows=256)  # the same windows and random weights for every run
            results["instance"][f"{method}-s{seed}"] = diagnosis
            results["retrieval_random"] = diagnosis["retrieval_random"]
    for name, specs in encoders.items():
        results["probe"][name] = {}
        for fraction in a.fractions:
            results["probe"][name][f"{fraction:g}"] = [probe_cell(name, spec, fraction, seed, a, data)
                                                       for spec, seed in zip(specs, a.seeds)]
        if not a.no_finetune and name != "random-bn":  # fine-tuning re-estimates BatchNorm itself: random is that
            results["finetune"][name] = [finetune_cell(name, spec, a.finetune_fraction, seed, a, data)
                                         for spec, seed in zip(specs, a.seeds)]
    results_file = a.work / f"results{_band(a)}.json"
    results_file.write_text(json.dumps(results, indent=1, default=str))
    report(results, a, time.time() - start)
    print(f"written: {a.docs / f'evidence{_band(a)}.md'}, {a.docs / f'evidence{_band(a)}.png'}, {results_file}")


if __name__ == "__main__":
    main()
