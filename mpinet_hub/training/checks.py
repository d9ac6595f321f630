"""Stopping a run that went non-finite, before it writes a checkpoint, with the way back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["NonFiniteLossError", "check_finite", "check_finite_state", "last_good_checkpoint_hint"]


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; the last good checkpoint is kept."""


def check_finite(terms: dict[str, torch.Tensor], step: int, last_checkpoint: Path) -> None:
    """Raise NonFiniteLossError naming the step and the first non-finite term, and what there is to go back to."""
    for name, value in terms.items():
        if not torch.isfinite(value):
            raise NonFiniteLossError(
                f"step {step}: loss term '{name}' is {float(value.detach())}; stopped without saving. "
                + last_good_checkpoint_hint(last_checkpoint))


def check_finite_state(state: Any, step: int, last_checkpoint: Path) -> None:
    """Refuse to checkpoint a non-finite floating tensor anywhere in `state` (nested dicts and lists: weights,
    buffers, optimiser moments; e.g. inf BatchNorm variances after a huge lr), naming it by its path of keys."""
    bad = [name for name, v in _tensors(state) if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteLossError(f"step {step}: {len(bad)} parameter/buffer tensor(s) are not finite "
                                 f"({', '.join(bad[:3])}); nothing was saved. "
                                 + last_good_checkpoint_hint(last_checkpoint))


def _tensors(tree: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if torch.is_tensor(tree):
        yield path, tree
    elif isinstance(tree, dict | list | tuple):
        items = tree.items() if isinstance(tree, dict) else enumerate(tree)
        for key, value in items:
            yield from _tensors(value, f"{path}.{key}" if path else str(key))


def last_good_checkpoint_hint(last_checkpoint: Path) -> str:
    """What a stopped run can go back to, or that there is nothing."""
    if last_checkpoint.is_file():
        return (f"The last good checkpoint is {last_checkpoint} (resume with --resume, perhaps with a lower --lr "
                "or --precision 32)")
    return "No checkpoint was written before this step, so there is none to go back to; start again with a lower --lr."
