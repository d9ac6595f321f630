"""Pretraining methods by name: each a preset of `PretrainConfig` values over an implementation (a
`base.MomentumMethod` subclass), registered where it is written, as timm registers its models.

    @register_method("densecl", w_ins=0.5, w_dense=0.5, w_pix=0.0, w_ffl=0.0, dense_warmup_steps=20)
    class DenseCLModel(MomentumMethod): ...

A new method is a new module whose import is added to `pretrain/__init__.py`; the trainer, `--plan`,
`mpinet diagnose`, the plots, the CLI choices and `mpinet study` find it here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..settings import SettingsError

__all__ = ["METHODS", "build_method", "implementations", "method_class", "register_method"]

METHODS: dict[str, dict[str, Any]] = {}  # name -> the PretrainConfig values it sets
_IMPLEMENTATIONS: dict[str, type] = {}


def register_method(name: str, **preset: Any) -> Callable[[type], type]:
    """Class decorator: `name` selects the class with `preset` applied over the config defaults. Stack it to
    register several presets (an ablation ladder) of one implementation."""

    def register(cls: type) -> type:
        if name in METHODS:
            raise ValueError(f"pretraining method {name!r} is registered twice")
        METHODS[name] = preset
        _IMPLEMENTATIONS[name] = cls
        return cls

    return register


def method_class(name: str) -> type:
    """The implementation (a `base.MomentumMethod` subclass) registered under `name`; an unknown name (a run
    made by a version that knows more methods) is a SettingsError naming the known ones."""
    if name not in _IMPLEMENTATIONS:
        raise SettingsError(f"pretraining method {name!r} is not known to this version of mpinet-hub (it knows "
                            f"{', '.join(METHODS)}); a run made with it needs the version that made it")
    return _IMPLEMENTATIONS[name]


def implementations() -> set[type]:
    """Every registered implementation class (a class under several presets once)."""
    return set(_IMPLEMENTATIONS.values())


def build_method(cfg: Any, in_chans: int) -> Any:
    """The model of `cfg.method` for images of `in_chans` bands."""
    return method_class(cfg.method)(cfg, in_chans)
