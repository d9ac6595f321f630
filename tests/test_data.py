"""Readers against hand-built fixtures with known pixels, and against `mpinet data synth` copies."""

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from mpinet_hub.data import (
    DATASET_SPECS,
    DataError,
    LabeledFolder,
    LoveDA,
    Potsdam,
    UAVid,
    UnlabeledImages,
    Window,
    decode_colour_label,
    grid_windows,
    pretraining_images,
    read_window,
)
from mpinet_hub.data.check import check_dataset
from mpinet_hub.data.synth import synth_dataset

WHITE, BLUE, CYAN, GREEN, YELLOW, RED, BLACK = (
    (255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0), (0, 0, 0))


def write_tif(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[1], width=array.shape[2],
                       count=array.shape[0], dtype="uint8") as dst:
        dst.write(array)


def hand_potsdam(root: Path, h: int = 10, w: int = 12, label_w: int | None = None) -> np.ndarray:
    """Tile 2_10 with an image whose pixel value encodes its position, and a label with every colour case."""
    image = np.zeros((3, h, w), np.uint8)
    image[0] = np.arange(h)[:, None] * 10
    image[1] = np.arange(w)[None, :] * 10
    image[2] = 7
    write_tif(root / "2_Ortho_RGB" / "top_potsdam_2_10_RGB.tif", image)
    label = np.zeros((3, h, label_w or w), np.uint8)
    colours = [WHITE, BLUE, CYAN, GREEN, YELLOW, RED, BLACK, (10, 20, 30)]
    expected = np.zeros((h, label_w or w), np.int64)
    for col in range(label_w or w):
        k = col % len(colours)
        label[:, :, col] = np.array(colours[k])[:, None]
        expected[:, col] = k if k < 6 else 255
    write_tif(root / "5_Labels_all_noBoundary" / "top_potsdam_2_10_label_noBoundary.tif", label)
    write_tif(root / "5_Labels_all" / "top_potsdam_2_10_label.tif", label)
    return expected


def test_colour_lookup_every_pixel_and_unknown_count():
    rgb = np.array([WHITE, BLUE, CYAN, GREEN, YELLOW, RED, BLACK, (1, 2, 3)], np.uint8).T[:, None, :]
    ids, unknown = decode_colour_label(rgb, [WHITE, BLUE, CYAN, GREEN, YELLOW, RED], ignore_colours=(BLACK,))
    assert ids[0].tolist() == [0, 1, 2, 3, 4, 5, 255, 255]
    assert unknown == 1  # black is expected (boundary), (1,2,3) is not
    _, unknown_full = decode_colour_label(rgb, [WHITE, BLUE, CYAN, GREEN, YELLOW, RED])
    assert unknown_full == 2


def test_potsdam_hand_fixture_every_pixel(tmp_path):
    expected = hand_potsdam(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = Potsdam(tmp_path, split="train", labels="noBoundary", tiles=["2_10"])
        item = ds[0]
    assert item["image"].dtype.is_floating_point and item["image"].shape == (3, 10, 12)
    assert np.allclose(item["image"][0, :, 0].numpy() * 255, np.arange(10) * 10)
    assert item["mask"].tolist() == expected.tolist()
    assert [w for w in caught if "unknown label colour" in str(w.message) and "2_10_label" in str(w.message)]
    assert ds.classes[0] == "impervious_surface" and ds.ignore_index == 255 and ds.palette[1] == BLUE


def test_potsdam_patches_edge_aligned_and_values_match(tmp_path):
    expected = hand_potsdam(tmp_path, h=10, w=12)
    ds = Potsdam(tmp_path, split="train", patch_size=4, stride=4, tiles=["2_10"])
    windows = [it["meta"]["window"] for it in ds]
    assert windows[-1] == (6, 8, 4, 4)  # last row/col end exactly at the edge: rows 6..9, cols 8..11
    assert sorted({w[0] for w in windows}) == [0, 4, 6] and sorted({w[1] for w in windows}) == [0, 4, 8]
    for it in ds:
        r, c, h, w = it["meta"]["window"]
        assert it["mask"].tolist() == expected[r : r + h, c : c + w].tolist()
        assert round(float(it["image"][1, 0, 0]) * 255) == c * 10


def test_grid_windows_rules():
    assert [tuple(map(int, (w.row_off, w.col_off))) for w in grid_windows(5, 5, 3, 2)] == [
        (0, 0), (0, 2), (2, 0), (2, 2)]
    assert len(grid_windows(7, 9, None)) == 1
    with pytest.raises(DataError, match="smaller than patch_size"):
        grid_windows(3, 3, 4)


def test_size_mismatch_is_an_error_and_one_pixel_is_cropped(tmp_path):
    hand_potsdam(tmp_path / "a", label_w=15)
    with pytest.raises(DataError, match="2_10.*sizes differ.*top_potsdam_2_10_RGB.tif: 10x12"):
        Potsdam(tmp_path / "a", tiles=["2_10"])
    hand_potsdam(tmp_path / "b", label_w=13)
    with pytest.warns(UserWarning, match="common extent 10x12"):
        ds = Potsdam(tmp_path / "b", tiles=["2_10"])
    assert ds[0]["mask"].shape == (10, 12)


def test_bad_input_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="2_Ortho_RGB: folder not found"):
        Potsdam(tmp_path)
    (tmp_path / "2_Ortho_RGB").mkdir()
    (tmp_path / "5_Labels_all_noBoundary").mkdir()
    with pytest.raises(DataError, match="no Potsdam train images found"):
        Potsdam(tmp_path)
    hand_potsdam(tmp_path)
    with pytest.raises(DataError, match="4_Ortho_RGBIR"):
        Potsdam(tmp_path, bands="RGBIR", tiles=["2_10"])
    # a 3-band file where RGBIR promises 4
    rgb = rasterio.open(tmp_path / "2_Ortho_RGB" / "top_potsdam_2_10_RGB.tif").read()
    write_tif(tmp_path / "4_Ortho_RGBIR" / "top_potsdam_2_10_RGBIR.tif", rgb)
    with pytest.raises(DataError, match="top_potsdam_2_10_RGBIR.tif: has 3 band"):
        Potsdam(tmp_path, bands="RGBIR", tiles=["2_10"])
    # a truncated label
    label = tmp_path / "5_Labels_all_noBoundary" / "top_potsdam_2_10_label_noBoundary.tif"
    label.write_bytes(label.read_bytes()[:100])
    with pytest.raises(DataError, match="top_potsdam_2_10_label_noBoundary.tif"):
        Potsdam(tmp_path, tiles=["2_10"])[0]
    with pytest.raises(DataError, match="Train.*folder not found"):
        LoveDA(tmp_path)
    with pytest.raises(DataError, match="uavid_val: folder not found"):
        UAVid(tmp_path, split="val")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synth_dataset("potsdam", root / "potsdam", tiles=4, size=256, seed=3, defects=True)
    synth_dataset("loveda", root / "loveda", tiles=6, size=256, seed=3)
    synth_dataset("uavid", root / "uavid", tiles=4, size=256, seed=3)
    return root


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_synth_is_deterministic_for_a_seed(tmp_path, synth_root):
    synth_dataset("loveda", tmp_path / "a", tiles=6, size=256, seed=3)
    assert _digest(tmp_path / "a") == _digest(synth_root / "loveda")
    synth_dataset("loveda", tmp_path / "b", tiles=6, size=256, seed=4)
    assert _digest(tmp_path / "b") != _digest(tmp_path / "a")


def test_synth_potsdam_release_layout(synth_root):
    root = synth_root / "potsdam"
    for rel in ("2_Ortho_RGB/top_potsdam_2_10_RGB.tif", "2_Ortho_RGB/top_potsdam_2_10_RGB.tfw",
                "3_Ortho_IRRG/top_potsdam_2_10_IRRG.tif", "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif",
                "1_DSM_normalisation/dsm_potsdam_02_10_normalized_lastools.jpg",
                "5_Labels_all/top_potsdam_2_10_label.tif",
                "5_Labels_all_noBoundary/top_potsdam_2_10_label_noBoundary.tif"):
        assert (root / rel).is_file(), rel
    with rasterio.open(root / "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif") as src:
        assert src.count == 4 and src.dtypes[0] == "uint8" and src.crs.to_epsg() == 32633
    ds = Potsdam(root, split="train", bands="RGBIR", patch_size=128)
    item = ds[0]
    assert item["image"].shape == (4, 128, 128)
    classes = set(np.unique(np.concatenate([ds[i]["mask"].numpy().ravel() for i in range(len(ds))])))
    assert {0, 1, 2, 3, 4, 255} <= classes  # roads, buildings, grass, trees, cars, boundaries
    test = Potsdam(root, split="test", bands="RGB+DSM")
    assert test[0]["image"].shape[0] == 4 and test.band_names[-1] == "nDSM"


def test_synth_loveda_and_uavid_readers(synth_root):
    train = LoveDA(synth_root / "loveda", split="train", scene="both", patch_size=128)
    assert train.num_classes == 7 and len(train.scenes) == 2
    masks = np.concatenate([train[i]["mask"].numpy().ravel() for i in range(len(train))])
    assert masks.max() == 255 and set(np.unique(masks)) - {255} <= set(range(7))
    assert (masks == 255).any()  # the no-data corner (mask value 0) is ignore
    test = LoveDA(synth_root / "loveda", split="test", scene="rural")
    assert "mask" not in test[0] and not any(s.label for s in test.scenes)
    uav = UAVid(synth_root / "uavid", split="train", patch_size=64, stride=64)
    frame = uav.scenes[0]
    assert (frame.height, frame.width) == (144, 256)
    assert uav[len(uav) - 1]["meta"]["window"] == (80, 192, 64, 64)
    assert "mask" not in UAVid(synth_root / "uavid", split="test")[0]


def test_unlabeled_images_weighted_reproducible(tmp_path):
    big = np.random.default_rng(0).integers(0, 255, (3, 200, 200), dtype=np.uint8)
    write_tif(tmp_path / "big.tif", big)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.warns(UserWarning, match="tiny.png"):
        ds = UnlabeledImages([tmp_path], patch_size=32, seed=1)
    assert len(ds) == (200 * 200 + 40 * 40) // (32 * 32)
    files = [Path(ds[i]["meta"]["file"]).name for i in range(len(ds))]
    assert files.count("big.tif") > 5 * files.count("small.png")  # area-weighted: 169^2 vs 9^2 positions
    it = ds[3]
    r, c, h, w = it["meta"]["window"]
    if it["meta"]["file"].endswith("big.tif"):
        assert np.allclose(it["image"].numpy() * 255, big[:, r : r + h, c : c + w], atol=1e-3)
    assert np.array_equal(ds[3]["image"], UnlabeledImages([tmp_path], patch_size=32, seed=1)[3]["image"])
    ds.set_epoch(1)
    assert ds[3]["meta"] != UnlabeledImages([tmp_path], patch_size=32, seed=1)[3]["meta"]
    with pytest.raises(DataError, match="no such file"):
        UnlabeledImages([tmp_path / "nope*.tif"], patch_size=32)


def test_window_overlap_is_what_the_sampler_draws(tmp_path):
    """How distinct the pretraining windows are, from the file sizes alone: the share of a window's area a second
    random window covers on average equals that of the sampler's own draws; files apart share nothing."""
    write_tif(tmp_path / "wide.tif", np.zeros((3, 60, 150), np.uint8))
    write_tif(tmp_path / "square.tif", np.zeros((3, 90, 90), np.uint8))
    ds = UnlabeledImages([tmp_path], patch_size=40, seed=0, length=4000)
    windows = [(it["meta"]["file"], it["meta"]["window"]) for it in (ds[i] for i in range(len(ds)))]
    shared = []
    for (fa, (ra, ca, h, w)), (fb, (rb, cb, _, _)) in zip(windows[::2], windows[1::2]):
        rows, cols = max(0, h - abs(ra - rb)), max(0, w - abs(ca - cb))
        shared.append(rows * cols / (h * w) if fa == fb else 0.0)
    assert ds.window_overlap() == pytest.approx(np.mean(shared), abs=0.02)
    assert ds.distinct_windows() == pytest.approx((60 * 150 + 90 * 90) / 40**2)
    one = UnlabeledImages([tmp_path / "square.tif"], patch_size=90)
    assert one.window_overlap() == 1.0 and one.distinct_windows() == 1.0  # one position: every window the same


def test_pretraining_images_use_the_train_split(synth_root):
    files = pretraining_images("potsdam", synth_root / "potsdam")
    assert [f.name for f in files] == [f"top_potsdam_{t}_RGB.tif" for t in ("2_10", "2_11", "2_12", "4_12")]


def test_check_reports_known_defects(synth_root, tmp_path):
    report = check_dataset("potsdam", synth_root / "potsdam", labels="full")
    assert report.ok
    assert report.unknown_pixels.get("5_Labels_all/top_potsdam_4_12_label.tif", 0) > 0
    text = report.render()
    assert "known defect (present)" in text and "5999 px wide" in text and "255 vs 256" in text
    bad = check_dataset("loveda", tmp_path)
    assert not bad.ok and "Train" in bad.errors[0]


@pytest.mark.parametrize("name,labels", [("loveda", "masks_png"), ("uavid", "Labels")])
def test_a_missing_label_names_its_scene(tmp_path, name, labels):
    synth_dataset(name, tmp_path, tiles=6, size=64, seed=1)
    label = sorted(tmp_path.rglob(f"*[Tt]rain*/**/{labels}/*.png"))[0]
    label.unlink()
    with pytest.raises(DataError, match=f"{label.name}: label of scene .*{label.stem} not found"):
        {"loveda": LoveDA, "uavid": UAVid}[name](tmp_path, "train")


def _labeled_folder(root, palette=False):
    """A hand-made labeled folder: 2 train scenes, 1 val scene; pixel values known."""
    import numpy as np
    import yaml
    from PIL import Image

    spec = {"names": ["ground", "tree", "water"]}
    if palette:
        spec["palette"] = [[0, 0, 0], [0, 255, 0], [0, 0, 255]]
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text(yaml.safe_dump(spec))
    masks = {}
    for split, names in (("train", ["a", "b"]), ("val", ["c"])):
        for i, name in enumerate(names):
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            image = np.full((40, 48, 3), 10 * (i + 1), np.uint8)
            image[:, :, 1] = np.arange(48, dtype=np.uint8)[None]
            mask = np.zeros((40, 48), np.uint8)
            mask[:20] = 1
            mask[30:, 40:] = 2
            mask[0, 0] = 255  # ignore
            Image.fromarray(image).save(root / split / "images" / f"{name}.png")
            if palette:
                colours = np.zeros((40, 48, 3), np.uint8)
                colours[mask == 1] = (0, 255, 0)
                colours[mask == 2] = (0, 0, 255)
                colours[0, 0] = (9, 9, 9)  # not in the palette: ignored and counted
                Image.fromarray(colours).save(root / split / "masks" / f"{name}.png")
            else:
                Image.fromarray(mask).save(root / split / "masks" / f"{name}.png")
            masks[(split, name)] = mask
    return masks


@pytest.mark.parametrize("palette", [False, True])
def test_labeled_folder_reads_known_pixels(tmp_path, palette):
    import warnings

    import numpy as np

    from mpinet_hub.data import LabeledFolder, open_dataset

    masks = _labeled_folder(tmp_path / "root", palette)
    ds = open_dataset("folder", tmp_path / "root", "train")
    assert isinstance(ds, LabeledFolder) and ds.classes == ("ground", "tree", "water") and ds.num_bands == 3
    assert [s.id for s in ds.scenes] == ["a", "b"] and ds.has_labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        item = ds[1]
    assert item["image"].shape == (3, 40, 48)
    assert item["image"][1, 0, 47].item() == pytest.approx(47 / 255)
    expected = masks[("train", "b")].astype(np.int64)
    assert np.array_equal(item["mask"].numpy(), expected)
    val = open_dataset("folder", tmp_path / "root", "val", patch_size=16)
    assert len(val) == 3 * 3 and val.has_labels


def test_labeled_folder_errors_name_the_file(tmp_path):
    from mpinet_hub.data import DataError, open_dataset

    _labeled_folder(tmp_path / "root")
    (tmp_path / "root" / "classes.yaml").write_text("names: []\n")
    with pytest.raises(DataError, match="classes.yaml.*names"):
        open_dataset("folder", tmp_path / "root", "train")
    (tmp_path / "root" / "classes.yaml").write_text("names: [a, b]\npalette: [[0, 0, 0]]\n")
    with pytest.raises(DataError, match="palette"):
        open_dataset("folder", tmp_path / "root", "train")
    (tmp_path / "root" / "classes.yaml").write_text("names: [a, b, c]\n")
    (tmp_path / "root" / "train" / "masks" / "a.png").unlink()
    with pytest.raises(DataError, match="a.png: label of scene a not found"):
        open_dataset("folder", tmp_path / "root", "train")


def test_pretraining_on_a_labeled_folder_reads_train_images_only(tmp_path):
    from mpinet_hub.pretrain.config import PretrainConfig
    from mpinet_hub.pretrain.trainer import build_pretraining_dataset

    _labeled_folder(tmp_path / "root")
    cfg = PretrainConfig.from_sources(None, dataset="folder", data_root=[str(tmp_path / "root")], patch=16)
    images = build_pretraining_dataset(cfg)
    assert sorted(i.path.name for i in images.infos) == ["a.png", "b.png"]
    assert all(i.path.parent.name == "images" and i.path.parent.parent.name == "train" for i in images.infos)


def test_more_roots_add_unlabeled_imagery_but_never_a_scored_split(tmp_path):
    """Roots after the first are more imagery for pretraining, for a named data set too (they were ignored without a
    word); an image of a labeled root's val or test split among them is refused, naming it: pretraining must not
    see the ground that is scored."""
    from mpinet_hub.pretrain.config import PretrainConfig
    from mpinet_hub.pretrain.trainer import build_pretraining_dataset

    _labeled_folder(tmp_path / "root")
    write_tif(tmp_path / "more" / "scene.tif", np.zeros((3, 64, 64), np.uint8))
    synth_dataset("potsdam", tmp_path / "potsdam", tiles=3, size=64, seed=0)
    for dataset, root in (("folder", tmp_path / "root"), ("potsdam", tmp_path / "potsdam")):
        alone = build_pretraining_dataset(PretrainConfig.from_sources(
            None, dataset=dataset, data_root=[str(root)], patch=16))
        more = build_pretraining_dataset(PretrainConfig.from_sources(
            None, dataset=dataset, data_root=[str(root), str(tmp_path / "more")], patch=16))
        assert [i.path for i in more.infos] == [i.path for i in alone.infos] + [tmp_path / "more" / "scene.tif"]
    leak = PretrainConfig.from_sources(None, dataset="folder", data_root=[str(tmp_path / "root"), str(tmp_path)],
                                       patch=16)  # the folder above the labeled one: its val image too
    with pytest.raises(DataError, match=r"c\.png: an image of .*root's val split"):
        build_pretraining_dataset(leak)
    train = set(pretraining_images("potsdam", tmp_path / "potsdam"))
    scored = [p for p in (tmp_path / "potsdam").rglob("*_RGB.tif") if p not in train]
    assert train and scored, "the synthetic Potsdam set has train and test tiles"
    with pytest.raises(DataError, match="test split"):
        build_pretraining_dataset(PretrainConfig.from_sources(
            None, dataset="potsdam", data_root=[str(tmp_path / "potsdam"), str(scored[0])], patch=16))


def test_data_check_and_stats_on_a_labeled_folder(tmp_path, capsys):
    import json

    from mpinet_hub.cli import main

    _labeled_folder(tmp_path / "root")
    assert main(["data", "check", "folder", str(tmp_path / "root")]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "val" in out
    assert main(["data", "stats", "folder", str(tmp_path / "root")]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # green band is the column index 0..47 in every image: mean 23.5/255
    assert stats["mean"][1] == pytest.approx(23.5 / 255, abs=1e-4) and len(stats["std"]) == 3


def test_geotiff_windows_reuse_an_open_file_and_a_rewritten_file_is_reopened(tmp_path, monkeypatch):
    import os

    from mpinet_hub.data import raster

    path = tmp_path / "tile.tif"
    profile = {"driver": "GTiff", "height": 64, "width": 64, "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((1, 64, 64), 7, np.uint8))
    opened = []
    real_open = rasterio.open
    monkeypatch.setattr(raster.rasterio, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    for col in range(0, 64, 16):
        assert (read_window(path, Window(col, 0, 16, 16)) == 7).all()
    assert len(opened) == 1  # one open for four windows
    with real_open(path, "w", **profile) as dst:
        dst.write(np.full((1, 64, 64), 9, np.uint8))
    os.utime(path, ns=(1, 1))  # a different modification time, as any rewrite gives
    assert (read_window(path, Window(0, 0, 16, 16)) == 9).all() and len(opened) == 2


def test_synth_writes_exactly_the_scenes_asked_for_or_says_why_not(tmp_path):
    assert len(synth_dataset("loveda", tmp_path / "l", tiles=7, size=64, seed=0)) == 7
    assert len({w.split("/")[0] for w in synth_dataset("uavid", tmp_path / "u", tiles=3, size=64, seed=0)}) == 3
    with pytest.raises(ValueError, match="at least 6 images"):
        synth_dataset("loveda", tmp_path / "few", tiles=4, size=64, seed=0)
    assert not (tmp_path / "few").exists() or not any((tmp_path / "few").rglob("*.png"))


def test_data_stats_leaves_nan_pixels_out_and_names_the_file(tmp_path, capsys):
    import json

    from mpinet_hub.cli import main

    root = tmp_path / "root"
    (root / "train" / "images").mkdir(parents=True)
    (root / "classes.yaml").write_text("names: [a, b]\n")
    array = np.full((1, 20, 20), 0.25, np.float32)
    array[0, :5] = np.nan
    with rasterio.open(root / "train" / "images" / "f.tif", "w", driver="GTiff", height=20, width=20, count=1,
                       dtype="float32") as dst:
        dst.write(array)
    assert main(["data", "stats", "folder", str(root)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1]) == {"split": "train", "pixels": 300, "mean": [0.25],
                                                                 "std": [0.0]}
    assert "f.tif: 100 pixel(s) with NaN/inf left out" in captured.err


def test_data_check_decodes_every_image_and_reports_a_truncated_one(tmp_path, capsys):
    from mpinet_hub.cli import main

    synth_dataset("loveda", tmp_path, tiles=6, size=128, seed=0)
    victim = sorted(tmp_path.rglob("Train/*/images_png/*.png"))[0]
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])  # the header survives, pixels do not
    assert main(["data", "check", "loveda", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{victim}: could not be read" in out and "truncated or corrupt" in out


def test_twelve_bit_and_all_nodata_rasters_are_named_before_training(tmp_path):
    profile = dict(driver="GTiff", height=64, width=64, count=3, dtype="uint16")
    with rasterio.open(tmp_path / "twelve.tif", "w", **profile) as dst:
        dst.write(np.random.default_rng(0).integers(0, 4096, (3, 64, 64), dtype=np.uint16))
    with rasterio.open(tmp_path / "empty.tif", "w", nodata=0, **profile) as dst:
        dst.write(np.zeros((3, 64, 64), np.uint16))
    with pytest.warns(UserWarning) as caught:
        UnlabeledImages(tmp_path, patch_size=32)
    messages = " | ".join(str(w.message) for w in caught)
    assert "1 file(s) in" in messages and "hold 16-bit values that never exceed 409" in messages
    assert "(12-bit data?)" in messages and "--value-max 4095" in messages and "--mean/--std" in messages
    assert "1 file(s) hold only nodata (0) in every sampled pixel (empty.tif)" in messages


def test_data_check_guesses_the_bit_depth_and_says_it_once_for_the_split(tmp_path, capsys):
    """A panchromatic folder whose values never exceed 2047 (11-bit): `data check` said `12-bit data? ... pass
    --value-max 4095`, once per file (25 lines for 25 tiles)."""
    import yaml

    from mpinet_hub.cli import main

    (tmp_path / "classes.yaml").write_text(yaml.safe_dump({"names": ["a", "b"]}))
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for sub in ("images", "masks"):
            (tmp_path / split / sub).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 2048, (1, 32, 32), dtype=np.uint16)
            pixels[0, 0, 0] = 2047
            with rasterio.open(tmp_path / split / "images" / f"t{i}.tif", "w", driver="GTiff", height=32, width=32,
                               count=1, dtype="uint16") as dst:
                dst.write(pixels)
            with rasterio.open(tmp_path / split / "masks" / f"t{i}.tif", "w", driver="GTiff", height=32, width=32,
                               count=1, dtype="uint8") as dst:
                dst.write((pixels[:1] > 1000).astype(np.uint8))
    main(["data", "check", "folder", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.count("never exceed 2047") == 2, out  # one line for each split, not one a file
    assert "5 file(s)" in out and "(11-bit data?)" in out and "--value-max 2047" in out and "4095" not in out


def test_data_check_finds_a_truncated_geotiff_from_its_last_window(tmp_path, capsys):
    from mpinet_hub.cli import main

    synth_dataset("potsdam", tmp_path, tiles=3, size=256, seed=0)
    victim = sorted((tmp_path / "2_Ortho_RGB").glob("*.tif"))[0]
    victim.write_bytes(victim.read_bytes()[: int(victim.stat().st_size * 0.6)])
    assert main(["data", "check", "potsdam", str(tmp_path)]) == 1
    assert f"{victim}: could not be read" in capsys.readouterr().out


def _twelve_bit_folder(root):
    """A labeled folder of 12-bit imagery in uint16 GeoTIFFs (the full-scale value 4095 appears in every image)."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": ["ground", "field"]}))
    rng = np.random.default_rng(5)
    for split, names in (("train", ["a", "b"]), ("val", ["c"])):
        for name in names:
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 2048, (3, 64, 64), dtype=np.uint16)
            image[:, 32:] += 2047  # the "field" half is bright
            mask = np.zeros((1, 64, 64), np.uint8)
            mask[:, :, 32:] = 1
            with rasterio.open(root / split / "images" / f"{name}.tif", "w", driver="GTiff", height=64, width=64,
                               count=3, dtype="uint16") as dst:
                dst.write(image)
            with rasterio.open(root / split / "masks" / f"{name}.tif", "w", driver="GTiff", height=64, width=64,
                               count=1, dtype="uint8") as dst:
                dst.write(mask)
    return root


def test_value_max_scales_twelve_bit_data_in_every_reader(tmp_path, capsys):
    import json
    import warnings

    import torch

    from mpinet_hub.cli import main
    from mpinet_hub.data import open_dataset
    from mpinet_hub.settings import SettingsError

    root = _twelve_bit_folder(tmp_path / "root")
    default = open_dataset("folder", root, "train")[0]["image"]
    assert float(default.max()) == pytest.approx(4094 / 65535)  # what 12-bit data gives without the setting
    scaled = open_dataset("folder", root, "train", value_max=4095)[0]["image"]
    assert float(scaled.max()) == pytest.approx(4094 / 4095) and torch.allclose(scaled, default * 65535 / 4095)

    with pytest.warns(UserWarning, match="--value-max 4095"):
        UnlabeledImages(root / "train" / "images", patch_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the setting answers the 12-bit warning: none given
        images = UnlabeledImages(root / "train" / "images", patch_size=32, value_max=4095, keep_uint8=True)
    item = images[0]["image"]
    assert item.dtype == torch.float32 and 0.4 < float(item.max()) <= 1.0

    assert main(["data", "stats", "folder", str(root)]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["data", "stats", "folder", str(root), "--value-max", "4095"]) == 0
    twelve = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert twelve["mean"][0] == pytest.approx(plain["mean"][0] * 65535 / 4095, rel=1e-3) and twelve["mean"][0] > 0.4

    with pytest.raises(SettingsError, match="--value-max"):
        open_dataset("folder", root, "train", value_max=0)
    assert main(["data", "stats", "folder", str(root), "--value-max", "-1"]) == 2
    assert "--value-max" in capsys.readouterr().err


def test_windows_per_file_groups_a_batch_by_file_and_stays_seeded(tmp_path, monkeypatch):
    from mpinet_hub.data import raster

    for i in range(6):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(
            tmp_path / f"f{i}.png")
    plain = UnlabeledImages([tmp_path], patch_size=32, seed=3)
    indices = [7, 2, 40, 11, 5, 30, 9, 21]
    # one window per file: a batch is exactly its items, as before
    assert [b["meta"] for b in plain.batch(indices)] == [plain[i]["meta"] for i in indices]
    grouped = UnlabeledImages([tmp_path], patch_size=32, seed=3, windows_per_file=4)
    batch = grouped.batch(indices)
    files = [b["meta"]["file"] for b in batch]
    assert len(set(files[:4])) == 1 and len(set(files[4:])) == 1  # each group of 4 reads one file
    assert len({b["meta"]["window"] for b in batch[:4]}) == 4  # ... at different places
    again = UnlabeledImages([tmp_path], patch_size=32, seed=3, windows_per_file=4).batch(indices)
    assert [b["meta"] for b in again] == [b["meta"] for b in batch]
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(again, batch))
    leaders = {UnlabeledImages([tmp_path], patch_size=32, seed=3, windows_per_file=4).batch([i])[0]["meta"]["file"]
               for i in range(40)}
    assert len(leaders) >= 4  # the groups' files are still drawn over the whole collection
    decodes = []
    real = raster._check_complete
    monkeypatch.setattr(raster, "_check_complete", lambda path: decodes.append(path) or real(path))
    raster._last_decoded["key"] = None
    UnlabeledImages([tmp_path], patch_size=32, seed=4, windows_per_file=4).batch(list(range(8)))
    assert len(decodes) <= 2  # one whole-image decode per group, not per window
    with pytest.raises(ValueError, match="windows_per_file"):
        UnlabeledImages([tmp_path], patch_size=32, windows_per_file=0)


def _one_tile_folder(root, image_size=(32, 32), mask=None, names="[a, b]"):
    from PIL import Image

    for kind in ("images", "masks"):
        (root / "train" / kind).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*image_size, 3), np.uint8)).save(root / "train" / "images" / "t.png")
    Image.fromarray(mask if mask is not None else np.zeros(image_size, np.uint8)).save(
        root / "train" / "masks" / "t.png")
    (root / "classes.yaml").write_text(f"names: {names}\n")
    return root


def test_data_check_errors_name_the_file_and_tell_image_from_label(tmp_path, capsys):
    from mpinet_hub.cli import main

    rgb = _one_tile_folder(tmp_path / "rgb", mask=np.zeros((32, 32, 3), np.uint8))  # an RGB mask, no palette
    assert main(["data", "check", "folder", str(rgb)]) == 1
    out = capsys.readouterr().out
    assert f"{rgb / 'train' / 'masks' / 't.png'}: masks must be one band" in out
    sizes = _one_tile_folder(tmp_path / "sizes", mask=np.zeros((20, 32), np.uint8))
    assert main(["data", "check", "folder", str(sizes)]) == 1
    out = capsys.readouterr().out
    assert "train/images/t.png: 32x32, train/masks/t.png: 20x32" in out


def test_a_class_listed_twice_in_classes_yaml_is_refused_naming_it(tmp_path):
    root = _one_tile_folder(tmp_path / "dup", names="[tree, grass, tree]")
    with pytest.raises(DataError, match="classes.yaml: class name\\(s\\) tree listed more than once"):
        LabeledFolder(root, split="train")


@pytest.mark.parametrize("name", list(DATASET_SPECS))
def test_every_registered_data_set_is_whole_reader_protocols_synth_and_cli_choices(name, tmp_path):
    """A data set is described once (DATASET_SPECS); what is offered anywhere is derived from it and works."""
    from mpinet_hub.cli import build_parser
    from mpinet_hub.data import PROTOCOLS

    spec = DATASET_SPECS[name]
    assert spec.protocols and all(PROTOCOLS[p] is spec.protocols[p] for p in spec.protocols)
    data = next(a for a in build_parser()._subparsers._group_actions[0].choices["data"]._actions
                if a.dest == "data_command").choices
    synth_choices = next(a for a in data["synth"]._actions if a.dest == "dataset").choices
    prepare_choices = next(a for a in data["prepare"]._actions if a.dest == "dataset").choices
    assert (name in synth_choices) == (spec.synth is not None)
    assert (name in prepare_choices) == spec.preparable
    if spec.synth is not None:
        synth_dataset(name, tmp_path / name, tiles=6, size=256, seed=0)
        reader = spec.reader(tmp_path / name, split="train", patch_size=128)
        mask = reader[0]["mask"]
        assert len(reader) > 0 and mask[mask != 255].max() < reader.num_classes


def test_a_new_data_set_declares_its_metric_protocols_with_it_and_they_score_it(monkeypatch):
    """A data set's protocols (the classes left out of the means, the label product) are facts on its
    descriptor: registering one there is all that metrics and evaluate need."""
    import mpinet_hub.data as data
    from mpinet_hub.downstream.evaluate import _protocol_for
    from mpinet_hub.metrics import SegmentationMetrics

    class Roofs(data.SegmentationDataset):
        classes = ("roof", "other")

    spec = data.DatasetSpec(Roofs, {"roofs-only": data.Protocol("means over roof only", exclude_from_mean=(1,))})
    monkeypatch.setitem(data.DATASET_SPECS, "roofs", spec)
    assert _protocol_for("roofs", None) == ("roofs-only", spec.protocols["roofs-only"])
    with pytest.raises(ValueError, match="not one of roofs's"):
        _protocol_for("roofs", "loveda")
    metrics = SegmentationMetrics.from_protocol("roofs-only")
    assert metrics.class_names == ["roof", "other"] and metrics.exclude_from_mean == (1,)
    with pytest.raises(ValueError, match="takes its classes from the data"):
        SegmentationMetrics.from_protocol("folder")
