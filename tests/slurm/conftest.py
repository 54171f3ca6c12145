"""Tests against the real single-node cluster of slurm_templates/local (started by .ci/run).

Every test here is marked `slurm`. They are skipped when Slurm is missing or slurmctld does not
answer, unless PTCTL_REQUIRE_SLURM=1 (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import slurm_unavailable
from ptctl.errors import SlurmUnreachableError
from ptctl.backends import slurm as cluster


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session", autouse=True)
def local_cluster():
    if shutil.which("sinfo") is None:
        slurm_unavailable("Slurm client tools not on PATH: run slurm_templates/local/start.sh")
    try:
        cluster.ping()
    except SlurmUnreachableError as e:
        slurm_unavailable(f"local Slurm cluster not running ({e}): run slurm_templates/local/start.sh")
    info = cluster.partition_info("debug")
    if info.gpus_per_node < 2:
        slurm_unavailable(f"partition debug has {info.gpus_per_node} GPUs per node; need 2")
