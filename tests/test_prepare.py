"""`mpinet data prepare`: PNG/JPEG data sets copied with tiled GeoTIFF images, read exactly as before."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from mpinet_hub.cli import main
from mpinet_hub.data import DATASETS, DataError, UnlabeledImages, pretraining_images
from mpinet_hub.data.prepare import prepare_dataset, verify_prepared
from mpinet_hub.data.synth import synth_dataset


def _items(ds) -> list[dict]:
    return [ds[i] for i in range(len(ds))]


@pytest.mark.parametrize("name", ["loveda", "uavid"])
def test_prepared_copy_reads_the_same_scenes_pixels_and_labels_by_window(tmp_path, name):
    root, out = tmp_path / "release", tmp_path / "prepared"
    synth_dataset(name, root, tiles=6, size=512, seed=1)
    (root / "README.txt").write_text("notes that travel with the data")
    report = prepare_dataset(root, out, show_progress=False)
    assert report.converted == len(list(root.rglob("*.png"))) and report.copied == 1
    assert not list(out.rglob("*.png")) and (out / "README.txt").read_text() == "notes that travel with the data"
    for tif in out.rglob("*.tif"):
        with rasterio.open(tif) as src:
            assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)  # partial reads: blocks, not rows
    for split in ("train", "val"):
        before, after = (DATASETS[name](r, split=split, patch_size=256) for r in (root, out))
        assert [s.id for s in before.scenes] == [s.id for s in after.scenes]
        assert all(s.images[0][0].suffix == ".tif" and s.label.suffix == ".tif" for s in after.scenes)
        for a, b in zip(_items(before), _items(after)):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert "train" in verify_prepared(name, root, out)


def test_prepare_resumes_after_a_stop_and_leaves_no_partial_file(tmp_path):
    root, out = tmp_path / "release", tmp_path / "prepared"
    synth_dataset("loveda", root, tiles=6, size=256, seed=2)
    first = prepare_dataset(root, out, show_progress=False)
    victim = sorted(out.rglob("*.tif"))[0]
    victim.unlink()  # as if stopped while writing it: a partial under a temporary name
    (victim.parent / f".{victim.name}.partial").write_bytes(b"half a file")
    again = prepare_dataset(root, out, show_progress=False)
    assert (again.converted, again.skipped) == (1, first.converted + first.copied - 1)
    assert victim.is_file() and not list(out.rglob("*.partial"))
    image = UnlabeledImages(pretraining_images("loveda", out), patch_size=64, seed=0)[0]["image"]
    assert image.shape == (3, 64, 64) and torch.isfinite(image).all()


def test_prepare_refuses_an_unrelated_folder_or_one_inside_the_source_and_writes_nothing(tmp_path):
    root = tmp_path / "release"
    synth_dataset("loveda", root, tiles=6, size=256, seed=0)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("a user's file")
    with pytest.raises(DataError, match="not empty and not a prepared copy"):
        prepare_dataset(root, taken, show_progress=False)
    assert sorted(p.name for p in taken.iterdir()) == ["mine.txt"]
    with pytest.raises(DataError, match="outside the source"):
        prepare_dataset(root, root / "prepared", show_progress=False)
    assert not (root / "prepared").exists()


def test_prepare_keeps_a_folder_data_sets_jpeg_pixels_and_classes(tmp_path):
    from PIL import Image

    root, out = tmp_path / "mine", tmp_path / "prepared"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir()
    (root / "classes.yaml").write_text("names: [background, roof]\n")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 80, 3), dtype=np.uint8)).save(root / "train" / "images" / "a.jpg")
    Image.fromarray(rng.integers(0, 2, (96, 80), dtype=np.uint8)).save(root / "train" / "masks" / "a.png")
    prepare_dataset(root, out, show_progress=False)
    before, after = (DATASETS["folder"](r, split="train") for r in (root, out))
    assert torch.equal(before[0]["image"], after[0]["image"]) and torch.equal(before[0]["mask"], after[0]["mask"])
    assert (out / "classes.yaml").is_file() and after.scenes[0].images[0][0].suffix == ".tif"


def test_cli_prepare_prints_what_it_did_and_potsdam_is_not_offered(tmp_path, capsys):
    root = tmp_path / "release"
    synth_dataset("uavid", root, tiles=3, size=256, seed=0)
    assert main(["data", "prepare", "uavid", str(root), str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "converted to tiled GeoTIFF" in printed and "opens as uavid" in printed
    with pytest.raises(SystemExit):
        main(["data", "prepare", "potsdam", str(root), str(tmp_path / "other")])


def test_prepare_on_a_real_full_disk_fails_in_one_line_and_the_rerun_on_the_freed_disk_completes(tmp_path, full_disk,
                                                                                                 capsys):
    """Before: GDAL's full-disk errors were printed only, a 0-byte marker or image was trusted, and every rerun
    failed with `Expecting value: line 1 column 1 (char 0)`, naming nothing."""
    root = tmp_path / "release"
    synth_dataset("uavid", root, tiles=3, size=256, seed=0)
    disk = full_disk(40_000)
    out = disk / "prepared"
    assert main(["data", "prepare", "uavid", str(root), str(out)]) == 2
    err = capsys.readouterr().err
    assert "could not write" in err and "free on its disk" in err and "Traceback" not in err
    assert not [p for p in out.rglob("*") if p.is_file() and (p.stat().st_size == 0 or ".partial" in p.name)]
    for filler in (disk / ".filler").iterdir():
        filler.unlink()
    assert main(["data", "prepare", "uavid", str(root), str(out)]) == 0
    assert "opens as uavid" in capsys.readouterr().out


def test_an_unreadable_prepare_marker_is_taken_as_a_stopped_prepare_and_said_so(tmp_path):
    from mpinet_hub.data.prepare import MARKER

    root, out = tmp_path / "release", tmp_path / "prepared"
    synth_dataset("loveda", root, tiles=6, size=256, seed=2)
    prepare_dataset(root, out, show_progress=False)
    (out / MARKER).write_bytes(b"")  # what a full disk left before markers were written atomically
    with pytest.warns(UserWarning, match=f"{MARKER}.*unreadable"):
        report = prepare_dataset(root, out, show_progress=False)
    assert report.converted == 0 and report.skipped > 0
    assert '"source"' in (out / MARKER).read_text()
