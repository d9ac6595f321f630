"""Training checkpoints: written atomically, read back with `torch.load(weights_only=True)`.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so it never needs unpickling of
arbitrary objects. Its `format` key tells `mpinet export` that it is ours.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .atomic import WriteFailed, atomic_output, free_space

__all__ = [
    "CHECKPOINT_FORMAT",
    "atomic_save",
    "backbone_state_dict",
    "is_training_checkpoint",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "mpinet-hub/pretrain/1"
_BACKBONE_PREFIX = "backbone."


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save through `atomic_output`: a kill at any moment leaves either the previous file or the new one,
    never a torn file. A write that fails (a full disk: torch.save reports it as a RuntimeError from its zip
    writer) raises an OSError that names the file and the free space, and leaves the previous file as it was.
    """
    path = Path(path)
    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            torch.save(obj, f)
    except RuntimeError as err:
        kept = f"the previous {path.name} is unchanged" if path.is_file() else f"no {path.name} was written"
        raise WriteFailed(f"could not write {path} ({err}); {free_space(path.parent)}; {kept}") from err
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint with `weights_only=True` (no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for torn or foreign files
        others = sorted(p.name for p in path.parent.glob("*.pt") if p != path)
        way_out = (f"the other checkpoints in that folder ({', '.join(others[-3:])}) may be whole: copy the newest "
                   f"over {path.name} to resume from it" if others else
                   f"no other checkpoint is in {path.parent}: delete the run folder (in a study: the cell's folder) "
                   "to compute it again")
        raise ValueError(
            f"{path} could not be read as a weights-only torch checkpoint ({type(err).__name__}: {err}); {way_out}."
        ) from err


def is_training_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def backbone_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The online network's backbone weights of a training checkpoint, with timm's key names."""
    model = checkpoint["model"]
    return {k[len(_BACKBONE_PREFIX) :]: v for k, v in model.items() if k.startswith(_BACKBONE_PREFIX)}
