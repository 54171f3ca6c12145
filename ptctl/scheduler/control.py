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
from ptctl.planner.prompttuner import LAST_RESIZE
from ptctl.scheduler.limits import GpuLimits
from ptctl.scheduler.views import ENDED_ATTEMPT_STATES, HOLDING, LiveJob


def job_profile(cfg: Config, state: JobState) -> Profile:
    """The profile the job was launched with."""
    return load_profile(cfg, state.profile or None)


def cancel(registry: Registry, job_id: str, profile: Profile) -> JobState:
    """Stop a job: its attempt is cancelled (recorded before the scancel is sent, so that no
    round takes it for a user's scancel), its checkpoints kept for `ptctl resume`."""

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


def resize(registry: Registry, job_id: str, gpus: int | None, profile: Profile,
           wait_s: float, pin: bool | None = None) -> Tick:
    """Checkpoint a running job and relaunch it at `gpus`, waiting up to `wait_s` for the
    checkpoint before leaving the relaunch to the next round; `pin` pins (True) or unpins
    (False) the job's count. A pinned job resized by hand stays pinned at its new count."""
    with round_lock(registry):
        state = registry.load(job_id)
        spec = registry.load_spec(job_id)
        if state.is_terminal:
            raise PtctlError(f"job {job_id} is {state.phase}: nothing to resize or pin")
        if gpus is not None:
            limits = GpuLimits.of(spec, profile)
            why = limits.why_not(gpus)
            if why:
                raise BadInputError(f"--gpus: {gpus} GPUs not allowed for job {job_id}: {why} "
                                    f"({limits.summary()})")
        current = state.pending_resize["gpus"] if state.pending_resize else state.gpus
        pin_queued = bool(pin) and gpus is not None and state.phase == Phase.QUEUED
        if gpus is not None and not pin_queued and (
                state.phase not in HOLDING or state.pending_resize):
            raise PtctlError(f"job {job_id} is {state.phase}: only a pending or running job "
                             "without a resize under way can be resized")
        if pin and gpus is None and current == 0:
            raise PtctlError(f"job {job_id} is {state.phase}: give --gpus N to pin it")
        pinned = state.pinned_gpus
        if pin is not None or pinned is not None:
            pinned = None if pin is False else (gpus if gpus is not None else current)
        tick = Tick(now=time.time())
        moving = gpus is not None and not pin_queued and gpus != state.gpus

        def record(st: JobState) -> None:
            st.pinned_gpus = pinned
            if moving:  # counts as a resize for the policy's hysteresis
                st.policy_memory[LAST_RESIZE] = tick.now

        job = LiveJob(registry.update(job_id, record), spec, None)
        if moving:
            request_resize(registry, job, gpus, profile, tick)
            complete_resizes(registry, [job], profile, tick, wait_s=wait_s)
        if pin is not None:
            tick.act(job_id, "pin" if pin else "unpin", gpus=pinned)
    return tick


def set_held(registry: Registry, job_id: str, held: bool) -> JobState:
    """Hold a job (rounds neither start nor resize it; a running attempt keeps running) or
    release it. Under the round lock: no round in progress acts on the old flag."""

    def change(st: JobState) -> None:
        if st.is_terminal:
            raise PtctlError(f"job {job_id} is {st.phase}: nothing to hold or release")
        st.held = held

    with round_lock(registry):
        return registry.update(job_id, change)


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
