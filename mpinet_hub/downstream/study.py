"""`mpinet study`: does pretraining pay on this data set, at this label budget? Seeds, controls, paired intervals.

For each pretraining method and seed, a pretraining cell (OUT/pretrain/METHOD-sSEED) on the data set's training
images and any `unlabeled` imagery; beside them the two inits without pretraining, `random` and `random-bn` (random
weights whose BatchNorm statistics are re-estimated on the training images, so a gain over it is not just BatchNorm
statistics), and any `NAME=SPEC` encoders given. Every encoder is probed (frozen features, linear head) and/or
fine-tuned at every label fraction, per (seed, subset seed): the seed draws the pretraining, the head and the random
weights; the subset seed draws the labeled patches, so the two sources of spread stay apart.

The cells are scored on the val split by default. The test split is read only with `split="test"`, and the
results then say so, with the date of every such reading (OUT/study.json): choose settings on val, read test
once, at the end.

Resumable: every cell is a folder with its metrics; a finished cell is reused, and a study folder refuses
settings other than those it was made with (naming them), as does a finished pretraining cell, so no number is
ever filed under a command that did not make it.

Writes OUT/results.json, OUT/results-SPLIT.md (mean +- std, the paired difference per seed with its 95% interval,
a verdict for each pair by `paired.paired_verdict`) and OUT/study-SPLIT-EVALUATION.png.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import glob
import json
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import training
from ..atomic import write_text_atomic
from ..data import BANDS_HELP, DATA_ROOT_HELP, DATASETS, VALUE_MAX_HELP, labeled_splits, open_dataset
from ..data.base import band_statistics
from ..models import MPINET_ARCHS
from ..pretrain.config import METHODS, PretrainConfig, refuse_preset_changes, resolve_config
from ..pretrain.trainer import pretrain_or_reuse, pretraining_paths
from ..progress import progress
from ..settings import SettingsError, changed_settings, coerce_settings, field_default, key_values, read_yaml, setting
from .evaluate import evaluate, write_json
from .finetune import FinetuneConfig
from .model import ENCODER_HELP
from .paired import paired_verdict
from .plots import label_efficiency_png
from .probe import ProbeConfig, run_probe

__all__ = ["CONTROLS", "EVALUATIONS", "Evaluation", "StudySettings", "answer_lines", "paired_verdict",
           "parse_encoders", "register_evaluation", "run_study", "study_markdown"]

CONTROLS = ("random", "random-bn")


@dataclass(frozen=True)
class Evaluation:
    """How a study scores an encoder (its spec) at a label fraction, a seed and a subset seed, in a cell folder.

    `settings(study, spec, fraction, seed, subset_seed, cell)` gives the cell's settings object (a settings
    dataclass: a filed cell is reused only when the settings recorded at `record`, relative to the cell, match
    it); `compute(settings, study, cell)` runs the cell and returns `mpinet evaluate`'s metrics dict.
    `reestimate_bn_band`: the cell follows the study's `reestimate_bn` (its results go under SPLIT-bn);
    `scores_random_bn`: the `random-bn` control (BatchNorm statistics re-estimated for a frozen encoder) applies."""

    settings: Callable[[StudySettings, str, float, int, int, Path], Any]
    record: str
    compute: Callable[[Any, StudySettings, Path], dict[str, Any]]
    reestimate_bn_band: bool = False
    scores_random_bn: bool = True


EVALUATIONS: dict[str, Evaluation] = {}  # name -> how a study scores a cell (`register_evaluation`)


def register_evaluation(name: str, evaluation: Evaluation) -> None:
    """Make `name` a choice of `mpinet study --evaluations` (a new evaluation is a module calling this)."""
    if name in EVALUATIONS:
        raise ValueError(f"study evaluation {name!r} is registered twice")
    EVALUATIONS[name] = evaluation


def parse_encoders(specs: list[str]) -> dict[str, str]:
    """["random", "mpinet=runs/hub"] -> {"random": "random", "mpinet": "runs/hub"}; names are unique."""
    encoders: dict[str, str] = {}
    for item in specs:
        name, sep, spec = item.partition("=")
        if not sep:
            name, spec = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(item).name or item), item
        if name in encoders:
            raise SettingsError(f"encoder name {name!r} given twice; name them NAME=SPEC")
        encoders[name] = spec
    return encoders


# may_change="how": what a study folder may be re-run with (which cells to add, where and how they run, how results
# are read; re-estimated BatchNorm files its probe cells and results under their own band, "val-bn")
@dataclass
class StudySettings:
    dataset: str = setting(choices=DATASETS, help="a named data set, or `folder` for your own labeled folders")
    data_root: str = setting(help=DATA_ROOT_HELP)
    out: str = setting(may_change="how", help="study folder (cells, results)")
    methods: list[str] = setting(["mocov2", "densecl", "mpinet"], may_change="how", nargs="*", help=(
        "pretraining methods, each pretrained once per seed (none: compare --encoders only): by default MPINet "
        "beside MoCo v2 and DenseCL, the closest published instance and dense baselines; a variant "
        "METHOD:KEY=VALUE[,KEY=VALUE] changes pretraining settings, to choose one on val (e.g. mpinet "
        "mpinet:ffl_calibration_ratio=0.25)"))
    controls: list[str] = setting(list(CONTROLS), may_change="how", nargs="*", choices=CONTROLS,
                                  help="inits without pretraining; random-bn re-estimates BatchNorm statistics on the "
                                  "data")
    encoders: dict[str, str] = setting({}, may_change="how", help=f"more encoders, NAME=SPEC; SPEC is {ENCODER_HELP}")
    seeds: list[int] = setting([0, 1, 2], may_change="how", help="pretraining, head and random-weight seeds")
    subset_seeds: list[int] = setting([0, 1], may_change="how", help=(
        "labeled-subset seeds, averaged within a seed: a second one costs a probe per cell (4%% of a Landsat study) "
        "and narrowed the paired spread against one subset in 7 of 7 comparisons there (docs/method.md)"))
    fractions: list[float] = setting([0.1], may_change="how", help="label fractions")
    evaluations: list[str] = setting(["probe"], may_change="how", choices=EVALUATIONS,
                                     help="how each encoder is scored: frozen-feature linear probe and/or "
                                     "DeepLabV3+ fine-tuning")
    split: str = setting("val", may_change="how", help="split the cells are scored on; test only once, at the end")
    metric: str = setting("mIoU", may_change="how", help="mIoU, OA, mF1, or IoU:CLASS for one class (e.g. IoU:road)")
    arch: str = setting("mpinet_resnet18", choices=MPINET_ARCHS, help="encoder of every cell")
    # pretraining
    unlabeled: list[str] = setting([], help="more imagery for pretraining only (files, folders, globs), beside the "
                                   "train split's images: your unlabeled scenes. Probes, fine-tuning and random-bn "
                                   "still read the labeled train split; an image of the scored splits is refused")
    pretrain: dict[str, Any] = setting(
        {"steps": 200, "batch_size": 32, "patch": 160, "crop": 128, "queue_size": 256, "lr": 0.03}, help=(
            "every pretraining cell's settings, over `mpinet pretrain`'s and the recipe's (any of its settings but "
            "those the study sets, e.g. steps=400 lr=0.06; keys not given keep the values shown, and keep_last=1: "
            "one periodic checkpoint a cell besides last.pt). C5 of a 128 px view is 4x4 cells: smaller views leave "
            "the deep terms 1-4 values"))
    pretrain_config: str | None = setting(None, help="YAML or packaged recipe under the pretraining settings")
    bands: str = setting("RGB", help=BANDS_HELP)
    value_max: float | None = setting(None, help=VALUE_MAX_HELP)
    mean: list[float] | None = setting(None, was=None, help="per-band normalisation of every cell (pretraining, "
                                       "probes, fine-tuning, controls); default: ImageNet's for RGB, for other band "
                                       "counts the train split's own per-band mean, computed once and recorded")
    std: list[float] | None = setting(None, was=None, help="per-band normalisation of every cell; default as --mean")
    # downstream
    label_patch: int = setting(96, help="labeled patch px (the subset's unit)")
    probe: dict[str, Any] = setting({"steps": 300, "window": 512}, help=(
        "every probe cell's settings, over `mpinet probe`'s (e.g. steps=600 lr=0.003; keys not given keep the "
        "values shown)"))
    reestimate_bn: bool = setting(False, may_change="how", help="probe: re-estimate BatchNorm statistics on the "
                                  "data for every encoder, not only random-bn")
    finetune: dict[str, Any] = setting({"steps": 200, "batch_size": 8}, help=(
        "every fine-tuning cell's settings, over `mpinet finetune`'s and the recipe's (e.g. steps=400 "
        "decoder=unet; keys not given keep the values shown)"))
    finetune_config: str | None = setting(None, help="YAML or packaged fine-tuning recipe (decoder, lr, precision, "
                                          "...) under the fine-tuning cells' settings (default: DeepLabV3+)")
    device: str = setting("auto", may_change="how", help="auto, cpu or cuda")
    workers: int = setting(0, may_change="how", help="pretraining loader processes")
    read_test_again: bool = setting(False, may_change="how", help="with --split test: compute new test cells "
                                    "although this study's test split was read before (recorded as a second "
                                    "reading); refused otherwise")

    def __post_init__(self) -> None:
        for kind in CELL_SETTINGS:  # a cell setting not given keeps the study's default
            setattr(self, kind, field_default(self.__dataclass_fields__[kind]) | getattr(self, kind))

    def validate(self) -> None:
        for kind, cls in CELL_SETTINGS.items():
            setattr(self, kind, coerce_settings(cls, getattr(self, kind), f"--{kind}"))
        if self.dataset not in DATASETS:
            raise SettingsError(f"--dataset {self.dataset}: choose one of {', '.join(DATASETS)}")
        unknown = [c for c in self.controls if c not in CONTROLS]
        if unknown:
            raise SettingsError(f"--controls {' '.join(unknown)}: choose from {' '.join(CONTROLS)}")
        bad = [e for e in self.evaluations if e not in EVALUATIONS]
        if bad or not self.evaluations:
            raise SettingsError(f"--evaluations {' '.join(self.evaluations)}: choose from {' '.join(EVALUATIONS)}")
        if not self.seeds or not self.subset_seeds or not self.fractions:
            raise SettingsError("give at least one --seeds, --subset-seeds and --fractions value")
        for name in ("methods", "seeds", "subset_seeds", "fractions", "controls", "evaluations"):
            values = getattr(self, name)
            twice = sorted({str(v) for v in values if values.count(v) > 1})
            if twice:  # a repeated value would be counted as another seed (or cell) in every mean and interval
                raise SettingsError(f"--{name.replace('_', '-')} {' '.join(map(str, values))}: "
                                    f"{', '.join(twice)} given twice; give each once")
        if any(not 0 < f <= 1 for f in self.fractions):
            raise SettingsError(f"--fractions {self.fractions}: each in (0, 1], e.g. 0.1 for 10%")
        clash = set(self.encoders) & (set(self.methods) | set(self.controls))
        if clash:
            raise SettingsError(f"encoder name(s) {', '.join(sorted(clash))} clash with a method or control")
        if self.metric not in ("mIoU", "OA", "mF1") and not self.metric.startswith("IoU:"):
            raise SettingsError(f"--metric {self.metric}: mIoU, OA, mF1 or IoU:CLASS (e.g. IoU:tree)")
        if self.metric.startswith("IoU:"):  # before the first cell, not after hours of them
            classes = open_dataset(self.dataset, self.data_root, "train").classes
            if self.metric[4:] not in classes:
                raise SettingsError(f"--metric {self.metric}: no class {self.metric[4:]!r}; classes: "
                                    f"{', '.join(classes)}")
        labeled = labeled_splits(self.dataset, self.data_root)
        if self.split not in labeled:
            hint = (" Pass --split test to score on the test split (the results will say that test was read)."
                    if self.split == "val" and "test" in labeled else "")
            raise SettingsError(f"{self.dataset} at {self.data_root} has no labeled {self.split} split "
                                f"(labeled: {', '.join(labeled)}).{hint}")
        missing = [u for u in self.unlabeled if not Path(u).exists() and not glob.glob(u, recursive=True)]
        if missing:
            raise SettingsError(f"--unlabeled {' '.join(missing)}: no such file, folder or glob")
        for evaluation in self.evaluations:  # every cell's settings are valid before the first cell
            EVALUATIONS[evaluation].settings(self, "random", self.fractions[0], 0, 0, Path("-"))
        recipe = read_yaml(resolve_config(self.pretrain_config)) if self.pretrain_config else {}
        for entry in self.methods or ["mocov2"]:  # every pretraining cell's settings are valid
            method, _ = self.variant(entry)
            # one recipe for every method: it may tune what they share, not what makes each the method it is
            refuse_preset_changes(method, coerce_settings(PretrainConfig, {k: v for k, v in recipe.items()
                                                                           if k != "method"}, self.pretrain_config),
                                  f"--pretrain-config {self.pretrain_config}")
            cfg = PretrainConfig.from_sources(self.pretrain_config, **self._pretrain_values(entry, 0, "-"))
        if self.methods and self.unlabeled:  # every cell reads the same roots: no image of a scored split
            pretraining_paths(cfg)

    @property
    def band(self) -> str:
        """The name results are filed under: the split, with "-bn" when BatchNorm is re-estimated for all."""
        return self.split + ("-bn" if self.reestimate_bn else "")

    def variant(self, entry: str) -> tuple[str, dict[str, Any]]:
        """METHOD[:KEY=VALUE,...] -> (method, pretraining settings it changes over the study's), refusing an unknown
        method, an unknown setting or one that places the cell (data, method, seed, folder)."""
        method, _, changes = entry.partition(":")
        if method not in METHODS:
            raise SettingsError(f"--methods {entry}: unknown method {method!r}; choose from {', '.join(METHODS)}, "
                                "optionally as a variant METHOD:KEY=VALUE[,KEY=VALUE]")
        try:
            values = key_values([c for c in changes.split(",") if c], "--methods")
        except SettingsError:
            raise SettingsError(f"--methods {entry}: write a variant as METHOD:KEY=VALUE[,KEY=VALUE]") from None
        overrides = coerce_settings(PretrainConfig, values, f"--methods {entry}")
        own = sorted(set(overrides) & {"dataset", "data_root", "method", "seed", "out"})
        if own:
            raise SettingsError(f"--methods {entry}: {', '.join(own)} is set by the study for every cell")
        return method, overrides

    @property
    def cell_bands(self) -> str | None:
        """`bands` as the probe and fine-tuning cells read the data: None for the reader's default (Potsdam's RGB)
        and for a data set read with its files' own bands, as those cells recorded before they took --bands, so
        that they stay reusable. Pretraining cells have always recorded the product itself."""
        return self.bands if DATASETS[self.dataset].band_products and self.bands != "RGB" else None

    def _pretrain_values(self, method: str, seed: int, out: str) -> dict[str, Any]:
        if ":" in method:
            method, overrides = self.variant(method)
            return self._pretrain_values(method, seed, out) | overrides
        return _cell_values("pretrain", dict(
            dataset=self.dataset, data_root=[self.data_root, *self.unlabeled], method=method, arch=self.arch,
            warmup_epochs=1, workers=self.workers, seed=seed, out=out, device=self.device,
            save_every=max(50, self.pretrain["steps"] // 4), value_max=self.value_max, mean=self.mean, std=self.std,
            bands=self.bands if DATASETS[self.dataset].band_products else None),
            {"keep_last": 1} | self.pretrain)  # the study reads last.pt only; --pretrain keep_last=N keeps more

    def finetune_cell_config(self, encoder: str, fraction: float, seed: int, subset_seed: int,
                             out: str) -> FinetuneConfig:
        """A fine-tuning cell's settings: `finetune_config`'s recipe under the study's own."""
        return FinetuneConfig.from_sources(self.finetune_config, **_cell_values("finetune", dict(
            dataset=self.dataset, data_root=self.data_root, encoder=encoder, out=out, label_fraction=fraction,
            patch=self.label_patch, crop=self.label_patch, seed=seed, subset_seed=subset_seed, device=self.device,
            save_every=self.finetune["steps"], arch=self.arch, value_max=self.value_max, mean=self.mean,
            std=self.std, bands=self.cell_bands), self.finetune))


# each kind of cell: its settings class (what `--pretrain`, `--probe`, `--finetune` KEY=VALUE may name)
CELL_SETTINGS = {"pretrain": PretrainConfig, "probe": ProbeConfig, "finetune": FinetuneConfig}
# the cells' settings a study recorded flat before they were nested under their kind (old name -> key)
_FLAT_CELL_SETTINGS = {"pretrain": {"pretrain_steps": "steps", "batch_size": "batch_size", "patch": "patch",
                                    "crop": "crop", "queue_size": "queue_size", "lr": "lr"},
                       "probe": {"probe_steps": "steps", "window": "window"}, "finetune": {"finetune_steps": "steps"}}


def _cell_values(kind: str, placed: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """A cell's settings: what the study places (data, seed, folder, normalisation) with the study's `--KIND`
    settings, which may not name a placed one."""
    clash = sorted(set(given) & set(placed))
    if clash:
        raise SettingsError(f"--{kind} {' '.join(f'{k}={given[k]}' for k in clash)}: the study sets "
                            f"{', '.join(clash)} for every cell (give the study's own flag, if it has one)")
    return placed | given


def nested_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """A study's recorded settings in today's form: a study made before its cells' settings were nested under
    `pretrain`, `probe` and `finetune` recorded them flat (pretrain_steps, probe_steps, window, ...)."""
    saved = dict(saved)
    for kind, names in _FLAT_CELL_SETTINGS.items():
        if kind not in saved:
            saved[kind] = {key: saved.pop(old) for old, key in names.items() if old in saved}
            if kind == "finetune":
                saved[kind]["batch_size"] = 8  # what the study passed to every fine-tuning cell then
    return saved


def _update_json(path: Path, change: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Read the JSON file `path` (None when there is none), apply `change` and write the result, under an exclusive
    lock on the study folder's .study.lock: studies side by side in one folder never lose each other's entries."""
    with open(path.parent / ".study.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = change(json.loads(path.read_text()) if path.is_file() else None)
        write_json(record, path)
        return record


class _Timings:
    """Seconds each cell took, kept in OUT/timings.json (keyed by the cell's path in OUT, so a moved study keeps
    them) so a resumed study still states them; studies side by side into one folder keep each other's entries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def _key(self, cell: Path) -> str:
        try:
            return cell.relative_to(self.path.parent).as_posix()
        except ValueError:
            return cell.as_posix()

    def record(self, cell: Path, seconds: float) -> None:
        self.seconds = _update_json(self.path, lambda filed: (filed or {}) | {self._key(cell): round(seconds, 1)})

    def minutes(self, cell: Path) -> float | None:
        s = self.seconds.get(self._key(cell), self.seconds.get(cell.as_posix()))  # (older studies: full paths)
        return None if s is None else s / 60


def _claim(s: StudySettings, out: Path) -> dict[str, Any]:
    """OUT/study.json: the settings the folder's cells were made with (a re-run must match them), and the dates
    the test split was read (`_record_test_read`)."""
    now = dataclasses.asdict(s)

    def claim(saved: dict[str, Any] | None) -> dict[str, Any]:
        if saved is None:
            return {"settings": now, "test_reads": []}
        changed = changed_settings(s, nested_settings(saved["settings"]), "reuse")
        if changed:
            raise SettingsError(f"{out} holds a study made with other settings ({'; '.join(changed)}); its cells "
                                "would be filed under this command. Give another --out, or that study's settings.")
        return saved | {"settings": now}

    return _update_json(out / "study.json", claim)


def _record_test_read(s: StudySettings, out: Path) -> list[str]:
    """Date a reading of the test split for new cells (every one is recorded, those of studies side by side too);
    a second reading is refused unless `read_test_again` asks for it, and is then recorded as such."""
    def read(saved: dict[str, Any] | None) -> dict[str, Any]:
        saved = saved or {"settings": dataclasses.asdict(s), "test_reads": []}
        if saved["test_reads"] and not s.read_test_again:
            raise SettingsError(f"the test split of {out} was read on {', '.join(saved['test_reads'])}, and this "
                                "run would compute new test cells: settings chosen after a look at test are not "
                                "tested by it. Choose on --split val; pass --read-test-again to read it anyway (the "
                                "results will say so)")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S") + f".{time.time_ns() // 1_000_000 % 1000:03d}"
        return saved | {"test_reads": [*saved["test_reads"], stamp + (" (again)" if saved["test_reads"] else "")]}

    return _update_json(out / "study.json", read)["test_reads"]


def _folder_name(name: str) -> str:
    """A method variant's folder: METHOD+KEY=VALUE (":" is not allowed in Windows file names)."""
    return name.replace(":", "+")


def _downstream_cell(s: StudySettings, evaluation: str, name: str, spec: str, fraction: float, seed: int,
                     subset_seed: int, out: Path, timings: _Timings,
                     reading: Callable[[], None]) -> tuple[Path, dict[str, Any]]:
    """The cell's metrics: filed ones are read back when the cell's recorded settings (its config.yaml: the encoder
    spec, the probe's or the fine-tuning recipe's resolved values) are this command's, and refused naming the
    difference when not; a damaged metrics file is said and the cell computed again. Otherwise `reading()` is
    called, then the cell is computed."""
    how = EVALUATIONS[evaluation]
    band = s.band if how.reestimate_bn_band else s.split
    cell = out / f"{evaluation}-{band}" / _folder_name(name) / f"f{fraction:g}-s{seed}-sub{subset_seed}"
    cfg = how.settings(s, spec, fraction, seed, subset_seed, cell)
    record = cell / how.record
    metrics_path = cell / "metrics.json"
    if metrics_path.is_file():
        saved = yaml.safe_load(record.read_text()) if record.is_file() else {}
        if name in s.methods:  # the study's own pretraining cell, checked by pretrain_or_reuse; the study may move
            saved["encoder"] = spec
        changed = changed_settings(cfg, saved, "reuse")
        if changed:
            raise SettingsError(f"{cell} was computed with other settings ({'; '.join(changed)}); it is not reused "
                                f"under this command. Give another --out, another encoder name, or delete {cell}.")
        metrics = _filed_metrics(metrics_path, s.metric)
        if metrics is not None:
            return cell, metrics
    reading()
    start = time.perf_counter()
    metrics = how.compute(cfg, s, cell)
    timings.record(cell, time.perf_counter() - start)
    return cell, metrics


@contextlib.contextmanager
def _in_study_words(cell: str) -> Iterator[None]:
    """A pretraining cell's refusal as the study's user gives the settings: `mpinet pretrain`'s `--patch 64` is
    `--pretrain patch=64` here, a flag named without a value its setting's name; the study's own flags (--out,
    --bands, ...) stay as they are."""
    own = {f.name for f in dataclasses.fields(StudySettings)}
    cell_settings = {f.name for f in dataclasses.fields(PretrainConfig)} - own

    def in_words(flag: re.Match[str]) -> str:
        name = flag.group(1).replace("-", "_")
        if name not in cell_settings:
            return flag.group(0)
        return f"--pretrain {name}={flag.group(2)}" if flag.group(2) else name

    try:
        yield
    except ValueError as err:  # SettingsError and the data's refusals; the same exception, its words changed
        if len(err.args) == 1 and isinstance(err.args[0], str):
            err.args = (f"{cell}: " + re.sub(r"--([a-z][a-z-]*)(?: (\d[\d.]*)\b)?", in_words, err.args[0]),)
        raise


def _probe_cell(s: StudySettings, spec: str, fraction: float, seed: int, subset_seed: int, cell: Path) -> ProbeConfig:
    return ProbeConfig(**_cell_values("probe", dict(
        encoder=spec, dataset=s.dataset, data_root=s.data_root, out=str(cell), label_fraction=fraction,
        patch=s.label_patch, seed=seed, subset_seed=subset_seed, split=s.split, arch=s.arch, device=s.device,
        value_max=s.value_max, reestimate_bn=s.reestimate_bn, mean=s.mean, std=s.std, bands=s.cell_bands), s.probe))


def _finetune_and_evaluate(cfg: FinetuneConfig, s: StudySettings, cell: Path) -> dict[str, Any]:
    training.run("finetune", cfg)
    return evaluate(cell / "run", s.dataset, s.data_root, split=s.split, out=cell, device=s.device, previews=1)


register_evaluation("probe", Evaluation(_probe_cell, "config.yaml", lambda cfg, s, cell: run_probe(cfg),
                                        reestimate_bn_band=True))
register_evaluation("finetune", Evaluation(
    lambda s, spec, fraction, seed, sub, cell: s.finetune_cell_config(spec, fraction, seed, sub, str(cell / "run")),
    "run/config.yaml", _finetune_and_evaluate, scores_random_bn=False))


def _filed_metrics(path: Path, metric: str) -> dict[str, Any] | None:
    """A cell's metrics.json, or None (said on stderr) when it is damaged: truncated, empty, or without the
    metric."""
    try:
        metrics = json.loads(path.read_text())
        metrics["per_class"] if metric.startswith("IoU:") else metrics[metric]
        return metrics
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"{path.parent}: metrics.json is damaged ({type(err).__name__}: {err}); computing the cell again",
              file=sys.stderr)
        return None


def metric_value(metrics: dict[str, Any], metric: str) -> float:
    """`metric` of an evaluate metrics.json, as a fraction in [0, 1]."""
    if metric.startswith("IoU:"):
        name = metric[4:]
        if name not in metrics["per_class"]:
            raise SettingsError(f"--metric {metric}: no class {name!r}; classes: {', '.join(metrics['per_class'])}")
        return metrics["per_class"][name]["IoU"] / 100
    return metrics[metric] / 100


def run_study(s: StudySettings) -> dict[str, Any]:
    """Run (or resume) every cell, then write results.json, results-SPLIT.md and the plot; returns the results."""
    s.validate()
    _band_normalisation(s)
    out = Path(s.out)
    fresh = not out.exists() or not any(out.iterdir())
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run_cells(s, out, _claim(s, out))
    except BaseException:
        # a refused first cell left study.json, and with it the corrected command refused as "other settings"
        if fresh and not any(out.rglob("*.pt")):  # no checkpoint: nothing to resume from
            shutil.rmtree(out, ignore_errors=True)
        raise


def _run_cells(s: StudySettings, out: Path, record: dict[str, Any]) -> dict[str, Any]:
    timings = _Timings(out / "timings.json")
    specs: dict[str, list[str]] = {c: [c] * len(s.seeds) for c in s.controls}
    specs |= {name: [spec] * len(s.seeds) for name, spec in s.encoders.items()}
    runs = [(m, seed, out / "pretrain" / f"{_folder_name(m)}-s{seed}") for m in s.methods for seed in s.seeds]
    downstream = [(e, n, f, i, sub) for e in s.evaluations for n in [*s.methods, *specs] for f in s.fractions
                  for i in range(len(s.seeds)) for sub in s.subset_seeds
                  if n != "random-bn" or EVALUATIONS[e].scores_random_bn]
    cells: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}

    dated = False

    def reading() -> None:
        """Date the test split's reading once per run, before its first unfiled cell (a re-run that only
        re-scores filed cells reads nothing new)."""
        nonlocal dated
        if s.split == "test" and not dated:
            record["test_reads"] = _record_test_read(s, out)
            dated = True

    with progress(total=len(runs) + len(downstream), unit="cell", desc="study") as bar:
        for method, seed, run in runs:
            bar.set_postfix_str(f"pretrain {method} seed {seed}")
            with _in_study_words(f"pretraining cell {run.name}"):
                cfg = PretrainConfig.from_sources(s.pretrain_config, **s._pretrain_values(method, seed, str(run)))
                _, seconds = pretrain_or_reuse(cfg)
            if seconds is not None:
                timings.record(run, seconds)
            specs.setdefault(method, []).append(str(run))
            bar.update(1)
        for evaluation, name, fraction, i, sub in downstream:
            bar.set_postfix_str(f"{evaluation} {name} {fraction:g} seed {s.seeds[i]} subset {sub}")
            cell, metrics = _downstream_cell(s, evaluation, name, specs[name][i], fraction, s.seeds[i], sub, out,
                                             timings, reading)
            cells.setdefault(evaluation, {}).setdefault(name, {}).setdefault(f"{fraction:g}", []).append({
                "seed": s.seeds[i], "subset_seed": sub, "value": metric_value(metrics, s.metric),
                "cell": str(cell), "minutes": timings.minutes(cell)})
            bar.update(1)
    from ..pretrain.diagnose import diagnose, problems

    diagnostics = {}
    for _, _, run in runs:
        d = diagnose(run, retrieval_windows=0)
        diagnostics[run.name] = d | {"warnings": problems(d), "minutes": timings.minutes(run)}
    results = {"dataset": s.dataset, "split": s.split, "metric": s.metric, "settings": dataclasses.asdict(s),
               "test_reads": json.loads((out / "study.json").read_text())["test_reads"],  # side by side too
               "cells": cells, "pretraining": diagnostics, "verdicts": _verdicts(cells)}
    write_json(results, out / f"results-{s.band}.json")
    write_text_atomic(out / f"results-{s.band}.md", study_markdown(results))
    for evaluation, by_name in cells.items():
        means = {n: {float(f): statistics.mean(c["value"] * 100 for c in cs) for f, cs in by_f.items()}
                 for n, by_f in by_name.items()}
        stds = {n: {float(f): statistics.stdev(c["value"] * 100 for c in cs) if len(cs) > 1 else 0.0
                    for f, cs in by_f.items()} for n, by_f in by_name.items()}
        label_efficiency_png(means, out / f"study-{s.band}-{evaluation}.png", metric=s.metric, errors=stds,
                             title=f"{s.dataset} ({Path(s.data_root).name}) {s.band}, {evaluation}, mean ± std over "
                                   f"{len(s.seeds)} seed(s) "
                                   f"x {len(s.subset_seeds)} subset(s)")
    return results


def _band_normalisation(s: StudySettings) -> None:
    """Set `s.mean`/`s.std` for imagery without a default normalisation (not three bands): the train split's
    per-band mean and std, computed once per run (the same data gives the same numbers, so a resumed study
    matches its study.json), so that every cell, the controls too, reads the bands alike."""
    if s.mean and s.std:
        return
    train = open_dataset(s.dataset, s.data_root, "train", s.cell_bands, value_max=s.value_max)  # whole scenes
    if train.num_bands == 3:
        return
    mean, std, _, _ = band_statistics(train, desc=f"{train.num_bands}-band statistics of the train split")
    s.mean, s.std = [round(v, 6) for v in mean], [round(max(v, 1e-6), 6) for v in std]


def _pair_key(cell: dict[str, Any]) -> tuple[int, int]:
    return cell["seed"], cell["subset_seed"]


def _verdicts(cells: dict[str, Any]) -> list[dict[str, Any]]:
    """`paired_verdict` for every pair of encoders at every fraction both have, on the (seed, subset seed) cells
    both have, one pair per seed."""
    found = []
    for evaluation, by_name in cells.items():
        names = list(by_name)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                for fraction in by_name[a]:
                    if fraction not in by_name[b]:
                        continue
                    pa = {_pair_key(c): c["value"] for c in by_name[a][fraction]}
                    pb = {_pair_key(c): c["value"] for c in by_name[b][fraction]}
                    shared = [k for k in pa if k in pb]
                    v = paired_verdict([pa[k] for k in shared], [pb[k] for k in shared], [k[0] for k in shared])
                    winner = {"A": a, "B": b}.get(v["verdict"])
                    found.append({"evaluation": evaluation, "fraction": fraction, "a": a, "b": b, **v,
                                  "paired_cells": shared, "winner": winner})
    return found


def answer_lines(results: dict[str, Any]) -> list[str]:
    """The study's answer, one line per (evaluation, label fraction, pretrained or given encoder): it **pays** when
    it is called better than every control (`paired.paired_verdict`), **does not pay** when a control is called
    better than it, and is not shown otherwise (with its mean gap to each control); then how many pretraining
    runs warn."""
    controls = [c for c in results["settings"]["controls"] if any(c in by_name for by_name in
                                                                  results["cells"].values())]
    if not controls:
        return ["No control in this study (--controls random random-bn): nothing to say whether pretraining pays."]
    verdict = {(v["evaluation"], v["fraction"], frozenset((v["a"], v["b"]))): v for v in results["verdicts"]}
    lines = []
    for evaluation, by_name in results["cells"].items():
        for name in (n for n in by_name if n not in controls):
            for fraction in by_name[name]:
                against = {c: verdict[key] for c in controls
                           if (key := (evaluation, fraction, frozenset((name, c)))) in verdict}
                gaps = ", ".join(f"{c} {_signed_gap(v, name)} "
                                 f"({v['winner'] + ' better' if v['winner'] else 'no verdict'})"
                                 for c, v in against.items())
                if not against:
                    call = "not shown: no control was scored at this label fraction"
                elif all(v["winner"] == name for v in against.values()):
                    call = "**pays**: better than every control (95% interval above 0)"
                elif any(v["winner"] in controls for v in against.values()):
                    call = "**does not pay**: a control is better (95% interval below 0)"
                else:
                    call = "not shown: not better than every control (an interval holds 0)"
                lines.append(f"- {evaluation}, {100 * float(fraction):g}% labels, {name}: {call}"
                             + (f"; mean gap to {gaps}." if gaps else "."))
    runs = results["pretraining"]
    warned = sum(bool(d["warnings"]) for d in runs.values())
    if warned:
        lines.append(f"- {warned} of {len(runs)} pretraining runs warn that they learned little (diagnostics below).")
    return lines


def _signed_gap(v: dict[str, Any], name: str) -> str:
    """A verdict's mean gap and interval, in points, as `name` minus the other encoder."""
    sign = 1 if v["a"] == name else -1
    ends = [] if v["low"] is None else sorted(100 * sign * e for e in (v["low"], v["high"]))
    return f"{100 * sign * v['mean_diff']:+.1f}" + (f" [{ends[0]:+.1f}, {ends[1]:+.1f}]" if ends else "")


def _mean_std(values: list[float]) -> str:
    """mean ± std, then each seed's value, so that studies in other folders can be paired seed by seed."""
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    each = " / ".join(f"{100 * v:.1f}" for v in values)
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f} ({each})"


def _others(settings: dict[str, Any], shown: str) -> str:
    """A cell kind's settings other than those the sentence names, as " (key=value, ...)"."""
    rest = [f"{k}={v}" for k, v in settings.items() if k not in shown.split()]
    return f" ({', '.join(rest)})" if rest else ""


def study_markdown(results: dict[str, Any]) -> str:
    s = nested_settings(results["settings"])
    pre, probe, fine = s["pretrain"], s["probe"], s["finetune"]
    test_note = (f"**Scored on the test split**, read on {', '.join(results['test_reads'])}: report it once, at the "
                 "end, and choose no setting from it." if results["split"] == "test" else
                 "Scored on the val split; the test split was "
                 + (f"read on {', '.join(results['test_reads'])}." if results["test_reads"] else "never read."))
    product = s.get("bands", "RGB")  # Potsdam's band product; other data sets are read as their files are
    bands_flag = f" --bands {product}" if product != "RGB" else ""
    lines = [f"# Does pretraining pay? {s['dataset']}{' ' + product if bands_flag else ''} ({s['data_root']}), "
             f"{results['metric']} (%)", "", test_note, "",
             (f"Pretraining: {s['arch']}, {pre['steps']} steps x batch {pre['batch_size']}, {pre['crop']} px views "
              f"of {pre['patch']} px windows from the train split"
              + "".join(f" and {u}" for u in s.get("unlabeled", [])) + f", queue {pre['queue_size']}, lr {pre['lr']} "
              f"per 256{_others(pre, 'steps batch_size crop patch queue_size lr')}. " if s["methods"] else
              f"No pretraining in this study (encoders: {s['arch']}). ")
             + f"Probe: {probe['steps']} steps{_others(probe, 'steps')}"
             + (", BatchNorm re-estimated for every encoder" if s["reestimate_bn"] else "")
             + f"; fine-tuning: {fine['steps']} steps{_others(fine, 'steps')}; labeled patches of "
             f"{s['label_patch']} px. "
             + (f"Every cell normalised with the per-band mean {s['mean']} and std {s['std']} (--mean/--std, or "
                "the train split's own where not given). " if s.get("mean") else "")
             + "Seeds "
             + f"{s['seeds']} (pretraining, head, random weights) x subset seeds {s['subset_seeds']}.", ""]
    for evaluation, by_name in results["cells"].items():
        fractions = list(next(iter(by_name.values())))
        lines += [f"## {evaluation}: mean ± std over seeds (each seed's value in brackets)", "",
                  "| encoder | " + " | ".join(f"{100 * float(f):g}% labels" for f in fractions)
                  + " | minutes a cell (pretraining + this evaluation) |",
                  "|---|" + "---|" * (len(fractions) + 1)]
        for name, by_f in by_name.items():
            row = [_mean_std([c["value"] for c in by_f[f]]) if f in by_f else "-" for f in fractions]
            minutes = [c["minutes"] for cs in by_f.values() for c in cs if c["minutes"] is not None]
            pretraining = [d["minutes"] for run, d in results["pretraining"].items()
                           if run.rpartition("-s")[0] == _folder_name(name) and d["minutes"] is not None]
            cost = (f"{statistics.mean(pretraining):.1f} + " if pretraining else "") + (
                f"{statistics.mean(minutes):.1f}" if minutes else "-")
            lines.append(f"| {name} | " + " | ".join(row) + f" | {cost} |")
        lines.append("")
    lines += ["## Answer", "", *answer_lines(results), ""]
    if s["methods"]:
        lines += [f"Use a pretrained encoder: `mpinet finetune --encoder {s['out']}/pretrain/METHOD-sSEED --dataset "
                  f"{s['dataset']}{bands_flag} --data-root {s['data_root']} --out RUN`, then `mpinet predict RUN "
                  "IMAGE`.", ""]
    if not results["verdicts"]:
        lines.append("No two encoders were scored at one label fraction: no pair to compare.")
    else:
        lines += ["## Verdicts", "",
                  "Rule: the mean of the paired differences A - B over seeds (a seed's subset seeds averaged, since "
                  "they share its pretraining), with its 95% t interval; A is called better when the interval lies "
                  "above 0, B when below. *Seeds to separate*: how many seeds would make the interval exclude 0 if the "
                  "gap and its seed-to-seed spread stayed as observed.", "",
                  "| evaluation | labels | A | B | A - B per seed | mean [95% interval] | pairs | seeds to separate | "
                  "verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for v in results["verdicts"]:
            diffs = " / ".join(f"{100 * d:+.1f}" for d in v["diffs"])
            interval = "" if v["low"] is None else f" [{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]"
            needed = "-" if v["seeds_needed"] is None else str(v["seeds_needed"])
            verdict = f"**{v['winner']} better**" if v["winner"] else v["verdict"]
            lines.append(f"| {v['evaluation']} | {100 * float(v['fraction']):g}% | {v['a']} | {v['b']} | {diffs} | "
                         f"{100 * v['mean_diff']:+.1f}{interval} | {v['pairs']} | {needed} | {verdict} |")
    if results["pretraining"]:
        lines += ["", "## Pretraining diagnostics (`mpinet diagnose RUN`)", "",
                  "| run | minutes | ins, last 10% | chance ln(K+1) | key effective rank | windows the images hold "
                  "(mean overlap) | warnings |",
                  "|---|---|---|---|---|---|---|"]
        for name, d in results["pretraining"].items():
            minutes = "-" if d["minutes"] is None else f"{d['minutes']:.1f}"
            windows = ("-" if d.get("distinct_windows") is None else
                       f"{d['distinct_windows']:.0f} ({100 * d['window_overlap']:.0f}%)")
            chance = "-" if d["chance"] is None else f"{d['chance']:.2f}"  # None: a method without negatives
            rank = "-" if d["key_effective_rank"] is None else f"{d['key_effective_rank']:.1f}"
            lines.append(f"| {name} | {minutes} | {d['ins_last10pct']:.2f} | {chance} | {rank} | {windows} | "
                         f"{'; '.join(d['warnings']) or '-'} |")
    return "\n".join(lines) + "\n"
