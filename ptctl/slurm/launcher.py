"""Launching a registered job through submitit, on Slurm or as local processes.

One launch = one Slurm job ("attempt") with a fixed GPU count and one task per GPU. A resize is
checkpoint-and-resubmit: the running attempt checkpoints on SIGUSR2 and stops, and a new attempt
is submitted with the new count (submitit's own requeue keeps the same resources, so it cannot
resize). Each attempt gets a unique Slurm job name, `ptctl-<job_id>-a<N>`, so that a launch whose
record was lost (a rebalance killed between `sbatch` and the registry write) is found again by
name instead of being submitted twice.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ptctl.config import Profile
from ptctl.errors import PtctlError, SlurmUnreachableError
from ptctl.jobs.registry import JobState, Registry, SlurmAttempt, utcnow


def attempt_name(job_id: str, attempt_index: int) -> str:
    return f"ptctl-{job_id}-a{attempt_index}"


def node_layout(gpus: int, gpus_per_node: int) -> tuple[int, int]:
    """(nodes, GPUs per node) for a job of `gpus` GPUs: whole nodes once it exceeds one."""
    if gpus <= gpus_per_node:
        return 1, gpus
    nodes = math.ceil(gpus / gpus_per_node)
    if gpus % nodes:
        raise PtctlError(f"{gpus} GPUs do not split evenly over {nodes} nodes of "
                         f"{gpus_per_node} GPUs")
    return nodes, gpus // nodes


def executor_parameters(profile: Profile, gpus: int, name: str) -> dict[str, Any]:
    """submitit parameters for one attempt: one task per GPU, the profile's Slurm settings."""
    nodes, per_node = node_layout(gpus, profile.gpus_per_node)
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": profile.time_limit_min,
        "nodes": nodes,
        "tasks_per_node": per_node,
        "gpus_per_node": per_node,
        "cpus_per_task": profile.cpus_per_gpu,
        "slurm_signal_delay_s": profile.signal_lead_s,
    }
    if profile.executor == "slurm":
        # A rank that exits with an error ends the attempt: its peers would otherwise wait in
        # a collective until the time limit, and rebalance would never see the attempt end.
        params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
        for key in ("partition", "account", "qos"):
            value = getattr(profile, key)
            if value:
                params[f"slurm_{key}"] = value
        if profile.mem_gb:
            params["mem_gb"] = profile.mem_gb
        if profile.setup:
            params["slurm_setup"] = list(profile.setup)
        if profile.sbatch_args:
            params["slurm_additional_parameters"] = dict(profile.sbatch_args)
    elif profile.setup:
        params["local_setup"] = list(profile.setup)
    return params


def make_executor(profile: Profile, folder: Path, gpus: int, name: str):
    import submitit

    # Requeues are ptctl's business (time limits on long jobs come again and again): do not
    # let submitit's default of 3 timeouts end a job.
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=profile.executor,
                                     slurm_max_num_timeout=1000)
    executor.update_parameters(**executor_parameters(profile, gpus, name))
    return executor


def launch(registry: Registry, job_id: str, gpus: int, profile: Profile) -> SlurmAttempt:
    """Submit the next attempt of `job_id` with `gpus` GPUs and record it in the registry."""
    from ptctl.slurm.entry import TuningTask

    state = registry.load(job_id)
    name = attempt_name(job_id, len(state.attempts))
    existing = _find_by_name(profile, name)
    if existing is None:
        executor = make_executor(profile, registry.paths(job_id).logs, gpus, name)
        try:
            submitted = executor.submit(TuningTask(str(registry.home), job_id))
        except Exception as exc:  # submitit raises plain exceptions for sbatch failures
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            where = (f"sbatch for job {job_id} (profile {profile.name}, partition "
                     f"{profile.partition or 'default'}, {gpus} GPU(s))")
            if "contact" in first.lower() or "connect" in first.lower():
                raise SlurmUnreachableError(f"{where}: {first}") from None
            raise PtctlError(f"{where}: {first}") from None
        slurm_id = str(submitted.job_id)
    else:
        slurm_id = existing
    attempt = SlurmAttempt(slurm_job_id=slurm_id, gpus=gpus, submitted_at=utcnow())

    def record(st: JobState) -> None:
        if not any(a.slurm_job_id == slurm_id for a in st.attempts):
            st.attempts.append(attempt)
        st.gpus = gpus
        st.phase = "pending"
        st.pending_resize = None
        st.profile = profile.ref or profile.name

    registry.update(job_id, record)
    return attempt


def _find_by_name(profile: Profile, name: str) -> str | None:
    """The Slurm job id of a live job named `name`, if a lost launch already submitted it."""
    if profile.executor != "slurm":
        return None
    from ptctl.slurm import cluster

    return cluster.find_job_by_name(name)
