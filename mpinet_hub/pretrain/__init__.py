"""Self-supervised pretraining: two views, the MPINet method and its baselines, and the trainer."""

# Importing a method's module registers it (registry.py): one line per module; the trainer registers the run kind
# "pretrain" (training.run)
from . import (  # noqa: F401
    densecl,
    method,
    trainer,
)
