"""Place an export folder into a Hugging Face cache, laid out as huggingface_hub lays it out.

For air-gapped machines and for tests: afterwards timm, SMP and torch.hub load the weights with
`HF_HUB_OFFLINE=1` through their own, unchanged code paths.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

__all__ = ["install_to_hf_cache"]


def install_to_hf_cache(export_dir: str | Path, repo_id: str, hub_cache: str | Path | None = None) -> Path:
    """Copy `export_dir`'s files into `hub_cache/models--ORG--NAME/snapshots/<commit>/`; returns that folder.

    `hub_cache` defaults to huggingface_hub's (`HF_HUB_CACHE`, or `HF_HOME/hub`). The commit id is the
    sha1 of the files' contents, so installing the same folder twice is idempotent.
    """
    if hub_cache is None:
        from huggingface_hub import constants

        hub_cache = constants.HF_HUB_CACHE
    export_dir = Path(export_dir)
    files = sorted(p for p in export_dir.iterdir() if p.is_file())
    if not files:
        raise FileNotFoundError(f"{export_dir} holds no files to install")
    digest = hashlib.sha1()
    for p in files:
        digest.update(p.name.encode())
        digest.update(p.read_bytes())
    commit = digest.hexdigest()
    repo_dir = Path(hub_cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "blobs").mkdir(exist_ok=True)
    for p in files:
        blob = repo_dir / "blobs" / hashlib.sha256(p.read_bytes()).hexdigest()
        if not blob.exists():
            shutil.copyfile(p, blob)
        link = snapshot / p.name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(os.path.relpath(blob, snapshot), link)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot
