"""`mpinet pretrain`."""

from __future__ import annotations

import argparse

from ..settings import add_settings_arguments, settings_from_args
from ..training.run_folder import add_run_folder_arguments
from .config import PretrainConfig, packaged_configs


def add_pretrain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML with any of the settings below, or a packaged recipe by name: "
                   f"{', '.join(packaged_configs('pretrain'))}; it overrides the defaults shown, and flags override it")
    add_run_folder_arguments(p)
    p.add_argument("--plan", action="store_true",
                   help="print the step's estimated memory (parameters, optimizer, activations) and the largest batch "
                   "that fits --plan-memory, then stop; needs no data and no GPU")
    p.add_argument("--plan-memory", type=float, default=80.0, help="device memory in GiB for --plan (an H100: 80)")
    add_settings_arguments(p, PretrainConfig, config=True, skip=("device",), sections={
        "dataset": "data", "method": "method (its preset sets these; flags and --config override it)",
        "batch_size": "optimisation", "out": "run folder",
        "w_pix": "MPINet's own settings (read by mpinet and its ladder, by no other method)",
        "w_dense": "DenseCL's own settings"})


def run_pretrain(args: argparse.Namespace) -> int:
    cfg = PretrainConfig.from_sources(args.config, **settings_from_args(PretrainConfig, args))
    if args.plan:
        return _print_plan(cfg, args.plan_memory)
    from .trainer import Trainer  # the training stack only when training

    trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
    last = trainer.run()
    if trainer.is_main:
        print(f"done: {trainer.step} steps, last losses {', '.join(f'{k}={v:.4f}' for k, v in last.items())}")
        print(f"checkpoint: {trainer.out / 'checkpoints' / 'last.pt'}; curves: {trainer.out / 'loss.png'}")
        _warn_if_nothing_learned(trainer.out)
    return 0


def _warn_if_nothing_learned(run) -> None:
    from .diagnose import diagnose, problems

    found = problems(diagnose(run, retrieval_windows=0))
    for text in found:
        print(f"warning: {text}")
    if found:
        print(f"(`mpinet diagnose {run}` shows the figures, view retrieval included)")


def add_diagnose_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Did a pretraining run learn? The instance loss against chance ln(K+1), the effective rank of "
                     "the last queue of keys (collapse), view retrieval against random weights on the run's own "
                     "images, and the share of each loss term; warnings say what to try.")
    p.add_argument("run", help="a `mpinet pretrain` run folder")
    p.add_argument("--windows", type=int, default=256,
                   help="windows of the run's images for view retrieval (0: skip it, read no data)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def run_diagnose(args: argparse.Namespace) -> int:
    import json

    from .diagnose import diagnose, format_diagnosis

    result = diagnose(args.run, retrieval_windows=args.windows)
    print(json.dumps(result, indent=1) if args.json else format_diagnosis(result))
    return 0


def _print_plan(cfg: PretrainConfig, memory_gib: float) -> int:
    from ..data import DATASETS
    from .plan import largest_batch, plan_memory

    bands = len(DATASETS[cfg.dataset].product_band_names(cfg.bands) or "RGB")
    plan = plan_memory(cfg, bands)
    print(f"{cfg.method} {cfg.arch}, {cfg.crop} px views, batch {plan.batch} per process, {plan.precision}, "
          f"{bands} bands:")
    print(plan.render())
    fits = largest_batch(cfg, memory_gib * 2**30, bands)
    verdict = "fits" if plan.total <= memory_gib * 2**30 else "does NOT fit"
    print(f"the configured batch {verdict} in {memory_gib:g} GiB; the largest batch that fits: {fits}")
    print("(estimate: docs/benchmarks.md compares it with measured peaks)")
    return 0


def add_configs_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("The recipes installed with the package. Use one by name: `mpinet pretrain --config NAME` "
                     "(pretraining) or `mpinet finetune --config NAME` (fine-tuning); flags override its values.")


def run_configs(args: argparse.Namespace) -> int:
    from importlib import resources

    for name in packaged_configs():
        text = (resources.files("mpinet_hub.configs") / f"{name}.yaml").read_text()
        comment = []  # the leading comment block, whole: its first line alone stops mid-sentence
        for line in text.splitlines():
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("# ").strip())
        print(f"{name:<34} {' '.join(comment)}")
    return 0
