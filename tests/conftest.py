"""Shared fixtures. The Hugging Face environment is set before anything imports huggingface_hub
(it reads HF_HOME and HF_HUB_OFFLINE once, at import), so every test runs offline against a cache
that the tests fill themselves; that cache (about 130 MB) is removed when the session ends."""

import atexit
import os
import shutil
import tempfile

_HF_HOME = tempfile.mkdtemp(prefix="mpinet-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ["HF_HOME"] = _HF_HOME
os.environ.pop("HF_HUB_CACHE", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("MPINET_HUB_ORG", None)
os.environ.setdefault("OMP_NUM_THREADS", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

import mpinet_hub  # noqa: E402,F401
from mpinet_hub.hub import export_weights, install_to_hf_cache  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# The suite's temp files (checkpoints, exports, the HF cache) peak at about 1.7 GB (docs/benchmarks.md); on a fuller
# disk the tests fail midway, each with an ENOSPC deep in pytest's or ruff's own temp handling.
_TEMP_PEAK_BYTES, _TEMP_NEEDED_BYTES = 1_700_000_000, 2_000_000_000


def pytest_sessionstart(session: pytest.Session) -> None:
    temp = tempfile.gettempdir()
    free = shutil.disk_usage(temp).free
    if free < _TEMP_NEEDED_BYTES:
        pytest.exit(f"the tests write up to about {_TEMP_PEAK_BYTES / 1e9:.1f} GB under {temp}, which has "
                    f"{free / 1e9:.2f} GB free ({_TEMP_NEEDED_BYTES / 1e9:.1f} GB asked): free some space there, or "
                    "point TMPDIR at a folder on a larger disk",
                    returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def hf_home() -> Path:
    return Path(_HF_HOME)


@pytest.fixture(scope="session")
def backbone_state() -> dict:
    """Random, seeded resnet18 backbone weights: distinct from any init, so a bit-for-bit match means loaded."""
    torch.manual_seed(1234)
    model = timm.create_model("resnet18", num_classes=0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn_like(buf) * 0.1)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def exported_potsdam(tmp_path_factory, backbone_state, hf_home) -> Path:
    """An export of `mpinet_resnet18.potsdam`, also installed in the offline HF cache under its repo id."""
    work = tmp_path_factory.mktemp("export")
    src = work / "backbone.pt"
    torch.save(backbone_state, src)
    out = work / "mpinet_resnet18.potsdam"
    export_weights(src, out, "mpinet_resnet18", "potsdam")
    install_to_hf_cache(out, "mpinet-hub/mpinet_resnet18.potsdam")
    return out


def _mount_tmpfs(at: Path, options: str) -> bool:
    """Mount a tmpfs with `options` at `at`; False where mounting is not permitted (not root, no mount)."""
    import shutil
    import subprocess

    return shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(at)], capture_output=True).returncode == 0


def _unmount(at: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(at)], capture_output=True)


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write to: mode 0555, and where that does not bind (root), a real read-only
    tmpfs mounted on it; skipped with the reason when neither is possible."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    mounted = False
    if os.access(folder, os.W_OK):
        mounted = _mount_tmpfs(folder, "ro,size=64k")
        if not mounted:
            folder.chmod(0o755)
            pytest.skip("running as root, who writes through mode 0555, and a read-only mount is not permitted")
    try:
        assert not os.access(folder, os.W_OK)
        yield folder
    finally:
        if mounted:
            _unmount(folder)
        folder.chmod(0o755)


@pytest.fixture
def full_disk(tmp_path):
    """A real, nearly full file system: a 1 MiB tmpfs mounted at tmp_path/"full", filled up to `leave` bytes by
    `fill(leave)` (its filler sits in a subfolder). Needs root (mount); skipped with the reason otherwise."""
    mount = tmp_path / "full"
    mount.mkdir()
    if not _mount_tmpfs(mount, "size=1m"):
        pytest.skip("a real full disk needs a tmpfs mount (root); not available here")

    def fill(leave: int = 0) -> Path:
        (mount / ".filler").mkdir(exist_ok=True)
        stat = os.statvfs(mount)
        with open(mount / ".filler" / "bytes", "ab") as f:
            try:
                f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
            except OSError:
                pass
        return mount

    try:
        yield fill
    finally:
        _unmount(mount)


@pytest.fixture(scope="module")
def tree_folder(tmp_path_factory):
    """Textured ground with bright green blobs (class tree): colour alone separates the classes."""
    root = tmp_path_factory.mktemp("study-data")
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": ["ground", "tree"]}))
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        for i in range(count):
            image = rng.integers(60, 120, (64, 64, 3)).astype(np.uint8)
            mask = np.zeros((64, 64), np.uint8)
            for _ in range(3):
                y, x = rng.integers(8, 56, 2)
                yy, xx = np.ogrid[:64, :64]
                mask[(yy - y) ** 2 + (xx - x) ** 2 < 64] = 1
            image[mask == 1] = (30, 220, 40)
            for sub in ("images", "masks"):
                (root / split / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / split / "images" / f"{split}{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{split}{i}.png")
    return root
