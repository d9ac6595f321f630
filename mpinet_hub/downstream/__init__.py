"""Downstream use of the encoders: SMP segmentation models, fine-tuning, evaluation and prediction.

    model.py      encoder SPEC -> SMP model; offline save/load with mpinet.json
    finetune.py   resumable fine-tuning on the seeded labeled subset (data/labeled_subset.py)
    inference.py  sliding-window logits, blended, streamed row band by row band
    evaluate.py   whole-tile metrics by protocol -> metrics.json, confusion.png, previews
    predict.py    GeoTIFF in -> class GeoTIFF out
    probe.py      frozen-feature linear probe
    study.py      methods x seeds x controls x label fractions, verdicts by a paired interval
    paired.py     the paired t interval over seeds that calls a comparison
    quickstart.py the whole pipeline on the embedded default
"""

# the run kinds "finetune" and "probe" (training.run) register on import
from . import finetune, probe  # noqa: F401
from .inference import SlidingWindow
from .model import (
    DECODERS,
    EncoderSpec,
    SegmentationModelInfo,
    build_segmentation_model,
    load_encoder,
    load_segmentation_model,
    save_segmentation_model,
)

__all__ = [
    "DECODERS",
    "EncoderSpec",
    "SegmentationModelInfo",
    "SlidingWindow",
    "build_segmentation_model",
    "load_encoder",
    "load_segmentation_model",
    "save_segmentation_model",
]
