"""Typed settings, packaged recipes by name, precision `auto`, `mpinet configs` and `--version`."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from mpinet_hub import __version__
from mpinet_hub.cli import main
from mpinet_hub.downstream.finetune import FinetuneConfig
from mpinet_hub.pretrain.config import PretrainConfig, packaged_configs
from mpinet_hub.settings import SettingsError
from mpinet_hub.training import resolve_precision


def _yaml(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_yaml_numbers_written_as_strings_are_read_as_their_declared_types(tmp_path):
    cfg = PretrainConfig.from_sources(_yaml(tmp_path, "lr: 3e-2\nbatch_size: '16'\nphotometric: 'false'\n"
                                                      "data_root: /data/one\nw_ffl: auto\n"))
    assert (cfg.lr, cfg.batch_size, cfg.photometric, cfg.data_root, cfg.w_ffl) == (0.03, 16, False, ["/data/one"],
                                                                                    "auto")
    assert isinstance(cfg.lr, float) and isinstance(cfg.batch_size, int)
    assert PretrainConfig.from_sources(_yaml(tmp_path, "w_ffl: 0.5\n")).w_ffl == 0.5


@pytest.mark.parametrize("text, message", [
    ("batchsize: 16\n", "unknown setting 'batchsize'; did you mean 'batch_size'"),
    ("lr: fast\n", "lr: 'fast' is not a float"),
    ("batch_size: 16.5\n", "batch_size: 16.5 is not a int"),
    ("photometric: maybe\n", "photometric: 'maybe' is not a bool"),
    ("method: mocov3\n", "recipe.yaml: unknown method 'mocov3'; choose one of .*mpinet"),
])
def test_a_setting_that_does_not_fit_is_refused_with_its_key_and_the_type_wanted(tmp_path, text, message):
    with pytest.raises(SettingsError, match=message):
        PretrainConfig.from_sources(_yaml(tmp_path, text))
    if "photometric" not in text and "method" not in text:  # a pretraining setting only
        with pytest.raises(SettingsError, match=message):
            FinetuneConfig.from_sources(_yaml(tmp_path, text), dataset="potsdam", data_root="/x")


def test_packaged_recipes_load_by_name_and_choose_the_precision_by_device():
    names = packaged_configs()
    assert {"mpinet_resnet50_potsdam", "finetune_deeplabv3plus_loveda"} <= set(names)
    pre = PretrainConfig.from_sources("mpinet_resnet50_potsdam")
    fine = FinetuneConfig.from_sources("finetune_deeplabv3plus_loveda", data_root="/x")
    assert pre.batch_size == 256 and pre.precision == fine.precision == "auto" and fine.dataset == "loveda"
    assert resolve_precision("auto", torch.device("cpu")) == "32"  # bf16 autocast is slow on CPUs
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_cli_lists_the_recipes_and_prints_its_version(capsys):
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in packaged_configs())
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"mpinet-hub {__version__}"


def test_version_answers_without_importing_torch():
    """`mpinet --version` is the console script's launcher answering from the installed metadata: importing
    mpinet_hub registers the encoders with timm, which loads torch (seconds)."""
    import subprocess
    import sys

    from .conftest import REPO_ROOT

    code = ("import sys, _mpinet_launcher; rc = _mpinet_launcher.main(['--version']); "
            "print('torch' in sys.modules, 'mpinet_hub' in sys.modules, rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"mpinet-hub {__version__}", "False False 0"]


def test_progress_prints_lines_to_a_log_file_and_a_bar_to_a_terminal():
    import io

    from mpinet_hub.progress import progress

    log = io.StringIO()  # not a terminal: a file, a pipe, CI
    with progress(total=3, desc="steps", file=log) as bar:  # refreshes 30 s apart: the first and the final line
        for step in range(3):
            bar.set_postfix(loss=1.0 / (step + 1))  # a trainer's per-step postfix must not print a line each
            bar.update(1)
    lines = log.getvalue().split("\n")
    assert "\r" not in log.getvalue() and lines[-1] == "" and len(lines) == 3
    assert "0/3" in lines[0] and "3/3" in lines[1]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    for _ in progress(range(3), desc="steps", file=tty, mininterval=0):
        pass
    assert "\r" in tty.getvalue()  # the usual redrawn bar


def test_an_installed_wheel_carries_every_module_recipe_and_card(tmp_path):
    """Build the wheel and install it as users do (not `pip install -e`, whose finder serves the checkout and hides
    a module the wheel lacks) into a fresh virtual environment that reuses this one's dependencies; then the
    installed `mpinet` must show pretrain's help and pretrain two steps, and recipes and the card template must
    come from the installed files."""
    import shutil
    import subprocess
    import sys
    import sysconfig
    import venv

    from mpinet_hub.data.synth import synth_dataset

    from .conftest import REPO_ROOT

    source, wheels, env_dir = tmp_path / "source", tmp_path / "wheels", tmp_path / "venv"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "_mpinet_launcher.py"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for name in ("mpinet_hub", "configs", "weights_cards"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # the build step writes build/ and *.egg-info beside the sources: a copy, so the checkout stays clean
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheels.glob("mpinet_hub-*.whl")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies as a plain path entry: this environment's .pth files (the editable finder) are not run there
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    subprocess.run(pip + ["--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}:{env.get('PATH', '')}"

    def installed(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=tmp_path)

    where = installed(str(python), "-c", "import mpinet_hub, sys; print(mpinet_hub.__file__)")
    assert where.returncode == 0 and where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    shipped = {p.parent.relative_to(site).as_posix() for p in (site / "mpinet_hub").rglob("__init__.py")}
    expected = {p.parent.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "mpinet_hub").rglob("__init__.py")}
    assert expected <= shipped, f"the wheel lacks {sorted(expected - shipped)}"
    mpinet = str(env_dir / "bin" / "mpinet")
    versioned = installed(mpinet, "--version")  # the launcher module ships beside the package
    assert versioned.returncode == 0 and versioned.stdout.strip() == f"mpinet-hub {__version__}", versioned.stderr
    helped = installed(mpinet, "pretrain", "--help")
    assert helped.returncode == 0 and "--method" in helped.stdout, helped.stderr
    listed = installed(mpinet, "configs")
    assert listed.returncode == 0 and "mpinet_resnet50_potsdam" in listed.stdout, listed.stderr
    data = tmp_path / "data"
    synth_dataset("potsdam", data, tiles=2, size=96, seed=0)
    trained = installed(mpinet, "pretrain", "--dataset", "potsdam", "--data-root", str(data), "--arch",
                        "mpinet_resnet18", "--method", "mocov2", "--patch", "64", "--crop", "48", "--batch-size", "4",
                        "--queue-size", "8", "--workers", "0", "--device", "cpu", "--steps", "2", "--out",
                        str(tmp_path / "run"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    # a warning reaches the user as one line (here: the synthetic set holds 2 of Potsdam's tiles), no source line
    assert "warning: Potsdam train:" in trained.stderr and "UserWarning" not in trained.stderr, trained.stderr
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert list(site.glob("mpinet_hub/weights_cards/*.md")), "the card template is missing from the wheel"


def _settings_of(name: str) -> type:
    from mpinet_hub.downstream.finetune import FinetuneConfig
    from mpinet_hub.downstream.probe import ProbeConfig
    from mpinet_hub.downstream.quickstart import QuickstartSettings
    from mpinet_hub.downstream.study import StudySettings
    from mpinet_hub.pretrain.config import PretrainConfig

    return {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "probe": ProbeConfig, "study": StudySettings,
            "quickstart": QuickstartSettings}[name]


SETTINGS_COMMANDS = ["pretrain", "finetune", "probe", "study", "quickstart"]


@pytest.mark.parametrize("command", SETTINGS_COMMANDS)
def test_every_setting_is_a_flag_whose_help_shows_the_default_read_from_the_settings(command):
    """The flags are made from the settings: before, 31 of 56 pretraining settings had no flag (named YAML-only),
    probe's bn_batches could not be set at all, and defaults were shown three ways."""
    import dataclasses

    from mpinet_hub.cli import build_parser
    from mpinet_hub.settings import field_default

    parser = build_parser()._subparsers._group_actions[0].choices[command]
    actions = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(_settings_of(command)):
        assert f.name in actions, f"{command}: {f.name} has no flag"
        default = field_default(f)
        if f.name == "device" or default in (dataclasses.MISSING, None, [], {}):
            continue  # --device: one option for every command, on the parent parser
        shown = (" ".join(map(str, default)) if isinstance(default, list) else
                 " ".join(f"{k}={v}" for k, v in default.items()) if isinstance(default, dict) else default)
        assert f"(default: {shown})" in actions[f.name].help, (command, f.name)
        assert actions[f.name].help.split(" (default")[0], f"{command}: {f.name} has no help"
    if command == "pretrain":  # the README counts them
        from .conftest import REPO_ROOT

        count = len(dataclasses.fields(_settings_of(command)))
        assert f"all {count} under headings" in (REPO_ROOT / "README.md").read_text()


def test_a_flag_reaches_its_setting_as_the_declared_type():
    """Every field's flag is typed from its annotation: a union reads as the field's own type, booleans have
    --no- forms, lists take several values, and what is not given keeps the settings' (or the recipe's) value."""
    from mpinet_hub.cli import build_parser
    from mpinet_hub.pretrain.config import PretrainConfig
    from mpinet_hub.settings import settings_from_args

    pretrain = build_parser()._subparsers._group_actions[0].choices["pretrain"]

    def config(*flags: str) -> PretrainConfig:
        args = pretrain.parse_args(["--data-root", "r", *flags])
        return PretrainConfig.from_sources(args.config, **settings_from_args(PretrainConfig, args))

    cfg = config("--w-ffl", "0.25", "--no-shuffle-bn", "--fusion-levels", "C3", "C4", "--pixel-anchors", "16",
                 "--ffl-head-loss", "raw", "--crop-scale", "0.5", "1")
    assert (cfg.w_ffl, cfg.shuffle_bn, cfg.fusion_levels, cfg.pixel_anchors) == (0.25, False, ["C3", "C4"], 16)
    assert (cfg.ffl_head_loss, cfg.crop_scale) == ("raw", [0.5, 1.0])
    assert config("--w-ffl", "auto").w_ffl == "auto" and config().shuffle_bn is True
    recipe = config("--config", "mpinet_resnet50_potsdam")
    assert config("--config", "mpinet_resnet50_potsdam", "--lr", "0.1").lr == 0.1 != recipe.lr
    with pytest.raises(SystemExit):
        config("--ffl-head-loss", "cubic")


def test_settings_mistakes_exit_2_in_every_command(tmp_path, capsys):
    """Before: probe's and compare's (now the study's) settings mistakes raised ValueError (exit 1), pretrain's
    SettingsError (2)."""
    from mpinet_hub.cli import main

    root = str(tmp_path / "nowhere")
    assert main(["probe", "random", "--dataset", "potsdam", "--data-root", root, "--out", str(tmp_path / "p"),
                 "--batch-size", "1"]) == 2
    assert "--batch-size must be at least 2" in capsys.readouterr().err
    assert main(["study", "--dataset", "potsdam", "--data-root", root, "--out", str(tmp_path / "c"),
                 "--encoders", "random", "random", "--methods"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["finetune", "--dataset", "potsdam", "--data-root", root, "--out", str(tmp_path / "f"),
                 "--label-fraction", "2"]) == 2
    assert main(["finetune", "--data-root", root, "--out", str(tmp_path / "f")]) == 2  # was ValueError, exit 1
    assert "--dataset is required" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_unknown_method_in_a_recipe_is_a_settings_mistake_exit_2(tmp_path, capsys):
    """Before: a ValueError, exit 1, unlike every other setting a recipe gets wrong."""
    from mpinet_hub.cli import main

    recipe = _yaml(tmp_path, "method: mocov3\n")
    assert main(["pretrain", "--config", str(recipe), "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "unknown method 'mocov3'" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_every_command_takes_debug_and_shows_tracebacks_with_it(tmp_path, capsys):
    from mpinet_hub.cli import SUBCOMMANDS, build_parser, main

    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(commands) == set(SUBCOMMANDS) | {"pretrain", "finetune", "probe"}  # the run kinds by registration
    for name, parser in commands.items():
        assert any("--debug" in a.option_strings for a in parser._actions), name
    missing = str(tmp_path / "missing.yaml")
    assert main(["pretrain", "--config", missing, "--data-root", str(tmp_path)]) == 1  # one line, no traceback
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        main(["pretrain", "--config", missing, "--data-root", str(tmp_path), "--debug"])


def test_every_command_that_computes_takes_one_device_option_that_defaults_to_auto():
    """Before: --device was written in seven places, with three defaults shown three ways."""
    from mpinet_hub.cli import build_parser
    from mpinet_hub.downstream.probe import ProbeConfig
    from mpinet_hub.settings import settings_from_args

    commands = build_parser()._subparsers._group_actions[0].choices
    device = {name: next(a for a in p._actions if "--device" in a.option_strings)
              for name, p in commands.items() if any("--device" in a.option_strings for a in p._actions)}
    assert set(device) == {"pretrain", "finetune", "probe", "evaluate", "predict", "study", "quickstart"}
    assert len({id(a) for a in device.values()}) == 1 and "(default: auto)" in device["probe"].help
    # not given: each command's settings keep their own default; given: it reaches them
    args = commands["probe"].parse_args(["random", "--dataset", "potsdam", "--data-root", "r", "--out", "o"])
    assert ProbeConfig(**settings_from_args(ProbeConfig, args)).device == "auto"
    args = commands["probe"].parse_args(["random", "--dataset", "potsdam", "--data-root", "r", "--out", "o",
                                         "--device", "cpu"])
    assert ProbeConfig(**settings_from_args(ProbeConfig, args)).device == "cpu"


def test_one_identity_rule_declared_on_the_fields_for_resume_and_reuse(tmp_path):
    from mpinet_hub.downstream.finetune import FinetuneConfig
    from mpinet_hub.pretrain.config import PretrainConfig
    from mpinet_hub.settings import changed_settings

    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    cfg = PretrainConfig(data_root=[str(tmp_path / "data")], steps=100)
    saved = cfg.to_dict() | {"steps": 50, "device": "cuda", "workers": 0, "out": "elsewhere"}
    assert changed_settings(cfg, saved, "resume") == []  # length, device, workers, out: free on resume
    assert changed_settings(cfg, saved, "reuse") == ["steps 50 -> 100"]  # a 50-step cell is not a 100-step one
    moved = saved | {"data_root": [str(tmp_path / "link")], "steps": 100}
    assert changed_settings(cfg, moved, "reuse") == []  # the same folder by another path
    older = {k: v for k, v in saved.items() if k not in ("ffl_head_loss", "ffl_head_warmup")} | {"lr": 0.1}
    # a key the checkpoint predates compares as its declared earlier value (runs before ffl_head_loss were "raw"),
    # and counts as changed where none is declared (ffl_head_warmup): such a run is never taken for a match
    unknown = "ffl_head_warmup (not recorded: made by an earlier version) -> 50"
    assert changed_settings(cfg, older, "resume") == ["ffl_head_loss 'raw' -> 'log'", unknown, "lr 0.1 -> 0.03"]
    raw = dataclasses.replace(cfg, ffl_head_loss="raw")
    assert changed_settings(raw, older | {"lr": 0.03}, "resume") == [unknown]
    # settings with no effect on the run are not its identity: the FFL's for a method without the FFL
    moco = PretrainConfig.from_sources(None, method="mocov2", data_root=[str(tmp_path / "data")])
    assert changed_settings(moco, moco.to_dict() | {"ffl_head_loss": "raw", "pixel_grid": 7}, "reuse") == []
    assert changed_settings(moco, moco.to_dict() | {"t_ins": 0.1}, "reuse") == ["t_ins 0.1 -> 0.2"]
    tuned = FinetuneConfig(dataset="potsdam", data_root="d", weight_decay=0.01)
    assert changed_settings(tuned, tuned.to_dict() | {"weight_decay": 0.0}, "resume") == \
        ["weight_decay 0.0 -> 0.01"]


def test_pretrain_lists_only_pretraining_recipes_and_names_a_fine_tuning_one_given_to_it(tmp_path, capsys):
    """`mpinet pretrain --help` listed finetune_* recipes, and `--config finetune_deeplabv3plus_potsdam --plan` failed
    with `unknown setting 'decoder'; did you mean 'device'?`."""
    from mpinet_hub.cli import build_parser

    pretrain = build_parser()._subparsers._group_actions[0].choices["pretrain"]
    config_help = next(a.help for a in pretrain._actions if "--config" in a.option_strings)
    assert "mpinet_resnet50_potsdam" in config_help and "finetune_" not in config_help
    assert main(["pretrain", "--config", "finetune_deeplabv3plus_potsdam", "--plan"]) == 2
    err = capsys.readouterr().err
    assert "a fine-tuning recipe; give it to `mpinet finetune --config`" in err and "did you mean" not in err


def test_every_option_and_argument_of_every_command_has_help():
    """evaluate --dataset/--data-root, data check ROOT, data stats ROOT and data synth --seed had none; --data-root
    said 'the folder the release archives unpack into' for your own folder too, and no --help described its layout."""
    import argparse

    from mpinet_hub.cli import build_parser

    missing, parsers = [], [("mpinet", build_parser())]
    while parsers:
        name, parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
            elif name.endswith(("probe", "finetune", "study", "evaluate", "check", "stats")) and (
                    action.dest in ("root", "data_root")):  # labeled data: the layout is said where it is asked for
                assert "classes.yaml" in action.help, f"{name} {action.dest}: {action.help}"
    assert not missing, missing


@pytest.mark.parametrize("command", ["pretrain", "finetune", "probe"])
def test_overwrite_help_names_every_file_it_deletes(command, capsys):
    """Every run kind's --overwrite says what claim_run_folder deletes (pretrain's named four of nine)."""
    from mpinet_hub.training import RUN_FILES

    with pytest.raises(SystemExit):
        main([command, "--help"])
    helped = " ".join(capsys.readouterr().out.split())
    overwrite = helped[helped.index("--overwrite start over"):]
    assert all(name in overwrite[:400] for name in RUN_FILES), overwrite[:400]


def add_distill_arguments(p):  # the CLI of the run kind registered in the test below
    p.add_argument("--teacher", default="t0")


def run_distill(args) -> int:
    print(f"distilling from {args.teacher} on {args.device}")
    return 0


def test_a_registered_run_kind_is_an_mpinet_subcommand_that_computes_on_a_device(capsys):
    """A new run kind is its module and its registration: `mpinet NAME` follows, with --device, from
    `register_kind(NAME, command=MODULE, description=...)` alone."""
    from mpinet_hub import training
    from mpinet_hub.cli import build_parser, main

    before = dict(training.RUN_KINDS)
    try:
        @training.register_kind("distill", command=__name__, description="Distil a teacher encoder")
        class Distill(training.StepLoop):
            pass

        parser = build_parser()._subparsers._group_actions[0].choices["distill"]
        assert parser.description == "Distil a teacher encoder"
        assert main(["distill", "--teacher", "t1", "--device", "cpu"]) == 0
        assert capsys.readouterr().out == "distilling from t1 on cpu\n"
    finally:
        training.RUN_KINDS.clear()
        training.RUN_KINDS.update(before)


def test_every_run_kind_normalises_its_images_with_the_mean_and_std_it_records(tree_folder, tmp_path):
    """One normalisation for every kind (`StepLoop.use_normalisation`): the step's input is (x - mean) / std with
    the values the run's artifacts record (the pretraining checkpoint's norm, the fine-tuned model's and the probe's
    info), not a second copy that could drift from them."""
    from mpinet_hub.downstream.finetune import Finetuner
    from mpinet_hub.downstream.probe import ProbeConfig, Prober
    from mpinet_hub.pretrain.trainer import Trainer

    mean, std = [0.3, 0.4, 0.5], [0.2, 0.25, 0.3]
    common = dict(dataset="folder", device="cpu", mean=mean, std=std, seed=0)
    runs = {
        "pretrain": Trainer(PretrainConfig.from_sources(None, data_root=[str(tree_folder)], arch="mpinet_resnet18",
                                                        out=str(tmp_path / "pre"), steps=1, batch_size=2, patch=32,
                                                        crop=32, queue_size=8, workers=0, **common)),
        "finetune": Finetuner(FinetuneConfig.from_sources(None, data_root=str(tree_folder), out=str(tmp_path / "ft"),
                                                          patch=32, crop=32, batch_size=2, steps=1, **common)),
        "probe": Prober(ProbeConfig(encoder="random", data_root=str(tree_folder), out=str(tmp_path / "probe"),
                                    patch=32, batch_size=2, steps=1, **common)),
    }
    images = torch.rand(2, 3, 8, 8)
    expected = (images - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    recorded = {"pretrain": lambda r: (r.norm["mean"], r.norm["std"]),
                "finetune": lambda r: (r.info.mean, r.info.std), "probe": lambda r: r.mean_std}
    for kind, run in runs.items():
        assert torch.allclose(run.normalise(images), expected), kind
        assert [list(v) for v in recorded[kind](run)] == [mean, std], kind
        run.lock.abandon()
