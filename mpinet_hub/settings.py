"""Typed settings for the config dataclasses: YAML and flags checked against each field's declared type.

PyYAML reads `lr: 3e-2` as a string and `batch_size: '16'` stays one; left alone, both fail deep inside a
run. `coerce_settings` converts what has one clear reading (a numeric string to a number, "true"/"false" to a
bool, one value to a one-item list) and refuses the rest, naming the key, the value and the type wanted;
an unknown key is refused with the closest valid name.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SettingsError", "added_field", "changed_settings", "coerce_settings", "read_yaml", "run_field"]


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
        exact = [a for a in args if a is not type(None) and typing.get_origin(a) is None and type(value) is a]
        if exact:  # float | str: "auto" stays a string, 0.5 stays a float
            return value
        for candidate in (a for a in args if a is not type(None)):
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


def settings_from_args(cls: type, args: Any) -> dict[str, Any]:
    """Every field of the settings dataclass `cls` that the parsed `args` give a value for (a flag left at None is
    not given, so the field keeps its default)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def default_help(cls: type, key: str, text: str = "") -> str:
    """Help text ending with the field's default, read from the settings dataclass `cls` so that the two cannot
    drift (the flags themselves default to None, so that a --config file can set them)."""
    return f"{text} (default: {_field(cls, key).default} unless --config sets it)".strip()


def _field(cls: type, key: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == key)


def name_yaml_only(cls: type, parser: Any) -> None:
    """Append to the help of `parser`'s --config the fields of `cls` that have no flag there, so that every
    setting is reachable and the help says how."""
    flagged = {a.dest for a in parser._actions}
    names = [f.name for f in dataclasses.fields(cls) if f.name not in flagged]
    config = next(a for a in parser._actions if a.dest == "config")
    if names:
        config.help += f". YAML-only settings (no flag): {', '.join(names)}"


def run_field(default: Any = dataclasses.MISSING, *, may_change: str, **kw: Any) -> Any:
    """A settings field that is not part of what a run computes, declared where the field is.

    `may_change="resume"`: the run's length or where its data lives (steps, epochs, data_root): a stopped run may
    be resumed with another value, but a finished run is not reused as a cell under another. `"how"`: where and
    how it runs and writes (device, workers, out, save_every, ...): free on resume and on reuse. Every other
    field is the run's identity and must match both times (`changed_settings`).
    """
    if may_change not in ("resume", "how"):
        raise ValueError(f"may_change={may_change!r}: 'resume' or 'how'")
    return dataclasses.field(default=default, metadata={"may_change": may_change}, **kw)


def added_field(default: Any, *, was: Any, **kw: Any) -> Any:
    """A setting of a run's identity added after runs were made: a saved config without it ran with `was`, and
    `changed_settings` compares it so (a run made before the key existed is not taken for one made with the new
    default)."""
    return dataclasses.field(default=default, metadata={"was": was}, **kw)


def changed_settings(settings: Any, saved: dict[str, Any], purpose: str) -> list[str]:
    """The fields of the settings dataclass `settings` in which a run's saved config differs, as "key old -> new".

    `purpose="resume"` (continue a stopped run) leaves out the fields `run_field` marks "resume" or "how";
    `"reuse"` (count a finished run as a cell) leaves out only "how". A key the saved config predates compares as
    the value its `added_field` says such runs had, and is left out where none is declared; data roots compare as
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

    return [f"{f.name} {saved[f.name]!r} -> {now[f.name]!r}" for f in sorted(dataclasses.fields(settings),
                                                                             key=lambda f: f.name)
            if f.metadata.get("may_change") not in free and f.name not in inert and f.name in saved
            and not same(f.name)]
