"""Metrics against hand-computed cases and an independent per-pixel reference."""

import math

import numpy as np
import pytest
import torch

from mpinet_hub.metrics import SegmentationMetrics


def reference(pred: np.ndarray, gt: np.ndarray, n: int, ignore: int, exclude=()):
    """Per-class counting with plain loops over pixels: no confusion matrix, no vectorisation."""
    tp, fp, fn = [0] * n, [0] * n, [0] * n
    total = correct = 0
    for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
        if g == ignore:
            continue
        total += 1
        if p == g:
            tp[g] += 1
            correct += 1
        else:
            fp[p] += 1
            fn[g] += 1
    ious, f1s = [], []
    for c in range(n):
        if tp[c] + fp[c] + fn[c] == 0:
            ious.append(math.nan)
            f1s.append(math.nan)
        else:
            ious.append(tp[c] / (tp[c] + fp[c] + fn[c]))
            f1s.append(2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]))
    keep = [c for c in range(n) if c not in exclude]
    miou = np.nanmean([ious[c] for c in keep]) * 100
    mf1 = np.nanmean([f1s[c] for c in keep]) * 100
    return miou, correct / total * 100, mf1, ious, f1s


def test_hand_computed_case():
    gt = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])
    m = SegmentationMetrics(4)  # class 3 absent everywhere
    m.update(pred[None], gt[None])
    r = m.compute()
    # class 0: tp1 fp1 fn1 -> IoU 1/3, F1 2/4; class 1: tp3 fp1 fn0 -> 3/4, 6/7; class 2: tp1 fp0 fn1 -> 1/2, 2/3
    assert r["per_class"]["0"]["IoU"] == pytest.approx(100 / 3)
    assert r["per_class"]["1"]["F1"] == pytest.approx(600 / 7)
    assert r["per_class"]["3"]["IoU"] is None
    assert r["mIoU"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3 * 100)
    assert r["mF1"] == pytest.approx((1 / 2 + 6 / 7 + 2 / 3) / 3 * 100)
    assert r["OA"] == pytest.approx(5 / 7 * 100)
    assert r["pixels_evaluated"] == 7


@pytest.mark.parametrize("seed", range(5))
def test_against_reference_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n = 6
    gt = rng.integers(0, n - 1, (3, 17, 19))  # class 5 never in the ground truth
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = rng.integers(0, n, gt.shape)
    pred[pred == 4] = 3  # class 4 never predicted
    m = SegmentationMetrics(n, exclude_from_mean=(5,) if seed % 2 else ())
    for b in range(3):  # batched updates accumulate into one global matrix
        m.update(torch.from_numpy(pred[b : b + 1]), torch.from_numpy(gt[b : b + 1]))
    r = m.compute()
    miou, oa, mf1, ious, f1s = reference(pred, gt, n, 255, exclude=(5,) if seed % 2 else ())
    assert r["mIoU"] == pytest.approx(miou) and r["OA"] == pytest.approx(oa) and r["mF1"] == pytest.approx(mf1)
    assert r["per_class"]["4"]["F1"] == 0.0  # in the ground truth, never predicted: counts as 0


def test_mmseg_f1_drops_never_predicted_class():
    gt = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 0, 0, 0]])  # class 1 never predicted
    ours = SegmentationMetrics(2)
    mmseg = SegmentationMetrics(2, f1_from_precision_recall=True)
    for m in (ours, mmseg):
        m.update(pred[None], gt[None])
    assert ours.compute()["per_class"]["1"]["F1"] == 0.0
    assert mmseg.compute()["per_class"]["1"]["F1"] is None
    assert mmseg.compute()["mF1"] > ours.compute()["mF1"]


def test_scores_merge_protocol_and_errors():
    logits = torch.randn(2, 6, 8, 8)
    gt = torch.randint(0, 6, (2, 8, 8))
    a = SegmentationMetrics.from_protocol("potsdam-geoseg")
    a.update(logits, gt)  # (B, C, H, W) scores are arg-maxed
    b = SegmentationMetrics.from_protocol("potsdam-geoseg")
    b.update(logits.argmax(1)[:1], gt[:1])
    b2 = SegmentationMetrics.from_protocol("potsdam-geoseg")
    b2.update(logits.argmax(1)[1:], gt[1:])
    b.merge(b2)
    assert torch.equal(a.confusion, b.confusion)
    assert a.compute()["excluded_from_mean"] == ["clutter"] and a.compute()["protocol"] == "potsdam-geoseg"
    with pytest.raises(ValueError, match="differ in shape"):
        a.update(torch.zeros(1, 4, 4), torch.zeros(1, 5, 5))
    with pytest.raises(ValueError, match="outside"):
        a.update(torch.zeros(1, 4, 4), torch.full((1, 4, 4), 9))
    with pytest.raises(ValueError, match="unknown protocol"):
        SegmentationMetrics.from_protocol("nope")
