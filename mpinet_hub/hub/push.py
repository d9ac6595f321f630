"""`mpinet push`: upload an export folder to the Hugging Face Hub, after checking it is what it claims."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

from ..integrity import file_sha256, recorded_sha256
from .card import MODEL_INFO_FILE, card_front_matter
from .export import WEIGHTS_NAME

__all__ = ["PushRefused", "check_export_folder", "push_folder"]


class PushRefused(ValueError):
    """The folder fails its own checks; nothing was uploaded."""


def publishable_folder(folder: str | Path) -> Path:
    """`folder`, or the `model/` of a fine-tuning run folder (what `mpinet finetune` saves for SMP)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() and (folder / "model" / "config.json").is_file():
        return folder / "model"
    return folder


def check_export_folder(folder: str | Path, allow_unevaluated: bool = False) -> list[str]:
    """Problems that make `folder` unfit to publish (empty list: fit): an export folder (`mpinet export`), or a
    fine-tuned model folder (`mpinet finetune`'s RUN/model, or RUN), which has `mpinet.json` beside its weights."""
    folder = publishable_folder(folder)
    finetuned = (folder / MODEL_INFO_FILE).is_file()
    maker = "`mpinet finetune`" if finetuned else "`mpinet export`"
    problems: list[str] = []
    for name in (WEIGHTS_NAME, "config.json", "README.md"):
        if not (folder / name).is_file():
            problems.append(f"{folder / name} is missing (run {maker} to make the folder)")
    if problems:
        return problems
    unsafe = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
    if unsafe:
        problems.append(f"pickle-based weight files {unsafe}: only safetensors are published")
    sha = file_sha256(folder / WEIGHTS_NAME)
    if not finetuned:  # SMP writes a fine-tuned model's config.json; the sha256 is in its card
        config_sha = recorded_sha256(folder / "config.json")
        if config_sha != sha:
            problems.append(f"config.json sha256 {config_sha} does not match {WEIGHTS_NAME} ({sha})")
    card = card_front_matter((folder / "README.md").read_text(encoding="utf-8"))
    if card.get("mpinet_sha256") != sha:
        problems.append(f"README.md sha256 {card.get('mpinet_sha256')} does not match {WEIGHTS_NAME} ({sha})")
    if not card.get("mpinet_evaluated") and not allow_unevaluated:
        how = ("run `mpinet evaluate` on it (the card then carries the metrics)" if finetuned else
               "export with `--metrics metrics.json` from `mpinet evaluate`")
        problems.append(f"README.md has no downstream metrics: {how}, or pass --allow-unevaluated to publish "
                        "weights marked as not evaluated")
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
    folder = publishable_folder(folder)
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
            allow_patterns=[WEIGHTS_NAME, "config.json", "README.md", MODEL_INFO_FILE],
        )
    except (OSError, ValueError):  # huggingface_hub's HTTP errors (401, 404, ...) are OSErrors: their own message
        raise
    except Exception as err:  # the HTTP client's transport errors (its library depends on huggingface_hub's version)
        raise ConnectionError(f"{api.endpoint} could not be reached ({type(err).__name__}: {err}); nothing was "
                              "pushed. Check HF_ENDPOINT and the network, then push again.") from err
    return info.oid
