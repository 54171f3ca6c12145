"""The job registry: one folder per job under the state folder (PTCTL_HOME).

    <home>/jobs/<job_id>/   one job folder (see ptctl.jobs.paths for what it holds)
    <home>/registry.lock    guards job creation

A job folder is built under a temp name and published by rename, so a reader never sees a job
without its spec and state. State updates are read-modify-write under the job's lock and land
by atomic rename, so concurrent `ptctl submit`s and a cron `ptctl rebalance` never lose,
duplicate or half-write a record. The deadline lives in the spec only.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import shutil
import typing
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from ptctl.errors import BadInputError, CorruptFileError, NotFoundError, PtctlError, excerpt
from ptctl.fsutil import atomic_write_json, atomic_write_text, file_lock, fsync_dir, utcnow
from ptctl.jobs.fieldtypes import check_type
from ptctl.jobs.lifecycle import TERMINAL, Phase
from ptctl.jobs.paths import JobPaths
from ptctl.jobs.progress import Progress, read_progress
from ptctl.jobs.spec import JobSpec, SpecFieldError, TaskSpec, Target, build_fields
from ptctl.safeload import MAX_SPEC_BYTES, read_text

# libyaml's C loader where PyYAML has it: a rebalance round parses every live job's spec.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

_JOB_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}-[a-z0-9]{4}$")
_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o/1/l: ids are read aloud and retyped


@dataclass
class SlurmAttempt:
    """One launch of a job: a Slurm (or local) job id with the GPU count it was given."""

    slurm_job_id: str
    gpus: int
    submitted_at: str
    started_at: str | None = None
    ended_at: str | None = None
    state: str = "PENDING"
    reason: str | None = None
    # It failed on bad input (data, spec, initial prompt): a retry would fail the same way.
    fatal: bool = False


@dataclass
class JobState:
    job_id: str
    name: str
    phase: Phase = Phase.QUEUED
    created_at: str = field(default_factory=utcnow)
    updated_at: str = field(default_factory=utcnow)
    profile: str | None = None
    gpus: int = 0
    attempts: list[SlurmAttempt] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)
    estimates: dict[str, Any] = field(default_factory=dict)
    policy_memory: dict[str, Any] = field(default_factory=dict)
    pending_resize: dict[str, Any] | None = None
    init_prompt_id: str | None = None
    best_effort: bool = False
    # Set by the user, obeyed by rounds: a pinned job keeps this GPU count; a held job is
    # neither started nor resized (a running one keeps running).
    pinned_gpus: int | None = None
    held: bool = False
    spec_digest: str | None = None  # the submitted spec's content, to spot a duplicate submit
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    ended_at: str | None = None  # when it reached an ended phase: its deadline is judged here
    version: int = 0

    def __post_init__(self) -> None:
        if self.phase not in Phase.__members__.values():
            raise ValueError(f"phase: got {self.phase!r}, expected one of "
                             f"{', '.join(Phase)}")
        self.attempts = [a if isinstance(a, SlurmAttempt) else SlurmAttempt(**a)
                         for a in self.attempts]

    @property
    def current_attempt(self) -> SlurmAttempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def is_terminal(self) -> bool:
        return self.phase in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobState":
        # Records written before the deadline lived only in the spec carry a copy of it.
        given = {k: v for k, v in _typed(cls, data, "state").items() if k != "deadline"}
        if "phase" in given and given["phase"] in Phase.__members__.values():
            given["phase"] = Phase(given["phase"])
        given["attempts"] = [_typed(SlurmAttempt, a, f"attempts[{i}]")
                             for i, a in enumerate(given.get("attempts", []))]
        return cls(**given)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return {f.name: typing.get_type_hints(cls)[f.name] for f in fields(cls)}


def _typed(cls: type, data: Any, where: str) -> dict[str, Any]:
    """`data` checked against the fields of `cls`: a record with a wrong type is refused when
    read, not met as a traceback deep in a round. Unknown keys are left to the constructor."""
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a JSON object")
    for name, hint in _hints(cls).items():
        if name in data:
            try:
                check_type(data[name], hint, f"{where}.{name}")
            except BadInputError as exc:
                raise TypeError(str(exc)) from None
    return dict(data)


# What commands and rounds index in a stored spec with no default to fall back on.
_STORED_REQUIRED = (("model",), ("deadline",), ("target",), ("task", "max_length"),
                    ("prompt", "init"), ("prompt", "virtual_tokens"), ("training", "max_steps"),
                    ("training", "global_batch_size"), ("training", "micro_batch_size"),
                    ("training", "eval_every"), ("training", "checkpoint_every"),
                    ("gpus", "min"), ("gpus", "max"))
# Sections whose own checks read no file: rebuilt whole (ranges and unknown keys included).
_STORED_SECTIONS = ("prompt", "training", "gpus", "slurm")


def check_stored_spec(spec: Any) -> None:
    """A registered job's spec as submit stored it: the fields commands index are there, every
    field has its type, the sections their ranges, the deadline is a time and the target a
    target. Files it names are not looked at: a data file moved since submit fails the job's
    attempt, it does not make the record unreadable. BadInputError names the field."""
    if not isinstance(spec, dict):
        raise BadInputError(f"got {excerpt(spec)}, expected a mapping of job fields")
    for keys in _STORED_REQUIRED:
        node: Any = spec
        for depth, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(keys[:depth]) or "spec"
                raise BadInputError(f"{'.'.join(keys)}: missing" if isinstance(node, dict) else
                                    f"{where}: got {excerpt(node)}, expected a mapping")
            node = node[key]
    hints = _hints(JobSpec)
    for name in _STORED_SECTIONS:
        build_fields(hints[name], spec.get(name) or {}, name)
    for name, hint in _hints(TaskSpec).items():
        if name in spec["task"]:
            check_type(spec["task"][name], hint, f"task.{name}")
    for name in ("name", "model", "deadline"):
        if name in spec:
            check_type(spec[name], str, name)
    try:
        Target.parse(spec["target"])
    except SpecFieldError as exc:
        raise BadInputError(str(exc)) from None
    if len(spec["target"].split()) != 3:  # as str(Target) writes it: rounds split it so
        raise BadInputError(f"target: got {excerpt(spec['target'])}, expected 'metric op value'")
    try:
        if len(spec["deadline"]) > 64:
            raise ValueError("longer than an ISO-8601 time")
        datetime.fromisoformat(spec["deadline"])
    except ValueError as exc:
        raise BadInputError(f"deadline: got {excerpt(spec['deadline'])}, expected an ISO-8601 "
                            f"time ({exc})") from None


@dataclass
class Scan:
    states: list[JobState] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # one line each, naming the file
    # Jobs among them: a folder with a state.json that does not read (not a stray entry).
    unreadable_jobs: list[str] = field(default_factory=list)


class Registry:
    def __init__(self, home: str | os.PathLike):
        self.home = Path(home)
        self.jobs_dir = self.home / "jobs"

    def paths(self, job_id: str) -> JobPaths:
        return JobPaths(self.jobs_dir / job_id)

    def create(self, name: str, spec: dict[str, Any], files: dict[str, bytes] | None = None,
               **state_fields: Any) -> JobState:
        """Register a job: a fresh short id, its spec, first state and any `files` (e.g. the
        initial prompt), published together by one rename."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:32] or "job"
        with file_lock(self.home / "registry.lock"):
            while True:
                job_id = f"{slug}-{''.join(secrets.choice(_ALPHABET) for _ in range(4))}"
                if not (self.jobs_dir / job_id).exists():
                    break
            tmp = self.jobs_dir / f".tmp-{job_id}-{os.getpid()}"
            tmp.mkdir()
            try:
                paths = JobPaths(tmp)
                for sub in (paths.checkpoints, paths.logs):
                    sub.mkdir()
                atomic_write_text(paths.spec,
                                  yaml.dump(spec, Dumper=_YAML_DUMPER, sort_keys=False))
                for rel, data in (files or {}).items():
                    (tmp / rel).write_bytes(data)
                state = JobState(job_id=job_id, name=name, **state_fields)
                atomic_write_json(paths.state, state.to_dict())
                os.rename(tmp, self.jobs_dir / job_id)
                fsync_dir(self.jobs_dir)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return state

    def ids(self) -> list[str]:
        if not self.jobs_dir.is_dir():
            return []
        return sorted(p.name for p in self.jobs_dir.iterdir()
                      if p.is_dir() and not p.name.startswith("."))

    def scan(self) -> "Scan":
        """Every job whose state reads, and one line per entry of jobs/ that does not: one bad
        record must not stop `ls`, `status` or a round for every other job."""
        found = Scan()
        for name in self.ids() + self._stray_files():
            try:
                found.states.append(self._load_entry(name))
            except PtctlError as exc:
                found.unreadable.append(str(exc))
                if self.exists(name):
                    found.unreadable_jobs.append(name)
        return found

    def _stray_files(self) -> list[str]:
        if not self.jobs_dir.is_dir():
            return []
        return sorted(p.name for p in self.jobs_dir.iterdir()
                      if not p.is_dir() and not p.name.startswith("."))

    def _load_entry(self, name: str) -> JobState:
        folder = self.jobs_dir / name
        if not folder.is_dir():
            raise CorruptFileError(f"{folder}: not a job folder (a file)")
        if _JOB_ID_RE.match(name) is None:
            raise CorruptFileError(f"{folder}: not a job folder (the name is not a job id)")
        if not self.paths(name).state.is_file():
            raise CorruptFileError(f"{folder}: not a job folder (no state.json)")
        return self.load(name)

    def exists(self, job_id: str) -> bool:
        return _JOB_ID_RE.match(job_id) is not None and self.paths(job_id).state.is_file()

    def _require(self, job_id: str) -> JobPaths:
        if not self.exists(job_id):
            raise NotFoundError(f"job {job_id!r}: no such job in {self.jobs_dir}")
        return self.paths(job_id)

    def load(self, job_id: str) -> JobState:
        path = self._require(job_id).state
        try:
            return JobState.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:  # bad JSON, non-UTF-8, wrong types
            raise CorruptFileError(f"{path}: corrupt job state ({exc})") from None
        except OSError as exc:
            raise CorruptFileError(f"{path}: cannot read ({exc.strerror})") from None

    def load_spec(self, job_id: str) -> dict[str, Any]:
        """The job's stored spec, checked (`check_stored_spec`): every command and round reads
        it through here, so a damaged one is one error naming the file, never a traceback."""
        path = self._require(job_id).spec
        text = read_text(path, str(path), MAX_SPEC_BYTES, CorruptFileError)
        try:
            spec = yaml.load(text, Loader=_YAML_LOADER)
            check_stored_spec(spec)
        except (yaml.YAMLError, BadInputError) as exc:
            raise CorruptFileError(f"{path}: corrupt job spec ({exc})") from None
        return spec

    def write_spec(self, job_id: str, spec: dict[str, Any]) -> None:
        """Replace the job's stored spec (`ptctl resume --deadline`), atomically, under the
        job's lock."""
        paths = self._require(job_id)
        with file_lock(paths.lock):
            atomic_write_text(paths.spec, yaml.dump(spec, Dumper=_YAML_DUMPER, sort_keys=False))

    def all(self) -> Iterator[JobState]:
        """Every readable job (`scan` says which records were skipped)."""
        yield from self.scan().states

    def update(self, job_id: str, change: Callable[[JobState], None]) -> JobState:
        """Apply `change` to the job's state under its lock; lands atomically or not at all.
        A change that leaves the state as it was writes nothing: a round run again right after
        another must not bump versions or touch files."""
        paths = self._require(job_id)
        with file_lock(paths.lock):
            state = self.load(job_id)
            before = state.to_dict()
            change(state)
            if state.to_dict() == before:
                return state
            state.version += 1
            state.updated_at = utcnow()
            if state.is_terminal and state.ended_at is None:
                state.ended_at = state.updated_at
            JobState.from_dict(state.to_dict())  # validate before it lands
            atomic_write_json(paths.state, state.to_dict())
        return state

    def submitted_since(self, spec_digest: str, seconds: float) -> JobState | None:
        """The newest job registered within `seconds` from a spec of this content, if any."""
        since = datetime.now(timezone.utc) - timedelta(seconds=seconds)
        same = [s for s in self.all() if s.spec_digest == spec_digest
                and datetime.fromisoformat(s.created_at) >= since]
        return max(same, key=lambda s: s.created_at, default=None)

    def read_progress(self, job_id: str) -> Progress | None:
        """The job's last progress record; None before the first one."""
        return read_progress(self._require(job_id).progress)
