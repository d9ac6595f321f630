"""Pieces shared by the pretraining, fine-tuning and probe loops, one module a job: the device
(`device`), the run folder (`run_folder`), its log (`run_log`), non-finite checks (`checks`) and seeded batches
(`batches`).

Every loop draws each step's randomness from (seed, step), so a resumed run reproduces the uninterrupted one on
CPU.
"""

from .batches import EpochBatches, LabeledBatches, StepBatches, normalisation
from .checks import NonFiniteLossError, check_finite, check_finite_state, last_good_checkpoint_hint
from .device import AUTOCAST_DTYPES, PRECISIONS, choose_cpu_threads, init_distributed, resolve_device, resolve_precision
from .engine import RUN_KINDS, StepLoop, register_kind, resume_or_start, run
from .run_folder import (
                         RUN_FILES,
                         RunFolderError,
                         RunLock,
                         claim_run_folder,
                         prune_checkpoints,
                         remove_partial_checkpoints,
)
from .run_log import RunLog, plot_losses, trim_log

__all__ = [
    "AUTOCAST_DTYPES",
    "PRECISIONS",
    "RUN_FILES",
    "RUN_KINDS",
    "EpochBatches",
    "LabeledBatches",
    "NonFiniteLossError",
    "RunFolderError",
    "RunLock",
    "RunLog",
    "StepBatches",
    "StepLoop",
    "check_finite",
    "check_finite_state",
    "choose_cpu_threads",
    "claim_run_folder",
    "init_distributed",
    "last_good_checkpoint_hint",
    "normalisation",
    "plot_losses",
    "prune_checkpoints",
    "register_kind",
    "remove_partial_checkpoints",
    "resolve_device",
    "resolve_precision",
    "resume_or_start",
    "run",
    "trim_log",
]
