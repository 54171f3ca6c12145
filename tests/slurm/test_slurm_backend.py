"""The backend protocol on the local Slurm cluster: the same checks as tests/test_backends.py."""

from __future__ import annotations

from pathlib import Path

from helpers import check_backend_runs_and_cancels
from ptctl.backends import backend_for
from ptctl.config import load_config, load_profile


def test_slurm_backend_runs_and_cancels(tmp_path: Path):
    check_backend_runs_and_cancels(backend_for(load_profile(load_config(), "localslurm")),
                                   tmp_path)
