"""The embedded default: attempts run as processes on this machine (submitit's local executor).

An attempt's id is the pid of its submitit controller process; it is alive while that lives.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from ptctl.backends.base import AttemptStatus, Check, SubmititBackend
from ptctl.tuning.report import ranks


class LocalBackend(SubmititBackend):
    executor = "local"
    multi_node = False
    attempt_noun = "local process"

    def executor_parameters(self, gpus: int, name: str, comment: str = "") -> dict[str, Any]:
        params = super().executor_parameters(gpus, name, comment)
        if self.profile.setup:
            params["local_setup"] = list(self.profile.setup)
        return params

    def ping(self) -> None:
        """This machine is always there."""

    def poll(self, attempt_ids: list[str]) -> dict[str, AttemptStatus]:
        return {pid: _process_status(pid) for pid in attempt_ids}

    def usage(self, attempt_ids: list[str]) -> dict[str, tuple[float, float]]:
        """No accounting here: ptctl's own attempt records are the account."""
        return {}

    def signal(self, attempt_id: str, sig: signal.Signals) -> None:
        """Nothing to deliver: local attempts poll the registry for a pending resize."""

    def cancel(self, attempt_id: str) -> None:
        try:
            os.kill(int(attempt_id), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass

    def find_by_name(self, name: str) -> str | None:
        """Local launches are recorded in the same process that starts them: never lost."""
        return None

    def launched(self, attempt_id: str, gpus: int) -> str:
        """On a machine without GPUs the ranks are CPU processes: say so."""
        if _gpus_visible():
            return super().launched(attempt_id, gpus)
        return f"launched {ranks(gpus, 'cpu')} as local process {attempt_id}"

    def checks(self) -> list[Check]:
        return [Check("slurm", "skip", f"profile {self.profile.name} runs jobs locally")]


def _gpus_visible() -> bool:
    """Whether local ranks will find a GPU (their device is CUDA when torch sees one), told
    without importing torch: an NVIDIA device node, unless CUDA_VISIBLE_DEVICES hides all."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "all").strip() in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def _process_status(pid: str) -> AttemptStatus:
    """RUNNING while the controller process lives, COMPLETED once it has ended."""
    ended = AttemptStatus(job_id=pid, state="COMPLETED", partition="local")
    try:
        if os.waitpid(int(pid), os.WNOHANG)[0]:  # our own child (submit --wait): reap it
            return ended
    except (ChildProcessError, ValueError):
        pass
    try:
        status = Path(f"/proc/{int(pid)}/status").read_text()
    except (OSError, ValueError):
        return ended
    if "\nState:\tZ" in status:  # a zombie another process has not reaped yet
        return ended
    return AttemptStatus(job_id=pid, state="RUNNING", partition="local")
