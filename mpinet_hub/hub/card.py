"""Model cards: render a tag's template from `weights_cards/`, and read back what a card claims."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import yaml

__all__ = ["card_front_matter", "metrics_markdown", "render_card"]


def _template(tag: str) -> str:
    name = f"{tag}.md"
    files = resources.files("mpinet_hub.weights_cards")
    if not files.joinpath(name).is_file():
        raise FileNotFoundError(f"No card template for tag {tag!r} in weights_cards/ (expected {name})")
    return files.joinpath(name).read_text(encoding="utf-8")


def metrics_markdown(results: list[dict[str, Any]]) -> str:
    """A markdown table of downstream results (each a `mpinet evaluate` metrics.json)."""
    if not results:
        return (
            "Not evaluated yet. Fill this section with `mpinet export ... --metrics metrics.json`, where\n"
            "metrics.json is written by `mpinet evaluate`."
        )
    lines = [
        "| data set | protocol | split | labels | mIoU | OA | mF1 | checkpoint |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        fraction = r.get("label_fraction")
        labels = f"{100 * fraction:g}%" if isinstance(fraction, (int, float)) else "-"
        lines.append(
            f"| {r.get('dataset', '-')} | {r.get('protocol', '-')} | {r.get('split', '-')} | {labels} "
            f"| {r['mIoU']:.2f} | {r['OA']:.2f} | {r['mF1']:.2f} | {_run_name(r.get('checkpoint', '-'))} |"
        )
    names = results[0].get("class_names")
    per_class = results[0].get("per_class")
    if names and per_class:
        lines += ["", f"Per-class IoU / F1 of the first row ({results[0].get('protocol', '')}):", ""]
        lines += ["| class | IoU | F1 |", "|---|---|---|"]
        for name in names:
            c = per_class[name]
            lines.append(f"| {name} | {_fmt(c['IoU'])} | {_fmt(c['F1'])} |")
    lines.append("")
    lines.append("F1 of a class present in the ground truth but never predicted counts as 0 (see docs).")
    return "\n".join(lines)


def _run_name(checkpoint: Any) -> str:
    """The fine-tuning run's folder name (`mpinet finetune` saves the model as RUN/model)."""
    path = Path(str(checkpoint))
    return path.parent.name if path.name == "model" and path.parent.name else path.name


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def render_card(tag: str, **fields: Any) -> str:
    """Fill `weights_cards/{tag}.md`; missing fields raise KeyError (a card is never half-filled)."""
    values = dict(fields)
    values["metrics"] = metrics_markdown(fields.get("metrics") or [])
    values["evaluated"] = "true" if fields.get("metrics") else "false"
    for key in ("mean", "std"):
        values[key] = json.dumps([round(float(v), 4) for v in values[key]])
    values["bands"] = ", ".join(values["bands"])
    return Template(_template(tag)).substitute(values)


def card_front_matter(text: str) -> dict[str, Any]:
    """The YAML metadata block of a card (empty if it has none)."""
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    return yaml.safe_load(text[3:end]) or {}
