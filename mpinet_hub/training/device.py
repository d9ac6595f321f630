"""Where and how a run computes: the device (and, on a CPU, how many threads), the precision, the DDP group."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

__all__ = ["AUTOCAST_DTYPES", "PRECISIONS", "choose_cpu_threads", "init_distributed", "resolve_device",
           "resolve_precision"]


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}  # --precision -> autocast dtype (32: none)
PRECISIONS = ("auto", "32", "bf16", "16")


def resolve_precision(precision: str, device: torch.device, announce: bool = False) -> str:
    """`auto`: bf16 on a CUDA device that supports it, fp32 elsewhere (bf16 autocast ran about 3x slower than
    fp32 on a 2-core CPU); any other value as given. `announce` prints what `auto` chose."""
    if precision != "auto":
        return precision
    chosen = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "32"
    if announce:
        print(f"precision auto: {chosen} on {device.type}")
    return chosen


def init_distributed(device: str) -> tuple[int, int]:
    """(rank, world size) from torchrun's environment, joining the process group (nccl on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and device != "cpu" else "gloo")
    return rank, world


def resolve_device(want: str | None) -> torch.device:
    """`auto` (or None, not given) -> cuda when there is one, else cpu; under torchrun, cuda means this process's
    LOCAL_RANK GPU. On a CPU, the thread count is chosen by `choose_cpu_threads`."""
    if want in (None, "auto"):
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    if want == "cpu":
        choose_cpu_threads()
    return torch.device(want)


def choose_cpu_threads() -> int:
    """Leave the cores other work is using: torch's threads = cores - the 1-minute load average (at least 1),
    unless OMP_NUM_THREADS or torch.set_num_threads chose already. Says so in one line when it lowers them.

    Why: with another job on a 2-core machine, 2 threads ran a ResNet-18 step 1.4x (and up to 10x) slower than 1,
    since each of torch's threads waits for the slowest at every operation (docs/benchmarks.md)."""
    global _THREADS_CHOSEN
    if _THREADS_CHOSEN or "OMP_NUM_THREADS" in os.environ or torch.get_num_threads() != _DEFAULT_THREADS:
        return torch.get_num_threads()
    _THREADS_CHOSEN = True
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    threads = max(1, min(_DEFAULT_THREADS, cores - busy))
    if threads < _DEFAULT_THREADS:
        torch.set_num_threads(threads)
        print(f"CPU: {threads} of {cores} cores used for torch (load average {os.getloadavg()[0]:.1f} from other "
              "work); set OMP_NUM_THREADS to choose", file=sys.stderr)
    return threads


_DEFAULT_THREADS = torch.get_num_threads()
_THREADS_CHOSEN = False
