"""Stopping a run that went non-finite, before it writes a checkpoint, with the way back."""

from __future__ import annotations

from pathlib import Path

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


def check_finite_state(state: dict[str, torch.Tensor], step: int, last_checkpoint: Path) -> None:
    """Refuse to checkpoint non-finite parameters or buffers (e.g. inf BatchNorm variances after a huge lr)."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteLossError(f"step {step}: {len(bad)} parameter/buffer tensor(s) are not finite "
                                 f"({', '.join(bad[:3])}); nothing was saved. "
                                 + last_good_checkpoint_hint(last_checkpoint))


def last_good_checkpoint_hint(last_checkpoint: Path) -> str:
    """What a stopped run can go back to, or that there is nothing."""
    if last_checkpoint.is_file():
        return (f"The last good checkpoint is {last_checkpoint} (resume with --resume, perhaps with a lower --lr "
                "or --precision 32)")
    return "No checkpoint was written before this step, so there is none to go back to; start again with a lower --lr."
