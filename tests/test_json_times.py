"""Every time in every `--json` document is ISO-8601 with its UTC offset: the documents of the
job commands are walked, each time-valued field is parsed, and no number may look like epoch
seconds (the form rebalance's decisions and the jobs' estimates keep internally)."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from helpers import LOCAL, run_cli, tiny_spec
from ptctl.jobs.registry import Registry
from ptctl.jobs.spec import load_spec, resolved_spec_dict
from ptctl.planner.prompttuner import LAST_RESIZE

# Keys whose values are times of day.
TIME_KEY = re.compile(r"(_at|^deadline|^eta|^predicted_finish|^review_at|^start|^end)$")
EPOCH_RANGE = (1e9, 1e11)  # 2001 .. 5138, in seconds


def fields(doc: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every field at any depth."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield f"{path}.{key}", str(key), value
            yield from fields(value, f"{path}.{key}")
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield f"{path}[{i}]", "", value
            yield from fields(value, f"{path}[{i}]")


def check_times(command: list[str], timed: bool = True) -> Any:
    """Run `ptctl <command> --json`; every time in its document parses with an offset (and
    there is one, when `timed`)."""
    result = run_cli(*command, "--json", env=LOCAL, timeout=600)
    assert result.returncode in (0, 3), (command, result.stderr)
    doc = json.loads(result.stdout)
    seen = 0
    for path, key, value in fields(doc):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert not EPOCH_RANGE[0] < value < EPOCH_RANGE[1], \
                f"{command[0]}: {path} = {value} looks like epoch seconds"
        if TIME_KEY.search(key) and value is not None:
            parsed = datetime.fromisoformat(value)
            assert parsed.utcoffset() is not None, f"{command[0]}: {path} = {value!r}"
            seen += 1
    assert seen or not timed, f"{command[0]}: no time-valued field at all in {doc}"
    return doc


def test_every_json_time_is_iso8601_with_an_offset(tmp_path: Path):
    spec = tiny_spec(tmp_path)
    check_times(["submit", str(spec), "--dry-run"])
    done = check_times(["submit", str(spec), "--wait"])["job_id"]
    check_times(["status", done])
    check_times(["result", done])

    # A queued job with what rounds leave in a job's record (the plan's finish, the
    # policy's memory of its last resize), held so that nothing launches it.
    data = resolved_spec_dict(load_spec(tiny_spec(tmp_path, deadline="2h")),
                              datetime.now(timezone.utc))
    queued = Registry(tmp_path / "ptctl-home").create(
        "tiny", data, profile="local", estimates={"predicted_finish": time.time() + 600,
                                                  "submitted_at": time.time()},
        policy_memory={LAST_RESIZE: time.time()}).job_id
    check_times(["hold", queued])
    check_times(["status", "--all"])
    check_times(["release", queued])
    decisions = check_times(["rebalance", "--dry-run"])["decisions"]
    assert [d["job_id"] for d in decisions] == [queued]
    assert check_times(["resize", queued, "--gpus", "1", "--pin"], timed=False)["pinned_gpus"] == 1
    check_times(["hold", queued])
    check_times(["cancel", queued])
    resumed = check_times(["resume", queued])
    assert resumed["launched_gpus"] == 0  # held: it waits in the queue for `ptctl release`
    listing = check_times(["ls"])
    assert sorted(j["job_id"] for j in listing) == sorted([done, queued])
