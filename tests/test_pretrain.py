"""Two-view geometry, the three losses, the method's networks, and the trainer (single process and DDP)."""

import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from mpinet_hub.checkpoint import load_checkpoint
from mpinet_hub.data.synth import synth_dataset
from mpinet_hub.data.unlabeled import UnlabeledImages, pretraining_images
from mpinet_hub.hub import export_weights
from mpinet_hub.pretrain.config import PretrainConfig
from mpinet_hub.pretrain.losses import FocalFrequencyLoss, InfoNCELoss, PixelInfoNCELoss
from mpinet_hub.pretrain.method import MPINetModel
from mpinet_hub.pretrain.trainer import NonFiniteLossError, Trainer
from mpinet_hub.pretrain.views import ViewGeometry, make_two_views, map_box_to_view, undo_geometry

from .conftest import REPO_ROOT


def test_identical_crops_give_aligned_grids_under_flips_and_rotations():
    torch.manual_seed(0)
    images = torch.rand(16, 3, 32, 32)
    views = make_two_views(images, out=32, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                           generator=torch.Generator().manual_seed(1))
    assert not torch.equal(views.view1, views.view2)  # orientations differ
    assert len({(int(h), int(v), int(k)) for h, v, k in zip(views.geom1.hflip, views.geom1.vflip, views.geom1.rot)}) > 3
    g1 = roi_align(views.view1, [b[None] for b in views.overlap1], 8, aligned=True, sampling_ratio=2)
    g2 = roi_align(views.view2, [b[None] for b in views.overlap2], 8, aligned=True, sampling_ratio=2)
    a, b = undo_geometry(g1, views.geom1), undo_geometry(g2, views.geom2)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(g1, g2, atol=1e-2)  # before undoing, the grids are not aligned


def test_different_crops_cells_cover_the_same_ground():
    # an image whose pixels encode their own coordinates: aligned cells must read the same coordinates
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    images = torch.stack([xx, yy, xx * 0], 0)[None].repeat(8, 1, 1, 1)
    views = make_two_views(images, out=48, scale=(0.3, 0.8), min_overlap=0.3,
                           generator=torch.Generator().manual_seed(3))
    g1 = undo_geometry(roi_align(views.view1, [b[None] for b in views.overlap1], 4, aligned=True), views.geom1)
    g2 = undo_geometry(roi_align(views.view2, [b[None] for b in views.overlap2], 4, aligned=True), views.geom2)
    assert (g1[:, :2] - g2[:, :2]).abs().max() < 1.0  # within a source pixel


def test_overlap_box_hand_computed():
    geom = ViewGeometry(torch.tensor([[10.0, 20.0, 50.0, 60.0]]), torch.tensor([False]), torch.tensor([False]),
                        torch.tensor([0]))
    overlap = torch.tensor([[30.0, 20.0, 50.0, 40.0]])  # right-top quarter of the 40x40 crop
    assert map_box_to_view(overlap, geom, 80).tolist() == [[40.0, 0.0, 80.0, 40.0]]
    geom.hflip[:] = True
    assert map_box_to_view(overlap, geom, 80).tolist() == [[0.0, 0.0, 40.0, 40.0]]
    geom.hflip[:] = False
    geom.rot[:] = 1  # counter-clockwise: the top-right quarter moves to the top-left
    assert map_box_to_view(overlap, geom, 80).tolist() == [[0.0, 0.0, 40.0, 40.0]]
    geom.rot[:] = 2
    assert map_box_to_view(overlap, geom, 80).tolist() == [[0.0, 40.0, 40.0, 80.0]]


def test_low_overlap_pairs_are_redrawn():
    views = make_two_views(torch.rand(64, 3, 100, 100), 32, scale=(0.05, 0.1), min_overlap=0.5,
                           generator=torch.Generator().manual_seed(0))
    inter = (views.overlap[:, 2:] - views.overlap[:, :2]).clamp_min(0).prod(1)
    smaller = torch.minimum((views.geom1.boxes[:, 2:] - views.geom1.boxes[:, :2]).prod(1),
                            (views.geom2.boxes[:, 2:] - views.geom2.boxes[:, :2]).prod(1))
    assert (inter >= 0.5 * smaller - 1e-4).all()


def test_info_nce_hand_computed():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    expected = -math.log(math.exp(1 / 0.5) / (math.exp(1 / 0.5) + math.exp(0) + math.exp(-1 / 0.5)))
    assert InfoNCELoss(0.5)(q, k, queue).item() == pytest.approx(expected, rel=1e-6)


def test_pixel_info_nce_hand_computed():
    # B=1, S=2: four cells; cell i of view 1 equals cell i of view 2 (one-hot), so logits are 1/t on the diagonal
    online = torch.eye(4).reshape(4, 2, 2)[None]
    target = online.clone()
    expected = -math.log(math.exp(1 / 0.3) / (math.exp(1 / 0.3) + 3))
    for kw in ({}, {"anchors_per_image": 2}, {"num_negatives": None}):  # PixContrast's negative set: all cells
        assert PixelInfoNCELoss(0.3, negatives="all-cells", **kw)(online, target).item() == pytest.approx(expected,
                                                                                                         rel=1e-6)
    assert PixelInfoNCELoss(0.3)(online, target).item() == 0  # one image: no cell of another image to contrast


@pytest.mark.parametrize("alpha,log_matrix,batch_matrix,patch", [(1.0, False, False, 1), (2.0, True, True, 2)])
def test_focal_frequency_loss_against_numpy_formula(alpha, log_matrix, batch_matrix, patch):
    rng = np.random.default_rng(0)
    p, t = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    h = 4 // patch
    dist, weights = [], []
    for b in range(2):
        for i in range(patch):
            for j in range(patch):
                for c in range(3):
                    fp = np.fft.fft2(p[b, c, i * h : (i + 1) * h, j * h : (j + 1) * h], norm="ortho")
                    ft = np.fft.fft2(t[b, c, i * h : (i + 1) * h, j * h : (j + 1) * h], norm="ortho")
                    d = np.abs(fp - ft) ** 2
                    w = np.sqrt(d) ** alpha
                    if log_matrix:
                        w = np.log(w + 1)
                    dist.append(d)
                    weights.append(w)
    weights = np.array(weights)
    weights = weights / (weights.max() if batch_matrix else weights.max(axis=(1, 2), keepdims=True))
    expected = float((weights * np.array(dist)).mean())
    loss = FocalFrequencyLoss(alpha, patch, log_matrix, batch_matrix)(torch.tensor(p), torch.tensor(t))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def _tiny_cfg(tmp_path, data_root, method="mpinet", **kw) -> PretrainConfig:
    return PretrainConfig.from_sources(
        None, dataset="potsdam", data_root=[str(data_root)], method=method, arch="mpinet_resnet18", patch=96,
        crop=64, batch_size=4, steps=kw.pop("steps", 2), queue_size=32, workers=0, out=str(tmp_path / method),
        save_every=kw.pop("save_every", 100), pixel_grid=7, ffl_grid=4, warmup_epochs=0, **kw)


@pytest.fixture(scope="module")
def potsdam_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain-data")
    synth_dataset("potsdam", root, tiles=3, size=192, seed=5)
    return root


def test_gradients_reach_only_the_online_network_and_ema_is_correct(tmp_path, potsdam_root):
    cfg = _tiny_cfg(tmp_path, potsdam_root)
    model = MPINetModel(cfg, 3)
    views = make_two_views(torch.rand(4, 3, 96, 96), 64, generator=torch.Generator().manual_seed(0))
    terms = model(views)
    assert set(terms) == {"ins", "pix", "ffl"}
    model.total_loss(terms).backward()
    assert all(p.grad is None for p in model.target.parameters())
    assert model.online.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.online.ffl_predictor[1].weight.grad is not None
    before_t = model.target.backbone.conv1.weight.clone()
    with torch.no_grad():
        model.online.backbone.conv1.weight.add_(1.0)
    online_w = model.online.backbone.conv1.weight.clone()
    model.update_target(0.9)
    assert torch.allclose(model.target.backbone.conv1.weight, 0.9 * before_t + 0.1 * online_w)
    assert model.momentum_at(0, 100) == pytest.approx(0.99) and model.momentum_at(100, 100) == pytest.approx(1.0)


@pytest.mark.parametrize("method,terms", [("mocov2", {"ins"}), ("pixcontrast", {"ins", "pix"}),
                                          ("mpinet-noffl", {"ins", "pix"}), ("mpinet", {"ins", "pix", "ffl"})])
def test_each_method_trains_and_exports(tmp_path, potsdam_root, method, terms):
    trainer = Trainer(_tiny_cfg(tmp_path, potsdam_root, method=method))
    last = trainer.run()
    assert set(last) == terms | {"total"} and all(math.isfinite(v) for v in last.values())
    run = tmp_path / method
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and "images_per_s" in records[0]
    assert (run / "loss.png").stat().st_size > 1000 and (run / "config.yaml").is_file()
    scalars = _tensorboard_scalars(run / "tensorboard")
    assert terms | {"total", "lr"} <= set(scalars) and [step for step, _ in scalars["total"]] == [1, 2]
    if method == "mpinet":  # auto FFL weight: 0 until the queue holds real keys (tests/test_method.py)
        assert records[0]["w_ffl"] == 0
    assert trainer.model.momentum_at(0, 2) == pytest.approx(0.99)  # the same EMA schedule on every rung
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")  # weights_only=True
    export_weights(run / "checkpoints" / "last.pt", tmp_path / "hub", "mpinet_resnet18", "potsdam")
    model = timm.create_model(f"local-dir:{tmp_path / 'hub'}", pretrained=True)
    assert torch.equal(model.state_dict()["layer3.0.conv1.weight"], ckpt["model"]["backbone.layer3.0.conv1.weight"])


def test_resume_reproduces_the_uninterrupted_run(tmp_path, potsdam_root):
    straight = Trainer(_tiny_cfg(tmp_path / "a", potsdam_root, steps=4))
    straight.run()
    first = Trainer(_tiny_cfg(tmp_path / "b", potsdam_root, steps=4, save_every=2))
    first.total_steps = 4
    loader_stop = 2

    # interrupt after 2 steps: train a copy whose total is 4 but stop by running only 2 steps
    class Stop(Exception):
        pass

    original_save = first.save_checkpoint

    def save_then_stop(name="last.pt"):
        path = original_save(name)
        if first.step == loader_stop and name == "last.pt":
            raise Stop
        return path

    first.save_checkpoint = save_then_stop
    with pytest.raises(Stop):
        first.run()
    resumed = Trainer(_tiny_cfg(tmp_path / "b", potsdam_root, steps=4, save_every=2), resume=True)
    assert resumed.step == 2
    resumed.run()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k


def test_run_by_kind_starts_a_run_then_continues_it_from_its_last_checkpoint(tmp_path, potsdam_root):
    """`training.run(kind, settings)`, as the study's cells and the quickstart run: the kinds are registered by
    name, a second call on the folder resumes where the first stopped instead of refusing the folder."""
    from mpinet_hub import training
    from mpinet_hub.downstream.finetune import Finetuner
    from mpinet_hub.downstream.probe import Prober

    assert training.RUN_KINDS == {"pretrain": Trainer, "finetune": Finetuner, "probe": Prober}
    with pytest.raises(ValueError, match="run kind 'pretrian' is not registered"):
        training.run("pretrian", _tiny_cfg(tmp_path, potsdam_root))
    assert set(training.run("pretrain", _tiny_cfg(tmp_path, potsdam_root, steps=2, save_every=1))) >= {"ins"}
    training.run("pretrain", _tiny_cfg(tmp_path, potsdam_root, steps=3, save_every=1))
    log = [json.loads(line)["step"] for line in (tmp_path / "mpinet" / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3] and load_checkpoint(tmp_path / "mpinet" / "checkpoints" / "last.pt")["step"] == 3


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, potsdam_root):
    trainer = Trainer(_tiny_cfg(tmp_path, potsdam_root, steps=3, save_every=1))
    original = trainer.model.forward

    def poisoned(views, online=None):
        terms = original(views, online=online)
        if trainer.step == 2:
            terms["pix"] = terms["pix"] * float("nan")
        return terms

    trainer.model.forward = poisoned
    with pytest.raises(NonFiniteLossError, match="step 2: loss term 'pix'"):
        trainer.run()
    assert load_checkpoint(tmp_path / "mpinet" / "checkpoints" / "last.pt")["step"] == 2


@pytest.mark.slow
def test_ddp_two_gloo_processes(tmp_path, potsdam_root):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "mpinet_hub", "pretrain", "--dataset", "potsdam", "--data-root", str(potsdam_root), "--arch",
           "mpinet_resnet18", "--patch", "96", "--crop", "64", "--batch-size", "2", "--steps", "2", "--queue-size",
           "16", "--workers", "0", "--out", str(out), "--device", "cpu", "--debug"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2
    # keys of both ranks (2 views x 2 images x 2 ranks per step) entered the queue
    assert int(ckpt["buffers"]["queue_ptr"]) == (2 * 2 * 2 * 2) % 16
    assert len((out / "log.jsonl").read_text().splitlines()) == 2  # only rank 0 writes
    written = ckpt["buffers"]["queue"][:16]  # every slot was written by the 16 keys of the two steps
    assert torch.allclose(written.norm(dim=1), torch.ones(16), atol=1e-4)  # unit keys, none left zero or unnormed
    distance = torch.cdist(written, written) + torch.eye(16) * 10
    assert distance.min() > 1e-3  # each rank put its own images' keys: no slot holds a copy of another
    cosine = (written @ written.T)[~torch.eye(16, dtype=torch.bool)].mean()
    assert cosine > 0.3, cosine  # keys of one barely-trained network, not the random unit vectors it started with


@pytest.mark.parametrize("size,cin,cout,grid", [(8, 64, 32, 14), (16, 64, 16, 7), (32, 16, 16, 7)])
def test_roi_grid_projects_before_or_after_roialign_with_the_same_result(size, cin, cout, grid):
    from mpinet_hub.pretrain.method import roi_grid

    torch.manual_seed(0)
    feat = torch.randn(3, cin, size, size)
    conv = torch.nn.Conv2d(cin, cout, 1)
    rois = [torch.tensor([[3.0, 5.0, 90.0, 70.0]]), torch.tensor([[0.0, 0.0, 128.0, 128.0]]),
            torch.tensor([[40.0, 10.0, 60.0, 120.0]])]
    grid_out, projected = roi_grid(feat, rois, grid, 128 // size, conv)
    assert projected == (size * size <= grid * grid)  # the first two cases take the cheaper order
    from torchvision.ops import roi_align

    stride = 128 // size  # cell i of a ResNet map sits at stride * i + 0.5 (method.cell_centre)
    shifted = [r + (stride - 1) / 2 for r in rois]
    reference = conv(roi_align(feat, shifted, grid, spatial_scale=size / 128, sampling_ratio=2, aligned=True))
    assert torch.allclose(grid_out if projected else conv(grid_out), reference, atol=1e-5)


def test_pretraining_batches_cross_the_loader_boundary_as_uint8_and_match_the_float_windows(tmp_path, potsdam_root):
    from mpinet_hub.pretrain.trainer import PretrainBatches

    trainer = Trainer(_tiny_cfg(tmp_path, potsdam_root))
    images, sources = PretrainBatches(trainer.images, trainer.batches, 0, 1)[0]
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 96, 96)  # a quarter of float32's bytes
    trainer.images.keep_uint8 = False
    as_float, _ = PretrainBatches(trainer.images, trainer.batches, 0, 1)[0]
    assert torch.equal(images.float() / 255, as_float)


def test_plan_counts_the_activations_a_real_step_saves_and_grows_linearly():
    from mpinet_hub.pretrain.plan import largest_batch, plan_memory

    cfg = PretrainConfig.from_sources(None, method="mpinet", arch="mpinet_resnet18", crop=64, patch=96,
                                      queue_size=64, pixel_grid=7, ffl_grid=4)
    plans = [plan_memory(cfg, 3, b) for b in (8, 16, 32)]
    model = MPINetModel(cfg, 3)
    model._ffl_pending = False
    saved = {}
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.setdefault(id(t), t.numel() * t.element_size()) and t, lambda t: t):
        model(make_two_views(torch.rand(16, 3, 96, 96), 64, generator=torch.Generator().manual_seed(0)))
    assert plans[1].activations == pytest.approx(sum(saved.values()), rel=0.02)
    growth = [b.activations - a.activations for a, b in zip(plans, plans[1:])]
    assert growth[1] == pytest.approx(2 * growth[0], rel=0.05)  # linear in the batch
    params = sum(p.numel() * 4 for p in model.online.parameters())
    assert plans[0].gradients == plans[0].optimizer == params
    fits = largest_batch(cfg, plans[2].total + 1)
    assert 32 <= fits < 48 and plan_memory(cfg, 3, fits).total <= plans[2].total + 1


def test_cli_plan_prints_the_release_recipe_without_data_or_a_run_folder(tmp_path, capsys, monkeypatch):
    from mpinet_hub.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", "--config", "mpinet_resnet50_potsdam", "--plan", "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "batch 16 per process, bf16" in out and "activations (bf16)" in out and "largest batch that fits" in out
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written
    for bands, count in (("RGBIR+DSM", 5), ("IRRG", 3)):  # the reader's band product decides the input's bands
        assert main(["pretrain", "--config", "mpinet_resnet50_potsdam", "--plan", "--bands", bands]) == 0
        assert f"{count} bands:" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="packaged: .*mpinet_resnet50_loveda"):
        PretrainConfig.from_sources("mpinet_resnet50_nowhere")


def _tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_run_log_writes_tensorboard_beside_the_jsonl_and_drops_rows_past_a_resume(tmp_path, monkeypatch):
    from mpinet_hub.training import RunLog

    with RunLog(tmp_path / "run", step=0) as log:
        for step in range(1, 6):
            log.write({"step": step, "ins": float(step), "note": "not a number"})
    with RunLog(tmp_path / "run", step=3) as log:  # resumed from a step-3 checkpoint: steps 4 and 5 again
        for step in range(4, 7):
            log.write({"step": step, "ins": 10.0 * step})
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    scalars = _tensorboard_scalars(tmp_path / "run" / "tensorboard")
    assert set(scalars) == {"ins"}
    assert scalars["ins"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # tensorboard not installed: jsonl only
    with RunLog(tmp_path / "plain", step=0) as log:
        log.write({"step": 1, "ins": 1.0})
    assert (tmp_path / "plain" / "log.jsonl").is_file() and not (tmp_path / "plain" / "tensorboard").exists()


def test_diagnose_warns_when_the_instance_loss_stays_at_chance_or_the_keys_collapse(tmp_path, potsdam_root, capsys):
    from mpinet_hub.cli import main
    from mpinet_hub.pretrain.diagnose import diagnose, problems

    run = tmp_path / "run"
    assert main(["pretrain", "--dataset", "potsdam", "--data-root", str(potsdam_root), "--method", "mocov2",
                 "--arch", "mpinet_resnet18", "--patch", "96", "--crop", "64", "--batch-size", "4", "--steps", "4",
                 "--queue-size", "8", "--workers", "0", "--out", str(run)]) == 0
    assert "warning: the instance loss never left chance" in capsys.readouterr().out  # four steps learn nothing
    d = diagnose(run, retrieval_windows=8)
    assert d["chance"] == pytest.approx(math.log(9)) and 0 <= d["retrieval"] <= 1 and d["retrieval_windows"] == 8
    assert d["term_shares"] == {"ins": pytest.approx(1.0)}
    assert any("never left chance" in p for p in problems(d))
    # the same run as if it had learned: ins well below chance, keys spread -> no warning; keys in 2 directions -> one
    learned = d | {"ins_min": d["chance"] - 1.0, "key_effective_rank": 40.0, "retrieval": 0.5, "retrieval_random": 0.1}
    assert problems(learned) == []
    ckpt_path = run / "checkpoints" / "last.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["buffers"]["queue"] = F.normalize(torch.eye(128)[torch.arange(8) % 2] + 0.01 * torch.randn(8, 128), dim=1)
    torch.save(ckpt, ckpt_path)
    collapsed = diagnose(run, retrieval_windows=0)
    assert collapsed["key_effective_rank"] < 2 and any("collapsed" in p for p in problems(collapsed))
    assert main(["diagnose", str(run), "--windows", "0"]) == 0
    assert "warning: the keys collapsed" in capsys.readouterr().out
    ckpt["method"] = ckpt["config"]["method"] = "swav"  # a run of a version that knows more methods
    torch.save(ckpt, ckpt_path)
    assert main(["diagnose", str(run), "--windows", "0"]) == 2  # one line, not a KeyError traceback
    err = capsys.readouterr().err
    assert "'swav'" in err and "mocov2" in err and "Traceback" not in err


def test_diagnose_says_when_the_imagery_holds_fewer_distinct_windows_than_a_batch(tmp_path, potsdam_root, capsys):
    """A run whose negatives are views of the same ground (one small scene: landsat's train band) is told so, with
    the figures, at the end of pretraining and by diagnose; a run with more imagery than a batch is not."""
    from mpinet_hub.cli import main
    from mpinet_hub.pretrain import trainer
    from mpinet_hub.pretrain.diagnose import diagnose, problems

    trainer._SAID.clear()  # (said once a process; other tests may have run on these images)
    run = tmp_path / "run"  # two 192 px train tiles: 8 windows of 96 px, fewer than a batch of 12
    args = ["pretrain", "--dataset", "potsdam", "--data-root", str(potsdam_root), "--method", "mocov2", "--arch",
            "mpinet_resnet18", "--patch", "96", "--crop", "64", "--batch-size", "12", "--steps", "2", "--queue-size",
            "24", "--workers", "0"]
    assert main([*args, "--out", str(run)]) == 0
    said = capsys.readouterr()
    warning = "warning: the images hold about 8 non-overlapping 96 px windows, fewer than a batch of 12"
    assert warning in said.err
    assert "fewer than a batch of 12" in said.out  # said before the first step, and again at the end
    assert main([*args, "--out", str(tmp_path / "again")]) == 0  # a study's next cell on the same images:
    assert warning not in capsys.readouterr().err  # not repeated before its first step
    d = diagnose(run, retrieval_windows=0)
    images = UnlabeledImages(pretraining_images("potsdam", potsdam_root), patch_size=96)
    assert d["distinct_windows"] == pytest.approx(images.distinct_windows()) == pytest.approx(8.0)
    assert d["window_overlap"] == pytest.approx(images.window_overlap())
    few = d | {"distinct_windows": 4.2, "window_overlap": 0.35, "batch_size": 32}
    assert any("4 non-overlapping 96 px windows, fewer than a batch of 32" in p and "35%" in p for p in problems(few))
    assert not any("non-overlapping" in p for p in problems(d | {"distinct_windows": 500.0}))
    assert main(["diagnose", str(run), "--windows", "0"]) == 0
    assert f"about {d['distinct_windows']:.0f} non-overlapping 96 px windows" in capsys.readouterr().out
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    ckpt["config"]["data_root"] = [str(tmp_path / "gone")]  # the run's images moved away: no figures, no error
    torch.save(ckpt, run / "checkpoints" / "last.pt")
    gone = diagnose(run, retrieval_windows=0)
    assert gone["distinct_windows"] is None and "not readable" in gone["imagery_note"]


def test_diagnose_measures_each_terms_gradient_on_the_backbone(tmp_path, potsdam_root, capsys):
    """Which term moves the encoder: the gradient norm of each weighted term on the backbone, for one batch. The FFL
    weight doubled doubles its norm and leaves the others'; a term of weight 0 has none."""
    from mpinet_hub.cli import main
    from mpinet_hub.pretrain.diagnose import diagnose

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("w_ffl: 10.0\n")
    run = tmp_path / "run"
    assert main(["pretrain", "--config", str(recipe), "--dataset", "potsdam", "--data-root", str(potsdam_root),
                 "--method", "mpinet", "--arch", "mpinet_resnet18", "--patch", "96", "--crop", "64", "--batch-size",
                 "4", "--steps", "2", "--queue-size", "8", "--workers", "0", "--out", str(run)]) == 0
    first = diagnose(run, retrieval_windows=4)["backbone_gradients"]
    assert set(first) == {"ins", "pix", "ffl"} and all(v > 0 for v in first.values())
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    ckpt["buffers"]["w_ffl_value"].fill_(20.0)
    torch.save(ckpt, run / "checkpoints" / "last.pt")
    doubled = diagnose(run, retrieval_windows=4)["backbone_gradients"]
    assert doubled["ffl"] == pytest.approx(2 * first["ffl"], rel=1e-4)
    assert doubled["ins"] == pytest.approx(first["ins"], rel=1e-4) and doubled["pix"] == pytest.approx(first["pix"],
                                                                                                      rel=1e-4)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert main(["diagnose", str(run), "--windows", "4"]) == 0
    assert f"gradient norm on the backbone, one batch: ins {first['ins']:.3g}" in capsys.readouterr().out
    # a run's saved settings are not choices the user just made: no "mpinet never reads w_dense" about them
    assert not [w for w in said if "never reads" in str(w.message)]


def test_on_a_busy_cpu_commands_leave_the_busy_cores_to_the_other_work(monkeypatch, capsys):
    """With another job on the cores, torch's default threads ran a step up to 10x slower than one thread."""
    import mpinet_hub.training.device as training

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(training, "_DEFAULT_THREADS", 2)  # a 2-core machine's default, whatever this run set
    torch.set_num_threads(2)
    monkeypatch.setattr(training.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    try:
        monkeypatch.setattr(training.os, "getloadavg", lambda: (1.9, 1.0, 1.0))
        monkeypatch.setattr(training, "_THREADS_CHOSEN", False)
        training.resolve_device("cpu")
        assert torch.get_num_threads() == 1 and "1 of 2 cores" in capsys.readouterr().err
        torch.set_num_threads(2)
        monkeypatch.setattr(training.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
        monkeypatch.setattr(training, "_THREADS_CHOSEN", False)
        training.resolve_device("cpu")
        assert torch.get_num_threads() == 2 and capsys.readouterr().err == ""  # quiet: unchanged
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        monkeypatch.setattr(training.os, "getloadavg", lambda: (1.9, 1.0, 1.0))
        monkeypatch.setattr(training, "_THREADS_CHOSEN", False)
        training.resolve_device("cpu")
        assert torch.get_num_threads() == 2  # the user's choice stands
    finally:
        torch.set_num_threads(before)


def test_a_one_band_folder_run_says_which_bands_it_read_not_rgb(tmp_path):
    import numpy as np
    import rasterio
    import yaml

    images = tmp_path / "pan"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        with rasterio.open(images / f"t{i}.tif", "w", driver="GTiff", height=96, width=96, count=1,
                           dtype="uint16") as dst:
            dst.write(rng.integers(0, 4096, (1, 96, 96), dtype=np.uint16))
    cfg = PretrainConfig.from_sources(None, dataset="folder", data_root=[str(images)], method="mocov2",
                                      arch="mpinet_resnet18", patch=64, crop=48, batch_size=2, steps=1, queue_size=8,
                                      workers=0, out=str(tmp_path / "run"), value_max=4095, mean=[0.5], std=[0.3])
    Trainer(cfg).run()
    first = (tmp_path / "run" / "config.yaml").read_text().splitlines()[0]
    assert first == ("# bands: not used for folder data; this run read 1 band(s) of its files, treated as band1 "
                     "(checkpoint: norm.bands)")
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["norm"]["bands"] == ["band1"]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["method"] == "mocov2"  # still YAML


def test_a_checkpoint_with_any_non_finite_tensor_is_refused_and_the_last_good_one_kept(tmp_path, potsdam_root):
    """The online network and its EMA target share parameter names: a non-finite online weight is caught even
    when the target's same-named weight is finite (the engine checks every tensor of the checkpoint by its path)."""
    trainer = Trainer(_tiny_cfg(tmp_path, potsdam_root, method="mocov2"))
    trainer.run()
    last = tmp_path / "mocov2" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    with torch.no_grad():
        trainer.model.online.backbone.conv1.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteLossError, match=r"model\.backbone\.conv1\.weight"):
        trainer.save_checkpoint()
    assert last.read_bytes() == before


def test_resume_refuses_a_checkpoint_of_another_kind(tmp_path, potsdam_root):
    from mpinet_hub.settings import SettingsError

    Trainer(_tiny_cfg(tmp_path, potsdam_root, method="mocov2")).run()
    last = tmp_path / "mocov2" / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    torch.save(ckpt | {"format": "mpinet-hub/finetune/1"}, last)
    with pytest.raises(SettingsError, match="is not a pretraining checkpoint"):
        Trainer(_tiny_cfg(tmp_path, potsdam_root, method="mocov2"), resume=True)
