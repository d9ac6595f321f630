"""timm registrations of the MPINet encoders (imported by `import mpinet_hub`)."""

from .mpinet_resnet import (
    DEFAULT_HUB_ORG,
    MPINET_ARCHS,
    MPINET_TAGS,
    RGB_MEAN,
    RGB_STD,
    MpinetPretrainedCfg,
    PretrainedWeightsNotFoundError,
    UnknownTagError,
    hub_org,
    hub_repo_id,
    mpinet_resnet18,
    mpinet_resnet50,
)

__all__ = [
    "DEFAULT_HUB_ORG",
    "MPINET_ARCHS",
    "MPINET_TAGS",
    "MpinetPretrainedCfg",
    "PretrainedWeightsNotFoundError",
    "RGB_MEAN",
    "RGB_STD",
    "UnknownTagError",
    "hub_org",
    "hub_repo_id",
    "mpinet_resnet18",
    "mpinet_resnet50",
]
