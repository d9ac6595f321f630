"""One loss per file: tensors in, scalar out, shapes in the docstring."""

from .focal_frequency import FocalFrequencyLoss
from .info_nce import InfoNCELoss
from .pixel_info_nce import PixelInfoNCELoss

__all__ = ["FocalFrequencyLoss", "InfoNCELoss", "PixelInfoNCELoss"]
