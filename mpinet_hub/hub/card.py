"""Model cards: huggingface_hub's `ModelCard` from one template (`weights_cards/model_card.md`) and per-tag facts.

The metadata (licence, tags, `model-index` of `EvalResult`s from `mpinet evaluate`'s metrics.json) is built as
`ModelCardData`, so the Hub renders the licence and the results; `card_front_matter` reads it back the same way.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data import DATASETS
from ..models import MPINET_TAGS

__all__ = ["MODEL_INFO_FILE", "card_front_matter", "eval_results", "metrics_markdown", "render_card",
           "segmentation_card"]

MODEL_INFO_FILE = "mpinet.json"  # beside SMP's config.json: what the model expects and what it was trained on

TEMPLATE = "model_card.md"
TAGS = ["timm", "remote-sensing", "self-supervised-learning", "semantic-segmentation", "mpinet"]


def card_licence(facts: dict[str, Any]) -> dict[str, str]:
    """The card metadata's licence fields of a tag: its licence id and, for "other", its name and link."""
    return {"license": facts["license"], **facts.get("license_fields", {})}


def eval_results(tag: str, results: list[dict[str, Any]]) -> list[EvalResult]:
    """The Hub's `model-index` entries for `mpinet evaluate` results: mIoU, OA and mF1 of each."""
    out = []
    for r in results:
        fraction = r.get("label_fraction")
        labels = f", {100 * fraction:g}% labels" if isinstance(fraction, (int, float)) else ""
        for metric in ("mIoU", "OA", "mF1"):
            out.append(EvalResult(
                task_type="semantic-segmentation", task_name="Semantic segmentation (fine-tuned)",
                dataset_type=r.get("dataset", tag), dataset_name=MPINET_TAGS.get(r.get("dataset", tag), {}).get(
                    "data_name", str(r.get("dataset", tag))), dataset_split=r.get("split"),
                metric_type=metric.lower(), metric_name=f"{metric} ({r.get('protocol', '-')} protocol{labels})",
                metric_value=round(float(r[metric]), 2)))
    return out


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


_MPINET = ("Multi-scale fusion pixel and instance contrastive self-supervised learning for semantic\n"
           "             segmentation of high-resolution Earth surface images")
MPINET_CITATION = f"""@article{{liu2025mpinet,
  title   = {{{_MPINET}}},
  author  = {{Liu, Bin and Li, Bing and Li, Shuofeng}},
  journal = {{Advances in Space Research}},
  volume  = {{75}}, number = {{2}}, pages = {{1854--1870}}, year = {{2025}},
  doi     = {{10.1016/j.asr.2024.10.026}}
}}"""
MOCOV2_CITATION = """@article{chen2020mocov2,
  title   = {Improved Baselines with Momentum Contrastive Learning},
  author  = {Chen, Xinlei and Fan, Haoqi and Girshick, Ross and He, Kaiming},
  journal = {arXiv preprint arXiv:2003.04297}, year = {2020}
}"""
DENSECL_CITATION = """@inproceedings{wang2021densecl,
  title     = {Dense Contrastive Learning for Self-Supervised Visual Pre-Training},
  author    = {Wang, Xinlong and Zhang, Rufeng and Shen, Chunhua and Kong, Tao and Li, Lei},
  booktitle = {CVPR}, year = {2021}
}"""
# method -> (how the card names it, its citation); the ablation ladder's rungs are MPINet with parts left out
METHOD_CARDS = {
    "mpinet": ("**MPINet** (instance contrast + multi-scale fusion pixel contrast + focal frequency loss; Liu, Li & "
               "Li, Advances in Space Research 2025)", MPINET_CITATION),
    "mocov2": ("**MoCo v2** (instance contrast against a queue, momentum target; Chen et al. 2020), as mpinet-hub's "
               "baseline with MPINet's views and schedule", MOCOV2_CITATION),
    "mocov2-original": ("**MoCo v2** (instance contrast against a queue, fixed 0.999 momentum; Chen et al. 2020)",
                        MOCOV2_CITATION),
    "densecl": ("**DenseCL** (MoCo v2 plus a dense contrast matched by feature similarity; Wang et al., CVPR 2021)",
                DENSECL_CITATION),
}


def method_card(method: str | None) -> tuple[str, str]:
    """(how a card names the method that made the weights, its citation)."""
    if method in METHOD_CARDS:
        return METHOD_CARDS[method]
    if method in ("pixcontrast", "pixcontrast-c4", "mpinet-noffl"):
        return (f"`{method}`, a rung of mpinet-hub's MPINet ablation ladder (MPINet with parts left out; "
                "docs/method.md)", MPINET_CITATION)
    if method is None:
        return ("an unrecorded method (the weights were exported from a plain state dict)",
                "% the method that made these weights was not recorded with them")
    return f"`{method}`, a pretraining method registered with mpinet-hub", f"% no citation recorded for {method}"


def render_card(tag: str, **fields: Any) -> str:
    """The card of an export of `tag`. `fields`: arch, base_arch, repo_id, sha256, bands, in_chans, mean, std, crop,
    recipe, run_description, metrics (a list of metrics.json dicts), method (the pretraining method, None when not
    recorded); a missing one raises KeyError."""
    facts = MPINET_TAGS[tag]
    results = fields.get("metrics") or []
    method_description, method_citation = method_card(fields.get("method"))
    data = ModelCardData(
        library_name="timm", pipeline_tag="image-feature-extraction", tags=TAGS, model_name=f"{fields['arch']}.{tag}",
        eval_results=eval_results(tag, results) or None, mpinet_sha256=fields["sha256"],
        mpinet_evaluated=bool(results), **card_licence(facts))
    with resources.as_file(resources.files("mpinet_hub.weights_cards") / TEMPLATE) as template:
        card = ModelCard.from_template(
            data, template_path=str(template), model_name=f"{fields['arch']}.{tag}", arch=fields["arch"], tag=tag,
            base_arch=fields["base_arch"], repo_id=fields["repo_id"], sha256=fields["sha256"],
            bands=", ".join(fields["bands"]), in_chans=fields["in_chans"],
            mean=json.dumps([round(float(v), 4) for v in fields["mean"]]),
            std=json.dumps([round(float(v), 4) for v in fields["std"]]), crop=fields["crop"],
            recipe=fields["recipe"], run_description=fields["run_description"], metrics=metrics_markdown(results),
            data_name=facts["data_name"], data_description=facts["data_description"], data_licence=facts["licence"],
            data_citation=facts["citation"], num_classes=len(DATASETS[tag].classes),
            method_description=method_description, method_citation=method_citation)
    return str(card)


def card_front_matter(text: str) -> dict[str, Any]:
    """The metadata of a card, parsed by huggingface_hub (empty if it has none)."""
    return ModelCard(text, ignore_metadata_errors=True).data.to_dict()


def _licence(dataset: str, encoder: str) -> tuple[dict[str, str], str]:
    """Card licence fields and a sentence for a model trained on `dataset` labels from `encoder`'s weights: the
    data's terms, and the encoder's pretraining data's terms where its tag names another data set."""
    terms = [MPINET_TAGS[d] for d in dict.fromkeys([dataset] + [t for t in MPINET_TAGS if f".{t}" in encoder])
             if d in MPINET_TAGS]
    if not terms:
        return {"license": "other", "license_name": "see-training-data"}, (
            "the terms of the labeled data it was trained on (your own data: yours to state), and of the "
            "encoder's pretraining data.")
    fields = card_licence(terms[0]) if len({json.dumps(card_licence(t)) for t in terms}) == 1 else {
        "license": "other", "license_name": "+".join(card_licence(t).get("license_name", t["license"])
                                                     for t in terms)}
    return fields, " and ".join(f"{t['data_name']}: {t['licence']}" for t in terms)


def segmentation_card(name: str, provenance: dict[str, Any], classes: list[str], metrics: list[dict[str, Any]],
                      sha256: str | None = None) -> str:
    """The card of a fine-tuned SMP model folder: the data set, label fraction and encoder it came from, the
    licence those carry (not SMP's default MIT), evaluate's results as a model-index, and the weights' sha256
    (checked by `mpinet push` and `mpinet verify`, as for exports)."""
    dataset, encoder = str(provenance.get("dataset")), str(provenance.get("encoder"))
    licence, sentence = _licence(dataset, encoder)
    data = ModelCardData(
        library_name="segmentation-models-pytorch", pipeline_tag="image-segmentation", model_name=name,
        tags=["segmentation-models-pytorch", "remote-sensing", "semantic-segmentation", "mpinet"],
        eval_results=eval_results(dataset, metrics) or None, mpinet_sha256=sha256, mpinet_evaluated=bool(metrics),
        **licence)
    fraction = provenance.get("labeled_fraction", provenance.get("label_fraction"))  # the share used
    total = provenance.get("total_patches")
    lines = [
        f"# {name}", "",
        f"A {provenance.get('decoder')} segmentation model fine-tuned by `mpinet finetune` on "
        f"{MPINET_TAGS.get(dataset, {}).get('data_name', dataset)} with "
        + (f"{100 * fraction:.3g}% of the labeled patches ({provenance.get('labeled_patches')}"
           + (f" of {total}" if total else "") + " patches)"
           if isinstance(fraction, (int, float)) else "its labeled patches")
        + f", {provenance.get('steps')} steps, from the encoder `{encoder}`.", "",
        f"Classes: {', '.join(f'{i}={c}' for i, c in enumerate(classes))}.", "",
        f"Licence: {sentence} The code of mpinet-hub is Apache-2.0.", "",
        "## Results", metrics_markdown(metrics), "",
        "## Load it", "```python",
        "import segmentation_models_pytorch as smp", "",
        'model = smp.from_pretrained("<this folder or repo>")  # no mpinet_hub needed',
        "```",
        "Class names, band order and normalisation are in `mpinet.json` "
        "(`mpinet_hub.downstream.load_segmentation_model` reads them).",
    ]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"
