"""mpinet-hub: MPINet self-supervised pretraining for remote-sensing segmentation, shipped as timm models.

`import mpinet_hub` registers `mpinet_resnet18` and `mpinet_resnet50` (tags `potsdam`, `loveda`,
`uavid`) with timm, so `timm.create_model("mpinet_resnet50.potsdam", pretrained=True)` and SMP's
`"tu-mpinet_resnet50.potsdam"` encoders work.
"""

from .models import (
    MPINET_ARCHS,
    MPINET_TAGS,
    PretrainedWeightsNotFoundError,
    UnknownTagError,
    hub_org,
    hub_repo_id,
)

__version__ = "0.1.0"

__all__ = [
    "MPINET_ARCHS",
    "MPINET_TAGS",
    "PretrainedWeightsNotFoundError",
    "UnknownTagError",
    "__version__",
    "hub_org",
    "hub_repo_id",
]
