"""mpinet_hub.atomic: the one way the package writes a file."""

import errno
import os

import pytest

from mpinet_hub import atomic
from mpinet_hub.atomic import WriteFailed, atomic_output, write_text_atomic


def test_two_writers_of_one_target_get_their_own_temporary_files_and_the_exclusive_claim_keeps_the_first(
        tmp_path):
    dst = tmp_path / "out.json"
    with pytest.raises(FileExistsError, match="created by another process"):
        with atomic_output(dst, overwrite=False) as slow:
            slow.write_text("slow")
            with atomic_output(dst, overwrite=False) as fast:
                assert fast != slow and fast.parent == slow.parent == tmp_path
                fast.write_text("fast")
    assert dst.read_text() == "fast" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    with atomic_output(dst, overwrite=True) as again:
        again.write_text("replaced")
    assert dst.read_text() == "replaced"


def test_a_failed_or_empty_write_leaves_nothing_and_names_the_file_and_the_free_space(tmp_path, monkeypatch):
    dst = tmp_path / "metrics.json"
    with pytest.raises(WriteFailed, match=r"could not write .*metrics.json .*free on its disk"):
        with atomic_output(dst):
            pass  # nothing written: an empty file is never published
    write_text_atomic(dst, "kept")

    def device_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", device_full)
    with pytest.raises(WriteFailed, match="No space left on device") as failed:
        write_text_atomic(dst, "new")
    assert failed.value.errno == errno.ENOSPC
    assert dst.read_text() == "kept" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_written_files_get_the_users_umask_not_0600(tmp_path):
    old = os.umask(0o002)
    try:
        path = write_text_atomic(tmp_path / "shared.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o664


def test_a_real_full_disk_fails_the_write_and_keeps_the_previous_file(full_disk):
    disk = full_disk(1 << 20)
    target = write_text_atomic(disk / "marker.json", '{"ok": true}')
    full_disk(0)
    with pytest.raises(WriteFailed, match="marker.json"):
        write_text_atomic(target, '{"ok": false, "padding": "' + "x" * 8192 + '"}')
    assert target.read_text() == '{"ok": true}'
    assert sorted(p.name for p in disk.iterdir()) == [".filler", "marker.json"]


def test_a_read_only_folder_is_named_with_the_file_meant_not_the_temporary_one(read_only_folder):
    """A study in a read-only folder once failed naming `.study.13681-6edjvtb7.partial.json`."""
    with pytest.raises(WriteFailed) as caught:
        write_text_atomic(read_only_folder / "study.json", "{}")
    assert f"could not write {read_only_folder / 'study.json'} (" in str(caught.value)
    assert "partial" not in str(caught.value)
