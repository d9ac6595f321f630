"""`mpinet export` and `mpinet push`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..models import MPINET_ARCHS, MPINET_TAGS
from .export import export_weights
from .push import push_folder


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="training checkpoint (RUN/checkpoints/last.pt) or backbone state dict "
                   "(.safetensors, or .pt saved from a state dict)")
    p.add_argument("out_dir", help="folder to write model.safetensors, config.json and README.md into")
    p.add_argument("--arch", required=True, choices=list(MPINET_ARCHS), help="the encoder the weights are for")
    p.add_argument("--tag", required=True, choices=list(MPINET_TAGS), help="pretraining data set")
    p.add_argument("--metrics", nargs="*", default=[], help="metrics.json files from `mpinet evaluate` for the card")
    p.add_argument("--org", default=None, help="Hub organisation for the card's repo id (default: MPINET_HUB_ORG "
                   "or mpinet-hub)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty out_dir")


def run_export(args: argparse.Namespace) -> int:
    metrics = [json.loads(Path(m).read_text()) for m in args.metrics]
    result = export_weights(args.src, args.out_dir, args.arch, args.tag, metrics=metrics,
                            overwrite=args.overwrite, org=args.org)
    if result.dropped_keys:
        print(f"dropped classifier keys: {', '.join(result.dropped_keys)}")
    print(f"exported {result.num_tensors} tensors to {result.out_dir}")
    print(f"sha256(model.safetensors) = {result.sha256}")
    print(f"load it: timm.create_model('local-dir:{result.out_dir.resolve()}', pretrained=True)")
    return 0


def add_push_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Publish weights to the Hugging Face Hub in one commit, after the checks `mpinet verify` makes "
                     "(sha256 of the weights against config.json and the card) and a check for downstream metrics.")
    p.add_argument("out_dir", help="folder written by `mpinet export`, or a fine-tuned model: `mpinet finetune`'s "
                   "RUN (or RUN/model), after `mpinet evaluate` put its metrics in the card")
    p.add_argument("--repo-id", required=True, help="ORG/NAME, e.g. mpinet-hub/mpinet_resnet50.potsdam")
    p.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument("--allow-unevaluated", action="store_true",
                   help="publish weights whose card carries no downstream metrics (marked as not evaluated)")


def run_push(args: argparse.Namespace) -> int:
    oid = push_folder(args.out_dir, args.repo_id, revision=args.revision, private=args.private,
                      allow_unevaluated=args.allow_unevaluated)
    print(f"pushed {args.out_dir} to {args.repo_id} at revision {oid}")
    return 0


def add_verify_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Check that weights are what their files claim: the sha256 of model.safetensors against "
                     "config.json and the card. TARGET is an export folder, or a Hub repo id, optionally pinned "
                     "to a revision (ORG/NAME@REV), read through the Hugging Face cache (offline if it is there).")
    p.add_argument("target", help="export folder, ORG/NAME or ORG/NAME@REVISION")


def run_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .card import MODEL_INFO_FILE
    from .push import check_export_folder

    folder = Path(args.target)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        repo_id, _, revision = args.target.partition("@")
        folder = Path(snapshot_download(repo_id, revision=revision or None,
                                        allow_patterns=["model.safetensors", "config.json", "README.md",
                                                        MODEL_INFO_FILE]))
    problems = check_export_folder(folder, allow_unevaluated=True)
    for problem in problems:
        print(f"mpinet verify: {problem}")
    if problems:
        return 1
    print(f"{args.target}: model.safetensors matches the sha256 recorded beside it (config.json and/or README.md)")
    return 0
