"""`mpinet push`: upload an export folder to the Hugging Face Hub, after checking it is what it claims."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import HfApi

from .card import card_front_matter
from .export import WEIGHTS_NAME, file_sha256

__all__ = ["PushRefused", "check_export_folder", "push_folder"]


class PushRefused(ValueError):
    """The folder fails its own checks; nothing was uploaded."""


def check_export_folder(folder: str | Path, allow_unevaluated: bool = False) -> list[str]:
    """Problems that make `folder` unfit to publish (empty list: fit)."""
    folder = Path(folder)
    problems: list[str] = []
    for name in (WEIGHTS_NAME, "config.json", "README.md"):
        if not (folder / name).is_file():
            problems.append(f"{folder / name} is missing (run `mpinet export` to make the folder)")
    if problems:
        return problems
    unsafe = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
    if unsafe:
        problems.append(f"pickle-based weight files {unsafe}: only safetensors are published")
    sha = file_sha256(folder / WEIGHTS_NAME)
    config = json.loads((folder / "config.json").read_text())
    config_sha = (config.get("mpinet") or {}).get("sha256")
    if config_sha != sha:
        problems.append(f"config.json sha256 {config_sha} does not match {WEIGHTS_NAME} ({sha})")
    card = card_front_matter((folder / "README.md").read_text(encoding="utf-8"))
    if card.get("mpinet_sha256") != sha:
        problems.append(f"README.md sha256 {card.get('mpinet_sha256')} does not match {WEIGHTS_NAME} ({sha})")
    if not card.get("mpinet_evaluated") and not allow_unevaluated:
        problems.append(
            "README.md has no downstream metrics: export with `--metrics metrics.json` from `mpinet evaluate`, "
            "or pass --allow-unevaluated to publish weights marked as not evaluated"
        )
    return problems


def push_folder(
    folder: str | Path,
    repo_id: str,
    revision: str | None = None,
    private: bool = False,
    allow_unevaluated: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Create the repo if needed and upload the folder in one commit; returns the commit id.

    The endpoint and token default to huggingface_hub's own resolution (`HF_ENDPOINT`, `HF_TOKEN`).
    """
    problems = check_export_folder(folder, allow_unevaluated=allow_unevaluated)
    if problems:
        raise PushRefused(f"Refusing to push {folder}:\n- " + "\n- ".join(problems))
    api = HfApi(endpoint=endpoint, token=token)
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            revision=revision,
            commit_message=f"Upload {Path(folder).name} with mpinet-hub",
            allow_patterns=[WEIGHTS_NAME, "config.json", "README.md"],
        )
    except (OSError, ValueError):  # huggingface_hub's HTTP errors (401, 404, ...) are OSErrors: their own message
        raise
    except Exception as err:  # the HTTP client's transport errors (its library depends on huggingface_hub's version)
        raise ConnectionError(f"{api.endpoint} could not be reached ({type(err).__name__}: {err}); nothing was "
                              "pushed. Check HF_ENDPOINT and the network, then push again.") from err
    return info.oid
