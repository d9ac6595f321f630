"""The frozen-feature probe on a hand-made labeled folder: an identity-like encoder gives the expected metrics,
random-bn re-estimates BatchNorm only, and resampling keeps cells where the backbone put them."""

import json
import os

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image

from mpinet_hub.cli import main
from mpinet_hub.downstream.probe import ProbeConfig, reestimate_batchnorm, resample_cells, run_probe
from mpinet_hub.hub import export_weights
from mpinet_hub.training import RunLock


@pytest.fixture(scope="module")
def blocks_root(tmp_path_factory):
    """Class 1 where the red band is high, in 32 px blocks: separable pixel by pixel from C2 features."""
    root = tmp_path_factory.mktemp("probe-folder")
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": ["ground", "roof"]}))
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 2)):
        for n in range(count):
            mask = np.kron(rng.integers(0, 2, (4, 4)), np.ones((32, 32))).astype(np.uint8)
            image = np.stack([np.where(mask == 1, 200, 40), np.full_like(mask, 90), np.full_like(mask, 60)], -1)
            for kind, array in (("images", image.astype(np.uint8)), ("masks", mask)):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / split / kind / f"tile{n}.png")
    return root


@pytest.fixture(scope="module")
def identity_encoder(tmp_path_factory):
    """A resnet18 whose every level carries the input bands 0-2 unchanged (subsampled), exported as a folder."""
    model = timm.create_model("resnet18", num_classes=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim == 4:
                p.zero_()
        for c in range(3):
            model.conv1.weight[c, c, 3, 3] = 1
            for layer in (model.layer2, model.layer3, model.layer4):
                layer[0].downsample[0].weight[c, c, 0, 0] = 1
    work = tmp_path_factory.mktemp("identity")
    torch.save(model.state_dict(), work / "state.pt")
    export_weights(work / "state.pt", work / "export", "mpinet_resnet18", "potsdam")
    return work / "export"


def test_probe_on_an_identity_like_encoder_separates_the_blocks(blocks_root, identity_encoder, tmp_path):
    cfg = ProbeConfig(str(identity_encoder), "folder", str(blocks_root), str(tmp_path / "run"), label_fraction=1.0,
                      levels=["C2"], steps=60, batch_size=4, lr=0.05, patch=64, window=128, device="cpu",
                      mean=[0, 0, 0], std=[1, 1, 1])
    result = run_probe(cfg)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["split"] == "test" and set(saved["per_class"]) == {"ground", "roof"}
    assert {"IoU", "F1"} <= set(saved["per_class"]["roof"])
    # only pixels next to a block edge can be wrong (logits interpolate between cells 4 px apart): about 2 px in 32
    assert result["OA"] > 93 and result["mIoU"] > 86, result
    labeled = json.loads((tmp_path / "run" / "labeled_patches.json").read_text())
    assert labeled["total_patches"] == 4 * 4 and len(labeled["patch_ids"]) == 16


def test_probe_cli_random_bn_control(blocks_root, tmp_path, capsys):
    code = main(["probe", "random-bn", "--dataset", "folder", "--data-root", str(blocks_root), "--out",
                 str(tmp_path / "rbn"), "--label-fraction", "0.5", "--steps", "5", "--batch-size", "2", "--patch", "64",
                 "--window", "128", "--device", "cpu"])
    assert code == 0
    assert "mIoU" in capsys.readouterr().out
    cfg = yaml.safe_load((tmp_path / "rbn" / "config.yaml").read_text())
    assert cfg["encoder"] == "random-bn" and cfg["label_fraction"] == 0.5
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "rbn" / "probe.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # was 0600
    subset = json.loads((tmp_path / "rbn" / "labeled_patches.json").read_text())
    assert subset["split"] == "train" and "bands" in subset  # the same record as fine-tuning writes
    # a probe folder another live process is writing is refused, and left as it was
    before = sorted(p.name for p in (tmp_path / "rbn").iterdir())
    with RunLock(tmp_path / "rbn"):
        code = main(["probe", "random-bn", "--dataset", "folder", "--data-root", str(blocks_root), "--out",
                     str(tmp_path / "rbn"), "--label-fraction", "0.5", "--steps", "5", "--batch-size", "2",
                     "--patch", "64", "--window", "128", "--device", "cpu"])
        assert code == 1 and "is in use by process" in capsys.readouterr().err
        assert sorted(p.name for p in (tmp_path / "rbn").iterdir()) == sorted([*before, ".lock"])


def test_reestimated_batchnorm_matches_the_data_statistics():
    torch.manual_seed(0)
    net = timm.create_model("resnet18", features_only=True, out_indices=(1,))
    batches = [torch.randn(4, 3, 32, 32) * 2 + 1 for _ in range(3)]
    reestimate_batchnorm(net, batches)
    pre = []
    hook = net.conv1.register_forward_hook(lambda m, i, o: pre.append(o))
    with torch.no_grad():
        for b in batches:
            net(b)
    hook.remove()
    stacked = torch.cat(pre)
    assert torch.allclose(net.bn1.running_mean, stacked.mean((0, 2, 3)), atol=1e-4)
    assert not net.training


def test_resample_cells_keeps_cells_on_the_pixels_they_read():
    # a map whose cell i holds the pixel it reads (stride * i): resampled to stride 1 it must be the identity ramp
    for stride in (4, 8, 32):
        cells = (torch.arange(8.0) * stride)[None, None, None].repeat(1, 1, 8, 1)
        out = resample_cells(cells, stride, 1, (8, stride * 7 + 1))
        assert torch.allclose(out[0, 0, 0], torch.arange(stride * 7 + 1.0), atol=1e-3)


def test_probe_and_finetune_take_a_pretraining_run_folder(blocks_root, tmp_path):
    from mpinet_hub.checkpoint import load_checkpoint
    from mpinet_hub.downstream.model import load_encoder
    from mpinet_hub.pretrain.config import PretrainConfig
    from mpinet_hub.pretrain.trainer import Trainer

    cfg = PretrainConfig.from_sources(None, dataset="folder", data_root=[str(blocks_root)], method="mocov2",
                                      arch="mpinet_resnet18", patch=64, crop=64, batch_size=4, steps=2, queue_size=16,
                                      workers=0, out=str(tmp_path / "pre"), warmup_epochs=0, device="cpu")
    Trainer(cfg).run()
    encoder = load_encoder(str(tmp_path / "pre"))
    ckpt = load_checkpoint(tmp_path / "pre" / "checkpoints" / "last.pt")
    assert encoder.base_arch == "resnet18" and encoder.mean == tuple(ckpt["norm"]["mean"])
    assert torch.equal(encoder.state_dict["layer2.0.conv1.weight"], ckpt["model"]["backbone.layer2.0.conv1.weight"])
    result = run_probe(ProbeConfig(str(tmp_path / "pre"), "folder", str(blocks_root), str(tmp_path / "probe"),
                                   label_fraction=0.5, levels=["C4", "C5"], steps=2, batch_size=2, patch=64,
                                   window=128, device="cpu"))
    assert result["encoder"] == str(tmp_path / "pre") and 0 <= result["mIoU"] <= 100


def test_a_stopped_probe_resumes_to_the_head_of_an_uninterrupted_run_and_a_finished_one_is_not_overwritten(
        blocks_root, tmp_path, capsys, monkeypatch):
    """The probe claims its folder and checkpoints like fine-tuning: stopped after its first checkpoint it continues
    from it (the study's cells do so on their own), and `mpinet probe` over a finished probe is refused unless
    --resume or --overwrite is given."""
    from safetensors.torch import load_file

    from mpinet_hub.downstream.probe import Prober

    def cfg(out):
        return ProbeConfig("random-bn", "folder", str(blocks_root), str(tmp_path / out), label_fraction=0.5,
                           steps=6, save_every=3, batch_size=2, patch=64, window=128, device="cpu")

    run_probe(cfg("whole"))
    original = Prober.compute

    def stop_at_step_four(self, batch):
        if self.step == 4:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Prober, "compute", stop_at_step_four)
    with pytest.raises(KeyboardInterrupt):
        run_probe(cfg("stopped"))
    assert not (tmp_path / "stopped" / "metrics.json").exists()
    assert (tmp_path / "stopped" / "checkpoints" / "last.pt").is_file()
    monkeypatch.setattr(Prober, "compute", original)
    resumed = run_probe(cfg("stopped"))
    whole, again = (load_file(tmp_path / out / "probe.safetensors") for out in ("whole", "stopped"))
    assert whole.keys() == again.keys() and all(torch.equal(whole[k], again[k]) for k in whole)
    assert resumed["mIoU"] == json.loads((tmp_path / "whole" / "metrics.json").read_text())["mIoU"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "stopped" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the log continues where the checkpoint was, no step twice
    args = ["probe", "random-bn", "--dataset", "folder", "--data-root", str(blocks_root), "--out",
            str(tmp_path / "whole"), "--label-fraction", "0.5", "--steps", "6", "--batch-size", "2", "--patch", "64",
            "--window", "128", "--device", "cpu"]
    stamp = (tmp_path / "whole" / "probe.safetensors").stat().st_mtime_ns
    assert main(args) == 1 and "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "whole" / "probe.safetensors").stat().st_mtime_ns == stamp
    assert main([*args, "--overwrite"]) == 0
    assert (tmp_path / "whole" / "probe.safetensors").stat().st_mtime_ns != stamp


def test_the_probe_computes_each_turned_patch_once_and_trains_the_head_it_would_without_the_cache(
        blocks_root, tmp_path):
    """The probe's only augmentation is the 8 rotations/flips of whole patches and its backbone is frozen, so the
    features of a (patch, turn) are computed once: the head and the metrics are those of a run that computes them
    every step (feature_cache_mb=0), while the backbone sees fewer images."""
    from safetensors.torch import load_file

    from mpinet_hub.downstream.probe import Prober

    seen: dict[str, int] = {}

    def run(out, cache_mb):
        cfg = ProbeConfig("random-bn", "folder", str(blocks_root), str(tmp_path / out), label_fraction=0.25,
                          steps=16, batch_size=4, patch=64, window=128, device="cpu", feature_cache_mb=cache_mb)
        prober = Prober(cfg)
        seen[out] = 0

        def count(module, args, output):
            if prober.probe.training:  # the head's steps, not the evaluation's sliding window
                seen[out] += args[0].shape[0]

        prober.probe.backbone.register_forward_hook(count)
        return prober.run()

    every_step, cached = run("every-step", 0), run("cached", 512)
    assert seen["every-step"] == 16 * 4
    assert seen["cached"] <= 4 * 8 < seen["every-step"]  # 4 labeled patches, 8 turns each, at most once
    heads = [load_file(tmp_path / out / "probe.safetensors") for out in ("every-step", "cached")]
    assert heads[0].keys() == heads[1].keys()
    for key in heads[0]:
        torch.testing.assert_close(heads[1][key], heads[0][key], rtol=1e-5, atol=1e-5)
    assert cached["mIoU"] == pytest.approx(every_step["mIoU"], abs=1e-3)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_the_training_head_folds_batchnorm_into_the_convolution_with_the_same_logits_gradients_and_statistics(
        momentum):
    from mpinet_hub.downstream.probe import LinearProbe
    from mpinet_hub.pretrain.base import feature_backbone

    torch.manual_seed(0)
    probe = LinearProbe(feature_backbone("mpinet_resnet18", 3), [0, 1], 3).train()
    probe.norm.momentum = momentum
    reference = {k: v.clone() for k, v in probe.state_dict().items() if not k.startswith("backbone.")}
    stacked = probe.features(torch.randn(3, 3, 40, 36)) * 3 + 1  # off-centre, not unit scale, like real features
    masks = torch.randint(0, 3, (3, 40, 36))
    folded = probe.head(stacked, (40, 36))
    torch.nn.functional.cross_entropy(folded, masks).backward()
    grads = [probe.classifier.weight.grad.clone(), probe.classifier.bias.grad.clone()]
    stats = [probe.norm.running_mean.clone(), probe.norm.running_var.clone(), probe.norm.num_batches_tracked.clone()]
    probe.zero_grad()
    probe.load_state_dict(reference, strict=False)
    plain = resample_cells(probe.classifier(probe.norm(stacked.permute(0, 3, 1, 2))), 4, 1, (40, 36))
    torch.nn.functional.cross_entropy(plain, masks).backward()
    # fp32 sums in another order (the fold subtracts W mu / sigma once, not mu from every cell): about 1e-5 of
    # logits of size 3; a wrong statistic (the unbiased variance, a missed mean) is off by 1e-3 and more
    torch.testing.assert_close(folded, plain, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grads[0], probe.classifier.weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads[1], probe.classifier.bias.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats[0], probe.norm.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats[1], probe.norm.running_var, rtol=1e-4, atol=1e-6)
    assert int(stats[2]) == int(probe.norm.num_batches_tracked) == 1


def test_an_encoder_of_other_bands_than_the_data_is_refused_alike_by_probe_and_finetune(
        identity_encoder, tmp_path, capsys):
    """Both said the band counts, in two wordings; only fine-tuning said the fix, and for folder data it named
    `bands=RGB` and `--bands`, which such data does not take."""
    root = tmp_path / "gray"
    (root).mkdir()
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": ["ground", "roof"]}))
    mask = np.kron(np.eye(4, dtype=np.uint8), np.ones((32, 32), np.uint8))
    for kind, array in (("images", mask * 150 + 40), ("masks", mask)):
        (root / "train" / kind).mkdir(parents=True)
        for n in range(2):
            Image.fromarray(array).save(root / "train" / kind / f"tile{n}.png")
    said = {}
    for command, encoder, crop in (("probe", [str(identity_encoder)], []),
                                   ("finetune", ["--encoder", str(identity_encoder)], ["--crop", "64"])):
        out = tmp_path / command
        assert main([command, *encoder, "--dataset", "folder", "--data-root", str(root), "--out", str(out),
                     "--steps", "1", "--patch", "64", *crop, "--device", "cpu"]) == 1
        said[command] = capsys.readouterr().err.strip().split(": error: ", 1)[1]
        assert not out.exists()
    assert said["probe"] == said["finetune"] == (
        f"encoder {identity_encoder} takes 3 band(s) but folder, read with its files' own bands, gives 1: "
        "pass an encoder pretrained on 1-band images (mpinet pretrain on them gives one)")
