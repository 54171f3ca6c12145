"""The backend protocol on the embedded default (submitit's local executor); the Slurm case of
the same checks is in tests/slurm/test_slurm_backend.py."""

from __future__ import annotations

from pathlib import Path

from helpers import check_backend_runs_and_cancels
from ptctl.backends import backend_for
from ptctl.config import load_config, load_profile


def test_local_backend_runs_and_cancels(tmp_path: Path):
    check_backend_runs_and_cancels(backend_for(load_profile(load_config(), "local")), tmp_path)
