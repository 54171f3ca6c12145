"""What a user asks of one registered job: cancel it, resize it, wait for it."""

from __future__ import annotations

import time
from typing import Callable

from ptctl.backends import backend_for
from ptctl.config import Config, Profile, load_profile
from ptctl.errors import BadInputError, PtctlError
from ptctl.jobs.lifecycle import Phase, move
from ptctl.jobs.progress import Progress
from ptctl.fsutil import utcnow
from ptctl.jobs.registry import JobState, Registry
from ptctl.scheduler.round import Tick, complete_resizes, rebalance_once, request_resize, round_lock
from ptctl.scheduler.views import ENDED_ATTEMPT_STATES, HOLDING, LiveJob, allowed_gpus


def job_profile(cfg: Config, state: JobState) -> Profile:
    """The profile the job was launched with."""
    return load_profile(cfg, state.profile or None)


def cancel(registry: Registry, job_id: str, profile: Profile) -> JobState:
    """Stop a job for good: its attempt is cancelled, its checkpoints are kept."""

    def mark(st: JobState) -> None:
        move(st, Phase.CANCELLED)
        st.pending_resize = None
        if st.current_attempt and st.current_attempt.state not in ENDED_ATTEMPT_STATES:
            st.current_attempt.state = "CANCELLED"
            st.current_attempt.ended_at = utcnow()

    state = registry.update(job_id, mark)
    if state.current_attempt:
        backend_for(profile).cancel(state.current_attempt.slurm_job_id)
    return state


def resize(registry: Registry, job_id: str, gpus: int, profile: Profile,
           wait_s: float) -> Tick:
    """Checkpoint a running job and relaunch it at `gpus`, waiting up to `wait_s` for the
    checkpoint before leaving the relaunch to the next round."""
    with round_lock(registry):
        state = registry.load(job_id)
        spec = registry.load_spec(job_id)
        allowed = allowed_gpus(spec, profile)
        if gpus not in allowed:
            raise BadInputError(f"--gpus: got {gpus}, expected one of "
                                f"{', '.join(map(str, allowed))} for job {job_id}")
        if state.phase not in HOLDING or state.pending_resize:
            raise PtctlError(f"job {job_id} is {state.phase}: only a pending or running job "
                             "without a resize under way can be resized")
        tick = Tick(now=time.time())
        if gpus != state.gpus:
            job = LiveJob(state, spec, None)
            request_resize(registry, job, gpus, profile, tick)
            complete_resizes(registry, [job], profile, tick, wait_s=wait_s)
    return tick


def wait_until_ended(cfg: Config, profile: Profile, job_id: str,
                     on_progress: Callable[[Progress], None], every_s: float = 5.0) -> JobState:
    """Run a round every `every_s` until the job ends and is banked (the embedded default has
    no cron to do it); `on_progress` sees each new step."""
    registry = Registry(cfg.home)
    last_step = None
    while True:
        rebalance_once(registry, profile, cfg.policy, resize_wait_s=every_s,
                       bank_dir=cfg.bank_dir)
        state = registry.load(job_id)
        banking = state.phase == Phase.FINISHED and "bank_entry" not in state.estimates and \
            registry.load_spec(job_id)["prompt"].get("add_to_bank")
        if state.is_terminal and not banking:
            return state
        progress = registry.read_progress(job_id)
        if progress is not None and progress.step != last_step:
            last_step = progress.step
            on_progress(progress)
        time.sleep(every_s)
