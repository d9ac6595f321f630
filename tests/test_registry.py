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
