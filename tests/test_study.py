"""`mpinet study` on a tiny labeled folder: verdicts by the stated rule, refused reuse, val by default."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image

from mpinet_hub.cli import main
from mpinet_hub.downstream.paired import paired_verdict
from mpinet_hub.downstream.study import StudySettings, run_study
from mpinet_hub.hub import export_weights
from mpinet_hub.pretrain.config import PretrainConfig
from mpinet_hub.pretrain.trainer import pretrain_or_reuse
from mpinet_hub.settings import SettingsError


@pytest.fixture(scope="module")
def blind_encoder(tmp_path_factory):
    """An encoder that sees nothing: every conv weight zero, so every feature is 0 (worse by construction)."""
    model = timm.create_model("resnet18", num_classes=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "conv" in name or "downsample.0" in name:
                p.zero_()
    work = tmp_path_factory.mktemp("blind")
    torch.save(model.state_dict(), work / "blind.pt")
    export_weights(work / "blind.pt", work / "export", "mpinet_resnet18", "potsdam")
    return work / "export"


def _settings(root, out, **kw) -> StudySettings:
    values = dict(dataset="folder", data_root=str(root), out=str(out), methods=["mocov2"], controls=["random"],
                  seeds=[0, 1, 2], subset_seeds=[0], fractions=[1.0], label_patch=32, device="cpu",
                  pretrain=dict(steps=2, batch_size=4, patch=48, crop=32, queue_size=16),
                  probe=dict(steps=40, window=64))
    return StudySettings(**{**values, **{k: values[k] | v if k in ("pretrain", "probe") else v for k, v in kw.items()}})


def test_t_quantile_matches_the_tables():
    from mpinet_hub.downstream.paired import t_quantile

    for df, expected in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (29, 2.0452)):
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_paired_verdict_is_a_t_interval_on_the_paired_differences():
    ahead = paired_verdict([0.5, 0.52, 0.51], [0.4, 0.41, 0.40])
    assert ahead["verdict"] == "A" and ahead["low"] > 0 and ahead["pairs"] == 3
    assert paired_verdict([0.4, 0.41, 0.40], [0.5, 0.52, 0.51])["verdict"] == "B"
    # ahead by .10 on every seed while each arm spreads by .10: the pairing sees a sure gap (the old rule did not)
    wide = paired_verdict([0.50, 0.60, 0.70], [0.40, 0.50, 0.61])
    assert wide["verdict"] == "A" and wide["sd"] == pytest.approx(0.00577, abs=1e-4)
    # the forest gap of docs/evidence.md at three seeds: +3.2 / +0.9 / +1.6 -> mean 1.9, interval [-1.0, 4.8]
    forest = paired_verdict([0.032, 0.009, 0.016], [0.0, 0.0, 0.0])
    assert forest["verdict"] == "no verdict" and forest["low"] == pytest.approx(-0.0100, abs=5e-4)
    assert 4 <= forest["seeds_needed"] <= 6
    assert paired_verdict([0.5], [0.4])["verdict"] == "no verdict: one seed"
    # cells of one seed (two subset seeds) share its pretraining: one pair per seed, not two
    grouped = paired_verdict([0.5, 0.6, 0.5, 0.6], [0.4, 0.4, 0.45, 0.45], seeds=[0, 0, 1, 1])
    assert grouped["pairs"] == 2 and grouped["cells"] == 4 and grouped["diffs"] == pytest.approx([0.15, 0.1])


def _called(gap: float, n: int, draws: int, rng) -> float:
    """Share of `draws` simulated studies (n seeds, paired noise sd 1) in which either arm is called better."""
    calls = 0
    for _ in range(draws):
        noise = rng.normal(0, 1, n)
        calls += paired_verdict(list(gap + noise), [0.0] * n)["verdict"] != "no verdict"
    return calls / draws


def test_the_false_positive_rate_on_null_pairs_is_at_most_the_nominal_level():
    rng = np.random.default_rng(0)
    for n in (3, 5, 10):
        rate = _called(0.0, n, 3000, rng)
        assert rate <= 0.05 + 3 * (0.05 * 0.95 / 3000) ** 0.5, (n, rate)


def test_a_small_true_gap_is_called_at_ten_seeds_and_not_at_three():
    """A gap of one noise sd: the old rule (every seed ahead and the gap over twice the larger std) called it less
    often as seeds were added; the interval calls it more often, and usually at 10 seeds."""
    rng = np.random.default_rng(1)
    at_three, at_ten = _called(1.0, 3, 1500, rng), _called(1.0, 10, 1500, rng)
    assert at_three < 0.35 and at_ten > 0.7
    seeds = [0.9, 1.8, -0.2, 1.4, 0.6, 2.1, 0.3, 1.1, 1.7, 0.5]  # one draw: gap 1, sd about 0.7
    assert paired_verdict(seeds[:3], [0.0] * 3)["verdict"] == "no verdict"
    assert paired_verdict(seeds, [0.0] * 10)["verdict"] == "A"


def test_the_study_calls_an_encoder_better_by_a_small_known_margin_at_ten_seeds_and_not_at_three(
        tmp_path, tree_folder, monkeypatch):
    """The study end to end (cells per seed and subset seed, pairing, the interval, the results file) with the probe
    replaced by known values: random-bn is better than random by about one point, with a seed-to-seed spread of the
    paired gap about 0.7 and a larger spread shared by both encoders of a seed (which pairing removes)."""
    import mpinet_hub.downstream.study as study_module

    gaps = [0.9, 1.8, -0.2, 1.4, 0.6, 2.1, 0.3, 1.1, 1.7, 0.5]
    shared = [31.0, 27.5, 34.0, 29.0, 33.5, 26.0, 30.5, 35.0, 28.0, 32.0]  # sd about 3: unpaired, no call at 10

    def known_probe(cfg):
        value = shared[cfg.seed] + (gaps[cfg.seed] if cfg.encoder.startswith("random-bn") else 0.0)
        return {"mIoU": value, "OA": 50.0, "mF1": 50.0, "split": cfg.split}

    monkeypatch.setattr(study_module, "run_probe", known_probe)
    for seeds, called in ((3, False), (10, True)):
        results = run_study(_settings(tree_folder, tmp_path / f"s{seeds}", methods=[],
                                      controls=["random", "random-bn"], seeds=list(range(seeds)), subset_seeds=[0]))
        (verdict,) = results["verdicts"]
        assert verdict["pairs"] == seeds
        assert (verdict["winner"] == "random-bn") is called, verdict
        assert verdict["winner"] in ("random-bn", None)
        md = (tmp_path / f"s{seeds}" / "results-val.md").read_text()
        assert ("**random-bn better**" in md) is called


def test_study_calls_the_better_encoder_reuses_cells_and_refuses_other_settings(tmp_path, tree_folder,
                                                                              blind_encoder, capsys):
    out = tmp_path / "study"
    results = run_study(_settings(tree_folder, out, encoders={"blind": str(blind_encoder)}))
    assert results["split"] == "val" and results["test_reads"] == []
    verdict = next(v for v in results["verdicts"] if {v["a"], v["b"]} == {"random", "blind"})
    assert verdict["winner"] == "random" and len(verdict["diffs"]) == 3, verdict
    assert verdict["pairs"] == 3 and len(verdict["paired_cells"]) == 3  # the count, not the list of cells
    cells = results["cells"]["probe"]
    assert set(cells) == {"mocov2", "random", "blind"}
    assert [c["seed"] for c in cells["random"]["1"]] == [0, 1, 2]
    assert all(c["minutes"] is not None for c in cells["random"]["1"])
    assert set(results["pretraining"]) == {"mocov2-s0", "mocov2-s1", "mocov2-s2"}
    md = (out / "results-val.md").read_text()
    assert "test split was never read" in md and "**random better**" in md
    assert "probe, 100% labels, blind: **does not pay**" in md  # the answer, above the verdicts
    values = " / ".join(f"{100 * c['value']:.1f}" for c in cells["random"]["1"])
    assert f"({values})" in md  # each seed's value, to pair with studies in other folders
    # each pretraining run says how many windows its images hold: six 64 px images, 48 px windows
    assert re.search(r"\| mocov2-s0 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| 11 \(11%\) \|", md), md
    assert (out / "study-val-probe.png").stat().st_size > 5000
    # the probe cells scored the val scenes, not test
    scored = json.loads((out / "probe-val" / "random" / "f1-s0-sub0" / "metrics.json").read_text())
    assert scored["split"] == "val"
    # a re-run reuses every cell: nothing is trained again
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")}
    ckpt_stamp = (out / "pretrain" / "mocov2-s0" / "checkpoints" / "last.pt").stat().st_mtime_ns
    run_study(_settings(tree_folder, out, encoders={"blind": str(blind_encoder)}))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")} == stamps
    assert (out / "pretrain" / "mocov2-s0" / "checkpoints" / "last.pt").stat().st_mtime_ns == ckpt_stamp
    # another setting in the same folder is refused, naming it; the CLI says so in one line (exit 2)
    with pytest.raises(SettingsError, match="probe.steps 40 -> 80"):
        run_study(_settings(tree_folder, out, probe=dict(steps=80)))
    assert main(["study", "--dataset", "folder", "--data-root", str(tree_folder), "--out", str(out),
                 "--methods", "mocov2", "--pretrain", "steps=3"]) == 2
    assert "pretrain.steps 2 -> 3" in capsys.readouterr().err
    # no data set's licence for weights pretrained on the user's folder: nothing in the study claims one
    assert not [p for p in out.rglob("*.md") if "ISPRS" in p.read_text()]


def test_a_finished_pretraining_cell_made_with_other_settings_is_refused(tmp_path, tree_folder):
    values = dict(dataset="folder", data_root=[str(tree_folder)], method="mocov2", arch="mpinet_resnet18", patch=48,
                  crop=32, batch_size=4, steps=1, queue_size=16, workers=0, out=str(tmp_path / "cell"))
    run, seconds = pretrain_or_reuse(PretrainConfig.from_sources(None, **values))
    assert seconds is not None
    assert pretrain_or_reuse(PretrainConfig.from_sources(None, **values)) == (run, None)  # reused
    with pytest.raises(SettingsError, match="lr 0.03 -> 0.3"):
        pretrain_or_reuse(PretrainConfig.from_sources(None, **values, lr=0.3))


def test_a_study_pretrains_on_more_unlabeled_imagery_and_says_so(tmp_path, tree_folder, capsys):
    """A user's many unlabeled images and few labels: --unlabeled adds imagery to every pretraining cell (the probes
    and random-bn still read the labeled train split), the results say it, and a path that is not there, or that
    holds an image of the scored split, is refused before anything runs."""
    extra = tmp_path / "unlabeled"
    extra.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (96, 96, 3), np.uint8)).save(extra / f"u{i}.png")
    s = _settings(tree_folder, tmp_path / "s", seeds=[0], unlabeled=[str(extra)])
    results = run_study(s)
    saved = yaml.safe_load((tmp_path / "s" / "pretrain" / "mocov2-s0" / "config.yaml").read_text())
    assert saved["data_root"] == [str(tree_folder), str(extra)]
    without = (6 * 64 * 64) / 48**2
    assert results["pretraining"]["mocov2-s0"]["distinct_windows"] == pytest.approx(without + 3 * 96 * 96 / 48**2)
    assert f"the train split and {extra}" in (tmp_path / "s" / "results-val.md").read_text()
    for bad, says, exit_code in ((tmp_path / "nowhere", "nowhere: no such file, folder or glob", 2),
                                 (tree_folder / "val" / "images", "an image of", 1)):
        code = main(["study", "--dataset", "folder", "--data-root", str(tree_folder), "--out", str(tmp_path / "t"),
                     "--methods", "mocov2", "--unlabeled", str(bad)])
        assert code == exit_code and says in capsys.readouterr().err
        assert not (tmp_path / "t").exists()  # refused before the study folder is made


def test_the_test_split_is_read_only_when_asked_and_the_results_say_so(tmp_path, tree_folder):
    s = _settings(tree_folder, tmp_path / "s", methods=[], seeds=[0], probe=dict(steps=5))
    assert run_study(s)["test_reads"] == []
    results = run_study(_settings(tree_folder, tmp_path / "s", methods=[], seeds=[0], probe=dict(steps=5),
                                  split="test"))
    assert results["split"] == "test" and len(results["test_reads"]) == 1
    assert "**Scored on the test split**" in (tmp_path / "s" / "results-test.md").read_text()
    assert (tmp_path / "s" / "results-val.md").is_file()  # the val results stay beside them
    assert "No pretraining in this study" in (tmp_path / "s" / "results-val.md").read_text()  # (methods=[])
    # running it again reads no test cell (all are filed): no second reading is recorded
    again = run_study(_settings(tree_folder, tmp_path / "s", methods=[], seeds=[0], probe=dict(steps=5), split="test"))
    assert again["test_reads"] == results["test_reads"]
    # new test cells after a reading are refused (nothing computed), unless asked for, and then recorded as such
    more = dict(methods=[], seeds=[0, 1], probe=dict(steps=5), split="test")
    with pytest.raises(SettingsError, match="was read on .* pass --read-test-again"):
        run_study(_settings(tree_folder, tmp_path / "s", **more))
    assert not (tmp_path / "s" / "probe-test" / "random" / "f1-s1-sub0" / "metrics.json").exists()
    second = run_study(_settings(tree_folder, tmp_path / "s", read_test_again=True, **more))
    assert len(second["test_reads"]) == 2 and second["test_reads"][1].endswith("(again)")
    assert "(again)" in (tmp_path / "s" / "results-test.md").read_text()


def test_a_finished_study_is_re_scored_with_batchnorm_re_estimated_beside_the_first_results(tmp_path, tree_folder):
    out = tmp_path / "s"
    run_study(_settings(tree_folder, out, methods=[], seeds=[0], probe=dict(steps=5)))
    plain = (out / "results-val.md").read_text()
    results = run_study(_settings(tree_folder, out, methods=[], seeds=[0], probe=dict(steps=5), reestimate_bn=True))
    assert results["settings"]["reestimate_bn"]
    assert "BatchNorm re-estimated for every encoder" in (out / "results-val-bn.md").read_text()
    assert (out / "results-val.md").read_text() == plain and (out / "study-val-bn-probe.png").is_file()
    assert (out / "probe-val-bn" / "random" / "f1-s0-sub0" / "metrics.json").is_file()


def test_a_method_variant_is_pretrained_and_compared_beside_its_method(tmp_path, tree_folder, capsys):
    s = _settings(tree_folder, tmp_path / "v", methods=["mocov2", "mocov2:lr=0.3,keep_colour=false"], controls=[],
                  seeds=[0], probe=dict(steps=5))
    results = run_study(s)
    variant = tmp_path / "v" / "pretrain" / "mocov2+lr=0.3,keep_colour=false-s0"
    saved = yaml.safe_load((variant / "config.yaml").read_text())
    assert saved["lr"] == 0.3 and saved["keep_colour"] is False and saved["method"] == "mocov2"
    assert yaml.safe_load((tmp_path / "v" / "pretrain" / "mocov2-s0" / "config.yaml").read_text())["lr"] == 0.03
    assert set(results["cells"]["probe"]) == {"mocov2", "mocov2:lr=0.3,keep_colour=false"}
    assert (tmp_path / "v" / "probe-val" / "mocov2+lr=0.3,keep_colour=false" / "f1-s0-sub0" / "metrics.json").is_file()
    for bad, message in (("mocov3", "unknown method 'mocov3'"), ("mocov2:lr", "METHOD:KEY=VALUE"),
                         ("mocov2:lrr=0.3", "did you mean 'lr'"), ("mocov2:seed=3", "seed is set by the study"),
                         ("mocov2:ffl_head_loss=cube", "ffl_head_loss 'cube'")):
        code = main(["study", "--dataset", "folder", "--data-root", str(tree_folder), "--out", str(tmp_path / "w"),
                     "--methods", bad])
        assert code == 2 and message in capsys.readouterr().err, bad
    assert not (tmp_path / "w").exists()


def test_fine_tuning_cells_start_from_a_recipe_under_the_studys_settings_and_are_reused(tmp_path, tree_folder):
    """What `mpinet compare` did (fine-tune every encoder at every label fraction with a chosen decoder and
    recipe) is the study's finetune evaluation: a recipe sets what the study does not, a finished cell is reused,
    and a recipe that does not fit is refused before the folder is made."""
    recipe = tmp_path / "unet.yaml"
    recipe.write_text("decoder: unet\nlr: 0.001\nsteps: 999\n")
    settings = _settings(tree_folder, tmp_path / "study", methods=[], seeds=[0], evaluations=["finetune"],
                         finetune=dict(steps=2), finetune_config=str(recipe))
    results = run_study(settings)
    cell = Path(results["cells"]["finetune"]["random"]["1"][0]["cell"])
    saved = yaml.safe_load((cell / "run" / "config.yaml").read_text())
    assert (saved["decoder"], saved["lr"], saved["steps"]) == ("unet", 0.001, 2)  # the study's steps win
    filed = json.loads((cell / "metrics.json").read_text())["mIoU"]
    assert 0 < filed <= 100 and filed == pytest.approx(100 * results["cells"]["finetune"]["random"]["1"][0]["value"])
    stamp = (cell / "metrics.json").stat().st_mtime_ns
    run_study(settings)
    assert (cell / "metrics.json").stat().st_mtime_ns == stamp  # reused, not re-run
    (tmp_path / "bad.yaml").write_text("decoder: nosuch\n")
    with pytest.raises(SettingsError, match="unknown decoder 'nosuch'"):
        run_study(_settings(tree_folder, tmp_path / "other", methods=[], seeds=[0], evaluations=["finetune"],
                            finetune_config=str(tmp_path / "bad.yaml")))
    assert not (tmp_path / "other").exists()


def test_two_studies_sharing_a_folder_keep_each_others_cell_times(tmp_path):
    """One study process per method into one folder (one per core or GPU): each records its cells' minutes
    without dropping the other's, which it loaded before they were written."""
    from mpinet_hub.downstream.study import _Timings

    first, second = _Timings(tmp_path / "timings.json"), _Timings(tmp_path / "timings.json")
    first.record(tmp_path / "pretrain" / "mpinet-s0", 60.0)
    second.record(tmp_path / "pretrain" / "mocov2-s0", 120.0)
    again = _Timings(tmp_path / "timings.json")
    assert again.minutes(tmp_path / "pretrain" / "mpinet-s0") == 1.0
    assert again.minutes(tmp_path / "pretrain" / "mocov2-s0") == 2.0


def test_the_answer_says_per_label_budget_whether_each_pretrained_encoder_pays():
    from mpinet_hub.downstream.study import _verdicts, answer_lines

    def cells(values):
        return [{"seed": i, "subset_seed": 0, "value": v} for i, v in enumerate(values)]

    by_name = {"good": {"0.1": cells([0.50, 0.51, 0.52])}, "bad": {"0.1": cells([0.20, 0.21, 0.22])},
               "tie": {"0.1": cells([0.42, 0.38, 0.40])},
               "random": {"0.1": cells([0.30, 0.31, 0.30])}, "random-bn": {"0.1": cells([0.40, 0.41, 0.40])}}
    results = {"cells": {"probe": by_name}, "verdicts": _verdicts({"probe": by_name}),
               "settings": {"controls": ["random", "random-bn"]},
               "pretraining": {"good-s0": {"warnings": []}, "tie-s0": {"warnings": ["the instance loss never left"]}}}
    text = "\n".join(answer_lines(results))
    assert "probe, 10% labels, good: **pays**" in text
    assert "probe, 10% labels, bad: **does not pay**" in text and "random-bn better" in text
    assert "probe, 10% labels, tie: not shown: not better than every control" in text
    assert "random +9.7 [+3.4, +15.9] (tie better), random-bn -0.3 [-6.6, +5.9] (no verdict)" in text
    assert "1 of 2 pretraining runs warn" in text
    results["settings"]["controls"] = []
    assert "No control in this study" in "\n".join(answer_lines(results))


@pytest.mark.parametrize("repeated", [dict(seeds=[0, 1, 0]), dict(seeds=[0, 0]), dict(subset_seeds=[0, 0]),
                                      dict(fractions=[0.1, 0.1]), dict(methods=["mocov2", "mocov2"])])
def test_a_value_given_twice_is_refused_before_the_folder_is_made(tmp_path, tree_folder, repeated, capsys):
    """`--seeds 0 1 0` once reported seed 0's cell twice in the mean, the spread and the verdicts (exit 0)."""
    out = tmp_path / "s"
    flags = [f"--{k.replace('_', '-')}" for k in repeated]
    args = ["study", "--dataset", "folder", "--data-root", str(tree_folder), "--out", str(out), "--device", "cpu",
            flags[0], *map(str, next(iter(repeated.values())))]
    assert main(args) == 2
    assert "given twice" in capsys.readouterr().err and not out.exists()


def test_an_encoder_spec_changed_under_its_name_is_never_reused(tmp_path, tree_folder):
    """`--encoders x=random`, then the same study with `x=random-bn`: the random cell was reused as random-bn."""
    out = tmp_path / "s"
    run_study(_settings(tree_folder, out, methods=[], controls=[], encoders={"x": "random"}, seeds=[0],
                        probe=dict(steps=5)))
    with pytest.raises(SettingsError, match="'random' -> 'random-bn'"):
        run_study(_settings(tree_folder, out, methods=[], controls=[], encoders={"x": "random-bn"}, seeds=[0],
                            probe=dict(steps=5)))


def test_a_fine_tuning_recipe_changed_on_disk_is_not_reused(tmp_path, tree_folder):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("decoder: unet\nlr: 0.01\n")
    settings = dict(methods=[], controls=["random"], seeds=[0], evaluations=["finetune"], finetune=dict(steps=2),
                    finetune_config=str(recipe))
    run_study(_settings(tree_folder, tmp_path / "s", **settings))
    recipe.write_text("decoder: unet\nlr: 0.02\n")
    with pytest.raises(SettingsError, match="lr 0.01 -> 0.02"):
        run_study(_settings(tree_folder, tmp_path / "s", **settings))


def test_a_damaged_cell_is_computed_again_and_named(tmp_path, tree_folder, capsys):
    out = tmp_path / "s"
    first = run_study(_settings(tree_folder, out, methods=[], seeds=[0], probe=dict(steps=5)))
    metrics = out / "probe-val" / "random" / "f1-s0-sub0" / "metrics.json"
    for damage in ('{"mIoU": 1', "", "{}"):
        metrics.write_text(damage)
        again = run_study(_settings(tree_folder, out, methods=[], seeds=[0], probe=dict(steps=5)))
        value = again["cells"]["probe"]["random"]["1"][0]["value"]
        assert value == first["cells"]["probe"]["random"]["1"][0]["value"]  # computed again, the same
        assert f"{metrics.parent}: metrics.json is damaged" in capsys.readouterr().err


def test_a_recipe_cannot_change_a_methods_identity(tmp_path, tree_folder):
    """A --pretrain-config recipe with w_pix once turned mocov2 into a pixel method, and the release recipe turned
    mocov2-original's fixed 0.999 momentum into the cosine schedule, silently."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("w_pix: 1.0\nlr: 0.1\n")
    with pytest.raises(SettingsError, match="w_pix 1.0, which the method mocov2 fixes at 0.0"):
        _settings(tree_folder, tmp_path / "s", methods=["mocov2", "mpinet"], pretrain_config=str(recipe)).validate()
    with pytest.raises(SettingsError, match="momentum_schedule"):
        PretrainConfig.from_sources("mpinet_resnet50_potsdam", method="mocov2-original")
    assert PretrainConfig.from_sources(recipe, method="mpinet").lr == 0.1  # mpinet's own w_pix is 1.0: no clash
    assert PretrainConfig.from_sources("mpinet_resnet50_potsdam").method == "mpinet"  # the recipe's own method
    # a user's recipe without a method, for the one method a flag names, tunes that run as asked
    assert PretrainConfig.from_sources(recipe, method="mocov2").w_pix == 1.0


def test_an_identity_setting_a_saved_run_did_not_record_is_not_taken_as_matching():
    """A run made before `ffl_head_warmup` existed was accepted under any value of it."""
    import dataclasses

    from mpinet_hub.settings import changed_settings

    cfg = PretrainConfig.from_sources(None, method="mpinet", arch="mpinet_resnet18")
    saved = dataclasses.asdict(cfg)
    del saved["ffl_head_warmup"]
    assert any(c.startswith("ffl_head_warmup") for c in changed_settings(cfg, saved, "reuse"))
    del saved["dense_warmup_steps"]  # MPINet never reads it
    assert not any(c.startswith("dense_warmup_steps") for c in changed_settings(cfg, saved, "reuse"))
    densecl = PretrainConfig.from_sources(None, method="densecl", arch="mpinet_resnet18")
    older = {k: v for k, v in dataclasses.asdict(densecl).items() if k != "dense_warmup_steps"}
    # declared with was=0: a DenseCL run made before the warmup existed had none, and is not today's preset
    assert changed_settings(densecl, older, "reuse") == ["dense_warmup_steps 0 -> 20"]


def _band_folder(root: Path, bands: int, dtype: str, top: int) -> Path:
    """A labeled folder of `bands`-band GeoTIFFs whose values never exceed `top` (one class brighter)."""
    import rasterio

    root.mkdir(parents=True)
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": ["dark", "bright"]}))
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            mask = np.zeros((64, 64), np.uint8)
            mask[rng.integers(0, 32):, rng.integers(0, 32):] = 1
            pixels = rng.integers(0, top // 2, (bands, 64, 64)) + mask.astype(np.int64) * (top // 2)
            profile = dict(driver="GTiff", height=64, width=64, count=bands, dtype=dtype)
            with rasterio.open(root / split / "images" / f"t{i}.tif", "w", **profile) as dst:
                dst.write(pixels.astype(dtype))
            Image.fromarray(mask).save(root / split / "masks" / f"t{i}.png")
    return root


@pytest.mark.parametrize("bands, dtype, top", [(1, "uint16", 2047), (4, "uint8", 255)])
def test_a_study_runs_on_one_band_and_four_band_imagery_with_band_statistics_from_train(tmp_path, bands, dtype,
                                                                                       top, capsys):
    """A one-band uint16 (panchromatic, 11-bit) folder stopped at the control: `1-band input: give --mean and
    --std`, flags the study did not have. Now every cell is normalised with the train split's per-band mean/std."""
    root = _band_folder(tmp_path / "data", bands, dtype, top)
    out = tmp_path / "s"
    args = ["study", "--dataset", "folder", "--data-root", str(root), "--out", str(out), "--methods", "mocov2",
            "--controls", "random", "random-bn", "--seeds", "0", "1", "--fractions", "1", "--pretrain", "steps=2",
            "batch_size=4", "patch=48", "crop=32", "queue_size=16", "--label-patch", "32", "--probe", "steps=5",
            "window=64", "--device", "cpu"]
    if dtype == "uint16":
        args += ["--value-max", str(top)]
    assert main(args) == 0, capsys.readouterr().err
    saved = json.loads((out / "study.json").read_text())["settings"]
    assert len(saved["mean"]) == len(saved["std"]) == bands and 0.2 < saved["mean"][0] < 0.8
    results = json.loads((out / "results-val.json").read_text())
    assert set(results["cells"]["probe"]) == {"mocov2", "random", "random-bn"}
    assert "per-band mean" in (out / "results-val.md").read_text()
    pretrain = yaml.safe_load((out / "pretrain" / "mocov2-s0" / "config.yaml").read_text().split("\n", 1)[-1]
                              if (out / "pretrain" / "mocov2-s0" / "config.yaml").read_text().startswith("#")
                              else (out / "pretrain" / "mocov2-s0" / "config.yaml").read_text())
    assert pretrain["mean"] == pytest.approx(saved["mean"])


def test_a_metric_class_that_does_not_exist_is_refused_before_any_cell(tmp_path, tree_folder, capsys):
    out = tmp_path / "s"
    assert main(["study", "--dataset", "folder", "--data-root", str(tree_folder), "--out", str(out), "--metric",
                 "IoU:nosuchclass", "--device", "cpu"]) == 2
    assert "no class 'nosuchclass'; classes: ground, tree" in capsys.readouterr().err and not out.exists()


def test_results_say_pretraining_minutes_how_to_use_an_encoder_and_no_empty_verdict_table():
    from mpinet_hub.downstream.study import study_markdown

    settings = dict(_settings("root", "out").__dict__)
    cells = {"probe": {"mocov2": {"1": [{"seed": 0, "subset_seed": 0, "value": 0.5, "cell": "c", "minutes": 0.5}]}}}
    diagnostics = {"mocov2-s0": {"minutes": 12.0, "ins_last10pct": 5.0, "chance": 5.5, "key_effective_rank": 9.0,
                                 "warnings": []}}
    md = study_markdown({"dataset": "folder", "split": "val", "metric": "mIoU", "settings": settings,
                         "test_reads": [], "cells": cells, "pretraining": diagnostics, "verdicts": []})
    assert "| mocov2 | 50.0 | 12.0 + 0.5 |" in md  # was 0.5: the pretraining minutes were only in diagnostics
    assert "mpinet finetune --encoder out/pretrain/METHOD-sSEED" in md and "mpinet predict RUN" in md
    assert "no pair to compare" in md and "## Verdicts" not in md and "## Pretraining diagnostics" in md


def test_a_study_refused_for_an_empty_train_split_claims_no_folder(tmp_path, tree_folder, capsys):
    """It once claimed its folder, so the corrected rerun was refused `holds a study made with other settings`."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tree_folder, root)
    for f in (root / "train" / "images").iterdir():
        f.unlink()
    out = tmp_path / "s"
    assert main(["study", "--dataset", "folder", "--data-root", str(root), "--out", str(out), "--device", "cpu"]) == 1
    assert "train" in capsys.readouterr().err and not out.exists()


def test_any_cell_setting_is_set_for_every_cell_under_its_kind_and_a_placed_one_is_refused(tmp_path, tree_folder,
                                                                                            capsys):
    """The study mirrored ten of its cells' settings by hand (pretrain_steps, probe_steps, ...), so a probe's lr
    or a pretraining setting it did not mirror could not be studied; now `--probe KEY=VALUE` sets any of them."""
    out = tmp_path / "s"
    common = ["study", "--dataset", "folder", "--data-root", str(tree_folder), "--methods", "--controls", "random",
              "--seeds", "0", "--fractions", "1", "--label-patch", "32", "--device", "cpu"]
    assert main([*common, "--out", str(out), "--probe", "steps=5", "window=64", "lr=0.003"]) == 0, \
        capsys.readouterr().err
    cell = yaml.safe_load((out / "probe-val" / "random" / "f1-s0-sub0" / "config.yaml").read_text())
    assert (cell["steps"], cell["window"], cell["lr"]) == (5, 64, 0.003)
    assert "Probe: 5 steps (window=64, lr=0.003)" in (out / "results-val.md").read_text()
    # a key the study places for every cell, or no setting of the cell, is refused before any folder is made
    for flag, message in ((["--probe", "seed=3"], "the study sets seed for every cell"),
                          (["--pretrain", "stpes=3"], "did you mean 'steps'"),
                          (["--finetune", "steps"], "--finetune steps: write KEY=VALUE")):
        assert main([*common, "--out", str(tmp_path / "bad"), *flag]) == 2 and message in capsys.readouterr().err, flag
        assert not (tmp_path / "bad").exists()


def test_a_study_made_with_its_cell_settings_flat_is_resumed_not_refused(tmp_path, tree_folder):
    """A study folder whose study.json records pretrain_steps, probe_steps, window, ... (before they were nested)
    is the same study under today's settings: its cells are reused, and a changed step count is still refused."""
    out = tmp_path / "s"
    run_study(_settings(tree_folder, out, methods=[], seeds=[0], probe=dict(steps=5)))
    record = json.loads((out / "study.json").read_text())
    nested = record["settings"]
    flat = {k: v for k, v in nested.items() if k not in ("pretrain", "probe", "finetune")} | {
        "pretrain_steps": nested["pretrain"]["steps"], "batch_size": nested["pretrain"]["batch_size"],
        "patch": nested["pretrain"]["patch"], "crop": nested["pretrain"]["crop"],
        "queue_size": nested["pretrain"]["queue_size"], "lr": nested["pretrain"]["lr"], "probe_steps": 5,
        "window": 64, "finetune_steps": nested["finetune"]["steps"]}
    (out / "study.json").write_text(json.dumps(record | {"settings": flat}))
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")}
    run_study(_settings(tree_folder, out, methods=[], seeds=[0], probe=dict(steps=5)))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")} == stamps
    (out / "study.json").write_text(json.dumps(record | {"settings": flat}))
    with pytest.raises(SettingsError, match="probe.steps 5 -> 6"):
        run_study(_settings(tree_folder, out, methods=[], seeds=[0], probe=dict(steps=6)))


def test_a_potsdam_study_reads_its_band_product_in_every_cell(tmp_path, capsys):
    """`--bands` reached the pretraining cells only: probes and fine-tuning read RGB, so an IRRG study scored IRRG
    encoders on RGB images without a word, and an RGBIR one stopped at `4-band input: give --mean and --std` (the
    band statistics were computed on RGB)."""
    from mpinet_hub.data.synth import synth_dataset

    synth_dataset("potsdam", tmp_path / "data", tiles=6, size=128)
    out = tmp_path / "s"
    assert main(["study", "--dataset", "potsdam", "--data-root", str(tmp_path / "data"), "--out", str(out),
                 "--bands", "RGBIR", "--methods", "mocov2", "--controls", "random", "--seeds", "0", "--fractions", "1",
                 "--pretrain", "steps=2", "batch_size=4", "patch=48", "crop=32", "queue_size=16", "--label-patch",
                 "32", "--probe", "steps=5", "window=64", "--finetune", "steps=2", "batch_size=2", "--evaluations",
                 "probe", "finetune", "--split", "test", "--device", "cpu"]) == 0, capsys.readouterr().err
    saved = json.loads((out / "study.json").read_text())["settings"]
    assert len(saved["mean"]) == len(saved["std"]) == 4
    configs = [out / "probe-test" / "mocov2" / "f1-s0-sub0" / "config.yaml",
               out / "finetune-test" / "random" / "f1-s0-sub0" / "run" / "config.yaml"]
    for config in configs:
        assert yaml.safe_load(config.read_text())["bands"] == "RGBIR", config
        patches = json.loads((config.parent / "labeled_patches.json").read_text())
        assert patches["bands"] == "RGBIR", config
    said = (out / "results-test.md").read_text()
    assert said.startswith("# Does pretraining pay? potsdam RGBIR (") and "--dataset potsdam --bands RGBIR " in said


def test_a_studys_pretraining_cells_keep_one_periodic_checkpoint_unless_told(tmp_path):
    """Every pretraining cell kept pretraining's default five periodic checkpoints (three at the study's default
    200 steps, 144 MB each for ResNet-18), which the study never reads: this project's evidence studies left 16 GB
    of them. last.pt, which the study reads and resumes from, is always kept (test_faults.py checks the pruning)."""
    cells = [PretrainConfig.from_sources(None, **s._pretrain_values("mocov2", 0, str(tmp_path / "run")))
             for s in (_settings(tmp_path, tmp_path / "s"),
                       _settings(tmp_path, tmp_path / "s", pretrain={"keep_last": 3}))]
    assert [cell.keep_last for cell in cells] == [1, 3]


def test_a_study_that_fails_before_any_checkpoint_leaves_no_folder_and_the_corrected_rerun_runs(
        tmp_path, tree_folder, capsys, monkeypatch):
    """A study whose first pretraining cell was refused (images of 64 px, the default 160 px windows) left
    study.json behind, so the corrected command was refused: `holds a study made with other settings`."""
    from mpinet_hub.downstream import study

    out = tmp_path / "s"
    common = ["study", "--dataset", "folder", "--data-root", str(tree_folder), "--out", str(out), "--methods",
              "mocov2", "--controls", "random", "--seeds", "0", "--fractions", "1", "--label-patch", "32",
              "--probe", "steps=5", "window=64", "--device", "cpu", "--pretrain", "steps=2"]
    assert main(common) != 0  # refused in the study's words: `mpinet pretrain --patch 64` is `--pretrain patch=64`
    assert ("error: pretraining cell mocov2-s0: every image is smaller than the patch size 160 (patch); pass "
            "--pretrain patch=64 or less (and crop no larger)") in capsys.readouterr().err and not out.exists()
    # corrected; a failure once a checkpoint exists keeps the folder: the study resumes from it
    corrected = [*common, "batch_size=4", "patch=48", "crop=32", "queue_size=16"]
    with monkeypatch.context() as patched:
        patched.setattr(study, "run_probe", lambda cfg: (_ for _ in ()).throw(ValueError("the probe failed")))
        assert main(corrected) == 1 and "the probe failed" in capsys.readouterr().err
    last = out / "pretrain" / "mocov2-s0" / "checkpoints" / "last.pt"
    assert last.is_file()
    made = last.stat().st_mtime_ns
    assert main(corrected) == 0, capsys.readouterr().err
    assert last.stat().st_mtime_ns == made  # the pretraining cell was reused, not run again
