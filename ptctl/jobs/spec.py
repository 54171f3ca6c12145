"""The job spec: a YAML file validated into dataclasses.

Every error names the field path, the bad value and what was expected, so a typo never passes
silently (unknown keys are errors too). Validation needs no torch and touches no state folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from ptctl.errors import BadInputError
from ptctl.jobs.catalog import BUILTIN_MODELS, PACKAGED_TASKS, TASK_FILE_SUFFIXES


class SpecFieldError(ValueError):
    """Raised inside __post_init__; the loader adds the file and the parent path."""

    def __init__(self, field_name: str, value: Any, expected: str):
        self.field_name = field_name
        super().__init__(f"{field_name}: got {value!r}, expected {expected}")
        self.detail = f"got {value!r}, expected {expected}"


def _require(cond: bool, name: str, value: Any, expected: str) -> None:
    if not cond:
        raise SpecFieldError(name, value, expected)


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DURATION_RE = re.compile(r"^(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?$")
_TARGET_RE = re.compile(r"^\s*(accuracy|loss)\s*(>=|<=)\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*$")


def parse_duration(text: str) -> timedelta | None:
    """'90m', '2h', '1h30m', '1d', '45s' -> timedelta; None when `text` is not a duration."""
    text = text.strip()
    m = _DURATION_RE.match(text)
    if not text or not m or not any(m.groups()):
        return None
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return timedelta(days=d, hours=h, minutes=mi, seconds=s)


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
        m = _TARGET_RE.match(str(text))
        if not m:
            raise SpecFieldError("target", text, "'accuracy >= X' or 'loss <= X'")
        metric, op, value = m.group(1), m.group(2), float(m.group(3))
        if metric == "accuracy":
            _require(op == ">=" and 0 < value <= 1, "target", text, "accuracy >= a value in (0, 1]")
        else:
            _require(op == "<=" and value > 0, "target", text, "loss <= a positive value")
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
            _require(Path(self.source).is_file(), "source", self.source, "an existing data file")
        for label, word in self.label_words.items():
            _require(isinstance(word, str) and word.strip() != "", f"label_words.{label}", word,
                     "a non-empty word")
        _require("{text}" in self.template, "template", self.template, "a string containing {text}")
        _require(8 <= self.max_length <= 4096, "max_length", self.max_length, "8..4096 tokens")
        _require(self.eval_samples >= 1, "eval_samples", self.eval_samples, "an integer >= 1")
        _require(self.max_train_samples is None or self.max_train_samples >= 1,
                 "max_train_samples", self.max_train_samples, "an integer >= 1 or null")

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
        _require(self.global_batch_size >= 1, "global_batch_size", self.global_batch_size, ">= 1")
        _require(1 <= self.micro_batch_size <= self.global_batch_size, "micro_batch_size",
                 self.micro_batch_size, f"1..global_batch_size ({self.global_batch_size})")
        _require(0 < self.learning_rate <= 100, "learning_rate", self.learning_rate, "0 < lr <= 100")
        _require(self.max_steps >= 1, "max_steps", self.max_steps, ">= 1")
        _require(self.eval_every >= 1, "eval_every", self.eval_every, ">= 1")
        _require(self.checkpoint_every >= 1, "checkpoint_every", self.checkpoint_every, ">= 1")
        _require(self.keep_checkpoints >= 1, "keep_checkpoints", self.keep_checkpoints, ">= 1")
        _require(0 <= self.warmup_steps < self.max_steps, "warmup_steps", self.warmup_steps,
                 "0 <= warmup_steps < max_steps")
        _require(self.objective in OBJECTIVES, "objective", self.objective,
                 " or ".join(OBJECTIVES))


@dataclass
class GpuBounds:
    min: int = 1
    max: int = 8

    def __post_init__(self) -> None:
        _require(self.min >= 1, "min", self.min, "an integer >= 1")
        _require(self.max >= self.min, "max", self.max, f"an integer >= min ({self.min})")


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

    def __post_init__(self) -> None:
        _require(self.time_limit_min is None or self.time_limit_min >= 1, "time_limit_min",
                 self.time_limit_min, "an integer >= 1 (minutes)")
        _require(self.mem_gb is None or self.mem_gb > 0, "mem_gb", self.mem_gb, "> 0")
        _require(self.cpus_per_gpu is None or self.cpus_per_gpu >= 1, "cpus_per_gpu",
                 self.cpus_per_gpu, ">= 1")

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
        return path.is_file()
    if (path / "config.json").is_file():
        return True
    if path.exists() or not _HUB_ID_RE.match(model):
        return False
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        return True
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model, "config.json"), str)


# --- loading ---------------------------------------------------------------------------------

_SIMPLE = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _check_type(value: Any, annotation: Any, path: str) -> Any:
    """Check a YAML value against a field annotation; ints are accepted where floats are."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], path)
    if origin is list:
        if not isinstance(value, list):
            raise BadInputError(f"{path}: got {value!r}, expected a list")
        return [_check_type(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise BadInputError(f"{path}: got {value!r}, expected a mapping")
        return {str(k): _check_type(v, args[1], f"{path}.{k}") for k, v in value.items()}
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInputError(f"{path}: got {value!r}, expected a number")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInputError(f"{path}: got {value!r}, expected an integer")
        return value
    if annotation is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and path.endswith(
                "deadline"):
            raise BadInputError(f"{path}: got {value!r}, expected a duration with a unit, "
                                "like 90m, or an ISO-8601 time")
        if not isinstance(value, str):
            raise BadInputError(f"{path}: got {value!r}, expected a string")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise BadInputError(f"{path}: got {value!r}, expected true or false")
        return value
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _build(cls: type, data: Any, path: str) -> Any:
    prefix = f"{path}." if path else ""
    if not isinstance(data, dict):
        raise BadInputError(f"{path or 'spec'}: got {data!r}, expected a mapping")
    hints = _HINTS.setdefault(cls, typing.get_type_hints(cls))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise BadInputError(f"{prefix}{key}: unknown key (expected one of: "
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
            kwargs[key] = _build(annotation, value if value is not None else {}, f"{prefix}{key}")
        else:
            kwargs[key] = _check_type(value, annotation, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except SpecFieldError as exc:
        raise BadInputError(f"{prefix}{exc.field_name}: {exc.detail}") from None


def _resolve_paths(data: dict, base: Path) -> dict:
    """Relative model/data paths are relative to the spec file's folder."""
    model = data.get("model")
    if isinstance(model, str) and model not in BUILTIN_MODELS and not Path(model).is_absolute():
        candidate = base / model
        if candidate.exists():
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
        return _build(JobSpec, data, "")
    except BadInputError as exc:
        raise BadInputError(f"{origin}: {exc}") from None


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a job spec file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such job spec file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{path}: not valid YAML ({first})") from None
    return spec_from_dict(data, origin=str(path), base=path.parent)


def resolved_spec_dict(spec: JobSpec, submitted: datetime) -> dict[str, Any]:
    """The normalised spec stored in the registry: absolute deadline, absolute paths."""
    data = spec.to_dict()
    data["deadline"] = spec.deadline_at(submitted).astimezone(timezone.utc).isoformat()
    return data
