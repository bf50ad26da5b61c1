"""Config files for the CLI: flat YAML or TOML mappings whose keys are option names.

``robustsnn train --config run.yaml --epochs 3``: the file gives values, flags
given on the command line override them, built-in defaults fill the rest.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from ..errors import UsageError

__all__ = ["read_config", "merge_options"]


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
        raise UsageError(f"cannot parse {p}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{p} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def merge_options(defaults: dict, from_file: dict, from_flags: dict) -> dict:
    """defaults <- config file <- flags that were given (not None). Unknown file keys are an error."""
    unknown = sorted(set(from_file) - set(defaults))
    if unknown:
        raise UsageError(f"unknown option(s) in config file: {', '.join(unknown)}; valid: {', '.join(sorted(defaults))}")
    merged = dict(defaults)
    merged.update(from_file)
    merged.update({k: v for k, v in from_flags.items() if v is not None})
    return merged
