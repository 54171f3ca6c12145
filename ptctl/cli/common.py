"""What every command shares: the global flags and the effective config."""

from __future__ import annotations

from typing import Any

from ptctl.config import Config, load_config

# Set by the root callback from global flags (`--home`, `--profile`); the last config layer.
GLOBAL_FLAGS: dict[str, Any] = {}


def config(**command_flags: Any) -> Config:
    """The effective config: files < PTCTL_* env < global flags < this command's flags."""
    flags = dict(GLOBAL_FLAGS)
    flags.update({k: v for k, v in command_flags.items() if v is not None})
    return load_config(flags)
