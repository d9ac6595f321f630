"""The method at the scale users run it: cell alignment at every level, band-name augmentation, shuffling BN,
FFL calibration on real keys, a pixel loss linear in the batch, and a one-factor ablation ladder."""

import copy
import dataclasses
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from mpinet_hub.models import MPINET_ARCHS
from mpinet_hub.pretrain.config import ABLATION_LADDER, METHODS, PretrainConfig
from mpinet_hub.pretrain.losses import PixelInfoNCELoss
from mpinet_hub.pretrain.method import STRIDES, MPINetModel, cell_centre, roi_grid
from mpinet_hub.pretrain.registry import build_method
from mpinet_hub.pretrain.shuffle_bn import SplitBatchNorm2d, convert_split_batchnorm, shuffled
from mpinet_hub.pretrain.views import MultibandJitter, PhotometricAugment, make_two_views, undo_geometry

# --- 1. cells line up at every level


def _coordinate_images(b: int, size: int) -> torch.Tensor:
    """Channels 0/1 hold each pixel's continuous x/y centre coordinate (j + 0.5)."""
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return torch.stack([xx, yy])[None].repeat(b, 1, 1, 1).double()


def _inside_cell_hull(box: torch.Tensor, grid: int, stride: int, out: int) -> torch.Tensor:
    """(B, 1, S, S): grid cells whose whole bin lies between the first and last cell centres of the map, where
    bilinear sampling interpolates; beyond them any RoIAlign can only repeat the edge cell."""
    edges = torch.linspace(0, 1, grid + 1)
    lo, hi = 0.5, stride * (out // stride - 1) + 0.5

    def inside(a, b):
        pos = a[:, None] + (b - a)[:, None] * edges[None]
        return (pos[:, :-1] >= lo) & (pos[:, 1:] <= hi)

    return (inside(box[:, 1], box[:, 3])[:, :, None] & inside(box[:, 0], box[:, 2])[:, None, :])[:, None]


@pytest.mark.parametrize("level", range(4))
def test_stand_in_backbone_cells_cover_the_same_ground_at_every_level(level):
    stride, grid = STRIDES[level], 14 if level < 3 else 7
    views = make_two_views(_coordinate_images(64, 256).float(), out=256, generator=torch.Generator().manual_seed(0))
    identity = nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(2)[:, :, None, None])
    grids, inside = [], []
    for view, box, geom in ((views.view1, views.overlap1, views.geom1), (views.view2, views.overlap2, views.geom2)):
        feat = view[..., ::stride, ::stride]  # cell i reads input pixel stride * i, as a ResNet's cells do
        g, _ = roi_grid(feat, [b[None] for b in box], grid, stride, identity)
        grids.append(undo_geometry(g.detach(), geom))
        inside.append(undo_geometry(_inside_cell_hull(box, grid, stride, 256).float(), geom)[:, 0] > 0)
    scale = ((views.geom1.boxes[:, 2] - views.geom1.boxes[:, 0]) / 256 +
             (views.geom2.boxes[:, 2] - views.geom2.boxes[:, 0]) / 256) / 2  # source px per view px
    mismatch = (grids[0] - grids[1]).norm(dim=1) / (stride * scale[:, None, None])  # in cells of this level
    interior = inside[0] & inside[1]
    assert interior.float().mean() > 0.3
    assert mismatch[interior].mean() < 0.01, f"C{level + 2}: {mismatch[interior].mean():.3f} cells"
    # Border bins past the last cell centre repeat the edge cell: at most half a cell there, and on C5 of a
    # 256 px view (8 cells) that border is an eighth of the map, so the mean over all cells stays near 0.1.
    assert mismatch.mean() < (0.1 if level < 3 else 0.15), f"C{level + 2}: {mismatch.mean():.3f} cells"


def _measured_cell_centre(arch: str, level: int) -> tuple[float, float]:
    """Gradient centroid (x) of an interior cell of `level`, with constant positive weights so that every
    layer spreads symmetrically around where it reads: the backbone's own cell-centre convention."""
    stride = STRIDES[level]
    size = {0: 128, 1: 256, 2: 384, 3: 640}[level]  # the probed cell's receptive field stays inside the image
    index = size // stride // 2
    net = timm.create_model(MPINET_ARCHS[arch][0], features_only=True, out_indices=(level + 1,), in_chans=1).double()
    net.eval()
    for name, m in list(net.named_modules()):
        if isinstance(m, nn.MaxPool2d):  # same window; a max routes the gradient to one (tied) input
            setattr(net, name, nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
    x = torch.ones(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    net(x)[0][0, :, index, index].sum().backward()
    weight = x.grad[0, 0].abs().sum(0)
    return float((weight * (torch.arange(size) + 0.5)).sum() / weight.sum()), cell_centre(index, stride)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(MPINET_ARCHS))
def test_real_backbone_cells_sit_where_roi_grid_samples_them(arch):
    for level in range(4):
        measured, assumed = _measured_cell_centre(arch, level)
        assert measured == pytest.approx(assumed, abs=0.01), (arch, level, measured, assumed)


# --- 2. augmentation by band names


def test_photometric_augment_decides_by_band_names_not_count():
    kinds = {names: [type(m).__name__ for m in PhotometricAugment(list(names), 64, keep_colour=False).aug]
             for names in (("R", "G", "B"), ("IR", "R", "G"), ("R", "G", "B", "IR"))}
    assert "ColorJitter" in kinds[("R", "G", "B")] and "RandomGrayscale" in kinds[("R", "G", "B")]
    for names in (("IR", "R", "G"), ("R", "G", "B", "IR")):  # IRRG: three bands, but no hue or saturation
        assert "ColorJitter" not in kinds[names] and "RandomGrayscale" not in kinds[names]
        assert "MultibandJitter" in kinds[names]
    with pytest.raises(TypeError, match="band names"):
        PhotometricAugment(3, 64)


def test_the_default_keeps_rgb_hue_and_keep_colour_false_does_not():
    torch.manual_seed(0)
    green = torch.zeros(64, 3, 16, 16)
    green[:, 1] = 0.6
    green[:, 0] = green[:, 2] = 0.2
    jittered = PhotometricAugment(["R", "G", "B"], 16, keep_colour=False)(green).mean((2, 3))
    kept = PhotometricAugment(["R", "G", "B"], 16)(green).mean((2, 3))
    assert (kept[:, 1] > kept[:, 0] + 0.05).all() and (kept[:, 1] > kept[:, 2] + 0.05).all()  # still green
    assert not torch.allclose(kept, green.mean((2, 3)))  # but brightness/contrast did change
    assert ((jittered[:, 1] - jittered[:, 0]).abs() < 1e-3).any()  # grayscale (p 0.2) took the colour of some


@pytest.mark.parametrize("names", [("IR", "R", "G"), ("R", "G", "B", "IR"), ("R", "G", "B", "IR", "DSM")])
def test_non_rgb_jitter_is_multiplicative_and_never_clips_a_flat_image(names):
    torch.manual_seed(0)
    flat = torch.full((400, len(names), 16, 16), 0.3)
    out = PhotometricAugment(list(names), 16)(flat)
    means = out.mean(dim=(1, 2, 3))
    assert means.min() >= 0.3 * 0.6 - 1e-6 and means.max() <= 0.3 * 1.4 + 1e-6  # brightness as ColorJitter's
    assert means.std() > 0.03  # and it does jitter
    assert ((out <= 0) | (out >= 1)).float().mean() == 0


def test_multiband_contrast_keeps_each_image_mean():
    torch.manual_seed(1)
    x = torch.rand(64, 4, 8, 8) * 0.5 + 0.25
    jitter = MultibandJitter(brightness=0.0, contrast=0.4, p=1.0)
    out = jitter(x)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)
    assert not torch.allclose(out, x)


# --- 3. shuffling BN and calibration on real keys


def test_split_batchnorm_normalises_each_split_with_its_own_statistics():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5) + torch.arange(8.0)[:, None, None, None]  # every sample its own mean
    bn = nn.BatchNorm2d(3)
    split = convert_split_batchnorm(nn.Sequential(bn), 4)[0]
    assert isinstance(split, SplitBatchNorm2d) and set(split.state_dict()) == set(nn.BatchNorm2d(3).state_dict())
    out = split(x)
    for g in range(4):  # split g holds samples 2g and 2g + 1: consecutive blocks, on every layout
        part = x[2 * g: 2 * g + 2]
        ref = F.batch_norm(part, None, None, training=True, eps=split.eps)
        assert torch.allclose(out[2 * g: 2 * g + 2], ref, atol=1e-5)
    assert not torch.allclose(out, F.batch_norm(x, None, None, training=True), atol=1e-2)
    split.eval()
    assert torch.allclose(split(x), F.batch_norm(x, split.running_mean, split.running_var, eps=split.eps))


@pytest.mark.parametrize("method", ["mocov2", "mpinet", "densecl"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_a_query_never_shares_batchnorm_statistics_with_its_positive(method, channels_last):
    """The online batch is cat(view1, view2): if the two views of an image shared a BatchNorm split, a query's
    statistics would carry its positive's input (a leak the loss can exploit). Changing only view2[i] must leave
    every view1 output unchanged, bit for bit, on both memory layouts (the GPU runs channels_last, the CPU NCHW)."""
    torch.manual_seed(0)
    from mpinet_hub.pretrain.registry import build_method

    cfg = _cfg(method=method, batch_size=8, bn_splits=2, bn_split_samples=2, crop=64)
    net = build_method(cfg, 3).online.train()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)
    views = make_two_views(torch.rand(8, 3, 96, 96), 64, generator=torch.Generator().manual_seed(0))
    boxes = torch.cat([views.overlap1, views.overlap2])

    def first_views(view2: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.cat([views.view1, view2]).contiguous(memory_format=layout)
        with torch.no_grad():
            return {k: v[:8] for k, v in net(x, boxes).items()}

    before = first_views(views.view2)
    changed = views.view2.clone()
    changed[0] = torch.rand_like(changed[0])
    after = first_views(changed)
    for name in before:
        assert torch.equal(before[name], after[name]), f"{name} of view1 moved when only view2[0] changed"


def test_split_batchnorm_groups_alike_on_both_layouts():
    torch.manual_seed(0)
    x = torch.randn(12, 3, 5, 5) + torch.arange(12.0)[:, None, None, None]
    nchw, nhwc = SplitBatchNorm2d(3, 3), SplitBatchNorm2d(3, 3)
    out = nchw(x)
    assert torch.allclose(out, nhwc(x.contiguous(memory_format=torch.channels_last)), atol=1e-5)
    assert torch.allclose(nchw.running_mean, nhwc.running_mean) and torch.allclose(nchw.running_var, nhwc.running_var)


def test_split_batchnorm_on_channels_last_normalises_blocks_without_leaving_the_layout():
    torch.manual_seed(0)
    x = (torch.randn(8, 3, 5, 5) + torch.arange(8.0)[:, None, None, None]).contiguous(memory_format=torch.channels_last)
    split = SplitBatchNorm2d(3, 4)
    out = split(x)
    assert out.is_contiguous(memory_format=torch.channels_last)  # no copy to NCHW and back at every layer
    means, variances = [], []
    for g in range(4):  # split g holds samples 2g and 2g + 1
        mean, var = torch.zeros(3), torch.ones(3)
        ref = F.batch_norm(x[2 * g: 2 * g + 2], mean, var, training=True, momentum=split.momentum, eps=split.eps)
        assert torch.allclose(out[2 * g: 2 * g + 2], ref, atol=1e-5)
        means.append(mean)
        variances.append(var)
    assert torch.allclose(split.running_mean, torch.stack(means).mean(0), atol=1e-6)
    assert torch.allclose(split.running_var, torch.stack(variances).mean(0), atol=1e-6)


def test_split_batchnorm_keeps_at_least_32_samples_per_split_where_the_batch_allows():
    """A 32-image batch (64 views) in 8 splits normalised over 8 samples each, and the instance loss stayed
    within 0.06 of chance over 150 CPU steps; in 2 splits of 32 it fell 0.22 below (docs/evidence_history.md)."""
    cfg = PretrainConfig.from_sources(None, method="mocov2", arch="mpinet_resnet18", crop=32)
    bn = next(m for m in MPINetModel(cfg, 3).online.modules() if isinstance(m, SplitBatchNorm2d))
    torch.manual_seed(0)
    for n, splits in ((64, 2), (256, 8), (512, 8), (8, 2)):
        x = torch.randn(n, bn.num_features, 2, 2) + torch.arange(float(n))[:, None, None, None]
        out = bn(x)
        size = n // splits
        part = x[size: 2 * size]
        assert torch.allclose(out[size: 2 * size], F.batch_norm(part, None, None, training=True, eps=bn.eps),
                              atol=1e-4)


@pytest.mark.parametrize("size", [3, 4])
def test_orientation_gather_matches_flips_and_rotations_and_undoes_them(size):
    from mpinet_hub.pretrain.views import ViewGeometry, _apply_orientation

    codes = torch.arange(16)
    geom = ViewGeometry(torch.zeros(16, 4), codes // 8 == 1, codes // 4 % 2 == 1, codes % 4)
    x = torch.randn(16, 2, size, size)
    out = _apply_orientation(x, geom)
    for i in range(16):
        ref = x[i]
        ref = ref.flip(-1) if geom.hflip[i] else ref
        ref = ref.flip(-2) if geom.vflip[i] else ref
        assert torch.equal(out[i], torch.rot90(ref, int(geom.rot[i]), dims=(-2, -1)))
    assert torch.equal(_apply_orientation(out, geom, inverse=True), x)
    assert torch.equal(undo_geometry(out.contiguous(memory_format=torch.channels_last), geom), x)


def test_shuffled_forward_moves_samples_across_splits_and_restores_order():
    seen = []

    def spy(x, boxes):
        seen.append(x[:, 0, 0, 0].clone())
        return {"out": x.mean((1, 2, 3)) * 2, "boxes": boxes}

    x = torch.arange(64.0)[:, None, None, None].repeat(1, 1, 2, 2)
    boxes = torch.arange(64.0)[:, None].repeat(1, 4)
    torch.manual_seed(0)
    out = shuffled(spy, x, boxes)
    assert torch.equal(out["out"], torch.arange(64.0) * 2) and torch.equal(out["boxes"], boxes)
    order = seen[0].long()
    assert not torch.equal(order, torch.arange(64))
    same_split = (order // 8 == torch.arange(64) // 8).float().mean()
    assert same_split < 0.4  # a key lands in its query's split about 1 time in 8, not always


def _cfg(**kw) -> PretrainConfig:
    base = dict(arch="mpinet_resnet18", crop=64, batch_size=4, queue_size=16, pixel_grid=7, ffl_grid=4)
    return PretrainConfig.from_sources(None, **{**base, **kw})


def test_target_network_sees_a_shuffled_batch_with_split_batchnorm():
    torch.manual_seed(0)
    model = MPINetModel(_cfg(method="mocov2"), 3)
    assert any(isinstance(m, SplitBatchNorm2d) for m in model.online.modules())
    assert any(isinstance(m, SplitBatchNorm2d) for m in model.target.modules())
    orders = {}
    for name in ("online", "target"):
        getattr(model, name).backbone.register_forward_pre_hook(
            lambda mod, args, name=name: orders.__setitem__(name, args[0][:, 0].mean((1, 2)).clone()))
    views = make_two_views(torch.rand(4, 3, 96, 96), 64, generator=torch.Generator().manual_seed(0))
    model(views)
    assert not torch.allclose(orders["online"], orders["target"])
    assert torch.allclose(orders["online"].sort().values, orders["target"].sort().values)
    baseline = MPINetModel(_cfg(method="mocov2", shuffle_bn=False), 3)
    assert not any(isinstance(m, SplitBatchNorm2d) for m in baseline.modules())


def test_auto_ffl_weight_is_calibrated_on_trained_heads_once_the_queue_holds_real_keys():
    torch.manual_seed(0)
    # 8 keys a step: the queue of 16 is real after 2 steps; the heads train 3 steps before the 2-step window
    cfg = _cfg(method="mpinet", ffl_calibration_steps=2, ffl_head_warmup=3)
    model = MPINetModel(cfg, 3)
    seen = []
    for step in range(7):
        views = make_two_views(torch.rand(4, 3, 96, 96), 64, generator=torch.Generator().manual_seed(step))
        terms = model(views)
        total = model.total_loss(terms)
        seen.append((float(terms["ins"]), float(terms["pix"]), float(terms["ffl"]), model.ffl_weight(),
                     float(total.detach())))
    for ins, pix, _, _, total in seen[:5]:  # steps 0-2: head warm-up; 3-4: the window (fixed at its end)
        assert total == pytest.approx(cfg.w_ins * ins + cfg.w_pix * pix, rel=1e-6)
    assert [s[3] for s in seen[:4]] == [0] * 4
    window = seen[3:5]
    expected = 0.5 * sum(s[0] for s in window) / sum(s[2] for s in window)
    assert all(s[3] == pytest.approx(expected, rel=1e-5) for s in seen[4:])
    ins, pix, ffl, weight, total = seen[6]
    assert total == pytest.approx(ins + pix + weight * ffl, rel=1e-5)


def test_ffl_heads_learn_while_the_weight_is_calibrated_and_the_backbone_trains_on_the_other_terms():
    """Calibrating against frozen random heads measured a projection that halved within 55 steps of training."""
    torch.manual_seed(0)
    model = MPINetModel(_cfg(method="mpinet"), 3)
    twin = copy.deepcopy(model)
    views = make_two_views(torch.rand(4, 3, 96, 96), 64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    model.total_loss(model(views)).backward()
    torch.manual_seed(1)
    terms = twin(views)
    (twin.cfg.w_ins * terms["ins"] + twin.cfg.w_pix * terms["pix"]).backward()
    head = [p.grad for p in [*model.online.ffl_head.parameters(), *model.online.ffl_predictor.parameters()]]
    assert all(g is not None for g in head) and sum(float(g.abs().sum()) for g in head) > 0
    for (name, p), q in zip(model.online.backbone.named_parameters(), twin.online.backbone.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), name


# --- 4. a pixel loss linear in the batch


def _dense_reference(online, target, t, other_images_only):
    b, d, s, _ = online.shape
    a = online.permute(0, 2, 3, 1).reshape(-1, d)
    k = target.permute(0, 2, 3, 1).reshape(-1, d)
    logits = a @ k.t() / t
    owner = torch.arange(b * s * s) // (s * s) if other_images_only else torch.arange(b * s * s)
    same = owner[:, None] == owner[None]
    pos = logits.diagonal()
    return (torch.logsumexp(torch.cat([pos[:, None], logits.masked_fill(same, float("-inf"))], 1), 1) - pos).mean()


@pytest.mark.parametrize("negatives", ["other-images", "all-cells"])
def test_exact_chunked_pixel_loss_equals_the_dense_form_in_value_and_gradient(negatives):
    torch.manual_seed(0)
    online = F.normalize(torch.randn(3, 8, 4, 4), dim=1).requires_grad_()
    target = F.normalize(torch.randn(3, 8, 4, 4), dim=1)
    loss = PixelInfoNCELoss(0.3, num_negatives=None, negatives=negatives, chunk_elements=100)(online, target)
    (grad,) = torch.autograd.grad(loss, online)
    ref = _dense_reference(online, target, 0.3, negatives == "other-images")
    (ref_grad,) = torch.autograd.grad(ref, online)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(grad, ref_grad, atol=1e-6)


def test_other_images_negatives_exclude_every_cell_of_the_anchor_image():
    # two images; within an image all cells are identical (near-duplicates), across images orthogonal
    online = torch.zeros(2, 2, 2, 2)
    online[0, 0], online[1, 1] = 1, 1
    loss = PixelInfoNCELoss(0.3, num_negatives=None)(online, online.clone())
    assert loss.item() == pytest.approx(math.log(math.exp(1 / 0.3) + 4) - 1 / 0.3, rel=1e-6)
    single = online[:1].clone().requires_grad_()  # one image: nothing to contrast, loss 0 with a finite gradient
    (grad,) = torch.autograd.grad(PixelInfoNCELoss(0.3)(single, single.detach()), single)
    assert torch.isfinite(grad).all() and grad.abs().max() == 0
    pixcontrast = PixelInfoNCELoss(0.3, num_negatives=None, negatives="all-cells")(online, online.clone())
    assert pixcontrast.item() > loss.item() + 1  # same-image duplicates as negatives: a much harder, wrong task


@pytest.mark.parametrize("batch", [4, 16])
def test_sampled_negatives_bound_the_logits_per_anchor(batch, monkeypatch):
    shapes = []
    original = PixelInfoNCELoss._loss

    def spy(self, anchors, positive, keys, *rest):
        shapes.append((anchors.shape[0], keys.shape[0]))
        return original(self, anchors, positive, keys, *rest)

    monkeypatch.setattr(PixelInfoNCELoss, "_loss", spy)
    x = F.normalize(torch.randn(batch, 8, 14, 14), dim=1)
    PixelInfoNCELoss(0.3, num_negatives=512)(x, x)
    assert shapes == [(batch * 196, 512)]  # columns fixed: memory linear in the batch
    shapes.clear()
    PixelInfoNCELoss(0.3, num_negatives=None, chunk_elements=1 << 14)(x, x)
    assert all(rows * cols <= max(1 << 14, cols) for rows, cols in shapes)


# --- 5. one factor per rung


def test_ablation_ladder_changes_one_factor_per_rung():
    resolved = [dataclasses.asdict(PretrainConfig.from_sources(None, method=m)) for m in ABLATION_LADDER]
    for lower, upper in zip(resolved, resolved[1:]):
        changed = sorted(k for k in lower if lower[k] != upper[k] and k != "method")
        assert len(changed) == 1, (lower["method"], upper["method"], changed)
    original = PretrainConfig.from_sources(None, method="mocov2-original")
    assert (original.momentum_schedule, original.momentum) == ("fixed", 0.999)
    assert {m: PretrainConfig.from_sources(None, method=m).momentum_schedule for m in ABLATION_LADDER} == dict.fromkeys(
        ABLATION_LADDER, "cosine")
    assert set(ABLATION_LADDER) < set(METHODS)


def test_ffl_heads_can_train_on_a_scale_free_loss_during_the_warmup():
    """The study's logs showed L_ffl flat over the 50-step head warmup (about 0.0059) and falling to 0.0026 only
    once the weight (~470) was fixed: the raw loss's gradient is too small to train the heads. With
    ffl_head_loss "log" they get the gradient of log L_ffl (the raw one divided by L_ffl), the total's value and
    the backbone's gradients unchanged."""
    grads, values = {}, {}
    for mode in ("raw", "log"):
        torch.manual_seed(0)
        model = MPINetModel(_cfg(method="mpinet", ffl_head_loss=mode), 3)
        views = make_two_views(torch.rand(4, 3, 96, 96), 64, generator=torch.Generator().manual_seed(0))
        torch.manual_seed(1)
        terms = model(views)
        total = model.total_loss(terms)
        total.backward()
        values[mode] = (float(total), float(terms["ffl"]))
        grads[mode] = {n: p.grad.clone() for n, p in model.online.named_parameters() if p.grad is not None}
    assert values["log"][0] == pytest.approx(values["raw"][0])
    ffl = values["raw"][1]
    for name, g in grads["raw"].items():
        expected = g / ffl if name.startswith(("ffl_head", "ffl_predictor")) else g
        assert torch.allclose(grads["log"][name], expected, rtol=1e-3, atol=1e-6), name
    with pytest.raises(ValueError, match="ffl_head_loss 'square': raw or log"):
        _cfg(method="mpinet", ffl_head_loss="square")


def test_pretraining_keeps_rgb_colour_by_default_and_no_keep_colour_restores_moco_v2_jitter():
    """keep_colour was chosen on the val band of two real sets (bench/evidence_notes.md, round 3): the default
    since then; --no-keep-colour (YAML keep_colour: false) gives MoCo v2's hue jitter and grayscale back."""
    from mpinet_hub.cli import build_parser
    from mpinet_hub.pretrain.config import PretrainConfig
    from mpinet_hub.settings import settings_from_args

    assert PretrainConfig.keep_colour is True
    parser = build_parser()
    for flags, want in [([], None), (["--keep-colour"], True), (["--no-keep-colour"], False)]:
        args = parser.parse_args(["pretrain", "--data-root", "d", *flags])
        assert settings_from_args(PretrainConfig, args).get("keep_colour") is want, flags


# --- 6. the CPU step's fast paths compute what the reference ops compute (the same losses and gradients)


def _reference_roi_grid(feat, rois, size, stride, project):
    """RoIAlign by torchvision, as `roi_grid` computed it before its CPU path (kept here as the reference)."""
    from torchvision.ops import roi_align

    h, w = feat.shape[-2:]
    cin, cout, cells = project.in_channels, project.out_channels, size * size
    first = (cout <= cin and h * w <= cells) or (cout < cin and h * w <= 2 * cells)
    x = project(feat.float()) if first else feat.float()
    shift = (stride - 1) / 2
    return roi_align(x, [r + shift for r in rois], size, spatial_scale=1 / stride, sampling_ratio=2,
                     aligned=True), first


def _reference_pixel_loss(self, anchors, positive, keys, owner, keys_owner, summed=False):
    """The sampled pixel InfoNCE as one logsumexp over masked logits (the form before its CPU path)."""
    negative = (anchors @ keys.t()).masked_fill_(owner[:, None] == keys_owner[None], -1e9)
    loss = torch.logaddexp(positive, torch.logsumexp(negative, 1)) - positive
    return loss.sum() if summed else loss.mean()


def _assert_same(new, ref, what, scale=None):
    """Equal to 1e-5, relative, or absolute on `scale` (default: the reference's largest magnitude)."""
    scale = scale or float(ref.detach().abs().max()) or 1.0
    torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-5 * scale, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("size, grid, stride", [(8, 14, 16), (4, 7, 32), (9, 5, 4)])
def test_roi_grid_equals_torchvision_roi_align_in_value_and_gradient(size, grid, stride):
    """Boxes inside, over the edge, beyond the last cell and thinner than a cell: every branch of RoIAlign's
    bilinear sampling (a sample below -1 or past the map is 0, one in [-1, 0] reads the first cell, one past the
    last cell centre reads the last)."""
    torch.manual_seed(0)
    feat = torch.randn(5, 6, size, size + 3, dtype=torch.float64).float().requires_grad_()
    extent = stride * size
    boxes = torch.tensor([[0.0, 0.0, extent, extent], [-40.0, -9.0, extent * 0.6, extent + 50.0],
                          [3.0, 5.0, 3.5, 6.0], [extent * 0.9, 2.0, extent * 1.8, extent * 0.4],
                          [-3.0 * extent, 1.0, -2.0 * extent, extent]])
    rois = [b[None] for b in boxes]
    for project in (nn.Identity(), nn.Conv2d(6, 4, 1), nn.Conv2d(6, 9, 1)):
        if isinstance(project, nn.Identity):
            project.in_channels = project.out_channels = 6
        got, first = roi_grid(feat, rois, grid, stride, project)
        want, want_first = _reference_roi_grid(feat, rois, grid, stride, project)
        assert first == want_first
        _assert_same(got, want, "value")
        weights = torch.randn_like(want)
        (g_got,) = torch.autograd.grad((got * weights).sum(), feat)
        (g_want,) = torch.autograd.grad((want * weights).sum(), feat)
        _assert_same(g_got, g_want, "gradient")


@pytest.mark.parametrize("negatives", ["other-images", "all-cells"])
@pytest.mark.parametrize("batch, num_negatives, norm", [(4, 64, 1.0), (1, 16, 1.0), (3, None, 1.0), (2, 32, 40.0)])
def test_pixel_loss_equals_the_logsumexp_form_in_value_and_gradient(negatives, batch, num_negatives, norm,
                                                                    monkeypatch):
    """Sampled and exact negatives, one image alone (every negative masked: loss 0, gradient 0), and anchors far
    from unit length (logits too wide to shift by the positive)."""
    torch.manual_seed(0)
    online = (norm * F.normalize(torch.randn(batch, 16, 5, 5), dim=1)).requires_grad_()
    target = F.normalize(torch.randn(batch, 16, 5, 5), dim=1)
    results = []
    for reference in (False, True):
        if reference:
            monkeypatch.setattr(PixelInfoNCELoss, "_loss", _reference_pixel_loss)
        torch.manual_seed(1)
        loss = PixelInfoNCELoss(0.2, num_negatives=num_negatives, negatives=negatives, chunk_elements=200)(
            online, target)
        results.append((loss, *torch.autograd.grad(loss, online)))
    (loss, grad), (ref_loss, ref_grad) = results
    _assert_same(loss, ref_loss, "value")
    _assert_same(grad, ref_grad, "gradient")
    if batch == 1 and negatives == "other-images":
        assert abs(float(loss.detach())) < 1e-6 and float(grad.abs().max()) == 0


@pytest.mark.parametrize("channels_last", [False, True])
def test_an_mpinet_step_has_the_reference_ops_losses_and_gradients(channels_last, monkeypatch):
    """One MPINet step (the study's cell, smaller; a fixed FFL weight, so the FFL reaches the backbone): every loss
    term and every online parameter's gradient equal those computed with torchvision's RoIAlign and the logsumexp
    pixel loss, to 1e-5, on both memory layouts (the trainer uses channels_last)."""
    import mpinet_hub.pretrain.method as method_module

    views = make_two_views(torch.rand(4, 3, 80, 80), 64, generator=torch.Generator().manual_seed(0))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    views.view1, views.view2 = (v.contiguous(memory_format=layout) for v in (views.view1, views.view2))
    results = []
    for reference in (False, True):
        if reference:
            monkeypatch.setattr(method_module, "roi_grid", _reference_roi_grid)
            monkeypatch.setattr(PixelInfoNCELoss, "_loss", _reference_pixel_loss)
        torch.manual_seed(0)
        model = build_method(_cfg(method="mpinet", pixel_grid=14, ffl_grid=7, w_ffl=30.0), 3).to(memory_format=layout)
        terms = model(views)
        model.total_loss(terms).backward()
        results.append(({k: v.detach() for k, v in terms.items()},
                        {n: p.grad.clone() for n, p in model.online.named_parameters() if p.grad is not None}))
    (terms, grads), (ref_terms, ref_grads) = results
    assert terms.keys() == ref_terms.keys() and grads.keys() == ref_grads.keys()
    for name in terms:
        _assert_same(terms[name], ref_terms[name], name)
    # on the model's gradient scale: a gradient that is 0 in exact arithmetic (a bias before BatchNorm) is rounding
    largest = max(float(g.abs().max()) for g in ref_grads.values())
    for name in grads:
        _assert_same(grads[name], ref_grads[name], name, largest)
