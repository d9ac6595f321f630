"""Files written so that no reader ever sees half of one, and no failed write is reported as success.

Every writer of the package (checkpoints, predictions, metrics, markers) goes through `atomic_output`: the data
is written to a temporary file with a unique name in the target's folder (two processes never share one),
checked (a GDAL write that hit a full disk prints an error and returns as if it had worked, so a writer passes
`verify` to read the file back), flushed to the device, and only then renamed onto the target. Without
`overwrite` the rename is exclusive: a target that another process created meanwhile is left as it is and this
write fails, naming it. A failure at any step removes the temporary file and raises an OSError that names the
target and the free space on its disk.

Written here because no maintained library does all of it: `atomicwrites` is archived, and neither it nor
`tempfile` verifies the written file or claims the target exclusively.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PARTIAL_GLOB", "WriteFailed", "atomic_folder", "atomic_output", "free_space", "process_alive",
           "remove_orphaned_partials", "write_text_atomic"]

PARTIAL_GLOB = ".*.partial*"  # the temporary files of `atomic_output`, left behind only by a killed process
_WRITER_PID = re.compile(r"\.(\d+)-[^.]*\.partial")  # `.STEM.PID-RANDOM.partialSUFFIX`


class WriteFailed(OSError):
    """A write that could not be completed (full disk, I/O error); nothing was left behind."""


def free_space(folder: Path) -> str:
    """The free space on `folder`'s disk, as a phrase for error messages."""
    try:
        return f"{shutil.disk_usage(folder).free / 2**30:.2f} GiB free on its disk"
    except OSError:
        return "free space unknown"


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphaned_partials(folder: Path, recursive: bool = False) -> list[Path]:
    """Delete the temporary files under `folder` whose writing process is gone (killed mid-write); a live
    writer's file is left alone, so this is safe while another process writes there. Returns what was removed."""
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.rglob(PARTIAL_GLOB) if recursive else folder.glob(PARTIAL_GLOB)):
        writer = _WRITER_PID.search(path.name)
        if writer is None or not process_alive(int(writer.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, dst: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, dst)
        return
    try:
        os.link(tmp, dst)  # exclusive: fails if dst exists, whoever made it
    except FileExistsError:
        raise FileExistsError(f"{dst} was created by another process while this one was writing it; it is left "
                              "as it is and this result was discarded (pass --overwrite to replace it)") from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if dst.exists():  # a file system without hard links: the check and the rename are not one step
            raise FileExistsError(f"{dst} exists; pass --overwrite to replace it") from None
        os.replace(tmp, dst)
        return
    tmp.unlink()


@contextmanager
def atomic_output(dst: str | os.PathLike, *, overwrite: bool = True,
                  verify: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a fresh temporary path beside `dst` to write to; on a clean exit verify, fsync and rename it onto `dst`.

    `verify(tmp)` raises if the written file is not what it should be (read it back). `overwrite=False` makes
    the rename exclusive (see the module docstring). The file gets the user's usual mode (umask), not mkstemp's
    0600. An empty file is never published. On any failure the temporary file is removed; OSErrors become
    `WriteFailed` naming `dst` and the free space, FileExistsError (the exclusive claim lost) is raised as it is.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dst.stem}.{os.getpid()}-", suffix=f".partial{dst.suffix}",
                                    dir=dst.parent)
    except OSError as err:  # a read-only or full folder: named by the file meant, not the temporary one
        raise _write_failed(dst, err) from err
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if verify is not None:
            verify(tmp)
        if tmp.stat().st_size == 0:
            raise OSError(errno.EIO, "the written file is empty")
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        _publish(tmp, dst, overwrite)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, WriteFailed):
            raise
        raise _write_failed(dst, err) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_failed(dst: Path, err: BaseException) -> WriteFailed:
    """The one-line failure of a write to `dst`: the cause, the free space, and that nothing was written."""
    failed = WriteFailed(f"could not write {dst} ({getattr(err, 'strerror', None) or err}); "
                         f"{free_space(dst.parent)}; nothing was written there")
    failed.errno = getattr(err, "errno", None)
    return failed


def write_text_atomic(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    """`text` written to `path` through `atomic_output` (read back and compared), so a reader sees the whole file
    or the previous one."""
    path = Path(path)
    data = text.encode()

    def same(tmp: Path) -> None:
        if tmp.read_bytes() != data:
            raise OSError(errno.EIO, "the written file does not read back as written")

    with atomic_output(path, overwrite=overwrite, verify=same) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


@contextmanager
def atomic_folder(dst: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh staging folder beside `dst` to fill; on a clean exit swap it in for `dst` (an existing
    `dst` is replaced: the caller decides whether it may be), so `dst` is never half-written.

    The folder and its files get the user's usual mode (umask), not mkdtemp's 0700 or a library's 0600. On any
    failure the staging folder is removed; an OSError (a full disk) or a library's write error becomes
    `WriteFailed` naming `dst` and the free space, and an existing `dst` is left as it was.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.{os.getpid()}-", suffix=".partial", dir=dst.parent))
    try:
        os.chmod(staging, 0o777 & ~_umask())
        yield staging
        for path in staging.rglob("*"):
            if path.is_file():  # libraries differ (safetensors writes 0600): every file gets the umask's mode
                _fsync(path)
                os.chmod(path, 0o666 & ~_umask())
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.{os.getpid()}-", suffix=".partial", dir=dst.parent))
            os.replace(dst, old / dst.name)
            os.replace(staging, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, dst)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        disk_error = isinstance(err, OSError) or "No space" in str(err)  # libraries' own types for a full disk
        if isinstance(err, WriteFailed) or not disk_error:
            raise
        raise _write_failed(dst, err) from err
