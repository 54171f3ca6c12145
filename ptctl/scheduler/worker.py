"""What each task of a launched job runs: one rank of the tuning engine.

submitit pickles a `TuningTask` (two strings: no user data) and calls it in every task of the
Slurm job (one task per GPU). Rank 0 keeps the registry record of the attempt up to date. When
the training loop stops on SIGUSR2 (time limit, preemption, or a resize asked by `ptctl
rebalance`), rank 0 either leaves the job stopped (a resize is pending: rebalance resubmits it
at the new size) or requeues it at the same size with `scontrol requeue`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import zlib

from ptctl.errors import BadInputError, CorruptFileError, PtctlError, bounded
from ptctl.jobs.lifecycle import Phase, move
from ptctl.fsutil import utcnow
from ptctl.jobs.registry import JobState, Registry
from ptctl.jobs.spec import spec_from_dict
from ptctl.scheduler.views import ENDED_ATTEMPT_STATES

# How often (seconds) rank 0 re-reads the registry to see whether a resize is pending.
STOP_CHECK_EVERY_S = 2.0


def _rendezvous(job_env) -> str:
    """A tcp:// address every rank derives alike: the first node, a port from the job id."""
    host = job_env.hostnames[0] if job_env.num_nodes > 1 else "127.0.0.1"
    port = 20000 + zlib.crc32(str(job_env.job_id).encode()) % 20000
    return f"tcp://{host}:{port}"


def rank_device(local_rank: int) -> str:
    import torch

    return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"


def keep_to_slurm_cpus() -> None:
    """One rank per GPU: each keeps to the CPUs Slurm gave its task."""
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        import torch

        torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))


class TuningTask:
    """The callable submitit runs; holds only the state folder and the job id."""

    def __init__(self, home: str, job_id: str):
        self.home = home
        self.job_id = job_id

    def __call__(self) -> dict:
        import submitit

        from ptctl.tuning.train import train

        env = submitit.JobEnvironment()
        keep_to_slurm_cpus()
        registry = Registry(self.home)
        slurm_id = str(env.job_id)
        rank, world = env.global_rank, env.num_tasks
        if rank == 0:
            registry.update(self.job_id, lambda st: _mark_running(st, slurm_id))
            _drop_literal_log_template(registry.paths(self.job_id).attempt_logs("%j"))
        last_check = [0.0]
        loop = {"ran": False}

        def resize_pending() -> bool:
            loop["ran"] = True
            if time.monotonic() - last_check[0] < STOP_CHECK_EVERY_S:
                return False
            last_check[0] = time.monotonic()
            return registry.load(self.job_id).pending_resize is not None

        _answer_usr2_once(loop)
        try:
            spec = spec_from_dict(registry.load_spec(self.job_id),
                                  origin=f"job {self.job_id} spec")
            state = registry.load(self.job_id)
            init_prompt = _initial_prompt(registry, self.job_id)
            outcome = train(spec, registry.paths(self.job_id).root, rank=rank, world_size=world,
                            init_method=_rendezvous(env) if world > 1 else None,
                            device=rank_device(env.local_rank), init_prompt=init_prompt,
                            init_prompt_id=state.init_prompt_id,
                            stop_check=resize_pending if rank == 0 else None, display="log")
            loop["ran"] = True
        except BaseException as exc:
            if rank == 0 and _stopped_for_resize(exc, registry, self.job_id):
                # USR2 before the training loop: submitit's handler ended the attempt as asked.
                registry.update(self.job_id, lambda st: _mark_stopped(
                    st, slurm_id, "stopped for a resize before training started"))
            elif rank == 0 and not isinstance(exc, SystemExit):
                # Bad data or a bad spec fails the same way on every attempt: no retry.
                fatal = isinstance(exc, (BadInputError, CorruptFileError))
                message = bounded(str(exc) if fatal else f"{type(exc).__name__}: {exc}", 500)
                registry.update(self.job_id, lambda st: _mark_attempt_failed(
                    st, slurm_id, message, fatal))
            raise
        summary = {"status": outcome.status, "reason": outcome.reason, "step": outcome.step,
                   "metrics": outcome.metrics}
        if rank != 0:
            return summary
        _record_speed(registry, self.job_id)
        if outcome.status == "finished":
            registry.update(self.job_id, lambda st: _mark_finished(st, slurm_id, outcome))
            return summary
        pending = registry.load(self.job_id).pending_resize
        if pending is None and outcome.signal_name == "SIGUSR2" and \
                os.environ.get("SLURM_JOB_ID") == slurm_id:
            # Slurm's warning before the time limit (or a preemption notice): the same attempt
            # goes back to the queue at the same size and resumes from this checkpoint. A SIGTERM
            # (scancel, node shutdown) only checkpoints: rebalance decides what comes next.
            from ptctl.backends.slurm import requeue

            registry.update(self.job_id, lambda st: _mark_requeued(st, slurm_id, outcome.reason))
            requeue(slurm_id)
        else:
            registry.update(self.job_id, lambda st: _mark_stopped(st, slurm_id, outcome.reason))
        return summary

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on SIGUSR2 outside the training loop (interpreter start, model
        load): the last checkpoint on disk is already the state to resume, so requeue as is,
        or end the attempt (None) when a resize is pending so that rebalance relaunches it.
        Called from a signal handler: it reads the registry (lock-free) but never writes it."""
        import submitit

        if Registry(self.home).load(self.job_id).pending_resize is not None:
            return None
        return submitit.helpers.DelayedSubmission(TuningTask(self.home, self.job_id))


def _answer_usr2_once(loop: dict) -> None:
    """Before the training loop runs, SIGUSR2 goes to submitit's handler (which calls
    `TuningTask.checkpoint`); once it has run, the loop has answered the stop (or finished), and
    a late or repeated USR2 (a resize signalled twice, Slurm's time-limit warning) is ignored:
    submitit's handler would requeue or end the attempt from wherever rank 0 then is, its
    bookkeeping included."""
    outer = signal.getsignal(signal.SIGUSR2)
    if threading.current_thread() is not threading.main_thread() or not callable(outer):
        return

    def handler(signum, frame):
        if not loop["ran"]:
            outer(signum, frame)

    signal.signal(signal.SIGUSR2, handler)


def _stopped_for_resize(exc: BaseException, registry: Registry, job_id: str) -> bool:
    """Whether `exc` is submitit's way of ending an attempt whose resize is pending
    (`checkpoint` returned None), not a failure."""
    from submitit.core.utils import UncompletedJobError

    if not isinstance(exc, UncompletedJobError):
        return False
    try:
        return registry.load(job_id).pending_resize is not None
    except (PtctlError, OSError):
        return False


def _record_speed(registry: Registry, job_id: str) -> None:
    """Add this session's measured speed to the speed record, so the next job of its shape is
    planned with it; the job's own outcome never depends on it."""
    from datetime import datetime

    from ptctl.planner import speeds

    try:
        state, progress = registry.load(job_id), registry.read_progress(job_id)
        device = state.estimates.get("device")
        if progress is None or device is None:
            return
        whole = progress.status == "finished" and not progress.resumed_from_step and \
            len(state.attempts) == 1
        submitted = state.estimates.get("submitted_at") or \
            datetime.fromisoformat(state.created_at).timestamp()
        speeds.record_session(registry.home, registry.load_spec(job_id), device, progress,
                              submitted if whole else None)
    except (PtctlError, OSError) as exc:
        print(f"ptctl: speed record not updated: {exc}", file=sys.stderr)


def _drop_literal_log_template(folder) -> None:
    """submitit's local controller creates the logs/%j folder template literally (then writes
    into logs/<pid>/): remove it while empty, so a job folder holds only real attempts."""
    try:
        folder.rmdir()
    except OSError:  # absent (Slurm fills the template in) or not empty
        pass


def _initial_prompt(registry: Registry, job_id: str):
    """The Prompt Bank prompt that submit copied into the job folder, if it chose one.

    A copy, not a reference into the bank: the bank may change while the job runs, and the
    compute nodes need not see it.
    """
    path = registry.paths(job_id).init_prompt
    if not path.is_file():
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)["prompt"]
    except (SafetensorError, KeyError, OSError) as exc:
        raise CorruptFileError(f"{path}: not a prompt safetensors file ({exc})") from None


def _attempt(state: JobState, slurm_id: str):
    for attempt in reversed(state.attempts):
        if attempt.slurm_job_id == slurm_id:
            return attempt
    return None


def _mark_running(state: JobState, slurm_id: str) -> None:
    attempt = _attempt(state, slurm_id)
    if attempt is not None:
        attempt.started_at = attempt.started_at or utcnow()
        attempt.state = "RUNNING"
    if state.phase in (Phase.QUEUED, Phase.PENDING):
        move(state, Phase.RUNNING)


def _mark_finished(state: JobState, slurm_id: str, outcome) -> None:
    attempt = _attempt(state, slurm_id)
    if attempt is not None:
        attempt.ended_at, attempt.state, attempt.reason = utcnow(), "COMPLETED", outcome.reason
    if not state.is_terminal:  # a job cancelled as it finished stays cancelled
        move(state, Phase.FINISHED if outcome.reason == "target_reached" else Phase.UNMET)
    state.pending_resize = None
    state.progress.update({"step": outcome.step, "samples": outcome.samples,
                           "metrics": outcome.metrics, "finish_reason": outcome.reason})


def _mark_stopped(state: JobState, slurm_id: str, reason: str) -> None:
    attempt = _attempt(state, slurm_id)
    # `ptctl cancel` may have said CANCELLED first; an attempt already ended keeps its record.
    if attempt is not None and attempt.state not in ENDED_ATTEMPT_STATES:
        attempt.ended_at, attempt.state, attempt.reason = utcnow(), "STOPPED", reason


def _mark_requeued(state: JobState, slurm_id: str, reason: str) -> None:
    attempt = _attempt(state, slurm_id)
    if attempt is not None:
        attempt.state, attempt.reason = "PENDING", f"requeued after {reason}"
    move(state, Phase.PENDING)


def _mark_attempt_failed(state: JobState, slurm_id: str, message: str, fatal: bool) -> None:
    attempt = _attempt(state, slurm_id)
    if attempt is not None:
        attempt.ended_at, attempt.state, attempt.reason = utcnow(), "FAILED", message
        attempt.fatal = fatal
    state.errors.append(message)
