"""Step time of our `mocov2` and `mpinet` against same-size MoCo v2 and DenseCL steps built from lightly.

    pip install -e ".[bench]" && python bench/bench_pretrain_step.py --arch mpinet_resnet18 --batch 16 --crop 128
    python bench/bench_pretrain_step.py --arch mpinet_resnet50 --batch 256 --crop 256 \\
        --variants 32 bf16 bf16-cl bf16-cl-compile                      # on a GPU: the release setting
    python bench/bench_pretrain_step.py --batch 32 --crop 128 --queue 256 --only "ours mpinet" --profile 25
                                                                        # per-op table of one step kind

Every step is forward (both views through online and target) + backward + SGD step + EMA update, on
pre-made view tensors, symmetrised on both sides, same timm backbone, batch, crop and precision. A variant
is a precision (32 | bf16 autocast), `-cl` channels_last models and views, `-compile` the online backbone
through torch.compile (as `mpinet pretrain --compile` does), for both sides alike. Appends one row per variant
to docs/benchmarks.md; on CUDA also images/s and peak memory (`max_memory_allocated`) to the GPU table.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import platform
import statistics
import time

import timm
import torch
from benchdoc import record
from lightly.loss import NTXentLoss
from lightly.models.modules import DenseCLProjectionHead, MoCoProjectionHead
from lightly.models.utils import batch_shuffle, batch_unshuffle, select_most_similar, update_momentum

from mpinet_hub.models import MPINET_ARCHS
from mpinet_hub.pretrain.config import PretrainConfig
from mpinet_hub.pretrain.registry import build_method
from mpinet_hub.pretrain.views import TwoViews, make_two_views

STEPS = (("ours mocov2", "ours", "mocov2"), ("lightly mocov2", "lightly", "mocov2"), ("ours mpinet", "ours", "mpinet"),
         ("lightly densecl", "lightly", "densecl"), ("ours densecl", "ours", "densecl"))


def parse_variant(name: str) -> tuple[torch.dtype | None, bool, bool]:
    """'bf16-cl-compile' -> (autocast dtype or None, channels_last, compile)."""
    parts = name.split("-")
    if parts[0] not in ("32", "bf16") or any(p not in ("cl", "compile") for p in parts[1:]):
        raise SystemExit(f"--variants {name}: a precision (32 | bf16), then optional -cl and -compile")
    return (torch.bfloat16 if parts[0] == "bf16" else None), "cl" in parts, "compile" in parts


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, n: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ours(method: str, args, views: TwoViews, device, dtype, channels_last: bool, compile_: bool):
    cfg = PretrainConfig.from_sources(None, method=method, arch=args.arch, crop=args.crop, queue_size=args.queue,
                                      pixel_grid=14, ffl_grid=7)
    model = build_method(cfg, 3).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_:
        model.online.backbone.forward = torch.compile(model.online.backbone.forward)
    opt = torch.optim.SGD(model.online.parameters(), lr=0.01, momentum=0.9)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model.total_loss(model(views))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_target(0.99)
    return step


def lightly_step(kind: str, args, views: TwoViews, device, dtype, channels_last: bool, compile_: bool):
    """lightly's MoCo v2, or its DenseCL recipe (`examples/pytorch/densecl.py`: a global and a local
    DenseCLProjectionHead, each query location matched to its most similar key location with
    `select_most_similar`, an NTXent loss with a memory bank over all B*H*W local pairs), symmetrised."""
    base = MPINET_ARCHS[args.arch][0]
    backbone = timm.create_model(base, num_classes=0, global_pool="").to(device)
    dim = backbone.num_features
    head, count = (MoCoProjectionHead, 1) if kind == "mocov2" else (DenseCLProjectionHead, 2)  # DenseCL: global, local
    heads = torch.nn.ModuleList([head(dim, dim, 128) for _ in range(count)]).to(device)
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    bb_m, heads_m = copy.deepcopy(backbone), copy.deepcopy(heads)
    for p in list(bb_m.parameters()) + list(heads_m.parameters()):
        p.requires_grad_(False)
    online = torch.compile(backbone) if compile_ else backbone
    crit = NTXentLoss(temperature=0.2, memory_bank_size=(args.queue, 128))
    crit_local = NTXentLoss(temperature=0.2, memory_bank_size=(args.queue, 128))
    opt = torch.optim.SGD(list(backbone.parameters()) + list(heads.parameters()), lr=0.01, momentum=0.9)
    x = torch.cat([views.view1, views.view2])
    b = views.view1.shape[0]
    pool = torch.nn.AdaptiveAvgPool2d(1)

    def embed(bb, hd, inp):
        """-> global embedding (2B, D), and for DenseCL the backbone's (2B, HW, C) and local (2B, HW, D)."""
        f = bb(inp)
        g = hd[0](pool(f).flatten(1))
        if kind == "mocov2":
            return g, None, None
        f = f.flatten(2).transpose(1, 2)
        return g, f, hd[1](f)

    def local_loss(qf, ql, kf, kl):
        return crit_local(ql.flatten(end_dim=1), select_most_similar(qf, kf, kl).flatten(end_dim=1))

    def step():
        update_momentum(backbone, bb_m, 0.99)
        update_momentum(heads, heads_m, 0.99)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            q, qf, ql = embed(online, heads, x)
            with torch.no_grad():  # lightly's MoCo recipe: the key batch shuffled (ours: shuffle-BN, split BN)
                shuffled, order = batch_shuffle(x)
                keys = embed(bb_m, heads_m, shuffled)
                k, kf, kl = (None if t is None else batch_unshuffle(t, order) for t in keys)
            loss = (crit(q[:b], k[b:]) + crit(q[b:], k[:b])) / 2
            if kind == "densecl":
                local = (local_loss(qf[:b], ql[:b], kf[b:], kl[b:]) + local_loss(qf[b:], ql[b:], kf[:b], kl[:b])) / 2
                loss = (loss + local) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def measure(name: str, side: str, kind: str, args, views: TwoViews, device, variant: str) -> dict[str, float]:
    """Median step seconds, images (pairs) per second and peak device memory of one step kind and variant."""
    dtype, channels_last, compile_ = parse_variant(variant)
    if channels_last:
        views = TwoViews(**{**views.__dict__, "view1": views.view1.contiguous(memory_format=torch.channels_last),
                            "view2": views.view2.contiguous(memory_format=torch.channels_last)})
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    build = ours if side == "ours" else lightly_step
    start = time.perf_counter()
    step = build(kind, args, views, device, dtype, channels_last, compile_)
    seconds = time_steps(step, args.steps, args.warmup + (2 if compile_ else 0), device)
    if args.profile:  # after the timing, so the profiler's own cost is not in the median
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            step()
            _sync(device)
        print(f"{variant} {name}: one step, by self time\n"
              + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile), flush=True)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    result = {"step_s": seconds, "images_per_s": args.batch / seconds, "peak_gib": peak,
              "wall_s": time.perf_counter() - start}
    print(json.dumps({"variant": variant, "step": name, **result}), flush=True)
    return result


def _cell(t: dict, name: str, key: str = "step_s", fmt: str = "{:.3f}") -> str:
    return fmt.format(t[name][key]) if name in t else "-"


def _ratio(t: dict, a: str, b: str) -> str:
    return f"{t[a]['step_s'] / t[b]['step_s']:.2f}" if a in t and b in t else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="mpinet_resnet18", help="(default: %(default)s)")
    ap.add_argument("--batch", type=int, default=16,
                    help="images per step; each gives two views (default: %(default)s)")
    ap.add_argument("--crop", type=int, default=128, help="view side in px (default: %(default)s)")
    ap.add_argument("--queue", type=int, default=4096, help="(default: %(default)s)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps, median reported (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=2,
                    help="untimed steps first (+2 with -compile) (default: %(default)s)")
    ap.add_argument("--variants", nargs="+", default=["32"],
                    help="32 | bf16, then optional -cl (channels_last) and -compile (default: %(default)s)")
    ap.add_argument("--only", nargs="+", choices=[s[0] for s in STEPS], help="run only these steps (default: all)")
    ap.add_argument("--json", help="also write every measurement to this JSON file")
    ap.add_argument("--profile", type=int, default=0, metavar="ROWS",
                    help="after timing, profile one more step of each kind with torch.profiler and print its ROWS "
                    "most expensive operators (default: off)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    machine = torch.cuda.get_device_name() if device.type == "cuda" else platform.machine()
    torch.manual_seed(0)
    views = make_two_views(torch.rand(args.batch, 3, args.crop * 5 // 4, args.crop * 5 // 4, device=device), args.crop)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for variant in args.variants:
        parse_variant(variant)
        t = results[variant] = {}
        for name, side, kind in STEPS:
            if args.only and name not in args.only:
                continue
            try:
                t[name] = measure(name, side, kind, args, views, device, variant)
            except torch.OutOfMemoryError:
                print(f"{variant} {name}: out of memory at batch {args.batch}", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": machine, "args": vars(args), "results": results}, f, indent=1)

        setting = f"{args.arch} b{args.batch} {args.crop}px {variant}"
        record("Pretraining step", machine, setting, _cell(t, "ours mocov2"), _cell(t, "lightly mocov2"),
               _ratio(t, "ours mocov2", "lightly mocov2"), _cell(t, "ours mpinet"), _cell(t, "lightly densecl"),
               _ratio(t, "ours mpinet", "lightly densecl"), _cell(t, "ours densecl"),
               _ratio(t, "ours densecl", "lightly densecl"))
        if device.type == "cuda":
            record("Pretraining on a GPU", machine, setting,
                   *(_cell(t, name, "images_per_s", "{:.0f}") for name, _, _ in STEPS),
                   _ratio(t, "ours mpinet", "lightly densecl"),
                   *(_cell(t, name, "peak_gib", "{:.1f}") for name in ("ours mpinet", "lightly densecl")))


if __name__ == "__main__":
    main()
