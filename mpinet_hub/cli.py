"""The `mpinet` command line. Each subcommand lives beside the code it drives; this file only wires them."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from . import __version__
from .settings import SettingsError

# name -> (module holding `add_NAME_arguments(parser)` and `run_NAME(args) -> int`, one-line description); the run
# kinds (pretrain, finetune, probe) are subcommands by their registration (`training.register_kind`), listed first
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "data": ("mpinet_hub.data.cli", "Data sets: `synth` a miniature copy, `check` a folder, `stats` per band, "
             "`prepare` a windowed copy"),
    "diagnose": ("mpinet_hub.pretrain.cli", "Did a pretraining run learn? Instance loss vs chance, key collapse"),
    "export": ("mpinet_hub.hub.cli", "Training checkpoint or state dict -> Hub folder (safetensors, config, card)"),
    "push": ("mpinet_hub.hub.cli", "Upload an export folder to the Hugging Face Hub after checking it"),
    "verify": ("mpinet_hub.hub.cli", "Check an export folder or Hub repo (ORG/NAME@REV): sha256 of the weights"),
    "evaluate": ("mpinet_hub.downstream.cli", "Whole-tile sliding-window evaluation by a named metric protocol"),
    "predict": ("mpinet_hub.downstream.cli", "Class maps for GeoTIFF/PNG inputs (CRS and transform kept)"),
    "study": ("mpinet_hub.downstream.cli", "Does pretraining pay here? Methods x seeds x controls, verdicts by rule"),
    "quickstart": ("mpinet_hub.downstream.cli", "The whole pipeline on a synthetic Potsdam set in a few minutes"),
    "configs": ("mpinet_hub.pretrain.cli", "List the recipes installed with the package (`--config NAME`)"),
}
# the commands that compute on a device, and so take --device: these and every run kind
ON_A_DEVICE = {"evaluate", "predict", "study", "quickstart"}


def commands() -> dict[str, tuple[str, str]]:
    """Every subcommand: the registered run kinds' first, then `SUBCOMMANDS`."""
    from . import downstream, pretrain  # noqa: F401 (importing them registers their run kinds)
    from .training import RUN_KINDS

    return {name: kind.command for name, kind in RUN_KINDS.items() if kind.command} | SUBCOMMANDS


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one to show and the help text does not already give it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # identity, not equality: a default of 0 is a value to show, False and None are not
        nothing_to_show = any(action.default is none for none in (None, False, argparse.SUPPRESS))
        if nothing_to_show or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpinet",
        description="MPINet self-supervised pretraining for remote-sensing segmentation, and its timm/SMP/Hub "
        "weights. Run `mpinet COMMAND --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"mpinet-hub {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    common = argparse.ArgumentParser(add_help=False)  # options every command takes, defined once
    common.add_argument("--debug", action="store_true", help="show full tracebacks")
    on_device = argparse.ArgumentParser(add_help=False)
    # None: not given, so each command's settings (and a pretraining --config) keep their own default, auto
    on_device.add_argument("--device", help="auto (a GPU when there is one, else the CPU), cpu or cuda "
                           "(default: auto)")
    from .training import RUN_KINDS

    for name, (module_name, help_text) in commands().items():
        module = importlib.import_module(module_name)
        computes = name in ON_A_DEVICE or name in RUN_KINDS
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter,
                           parents=[common, on_device] if computes else [common])
        getattr(module, f"add_{name}_arguments")(p)
        p.set_defaults(_run=getattr(module, f"run_{name}"))
    return parser


def _library_errors() -> tuple[type[BaseException], ...]:
    """Error types of the libraries under the commands that mean bad input rather than a bug."""
    import yaml
    from safetensors import SafetensorError

    return yaml.YAMLError, SafetensorError


def _one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> str:
    """A warning as the user reads it: `warning: MESSAGE`, without Python's file, line and source."""
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    library_errors = _library_errors()
    warnings.formatwarning = _one_line_warning
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, *library_errors) as err:
        # Expected failures end in one line; --debug shows the traceback. Exit 2, as argparse's usage errors: the
        # settings, a file or the machine cannot be used (bad setting, torn weights or YAML, no permission, full
        # disk, no route, a refused token). Exit 1: the command refused on its own checks (a run folder that
        # belongs to another run, data that fails its checks, ...).
        if getattr(args, "debug", False):
            raise
        print(f"mpinet {args.command}: error: {err}", file=sys.stderr)
        unusable = isinstance(err, (SettingsError, *library_errors)) or (
            isinstance(err, OSError) and not isinstance(err, (FileNotFoundError, FileExistsError)))
        return 2 if unusable else 1


if __name__ == "__main__":
    raise SystemExit(main())
