"""Pictures people would rather look at than read: confusion matrix, prediction previews, label-efficiency curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_output

__all__ = ["IGNORE_COLOUR", "colourize", "confusion_png", "label_efficiency_png", "preview_png", "thumbnail_of_strip",
           "thumbnail_step"]

IGNORE_COLOUR = (255, 0, 255)  # ignored pixels in previews; no data set uses magenta for a class


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Write through a temporary file so a half-written PNG never replaces a good one."""
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def colourize(labels: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colours; ids outside the palette (ignore) in IGNORE_COLOUR."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:] = IGNORE_COLOUR
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    return lut[labels.astype(np.uint8)]


def thumbnail_step(height: int, width: int, side: int = 512) -> int:
    """Subsampling step that brings the longer side to at most `side` px."""
    return max(1, -(-max(height, width) // side))


def thumbnail_of_strip(array: np.ndarray, top: int, step: int) -> np.ndarray:
    """The part of a (..., rows, W) strip starting at raster row `top` that every-`step`-th-pixel subsampling
    of the whole raster keeps, so thumbnails of consecutive strips concatenate into the raster's thumbnail."""
    return array[..., -top % step :: step, ::step]


def preview_png(image: np.ndarray | None, truth: np.ndarray | None, pred: np.ndarray,
                palette: Sequence[Sequence[int]],
                path: Path, title: str = "", ignore_index: int = 255,
                class_names: Sequence[str] | None = None) -> Path:
    """Image | ground truth | prediction, side by side, subsampled to about 512 px, with a legend of the class
    colours (and the colour of ignored pixels) under them, on a grey page so that white classes (Potsdam's
    impervious surface) show. image: (C, H, W) in [0, 1], or None for the prediction alone (`predict --preview`).

    Arrays already that small (as evaluate's streamed thumbnails are) are drawn as they are."""
    plt = _pyplot()
    step = thumbnail_step(*pred.shape)
    panels = [] if image is None else [
        ("image (first 3 bands)", np.clip(np.moveaxis(image[:3, ::step, ::step], 0, -1), 0, 1))]
    if truth is not None:
        panels.append(("ground truth", colourize(truth[::step, ::step], palette, ignore_index)))
    panels.append(("prediction", colourize(pred[::step, ::step], palette, ignore_index)))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5, 4 * len(panels)), 4.3), facecolor="0.85")
    for ax, (name, picture) in zip(np.atleast_1d(axes), panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    names = list(class_names or [str(i) for i in range(len(palette))])
    colours = [*palette[: len(names)], IGNORE_COLOUR]  # outlined: Potsdam's impervious surface is white
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=np.asarray(c) / 255, edgecolor="0.4", lw=0.5) for c in colours]
    columns = min(len(handles), 5 if len(panels) > 1 else 3)  # a lone panel's legend must fit under it
    fig.legend(handles, [*names, f"ignored ({ignore_index}) / no label"], loc="lower center",
               ncol=columns, fontsize=8, frameon=False)
    rows = -(-len(handles) // columns)
    fig.tight_layout(rect=(0, 0.06 * rows, 1, 0.94))
    return _save(fig, path)


def confusion_png(confusion: np.ndarray, class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: ground truth), each cell annotated in percent."""
    plt = _pyplot()
    cm = np.asarray(confusion, np.float64)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.1 * n + 3, 1.0 * n + 2))
    im = ax.imshow(100 * rows, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{100 * rows[i, j]:.0f}", ha="center", va="center",
                    color="white" if rows[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, label="% of the true class")
    ax.set_title(title or "confusion matrix (% of each true class)")
    fig.tight_layout()
    return _save(fig, path)


def label_efficiency_png(results: dict[str, dict[float, float]], path: Path, metric: str = "mIoU",
                         title: str = "", errors: dict[str, dict[float, float]] | None = None) -> Path:
    """`metric` against label fraction (log x), one line per encoder. results: encoder -> {fraction: value};
    `errors` (same keys): error bars, drawn side by side so that they stay apart."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, by_fraction) in enumerate(results.items()):
        xs = sorted(by_fraction)
        dodge = 10 ** (0.02 * (i - (len(results) - 1) / 2)) if errors else 1.0
        yerr = [errors[name][x] for x in xs] if errors else None
        ax.errorbar([100 * x * dodge for x in xs], [by_fraction[x] for x in xs], yerr=yerr, marker="o", capsize=3,
                    label=name, linestyle="--" if name in ("random", "random-bn") else "-")
    ax.set_xscale("log")
    fractions = sorted({x for by_fraction in results.values() for x in by_fraction})
    ax.minorticks_off()
    ax.set_xticks([100 * x for x in fractions], [f"{100 * x:g}" for x in fractions])
    if len(fractions) == 1:
        ax.set_xlim(100 * fractions[0] / 1.5, 100 * fractions[0] * 1.5)
    ax.set_xlabel("labeled training patches (%)")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title or f"{metric} vs labels", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
