"""Where attempts run: one protocol (ptctl.backends.base.Backend), a Slurm and a local
implementation. Nothing outside this package asks which one a profile uses."""

from __future__ import annotations

from ptctl.backends.base import Backend
from ptctl.config import Profile


def backend_for(profile: Profile) -> Backend:
    """The backend that runs `profile`'s attempts."""
    from ptctl.backends.local import LocalBackend
    from ptctl.backends.slurm import SlurmBackend

    kinds = {"local": LocalBackend, "slurm": SlurmBackend}
    return kinds[profile.executor](profile)
