"""The job spec: a YAML file validated into dataclasses.

Every error names the field path, the bad value (quoted at most QUOTE_CHARS long) and what was
expected, so a typo never passes silently (unknown keys are errors too). Numbers have upper
bounds (the README's job spec reference lists them) so that a huge value fails here, before
anything is registered, rather than attempts later. Validation needs no torch and touches no
state folder.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ptctl.errors import BadInputError, excerpt
from ptctl.jobs.catalog import BUILTIN_MODELS, PACKAGED_TASKS, TASK_FILE_SUFFIXES
from ptctl.jobs.fieldtypes import check_type, key_text, path_is
from ptctl.safeload import load_yaml, pickle_weights


class SpecFieldError(ValueError):
    """Raised inside __post_init__; the loader adds the file and the parent path."""

    def __init__(self, field_name: str, value: Any, expected: str):
        self.field_name = field_name
        self.detail = f"got {excerpt(value)}, expected {expected}"
        super().__init__(f"{field_name}: {self.detail}")


def _require(cond: bool, name: str, value: Any, expected: str) -> None:
    if not cond:
        raise SpecFieldError(name, value, expected)


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DURATION_RE = re.compile(r"^(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?$")
MAX_SEED = 2**32 - 1
_SEEDS = f"0..{MAX_SEED}"
MAX_BATCH = 65536
MAX_STEPS = 10**7
MAX_DURATION = timedelta(days=365)
_MAX_TEXT = 64  # characters of a deadline or target: longer is never valid, so never parsed
_TARGET_RE = re.compile(r"^\s*(accuracy|loss)\s*(>=|<=)\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*$")


def parse_duration(text: str) -> timedelta | None:
    """'90m', '2h', '1h30m', '1d', '45s' -> timedelta; None when `text` is not a duration.
    ValueError past MAX_DURATION (timedelta itself overflows at 10^9 days)."""
    text = text.strip()
    m = _DURATION_RE.match(text) if len(text) <= _MAX_TEXT else None
    if not text or not m or not any(m.groups()):
        return None
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    seconds = ((d * 24 + h) * 60 + mi) * 60 + s
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"a duration must be at most {MAX_DURATION.days}d")
    return timedelta(seconds=seconds)


def parse_deadline(text: str) -> datetime | timedelta:
    """An absolute ISO-8601 time (naive = local time) or a duration from submission."""
    duration = parse_duration(text)
    if duration is not None:
        if duration.total_seconds() <= 0:
            raise ValueError("a duration must be positive")
        return duration
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("not an ISO-8601 time nor a duration") from None
    if when.tzinfo is None:
        when = when.astimezone()
    return when


@dataclass
class Target:
    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> "Target":
        m = _TARGET_RE.match(text) if isinstance(text, str) and len(text) <= _MAX_TEXT else None
        if not m:
            raise SpecFieldError("target", text, "'accuracy >= X' or 'loss <= X'")
        metric, op, value = m.group(1), m.group(2), float(m.group(3))
        if metric == "accuracy":
            _require(op == ">=" and 0 < value <= 1, "target", text, "accuracy >= a value in (0, 1]")
        else:
            _require(op == "<=" and 0 < value < math.inf, "target", text,
                     "loss <= a positive value")
        return cls(metric, op, value)

    def reached(self, metrics: dict[str, float]) -> bool:
        got = metrics.get(self.metric)
        if got is None:
            return False
        return got >= self.value if self.op == ">=" else got <= self.value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


@dataclass
class TaskSpec:
    """Text classification data: a packaged task name or a JSONL/CSV file of text and label."""

    source: str
    text_field: str = "text"
    label_field: str = "label"
    label_words: dict[str, str] = field(default_factory=dict)
    label_map: dict[str, str] = field(default_factory=dict)
    template: str = "{text}\nAnswer:"
    max_length: int = 64
    eval_samples: int = 200
    max_train_samples: int | None = None
    split_seed: int = 0

    def __post_init__(self) -> None:
        _require(bool(self.source), "source", self.source, "a packaged task or a .jsonl/.csv file")
        if self.is_packaged:
            labels = set(self.label_map.values()) if self.label_map else set(self.packaged_labels)
            unknown = set(self.label_map) - set(self.packaged_labels)
            _require(not unknown, "label_map", sorted(unknown),
                     f"labels of {self.source}: {', '.join(self.packaged_labels)}")
            if self.label_words:
                _require(set(self.label_words) == labels, "label_words", sorted(self.label_words),
                         f"one word for each label: {', '.join(sorted(labels))}")
        else:
            _require(Path(self.source).suffix.lower() in TASK_FILE_SUFFIXES, "source", self.source,
                     f"a packaged task ({', '.join(PACKAGED_TASKS)}) or a .jsonl/.csv file")
            _require(path_is(Path(self.source), "is_file"), "source", self.source,
                     "an existing data file")
        owners: dict[str, str] = {}
        for label, word in self.label_words.items():
            _require(isinstance(word, str) and word.strip() != "", f"label_words.{label}", word,
                     "a non-empty word")
            other = owners.setdefault(word.strip(), label)
            _require(other == label, f"label_words.{label}", word,
                     f"a word no other label has (label {excerpt(other)} has it too)")
        _require("{text}" in self.template, "template", self.template, "a string containing {text}")
        _require(8 <= self.max_length <= 4096, "max_length", self.max_length, "8..4096 tokens")
        _require(1 <= self.eval_samples <= 10**6, "eval_samples", self.eval_samples,
                 "an integer >= 1, at most 10^6")
        _require(self.max_train_samples is None or 1 <= self.max_train_samples <= 10**9,
                 "max_train_samples", self.max_train_samples,
                 "an integer >= 1 (at most 10^9) or null")
        _require(0 <= self.split_seed <= MAX_SEED, "split_seed", self.split_seed, _SEEDS)

    @property
    def is_packaged(self) -> bool:
        return self.source in PACKAGED_TASKS

    @property
    def packaged_labels(self) -> tuple[str, ...]:
        return PACKAGED_TASKS[self.source][1]


@dataclass
class PromptSpec:
    """The soft prompt: its length and how it starts (a Prompt Bank entry, random, or text)."""

    virtual_tokens: int = 8
    init: str = "bank"
    init_text: str | None = None
    add_to_bank: bool = False

    def __post_init__(self) -> None:
        _require(1 <= self.virtual_tokens <= 512, "virtual_tokens", self.virtual_tokens, "1..512")
        _require(self.init in ("bank", "random", "text"), "init", self.init,
                 "one of bank, random, text")
        _require(self.init != "text" or bool(self.init_text and self.init_text.strip()),
                 "init_text", self.init_text,
                 "a non-empty text when init is 'text'")


OBJECTIVES = ("auto", "label_words", "vocabulary")


@dataclass
class TrainingSpec:
    """Optimisation. The global batch is fixed whatever the GPU count (gradient accumulation)."""

    global_batch_size: int = 8
    micro_batch_size: int = 4
    learning_rate: float = 0.3
    max_steps: int = 200
    eval_every: int = 20
    checkpoint_every: int = 20
    keep_checkpoints: int = 2
    warmup_steps: int = 0
    seed: int = 0
    # "label_words": the label word's cross-entropy among the task's label words only, the
    # rank classification that evaluation and the Prompt Bank score; "vocabulary": over the
    # whole vocabulary (the usual LM loss, which first spends steps moving mass onto the label
    # words). "auto": label_words when every label word is one token (same step cost; measured
    # better in benchmarks/bank_objective.py), else vocabulary (label_words would need a
    # forward pass per label).
    objective: str = "auto"

    def __post_init__(self) -> None:
        _require(1 <= self.global_batch_size <= MAX_BATCH, "global_batch_size",
                 self.global_batch_size, f">= 1, at most {MAX_BATCH}")
        _require(1 <= self.micro_batch_size <= self.global_batch_size, "micro_batch_size",
                 self.micro_batch_size, f"1..global_batch_size ({self.global_batch_size})")
        _require(0 < self.learning_rate <= 100, "learning_rate", self.learning_rate, "0 < lr <= 100")
        for name in ("max_steps", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            _require(1 <= value <= MAX_STEPS, name, value, ">= 1, at most 10^7")
        _require(1 <= self.keep_checkpoints <= 1000, "keep_checkpoints", self.keep_checkpoints,
                 ">= 1, at most 1000")
        _require(0 <= self.warmup_steps < self.max_steps, "warmup_steps", self.warmup_steps,
                 "0 <= warmup_steps < max_steps")
        _require(self.objective in OBJECTIVES, "objective", self.objective,
                 " or ".join(OBJECTIVES))
        _require(0 <= self.seed <= MAX_SEED, "seed", self.seed, _SEEDS)


@dataclass
class GpuBounds:
    min: int = 1
    max: int = 8

    def __post_init__(self) -> None:
        _require(self.min >= 1, "min", self.min, "an integer >= 1")
        _require(self.min <= self.max <= 4096, "max", self.max,
                 f"an integer >= min ({excerpt(self.min)}), at most 4096")


MAIL_TYPES = {"NONE", "BEGIN", "END", "FAIL", "REQUEUE", "ALL", "INVALID_DEPEND", "STAGE_OUT",
              "TIME_LIMIT", "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50", "ARRAY_TASKS"}
_SLURM_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_minutes(text: str) -> int | None:
    """sbatch --time's forms (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in whole minutes, rounded
    up; None when `text` is none of them."""
    m = _SLURM_TIME_RE.match(text.strip())
    if not m:
        return None
    days, parts = m.group(1), [int(p) for p in m.groups()[1:] if p is not None]
    if days is not None:  # D-H[:M[:S]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
        hours += int(days) * 24
    else:  # M[:S] or H:M:S
        hours, minutes, seconds = parts if len(parts) == 3 else [0] + (parts + [0])[:2]
    return hours * 60 + minutes + (1 if seconds else 0)


@dataclass
class SlurmOverrides:
    """Per-job overrides of the cluster profile (None = the profile's value)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit_min: int | None = None
    mem_gb: float | None = None
    cpus_per_gpu: int | None = None
    setup: list[str] | None = None
    sbatch_args: dict[str, str] | None = None
    mail_type: str | None = None
    mail_user: str | None = None

    def __post_init__(self) -> None:
        _require(self.mail_type is None or set(self.mail_type.upper().split(",")) <= MAIL_TYPES,
                 "mail_type", self.mail_type, "Slurm mail types, e.g. END,FAIL")
        _require(self.time_limit_min is None or 1 <= self.time_limit_min <= 525600,
                 "time_limit_min", self.time_limit_min,
                 "an integer >= 1 (minutes), at most 525600 (a year)")
        _require(self.mem_gb is None or 0 < self.mem_gb <= 10**5, "mem_gb", self.mem_gb,
                 "> 0 and <= 100000")
        _require(self.cpus_per_gpu is None or 1 <= self.cpus_per_gpu <= 1024, "cpus_per_gpu",
                 self.cpus_per_gpu, ">= 1, at most 1024")

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class JobSpec:
    name: str
    model: str
    task: TaskSpec
    target: Target
    deadline: str
    prompt: PromptSpec = field(default_factory=PromptSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    gpus: GpuBounds = field(default_factory=GpuBounds)
    slurm: SlurmOverrides = field(default_factory=SlurmOverrides)

    def __post_init__(self) -> None:
        _require(bool(_NAME_RE.match(str(self.name))), "name", self.name,
                 "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        pickled = pickle_weights(Path(self.model)) if path_is(Path(self.model), "is_dir") else []
        _require(not pickled, "model", self.model, f"a folder with safetensors weights, not "
                 f"pickles ({', '.join(pickled[:1])}: loading a pickle runs the code it holds)")
        _require(model_reference_ok(self.model), "model", self.model,
                 f"a built-in model ({', '.join(BUILTIN_MODELS)}), a local Hugging Face folder "
                 "with config.json, a .gguf file, or a Hugging Face id (org/name)")
        try:
            parse_deadline(self.deadline)
        except ValueError as exc:
            raise SpecFieldError("deadline", self.deadline,
                                 f"an ISO-8601 time or a duration like 90m, 2h, 1h30m ({exc})")

    def deadline_at(self, submitted: datetime) -> datetime:
        """The absolute deadline for a job submitted at `submitted`."""
        when = parse_deadline(self.deadline)
        return submitted + when if isinstance(when, timedelta) else when

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["target"] = str(self.target)
        return data


_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def model_reference_ok(model: str) -> bool:
    """A built-in name, a .gguf file, a folder with config.json, or a Hugging Face id
    (`org/name`) that the local cache holds or, when the hub is not switched off with
    HF_HUB_OFFLINE=1, that the job may download."""
    if not isinstance(model, str) or not model:
        return False
    if model in BUILTIN_MODELS:
        return True
    path = Path(model)
    if path.suffix.lower() == ".gguf":
        return path_is(path, "is_file")
    if path_is(path / "config.json", "is_file"):
        return True
    if path_is(path, "exists") or not _HUB_ID_RE.match(model):
        return False
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        return True
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model, "config.json"), str)


# --- loading ---------------------------------------------------------------------------------

_HINTS: dict[type, dict[str, Any]] = {}


def build_fields(cls: type, data: Any, path: str) -> Any:
    """`data` validated into the dataclass `cls`; errors name the field under `path`."""
    prefix = f"{path}." if path else ""
    if not isinstance(data, dict):
        raise BadInputError(f"{path or 'spec'}: got {excerpt(data)}, expected a mapping")
    hints = _HINTS.setdefault(cls, typing.get_type_hints(cls))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise BadInputError(f"{prefix}{key_text(key)}: unknown key (expected one of: "
                                f"{', '.join(fields)})")
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for name in required:
        if name not in data or data[name] is None:
            raise BadInputError(f"{prefix}{name}: missing (required)")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        annotation = hints[key]
        if annotation is Target:
            try:
                kwargs[key] = Target.parse(value)
            except SpecFieldError as exc:
                raise BadInputError(f"{prefix}{key}: {exc.detail}") from None
        elif dataclasses.is_dataclass(annotation):
            kwargs[key] = build_fields(annotation, value if value is not None else {},
                                       f"{prefix}{key}")
        else:
            kwargs[key] = check_type(value, annotation, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except SpecFieldError as exc:
        raise BadInputError(f"{prefix}{exc.field_name}: {exc.detail}") from None


def _resolve_paths(data: dict, base: Path) -> dict:
    """Relative model/data paths are relative to the spec file's folder."""
    model = data.get("model")
    if isinstance(model, str) and model not in BUILTIN_MODELS and not Path(model).is_absolute():
        candidate = base / model
        if path_is(candidate, "exists"):
            data["model"] = str(candidate.resolve())
    task = data.get("task")
    if isinstance(task, str):
        task = data["task"] = {"source": task}
    if isinstance(task, dict):
        source = task.get("source")
        if isinstance(source, str) and source not in PACKAGED_TASKS and not Path(source).is_absolute():
            task["source"] = str((base / source).resolve())
    return data


def spec_from_dict(data: Any, origin: str = "spec", base: Path | None = None) -> JobSpec:
    """Validate a mapping (e.g. parsed YAML) into a JobSpec; errors are prefixed by `origin`."""
    if not isinstance(data, dict):
        raise BadInputError(f"{origin}: expected a YAML mapping of job fields, got "
                            f"{type(data).__name__}")
    data = _resolve_paths(dict(data), base or Path.cwd())
    try:
        return build_fields(JobSpec, data, "")
    except BadInputError as exc:
        raise BadInputError(f"{origin}: {exc}") from None


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a job spec file (within safeload's limits for YAML)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such job spec file")
    data = load_yaml(path, str(path))
    return spec_from_dict(data, origin=str(path), base=path.parent)


def resolved_spec_dict(spec: JobSpec, submitted: datetime) -> dict[str, Any]:
    """The normalised spec stored in the registry: absolute deadline, absolute paths."""
    data = spec.to_dict()
    data["deadline"] = spec.deadline_at(submitted).astimezone(timezone.utc).isoformat()
    return data
