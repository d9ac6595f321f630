"""Every way of loading weights that the README lists (timm names, hf-hub:, local-dir:, SMP, torch.hub),
offline, against weights exported by `mpinet export`."""

import argparse
import json
import os
import subprocess
import sys

import pytest
import safetensors.torch
import segmentation_models_pytorch as smp
import timm
import torch

import mpinet_hub
from mpinet_hub.checkpoint import CHECKPOINT_FORMAT, atomic_save
from mpinet_hub.downstream.model import save_segmentation_model
from mpinet_hub.hub import ExportError, PushRefused, card_front_matter, check_export_folder, export_weights
from mpinet_hub.hub.export import file_sha256

from .conftest import REPO_ROOT
from .fake_hub import FakeHub


def assert_same_weights(model_state: dict, reference: dict) -> None:
    keys = [k for k in reference if not k.startswith("fc.")]
    assert keys, "nothing to compare"
    for k in keys:
        assert torch.equal(model_state[k], reference[k]), k


def test_architectures_and_tags_are_registered():
    for arch in ("mpinet_resnet18", "mpinet_resnet50"):
        assert arch in timm.list_models("mpinet_*")
        tags = {name.split(".")[1] for name in timm.list_pretrained(f"{arch}.*")}
        assert tags == {"potsdam", "loveda", "uavid"}
        for tag in tags:
            cfg = timm.models.get_pretrained_cfg(f"{arch}.{tag}")
            assert cfg.hf_hub_id == f"mpinet-hub/{arch}.{tag}"
            assert cfg.num_classes == 0
            assert cfg.input_size[0] == len(cfg.band_names) == 3
            assert len(cfg.mean) == len(cfg.std) == 3
            assert cfg.first_conv == "conv1" and cfg.license and cfg.paper_ids and cfg.origin_url


def test_org_override_applies_at_call_time(monkeypatch):
    monkeypatch.setenv("MPINET_HUB_ORG", "my-lab")
    model = timm.create_model("mpinet_resnet18.uavid")
    assert model.pretrained_cfg["hf_hub_id"] == "my-lab/mpinet_resnet18.uavid"
    assert mpinet_hub.hub_repo_id("mpinet_resnet50", "loveda") == "my-lab/mpinet_resnet50.loveda"


def test_export_folder_contents(exported_potsdam, backbone_state):
    files = sorted(p.name for p in exported_potsdam.iterdir())
    assert files == ["README.md", "config.json", "model.safetensors"]
    weights = safetensors.torch.load_file(str(exported_potsdam / "model.safetensors"))
    assert not any(k.startswith("fc.") for k in weights)
    assert_same_weights(weights, backbone_state)
    config = json.loads((exported_potsdam / "config.json").read_text())
    assert config["architecture"] == "resnet18"  # plain timm: hf-hub loading needs no mpinet_hub
    assert config["num_classes"] == 0 and config["num_features"] == 512
    assert config["pretrained_cfg"]["tag"] == "potsdam"
    assert "band_names" not in config["pretrained_cfg"]
    sha = file_sha256(exported_potsdam / "model.safetensors")
    assert config["mpinet"]["sha256"] == sha and config["mpinet"]["band_names"] == ["R", "G", "B"]
    card = (exported_potsdam / "README.md").read_text()
    meta = card_front_matter(card)
    assert meta["mpinet_sha256"] == sha and meta["mpinet_evaluated"] is False and meta["library_name"] == "timm"
    assert "{{" not in card and "ISPRS" in card and "pretrained with an unrecorded method" in card
    assert "exported from a plain state dict" in card and "24 training tiles" in card.split("This export")[0]


def test_timm_tag_loads_from_offline_cache(exported_potsdam, backbone_state):
    model = timm.create_model("mpinet_resnet18.potsdam", pretrained=True)
    assert_same_weights(model.state_dict(), backbone_state)
    assert model.num_classes == 0
    with pytest.warns(UserWarning, match="without a tag loads the potsdam weights"):
        default = timm.create_model("mpinet_resnet18", pretrained=True)  # potsdam is the default tag
    assert_same_weights(default.state_dict(), backbone_state)


def test_smp_encoder_weights_naming_another_tag_is_not_silent(exported_potsdam):
    import segmentation_models_pytorch as smp

    with pytest.warns(UserWarning, match=r"tu-mpinet_resnet18\.loveda"):
        smp.Unet("tu-mpinet_resnet18", encoder_weights="loveda", classes=2)


def test_timm_features_only(exported_potsdam, backbone_state):
    model = timm.create_model("mpinet_resnet18.potsdam", pretrained=True, features_only=True, out_indices=(1, 2, 3, 4))
    assert model.feature_info.channels() == [64, 128, 256, 512]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    feats = model(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    assert torch.equal(model.state_dict()["conv1.weight"], backbone_state["conv1.weight"])


def test_timm_in_chans_4_adapts_and_3_to_fewer_is_refused(exported_potsdam, backbone_state):
    model = timm.create_model("mpinet_resnet18.potsdam", pretrained=True, in_chans=4)
    assert model.conv1.weight.shape[1] == 4
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], backbone_state["layer1.0.conv1.weight"])
    with pytest.raises(ValueError, match="in_chans=1.*allow_band_drop"):
        timm.create_model("mpinet_resnet18.potsdam", pretrained=True, in_chans=1)
    allowed = timm.create_model("mpinet_resnet18.potsdam", pretrained=True, in_chans=1, allow_band_drop=True)
    assert allowed.conv1.weight.shape[1] == 1


def test_timm_file_overlay(exported_potsdam, backbone_state):
    model = timm.create_model(
        "mpinet_resnet18.loveda", pretrained=True,
        pretrained_cfg_overlay=dict(file=str(exported_potsdam / "model.safetensors")),
    )
    assert_same_weights(model.state_dict(), backbone_state)


def test_local_dir_path(exported_potsdam, backbone_state):
    model = timm.create_model(f"local-dir:{exported_potsdam}", pretrained=True)
    assert_same_weights(model.state_dict(), backbone_state)
    assert model.pretrained_cfg["tag"] == "potsdam"


def test_hf_hub_path_in_a_process_that_never_imports_mpinet_hub(exported_potsdam, backbone_state, tmp_path, hf_home):
    out = tmp_path / "loaded.safetensors"
    code = (
        "import sys, timm, safetensors.torch\n"
        "m = timm.create_model('hf-hub:mpinet-hub/mpinet_resnet18.potsdam', pretrained=True)\n"
        "assert 'mpinet_hub' not in sys.modules, 'mpinet_hub was imported'\n"
        f"safetensors.torch.save_file({{k: v.contiguous() for k, v in m.state_dict().items()}}, {str(out)!r})\n"
        "print(m.pretrained_cfg['mean'], m.num_classes)\n"
    )
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert_same_weights(safetensors.torch.load_file(str(out)), backbone_state)


@pytest.mark.parametrize("decoder", [smp.Unet, smp.DeepLabV3Plus])
def test_smp_tu_encoder(exported_potsdam, backbone_state, decoder):
    model = decoder("tu-mpinet_resnet18.potsdam", encoder_weights=True, classes=6)
    enc = model.encoder.model.state_dict()
    assert torch.equal(enc["conv1.weight"], backbone_state["conv1.weight"])
    assert torch.equal(enc["layer4.1.conv2.weight"], backbone_state["layer4.1.conv2.weight"])
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 6, 64, 64)


def test_smp_save_and_from_pretrained_offline(exported_potsdam, tmp_path):
    model = smp.DeepLabV3Plus("tu-mpinet_resnet18.potsdam", encoder_weights=True, classes=6).eval()
    path = save_segmentation_model(model, tmp_path / "model")
    assert json.loads((path / "config.json").read_text())["encoder_weights"] is None
    reloaded = smp.from_pretrained(str(path)).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reloaded(x))


def test_torch_hub_local(exported_potsdam, backbone_state):
    model = torch.hub.load(str(REPO_ROOT), "mpinet_resnet18", pretrained=True, tag="potsdam", source="local")
    assert_same_weights(model.state_dict(), backbone_state)
    feats = torch.hub.load(str(REPO_ROOT), "mpinet_resnet18", source="local", features_only=True).eval()
    assert len(feats(torch.zeros(1, 3, 32, 32))) == 5
    # torch.hub.list/help only read GitHub repos; this is their rule for what an entrypoint is
    hubconf = torch.hub._import_module("hubconf", str(REPO_ROOT / "hubconf.py"))
    entrypoints = [f for f in dir(hubconf) if callable(getattr(hubconf, f)) and not f.startswith("_")]
    assert entrypoints == ["mpinet_resnet18", "mpinet_resnet50"]
    assert all(getattr(hubconf, name).__doc__.strip() for name in entrypoints)
    for dep in hubconf.dependencies:
        __import__(dep)


def test_unknown_tag_lists_the_tags():
    with pytest.raises(mpinet_hub.UnknownTagError, match="mpinet_resnet50.potsdam, mpinet_resnet50.loveda"):
        timm.create_model("mpinet_resnet50.sentinel2")
    with pytest.raises(mpinet_hub.UnknownTagError, match="potsdam, loveda, uavid"):
        torch.hub.load(str(REPO_ROOT), "mpinet_resnet18", tag="nope", source="local")


def test_missing_weights_say_repo_and_ways_out():
    with pytest.raises(mpinet_hub.PretrainedWeightsNotFoundError) as info:
        timm.create_model("mpinet_resnet18.uavid", pretrained=True)
    message = str(info.value)
    assert "mpinet-hub/mpinet_resnet18.uavid" in message
    assert "pretrained_cfg_overlay=dict(file=" in message and "mpinet export" in message


def test_export_of_a_training_checkpoint(tmp_path, backbone_state):
    ckpt = {
        "format": CHECKPOINT_FORMAT, "arch": "mpinet_resnet18", "method": "mpinet", "step": 7,
        "config": {"method": "mpinet", "crop": 128, "lr": 0.03},
        "norm": {"mean": [0.3, 0.3, 0.3], "std": [0.2, 0.2, 0.2], "bands": ["R", "G", "B"], "value_max": 2047},
        "model": {**{f"backbone.{k}": v for k, v in backbone_state.items()},
                  "pixel_head.proj.weight": torch.zeros(3)},
    }
    atomic_save(ckpt, tmp_path / "last.pt")
    out = tmp_path / "hub"
    export_weights(tmp_path / "last.pt", out, "mpinet_resnet18", "loveda")
    config = json.loads((out / "config.json").read_text())
    assert config["pretrained_cfg"]["mean"] == [0.3, 0.3, 0.3]
    assert config["pretrained_cfg"]["input_size"] == [3, 128, 128]
    assert config["mpinet"]["method"] == "mpinet" and config["mpinet"]["pretrain_steps"] == 7
    card = (out / "README.md").read_text()
    assert "pretrained with **MPINet**" in card and "10.1016/j.asr.2024.10.026" in card
    from mpinet_hub.downstream.model import load_encoder

    assert config["mpinet"]["value_max"] == 2047 and load_encoder(str(out)).value_max == 2047  # travels with them
    weights = safetensors.torch.load_file(str(out / "model.safetensors"))
    assert not any("head" in k for k in weights)
    assert_same_weights(weights, backbone_state)
    with pytest.raises(ExportError, match="trained with --arch mpinet_resnet18"):
        export_weights(tmp_path / "last.pt", tmp_path / "hub50", "mpinet_resnet50", "loveda")


def test_export_names_missing_and_unexpected_keys(tmp_path, backbone_state):
    broken = {k: v for k, v in backbone_state.items() if not k.startswith("layer4.1.")}
    broken["decoder.head.weight"] = torch.zeros(2)
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(ExportError, match=r"missing key\(s\) \['layer4\.1\..*unexpected key\(s\) \['decoder\.head"):
        export_weights(tmp_path / "broken.pt", tmp_path / "out", "mpinet_resnet18", "potsdam")
    assert not (tmp_path / "out").exists()  # nothing left behind
    torch.save(backbone_state, tmp_path / "r18.pt")
    with pytest.raises(ExportError, match="missing key"):
        export_weights(tmp_path / "r18.pt", tmp_path / "out", "mpinet_resnet50", "potsdam")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="junk.pt"):
        export_weights(tmp_path / "junk.pt", tmp_path / "out", "mpinet_resnet18", "potsdam")


def _cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "mpinet_hub", *args], capture_output=True, text=True,
                          env=env or dict(os.environ), cwd=cwd, timeout=300)


def test_cli_help_lists_subcommands():
    done = _cli("--help")
    assert done.returncode == 0
    for name in ("export", "push"):
        assert name in done.stdout


def test_every_option_with_a_default_shows_it_in_help():
    """argparse prints an option's default only beside a help text: an option without one hides its default."""
    from mpinet_hub.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    hidden = [f"mpinet {name} {action.option_strings[0]}" for name, parser in sub.choices.items()
              for action in parser._actions
              if action.option_strings and not action.help
              and not any(action.default is none for none in (None, False, argparse.SUPPRESS))]
    assert hidden == []
    shown = " ".join(sub.choices["probe"].format_help().split())
    assert "labeled patches per step (default: 16)" in shown
    assert "(keep it fixed across encoders) (default: 0)" in shown  # a default of 0 is shown too


def test_push_uploads_to_local_endpoint_and_refuses_bad_folders(exported_potsdam, tmp_path):
    env = dict(os.environ, HF_TOKEN="hf_testtoken")
    env.pop("HF_HUB_OFFLINE", None)
    with FakeHub() as hub:
        env["HF_ENDPOINT"] = hub.url
        refused = _cli("push", str(exported_potsdam), "--repo-id", "lab/mpinet_resnet18.potsdam", env=env)
        assert refused.returncode == 1 and "no downstream metrics" in refused.stderr
        assert hub.requests == []  # refused before any network call

        done = _cli("push", str(exported_potsdam), "--repo-id", "lab/mpinet_resnet18.potsdam",
                    "--revision", "v0.1", "--allow-unevaluated", env=env)
        assert done.returncode == 0, done.stderr
        assert hub.repos["lab/mpinet_resnet18.potsdam"].get("type", "model") == "model"
        assert hub.branches == [("lab/mpinet_resnet18.potsdam", "v0.1")]
        (commit,) = hub.commits
        assert commit["revision"] == "v0.1" and commit["oid"] in done.stdout
        assert set(commit["files"]) == {"model.safetensors", "config.json", "README.md"}
        for name, data in commit["files"].items():
            assert data == (exported_potsdam / name).read_bytes(), name
        assert all(h == "Bearer hf_testtoken" for h in hub.auth_headers)

    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for name in ("config.json", "README.md"):
        (tampered / name).write_bytes((exported_potsdam / name).read_bytes())
    weights = safetensors.torch.load_file(str(exported_potsdam / "model.safetensors"))
    weights["conv1.weight"] = weights["conv1.weight"] + 1
    safetensors.torch.save_file(weights, str(tampered / "model.safetensors"))
    problems = check_export_folder(tampered, allow_unevaluated=True)
    assert any("config.json sha256" in p for p in problems) and any("README.md sha256" in p for p in problems)
    with pytest.raises(PushRefused):
        from mpinet_hub.hub import push_folder

        push_folder(tampered, "lab/x", allow_unevaluated=True, endpoint="http://127.0.0.1:9")


def test_missing_weights_fail_at_once_offline_or_unreachable_with_the_ways_out(tmp_path, monkeypatch):
    import socket

    from huggingface_hub import constants

    from mpinet_hub import PretrainedWeightsNotFoundError

    downloads = []
    monkeypatch.setattr("timm.models._hub.hf_hub_download", lambda *a, **k: downloads.append(a) or 1 / 0)
    with pytest.raises(PretrainedWeightsNotFoundError, match="HF_HUB_OFFLINE is set(.|\n)*install_to_hf_cache"):
        timm.create_model("mpinet_resnet18.uavid", pretrained=True)  # the test session runs offline
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError("no route")))
    with pytest.raises(PretrainedWeightsNotFoundError, match="cannot be reached \\(no route\\)"):
        timm.create_model("mpinet_resnet18.uavid", pretrained=True)
    assert downloads == []  # no download attempt, so none of huggingface_hub's retries
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors: no such weights file"):
        timm.create_model("mpinet_resnet18.uavid", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / "nowhere.safetensors")))


def test_hf_hub_paths_to_mpinet_repos_fail_at_once_when_unreachable_with_the_ways_out(monkeypatch):
    """Before: `hf-hub:` (timm) and `tu-hf_hub:` (SMP) went straight to huggingface_hub, which retried for 23-47 s
    offline before its generic error; other repos are left to timm."""
    import socket

    import segmentation_models_pytorch as smp
    from huggingface_hub import constants

    from mpinet_hub import PretrainedWeightsNotFoundError

    downloads = []
    monkeypatch.setattr("timm.models._hub.hf_hub_download", lambda *a, **k: downloads.append(a) or 1 / 0)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError("no route")))
    with pytest.raises(PretrainedWeightsNotFoundError, match="cannot be reached \\(no route\\)(.|\n)*Ways out"):
        timm.create_model("hf-hub:someorg/mpinet_resnet18.loveda", pretrained=True)
    with pytest.raises(PretrainedWeightsNotFoundError, match="someorg/mpinet_resnet18.uavid"):
        smp.Unet("tu-hf_hub:someorg/mpinet_resnet18.uavid@v1", encoder_weights=True, classes=3)
    assert downloads == []  # no download attempt, so none of huggingface_hub's retries
    with pytest.raises(ZeroDivisionError):  # another repo goes to timm's download as before
        timm.create_model("hf-hub:someorg/convnext_tiny.in1k", pretrained=True)
    assert len(downloads) == 1


def test_verify_checks_a_folder_and_a_cached_repo_pinned_or_not(exported_potsdam, tmp_path, capsys):
    import shutil

    from mpinet_hub.cli import main

    assert main(["verify", str(exported_potsdam)]) == 0
    assert main(["verify", "mpinet-hub/mpinet_resnet18.potsdam"]) == 0  # from the offline cache
    assert main(["verify", "mpinet-hub/mpinet_resnet18.potsdam@main"]) == 0  # pinned to a revision
    assert "matches the sha256" in capsys.readouterr().out
    tampered = tmp_path / "tampered"
    shutil.copytree(exported_potsdam, tampered)
    data = bytearray((tampered / "model.safetensors").read_bytes())
    data[-1] ^= 1  # one flipped bit in the last tensor
    (tampered / "model.safetensors").write_bytes(bytes(data))
    assert main(["verify", str(tampered)]) == 1
    assert "does not match" in capsys.readouterr().out


def test_push_with_a_bad_token_or_no_route_ends_in_one_line(exported_potsdam):
    env = dict(os.environ, HF_TOKEN="hf_revoked")
    env.pop("HF_HUB_OFFLINE", None)
    with FakeHub() as hub:
        env["HF_ENDPOINT"] = hub.url
        denied = _cli("push", str(exported_potsdam), "--repo-id", "lab/x", "--allow-unevaluated", env=env)
    assert denied.returncode == 2 and "401" in denied.stderr and "Traceback" not in denied.stderr
    assert hub.commits == []
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there
    unreachable = _cli("push", str(exported_potsdam), "--repo-id", "lab/x", "--allow-unevaluated", env=env)
    assert unreachable.returncode == 2 and "Traceback" not in unreachable.stderr
    assert "could not be reached" in unreachable.stderr and "nothing was pushed" in unreachable.stderr



def _tamper(weights_path):
    """Change one weight of a safetensors file, keeping it a valid file (only the sha256 can tell)."""
    state = safetensors.torch.load_file(str(weights_path))
    state["conv1.weight"][0, 0, 0, 0] += 1.0
    safetensors.torch.save_file(state, str(weights_path), metadata={"format": "pt"})


def test_weights_are_verified_on_load_against_the_recorded_sha256(exported_potsdam, tmp_path, monkeypatch):
    import shutil

    from mpinet_hub.downstream.model import load_encoder
    from mpinet_hub.hub import install_to_hf_cache
    from mpinet_hub.integrity import WeightsIntegrityError

    folder = tmp_path / "export"
    shutil.copytree(exported_potsdam, folder)
    load_encoder(str(folder))  # intact: loads
    _tamper(folder / "model.safetensors")
    with pytest.raises(WeightsIntegrityError, match=r"model\.safetensors: sha256 .* does not match .*config\.json"):
        load_encoder(str(folder))  # an OSError: the CLI ends it in one line, exit 2
    with pytest.raises(WeightsIntegrityError, match="model.safetensors"):
        timm.create_model("mpinet_resnet18.potsdam", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")))
    install_to_hf_cache(folder, "tampered-org/mpinet_resnet18.potsdam")
    monkeypatch.setenv("MPINET_HUB_ORG", "tampered-org")
    with pytest.raises(WeightsIntegrityError, match="Download it again"):
        timm.create_model("mpinet_resnet18.potsdam", pretrained=True)


def test_export_refuses_a_data_set_tag_for_weights_pretrained_on_other_data(tmp_path, backbone_state):
    """compare exported folder-pretrained weights as `potsdam`, so their card claimed the ISPRS licence."""
    for dataset, hint in (("folder", "your own images"), ("loveda", "--tag loveda")):
        ckpt = {"format": CHECKPOINT_FORMAT, "arch": "mpinet_resnet18", "method": "mpinet", "step": 7,
                "config": {"method": "mpinet", "dataset": dataset, "data_root": ["/data/mine"], "crop": 128},
                "model": {f"backbone.{k}": v for k, v in backbone_state.items()}}
        atomic_save(ckpt, tmp_path / f"{dataset}.pt")
        with pytest.raises(ExportError, match=hint):
            export_weights(tmp_path / f"{dataset}.pt", tmp_path / f"hub-{dataset}", "mpinet_resnet18", "potsdam")
        assert not (tmp_path / f"hub-{dataset}").exists()
    export_weights(tmp_path / "loveda.pt", tmp_path / "hub", "mpinet_resnet18", "loveda")  # its own tag: fine
    assert "LoveDA" in (tmp_path / "hub" / "README.md").read_text()


def test_an_exports_config_says_what_its_weights_were_trained_on_not_only_the_tags_release(tmp_path):
    """Before: a 5-step export from a synthetic folder said only "ISPRS Potsdam (24 training tiles, ...)"."""
    import json

    from mpinet_hub.cli import main
    from mpinet_hub.data.synth import synth_dataset

    data = tmp_path / "synthetic-potsdam"
    synth_dataset("potsdam", data, tiles=3, size=128, seed=0)
    run = tmp_path / "run"
    assert main(["pretrain", "--dataset", "potsdam", "--data-root", str(data), "--arch", "mpinet_resnet18",
                 "--method", "mocov2", "--patch", "96", "--crop", "64", "--batch-size", "4", "--queue-size", "16",
                 "--steps", "2", "--device", "cpu", "--out", str(run)]) == 0
    assert main(["export", str(run / "checkpoints" / "last.pt"), str(tmp_path / "hub"), "--arch",
                 "mpinet_resnet18", "--tag", "potsdam"]) == 0
    described = json.loads((tmp_path / "hub" / "config.json").read_text())["pretrained_cfg"]["description"]
    assert "these weights: 2 steps" in described and "synthetic-potsdam" in described
