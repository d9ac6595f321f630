import shutil
import subprocess

import pytest

from .conftest import REPO_ROOT


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is installed by the test extra")
def test_ruff_clean():
    done = subprocess.run(["ruff", "check", str(REPO_ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
