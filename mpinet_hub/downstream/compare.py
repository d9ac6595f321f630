"""The label-efficiency table: encoders x label fractions, each fine-tuned and evaluated the same way.

Encoders are `NAME=SPEC` (or a bare SPEC); with `pretrain_methods`, each method is first pretrained on the
data set's training images in OUT/pretrain/METHOD (a finished run is reused only if made with the same
settings), then compared like any other encoder.
Every cell is OUT/runs/NAME/fraction-F (a fine-tuning run and its eval-SPLIT/metrics.json); cells whose
metrics exist are reused, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..data import evaluation_split
from ..pretrain.config import PretrainConfig
from ..pretrain.trainer import pretrain_or_reuse
from ..settings import SettingsError
from ..training import resume_or_start
from .evaluate import evaluate, write_json
from .finetune import FinetuneConfig, Finetuner
from .plots import label_efficiency_png
from .probe import ProbeConfig, run_probe

__all__ = ["EVALUATIONS", "compare", "parse_encoders", "results_markdown"]

EVALUATIONS = ("finetune", "probe")


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


def pretrain_encoder(method: str, settings: dict[str, Any], out: Path) -> str:
    """Pretrain `method` with `settings` (PretrainConfig fields over the method's preset), resume it or reuse a
    finished run made with the same settings; returns the run folder, which `load_encoder` reads as an encoder.
    No export: an export needs a tag, and a tag names a data set whose licence the weights would then claim."""
    cfg = PretrainConfig.from_sources(settings.get("config"), **{**settings, "config": None, "method": method,
                                                                 "out": str(out)})
    return str(pretrain_or_reuse(cfg)[0])


def compare(
    base: FinetuneConfig,
    encoders: dict[str, str],
    fractions: list[float],
    out: str | Path,
    split: str | None = None,
    pretrain_methods: tuple[str, ...] = (),
    pretrain: dict[str, Any] | None = None,
    eval_kwargs: dict[str, Any] | None = None,
    evaluation: str = "finetune",
    probe_steps: int = 300,
) -> dict[str, dict[float, dict[str, Any]]]:
    """Fine-tune + evaluate (or, with evaluation="probe", linear-probe) every encoder at every fraction; writes
    OUT/results.{json,md} and label_efficiency.png (probe: results_probe.*, label_efficiency_probe.png)."""
    if evaluation not in EVALUATIONS:
        raise SettingsError(f"evaluation {evaluation!r}; choose one of {', '.join(EVALUATIONS)}")
    out = Path(out)
    split = split or evaluation_split(base.dataset, base.data_root)
    encoders = dict(encoders)
    for method in pretrain_methods:
        if pretrain is None:
            raise SettingsError("pretraining methods given without pretraining settings")
        encoders.setdefault(method, pretrain_encoder(method, pretrain, out / "pretrain" / method))
    if not encoders or not fractions:
        raise SettingsError("nothing to compare: give --encoders and/or --pretrain, and --fractions")
    results: dict[str, dict[float, dict[str, Any]]] = {}
    metrics_files: dict[str, dict[float, Path]] = {}
    for name, spec in encoders.items():
        for fraction in fractions:
            run = out / "runs" / name / f"{'probe-' if evaluation == 'probe' else ''}fraction-{fraction:g}"
            metrics_path = run / (f"eval-{split}" if evaluation == "finetune" else "") / "metrics.json"
            if metrics_path.is_file():
                metrics = json.loads(metrics_path.read_text())
            elif evaluation == "probe":
                metrics = run_probe(ProbeConfig(
                    spec, base.dataset, base.data_root, str(run), label_fraction=fraction, steps=probe_steps,
                    batch_size=base.batch_size, patch=base.patch, seed=base.seed, subset_seed=base.subset_seed,
                    split=split, arch=base.arch, device=base.device, mean=base.mean, std=base.std,
                    value_max=base.value_max, window=(eval_kwargs or {}).get("window", ProbeConfig.window)))
            else:
                cfg = replace(base, encoder=spec, label_fraction=fraction, out=str(run))
                cfg.validate()
                model_dir = resume_or_start(Finetuner, cfg).train()
                metrics = evaluate(model_dir, cfg.dataset, cfg.data_root, split=split, out=run / f"eval-{split}",
                                   bands=cfg.bands, device=cfg.device, **(eval_kwargs or {}))
            results.setdefault(name, {})[fraction] = metrics
            metrics_files.setdefault(name, {})[fraction] = metrics_path
    summary = {name: {f"{f:g}": {k: m[k] for k in ("mIoU", "OA", "mF1")}
                      | {"encoder": encoders[name], "metrics": str(metrics_files[name][f])}
                      for f, m in by_f.items()} for name, by_f in results.items()}
    protocol = metrics["protocol"]  # one data set and split: every cell has the same
    suffix = "_probe" if evaluation == "probe" else ""
    head = f"linear probe, {probe_steps} steps" if evaluation == "probe" else f"{base.decoder}, {base.steps} steps"
    write_json({"dataset": base.dataset, "split": split, "evaluation": evaluation, "decoder": base.decoder,
                "steps": probe_steps if evaluation == "probe" else base.steps, "protocol": protocol,
                "results": summary}, out / f"results{suffix}.json")
    (out / f"results{suffix}.md").write_text(results_markdown(results, base, split, protocol, head))
    label_efficiency_png({n: {f: m["mIoU"] for f, m in by_f.items()} for n, by_f in results.items()},
                         out / f"label_efficiency{suffix}.png", title=f"{base.dataset} {split}, {head}")
    return results


def results_markdown(results: dict[str, dict[float, dict[str, Any]]], base: FinetuneConfig, split: str,
                     protocol: str, head: str | None = None) -> str:
    """Rows: encoders; columns: label fractions; cells: mIoU / OA / mF1 (%)."""
    fractions = sorted({f for by_f in results.values() for f in by_f})
    head = head or f"{base.decoder}, {base.steps} fine-tuning steps"
    lines = [f"# Label efficiency: {base.dataset} {split} ({protocol}), {head}", "", "Cells: mIoU / OA / mF1 (%).", "",
             "| encoder | " + " | ".join(f"{100 * f:g}% labels" for f in fractions) + " |",
             "|---|" + "---|" * len(fractions)]
    for name, by_f in results.items():
        cells = [f"{by_f[f]['mIoU']:.2f} / {by_f[f]['OA']:.2f} / {by_f[f]['mF1']:.2f}" if f in by_f else "-"
                 for f in fractions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
