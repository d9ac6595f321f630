"""A run folder: claimed once (refusing another run's), locked while written, its checkpoints bounded and cleaned."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import warnings
from pathlib import Path

from ..atomic import WriteFailed, free_space, process_alive, remove_orphaned_partials, write_text_atomic

__all__ = ["RUN_FILES", "RunFolderError", "RunLock", "add_run_folder_arguments", "claim_run_folder",
           "prune_checkpoints", "remove_partial_checkpoints"]


class RunFolderError(RuntimeError):
    """A run folder that belongs to another run or another process."""

# What marks a folder as a training run, and all that --overwrite deletes (fine-tuning adds model/ and its subset).
RUN_FILES = ("checkpoints", "log.jsonl", "tensorboard", "loss.png", "config.yaml", "labeled_patches.json", "model",
             "probe.safetensors", "metrics.json")


def add_run_folder_arguments(parser: argparse.ArgumentParser) -> None:
    """`--resume` and `--overwrite`, as every run kind's subcommand takes them (`claim_run_folder` acts on them)."""
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    parser.add_argument("--overwrite", action="store_true", help=(
        "start over in an OUT that holds a run: deletes the run files there (any of " + ", ".join(RUN_FILES)
        + "), nothing else"))


def claim_run_folder(out: Path, resume: bool, overwrite: bool = False) -> RunLock:
    """Lock `out` (a folder another live process writes is refused, naming it), then refuse to start a new run
    over an existing one: `resume` continues it, `overwrite` deletes its run files (`RUN_FILES`, nothing else).
    A folder without them is free. Returns the held lock, for the run to release when it ends; on a refusal the
    lock is released and a folder this call created is removed."""
    lock = RunLock(out)
    try:
        present = [name for name in RUN_FILES if (out / name).exists()]
        if resume:
            if not (out / "checkpoints" / "last.pt").is_file():
                raise RunFolderError(f"{out}: nothing to resume (no checkpoints/last.pt); drop --resume to start a "
                                     "run")
        elif present and not overwrite:
            raise RunFolderError(f"{out} already holds a run ({', '.join(present)}); pass --resume to continue it, "
                                 "--overwrite to start over (deletes those files), or choose another --out")
        else:
            for name in present:
                path = out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    except BaseException:
        lock.abandon()
        raise
    return lock


class RunLock:
    """An exclusive lock on a run folder (OUT/.lock with the holder's pid and host), so a second process writing
    the same run is refused with the holder named. A lock whose process is gone (killed) is taken over.
    Released on `release()` or when the object's context ends."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".lock"
        self.created_folder = not out.exists()
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

    def abandon(self) -> None:
        """Release, and remove the folder if taking the lock created it and nothing was written there since: a
        refused or failed start leaves no output behind."""
        self.release()
        if self.created_folder:
            try:
                self.path.parent.rmdir()
            except OSError:
                pass

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
