"""`mpinet quickstart`: the whole pipeline on the embedded default, in a few minutes on a 2-core CPU.

synthetic Potsdam-format data -> MPINet pretraining (short) -> export (Hub folder) -> load back through timm
-> fine-tune DeepLabV3+ on a few labeled patches (short), from it and from random init -> whole-tile
evaluation of both on the test split.
The numbers it prints show that every stage runs; with so few steps they say nothing about the method.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

from .. import training
from ..checkpoint import backbone_state_dict, load_checkpoint
from ..data.synth import synth_dataset
from ..hub.export import export_weights
from ..pretrain.config import PretrainConfig
from ..settings import setting
from .evaluate import evaluate, format_metrics_table
from .finetune import FinetuneConfig

__all__ = ["QuickstartSettings", "quickstart"]


@dataclass
class QuickstartSettings:
    out: str = setting("quickstart", help="folder for every artifact")
    tiles: int = setting(6, help="synthetic Potsdam tiles written (4 train, 2 test)")
    size: int = setting(256, help="tile side in px")
    pretrain_steps: int = setting(30, help="MPINet pretraining steps")
    finetune_steps: int = setting(60, help="fine-tuning steps")
    label_fraction: float = setting(0.25, help="fraction of the labeled training patches fine-tuning sees")
    seed: int = setting(0, help="data, pretraining and fine-tuning seed")
    device: str = setting("auto", help="auto, cpu or cuda")


def _stage(n: int, text: str) -> float:
    print(f"\n[{n}/6] {text}", flush=True)
    return time.perf_counter()


def quickstart(s: QuickstartSettings) -> dict:
    """Run every stage into `s.out`; returns the evaluation metrics."""
    with warnings.catch_warnings():
        # The miniature set holds a few of Potsdam's 38 tiles on purpose; the reader's warning is noise here.
        warnings.filterwarnings("ignore", message=r"Potsdam \w+: \d+ tile\(s\) of the split not found")
        return _run(s)


def _run(s: QuickstartSettings) -> dict:
    out = Path(s.out)
    data, pre_run, hub, ft_run = out / "potsdam", out / "pretrain", out / "hub", out / "finetune"
    random_run = out / "finetune-random"
    times: dict[str, float] = {}

    t = _stage(1, f"synthetic Potsdam-format data set ({s.tiles} tiles of {s.size} px) -> {data}")
    synth_dataset("potsdam", data, tiles=s.tiles, size=s.size, seed=s.seed)
    times["data"] = time.perf_counter() - t

    t = _stage(2, f"MPINet pretraining, resnet18, {s.pretrain_steps} steps -> {pre_run}")
    cfg = PretrainConfig.from_sources(None, dataset="potsdam", data_root=[str(data)], method="mpinet",
                                      arch="mpinet_resnet18", patch=128, crop=96, batch_size=8,
                                      steps=s.pretrain_steps, queue_size=256, workers=0, out=str(pre_run),
                                      save_every=s.pretrain_steps, seed=s.seed, device=s.device, warmup_epochs=0,
                                      ffl_head_warmup=5)
    last = pre_run / "checkpoints" / "last.pt"
    training.run("pretrain", cfg)
    times["pretrain"] = time.perf_counter() - t

    t = _stage(3, f"export the backbone as a Hub folder -> {hub}")
    export_weights(last, hub, "mpinet_resnet18", "potsdam", overwrite=True)
    times["export"] = time.perf_counter() - t

    t = _stage(4, f"load it back through timm: timm.create_model('local-dir:{hub}', pretrained=True)")
    encoder = timm.create_model(f"local-dir:{hub.resolve()}", pretrained=True)
    expected = backbone_state_dict(load_checkpoint(last))
    loaded = encoder.state_dict()
    mismatched = [k for k, v in expected.items() if not torch.equal(loaded[k], v)]
    if mismatched:
        raise RuntimeError(f"weights loaded through timm differ from the checkpoint: {mismatched[:3]}")
    print(f"      {encoder.pretrained_cfg['architecture']} with {len(expected)} tensors, identical to the checkpoint")
    times["load"] = time.perf_counter() - t

    t = _stage(5, f"fine-tune DeepLabV3+ on {100 * s.label_fraction:g}% of the labeled patches, "
                  f"{s.finetune_steps} steps, from the MPINet encoder -> {ft_run} and from random init -> {random_run}")
    runs = {}
    for name, encoder_spec, run in (("random init", "random", random_run), ("MPINet", str(hub), ft_run)):
        ft = FinetuneConfig(dataset="potsdam", data_root=str(data), encoder=encoder_spec, decoder="deeplabv3plus",
                            label_fraction=s.label_fraction, out=str(run), patch=128, crop=128, batch_size=8,
                            steps=s.finetune_steps, lr=1e-3, seed=s.seed, device=s.device,
                            save_every=s.finetune_steps)
        ft.validate()
        runs[name] = training.run("finetune", ft)
    model_dir = runs["MPINet"]
    times["finetune"] = time.perf_counter() - t
    t = _stage(6, "evaluate whole test tiles (sliding window) under protocol potsdam-mmseg")
    results = {name: evaluate(path, "potsdam", data, split="test", window=128, overlap=32, batch_size=8,
                              device=s.device) for name, path in runs.items()}
    metrics = results["MPINet"]
    times["evaluate"] = time.perf_counter() - t
    print("\n" + format_metrics_table(metrics))
    print("\nSame fine-tuning, two encoders (a smoke test of the comparison, not a measurement of the method):")
    for name, m in results.items():
        print(f"  {name:<12} mIoU {m['mIoU']:6.2f}   OA {m['OA']:6.2f}   mF1 {m['mF1']:6.2f}")
    print("\nArtifacts:")
    for label, path in (("data set", data), ("pretraining run (log, loss.png, checkpoints)", pre_run),
                        ("Hub folder (model.safetensors, config.json, README.md)", hub),
                        ("fine-tuning run (labeled_patches.json, loss.png)", ft_run),
                        ("the same from random init", random_run),
                        ("SMP model (smp.from_pretrained)", model_dir),
                        ("metrics.json, confusion.png, previews/", Path(metrics["out"]))):
        print(f"  {label:<56} {path}")
    print("\nSeconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print("Next: `mpinet study` to ask whether pretraining pays on your data, `mpinet predict` on your own GeoTIFFs.")
    metrics["stage_seconds"] = times
    return metrics
