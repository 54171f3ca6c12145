"""Launching an attempt of a registered job through its profile's backend.

One launch = one attempt with a fixed GPU count and one task per GPU. A resize is
checkpoint-and-resubmit: the running attempt checkpoints on SIGUSR2 and stops, and a new attempt
is submitted with the new count (submitit's own requeue keeps the same resources, so it cannot
resize). Each attempt gets a unique name, `<job_id>.a<N>`, so that a launch whose record was
lost (a rebalance killed between `sbatch` and the registry write) is found again by name
instead of being submitted twice. The job id comes first because squeue's default NAME column
shows 8 characters; ptctl's mark is in the comment (`ptctl:<job_id>:<purpose>`) and the wckey.
"""

from __future__ import annotations

from ptctl.backends import backend_for
from ptctl.config import Profile
from ptctl.errors import PtctlError, SlurmUnreachableError
from ptctl.jobs.lifecycle import Phase, move
from ptctl.fsutil import utcnow
from ptctl.jobs.registry import JobState, Registry, SlurmAttempt
from ptctl.scheduler.worker import TuningTask


def attempt_name(job_id: str, attempt_index: int) -> str:
    return f"{job_id}.a{attempt_index}"


def purpose(state: JobState) -> str:
    """Why this attempt is launched: the first start (or a resume after a requeue), a resize,
    a retry after an attempt that failed, or `ptctl resume` of a cancelled job."""
    if state.pending_resize:
        return "resize"
    last = state.current_attempt
    if last is not None and last.state == "CANCELLED":
        return "resume"
    return "retry" if last is not None and last.state not in ("STOPPED", "COMPLETED") else "start"


def attempt_profile(registry: Registry, job_id: str, profile: Profile) -> Profile:
    """The profile every attempt of the job runs under, not only the first: `profile` with
    the spec's `slurm:` overrides."""
    overrides = registry.load_spec(job_id).get("slurm") or {}
    return profile.with_overrides({k: v for k, v in overrides.items() if v is not None})


def launch(registry: Registry, job_id: str, gpus: int, profile: Profile) -> SlurmAttempt:
    """Submit the next attempt of `job_id` with `gpus` GPUs and record it in the registry."""
    profile = attempt_profile(registry, job_id, profile)
    backend = backend_for(profile)
    state = registry.load(job_id)
    name = attempt_name(job_id, len(state.attempts))
    slurm_id = backend.find_by_name(name)
    if slurm_id is None:
        try:
            slurm_id = backend.submit(TuningTask(str(registry.home), job_id),
                                      folder=registry.paths(job_id).attempt_logs("%j"),
                                      gpus=gpus, name=name,
                                      comment=f"ptctl:{job_id}:{purpose(state)}")
        except Exception as exc:  # submitit raises plain exceptions for sbatch failures
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            where = (f"sbatch for job {job_id} (profile {profile.name}, partition "
                     f"{profile.partition or 'default'}, {gpus} GPU(s))")
            if "contact" in first.lower() or "connect" in first.lower():
                raise SlurmUnreachableError(f"{where}: {first}") from None
            raise PtctlError(f"{where}: {first}") from None
    attempt = SlurmAttempt(slurm_job_id=slurm_id, gpus=gpus, submitted_at=utcnow())

    def record(st: JobState) -> None:
        if not any(a.slurm_job_id == slurm_id for a in st.attempts):
            st.attempts.append(attempt)
        st.gpus = gpus
        move(st, Phase.PENDING)
        st.pending_resize = None
        st.profile = profile.ref or profile.name

    registry.update(job_id, record)
    return attempt

