"""The sha256 that `mpinet export` records in config.json (`mpinet.sha256`), checked when weights are loaded.

Hashing a ResNet-50's weights costs a fraction of a second; each file is hashed once per process (keyed by
path, size and modification time), so loading the same weights again costs nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["WeightsIntegrityError", "file_sha256", "recorded_sha256", "verify_weights_file"]

_VERIFIED: dict[tuple[str, int, int], str] = {}


class WeightsIntegrityError(OSError):
    """A weights file whose sha256 differs from the one recorded beside it: corrupt or replaced."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_sha256(config_path: str | Path) -> str | None:
    """The `mpinet.sha256` of an export's config.json (None: not an mpinet export, or no config)."""
    try:
        config = json.loads(Path(config_path).read_text())
    except (OSError, ValueError):
        return None
    return (config.get("mpinet") or {}).get("sha256") if isinstance(config, dict) else None


def verify_weights_file(weights: str | Path, config: str | Path | None = None, fix: str = "") -> None:
    """Raise WeightsIntegrityError if `weights` does not hash to the sha256 recorded in `config` (default: the
    config.json beside it). Weights without a recorded sha256 pass: there is nothing to check against."""
    weights = Path(weights)
    config = Path(config) if config else weights.with_name("config.json")
    expected = recorded_sha256(config)
    if not expected or not weights.is_file():
        return
    stat = weights.stat()
    key = (str(weights.resolve()), stat.st_size, stat.st_mtime_ns)
    actual = _VERIFIED.get(key) or file_sha256(weights)
    if actual != expected:
        raise WeightsIntegrityError(
            f"{weights}: sha256 {actual[:16]}... does not match {expected[:16]}... recorded in {config}: the file is "
            f"corrupt or was replaced. {fix or 'Copy or export the folder again.'} (`mpinet verify` checks a folder "
            "or a Hub repo.)")
    _VERIFIED[key] = actual
