"""The progress record of a running job: written by rank 0 only, read by the scheduler,
`ptctl status` and the benchmarks. Readers tolerate keys they do not know.

    status        "running" | "finished" | "stopped" (saved a checkpoint and exited)
    reason        why it finished or stopped: target_reached, max_steps, signal, stop_check,
                  stop_after; null while running
    step, samples, max_steps, global_batch_size, world_size
    loss          mean label-word loss of the last step
    metrics       last evaluation {"accuracy": a, "loss": l} (or null before the first)
    target        the spec's target, e.g. "accuracy >= 0.7"
    steps_per_s   steps per wall-clock second of this session at the current world size, ALL
                  its time counted: training, evaluations and checkpoint saves (the clock starts
                  once the model is loaded and the first evaluation done). It is the rate a
                  deadline is met at: the planner and `ptctl status`'s ETA use it as is.
    samples_per_s steps_per_s x global batch
    eval_s, checkpoint_s  mean seconds of one evaluation / one checkpoint save in this session,
                  already inside steps_per_s: kept so that a planner can re-price a job that
                  evaluates or saves more or less often (ptctl.planner.speeds)
    time          ISO-8601 UTC of this write; updated: the same as a Unix time
    resumed_from_step, session_started, loop_started: where and when this session began
    loss_curve    [[step, loss], ...] every step so far (whole run, across resumes)
    eval_curve    [[step, accuracy, eval_loss], ...]
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ptctl.errors import CorruptFileError, excerpt
from ptctl.fsutil import atomic_write_json


@dataclass
class Progress:
    status: str = "running"
    reason: str | None = None
    step: int = 0
    samples: int = 0
    max_steps: int | None = None
    global_batch_size: int | None = None
    world_size: int | None = None
    loss: float | None = None
    metrics: dict[str, float] | None = None
    target: str | None = None
    steps_per_s: float | None = None
    samples_per_s: float | None = None
    eval_s: float | None = None
    checkpoint_s: float | None = None
    time: str | None = None
    updated: float | None = None
    resumed_from_step: int | None = None
    session_started: float | None = None
    loop_started: float | None = None
    loss_curve: list[list[float]] = field(default_factory=list)
    eval_curve: list[list[float]] = field(default_factory=list)


_NUMBER = (int, float)
_KINDS = {"int": _NUMBER, "float": _NUMBER, "str": (str,), "list": (list,), "dict": (dict,)}
# field -> (accepted types, may be null), from the annotations ("int | None", "list[...]")
_FIELDS = {f.name: (_KINDS[f.type.split("[")[0].split(" ")[0]], f.type.endswith("| None"))
           for f in dataclasses.fields(Progress)}


def write_progress(path: Path, progress: Progress) -> None:
    atomic_write_json(path, vars(progress))


def read_progress(path: Path) -> Progress | None:
    """The last progress record, or None before the first one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path}: expected a JSON object")
    for key, value in data.items():
        kinds, nullable = _FIELDS.get(key, ((object,), True))
        if not (value is None and nullable) and (
                not isinstance(value, kinds) or isinstance(value, bool)):
            raise CorruptFileError(f"{path}: field {key!r} is {excerpt(value)}, a wrong type")
    return Progress(**{k: v for k, v in data.items() if k in _FIELDS})

