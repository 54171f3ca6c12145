"""The job registry under concurrency: nothing lost, duplicated or half-written."""

from __future__ import annotations

import json
import multiprocessing as mp
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from helpers import GOOD
from ptctl.errors import CorruptFileError, NotFoundError
from ptctl.jobs.registry import JobState, Registry
from ptctl.jobs.spec import resolved_spec_dict, spec_from_dict

# A stored spec as submit writes it; `index` (a key no reader looks at) tells the jobs apart.
SPEC = resolved_spec_dict(spec_from_dict(GOOD), datetime(2029, 1, 1, tzinfo=timezone.utc))
N_REGISTRANTS = 30
UPDATES_PER_REGISTRANT = 5


def _register(home: str, index: int, start: float, queue) -> None:
    while time.time() < start:  # all 30 begin together
        time.sleep(0.001)
    reg = Registry(home)
    state = reg.create("Job Name", SPEC | {"index": index})
    for _ in range(UPDATES_PER_REGISTRANT):
        reg.update(state.job_id, lambda s: s.progress.__setitem__(
            "own", s.progress.get("own", 0) + 1))
    queue.put((index, state.job_id))


def _keep_updating(home: str, stop, counts) -> None:
    reg = Registry(home)
    local: dict[str, int] = {}
    while not stop.is_set():
        for job_id in reg.ids():
            reg.update(job_id, lambda s: s.progress.__setitem__(
                "updater", s.progress.get("updater", 0) + 1))
            local[job_id] = local.get(job_id, 0) + 1
    counts.update(local)


def test_concurrent_register_and_update(tmp_path: Path):
    home = str(tmp_path / "state")
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    stop = ctx.Event()
    manager = ctx.Manager()
    counts = manager.dict()
    updater = ctx.Process(target=_keep_updating, args=(home, stop, counts))
    updater.start()
    start = time.time() + 0.5
    procs = [ctx.Process(target=_register, args=(home, i, start, queue))
             for i in range(N_REGISTRANTS)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    time.sleep(0.3)  # let the updater go over every job at least once more
    stop.set()
    updater.join(timeout=60)
    assert updater.exitcode == 0

    reg = Registry(home)
    ids = [job_id for _, job_id in results]
    assert len(set(ids)) == N_REGISTRANTS, "duplicate job ids"
    assert sorted(ids) == reg.ids(), "lost or extra jobs"
    assert not [p for p in (Path(home) / "jobs").iterdir() if p.name.startswith(".")], \
        "temp folders left behind"
    for index, job_id in results:
        state = reg.load(job_id)
        spec = reg.load_spec(job_id)
        assert spec["index"] == index
        assert state.progress["own"] == UPDATES_PER_REGISTRANT, "lost an update"
        assert state.progress.get("updater", 0) == counts.get(job_id, 0), "lost an update"
        assert state.version == UPDATES_PER_REGISTRANT + counts.get(job_id, 0)


def test_job_ids_are_short_and_readable(tmp_path: Path):
    reg = Registry(tmp_path)
    state = reg.create("My Sentiment Job!", {"name": "x"})
    assert state.job_id.startswith("my-sentiment-job-")
    assert len(state.job_id) == len("my-sentiment-job-") + 4
    assert reg.paths(state.job_id).checkpoints.is_dir()


def test_unknown_and_traversal_ids_are_not_found(tmp_path: Path):
    reg = Registry(tmp_path)
    for bad in ("nope-abcd", "../etc", "x/../../y"):
        with pytest.raises(NotFoundError):
            reg.load(bad)


def test_failed_update_leaves_state_unchanged(tmp_path: Path):
    reg = Registry(tmp_path)
    state = reg.create("job", {"name": "x"})
    before = reg.paths(state.job_id).state.read_bytes()

    def bad_change(s: JobState) -> None:
        s.phase = "exploded"

    with pytest.raises(ValueError, match="phase"):
        reg.update(state.job_id, bad_change)
    assert reg.paths(state.job_id).state.read_bytes() == before


def test_corrupt_state_names_the_file(tmp_path: Path):
    reg = Registry(tmp_path)
    state = reg.create("job", {"name": "x"})
    path = reg.paths(state.job_id).state
    path.write_text(json.dumps({"job_id": state.job_id})[:-3])
    with pytest.raises(CorruptFileError, match=str(path)):
        reg.load(state.job_id)


@pytest.mark.parametrize("section, value, expected", [
    ("gpus", {"min": "x", "max": 4}, "gpus.min: got 'x', expected an integer"),
    ("training", 3, "training: got 3, expected a mapping"),
    ("deadline", [1], "deadline: got [1], expected a string"),
    ("target", "accuracy>=0.5", "target: got 'accuracy>=0.5', expected 'metric op value'"),
    ("slurm", {"nodes": 2}, "slurm.nodes: unknown key"),
])
def test_a_stored_spec_of_wrong_shape_names_the_file(tmp_path: Path, section, value, expected):
    reg = Registry(tmp_path)
    job_id = reg.create("job", SPEC | {section: value}).job_id
    with pytest.raises(CorruptFileError, match=re.escape(
            f"{reg.paths(job_id).spec}: corrupt job spec ({expected}")):
        reg.load_spec(job_id)
