"""The packaged training recipes (``msclr/recipes/*.toml``) and the recipe file format: TOML <-> TrainConfig.

A recipe is a TOML file whose tables are the sections of :class:`msclr.pipeline.config.TrainConfig`
(``[data]``, ``[model]``, ``[pretrain]``, ``[linear]``, ``[finetune]``, ``[evaluation]``, ``[fusion]``); keys it
does not set keep the defaults; an unknown section or key, or a value of the wrong type, is an error naming it.
Packaged recipes are addressed by name (``ntu60_xsub``); a packaged name wins over a file or folder of the same
name unless the argument ends in ``.toml`` or contains a path separator, so ``--config demo`` is the recipe even
where a folder ``./demo`` exists.  ``RUN/config.toml`` of a run is a recipe too (:func:`to_toml`).

This module imports :mod:`msclr.pipeline.config` inside its functions only, so that the configuration module
can re-export these names.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import fields, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msclr.errors import closest

if TYPE_CHECKING:
    from msclr.pipeline.config import TrainConfig


def _config() -> Any:
    """:mod:`msclr.pipeline.config`, imported on use (it imports this module)."""
    from msclr.pipeline import config

    return config


def _coerce(cls: type, section: str, values: Mapping[str, Any], base: Any) -> Any:
    cfg = _config()
    known = {f.name: f for f in fields(cls)}
    updates: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise cfg.ConfigError(f"unknown key [{section}].{key}; valid keys: {', '.join(known)}.")
        default = getattr(base, key)
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list | tuple):
                raise cfg.ConfigError(f"[{section}].{key} must be a list, got {value!r}.")
            value = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise cfg.ConfigError(f"[{section}].{key} must be true or false, got {value!r}.")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise cfg.ConfigError(f"[{section}].{key} must be an integer, got {value!r}.")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise cfg.ConfigError(f"[{section}].{key} must be a number, got {value!r}.")
            value = float(value)
        elif isinstance(default, str) and not isinstance(value, str):
            raise cfg.ConfigError(f"[{section}].{key} must be a string, got {value!r}.")
        updates[key] = value
    return replace(base, **updates)


def config_from_dict(data: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Apply a nested mapping (a parsed recipe) on top of ``base`` (defaults if None); validates keys/types."""
    cfg = _config()
    config = base or cfg.TrainConfig()
    parts = {name: getattr(config, name) for name in cfg.SECTIONS}
    for section, values in data.items():
        if section not in cfg.SECTIONS:
            raise cfg.ConfigError(f"unknown recipe section [{section}]; valid sections: {', '.join(cfg.SECTIONS)}.")
        if not isinstance(values, Mapping):
            raise cfg.ConfigError(f"recipe section [{section}] must be a table of keys.")
        parts[section] = _coerce(cfg.SECTIONS[section], section, values, parts[section])
    return cfg.TrainConfig(**parts)


def recipe_names() -> list[str]:
    """Names of the packaged recipes (``msclr/recipes/*.toml``)."""
    root = resources.files("msclr") / "recipes"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def _recipe_text(name_or_path: str | Path) -> tuple[str, str]:
    """(TOML text, origin) of a recipe: a packaged name wins unless the argument ends in ``.toml`` or holds a
    path separator (so a folder ``./demo`` never shadows the recipe ``demo``); other names fall back to a
    file of that name.  :class:`~msclr.pipeline.config.OptionError` for a name that is neither."""
    cfg = _config()
    text = str(name_or_path)
    as_path = text.endswith(".toml") or "/" in text or os.sep in text
    resource = resources.files("msclr") / "recipes" / f"{text}.toml"
    if not as_path and resource.is_file():
        return resource.read_text(encoding="utf-8"), f"recipe {text}"
    path = Path(text)
    if path.is_file():
        return path.read_text(encoding="utf-8"), str(path)
    if as_path:
        raise cfg.OptionError(f"recipe file {path} not found; give an existing .toml file or one of: "
                          f"{', '.join(recipe_names())}.")
    raise cfg.OptionError(f"unknown recipe {text!r}{closest(text, recipe_names())}; packaged recipes: "
                      f"{', '.join(recipe_names())} (or give the path of a .toml file).")


def load_recipe(name_or_path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
    """A recipe by packaged name (``ntu60_xsub``) or file path, applied on top of ``base``, validated.

    Raises:
        OptionError: no such recipe (a usage error); ConfigError: the recipe's content is invalid.
    """
    text, origin = _recipe_text(name_or_path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise _config().ConfigError(f"{origin} is not valid TOML: {err}.") from None
    return config_from_dict(data, base).validate()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(config: TrainConfig) -> str:
    """The resolved configuration as a TOML recipe (round-trips through :func:`config_from_dict`)."""
    lines = ["# Resolved msclr training configuration (reusable as --config).", ""]
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def from_json_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Inverse of :meth:`TrainConfig.to_dict`."""
    return config_from_dict(data)


__all__ = ["config_from_dict", "from_json_dict", "load_recipe", "recipe_names", "to_toml"]
