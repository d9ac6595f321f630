import os
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO_ROOT


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is installed by the test extra")
def test_ruff_clean():
    done = subprocess.run(["ruff", "check", str(REPO_ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_test_session_leaves_nothing_in_the_temp_folder(tmp_path):
    """Every session left its offline HF cache (about 130 MB) in the temp folder; dozens of them were on the shared
    disk when a CI run ran out of space. A session of one test that fills that cache, with TMPDIR pointed at an
    empty folder, must leave no file behind (pytest keeps a passed test's folder empty; timm's import makes an empty
    torchinductor folder)."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_hub.py::test_timm_tag_loads_from_offline_cache"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    left = [p for p in tmpdir.rglob("*") if p.is_file()]
    assert not left, f"left behind: {[str(p.relative_to(tmpdir)) for p in left][:5]}"
