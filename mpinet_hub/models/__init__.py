"""timm registrations of the MPINet encoders (imported by `import mpinet_hub`)."""

from . import mpinet_resnet
from .mpinet_resnet import *  # noqa: F403  (the module's __all__, as timm's models package does)

__all__ = mpinet_resnet.__all__
