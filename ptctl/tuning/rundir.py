"""The job folder: which file belongs to whom.

    root/spec.yaml          normalised spec (job registry)
    root/state.json         job state (job registry; never touched here)
    root/checkpoints/step_N/  resume records (ptctl.tuning.checkpoint), the last K kept
    root/progress.json      progress for the planner and `ptctl status` (rank 0, atomic)
    root/result/            the final prompt as a peft adapter: adapter_config.json,
                            adapter_model.safetensors, ptctl_meta.json
    root/logs/              per-rank logs (Slurm / launcher)

progress.json fields (all optional readers must tolerate new keys):
    status        "running" | "finished" | "stopped" (saved a checkpoint and exited)
    reason        why it finished or stopped: target_reached, max_steps, signal, stop_check,
                  stop_after; null while running
    step, samples, max_steps, global_batch_size, world_size
    loss          mean label-word loss of the last step
    metric        last evaluation {"accuracy": a, "loss": l} (or null before the first)
    target        the spec's target, e.g. "accuracy >= 0.7"
    steps_per_s   training steps per second at the current world size (evaluation excluded)
    samples_per_s steps_per_s x global batch
    time          ISO-8601 UTC of this write; updated: the same as a Unix time
    loss_curve    [[step, loss], ...] every step so far (whole run, across resumes)
    eval_curve    [[step, accuracy, eval_loss], ...]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptctl.errors import CorruptFileError
from ptctl.fsutil import atomic_write_json


@dataclass(frozen=True)
class RunDir:
    """The paths of one job folder; creating one touches nothing on disk."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def progress(self) -> Path:
        return self.root / "progress.json"

    @property
    def result(self) -> Path:
        return self.root / "result"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def write_progress(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.progress, record)

    def read_progress(self) -> dict[str, Any] | None:
        """The last progress record, or None before the first one."""
        try:
            data = json.loads(self.progress.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"{self.progress}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise CorruptFileError(f"{self.progress}: expected a JSON object")
        return data
