"""A short timed run for a shape nothing here has measured yet (`ptctl calibrate SPEC`,
`ptctl submit --calibrate`): a few training steps, two evaluations and a checkpoint on one GPU
of the job's partition, launched through the same backend as real attempts, so that admission
plans the job at a measured rate instead of a guess.

The run lives in `<home>/calibration/<name>-<id>/` and is removed once its speed is in the
speed record (ptctl.planner.speeds); a failed one is kept for its logs.
"""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from ptctl.backends import backend_for
from ptctl.config import Config, Profile
from ptctl.errors import PtctlError
from ptctl.fsutil import atomic_write_text
from ptctl.jobs.paths import JobPaths
from ptctl.jobs.progress import read_progress
from ptctl.jobs.spec import JobSpec, spec_from_dict
from ptctl.planner import speeds
from ptctl.safeload import load_yaml

STEPS = 5
POLL_S = 2.0
Say = Callable[[str], None]


@dataclass
class Calibration:
    """What a calibration measured, as `--json` shows it (seconds, as the speed record)."""

    steps: int
    train_s: float       # per training step
    eval_s: float        # per evaluation of the spec's eval_samples
    overhead_s: float    # submit to the end, less the training loop: queue, start, model load
    device: str          # the profile and partition: where the record applies
    wall_s: float

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def calibration_spec(spec: JobSpec, steps: int) -> dict[str, Any]:
    """The job's shape (model, batches, lengths, prompt size) timed over `steps` steps, with an
    evaluation at both ends and one checkpoint, from a random prompt, never stopping early."""
    data = spec.to_dict()
    data["name"] = f"{spec.name}-calibration"
    data["deadline"] = "1d"
    data["target"] = "loss <= 1e-12"  # out of reach: the run takes all its steps
    data["prompt"] = dict(data["prompt"], init="random")
    data["training"] = dict(data["training"], max_steps=steps, eval_every=steps,
                            checkpoint_every=steps, warmup_steps=0)
    return data


class CalibrationTask:
    """What the calibration attempt runs (submitit pickles it: one folder path, no user data)."""

    def __init__(self, folder: str):
        self.folder = folder

    def __call__(self) -> None:
        import submitit

        from ptctl.scheduler.worker import keep_to_slurm_cpus, rank_device
        from ptctl.tuning.train import train

        env = submitit.JobEnvironment()
        keep_to_slurm_cpus()
        path = Path(self.folder) / "spec.yaml"
        spec = spec_from_dict(load_yaml(path, str(path)), origin=str(path))
        train(spec, Path(self.folder), device=rank_device(env.local_rank), display="log")


def calibrate(cfg: Config, profile: Profile, spec: JobSpec, *, steps: int = STEPS,
              info: Say | None = None) -> Calibration:
    """Time `steps` steps of `spec`'s shape on one GPU through `profile`'s backend, wait for
    the run, and add its speed to the speed record."""
    backend = backend_for(profile)
    backend.ping()
    folder = Path(cfg.home) / "calibration" / f"{spec.name}-{secrets.token_hex(3)}"
    folder.mkdir(parents=True)
    data = calibration_spec(spec, steps)
    atomic_write_text(folder / "spec.yaml", yaml.safe_dump(data, sort_keys=False))
    started = time.time()
    attempt = backend.submit(CalibrationTask(str(folder)), folder=folder / "logs" / "%j",
                             gpus=1, name=f"{spec.name}.cal",
                             comment=f"ptctl:{spec.name}:calibrate")
    if info:
        info(f"calibrating {spec.model}: {steps} steps, {backend.launched(attempt, 1)}")
    give_up = started + 60.0 * profile.time_limit_min + 300.0
    try:
        state = _wait(backend, attempt, give_up)
    except BaseException:  # interrupted or past the time limit: leave nothing running
        backend.cancel(attempt)
        raise
    progress = read_progress(JobPaths(folder).progress)
    if state != "COMPLETED" or progress is None or not progress.steps_per_s:
        raise PtctlError(f"calibration of {spec.name} ended {state} without a measured "
                         f"speed; its logs are in {folder / 'logs'}")
    device = speeds.device_key(profile)
    entry = speeds.record_session(cfg.home, data, device, progress, started)
    shutil.rmtree(folder, ignore_errors=True)
    return Calibration(steps=progress.step, train_s=entry["train_s"], eval_s=entry["eval_s"],
                       overhead_s=entry.get("overhead_s") or 0.0, device=device,
                       wall_s=time.time() - started)


def _wait(backend: Any, attempt: str, give_up: float) -> str:
    """The attempt's final state, polled every POLL_S seconds."""
    while time.time() < give_up:
        status = backend.poll([attempt]).get(attempt)
        if status is not None and status.finished:
            return status.state
        time.sleep(POLL_S)
    raise PtctlError(f"calibration attempt {attempt} still not ended after its time limit")


def measured(cfg: Config, profile: Profile, spec: JobSpec) -> bool:
    """Whether the speed record already holds this shape on this device."""
    found = speeds.estimate(cfg.home, spec.to_dict(), speeds.device_key(profile))
    return found is not None and found.exact
