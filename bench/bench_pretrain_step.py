"""Step time of our `mocov2` and `mpinet` against same-size MoCo v2 and DenseCL steps built from lightly.

    pip install -e ".[bench]" && python bench/bench_pretrain_step.py --arch mpinet_resnet18 --batch 16 --crop 128

Every step is forward (both views through online and target) + backward + SGD step + EMA update, on
pre-made view tensors, symmetrised on both sides, same timm backbone, batch, crop and precision. Appends
rows to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import timm
import torch
from benchdoc import record
from lightly.loss import NTXentLoss
from lightly.models.modules import DenseCLProjectionHead, MoCoProjectionHead
from lightly.models.utils import batch_shuffle, batch_unshuffle, update_momentum

from mpinet_hub.models import MPINET_ARCHS
from mpinet_hub.pretrain.config import PretrainConfig
from mpinet_hub.pretrain.method import MPINetModel
from mpinet_hub.pretrain.views import make_two_views


def time_steps(step, n: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ours(method: str, args, views, device):
    cfg = PretrainConfig.from_sources(None, method=method, arch=args.arch, crop=args.crop, queue_size=args.queue,
                                      pixel_grid=14, ffl_grid=7)
    model = MPINetModel(cfg, 3).to(device)
    opt = torch.optim.SGD(model.online.parameters(), lr=0.01, momentum=0.9)

    def step():
        loss = model.total_loss(model(views))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_target(0.99)
    return step


def lightly_step(kind: str, args, views, device):
    base = MPINET_ARCHS[args.arch][0]
    backbone = timm.create_model(base, num_classes=0, global_pool="").to(device)
    dim = backbone.num_features
    head = (MoCoProjectionHead(dim, dim, 128) if kind == "mocov2" else DenseCLProjectionHead(dim, dim, 128)).to(device)
    bb_m, head_m = copy.deepcopy(backbone), copy.deepcopy(head)
    for p in list(bb_m.parameters()) + list(head_m.parameters()):
        p.requires_grad_(False)
    crit = NTXentLoss(temperature=0.2, memory_bank_size=(args.queue, 128))
    crit_local = NTXentLoss(temperature=0.2, memory_bank_size=(args.queue, 128))
    opt = torch.optim.SGD(list(backbone.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9)
    x = torch.cat([views.view1, views.view2])
    b = views.view1.shape[0]
    pool = torch.nn.AdaptiveAvgPool2d(1)

    def embed(bb, hd, inp):
        f = bb(inp)
        if kind == "mocov2":
            return hd(pool(f).flatten(1)), None
        g, local = hd(pool(f).flatten(1)), hd(f.flatten(2).transpose(1, 2))
        return g, local

    def step():
        update_momentum(backbone, bb_m, 0.99)
        update_momentum(head, head_m, 0.99)
        q, ql = embed(backbone, head, x)
        with torch.no_grad():  # lightly's MoCo recipe: the key batch shuffled (ours: shuffle-BN, split BN)
            shuffled, order = batch_shuffle(x)
            k, kl = embed(bb_m, head_m, shuffled)
            k = batch_unshuffle(k, order)
            kl = batch_unshuffle(kl, order) if kl is not None else None
        loss = (crit(q[:b], k[b:]) + crit(q[b:], k[:b])) / 2
        if kind == "densecl":
            loss = loss + (crit_local(ql[:b].mean(1), kl[b:].mean(1)) + crit_local(ql[b:].mean(1), kl[:b].mean(1))) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="mpinet_resnet18")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--queue", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    views = make_two_views(torch.rand(args.batch, 3, args.crop * 5 // 4, args.crop * 5 // 4, device=device), args.crop)
    t = {name: time_steps(fn(k, args, views, device), args.steps, args.warmup) for name, fn, k in (
        ("ours mocov2", ours, "mocov2"), ("lightly mocov2", lightly_step, "mocov2"),
        ("ours mpinet", ours, "mpinet"), ("lightly densecl", lightly_step, "densecl"))}
    record("Pretraining step", torch.cuda.get_device_name() if device.type == "cuda" else platform.machine(),
           f"{args.arch} b{args.batch} {args.crop}px fp32",
           f"{t['ours mocov2']:.3f}", f"{t['lightly mocov2']:.3f}", f"{t['ours mocov2'] / t['lightly mocov2']:.2f}",
           f"{t['ours mpinet']:.3f}", f"{t['lightly densecl']:.3f}", f"{t['ours mpinet'] / t['lightly densecl']:.2f}")


if __name__ == "__main__":
    main()
