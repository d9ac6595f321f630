"""Export training checkpoints to Hub folders, render their cards, and push them."""

from .cache import install_to_hf_cache
from .card import card_front_matter, metrics_markdown, render_card
from .export import ExportError, ExportResult, export_weights, file_sha256, load_source_weights
from .push import PushRefused, check_export_folder, push_folder

__all__ = [
    "ExportError",
    "ExportResult",
    "PushRefused",
    "card_front_matter",
    "check_export_folder",
    "export_weights",
    "file_sha256",
    "install_to_hf_cache",
    "load_source_weights",
    "metrics_markdown",
    "push_folder",
    "render_card",
]
