"""Fine-tuning, sliding-window inference, evaluation, prediction, comparison and the quickstart, on synthetic
Potsdam-format data with resnet18 and a handful of steps."""

import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import rasterio
import segmentation_models_pytorch as smp
import torch
import yaml
from PIL import Image
from rasterio.transform import from_origin

from mpinet_hub.checkpoint import load_checkpoint
from mpinet_hub.cli import main
from mpinet_hub.data import Potsdam
from mpinet_hub.data.labeled_subset import labeled_subset
from mpinet_hub.data.synth import synth_dataset
from mpinet_hub.downstream.evaluate import evaluate
from mpinet_hub.downstream.finetune import FinetuneConfig, Finetuner
from mpinet_hub.downstream.inference import SlidingWindow
from mpinet_hub.downstream.model import load_encoder, load_segmentation_model
from mpinet_hub.hub import export_weights, install_to_hf_cache
from mpinet_hub.metrics import SegmentationMetrics

from .conftest import REPO_ROOT


@pytest.fixture(scope="module")
def potsdam_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream-data")
    synth_dataset("potsdam", root, tiles=6, size=128, seed=11)  # 4 train tiles, 2 test tiles
    return root


def _cfg(root, out, **kw) -> FinetuneConfig:
    values = dict(dataset="potsdam", data_root=str(root), encoder="random", out=str(out), patch=64, crop=64,
                  batch_size=2, steps=3, label_fraction=0.5, device="cpu", save_every=100)
    values.update(kw)
    cfg = FinetuneConfig(**values)
    cfg.validate()
    return cfg


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, potsdam_root):
    run = tmp_path_factory.mktemp("ft") / "run"
    tuner = Finetuner(_cfg(potsdam_root, run, steps=4))
    model_dir = tuner.run()
    return tuner, model_dir


def test_labeled_subset_is_seeded_nested_and_shared_across_encoders(tmp_path, potsdam_root, exported_potsdam):
    ds = Potsdam(potsdam_root, "train", patch_size=32)
    small, large = labeled_subset(ds, 0.1, seed=3), labeled_subset(ds, 0.5, seed=3)
    assert small == labeled_subset(ds, 0.1, seed=3)
    assert len(small) == round(0.1 * len(ds)) and len(large) == round(0.5 * len(ds))
    assert set(small) <= set(large)  # 10% lies inside 50%
    assert labeled_subset(ds, 0.5, seed=4) != large
    files = []
    for name, encoder in (("random", "random"), ("pretrained", str(exported_potsdam))):
        tuner = Finetuner(_cfg(potsdam_root, tmp_path / name, encoder=encoder, label_fraction=0.25))
        files.append(json.loads(tuner.write_subset().read_text()))
    assert files[0]["patch_ids"] == files[1]["patch_ids"]
    assert len(files[0]["patch_ids"]) == round(0.25 * files[0]["total_patches"])


def test_finetune_reloads_offline_with_smp(finetuned):
    tuner, model_dir = finetuned
    config = json.loads((model_dir / "config.json").read_text())
    assert config["encoder_weights"] is None and config["classes"] == 6
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = tuner.model.eval()(x)
    reloaded = smp.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x), expected)
    # A fresh process with no network and without mpinet_hub: SMP alone reads the folder.
    code = (f"import sys, segmentation_models_pytorch as smp; m = smp.from_pretrained({str(model_dir)!r}); "
            "assert 'mpinet_hub' not in sys.modules; print(type(m).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "DeepLabV3Plus"
    _, info = load_segmentation_model(model_dir.parent)  # the run folder works too
    assert info.classes == list(Potsdam.classes) and info.bands == "RGB"
    assert info.provenance["label_fraction"] == 0.5


def test_finetune_resume_reproduces_the_uninterrupted_run(tmp_path, potsdam_root):
    straight = Finetuner(_cfg(potsdam_root, tmp_path / "a", steps=4))
    straight.run()
    first = Finetuner(_cfg(potsdam_root, tmp_path / "b", steps=2))
    first.run()
    resumed = Finetuner(_cfg(potsdam_root, tmp_path / "b", steps=4), resume=True)
    assert resumed.step == 2
    resumed.run()
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k
    with pytest.raises(ValueError, match="other settings"):
        Finetuner(_cfg(potsdam_root, tmp_path / "b", steps=4, lr=1e-2), resume=True)
    # every setting that changes what is computed is the run's identity (weight decay and the normalisation were
    # not, and resumed silently); where it runs and writes is not
    for changed in ({"weight_decay": 0.1}, {"mean": [0.1, 0.2, 0.3]}, {"precision": "bf16"}):
        with pytest.raises(ValueError, match=f"other settings \\({next(iter(changed))} "):
            Finetuner(_cfg(potsdam_root, tmp_path / "b", steps=4, **changed), resume=True)
    assert Finetuner(_cfg(potsdam_root, tmp_path / "b", steps=6, save_every=3, log_every=2), resume=True).step == 4


def test_sliding_window_equals_whole_image_when_the_window_covers_it(finetuned):
    tuner, _ = finetuned
    model = tuner.model.eval()
    image = torch.rand(3, 64, 96)
    sw = SlidingWindow(model, tuner.info.mean, tuner.info.std, window=128, overlap=32, batch_size=2)
    mean, std = torch.tensor(tuner.info.mean).view(1, 3, 1, 1), torch.tensor(tuner.info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        whole = model((image[None] - mean) / std)[0]
    assert torch.allclose(sw.predict_image(image), whole, atol=1e-5)
    # A pixel-wise model gives the whole-image answer for any window, overlap and batch.
    pixelwise = torch.nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        ref = pixelwise((image[None] - mean) / std)[0]
    for window, overlap, batch in ((32, 8, 1), (48, 16, 3), (40, 0, 4)):
        sw = SlidingWindow(pixelwise, tuner.info.mean, tuner.info.std, window=window, overlap=overlap, batch_size=batch,
                           pad_multiple=1)
        assert torch.allclose(sw.predict_image(image), ref, atol=1e-5)


class _WindowIndex(torch.nn.Module):
    """Logits equal to the running index of the window (one class): shows which windows covered a pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        out = torch.arange(self.calls, self.calls + x.shape[0], dtype=torch.float32).view(-1, 1, 1, 1)
        self.calls += x.shape[0]
        return out.expand(-1, 1, *x.shape[-2:]).clone()


def test_sliding_window_blends_logits_at_seams_and_streams_rows_once():
    image = torch.zeros(3, 64, 96)
    sw = SlidingWindow(_WindowIndex(), [0, 0, 0], [1, 1, 1], window=64, overlap=32, batch_size=1, pad_multiple=1)
    out = sw.predict_image(image)[0]  # windows at columns 0 (index 0) and 32 (index 1)
    assert torch.all(out[:, :32] == 0) and torch.all(out[:, 64:] == 1)
    assert torch.all(out[:, 32:64] == 0.5)  # averaged, not overwritten
    sw = SlidingWindow(_WindowIndex(), [0, 0, 0], [1, 1, 1], window=32, overlap=8, batch_size=5, pad_multiple=1)
    image = torch.zeros(3, 100, 70)
    strips = list(sw.strips(lambda w: image[:, w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width],
                            100, 70))
    tops = [t for t, _ in strips]
    assert tops[0] == 0 and all(t + s.shape[1] == n for (t, s), n in zip(strips, tops[1:] + [100]))
    assert max(s.shape[1] for _, s in strips) <= 32  # bounded: never more than a window of rows at once


def test_evaluate_metrics_equal_the_metrics_module(finetuned, potsdam_root, tmp_path):
    tuner, model_dir = finetuned
    result = evaluate(model_dir, "potsdam", potsdam_root, split="test", out=tmp_path / "eval", window=64,
                      overlap=16, batch_size=3, previews=1, device="cpu")
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["protocol"] == "potsdam-mmseg" and saved["split"] == "test"
    assert saved["checkpoint"] == str(model_dir) and saved["label_fraction"] == 0.5
    ds = Potsdam(potsdam_root, "test", labels="noBoundary")
    reference = SegmentationMetrics.from_protocol("potsdam-mmseg", class_names=list(ds.classes))
    model, info = load_segmentation_model(model_dir)
    sw = SlidingWindow(model, info.mean, info.std, window=64, overlap=16, batch_size=1)
    ignored = 0
    for i in range(len(ds)):
        item = ds[i]
        reference.update(sw.predict_image(item["image"]).argmax(0)[None], item["mask"][None])
        ignored += int((item["mask"] == 255).sum())
    expected = reference.compute()
    assert saved["confusion_matrix"] == expected["confusion_matrix"]
    assert saved["ignored_pixels"] == ignored > 0
    for key in ("mIoU", "OA", "mF1"):
        assert math.isclose(saved[key], expected[key]) and result[key] == saved[key]
    assert (tmp_path / "eval" / "confusion.png").is_file()
    assert len(list((tmp_path / "eval" / "previews").glob("*.png"))) == 1


def test_evaluate_refuses_a_class_count_mismatch(finetuned, tmp_path):
    _, model_dir = finetuned
    loveda = tmp_path / "loveda"
    synth_dataset("loveda", loveda, tiles=6, size=64, seed=1)
    with pytest.raises(ValueError, match="predicts 6 classes .* loveda has 7"):
        evaluate(model_dir, "loveda", loveda, split="val", out=tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def _geotiff(path, array, **extra):
    profile = dict(driver="GTiff", height=array.shape[1], width=array.shape[2], count=array.shape[0],
                   dtype="uint8", crs="EPSG:32633", transform=from_origin(366000.0, 5808000.0, 0.05, 0.05))
    profile.update(extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def test_predict_keeps_crs_transform_and_shape(finetuned, tmp_path, capfd):
    tuner, model_dir = finetuned
    array = np.random.default_rng(0).integers(0, 256, (3, 90, 130), dtype=np.uint8)
    src, out = tmp_path / "scene.tif", tmp_path / "out" / "scene_classes.tif"
    _geotiff(src, array)
    assert main(["predict", str(model_dir), str(src), str(out), "--window", "64", "--overlap", "16",
                 "--preview"]) == 0
    assert "ERROR" not in capfd.readouterr().err  # GDAL writes its complaints to the C stderr
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.shape, b.count, b.dtypes[0]) == (a.crs, a.transform, a.shape, 1, "uint8")
        classes = b.read(1)
        assert b.colormap(1)[1] == (0, 0, 255, 255)  # building blue, for GIS viewers
        assert b.descriptions[0].startswith("classes: 0=impervious_surface, 1=building")  # what QGIS shows
        names = json.loads(b.tags()["CLASS_NAMES"])
    model, info = load_segmentation_model(model_dir)
    sw = SlidingWindow(model, info.mean, info.std, window=64, overlap=16)
    expected = sw.predict_image(torch.from_numpy(array.astype(np.float32) / 255)).argmax(0).numpy()
    assert np.array_equal(classes, expected) and names == list(info.classes)
    assert (tmp_path / "out" / "scene_classes.preview.png").is_file()
    before = out.read_bytes()
    assert main(["predict", str(model_dir), str(src), str(out)]) == 1  # exists: refused, untouched
    assert out.read_bytes() == before


def test_predict_refuses_a_bad_output_before_loading_the_model(finetuned, tmp_path, monkeypatch):
    from mpinet_hub.downstream import model as model_module

    tuner, model_dir = finetuned
    src = tmp_path / "scene.tif"
    _geotiff(src, np.random.default_rng(1).integers(0, 256, (3, 40, 40), dtype=np.uint8))
    (tmp_path / "taken.tif").write_bytes(b"a user's file")
    loads = []
    monkeypatch.setattr(model_module, "load_segmentation_model", lambda *a, **k: loads.append(a) or 1 / 0)
    assert main(["predict", str(model_dir), str(src), str(tmp_path / "taken.tif")]) == 1
    assert main(["predict", str(model_dir), str(src), str(tmp_path / "scene.jpg")]) == 1
    assert loads == [] and (tmp_path / "taken.tif").read_bytes() == b"a user's file"


def test_predict_bad_inputs_leave_nothing_behind(finetuned, tmp_path, capsys):
    _, model_dir = finetuned
    four = tmp_path / "four.tif"
    _geotiff(four, np.zeros((4, 40, 40), np.uint8))
    out = tmp_path / "out"
    assert main(["predict", str(model_dir), str(four), str(out / "four_classes.tif")]) == 1
    assert "has 4 band(s) but the model takes 3" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert main(["predict", str(model_dir), str(four), str(out / "four_classes.tif"), "--bands", "1,2,3",
                 "--window", "64"]) == 0  # the band choice is the fix
    plain = tmp_path / "plain.png"
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(plain)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["predict", str(model_dir), str(plain), "--window", "64"]) == 0
    assert any("no georeferencing" in str(w.message) for w in caught)
    with Image.open(_run_of(model_dir) / "predictions" / "plain_classes.png") as written:
        assert written.mode == "P" and written.size == (50, 40)


def test_export_card_carries_evaluate_metrics(finetuned, potsdam_root, tmp_path, backbone_state):
    _, model_dir = finetuned
    result = evaluate(model_dir, "potsdam", potsdam_root, out=tmp_path / "eval", window=64, overlap=0,
                      previews=0, device="cpu")
    src = tmp_path / "backbone.pt"
    torch.save(backbone_state, src)
    assert main(["export", str(src), str(tmp_path / "hub"), "--arch", "mpinet_resnet18", "--tag", "potsdam",
                 "--metrics", str(tmp_path / "eval" / "metrics.json")]) == 0
    card = (tmp_path / "hub" / "README.md").read_text()
    assert f"| potsdam | potsdam-mmseg | test | 50% | {result['mIoU']:.2f} | {result['OA']:.2f}" in card
    from huggingface_hub import ModelCard

    data = ModelCard.load(tmp_path / "hub" / "README.md").data  # what the Hub reads
    assert data.license == "other" and data.license_name == "isprs-benchmark-research-use"
    assert data.library_name == "timm" and data.model_name == "mpinet_resnet18.potsdam"
    miou = next(e for e in data.eval_results if e.metric_type == "miou")
    assert (miou.metric_value, miou.dataset_split, miou.task_type) == (round(result["mIoU"], 2), "test",
                                                                       "semantic-segmentation")
    assert data.to_dict()["mpinet_evaluated"] is True


def test_quickstart_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--size", "128", "--pretrain-steps", "3",
                 "--finetune-steps", "3"]) == 0
    printed = capsys.readouterr().out
    assert "identical to the checkpoint" in printed and "mIoU" in printed
    random_metrics = json.loads((out / "finetune-random" / "eval-test" / "metrics.json").read_text())
    line = next(x for x in printed.splitlines() if x.startswith("  random init"))
    assert random_metrics["encoder"] == "random" and f"mIoU {random_metrics['mIoU']:6.2f}" in line
    metrics = json.loads((out / "finetune" / "eval-test" / "metrics.json").read_text())
    assert math.isfinite(metrics["OA"]) and metrics["encoder"] == str(out / "hub")
    assert (out / "hub" / "model.safetensors").is_file()
    assert (out / "finetune" / "model" / "config.json").is_file()


def test_cli_finetune_and_evaluate(tmp_path, potsdam_root, capsys):
    common = ["--dataset", "potsdam", "--data-root", str(potsdam_root), "--patch", "64", "--crop", "64",
              "--batch-size", "2", "--steps", "1", "--device", "cpu"]
    run = tmp_path / "ft"
    assert main(["finetune", *common, "--label-fraction", "0.1", "--epochs", "2", "--out", str(run)]) == 0
    subset = json.loads((run / "labeled_patches.json").read_text())
    assert subset["label_fraction"] == 0.1 and len(subset["patch_ids"]) == 2  # 10% of 16 patches
    assert len((run / "log.jsonl").read_text().splitlines()) == 2  # 2 epochs of one batch of 2
    assert main(["evaluate", str(run), "--dataset", "potsdam", "--data-root", str(potsdam_root), "--window",
                 "64"]) == 0
    assert "mIoU" in capsys.readouterr().out and (run / "eval-test" / "metrics.json").is_file()
    assert main(["evaluate", str(run), "--dataset", "potsdam", "--data-root", str(potsdam_root),
                 "--protocol", "loveda"]) == 1
    assert "not one of potsdam's" in capsys.readouterr().err


class _FailsOnSecondWindow(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("out of memory (simulated)")
        return torch.zeros(x.shape[0], 6, *x.shape[-2:])


def test_predict_failure_midway_and_folders(finetuned, tmp_path):
    from mpinet_hub.downstream.predict import predict_raster

    _, model_dir = finetuned
    _, info = load_segmentation_model(model_dir)
    src = tmp_path / "in" / "a.tif"
    src.parent.mkdir()
    _geotiff(src, np.zeros((3, 80, 80), np.uint8))
    _geotiff(tmp_path / "in" / "b.tif", np.full((3, 50, 70), 200, np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    sw = SlidingWindow(_FailsOnSecondWindow(), info.mean, info.std, window=32, overlap=0)
    with pytest.raises(RuntimeError, match="simulated"):
        predict_raster(sw, info, src, out / "a_classes.tif")
    assert list(out.iterdir()) == []  # no output, no temporary file
    assert main(["predict", str(model_dir), str(tmp_path / "in"), str(out), "--window", "64"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_classes.tif", "b_classes.tif"]
    with rasterio.open(out / "b_classes.tif") as b:
        assert b.shape == (50, 70)


def _run_of(model_dir):
    return model_dir.parent if model_dir.name == "model" else model_dir


def test_predict_without_output_writes_beside_the_run_never_into_the_data_it_reads(finetuned, tmp_path, capsys):
    """Before: `predict RUN root/test/images/tile.png` wrote tile_classes.png into images/, and the data set then
    had a scene without a label (`data check` failed, evaluate too)."""
    from PIL import Image

    _, model_dir = finetuned
    root = tmp_path / "mine"
    for split in ("train", "test"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir()
        Image.fromarray(np.full((48, 48, 3), 90, np.uint8)).save(root / split / "images" / "tile0.png")
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(root / split / "masks" / "tile0.png")
    (root / "classes.yaml").write_text("names: [a, b, c, d, e, f]\n")
    before = sorted(str(p) for p in root.rglob("*"))
    for src in (root / "test" / "images" / "tile0.png", root / "test" / "images"):
        assert main(["predict", str(model_dir), str(src), "--window", "64"]) == 0
    printed = capsys.readouterr().out
    predictions = _run_of(model_dir) / "predictions"
    assert f"-> {predictions / 'tile0_classes.png'}" in printed
    assert f"-> {predictions / 'images' / 'tile0_classes.png'}" in printed
    assert sorted(str(p) for p in root.rglob("*")) == before
    assert main(["data", "check", "folder", str(root)]) == 0


def test_predict_keeps_nodata_borders_empty(finetuned, tmp_path, capfd):
    _, model_dir = finetuned
    array = np.random.default_rng(1).integers(1, 256, (3, 60, 300), dtype=np.uint8)  # a shape GDAL complained on
    array[:, :, :20] = 0  # an empty mosaic border
    array[0, 30, 30] = 0  # one zero band alone is data
    _geotiff(tmp_path / "m.tif", array, nodata=0)
    out = tmp_path / "m_classes.tif"
    assert main(["predict", str(model_dir), str(tmp_path / "m.tif"), str(out), "--window", "64"]) == 0
    assert "ERROR" not in capfd.readouterr().err  # GDAL's TIFFSetField complaint (C stderr) on a normal run
    with rasterio.open(out) as out:
        classes = out.read(1)
        assert out.nodata == 255 and out.colormap(1)[1] == (0, 0, 255, 255)
    assert np.all(classes[:, :20] == 255) and np.all(classes[:, 20:] < 6)


def test_shipped_finetune_configs_parse(tmp_path):
    paths = sorted((REPO_ROOT / "configs").glob("finetune_*.yaml"))
    assert {p.stem.rsplit("_", 1)[-1] for p in paths} == {"potsdam", "loveda", "uavid"}
    for path in paths:
        cfg = FinetuneConfig.from_sources(path, data_root=str(tmp_path), label_fraction=0.05)
        assert cfg.decoder == "deeplabv3plus" and cfg.lr == 1e-4 and cfg.label_fraction == 0.05
    with pytest.raises(ValueError, match="unknown setting"):
        bad = tmp_path / "bad.yaml"
        bad.write_text("dataset: potsdam\nlearning_rate: 0.1\n")
        FinetuneConfig.from_sources(bad, data_root=str(tmp_path))


@pytest.mark.parametrize("name,protocol,classes", [("loveda", "loveda", 7), ("uavid", "uavid", 8)])
def test_finetune_and_evaluate_loveda_and_uavid(tmp_path, name, protocol, classes):
    from mpinet_hub.data import open_dataset

    root = tmp_path / name
    synth_dataset(name, root, tiles=6 if name == "loveda" else 4, size=128, seed=2)
    tuner = Finetuner(_cfg(root, tmp_path / "run", dataset=name, steps=1, label_fraction=1.0))
    model_dir = tuner.run()
    with pytest.raises(ValueError, match="no labels to evaluate against; use --split train, val"):
        evaluate(model_dir, name, root, split="test", out=tmp_path / "eval-test")
    result = evaluate(model_dir, name, root, out=tmp_path / "eval", window=64, previews=0)  # default: val
    assert result["split"] == "val"
    assert result["protocol"] == protocol and len(result["class_names"]) == classes
    val = open_dataset(name, root, "val")
    assert result["pixels_evaluated"] + result["ignored_pixels"] == sum(s.height * s.width for s in val.scenes)


def test_finetune_ddp_two_gloo_processes(tmp_path, potsdam_root):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531",
           "-m", "mpinet_hub", "finetune", "--dataset", "potsdam", "--data-root", str(potsdam_root), "--patch", "64",
           "--crop", "64", "--batch-size", "2", "--steps", "2", "--label-fraction", "0.5", "--device", "cpu",
           "--out", str(out), "--debug"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("labeled patches") == 1  # only rank 0 speaks and writes
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 2
    single = Finetuner(_cfg(potsdam_root, tmp_path / "single", label_fraction=0.5))
    assert json.loads((out / "labeled_patches.json").read_text())["patch_ids"] == \
        json.loads(single.write_subset().read_text())["patch_ids"]
    assert smp.from_pretrained(str(out / "model")) is not None


@pytest.mark.parametrize("leave", [0, 4096, 6000])
def test_predict_on_a_real_full_disk_fails_in_one_line_or_writes_a_whole_file(finetuned, tmp_path, full_disk, leave,
                                                                              capfd):
    """GDAL reports a full disk met while closing a GeoTIFF as a printed error only (exit 0 and a 0-byte file
    before): whatever the space left, the command either writes a file that reads back whole or fails in one
    line leaving nothing."""
    import rasterio

    _, model_dir = finetuned
    src = tmp_path / "scene.tif"
    _geotiff(src, np.random.default_rng(2).integers(0, 256, (3, 96, 96), dtype=np.uint8))
    for name in ("scene_classes.tif", "scene_classes.png"):
        full = full_disk(leave)
        code = main(["predict", str(model_dir), str(src), str(full / name), "--window", "32"])
        out, err = capfd.readouterr()
        if code == 0:
            assert leave > 0 and f"-> {full / name}" in out
            with rasterio.open(full / name) as written:
                assert written.read(1).shape == (96, 96)
            (full / name).unlink()
        else:
            assert code == 2 and "->" not in out, (leave, name, out, err)
            assert f"could not write {full / name}" in err and "free on its disk" in err and "Traceback" not in err
            assert "ERROR 1:" not in err, err  # GDAL's own lines (fd 2) above the one-line error
        assert sorted(p.name for p in full.iterdir()) == [".filler"]  # no partial file
        if leave == 0:
            assert code == 2


def test_two_predicts_to_one_output_the_later_is_refused_and_the_first_map_kept(finetuned, tmp_path, monkeypatch,
                                                                               capsys):
    """Another process finishing the same OUTPUT while this one runs: its file is kept, this one fails naming it
    (before, both wrote one shared `.out.partial.tif`: the wrong map reported as success)."""
    from mpinet_hub.downstream import predict as predict_module

    _, model_dir = finetuned
    src = tmp_path / "scene.tif"
    _geotiff(src, np.random.default_rng(2).integers(0, 256, (3, 64, 64), dtype=np.uint8))
    dst = tmp_path / "o" / "out.tif"
    theirs = b"the other process's finished map"
    original = predict_module.thumbnail_of_strip

    def meanwhile(*args, **kwargs):  # the other process renames its finished file onto OUTPUT mid-run
        if not dst.exists():
            dst.write_bytes(theirs)
        return original(*args, **kwargs)

    monkeypatch.setattr(predict_module, "thumbnail_of_strip", meanwhile)
    code = main(["predict", str(model_dir), str(src), str(dst), "--window", "32"])
    out, err = capsys.readouterr()
    assert code == 1 and "->" not in out and "created by another process" in err and str(dst) in err
    assert dst.read_bytes() == theirs and sorted(p.name for p in dst.parent.iterdir()) == ["out.tif"]


def test_a_finetuned_model_carries_its_data_licence_and_results_and_reloads_with_plain_timm_names(
        tmp_path, potsdam_root, exported_potsdam):
    from huggingface_hub import ModelCard

    tuner = Finetuner(_cfg(potsdam_root, tmp_path / "run", encoder="mpinet_resnet18.potsdam", steps=1))
    model_dir = tuner.run()
    config = json.loads((model_dir / "config.json").read_text())
    assert config["encoder_name"] == "tu-resnet18" and config["encoder_weights"] is None  # no mpinet_hub needed
    card = ModelCard.load(model_dir / "README.md")
    assert (card.data.license, card.data.license_name) == ("other", "isprs-benchmark-research-use")  # not SMP's MIT
    assert "More Information Needed" not in card.text and "mpinet_resnet18.potsdam" in card.text
    assert card.data.eval_results is None
    result = evaluate(model_dir, "potsdam", potsdam_root, out=tmp_path / "eval", window=64, overlap=0, previews=0)
    miou = next(e for e in ModelCard.load(model_dir / "README.md").data.eval_results if e.metric_type == "miou")
    assert miou.metric_value == round(result["mIoU"], 2)
    model, _ = load_segmentation_model(model_dir)
    assert not any("mpinet" in str(v) for v in model.config.values())


def test_predict_writes_nan_pixels_as_nodata_and_counts_them(finetuned, tmp_path):
    _, model_dir = finetuned
    array = np.random.default_rng(3).random((3, 48, 48)).astype(np.float32)
    array[:, 10:14, 20:30] = np.nan
    array[1, 30, 5] = np.inf  # one bad band is enough
    src, out = tmp_path / "float.tif", tmp_path / "float_classes.tif"
    _geotiff(src, array, dtype="float32")
    with pytest.warns(UserWarning, match="41 pixel\\(s\\) with NaN/inf"):
        assert main(["predict", str(model_dir), str(src), str(out), "--window", "32"]) == 0
    with rasterio.open(out) as result:
        classes = result.read(1)
        assert result.nodata == 255
    bad = ~np.all(np.isfinite(array), axis=0)
    assert (classes[bad] == 255).all() and (classes[~bad] != 255).all()


def test_a_torn_model_folder_is_named_in_one_line(finetuned, tmp_path, capsys):
    import shutil

    _, model_dir = finetuned
    torn = tmp_path / "model"
    shutil.copytree(model_dir, torn)
    weights = torn / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    src = tmp_path / "scene.tif"
    _geotiff(src, np.zeros((3, 32, 32), np.uint8))
    assert main(["predict", str(torn), str(src), str(tmp_path / "out.tif")]) == 2
    err = capsys.readouterr().err
    assert f"{weights}: not a readable safetensors file" in err and "Traceback" not in err
    assert not (tmp_path / "out.tif").exists()


def test_every_smp_architecture_is_a_decoder():
    import segmentation_models_pytorch as smp

    from mpinet_hub.downstream.model import DECODERS, build_segmentation_model, load_encoder

    assert {"unet", "unetplusplus", "manet", "linknet", "deeplabv3plus", "segformer", "upernet"} <= set(DECODERS)
    model = build_segmentation_model(load_encoder("random", "mpinet_resnet18"), "unetplusplus", 3)
    assert isinstance(model, smp.UnetPlusPlus) and model(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_value_max_travels_from_finetune_to_evaluate_and_predict(tmp_path, monkeypatch):
    from .test_data import _twelve_bit_folder

    root = _twelve_bit_folder(tmp_path / "root")
    run = tmp_path / "run"
    assert main(["finetune", "--dataset", "folder", "--data-root", str(root), "--encoder", "random", "--out",
                 str(run), "--patch", "32", "--crop", "32", "--batch-size", "2", "--steps", "2", "--label-fraction",
                 "1", "--device", "cpu", "--value-max", "4095"]) == 0
    model, info = load_segmentation_model(run / "model")
    assert info.value_max == 4095
    # evaluate reads the data as training did: through a reader that scales by the model's value_max
    import mpinet_hub.downstream.evaluate as evaluate_module

    seen, real = [], evaluate_module.open_dataset
    monkeypatch.setattr(evaluate_module, "open_dataset",
                        lambda *a, **kw: seen.append(kw.get("value_max")) or real(*a, **kw))
    assert main(["evaluate", str(run), "--dataset", "folder", "--data-root", str(root), "--out",
                 str(tmp_path / "eval"), "--window", "32", "--device", "cpu"]) == 0
    assert seen == [4095]
    # predict on the 12-bit file = the model on values / 4095
    src = root / "val" / "images" / "c.tif"
    assert main(["predict", str(run), str(src), str(tmp_path / "c_classes.tif"), "--window", "32", "--overlap",
                 "8", "--device", "cpu"]) == 0
    with rasterio.open(src) as f:
        values = f.read().astype(np.float32) / 4095
    with rasterio.open(tmp_path / "c_classes.tif") as f:
        classes = f.read(1)
    sw = SlidingWindow(model, info.mean, info.std, window=32, overlap=8)
    expected = sw.predict_image(torch.from_numpy(values)).argmax(0).numpy()
    assert np.array_equal(classes, expected)
    unscaled = sw.predict_image(torch.from_numpy(values * 4095 / 65535)).argmax(0).numpy()
    assert not np.array_equal(unscaled, expected)  # the scale matters to this model, so the check above has teeth


def test_push_publishes_a_fine_tuned_model_folder_with_the_export_checks(finetuned, potsdam_root, tmp_path,
                                                                          monkeypatch):
    import shutil

    from huggingface_hub import ModelCard, constants

    from mpinet_hub.hub import PushRefused, check_export_folder, push_folder

    from .fake_hub import FakeHub

    tuner, model_dir = finetuned
    folder = tmp_path / "run"
    shutil.copytree(tuner.out, folder)  # a run folder: push finds RUN/model, as evaluate does
    from mpinet_hub.downstream.model import write_segmentation_card

    write_segmentation_card(folder / "model", tuner.info)  # the card as finetune wrote it (other tests evaluate)
    card = ModelCard.load(folder / "model" / "README.md").data.to_dict()
    assert card["mpinet_evaluated"] is False and len(card["mpinet_sha256"]) == 64
    assert any("no downstream metrics" in p for p in check_export_folder(folder))
    evaluate(folder, "potsdam", potsdam_root, out=tmp_path / "eval", window=64, overlap=0, previews=0, device="cpu")
    assert check_export_folder(folder) == []  # evaluated: the card now carries the metrics
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs offline; this Hub is local
    with FakeHub() as hub:
        push_folder(folder, "lab/deeplab-potsdam", token="hf_testtoken", endpoint=hub.url)
        (commit,) = hub.commits
    assert set(commit["files"]) == {"model.safetensors", "config.json", "README.md", "mpinet.json"}
    assert commit["files"]["model.safetensors"] == (folder / "model" / "model.safetensors").read_bytes()
    from mpinet_hub.hub import install_to_hf_cache

    install_to_hf_cache(folder / "model", "lab/deeplab-potsdam")
    assert main(["verify", "lab/deeplab-potsdam"]) == 0  # a fine-tuned repo, read through the HF cache

    weights = folder / "model" / "model.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(str(weights))
    first = next(iter(state))
    state[first] = state[first] + 1
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(PushRefused, match="README.md sha256"):
        push_folder(folder, "lab/deeplab-potsdam", token="hf_testtoken", endpoint="http://127.0.0.1:9")


def test_sliding_window_cpu_defaults_batch_small_windows_in_channels_last_with_the_same_logits():
    torch.manual_seed(0)
    model = smp.DeepLabV3Plus("resnet18", encoder_weights=None, classes=3).eval()
    image = torch.rand(3, 150, 170)
    small, large = (SlidingWindow(model, [0.5] * 3, [0.25] * 3, window=w, overlap=16) for w in (64, 512))
    assert (small.batch_size, large.batch_size, small.channels_last) == (4, 1, True)  # docs/benchmarks.md
    plain = SlidingWindow(model, [0.5] * 3, [0.25] * 3, window=64, overlap=16, batch_size=1, channels_last=False)
    assert torch.allclose(small.predict_image(image), plain.predict_image(image), atol=1e-4)


def test_value_max_travels_with_the_weights_from_pretraining_to_export_finetune_and_probe(tmp_path):
    """value_max was saved in the checkpoint but dropped by export: users had to repeat --value-max downstream."""
    from mpinet_hub.downstream.probe import ProbeConfig, run_probe

    from .test_data import _twelve_bit_folder

    root = _twelve_bit_folder(tmp_path / "root")
    pre = tmp_path / "pre"
    assert main(["pretrain", "--dataset", "folder", "--data-root", str(root), "--arch", "mpinet_resnet18", "--method",
                 "mocov2", "--patch", "32", "--crop", "32", "--batch-size", "2", "--queue-size", "8", "--steps", "1",
                 "--workers", "0", "--device", "cpu", "--value-max", "4095", "--out", str(pre)]) == 0
    run = tmp_path / "ft"
    assert main(["finetune", "--dataset", "folder", "--data-root", str(root), "--encoder", str(pre), "--out",
                 str(run), "--patch", "32", "--crop", "32", "--batch-size", "2", "--steps", "1",
                 "--label-fraction", "1", "--device", "cpu"]) == 0
    assert load_segmentation_model(run / "model")[1].value_max == 4095  # not repeated: taken from the weights
    probed = tmp_path / "probe"
    run_probe(ProbeConfig(str(pre), "folder", str(root), str(probed), label_fraction=1, steps=1, patch=32,
                          batch_size=2, window=32, device="cpu"))
    assert yaml.safe_load((probed / "config.yaml").read_text())["value_max"] == 4095


def test_nan_pixels_in_a_scored_split_are_ignored_counted_and_said_not_scored_as_class_0(tmp_path, capsys):
    """Val tiles 4% NaN (float32): every pixel was predicted class 0 (NaN spreads through every conv), OA equalled
    the ground share and `evaluate` reported it as success, no warning."""
    from mpinet_hub.downstream.probe import ProbeConfig, run_probe

    root = tmp_path / "data"
    root.mkdir()
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": ["dark", "bright"]}))
    rng = np.random.default_rng(0)
    nan_count = 0
    for split, count in (("train", 3), ("val", 2)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True)
        for i in range(count):
            mask = np.zeros((64, 64), np.uint8)
            mask[:, 32:] = 1
            image = (rng.random((3, 64, 64)) * 0.3 + mask * 0.6).astype(np.float32)
            if split == "val":
                holes = rng.random((64, 64)) < 0.04
                image[:, holes] = np.nan
                nan_count += int(holes.sum())
            with rasterio.open(root / split / "images" / f"t{i}.tif", "w", driver="GTiff", height=64, width=64,
                               count=3, dtype="float32") as dst:
                dst.write(image)
            Image.fromarray(mask).save(root / split / "masks" / f"t{i}.png")
    result = run_probe(ProbeConfig("random", "folder", str(root), str(tmp_path / "p"), label_fraction=1, steps=30,
                                   patch=32, batch_size=4, window=64, split="val", device="cpu"))
    assert result["ignored_pixels"] == nan_count and result["pixels_evaluated"] == 2 * 64 * 64 - nan_count
    assert result["per_class"]["bright"]["IoU"] > 50  # scored on what the model sees, not all class 0
    assert f"{nan_count} px" in capsys.readouterr().err
    main(["data", "check", "folder", str(root)])  # and `data check` says so before any run
    assert "2 file(s) hold NaN/inf pixels" in capsys.readouterr().out


def test_a_failed_preview_leaves_no_map_and_the_rerun_is_not_refused(finetuned, tmp_path, capsys):
    """A --preview that could not be written once left out.tif behind, and the rerun was refused `out.tif exists`.
    Here the preview's path is a folder, so writing it really fails."""
    _, model_dir = finetuned
    src = tmp_path / "scene.tif"
    _geotiff(src, np.random.default_rng(0).integers(0, 255, (3, 32, 32)).astype(np.uint8))
    out = tmp_path / "out.tif"
    (tmp_path / "out.preview.png").mkdir()
    args = ["predict", str(model_dir), str(src), str(out), "--preview", "--window", "32", "--device", "cpu"]
    assert main(args) != 0
    assert not out.exists()
    (tmp_path / "out.preview.png").rmdir()
    assert main(args) == 0 and out.is_file() and (tmp_path / "out.preview.png").is_file()


def test_an_encoder_pretrained_on_another_band_product_is_named_with_the_flag_that_reads_it(
        tmp_path, potsdam_root, capsys):
    """An encoder pretrained on Potsdam's IRRG, fine-tuned or probed on Potsdam without --bands, was fed RGB (the
    same count, three bands) without a word: its first filter met red where it had learned infrared."""
    pre = tmp_path / "pre-irrg"
    assert main(["pretrain", "--dataset", "potsdam", "--data-root", str(potsdam_root), "--bands", "IRRG", "--method",
                 "mocov2", "--arch", "mpinet_resnet18", "--patch", "48", "--crop", "32", "--batch-size", "4",
                 "--steps", "1", "--queue-size", "16", "--warmup-epochs", "0", "--workers", "0", "--out", str(pre),
                 "--device", "cpu"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    # every encoder SPEC that records its bands is read with them: the run, its export, local-dir: and hf-hub:
    export = tmp_path / "export-irrg"
    export_weights(pre / "checkpoints" / "last.pt", export, "mpinet_resnet18", "potsdam")
    install_to_hf_cache(export, "lab/irrg-encoder")
    for spec in (str(pre), str(export), f"local-dir:{export}", "hf-hub:lab/irrg-encoder"):
        assert load_encoder(spec).band_names == ("IR", "R", "G"), spec
    common = ["--dataset", "potsdam", "--data-root", str(potsdam_root), "--steps", "1", "--patch", "64",
              "--device", "cpu"]
    warning = (f"warning: encoder {pre} was pretrained on bands IR, R, G, but potsdam is read as R, G, B here: "
               "pass --bands IRRG to read the bands it learned")
    for bands, warned in ((), True), (("--bands", "IRRG"), False):
        for name, command in (("finetune", ["finetune", "--encoder", str(pre), "--crop", "64", "--batch-size", "2"]),
                              ("probe", ["probe", str(pre), "--batch-size", "2", "--window", "64"])):
            out = tmp_path / f"{name}{'-'.join(bands)}"
            assert main([*command, *common, *bands, "--out", str(out)]) == 0
            assert (warning in capsys.readouterr().err) == warned, (name, bands)
