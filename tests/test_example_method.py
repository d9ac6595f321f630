"""A pretraining method without a queue is a new file plus its registration line (tests/example_method.py): the
CLI trains it, checkpoints it, plots its loss without a chance line, and `mpinet diagnose` and `mpinet export`
read its run; nothing in mpinet_hub names it."""

import importlib
import json
import sys

import pytest
import torch

from mpinet_hub.checkpoint import load_checkpoint
from mpinet_hub.cli import main
from mpinet_hub.data.synth import synth_dataset
from mpinet_hub.pretrain.config import PretrainConfig
from mpinet_hub.pretrain.diagnose import diagnose, format_diagnosis
from mpinet_hub.pretrain.registry import _IMPLEMENTATIONS, METHODS


@pytest.fixture
def example_method():
    """Registered for the test only: the registry is global, and the other tests walk it."""
    module = importlib.import_module("tests.example_method")
    yield module
    METHODS.pop("byol-example", None)
    _IMPLEMENTATIONS.pop("byol-example", None)
    sys.modules.pop("tests.example_method", None)


def test_a_method_without_a_queue_trains_is_diagnosed_and_exported(example_method, tmp_path, capsys):
    synth_dataset("potsdam", tmp_path / "data", tiles=3, size=192, seed=5)
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "byol-example", "--dataset", "potsdam", "--data-root",
                 str(tmp_path / "data"), "--arch", "mpinet_resnet18", "--patch", "96", "--crop", "64", "--batch-size",
                 "4", "--steps", "3", "--workers", "0", "--device", "cpu", "--out", str(run)]) == 0
    # its identity leaves out what MPINet and DenseCL own, with nothing of theirs naming it
    inert = PretrainConfig.from_sources(None, method="byol-example").inert_settings()
    assert {"w_pix", "w_ffl", "pixel_grid", "ffl_grid", "fusion_levels", "w_dense", "dense_warmup_steps"} <= inert
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and all(0 <= r["ins"] <= 4 for r in records)
    assert (run / "loss.png").stat().st_size > 1000
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["method"] == "byol-example" and "queue" not in ckpt["buffers"]

    d = diagnose(run, retrieval_windows=4)
    assert d["chance"] is None and d["queue_size"] is None and d["key_effective_rank"] is None
    assert d["ins_min"] == min(r["ins"] for r in records)  # no queue to fill: every step counts
    assert 0 <= d["retrieval"] <= 1 and set(d["backbone_gradients"]) == {"ins"}
    text = format_diagnosis(d)
    assert "no chance level (no negatives)" in text and "keys:" not in text and "chance ln(K+1)" not in text

    capsys.readouterr()
    hub = tmp_path / "hub"
    assert main(["export", str(run / "checkpoints" / "last.pt"), str(hub), "--arch", "mpinet_resnet18",
                 "--tag", "potsdam"]) == 0
    card = (hub / "README.md").read_text()
    assert "`byol-example`, a pretraining method registered with mpinet-hub" in card and "**MPINet**" not in card
    from safetensors.torch import load_file

    released = load_file(hub / "model.safetensors")
    assert torch.equal(released["layer4.1.conv2.weight"], ckpt["model"]["backbone.layer4.1.conv2.weight"])
