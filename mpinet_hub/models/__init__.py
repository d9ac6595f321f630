"""timm registrations of the MPINet encoders (imported by `import mpinet_hub`)."""

from .mpinet_resnet import (
    DEFAULT_HUB_ORG,
    MPINET_ARCHS,
    MPINET_TAGS,
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
    "UnknownTagError",
    "hub_org",
    "hub_repo_id",
    "mpinet_resnet18",
    "mpinet_resnet50",
]
