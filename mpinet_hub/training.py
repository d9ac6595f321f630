"""Pieces shared by the pretraining and fine-tuning loops: seeded batches, device choice, NaN stop, loss plot.

Both loops draw every step's randomness from (seed, step), so a resumed run reproduces the uninterrupted
one on CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from .atomic import WriteFailed, atomic_output, free_space, process_alive, remove_orphaned_partials, write_text_atomic

__all__ = [
    "AUTOCAST_DTYPES",
    "PRECISIONS",
    "EpochBatches",
    "NonFiniteLossError",
    "RunFolderError",
    "RunLock",
    "RunLog",
    "check_finite",
    "check_finite_state",
    "claim_run_folder",
    "last_good_checkpoint_hint",
    "trim_log",
    "init_distributed",
    "normalisation",
    "prune_checkpoints",
    "remove_partial_checkpoints",
    "plot_losses",
    "resolve_device",
    "resolve_precision",
]

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


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; the last good checkpoint is kept."""


class RunFolderError(RuntimeError):
    """A run folder that belongs to another run or another process."""


# What marks a folder as a training run, and all that --overwrite deletes (fine-tuning adds model/ and its subset).
RUN_FILES = ("checkpoints", "log.jsonl", "tensorboard", "loss.png", "config.yaml", "labeled_patches.json", "model")


def claim_run_folder(out: Path, resume: bool, overwrite: bool = False) -> None:
    """Refuse to start a new run over an existing one: `resume` continues it, `overwrite` deletes its run files
    (`RUN_FILES`, nothing else) first. A folder without them is free."""
    present = [name for name in RUN_FILES if (out / name).exists()]
    if resume:
        if not (out / "checkpoints" / "last.pt").is_file():
            raise RunFolderError(f"{out}: nothing to resume (no checkpoints/last.pt); drop --resume to start a run")
        return
    if not present:
        return
    if not overwrite:
        raise RunFolderError(f"{out} already holds a run ({', '.join(present)}); pass --resume to continue it, "
                             "--overwrite to start over (deletes those files), or choose another --out")
    for name in present:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def trim_log(path: Path, step: int) -> None:
    """Drop log rows past `step` (written after the checkpoint a run resumes from), so a resumed run's log has
    each step once."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(line + "\n" for line in kept))


class RunLog:
    """A run's log: OUT/log.jsonl, and TensorBoard event files in OUT/tensorboard when tensorboard is installed
    (numeric fields as scalars at the record's step). Opened at the step a run continues from, it first drops
    the rows written past that step (after the checkpoint it resumes from) from both, so each step is logged once.
    `enabled=False` (ranks other than 0) writes nothing."""

    def __init__(self, out: Path, step: int, enabled: bool = True) -> None:
        self.jsonl = self.tensorboard = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        trim_log(out / "log.jsonl", step)
        self.jsonl = (out / "log.jsonl").open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional: the JSON lines hold everything
            return
        self.tensorboard = SummaryWriter(str(out / "tensorboard"), purge_step=step + 1)

    def write(self, record: dict) -> None:
        if self.jsonl is None:
            return
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tensorboard.add_scalar(key, value, record["step"])

    def close(self) -> None:
        for sink in (self.jsonl, self.tensorboard):
            if sink is not None:
                sink.close()
        self.jsonl = self.tensorboard = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunLock:
    """An exclusive lock on a run folder (OUT/.lock with the holder's pid and host), so a second process writing
    the same run is refused with the holder named. A lock whose process is gone (killed) is taken over.
    Released on `release()` or when the object's context ends."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".lock"
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WriteFailed(f"could not create the run folder {out} ({err.strerror or err}); "
                              f"{free_space(out.parent if out.parent.exists() else Path('.'))}") from err
        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                write_text_atomic(self.path, me, overwrite=False)  # exclusive, and never empty or torn
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    warnings.warn(f"{self.path} is unreadable (left empty by a full disk or a kill while it was "
                                  "written); taking it as stale", stacklevel=2)
                    self.path.unlink(missing_ok=True)
                    continue
                pid, host = holder
                if host == socket.gethostname() and not process_alive(pid):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise RunFolderError(f"{out} is in use by process {pid} on {host} ({self.path}); "
                                     "wait for it, or delete the lock if that process is gone") from None
            self.held = True
            remove_partial_checkpoints(out / "checkpoints")  # a killed writer's; the folder is ours now
            return
        raise RunFolderError(f"{self.path}: could not take the lock")

    def _holder(self) -> tuple[int, str] | None:
        """(pid, host) written in the lock, or None when it cannot be read as such."""
        try:
            pid, _, host = self.path.read_text().partition(" ")
        except (OSError, UnicodeDecodeError):
            return None
        return (int(pid), host.strip()) if pid.isdigit() and host.strip() else None

    def release(self) -> None:
        if getattr(self, "held", False):
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_partial_checkpoints(folder: Path) -> list[Path]:
    """Delete the temporary files `atomic_save` leaves when killed mid-write."""
    return remove_orphaned_partials(folder)


def prune_checkpoints(folder: Path, keep: int | None) -> list[Path]:
    """Keep the newest `keep` periodic checkpoints (`step_*.pt`, named by step) and delete the older ones;
    `last.pt` is never touched. `keep=None` keeps all."""
    periodic = sorted(folder.glob("step_*.pt"))
    old = periodic[: max(0, len(periodic) - keep)] if keep else []
    for path in old:
        path.unlink(missing_ok=True)
    return old


class EpochBatches:
    """Deterministic batches: epoch e is a permutation of range(n) seeded by (seed, e), sharded across ranks."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if n < 1:
            raise ValueError("no items to draw batches from")
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.per_epoch = max(1, n // (batch * world))

    def indices(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.per_epoch)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch)).tolist()
        start = (k * self.world + self.rank) * self.batch
        return [perm[(start + j) % self.n] for j in range(self.batch)]


def init_distributed(device: str) -> tuple[int, int]:
    """(rank, world size) from torchrun's environment, joining the process group (nccl on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and device != "cpu" else "gloo")
    return rank, world


def resolve_device(want: str) -> torch.device:
    """`auto` -> cuda when there is one, else cpu; under torchrun, cuda means this process's LOCAL_RANK GPU.
    On a CPU, the thread count is chosen by `choose_cpu_threads`."""
    if want == "auto":
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


def normalisation(mean: list[float] | None, std: list[float] | None, in_chans: int,
                  default: tuple[Sequence[float], Sequence[float]] | None = None) -> tuple[list[float], list[float]]:
    """Per-band (mean, std): the given ones (one value per band), else `default` if it has one per band."""
    if mean and std:
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(f"--mean/--std need {in_chans} values (one per band)")
        return list(mean), list(std)
    if default is not None and len(default[0]) == in_chans:
        return list(default[0]), list(default[1])
    raise ValueError(f"{in_chans}-band input: give --mean and --std (see `mpinet data stats`)")


def check_finite(terms: dict[str, torch.Tensor], step: int, last_checkpoint: Path) -> None:
    """Raise NonFiniteLossError naming the step and the first non-finite term, and what there is to go back to."""
    for name, value in terms.items():
        if not torch.isfinite(value):
            raise NonFiniteLossError(
                f"step {step}: loss term '{name}' is {float(value.detach())}; stopped without saving. "
                + last_good_checkpoint_hint(last_checkpoint))


def check_finite_state(state: dict[str, torch.Tensor], step: int, last_checkpoint: Path) -> None:
    """Refuse to checkpoint non-finite parameters or buffers (e.g. inf BatchNorm variances after a huge lr)."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteLossError(f"step {step}: {len(bad)} parameter/buffer tensor(s) are not finite "
                                 f"({', '.join(bad[:3])}); nothing was saved. "
                                 + last_good_checkpoint_hint(last_checkpoint))


def last_good_checkpoint_hint(last_checkpoint: Path) -> str:
    """What a stopped run can go back to, or that there is nothing."""
    if last_checkpoint.is_file():
        return (f"The last good checkpoint is {last_checkpoint} (resume with --resume, perhaps with a lower --lr "
                "or --precision 32)")
    return "No checkpoint was written before this step, so there is none to go back to; start again with a lower --lr."


def plot_losses(log_path: Path, png_path: Path, keys: tuple[str, ...] = ("total", "ins", "pix", "ffl"),
                weights: dict[str, float | str] | None = None, title: str | None = None,
                lines: dict[str, float] | None = None) -> None:
    """PNG of the logged loss terms in `keys` (those present) against step, from a JSON-lines log.

    `weights` scales a term as it enters the total (a number, or the name of a logged field such as `w_ffl`), so
    the plotted terms add up to `total`; `lines` draws labelled horizontal references (e.g. chance for InfoNCE).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not records:
        return
    keys = tuple(k for k in keys if k in records[-1])
    weights = weights or {}
    fig, ax = plt.subplots(figsize=(8, 4))
    steps = [r["step"] for r in records]
    for k in keys:
        w = weights.get(k, 1.0)
        scale = [float(r.get(w, 0.0)) if isinstance(w, str) else float(w) for r in records]
        label = k if k == "total" or w == 1.0 else f"{w} x {k}" if isinstance(w, str) else f"{w:g} x {k}"
        ax.plot(steps, [r.get(k) * c for r, c in zip(records, scale)], label=label, lw=2 if k == "total" else 1.2)
    for label, value in (lines or {}).items():
        ax.axhline(value, color="grey", ls="--", lw=1, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss (as weighted in the total)")
    ax.set_title(title or f"losses ({png_path.parent.name})", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
