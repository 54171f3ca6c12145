"""A round right after a round changes nothing and writes nothing, whatever the first one did:
start jobs, record a failed launch, requeue a stopped attempt, retry a failed one."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from pathlib import Path

import pytest

from helpers import RecordingBackend, tiny_spec, use_backend
from ptctl.backends.base import AttemptStatus
from ptctl.config import Profile
from ptctl.errors import PtctlError
from ptctl.jobs.registry import Registry, SlurmAttempt
from ptctl.jobs.spec import load_spec, resolved_spec_dict
from ptctl.scheduler.round import rebalance_once

PROFILE = Profile(name="test", executor="local", gpus_per_node=4, gpu_budget=4)


class Backend(RecordingBackend):
    """Attempts it submitted stay pending; the job named `refused` is never accepted."""

    def __init__(self) -> None:
        super().__init__()
        self.ids = itertools.count(100)
        self.submitted: dict[str, str] = {}

    def submit(self, task, *, folder, gpus, name, comment=""):
        if name.startswith("refused"):
            raise RuntimeError("sbatch: error: invalid partition specified: nope")
        attempt = str(next(self.ids))
        self.submitted[attempt] = name
        return attempt

    def poll(self, attempt_ids):
        return {a: AttemptStatus(a, "PENDING") for a in attempt_ids if a in self.submitted}


@pytest.fixture
def backend(monkeypatch) -> Backend:
    return use_backend(monkeypatch, Backend())


def _snapshot(home: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(home)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(home.rglob("*")) if p.is_file()}


def test_a_second_round_changes_and_writes_nothing(tmp_path: Path, backend: Backend):
    data = resolved_spec_dict(load_spec(tiny_spec(tmp_path)), datetime.now(timezone.utc))
    registry = Registry(tmp_path / "home")
    queued = registry.create("queued", data).job_id
    refused = registry.create("refused", data).job_id
    ended = SlurmAttempt("7", 1, "2026-01-01T00:00:00.000+00:00", state="STOPPED")
    stopped = registry.create("stopped", data, phase="running", gpus=1, attempts=[ended]).job_id
    died = SlurmAttempt("8", 1, "2026-01-01T00:00:00.000+00:00", state="RUNNING")
    crashed = registry.create("crashed", data, phase="running", gpus=1, attempts=[died]).job_id
    held = registry.create("held", data, held=True).job_id

    first = rebalance_once(registry, PROFILE, "prompttuner", resize_wait_s=0)
    acts = {(a["job"], a["action"]) for a in first.actions}
    assert {(queued, "start"), (refused, "launch-failed"), (stopped, "requeue"),
            (crashed, "retry")} <= acts, first.actions
    versions = {j: registry.load(j).version for j in (queued, refused, stopped, crashed, held)}
    before = _snapshot(registry.home)

    second = rebalance_once(registry, PROFILE, "prompttuner", resize_wait_s=0)
    # The refused launch is tried again (and refused again); nothing else is done.
    assert [(a["job"], a["action"]) for a in second.actions] in (
        [], [(refused, "launch-failed")]), second.actions
    assert {j: registry.load(j).version for j in versions} == versions
    assert _snapshot(registry.home) == before


def test_an_update_that_changes_nothing_writes_nothing(tmp_path: Path):
    registry = Registry(tmp_path)
    job_id = registry.create("job", {"name": "x"}).job_id
    path = registry.paths(job_id).state
    stamp = path.stat().st_mtime_ns
    state = registry.update(job_id, lambda st: st.errors.clear())
    assert state.version == 0 and path.stat().st_mtime_ns == stamp
    assert registry.update(job_id, lambda st: st.errors.append("x")).version == 1


def test_a_failing_change_is_not_swallowed(tmp_path: Path):
    registry = Registry(tmp_path)
    job_id = registry.create("job", {"name": "x"}).job_id
    with pytest.raises(PtctlError):
        registry.update(job_id, lambda st: (_ for _ in ()).throw(PtctlError("no")))
