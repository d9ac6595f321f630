"""`mpinet pretrain`."""

from __future__ import annotations

import argparse

from ..models import MPINET_ARCHS
from .config import METHODS, PretrainConfig
from .trainer import Trainer


def add_pretrain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML with any of the settings below (flags override it); see configs/")
    p.add_argument("--dataset", choices=["potsdam", "loveda", "uavid", "folder"],
                   help="a data set's training images (labels unused), or `folder` for your own rasters")
    p.add_argument("--data-root", nargs="+", help="data set root, or files/folders/globs for --dataset folder")
    p.add_argument("--method", choices=list(METHODS), help="mpinet (default) or a baseline from the same machinery")
    p.add_argument("--arch", choices=list(MPINET_ARCHS))
    p.add_argument("--bands", help="Potsdam bands: RGB, IRRG or RGBIR")
    p.add_argument("--patch", type=int, help="side of the windows read from the images")
    p.add_argument("--crop", type=int, help="side of each view")
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--epochs", type=float)
    p.add_argument("--steps", type=int, help="overrides --epochs")
    p.add_argument("--lr", type=float, help="learning rate per 256 images (scaled by the global batch)")
    p.add_argument("--queue-size", type=int)
    p.add_argument("--workers", type=int, help="data-loading processes")
    p.add_argument("--out", help="run folder (config.yaml, log.jsonl, loss.png, checkpoints/)")
    p.add_argument("--save-every", type=int, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an OUT that holds a run (deletes the run's own files: checkpoints/, log.jsonl, "
                   "loss.png, config.yaml; nothing else)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument("--precision", choices=["32", "bf16", "16"])
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the backbone")
    p.add_argument("--mean", type=float, nargs="+", help="per-band normalisation (default: ImageNet for RGB)")
    p.add_argument("--std", type=float, nargs="+")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")


def run_pretrain(args: argparse.Namespace) -> int:
    cfg = PretrainConfig.from_sources(
        args.config, dataset=args.dataset, data_root=args.data_root, method=args.method, arch=args.arch,
        bands=args.bands, patch=args.patch, crop=args.crop, batch_size=args.batch_size, epochs=args.epochs,
        steps=args.steps, lr=args.lr, queue_size=args.queue_size, workers=args.workers, out=args.out,
        save_every=args.save_every, seed=args.seed, device=args.device, precision=args.precision,
        compile=args.compile, mean=args.mean, std=args.std,
    )
    trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
    last = trainer.train()
    if trainer.is_main:
        print(f"done: {trainer.step} steps, last losses {', '.join(f'{k}={v:.4f}' for k, v in last.items())}")
        print(f"checkpoint: {trainer.out / 'checkpoints' / 'last.pt'}; curves: {trainer.out / 'loss.png'}")
    return 0
