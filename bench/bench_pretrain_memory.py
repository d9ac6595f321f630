"""Peak memory of one pretraining step against the batch size: it must grow linearly.

    python bench/bench_pretrain_memory.py --arch mpinet_resnet18 --crop 64 --batches 16 32 64

Each (method, batch, pixel-negatives setting) runs in a fresh process: one full step (views, both networks,
losses, backward, SGD, EMA) after one warm-up step; on CPU the figure is the process's peak RSS, on CUDA
`torch.cuda.max_memory_allocated` (there all batches run in one process, the peak reset between them).
`--precision bf16` runs the step under bf16 autocast, as the release configs do. `--negatives all` is the exact
chunked pixel loss, a number the sampled one
(default 4096 shared negatives). Before the change the pixel loss held B*S^2 x B*S^2 logits: 1.39 GB at
batch 16 and 4.26 GB at batch 64 (ResNet-18, 64 px, CPU). Appends rows to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch


def one(arch: str, method: str, batch: int, crop: int, negatives: str, device: str,
        precision: str = "32") -> dict[str, float]:
    from mpinet_hub.pretrain.config import PretrainConfig
    from mpinet_hub.pretrain.registry import build_method
    from mpinet_hub.pretrain.views import make_two_views

    cfg = PretrainConfig.from_sources(None, method=method, arch=arch, crop=crop, batch_size=batch, queue_size=4096,
                                      pixel_num_negatives=None if negatives == "all" else int(negatives))
    dev = torch.device(device)
    dtype = torch.bfloat16 if precision == "bf16" else None
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    model = build_method(cfg, 3).to(dev)
    opt = torch.optim.SGD(model.online.parameters(), lr=0.01, momentum=0.9)
    images = torch.rand(batch, 3, crop + crop // 2, crop + crop // 2, device=dev)
    for step in range(2):
        if step == 1 and dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        views = make_two_views(images, crop, generator=torch.Generator().manual_seed(step))
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model.total_loss(model(views))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_target(0.99)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        del model, opt, images, views, loss
        return {"peak_mb": peak}
    return {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="mpinet_resnet18", help="(default: %(default)s)")
    p.add_argument("--method", default="mpinet", help="(default: %(default)s)")
    p.add_argument("--crop", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64], help="(default: %(default)s)")
    p.add_argument("--negatives", nargs="+", default=["4096", "all"],
                   help="pixel negatives per step: a number (sampled) or all (exact, chunked) (default: %(default)s)")
    p.add_argument("--precision", default="32", choices=["32", "bf16"], help="(default: %(default)s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="(default: %(default)s)")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(one(a.arch, a.method, int(a.child[0]), a.crop, a.child[1], a.device, a.precision)))
        return
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from benchdoc import record

    for negatives in a.negatives:
        peaks = []
        for batch in a.batches:
            if a.device.startswith("cuda"):  # max_memory_allocated resets: no fresh process needed
                peaks.append(one(a.arch, a.method, batch, a.crop, negatives, a.device, a.precision)["peak_mb"])
            else:
                cmd = [sys.executable, __file__, "--arch", a.arch, "--method", a.method, "--crop", str(a.crop),
                       "--device", a.device, "--precision", a.precision, "--child", str(batch), negatives, "x"]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                peaks.append(json.loads(out)["peak_mb"])
            print(f"{a.method} {a.arch} {a.crop}px {a.precision} negatives={negatives} batch {batch}: "
                  f"{peaks[-1]:.0f} MB", flush=True)
        growth = [f"{(b - peaks[0]) / (n - a.batches[0]):.1f}" for n, b in zip(a.batches[1:], peaks[1:])]
        device = torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device
        record("Pretraining peak memory", device, f"{a.method} {a.arch} {a.crop}px {a.precision}",
               f"negatives {negatives}",
               " / ".join(f"{b}: {m:.0f}" for b, m in zip(a.batches, peaks)), " / ".join(growth))


if __name__ == "__main__":
    main()
