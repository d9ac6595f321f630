"""Segmentation metrics by mmsegmentation's definitions: one global confusion matrix per evaluation.

Rows are ground truth, columns prediction; ground-truth pixels equal to the ignore index are skipped.
IoU = TP/(TP+FP+FN), F1 = 2TP/(2TP+FP+FN), OA = trace/total. A class absent from both ground truth and
prediction has NaN IoU/F1 and is left out of the means. A class present in the ground truth but never
predicted gets F1 = 0 here; `f1_from_precision_recall=True` reproduces mmsegmentation/GeoSeg, where its
precision is 0/0 = NaN and it silently drops out of mF1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .data import protocol_of

__all__ = ["SegmentationMetrics"]


class SegmentationMetrics:
    """Accumulate a confusion matrix over batches (any device), then compute mIoU, OA, mF1 in percent.

    Args:
        num_classes: number of classes C.
        ignore_index: ground-truth value to skip.
        class_names: names for the per-class entries (default "0".."C-1").
        exclude_from_mean: class ids left out of mIoU/mF1 (not of OA), e.g. Potsdam clutter for GeoSeg.
        f1_from_precision_recall: mmseg/GeoSeg parity (see the module docstring).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: list[str] | None = None,
                 exclude_from_mean: tuple[int, ...] = (), f1_from_precision_recall: bool = False,
                 protocol: str | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.exclude_from_mean = tuple(exclude_from_mean)
        self.f1_from_precision_recall = f1_from_precision_recall
        self.protocol = protocol
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @classmethod
    def from_protocol(cls, name: str, class_names: list[str] | None = None, **kwargs: Any) -> SegmentationMetrics:
        """Metrics by a data set's reporting protocol (`data.DatasetSpec.protocols`); the classes default to its
        reader's."""
        spec, protocol = protocol_of(name)
        class_names = class_names or list(spec.reader.classes)
        if not class_names:
            raise ValueError(f"protocol {name!r} takes its classes from the data: pass class_names")
        return cls(len(class_names), class_names=class_names, exclude_from_mean=protocol.exclude_from_mean,
                   protocol=name, **kwargs)

    def reset(self) -> None:
        self.confusion.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred: (B, H, W) class ids or (B, C, H, W) scores; target: (B, H, W) with ignore_index allowed."""
        if pred.ndim == target.ndim + 1:
            pred = pred.argmax(1)
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        target = target.reshape(-1).to(torch.int64)
        pred = pred.reshape(-1).to(torch.int64).to(target.device)
        keep = target != self.ignore_index
        target, pred = target[keep], pred[keep]
        if target.numel() and (int(target.max()) >= self.num_classes or int(target.min()) < 0):
            raise ValueError(f"target holds values outside 0..{self.num_classes - 1} besides {self.ignore_index}")
        if pred.numel() and (int(pred.max()) >= self.num_classes or int(pred.min()) < 0):
            raise ValueError(f"prediction holds values outside 0..{self.num_classes - 1}")
        counts = torch.bincount(target * self.num_classes + pred, minlength=self.num_classes**2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes).cpu()

    def merge(self, other: SegmentationMetrics) -> None:
        self.confusion += other.confusion

    def all_reduce(self) -> None:
        """Sum the confusion matrix over DDP processes (no-op outside torch.distributed)."""
        if dist.is_available() and dist.is_initialized():
            backend = dist.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            buf = self.confusion.to(device)
            dist.all_reduce(buf)
            self.confusion = buf.cpu()

    def compute(self) -> dict[str, Any]:
        cm = self.confusion.to(torch.float64).numpy()
        tp = np.diag(cm)
        fp = cm.sum(0) - tp
        fn = cm.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / (tp + fp + fn)
            precision = tp / (tp + fp)
            recall = tp / (tp + fn)
            if self.f1_from_precision_recall:
                f1 = 2 * precision * recall / (precision + recall)  # NaN wherever P or R is 0/0, as in mmseg
            else:
                f1 = 2 * tp / (2 * tp + fp + fn)
        in_mean = np.array([i not in self.exclude_from_mean for i in range(self.num_classes)])
        total = cm.sum()

        def mean(values: np.ndarray) -> float:
            chosen = values[in_mean]
            chosen = chosen[~np.isnan(chosen)]
            return float(chosen.mean() * 100) if chosen.size else float("nan")

        def pct(x: float) -> float | None:
            return None if np.isnan(x) else float(x * 100)

        return {
            "protocol": self.protocol,
            "mIoU": mean(iou),
            "OA": float(tp.sum() / total * 100) if total else float("nan"),
            "mF1": mean(f1),
            "class_names": self.class_names,
            "excluded_from_mean": [self.class_names[i] for i in self.exclude_from_mean],
            "per_class": {
                name: {"IoU": pct(iou[i]), "F1": pct(f1[i]), "precision": pct(precision[i]),
                       "recall": pct(recall[i]), "pixels": int(cm[i].sum())}
                for i, name in enumerate(self.class_names)
            },
            "pixels_evaluated": int(total),
            "confusion_matrix": self.confusion.tolist(),
        }
