"""Typed settings for the config dataclasses: YAML and flags checked against each field's declared type.

PyYAML reads `lr: 3e-2` as a string and `batch_size: '16'` stays one; left alone, both fail deep inside a
run. `coerce_settings` converts what has one clear reading (a numeric string to a number, "true"/"false" to a
bool, one value to a one-item list) and refuses the rest, naming the key, the value and the type wanted;
an unknown key is refused with the closest valid name.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SettingsError", "add_settings_arguments", "changed_settings", "coerce_settings", "field_default",
           "key_values", "read_yaml", "setting", "settings_from_args"]


class SettingsError(ValueError):
    """A setting that does not fit its field; the message names the key and what it expects."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any) -> Any:
    """`value` as type `tp`; ValueError when there is no clear reading."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if any(type(value) is a for a in args if a is not str):  # int | float: 2.0 stays a float
            return value
        # text last, so float | str reads "0.25" (a flag) as a number and "auto" as text
        for candidate in sorted((a for a in args if a is not type(None)), key=lambda a: a is str):
            try:
                return _coerce(value, candidate)
            except (TypeError, ValueError):
                continue
        raise ValueError
    if origin is list:
        items = value if isinstance(value, (list, tuple)) else [value]
        return [_coerce(v, args[0]) for v in items] if args else list(items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise ValueError
    if tp is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise ValueError
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        raise ValueError
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError
    return value


def coerce_settings(cls: type, values: dict[str, Any], source: str = "settings") -> dict[str, Any]:
    """`values` checked against the dataclass `cls`: unknown keys refused (closest name suggested), every value
    converted to its field's declared type or refused. `source` names where they came from (a YAML path)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(fields))}"
            raise SettingsError(f"{source}: unknown setting {key!r}{hint}")
        try:
            out[key] = _coerce(value, hints[key])
        except (TypeError, ValueError):
            raise SettingsError(f"{source}: {key}: {value!r} is not a {_type_name(hints[key])}") from None
    return out


def key_values(items: list[str], source: str) -> dict[str, Any]:
    """["steps=400", "lr=0.06"] -> {"steps": 400, "lr": 0.06}, each value read as YAML (a number, a list, true);
    `source` names the flag in the error for an item that is not KEY=VALUE."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SettingsError(f"{source} {item}: write KEY=VALUE")
        values[key] = yaml.safe_load(value)
    return values


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A settings file as a dict, or one line saying why it is not one (safe_load: no Python tags)."""
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SettingsError(f"{path}: not a plain YAML settings file{where}: {problem}") from None
    if not isinstance(values, dict):
        raise SettingsError(f"{path}: a YAML mapping of settings (key: value lines) is expected")
    return values


def setting(default: Any = dataclasses.MISSING, *, help: str = "", may_change: str | None = None,
            was: Any = dataclasses.MISSING, choices: Any = None, nargs: str | None = None) -> Any:
    """A settings field, declared once with everything the command line, resume and reuse need to know of it.

    `help`: its flag's help (`add_settings_arguments` appends the default). `choices`: the values a flag accepts.
    `nargs`: "*" for a list flag that may be given empty (`--methods` alone: none). A list default is copied
    per instance. `may_change="resume"`: the run's length or where its data lives (steps, epochs, data_root): a
    stopped run may be resumed with another value, but a finished run is not reused as a cell under another;
    `"how"`: where and how it runs and writes (device, workers, out, ...): free on resume and on reuse; unset: the
    run's identity, which must match both times (`changed_settings`). `was`: for a setting of the run's identity
    added after runs were made, the value a saved config without it ran with, so such a run is not taken for one
    made with the new default.
    """
    if may_change not in (None, "resume", "how"):
        raise ValueError(f"may_change={may_change!r}: 'resume' or 'how'")
    metadata = {"help": help, "may_change": may_change, "choices": choices, "nargs": nargs}
    if was is not dataclasses.MISSING:
        metadata["was"] = was
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (a list default made by its factory); MISSING when it has none."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _flag_type(tp: Any) -> tuple[Any, str | None]:
    """The argparse `type` and `nargs` of an annotation: X | None -> X, list[X] -> (X, "+"), unions of two value
    types -> str (`coerce_settings` then reads it, e.g. w_ffl: 0.5 or "auto")."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return _flag_type(args[0]) if len(args) == 1 else (str, None)
    if typing.get_origin(tp) is list:
        return args[0], "+"
    if typing.get_origin(tp) is dict:  # KEY=VALUE items, read by `key_values`
        return str, "*"
    return tp, None


def add_settings_arguments(parser: Any, cls: type, *, positional: tuple[str, ...] = (), config: bool = False,
                           skip: tuple[str, ...] = (), sections: dict[str, str] | None = None) -> None:
    """A flag for every field of the settings dataclass `cls` (`--batch-size` for batch_size), typed from its
    annotation, its help from `setting(help=...)` ending with the default read from the field, so the two cannot
    drift. Every flag defaults to None, "not given", so `settings_from_args` passes only what was given and the
    settings (or a --config file, which overrides the defaults shown) keep their own values. Fields without a
    default are required, unless `config=True` says a --config file may give them; `positional` ones are positional
    arguments; `skip` ones the caller adds itself. `sections` (first field -> title) groups the flags under headings
    in --help, in field order."""
    hints = typing.get_type_hints(cls)
    group = parser
    for f in dataclasses.fields(cls):
        if f.name in (sections or {}):
            group = parser.add_argument_group(sections[f.name])
        if f.name in skip:
            continue
        tp, nargs = _flag_type(hints[f.name])
        kw: dict[str, Any] = {"help": f.metadata.get("help", "")}
        default = field_default(f)
        if default not in (dataclasses.MISSING, None, [], {}):
            shown = (" ".join(map(str, default)) if isinstance(default, list) else
                     " ".join(f"{k}={v}" for k, v in default.items()) if isinstance(default, dict) else default)
            kw["help"] = f"{kw['help']} (default: {shown})".strip()
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw |= {"type": tp, "nargs": f.metadata.get("nargs") or nargs, "choices": f.metadata.get("choices")}
            if typing.get_origin(hints[f.name]) is dict:
                kw["metavar"] = "KEY=VALUE"
        if f.name in positional:
            group.add_argument(f.name, **kw)
        else:
            required = default is dataclasses.MISSING and not config
            group.add_argument(f"--{f.name.replace('_', '-')}", default=None, required=required, **kw)


def settings_from_args(cls: type, args: Any) -> dict[str, Any]:
    """Every field of the settings dataclass `cls` that the parsed `args` give a value for, read as its declared
    type (a flag left at None is not given, so the field keeps its default; a dict field's KEY=VALUE items become
    its dict)."""
    hints = typing.get_type_hints(cls)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    given = {name: key_values(value, f"--{name.replace('_', '-')}") if typing.get_origin(hints[name]) is dict
             else value for name, value in given.items()}
    return coerce_settings(cls, given, "options")


def changed_settings(settings: Any, saved: dict[str, Any], purpose: str) -> list[str]:
    """The fields of the settings dataclass `settings` in which a run's saved config differs, as "key old -> new".

    `purpose="resume"` (continue a stopped run) leaves out the fields `setting` marks "resume" or "how";
    `"reuse"` (count a finished run as a cell) leaves out only "how". A key the saved config predates compares as
    the value its `setting(was=...)` says such runs had, and counts as changed where none is declared (such a run
    is never taken for one made with the setting); data roots compare as
    resolved paths (a link to the same folder is the same data). A settings class may name the fields that have no
    effect on the run it describes (`inert_settings()`, e.g. the FFL's when its weight is 0): they are left out.
    """
    free = {"resume": ("resume", "how"), "reuse": ("how",)}[purpose]
    inert = settings.inert_settings() if hasattr(settings, "inert_settings") else set()
    now = dataclasses.asdict(settings)
    saved = {f.name: f.metadata["was"] for f in dataclasses.fields(settings) if "was" in f.metadata} | saved

    def same(key: str) -> bool:
        if key == "data_root":
            paths = [[Path(r).resolve() for r in ([v] if isinstance(v, str) else v)] for v in (saved[key], now[key])]
            return paths[0] == paths[1]
        return saved[key] == now[key]

    def change(name: str) -> str:
        if name not in saved:
            return f"{name} (not recorded: made by an earlier version) -> {now[name]!r}"
        old, new = saved[name], now[name]
        if isinstance(old, dict) and isinstance(new, dict):  # nested settings: name the keys that differ
            shown = [{k: repr(v) for k, v in d.items()} for d in (old, new)]
            return "; ".join(f"{name}.{k} {shown[0].get(k, '(unset)')} -> {shown[1].get(k, '(unset)')}"
                             for k in sorted({*old, *new}) if old.get(k, ...) != new.get(k, ...))
        return f"{name} {old!r} -> {new!r}"

    return [change(f.name) for f in sorted(dataclasses.fields(settings), key=lambda f: f.name)
            if f.metadata.get("may_change") not in free and f.name not in inert
            and (f.name not in saved or not same(f.name))]
