"""Every registered pretraining method meets the interface the trainer, `--plan` and `mpinet diagnose` use
(pretrain/base.py), parametrised from the registry as timm's tests are from `list_models`."""

import math

import pytest
import torch

from mpinet_hub.pretrain.config import METHODS, PretrainConfig
from mpinet_hub.pretrain.plan import plan_memory
from mpinet_hub.pretrain.registry import build_method, method_class, register_method
from mpinet_hub.pretrain.views import make_two_views


def _cfg(method: str) -> PretrainConfig:
    return PretrainConfig.from_sources(None, method=method, arch="mpinet_resnet18", patch=96, crop=64, batch_size=4,
                                       steps=2, queue_size=16, pixel_grid=7, ffl_grid=4, workers=0)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_registered_method_trains_a_step_through_the_interface(method):
    torch.manual_seed(0)
    cfg = _cfg(method)
    model = build_method(cfg, 3)
    assert isinstance(model, method_class(method))
    views = make_two_views(torch.rand(4, 3, 96, 96), 64, generator=torch.Generator().manual_seed(0))
    queue_before = model.queue.clone()
    terms = model(views)
    weights = model.term_weights(cfg)
    assert "ins" in terms and set(terms) <= set(weights), (terms.keys(), weights)
    loss = model.total_loss(terms)
    assert math.isfinite(loss.item())
    loss.backward()
    assert model.online.backbone.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.target.parameters())
    assert not torch.equal(model.queue, queue_before)  # the step's keys were enqueued
    assert {"queue", "queue_ptr", "queue_real"} <= set(model.checkpoint_buffers)
    out = model.online(views.view1, views.overlap1)
    assert out["instance"].shape == (4, 128)  # what diagnose's retrieval reads
    plan = plan_memory(cfg, batch=4)
    assert plan.queue >= model.queue.numel() * 4 and plan.activations > 0


def test_a_method_name_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        register_method("mpinet")(object)


def test_a_methods_own_settings_are_declared_beside_it_and_are_what_it_says_it_owns(capsys):
    """PretrainConfig was one flat dataclass holding MPINet's 17 pixel-contrast and FFL fields and DenseCL's two:
    now each method's module declares its settings (its `settings` dataclass), the config carries them after the
    shared ones, `own_settings` is read from the declaration, and --help shows them under the method's heading."""
    import dataclasses

    from mpinet_hub.cli import main
    from mpinet_hub.pretrain.config import SharedSettings
    from mpinet_hub.pretrain.densecl import DenseCLModel, DenseCLSettings
    from mpinet_hub.pretrain.method import MPINetModel, MPINetSettings

    def names(cls):
        return [f.name for f in dataclasses.fields(cls)]

    assert names(PretrainConfig) == names(SharedSettings) + names(MPINetSettings) + names(DenseCLSettings)
    assert {"w_pix", "w_ffl", "t_pix", "fusion_levels", "pixel_grid", "ffl_grid"} <= set(names(MPINetSettings))
    assert names(DenseCLSettings) == ["w_dense", "dense_warmup_steps"]
    assert not {n for n in names(SharedSettings) if n.startswith(("ffl_", "pixel_")) or n in ("w_pix", "w_dense")}
    cfg = _cfg("mpinet")
    assert MPINetModel.own_settings(cfg) == set(names(MPINetSettings))
    assert DenseCLModel.own_settings(cfg) == set(names(DenseCLSettings))
    assert method_class("mocov2").own_settings(cfg) == set(names(MPINetSettings))  # mocov2 is an MPINet rung
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    help_text = capsys.readouterr().out
    mpinet_section = help_text.split("MPINet's own settings")[1].split("DenseCL's own settings")[0]
    assert "--ffl-calibration-ratio" in mpinet_section and "--w-dense" not in mpinet_section
    assert "--w-dense" in help_text.split("DenseCL's own settings")[1]
