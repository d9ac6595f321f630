"""DenseCL, the second implementation of the method interface: its matching, its gradients, and a real run
through the CLI that `mpinet diagnose`, `mpinet export` and timm can read."""

import json
import subprocess
import sys

import pytest
import timm
import torch

from mpinet_hub.checkpoint import load_checkpoint
from mpinet_hub.data.synth import synth_dataset
from mpinet_hub.pretrain.config import METHODS, PretrainConfig
from mpinet_hub.pretrain.densecl import DenseCLModel, most_similar
from mpinet_hub.pretrain.views import make_two_views


def test_each_query_cell_takes_the_key_embedding_at_its_most_similar_key_cell():
    torch.manual_seed(0)
    b, c, d, cells = 2, 8, 4, 5
    key_features = torch.nn.functional.normalize(torch.randn(b, c, cells), dim=1)
    order = torch.stack([torch.randperm(cells) for _ in range(b)])  # query cell q sees key cell order[q]
    query_features = torch.gather(key_features, 2, order[:, None, :].expand(-1, c, -1))
    keys = torch.randn(b, d, cells)
    picked = most_similar(query_features, key_features, keys)
    assert torch.equal(picked, torch.gather(keys, 2, order[:, None, :].expand(-1, d, -1)))


def test_densecl_is_mocov2_plus_a_dense_term_that_trains_the_dense_head_and_the_backbone():
    assert METHODS["densecl"]["w_ins"] == METHODS["densecl"]["w_dense"] == 0.5  # DenseCL's lambda, its own weight
    cfg = PretrainConfig.from_sources(None, method="densecl", arch="mpinet_resnet18", patch=96, crop=64,
                                      batch_size=4, queue_size=16, dense_warmup_steps=0, w_dense=0.25)
    torch.manual_seed(0)
    model = DenseCLModel(cfg, 3)
    views = make_two_views(torch.rand(4, 3, 96, 96), 64, generator=torch.Generator().manual_seed(0))
    terms = model(views)
    assert set(terms) == {"ins", "dense"} and model.term_weights(cfg) == {"ins": 0.5, "dense": 0.25}
    assert torch.allclose(model.total_loss(terms), 0.5 * terms["ins"] + 0.25 * terms["dense"])
    terms["dense"].backward()
    assert model.online.dense_head[0].weight.grad.abs().sum() > 0
    assert model.online.instance_head[0].weight.grad is None  # the dense term does not reach the global head
    assert model.online.backbone.conv1.weight.grad.abs().sum() > 0
    assert int(model.dense_queue_real) == 8  # one mean dense key per view
    assert {"dense_queue", "dense_queue_ptr", "dense_queue_real"} <= set(model.checkpoint_buffers)


def test_the_dense_term_is_off_for_its_warmup_steps_and_the_count_survives_a_checkpoint():
    """DenseCL's authors keep the dense weight at 0 for the first iterations, so that correspondences are not
    matched by a random network: the instance term carries the whole weight (lambda = 0) until then."""
    assert PretrainConfig.from_sources(None, method="densecl").dense_warmup_steps > 0  # the preset warms up
    cfg = PretrainConfig.from_sources(None, method="densecl", arch="mpinet_resnet18", patch=96, crop=64,
                                      batch_size=4, queue_size=16, dense_warmup_steps=2)
    torch.manual_seed(0)
    model = DenseCLModel(cfg, 3)
    views = make_two_views(torch.rand(4, 3, 96, 96), 64, generator=torch.Generator().manual_seed(0))
    for step in range(3):
        model.zero_grad()
        terms = model(views)
        total = model.total_loss(terms)
        if step < 2:
            assert torch.allclose(total, terms["ins"])  # (w_ins + w_dense) x ins, dense weight 0
            total.backward()
            assert model.online.dense_head[0].weight.grad is None or not model.online.dense_head[0].weight.grad.any()
        else:  # DenseCL's lambda = 0.5 from then on, and the dense head learns
            weights = torch.autograd.grad(total, [terms["ins"], terms["dense"]], retain_graph=True)
            assert [float(w) for w in weights] == [0.5, 0.5]
            total.backward()
            assert model.online.dense_head[0].weight.grad.abs().sum() > 0
    assert int(model.dense_steps) == 3 and "dense_steps" in model.checkpoint_buffers
    old_run = PretrainConfig.__dataclass_fields__["dense_warmup_steps"].metadata
    assert old_run.get("was") == 0  # a DenseCL run made before the warmup existed is not taken for one with it


@pytest.fixture(scope="module")
def densecl_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("densecl")
    synth_dataset("potsdam", tmp / "data", tiles=3, size=192, seed=5)
    run = tmp / "run"
    cmd = [sys.executable, "-m", "mpinet_hub.cli", "pretrain", "--method", "densecl", "--dataset", "potsdam",
           "--data-root", str(tmp / "data"), "--arch", "mpinet_resnet18", "--patch", "96", "--crop", "64",
           "--batch-size", "4", "--steps", "3", "--queue-size", "16", "--workers", "0", "--device", "cpu",
           "--dense-warmup-steps", "1", "--out", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp, run


def test_densecl_trains_from_the_cli_and_its_run_is_diagnosed_and_exported(densecl_run):
    tmp, run = densecl_run
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and {"ins", "dense", "total"} <= set(records[-1])
    assert abs(records[0]["total"] - records[0]["ins"]) < 1e-4  # the warmup step: dense weight 0
    assert abs(records[-1]["total"] - 0.5 * (records[-1]["ins"] + records[-1]["dense"])) < 1e-4
    assert (run / "loss.png").stat().st_size > 1000
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["method"] == "densecl" and "dense_queue" in ckpt["buffers"]
    done = subprocess.run([sys.executable, "-m", "mpinet_hub.cli", "diagnose", str(run), "--windows", "4"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "densecl, 3 steps" in done.stdout and "dense" in done.stdout  # the dense term's share
    hub = tmp / "hub"
    done = subprocess.run([sys.executable, "-m", "mpinet_hub.cli", "export", str(run / "checkpoints" / "last.pt"),
                           str(hub), "--arch", "mpinet_resnet18", "--tag", "potsdam"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    card = (hub / "README.md").read_text()  # the card names the method that made the weights (was: MPINet)
    assert "pretrained with **DenseCL**" in card and "wang2021densecl" in card and "**MPINet**" not in card
    assert "| w_dense | 0.5 |" in card  # MPINet's settings, which DenseCL never reads, are left out
    assert not any(f"| {key} |" in card for key in ("w_pix", "w_ffl", "fusion_levels"))
    model = timm.create_model(f"local-dir:{hub}", pretrained=True)
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], ckpt["model"]["backbone.layer4.1.conv2.weight"])


def test_settings_a_method_never_reads_are_not_part_of_its_runs_identity():
    """DenseCL reads none of MPINet's pixel-contrast or FFL settings: a changed default of one of them does not make
    a finished DenseCL cell another run, while it does make an MPINet cell one."""
    import dataclasses

    from mpinet_hub.settings import changed_settings

    cfg = PretrainConfig.from_sources(None, method="densecl", arch="mpinet_resnet18")
    saved = dataclasses.asdict(cfg) | {"pixel_grid": 7, "t_pix": 0.1, "fusion_levels": ["C4"], "ffl_grid": 3}
    assert changed_settings(cfg, saved, "reuse") == []
    assert changed_settings(cfg, saved | {"w_dense": 0.3, "dense_warmup_steps": 0}, "reuse") == [
        "dense_warmup_steps 0 -> 20", "w_dense 0.3 -> 0.5"]
    # a DenseCL run made before w_dense existed weighted its dense term by w_pix (0.5): it is today's preset
    older = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "w_dense"} | {"w_pix": 0.5,
                                                                                    "fusion_levels": ["C5"]}
    assert changed_settings(cfg, older, "reuse") == []
    mpinet = PretrainConfig.from_sources(None, method="mpinet", arch="mpinet_resnet18")
    assert changed_settings(mpinet, dataclasses.asdict(mpinet) | {"pixel_grid": 7}, "reuse") == ["pixel_grid 7 -> 14"]


def test_a_setting_given_for_a_method_that_never_reads_it_is_said_not_dropped_silently():
    """DenseCL's dense weight is w_dense: `--w-pix 0.3` with `--method densecl` (its weight before w_dense) would
    change nothing, so the user is told which setting to use instead of getting the preset without a word."""
    with pytest.warns(UserWarning, match=r"densecl never reads w_pix.*w_dense"):
        cfg = PretrainConfig.from_sources(None, method="densecl", w_pix=0.3)
    assert cfg.w_dense == 0.5
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PretrainConfig.from_sources(None, method="densecl", w_dense=0.3, t_ins=0.1)  # read by DenseCL: no word
        PretrainConfig.from_sources(None, method="mpinet", w_pix=0.5)
