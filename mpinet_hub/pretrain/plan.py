"""`mpinet pretrain --plan`: the memory of one training step, estimated before a GPU is rented.

The model is built on PyTorch's meta device (shapes, no storage) and one step's forward runs there with
autograd's saved-tensor hooks counting what the backward will need: that is the activation memory, and it
is linear in the batch. Parameters (online + target), gradients and SGD momentum follow from the parameter
count. The backward's transient buffers are taken as twice the largest saved tensor.

Under bf16 autocast most activations are stored in bf16, but not all (losses, RoIAlign inputs, BatchNorm
statistics stay fp32), and the meta device has no autocast: bf16 activations are taken as 0.56x their fp32
size, the ratio measured on an H200 for the ResNet-50, 256 px step (docs/benchmarks.md, memory table).
Checked against measured peaks: fp32 on the H200 within 3% at batch 64-256.

Written here because no library estimates a training step's memory without running it on the device.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from ..settings import SettingsError
from .config import PretrainConfig
from .registry import build_method
from .views import TwoViews, ViewGeometry, make_two_views

__all__ = ["BF16_ACTIVATION_RATIO", "MemoryPlan", "available_memory", "check_step_fits", "largest_batch",
           "plan_memory"]

BF16_ACTIVATION_RATIO = 0.56
GIB = 2**30


@dataclass
class MemoryPlan:
    batch: int
    precision: str
    parameters: int  # bytes: online + target (+ their BatchNorm buffers)
    gradients: int
    optimizer: int  # SGD momentum
    queue: int  # the method's own buffers: queues of keys
    activations: int  # saved for the backward: backbone, heads and the pixel/instance/FFL losses
    transient: int  # the backward's working buffers (2x the largest saved tensor)

    @property
    def total(self) -> int:
        return (self.parameters + self.gradients + self.optimizer + self.queue + self.activations
                + self.transient)

    def render(self) -> str:
        rows = [("parameters (online + target)", self.parameters), ("gradients", self.gradients),
                ("optimizer state (SGD momentum)", self.optimizer), ("queues of keys", self.queue),
                (f"activations ({self.precision})", self.activations), ("backward working buffers", self.transient),
                ("total per process", self.total)]
        return "\n".join(f"  {name:<32} {size / GIB:8.2f} GiB" for name, size in rows)


def _meta_views(cfg: PretrainConfig, batch: int, in_chans: int) -> TwoViews:
    """Views of the configured geometry: boxes drawn as in training (on the host), pixels on the meta device."""
    drawn = min(batch, 8)  # the geometry's values do not change the step's shapes: draw a few, repeat them
    geo = make_two_views(torch.empty(drawn, 1, cfg.patch, cfg.patch), cfg.crop,
                         scale=tuple(cfg.crop_scale), min_overlap=cfg.min_overlap,
                         generator=torch.Generator().manual_seed(0))

    def meta(t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(-(-batch // drawn), 0)[:batch].to("meta")

    def geometry(g: ViewGeometry) -> ViewGeometry:
        return ViewGeometry(*(meta(getattr(g, f.name)) for f in dataclasses.fields(ViewGeometry)))

    def pixels() -> torch.Tensor:
        return torch.empty(batch, in_chans, cfg.crop, cfg.crop, device="meta")

    return TwoViews(pixels(), pixels(), geometry(geo.geom1), geometry(geo.geom2), meta(geo.overlap),
                    meta(geo.overlap1), meta(geo.overlap2))


def plan_memory(cfg: PretrainConfig, in_chans: int = 3, batch: int | None = None) -> MemoryPlan:
    """Estimated peak memory of one pretraining step of `cfg` at `batch` (default: the configured one)."""
    batch = batch or cfg.batch_size
    with torch.device("meta"):
        model = build_method(cfg, in_chans)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.total_loss(model(_meta_views(cfg, batch, in_chans)))
    half = cfg.precision in ("bf16", "16", "auto")  # auto: bf16 on the GPU being planned for
    ratio = BF16_ACTIVATION_RATIO if half else 1.0
    online = sum(p.numel() * p.element_size() for p in model.online.parameters())
    own = sum(b.numel() * b.element_size() for b in model.buffers(recurse=False))
    buffers = sum(b.numel() * b.element_size() for b in model.online.buffers())
    return MemoryPlan(batch=batch, precision="bf16" if half else "fp32",
                      parameters=2 * (online + buffers), gradients=online, optimizer=online,
                      queue=own, activations=int(sum(saved.values()) * ratio),
                      transient=int(2 * max(saved.values()) * ratio))


def largest_batch(cfg: PretrainConfig, memory_bytes: float, in_chans: int = 3) -> int:
    """The largest batch (a multiple of 8) whose planned step fits in `memory_bytes`; 0 if none does."""
    small, large = plan_memory(cfg, in_chans, 8), plan_memory(cfg, in_chans, 16)
    per_image = (large.total - small.total) / 8
    guess = int((memory_bytes - small.total) / per_image) + 8 if per_image > 0 else 8
    batch = max(0, guess - guess % 8)
    while batch > 0 and plan_memory(cfg, in_chans, batch).total > memory_bytes:
        batch -= 8
    return batch


def available_memory(device: torch.device) -> int | None:
    """Bytes this process may still use on `device`: a GPU's free memory, a CPU's MemAvailable (shared among the
    processes of a torchrun on this machine); None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    return available // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def check_step_fits(cfg: PretrainConfig, in_chans: int, device: torch.device) -> None:
    """Refuse, before the first step, a run whose planned step does not fit the device's free memory, naming the
    flag to lower and a value that fits (a CPU otherwise dies in "DefaultCPUAllocator: can't allocate memory")."""
    available = available_memory(device)
    if available is None:
        return
    plan = plan_memory(cfg, in_chans)
    if plan.total <= available:
        return
    fits = largest_batch(cfg, available, in_chans)
    way_out = (f"lower --batch-size to {fits} or less" if fits else
               "even a batch of 8 does not fit: lower --crop, or use --arch mpinet_resnet18")
    raise SettingsError(f"one step needs about {plan.total / GIB:.1f} GiB ({cfg.arch}, batch {cfg.batch_size}, "
                        f"{cfg.crop} px views, {plan.precision}) and this {device.type} has "
                        f"{available / GIB:.1f} GiB free: {way_out} (`mpinet pretrain --plan` shows the estimate)")
