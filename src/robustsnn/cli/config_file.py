"""Config files for the CLI: flat YAML or TOML mappings whose keys are option names.

``robustsnn train --config run.yaml --epochs 3``: the file gives values, flags
given on the command line override them, built-in defaults fill the rest.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from ..errors import UsageError

__all__ = ["read_config", "merge_options", "check_option_type"]


def read_config(path: str | Path | None) -> dict:
    """Read a ``.yaml``/``.yml``/``.toml`` file into a flat dict (keys with '-' become '_')."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file {p} not found; give the path of a .yaml or .toml file")
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(p.read_text())
        else:
            data = yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"cannot parse {p}: {str(e).splitlines()[0]}; fix the file's syntax") from None
    if not isinstance(data, dict):
        raise UsageError(f"{p} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def merge_options(defaults: dict, from_file: dict, from_flags: dict) -> dict:
    """defaults <- config file <- flags that were given (not None). Unknown file keys are an error."""
    unknown = sorted(set(from_file) - set(defaults))
    if unknown:
        raise UsageError(f"unknown option(s) in config file: {', '.join(unknown)}; valid: {', '.join(sorted(defaults))}")
    from_file = {key: check_option_type(key, value, defaults[key]) for key, value in from_file.items()}
    merged = dict(defaults)
    merged.update(from_file)
    merged.update({k: v for k, v in from_flags.items() if v is not None})
    return merged


_KINDS = {int: ((int,), "an integer"), float: ((int, float), "a number"), bool: ((bool,), "true or false")}


def check_option_type(key: str, value, default):
    """``value`` from a config file, checked against the type of the option's ``default``.

    Options whose default is an int, a float or a bool are checked (a float option takes an
    int, and a string such as ``1e-3`` that YAML 1.1 leaves unparsed; YAML's ``true`` is no
    integer); the others are checked where they are used.

    Raises:
        UsageError: naming the option, the expected type and the value found.
    """
    if value is None or type(default) not in _KINDS:
        return value
    ok, name = _KINDS[type(default)]
    if type(default) is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, ok) or (isinstance(value, bool) and type(default) is not bool):
        raise UsageError(f"config file: {key} must be {name}, got {value!r}; fix the value in the file")
    return value
