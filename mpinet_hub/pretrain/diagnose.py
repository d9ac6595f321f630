"""`mpinet diagnose RUN`: did a pretraining run learn anything, and which loss term drove it?

From the run folder alone (log.jsonl, checkpoints/last.pt, and the run's own images for retrieval):

- the instance loss against chance, ln(K+1): a query that cannot tell its key from the K queued ones scores
  that; a run whose `ins` ends within `CHANCE_MARGIN` nats of it has learned almost nothing of the task;
- the spread of the last queue of keys: mean cosine and effective rank (exp of the entropy of the normalised
  singular values, out of 128): a rank of a few dimensions is dimensional collapse;
- how distinct the windows are: the images' area in windows and the share of a window's area a second random
  window covers on average (the instance task's negatives are views of the same ground when a batch draws more
  windows than the images hold);
- view retrieval: each window's second view found among `windows` keys from the first views, with the run's
  networks and with random weights (chance 1/windows);
- the share of each weighted term in the total over the last tenth of the steps, and the norm of each weighted
  term's gradient on the backbone for one batch (with retrieval): which term moves the encoder.

The thresholds are rules of thumb read off the studies in docs/evidence.md, not guarantees.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch

from ..checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from ..data.unlabeled import few_windows
from .registry import build_method, method_class

if TYPE_CHECKING:
    from ..data.unlabeled import UnlabeledImages
    from .base import MomentumMethod
    from .config import PretrainConfig
    from .views import TwoViews

__all__ = ["CHANCE_MARGIN", "COLLAPSED_RANK", "diagnose", "format_diagnosis", "problems"]

CHANCE_MARGIN = 0.1  # nats below ln(K+1) that the instance loss must reach to count as learning
COLLAPSED_RANK = 8.0  # effective rank of the keys (of 128) below which they count as collapsed (a quarter of
# the rank K keys can reach, where the queue is shorter)


def _log_records(run: Path) -> list[dict[str, Any]]:
    path = run / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log; is {run} a `mpinet pretrain` run folder?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _key_spread(keys: torch.Tensor) -> tuple[float, float]:
    """(mean cosine between distinct keys, effective rank of the centred keys)."""
    k = keys.float()
    n = k.shape[0]
    cos = k @ k.t()
    sv = torch.linalg.svdvals(k - k.mean(0))
    p = sv**2 / (sv**2).sum().clamp_min(1e-12)
    rank = float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))
    return float((cos.sum() - n) / max(1, n * n - n)), rank


def diagnose(run: str | Path, retrieval_windows: int = 256, seed: int = 123) -> dict[str, Any]:
    """The figures above for a pretraining run; `retrieval_windows=0` skips retrieval (only the images' sizes are
    read)."""
    run = Path(run)
    records = _log_records(run)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    if ckpt.get("format") != CHECKPOINT_FORMAT:  # a fine-tuning run's checkpoint has no queue or loss terms
        raise ValueError(f"{run} is not a pretraining run (its checkpoints/last.pt is {ckpt.get('format')!r}); "
                         "`mpinet diagnose` reads the folder of an `mpinet pretrain` run")
    cfg = ckpt["config"]
    method = method_class(ckpt.get("method") or cfg["method"])
    chance = method.instance_chance(SimpleNamespace(**cfg))  # None: a loss without negatives
    queue = ckpt["buffers"].get("queue")  # a method without negatives keeps none
    # steps until the queue's random start is gone: against random keys ins says nothing
    filled = math.ceil(cfg["queue_size"] / (2 * cfg["batch_size"])) if queue is not None else 0
    real = [r["ins"] for r in records if r["step"] > filled]
    tail = records[-max(1, len(records) // 10):]
    cosine, rank = _key_spread(queue) if queue is not None else (None, None)
    weights = method.term_weights(SimpleNamespace(**cfg))
    shares: dict[str, float] = {}
    for r in tail:  # a weight is a number, or the name of a logged scalar (mpinet's calibrated w_ffl)
        parts = {k: float(r.get(w, 0.0) if isinstance(w, str) else w) * r[k] for k, w in weights.items() if k in r}
        total = sum(parts.values()) or 1.0
        for k, v in parts.items():
            shares[k] = shares.get(k, 0.0) + v / total / len(tail)
    result: dict[str, Any] = {
        "run": str(run), "method": ckpt.get("method"), "steps": int(ckpt["step"]),
        "queue_size": None if queue is None else queue.shape[0],
        "chance": chance, "ins_last10pct": statistics.mean(r["ins"] for r in tail),
        "ins_min": min(real) if real else None,
        "key_mean_cosine": cosine, "key_effective_rank": rank, "term_shares": shares,
        "w_ffl": cfg.get("w_ffl_calibrated"),
    }
    try:  # windows drawn by `seed`, not the run's: runs of one study are scored on the same windows
        settings, images = _run_images(ckpt, seed)
    except (OSError, ValueError) as err:
        return result | {"distinct_windows": None, "window_overlap": None, "imagery_note": f"images not readable: "
                         f"{err}"} | ({"retrieval": None, "retrieval_random": None} if retrieval_windows else {})
    result |= {"distinct_windows": images.distinct_windows(), "window_overlap": images.window_overlap(),
               "patch": settings.patch, "batch_size": settings.batch_size}
    if retrieval_windows:
        result |= _retrieval(ckpt, settings, images, retrieval_windows, seed)
        result["backbone_gradients"] = _backbone_gradients(ckpt, settings, images, seed)
    return result


def _run_images(ckpt: dict[str, Any], seed: int) -> tuple[PretrainConfig, UnlabeledImages]:
    """(the run's settings, its training images drawn by `seed`); raises OSError/ValueError when they moved."""
    from .config import PretrainConfig
    from .trainer import build_pretraining_dataset

    saved = {k: v for k, v in ckpt["config"].items() if not k.endswith("_calibrated")}
    cfg = PretrainConfig.from_sources(None, saved=True, **{**saved, "workers": 0})
    return cfg, build_pretraining_dataset(dataclasses.replace(cfg, seed=seed))


def _views(ckpt: dict[str, Any], cfg: PretrainConfig, images: UnlabeledImages, windows: int, seed: int) -> TwoViews:
    """Two normalised views (no photometric jitter) of each of the first `windows` windows drawn by `seed`."""
    from .views import make_two_views

    items = [images[i]["image"] for i in range(windows)]  # 8-bit files give bytes (keep_uint8)
    batch = torch.stack([x.float() / 255 if x.dtype == torch.uint8 else x.float() for x in items])
    views = make_two_views(batch, cfg.crop, generator=torch.Generator().manual_seed(seed))
    norm = ckpt.get("norm") or {}
    mean = torch.tensor(norm.get("mean") or [0.0] * batch.shape[1]).view(1, -1, 1, 1)
    std = torch.tensor(norm.get("std") or [1.0] * batch.shape[1]).view(1, -1, 1, 1)
    views.view1, views.view2 = (views.view1 - mean) / std, (views.view2 - mean) / std
    return views


def _model(ckpt: dict[str, Any] | None, cfg: PretrainConfig, bands: int, seed: int) -> MomentumMethod:
    """The run's method with its weights and buffers (queue, calibrated weight, ...), or random weights (None)."""
    torch.manual_seed(seed)
    model = build_method(cfg, bands)
    if ckpt is not None:
        model.online.load_state_dict(ckpt["model"])
        model.target.load_state_dict(ckpt["target"])
        for name, value in ckpt["buffers"].items():
            getattr(model, name).copy_(value)
    return model


@torch.no_grad()
def _retrieval(ckpt: dict[str, Any], cfg: PretrainConfig, images: UnlabeledImages, windows: int,
               seed: int) -> dict[str, Any]:
    """Top-1 view retrieval with the run's online network (queries) and target (keys), and with random weights,
    on the same windows and views drawn from the run's own training images."""
    windows = min(windows, len(images))
    views = _views(ckpt, cfg, images, windows, seed)
    scores = {}
    for name, weights in (("retrieval", ckpt), ("retrieval_random", None)):
        model = _model(weights, cfg, views.view1.shape[1], seed).eval()
        q = model.online(views.view1, views.overlap1)["instance"]
        k = model.target(views.view2, views.overlap2, predict=False)["instance"]
        scores[name] = float(((q @ k.t()).argmax(1) == torch.arange(windows)).float().mean())
    return scores | {"retrieval_windows": windows}


def _backbone_gradients(ckpt: dict[str, Any], cfg: PretrainConfig, images: UnlabeledImages,
                        seed: int) -> dict[str, float]:
    """The norm of each weighted term's gradient on the backbone, for one batch of the run's size at its last
    step (views without photometric jitter): which term moves the encoder, which a term's share of the loss value
    does not say (a flat term may hold much of the value and little of the gradient)."""
    views = _views(ckpt, cfg, images, min(cfg.batch_size, len(images)), seed)
    model = _model(ckpt, cfg, views.view1.shape[1], seed).train()
    terms = model(views)
    scalars = model.logged_scalars()
    params = list(model.online.backbone.parameters())
    norms = {}
    for name, weight in model.term_weights(cfg).items():
        weight = float(scalars[weight] if isinstance(weight, str) else weight)
        if name in terms and weight:
            grads = torch.autograd.grad(weight * terms[name], params, retain_graph=True, allow_unused=True)
            norms[name] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))
    return norms


def problems(d: dict[str, Any]) -> list[str]:
    """Plain warnings for a diagnosis, each with what to try; empty when nothing looks wrong."""
    out = []
    if d["chance"] is None:  # no negatives, no chance level to compare with
        pass
    elif d["ins_min"] is None:
        out.append("the run ended before the queue held only real keys: too short to judge the instance branch. "
                   "Train longer than queue_size / (2 x batch) steps.")
    elif d["chance"] - d["ins_min"] < CHANCE_MARGIN:
        out.append(f"the instance loss never left chance: lowest {d['ins_min']:.2f} against ln(K+1) = "
                   f"{d['chance']:.2f}, so the instance branch learned almost nothing. Try more steps, more varied "
                   "images, a smaller --queue-size or a larger --batch-size.")
    rank = d["key_effective_rank"]
    if rank is not None and rank < min(COLLAPSED_RANK, (min(d["queue_size"], 128) - 1) / 4):
        out.append(f"the keys collapsed: they span about {d['key_effective_rank']:.1f} of 128 dimensions (mean "
                   f"cosine {d['key_mean_cosine']:.2f}). Try a lower --lr, fewer steps, or more varied images.")
    if d.get("distinct_windows") is not None and (text := few_windows(d["distinct_windows"], d["window_overlap"],
                                                                      d["patch"], d["batch_size"])):
        out.append(text)
    if d.get("retrieval") is not None and d["retrieval"] <= d["retrieval_random"]:
        out.append(f"view retrieval {d['retrieval']:.3f} is no better than random weights' "
                   f"{d['retrieval_random']:.3f}: the encoder does not tell two views of a window from others.")
    return out


def format_diagnosis(d: dict[str, Any]) -> str:
    lines = [f"{d['run']}: {d['method']}, {d['steps']} steps",
             f"  instance loss: last 10% {d['ins_last10pct']:.3f}, lowest on real keys "
             + ("-" if d["ins_min"] is None else f"{d['ins_min']:.3f}")
             + ("; no chance level (no negatives)" if d["chance"] is None
                else f"; chance ln(K+1) = {d['chance']:.3f} (K = {d['queue_size']})")]
    if d["key_effective_rank"] is not None:
        lines.append(f"  keys: effective rank {d['key_effective_rank']:.1f} of 128, mean cosine "
                     f"{d['key_mean_cosine']:.3f}")
    lines += ["  share of the total, last 10% of steps: "
             + ", ".join(f"{k} {100 * v:.0f}%" for k, v in d["term_shares"].items())
             + (f" (w_ffl {d['w_ffl']:.3g})" if d.get("w_ffl") else "")]
    if d.get("distinct_windows") is not None:
        lines.append(f"  images: about {d['distinct_windows']:.0f} non-overlapping {d['patch']} px windows (a batch "
                     f"draws {d['batch_size']}); two random windows share {100 * d['window_overlap']:.0f}% of their "
                     "area on average")
    elif d.get("imagery_note"):
        lines.append(f"  images: {d['imagery_note']} (no view retrieval)")
    if d.get("backbone_gradients"):
        lines.append("  gradient norm on the backbone, one batch: " + ", ".join(
            f"{k} {v:.3g}" for k, v in d["backbone_gradients"].items()))
    if d.get("retrieval") is not None:
        lines.append(f"  view retrieval top-1: {d['retrieval']:.3f}, random weights {d['retrieval_random']:.3f}, "
                     f"chance {1 / d['retrieval_windows']:.3f} ({d['retrieval_windows']} windows)")
    found = problems(d)
    lines += [f"  warning: {p}" for p in found] or ["  no warning" + (
        "" if d["chance"] is None else ": the instance branch left chance and the keys did not collapse")]
    return "\n".join(lines)
