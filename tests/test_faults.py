"""Faults a careful user meets, through the CLI: every case asserts the exit code, the message, and that the
files that were there before are byte-identical afterwards (docs/reliability.md lists them all)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mpinet_hub.cli import main
from mpinet_hub.data.synth import synth_dataset
from mpinet_hub.hub import export_weights

from .conftest import REPO_ROOT


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-data")
    synth_dataset("potsdam", root, tiles=3, size=128, seed=2)
    return root


def _pretrain_args(data, out, *extra) -> list[str]:
    return ["pretrain", "--dataset", "potsdam", "--data-root", str(data), "--arch", "mpinet_resnet18",
            "--method", "mocov2", "--patch", "96", "--crop", "64", "--batch-size", "4", "--queue-size", "16",
            "--workers", "0", "--device", "cpu", "--out", str(out), *extra]


def _pretrain(data, out, *extra):
    return main(_pretrain_args(data, out, *extra))


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults-run") / "run"
    assert _pretrain(data, out, "--steps", "3", "--save-every", "2") == 0
    return out


def test_pretrain_refuses_an_existing_run_without_resume(data, run, tmp_path, capsys):
    work = tmp_path / "run"
    os.system(f"cp -r {run} {work}")
    before = _snapshot(work)
    assert _pretrain(data, work, "--steps", "1") == 1
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "Traceback" not in err
    assert _snapshot(work) == before
    assert _pretrain(data, work, "--steps", "1", "--overwrite") == 0  # explicit: starts over
    assert json.loads((work / "log.jsonl").read_text().splitlines()[0])["step"] == 1
    assert len((work / "log.jsonl").read_text().splitlines()) == 1


def test_resume_refuses_changed_settings_naming_them(data, run, tmp_path, capsys):
    work = tmp_path / "run"
    os.system(f"cp -r {run} {work}")
    before = _snapshot(work)
    for flag, value, field in (("--lr", "0.5", "lr"), ("--queue-size", "32", "queue_size"),
                               ("--batch-size", "2", "batch_size"), ("--seed", "7", "seed")):
        assert _pretrain(data, work, "--steps", "4", "--resume", flag, value) == 2  # a settings refusal, as everywhere
        err = capsys.readouterr().err
        assert f"{field} " in err and "other settings" in err and "Traceback" not in err, err
    assert _snapshot(work) == before


def test_resume_log_has_each_step_once(data, run, tmp_path):
    work = tmp_path / "run"
    os.system(f"cp -r {run} {work}")
    # a crash after step 3's log row but with the checkpoint at step 2: the resumed run rewrites step 3
    ckpt = torch.load(work / "checkpoints" / "step_0000002.pt", weights_only=True)
    torch.save(ckpt, work / "checkpoints" / "last.pt")
    assert _pretrain(data, work, "--steps", "4", "--save-every", "2", "--resume") == 0
    steps = [json.loads(line)["step"] for line in (work / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_run_killed_by_sigkill_resumes_from_its_last_checkpoint_with_each_step_logged_once(data, tmp_path):
    """The real thing the simulated cases above stand for: a pretraining process killed with SIGKILL (no handler
    runs) leaves its lock and perhaps a torn checkpoint; `--resume` takes the lock as stale and continues."""
    import signal
    import time

    out = tmp_path / "run"
    args = _pretrain_args(data, out, "--save-every", "1", "--steps", "1000")
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from mpinet_hub.cli import main; sys.exit(main())",
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline, second = time.monotonic() + 300, out / "checkpoints" / "step_0000002.pt"
    while not second.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert (out / ".lock").is_file()  # nothing ran at the kill to remove it
    killed_at = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 2 <= killed_at < 12
    assert _pretrain(data, out, "--steps", "12", "--resume") == 0
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))
    assert not (out / ".lock").exists() and not list((out / "checkpoints").glob(".*partial*"))
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 12


def test_second_writer_is_refused_and_a_stale_lock_is_taken_over(data, run, tmp_path, capsys):
    import socket

    work = tmp_path / "run"
    os.system(f"cp -r {run} {work}")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (work / ".lock").write_text(f"{holder.pid} {socket.gethostname()}")
        before = _snapshot(work)
        assert _pretrain(data, work, "--steps", "4", "--resume") == 1
        err = capsys.readouterr().err
        assert f"in use by process {holder.pid}" in err
        assert _snapshot(work) == before
    finally:
        holder.kill()
        holder.wait()
    assert _pretrain(data, work, "--steps", "4", "--resume") == 0  # the holder is gone: its lock is stale
    assert not (work / ".lock").exists()


def test_an_empty_lock_left_by_a_full_disk_or_a_kill_is_taken_as_stale_and_said_so(data, run, tmp_path, capsys):
    """Before: a 0-byte `.lock` refused every later run, --overwrite included ("in use by process  on ?")."""
    work = tmp_path / "run"
    os.system(f"cp -r {run} {work}")
    (work / ".lock").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"\.lock is unreadable .* taking it as stale"):
        assert _pretrain(data, work, "--steps", "4", "--resume") == 0
    assert not (work / ".lock").exists()


def test_a_full_disk_at_the_run_folder_fails_in_one_line_and_leaves_no_lock(data, full_disk, capsys):
    out = full_disk(0) / "run"
    assert _pretrain(data, out, "--steps", "2") == 2
    err = capsys.readouterr().err
    assert "could not write" in err and "free on its disk" in err and "Traceback" not in err
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_nan_imagery_names_the_file_and_says_there_is_no_checkpoint(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    import rasterio
    from rasterio.transform import from_origin

    bad = np.random.default_rng(0).random((3, 96, 96)).astype(np.float32)
    bad[:, 10:20, 10:20] = np.nan
    with rasterio.open(folder / "nan.tif", "w", driver="GTiff", width=96, height=96, count=3, dtype="float32",
                       crs="EPSG:32633", transform=from_origin(0, 0, 1, 1)) as dst:
        dst.write(bad)
    out = tmp_path / "run"
    code = main(["pretrain", "--dataset", "folder", "--data-root", str(folder), "--arch", "mpinet_resnet18",
                 "--method", "mocov2", "--patch", "96", "--crop", "64", "--batch-size", "2", "--queue-size", "8",
                 "--steps", "2", "--workers", "0", "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "NaN/inf pixels" in err and "nan.tif" in err and "none to go back to" in err
    assert not (out / "checkpoints").exists()


def test_non_finite_weights_are_never_checkpointed(data, tmp_path, capsys):
    out = tmp_path / "run"
    code = _pretrain(data, out, "--steps", "3", "--save-every", "1", "--lr", "1e12")
    err = capsys.readouterr().err
    assert code == 1 and ("not finite" in err or "loss term" in err), err
    if (out / "checkpoints" / "last.pt").is_file():
        ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_export_overwrite_never_deletes_what_it_did_not_write(run, tmp_path, capsys):
    src = run / "checkpoints" / "last.pt"
    mine = tmp_path / "my-files"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    before = _snapshot(mine)
    assert main(["export", str(src), str(mine), "--arch", "mpinet_resnet18", "--tag", "potsdam",
                 "--overwrite"]) == 1
    assert "not an earlier export" in capsys.readouterr().err and _snapshot(mine) == before
    run_before = _snapshot(run)
    assert main(["export", str(src), str(run), "--arch", "mpinet_resnet18", "--tag", "potsdam",
                 "--overwrite"]) == 1
    assert "holds the source" in capsys.readouterr().err and _snapshot(run) == run_before
    hub = tmp_path / "hub"
    export_weights(src, hub, "mpinet_resnet18", "potsdam")
    assert main(["export", str(src), str(hub), "--arch", "mpinet_resnet18", "--tag", "potsdam",
                 "--overwrite"]) == 0  # an earlier export is replaced
    assert (hub / "model.safetensors").is_file()


def test_finetune_refuses_an_existing_run_and_a_second_writer(data, tmp_path, capsys):
    common = ["finetune", "--dataset", "potsdam", "--data-root", str(data), "--patch", "64", "--crop", "64",
              "--batch-size", "2", "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "ft")]
    assert main(common) == 0
    before = _snapshot(tmp_path / "ft")
    assert main(common) == 1
    assert "already holds a run" in capsys.readouterr().err and _snapshot(tmp_path / "ft") == before
    assert main([*common, "--overwrite", "--label-fraction", "0.5"]) == 0
    capsys.readouterr()
    assert main(["diagnose", str(tmp_path / "ft")]) == 1  # a fine-tuning run: one line (was a KeyError traceback)
    assert "is not a pretraining run" in capsys.readouterr().err


def test_bad_numbers_in_settings_are_refused_in_one_line_before_any_output(data, tmp_path, capsys):
    for flags, message in ((["--save-every", "0"], "save-every 0: must be at least 1"),
                           (["--batch-size", "1"], "batch-size 1: must be at least 2"),
                           (["--keep-last", "0"], "keep-last 0: must be at least 1")):
        assert _pretrain(data, tmp_path / "never", "--steps", "1", *flags) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not (tmp_path / "never").exists()


def test_a_killed_writers_partial_checkpoint_is_removed_and_periodic_ones_are_bounded(data, tmp_path):
    out = tmp_path / "run"
    assert _pretrain(data, out, "--steps", "2") == 0
    orphan = out / "checkpoints" / ".last.999999999-abc123.partial.pt"  # what atomic_save leaves when killed mid-write
    orphan.write_bytes(b"torn")
    mask = os.umask(0o022)
    try:
        assert _pretrain(data, out, "--steps", "7", "--save-every", "2", "--keep-last", "2", "--resume") == 0
    finally:
        os.umask(mask)
    assert not orphan.exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt", "step_0000004.pt",
                                                                       "step_0000006.pt"]
    assert (out / "checkpoints" / "last.pt").stat().st_mode & 0o777 == 0o644  # the user's umask, not 0600


def test_torn_weights_end_in_one_line(tmp_path, capsys):
    torn = tmp_path / "model.safetensors"
    torn.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": ")  # a header cut short
    assert main(["export", str(torn), str(tmp_path / "hub"), "--arch", "mpinet_resnet18", "--tag", "potsdam"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mpinet export: error: {torn}: not a readable safetensors file") and "Traceback" not in err
    assert not (tmp_path / "hub").exists()


def test_predict_into_a_read_only_folder_ends_in_one_line_before_loading(run, read_only_folder, tmp_path, capsys):
    src = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src)
    assert main(["predict", str(run), str(src), str(read_only_folder / "out.png")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert not any(read_only_folder.iterdir())


def test_pretrain_into_a_read_only_folder_ends_in_one_line(data, read_only_folder, capsys):
    assert _pretrain(data, read_only_folder / "run", "--steps", "1") == 2
    err = capsys.readouterr().err
    assert f"could not create the run folder {read_only_folder / 'run'}" in err and "Traceback" not in err
    assert not any(read_only_folder.iterdir())


def test_unusable_yaml_ends_in_one_line_with_exit_2(data, tmp_path, capsys):
    evil = tmp_path / "evil.yaml"
    evil.write_text("lr: !!python/object/apply:os.system ['echo pwned']\n")
    typo = tmp_path / "typo.yaml"
    typo.write_text("batchsize: 8\n")
    for config, message in ((evil, "not a plain YAML settings file at line 1"), (typo, "did you mean")):
        assert _pretrain(data, tmp_path / "never", "--config", str(config)) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()


def test_a_finetune_stopped_by_a_non_finite_loss_closes_its_log(data, tmp_path, capsys, monkeypatch):
    import mpinet_hub.training.engine as engine  # every run kind's log is opened by the engine

    opened = []

    class RecordingRunLog(engine.RunLog):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(engine, "RunLog", RecordingRunLog)
    code = main(["finetune", "--dataset", "potsdam", "--data-root", str(data), "--patch", "64", "--crop", "64",
                 "--batch-size", "2", "--steps", "6", "--lr", "1e12", "--device", "cpu",
                 "--out", str(tmp_path / "ft")])
    assert code == 1 and "loss term 'ce'" in capsys.readouterr().err
    assert len(opened) == 1 and opened[0].jsonl is None and opened[0].tensorboard is None  # closed


def test_a_full_disk_during_a_checkpoint_ends_in_one_line_that_says_so_and_keeps_the_last_one(
        data, run, tmp_path, capsys, monkeypatch):
    import mpinet_hub.checkpoint as checkpoint

    work = tmp_path / "run"
    os.system(f"cp -r {run} {work}")
    before = (work / "checkpoints" / "last.pt").read_bytes()

    def save_until_the_disk_is_full(obj, f):  # what torch.save raises when a write hits ENOSPC
        f.write(b"PK\x03\x04 part of a zip")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(checkpoint.torch, "save", save_until_the_disk_is_full)
    assert _pretrain(data, work, "--steps", "4", "--resume") == 2  # the machine, not the settings
    err = capsys.readouterr().err
    assert "last.pt" in err and "free on its disk" in err and "Traceback" not in err
    assert (work / "checkpoints" / "last.pt").read_bytes() == before
    assert sorted(p.name for p in (work / "checkpoints").iterdir() if p.name.startswith("."))  == []


@pytest.fixture
def small_tiles(tmp_path):
    """A labeled folder of two 128 px tiles (train, val): 4 patches of 64 px in train."""
    from PIL import Image

    root = tmp_path / "small"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir()
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(root / split / "images" / "t.png")
        Image.fromarray(rng.integers(0, 2, (128, 128), dtype=np.uint8)).save(root / split / "masks" / "t.png")
    (root / "classes.yaml").write_text("names: [background, roof]\n")
    return root


def test_defaults_that_do_not_fit_small_tiles_name_the_flag_and_a_value_that_fits(small_tiles, tmp_path, capsys):
    """Before: "raster of 128x128 px is smaller than patch_size=256", naming neither the file nor the flag."""
    common = ["--dataset", "folder", "--data-root", str(small_tiles), "--device", "cpu"]
    assert main(["finetune", *common, "--out", str(tmp_path / "ft")]) != 0
    err = capsys.readouterr().err
    assert "t.png: 128x128 px is smaller than the patch size 256" in err and "pass --patch 128 or less" in err
    assert main(["finetune", *common, "--patch", "128", "--out", str(tmp_path / "ft")]) == 2
    assert "--crop 256 is larger than --patch 128" in capsys.readouterr().err
    assert main(["probe", "random", *common, "--out", str(tmp_path / "probe")]) == 2  # a setting: exit 2 (was 1)
    err = capsys.readouterr().err
    assert "pass --patch 128 or less" in err and "where the command has --crop" in err
    assert not (tmp_path / "ft").exists() and not (tmp_path / "probe").exists()


def test_the_label_fraction_printed_and_carded_is_the_one_used(small_tiles, tmp_path, capsys):
    """Before: 1 of 4 patches at the default 0.01 was printed as "(1%)" and the card said 1% labels."""
    out = tmp_path / "ft"
    assert main(["finetune", "--dataset", "folder", "--data-root", str(small_tiles), "--device", "cpu",
                 "--patch", "64", "--crop", "64", "--batch-size", "2", "--steps", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 of 4 labeled patches (25%" in printed and "--label-fraction 0.01" in printed
    card = (out / "model" / "README.md").read_text()
    assert "25% of the labeled patches (1 of 4" in card and "1% of the labeled" not in card


def test_a_step_that_does_not_fit_the_memory_is_refused_before_it_starts_naming_a_batch_that_fits(
        data, tmp_path, monkeypatch, capsys):
    """Before: the default pretraining on a small CPU died in "DefaultCPUAllocator: can't allocate memory"."""
    import mpinet_hub.pretrain.plan as plan

    monkeypatch.setattr(plan, "available_memory", lambda device: 2**30)  # a machine with 1 GiB free
    out = tmp_path / "run"
    assert _pretrain(data, out, "--batch-size", "512", "--steps", "1") == 2
    err = capsys.readouterr().err
    assert "GiB free: lower --batch-size to" in err and "Traceback" not in err
    fits = int(err.split("lower --batch-size to ")[1].split()[0])
    assert 0 < fits < 512 and fits % 8 == 0
    assert not out.exists() or not any(out.iterdir())
    assert _pretrain(data, out, "--batch-size", str(min(fits, 8)), "--steps", "1") == 0


def test_export_on_a_real_full_disk_fails_in_one_line_and_a_good_export_is_group_readable(run, full_disk, tmp_path,
                                                                                         capsys):
    """Before: exports were written 0700 (folder, mkdtemp) and 0600 (weights, safetensors)."""
    last = run / "checkpoints" / "last.pt"
    out = full_disk(0) / "hub"
    assert main(["export", str(last), str(out), "--arch", "mpinet_resnet18", "--tag", "potsdam"]) == 2
    err = capsys.readouterr().err
    assert f"could not write {out}" in err and "free on its disk" in err and "Traceback" not in err
    assert sorted(p.name for p in out.parent.iterdir()) == [".filler"]
    old = os.umask(0o002)
    try:
        assert main(["export", str(last), str(tmp_path / "shared"), "--arch", "mpinet_resnet18",
                     "--tag", "potsdam"]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o775
    assert (tmp_path / "shared" / "model.safetensors").stat().st_mode & 0o777 == 0o664


def _start_pretrain(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import sys; from mpinet_hub.cli import main; sys.exit(main())",
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 300) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not path.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.is_file(), f"{path} never appeared"


def test_overwrite_refuses_a_folder_a_live_run_is_writing_and_deletes_nothing(data, tmp_path, capsys):
    """A second process with --overwrite once deleted a live run's checkpoints before taking the lock, and the live
    run died (`could not write .../step_0000004.pt`). The lock is now taken before anything is deleted."""
    out = tmp_path / "run"
    live = _start_pretrain(_pretrain_args(data, out, "--save-every", "1", "--steps", "40"))
    try:
        _wait_for(out / "checkpoints" / "step_0000001.pt", live)
        assert _pretrain(data, out, "--steps", "3", "--overwrite") == 1
        err = capsys.readouterr().err
        assert f"in use by process {live.pid}" in err, err
        assert (out / "checkpoints" / "last.pt").is_file() and (out / "config.yaml").is_file()
    finally:
        live.terminate() if live.poll() is None else None
        live.wait()
    assert "could not write" not in live.stderr.read()


def test_a_probe_killed_mid_run_reruns_to_the_end_with_overwrite(tmp_path, capsys):
    """A SIGKILL mid-probe once left a folder that no rerun could finish: the log was trimmed to no rows and the
    empty rewrite was refused as a full disk. A probe claims its folder like fine-tuning: a plain rerun is refused,
    naming --resume and --overwrite, and --overwrite runs to the end."""
    import signal

    root = tmp_path / "data"
    synth_dataset("potsdam", root, tiles=3, size=128, seed=2)
    out = tmp_path / "probe"
    def args(steps: int) -> list[str]:
        return ["probe", "random", "--dataset", "potsdam", "--data-root", str(root), "--out", str(out),
                "--label-fraction", "1", "--steps", str(steps), "--batch-size", "2", "--patch", "64", "--window",
                "128", "--device", "cpu"]

    proc = _start_pretrain(args(4000))
    _wait_for(out / "log.jsonl", proc)
    import time

    deadline = time.monotonic() + 120
    while (out / "log.jsonl").stat().st_size < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = sorted(p.name for p in out.iterdir() if p.name != ".lock")  # the killed holder's lock is taken over
    assert main(args(5)) == 1
    assert "--resume to continue it, --overwrite to start over" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before
    assert main([*args(5), "--overwrite"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5] and (out / "metrics.json").is_file()


def test_a_torn_last_checkpoint_names_the_way_out_that_the_folder_has(data, run, tmp_path, capsys):
    """It advised 'the previous checkpoint' also where the folder (a study cell's) kept none."""
    work = tmp_path / "run"
    os.system(f"cp -r {run} {work}")
    last = work / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    assert _pretrain(data, work, "--steps", "4", "--resume") != 0
    assert "step_0000002.pt) may be whole: copy the newest over last.pt" in capsys.readouterr().err
    for periodic in (work / "checkpoints").glob("step_*.pt"):
        periodic.unlink()
    assert _pretrain(data, work, "--steps", "4", "--resume") != 0
    assert "no other checkpoint is in" in capsys.readouterr().err


def test_a_full_disk_under_the_run_log_fails_in_one_line_naming_the_file(full_disk, capfd):
    """pretrain's log and TensorBoard files on a full disk: an unnamed `[Errno 28] No space left on device`, and
    at 8-12 KB free a TensorBoard thread traceback besides."""
    from mpinet_hub.atomic import WriteFailed
    from mpinet_hub.training import RunLog

    mount = full_disk(6000)
    with pytest.raises(WriteFailed) as caught:
        with RunLog(mount / "run", step=0) as log:
            for step in range(1, 20000):
                log.write({"step": step, "loss": 1.0 / step, "lr": 0.03, "note": "x" * 64})
    message = str(caught.value)
    assert message.startswith(f"could not write {mount / 'run'}") and "free on its disk" in message
    assert "Traceback" not in capfd.readouterr().err


def test_the_suite_on_a_temp_disk_too_small_for_it_stops_at_once_saying_where_and_how_much(full_disk):
    """CI on a shared disk with a few hundred MB free: four tests failed after 247 s, each with an
    `[Errno 28] No space left on device` deep in pytest's or ruff's own temp handling. The suite's temp files peak at
    about 1.7 GB; with less than 2 GB free it now stops before the first test, naming the folder and the fix."""
    mount = full_disk(500_000)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_style.py::test_ruff_clean"],
        cwd=REPO_ROOT, env={**os.environ, "TMPDIR": str(mount)}, capture_output=True, text=True)
    said = done.stdout + done.stderr
    assert done.returncode != 0, said[-2000:]
    assert f"the tests write up to about 1.7 GB under {mount}" in said and "TMPDIR" in said, said[-2000:]
    assert "passed" not in said and "Traceback" not in said
    left = [p for p in mount.rglob("*") if p.is_file() and p.parent.name != ".filler"]
    assert not left, f"the session left files in the temp folder: {left[:5]}"
