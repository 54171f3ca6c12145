"""The job folder: every path of one job, owned by one class (as submitit's JobPaths).

    root/spec.yaml          normalised spec (job registry, or `ptctl run`)
    root/state.json         the state record (job registry)
    root/.lock              guards updates of the state record
    root/checkpoints/step_N/  resume records (ptctl.tuning.checkpoint), the last K kept
    root/progress.json      progress for the planner and `ptctl status` (rank 0; see progress)
    root/result/            the final prompt as a peft adapter: adapter_config.json,
                            adapter_model.safetensors, ptctl_meta.json
    root/logs/<attempt>/    per-rank logs of one attempt (submitit: <attempt>_<rank>_log.out/err)
    root/init_prompt.safetensors  the Prompt Bank prompt chosen at submit
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JobPaths:
    """The paths of one job folder; creating one touches nothing on disk."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def job_id(self) -> str:
        return self.root.name

    spec = property(lambda self: self.root / "spec.yaml")
    state = property(lambda self: self.root / "state.json")
    lock = property(lambda self: self.root / ".lock")
    checkpoints = property(lambda self: self.root / "checkpoints")
    progress = property(lambda self: self.root / "progress.json")
    result = property(lambda self: self.root / "result")
    logs = property(lambda self: self.root / "logs")
    init_prompt = property(lambda self: self.root / "init_prompt.safetensors")

    def attempt_logs(self, attempt_id: str) -> Path:
        """The log folder of one attempt ("%j" gives submitit the pattern for any attempt)."""
        return self.logs / attempt_id

    def log_files(self, attempt_id: str, rank: int, stream: str) -> list[Path]:
        """The `stream` ("out" or "err") log files of one rank of one attempt."""
        return sorted(self.attempt_logs(attempt_id).glob(f"*_{rank}_log.{stream}"))
