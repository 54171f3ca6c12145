"""The Slurm backend: what ptctl asks the Slurm controller (is it up, where are my jobs, what a
partition holds) and how it submits, signals and cancels attempts.

Only calls to the Slurm client tools, each under a timeout, so that a status or rebalance round
never hangs on a dead controller and importing this module stays cheap. Every failure to reach
slurmctld (connect errors, timeouts) becomes `SlurmUnreachableError` (exit 75: retry later);
other failures become a one-line `PtctlError`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shutil
import signal
import subprocess
from typing import Any
from dataclasses import dataclass

from ptctl.backends.base import FINISHED_STATES, AttemptStatus, Check, SubmititBackend
from ptctl.config import Profile
from ptctl.errors import NotFoundError, PtctlError, SlurmUnreachableError

# Seconds one client call may take. The local cluster fails in ~2 s when slurmctld is down;
# a busy production controller can take far longer to answer a healthy query.
TIMEOUT_S = 30.0
PING_TIMEOUT_S = 15.0

# stderr of the client tools when slurmctld (or slurmdbd, for sacct) cannot be reached.
_UNREACHABLE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Connection refused|"
    r"Connection timed out|Zero Bytes were transmitted|Communication connection failure|"
    r"No route to host|Unable to establish connection|Transport endpoint is not connected|"
    r"slurmdbd.*(not responding|connection)",
    re.IGNORECASE,
)
_GPU_ENTRY = re.compile(r"\bgpu(:[^:,()=]+)?[:=](\d+)")


@dataclass(frozen=True)
class PartitionInfo:
    """A partition's size: `gpus_per_node` is its largest node's GPU count."""

    name: str
    nodes: int
    gpus_per_node: int
    total_gpus: int
    up: bool


def _run(args: list[str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client command; unreachable or slow controllers raise SlurmUnreachableError."""
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise PtctlError(f"{args[0]} not found on PATH: Slurm client tools missing") from None
    except subprocess.TimeoutExpired:
        raise SlurmUnreachableError(
            f"Slurm unreachable: {args[0]} did not answer within {timeout:g} s") from None
    if proc.returncode != 0 and _UNREACHABLE.search(proc.stderr):
        raise SlurmUnreachableError(f"Slurm unreachable: {_first_line(proc.stderr)}")
    return proc


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no output")


def _check(proc: subprocess.CompletedProcess[str], what: str) -> str:
    if proc.returncode != 0:
        raise PtctlError(f"{what} failed: {_first_line(proc.stderr or proc.stdout)}")
    return proc.stdout


def ping() -> None:
    """Raise SlurmUnreachableError unless a slurmctld (primary or backup) answers."""
    proc = _run(["scontrol", "ping"], timeout=PING_TIMEOUT_S)
    if " is UP" not in proc.stdout:
        raise SlurmUnreachableError(
            f"Slurm unreachable: {_first_line(proc.stdout or proc.stderr)}")


@functools.lru_cache(maxsize=1)
def accounting_enabled() -> bool:
    """True when slurmdbd stores finished jobs, so `sacct` can report them (cached per process)."""
    out = _check(_run(["scontrol", "show", "config"]), "scontrol show config")
    match = re.search(r"^AccountingStorageType\s*=\s*(\S+)", out, re.MULTILINE)
    return bool(match) and match.group(1) != "accounting_storage/none"


def _gpus(tres: str) -> int:
    """GPU count in a TRES or GRES string: "gres:gpu:2", "gpu:a100:8(S:0-1)", "gres/gpu=4".

    sacct lists a typed count next to the total ("gres/gpu=4,gres/gpu:a100=4"): the untyped
    entries win; a string with typed entries only ("gpu:a100:4,gpu:v100:2") sums them.
    """
    entries = _GPU_ENTRY.findall(tres)
    untyped = [int(n) for gpu_type, n in entries if not gpu_type]
    return sum(untyped) if untyped else sum(int(n) for _, n in entries)


def _time(value: str) -> str | None:
    return None if value in ("", "N/A", "NONE", "None", "Unknown") else value


_CANCELLED_BY = re.compile(r"^CANCELLED by (\d+)")


def _job(job_id: str, state: str, reason: str, nodes: str, gpus: int, start: str, end: str,
         partition: str = "", user_id: str = "") -> AttemptStatus:
    cancelled_by = _CANCELLED_BY.match(state.strip())
    state = state.split()[0] if state.strip() else "UNKNOWN"  # sacct: "CANCELLED by 0"
    started = state != "PENDING"
    return AttemptStatus(
        job_id=job_id, state=state, reason="" if reason == "None" else reason,
        nodes="" if nodes in ("None assigned", "(null)") else nodes, gpus=gpus,
        start=_time(start) if started else None,
        end=_time(end) if state in FINISHED_STATES else None, partition=partition,
        cancelled_by=cancelled_by.group(1) if cancelled_by else None,
        user_id=user_id or None,
    )


_SQUEUE_FIELDS = ("JobID", "State", "Reason", "NodeList", "NumNodes", "tres-per-job",
                  "tres-per-node", "StartTime", "EndTime", "Partition")


def _squeue(job_ids: list[str]) -> dict[str, AttemptStatus]:
    proc = _run(["squeue", f"--jobs={','.join(job_ids)}", "--states=all", "--noheader",
                 "--Format=" + ",".join(f"{f}:|" for f in _SQUEUE_FIELDS)])
    # A single unknown id is an error; unknown ids among several are silently left out.
    if proc.returncode != 0 and "Invalid job id" in proc.stderr:
        return {}
    out = _check(proc, "squeue")
    jobs = {}
    for line in out.splitlines():
        fields = line.split("|")
        if len(fields) < len(_SQUEUE_FIELDS):
            continue
        jid, state, reason, nodes, num_nodes, per_job, per_node, start, end, part = fields[:10]
        gpus = _gpus(per_job) or _gpus(per_node) * int(num_nodes or 1)
        jobs[jid] = _job(jid, state, reason, nodes, gpus, start, end, part)
    return jobs


_SACCT_FIELDS = "JobID,State,Reason,NodeList,AllocTRES,ReqTRES,Start,End,Partition,UID"


def _sacct(job_ids: list[str]) -> dict[str, AttemptStatus]:
    out = _check(_run(["sacct", f"--jobs={','.join(job_ids)}", "--allocations", "--noheader",
                       "--parsable2", f"--format={_SACCT_FIELDS}"]), "sacct")
    return dict(parse_sacct_line(line) for line in out.splitlines()
                if line.count("|") >= _SACCT_FIELDS.count(","))


def parse_sacct_line(line: str) -> tuple[str, AttemptStatus]:
    """One line of `sacct --parsable2 --format=<_SACCT_FIELDS>`: (job id, its status)."""
    jid, state, reason, nodes, alloc, req, start, end, part, uid = line.split("|")[:10]
    return jid, _job(jid, state, reason, nodes, _gpus(alloc) or _gpus(req), start, end, part,
                     uid)


def queue_state(job_ids: list[str]) -> dict[str, AttemptStatus]:
    """States of `job_ids` with one `squeue` call, plus one `sacct` call for the ids squeue
    forgot and the cancelled ones (only accounting says who cancelled a job).

    slurmctld forgets a finished job MinJobAge seconds (default 300) after it ends; only
    accounting (slurmdbd) knows it after that. `scontrol show job` reads the same table as
    squeue, so without accounting such ids are simply absent from the result.
    """
    ids = list(dict.fromkeys(str(j) for j in job_ids))
    if not ids:
        return {}
    jobs = {jid: job for jid, job in _squeue(ids).items() if jid in ids}
    ask = [jid for jid in ids if jid not in jobs or jobs[jid].state == "CANCELLED"]
    if ask and accounting_enabled():
        for jid, job in _sacct(ask).items():
            if jid not in ask:
                continue
            if jid not in jobs:
                jobs[jid] = job
            elif job.state == "CANCELLED":  # squeue's record, with who cancelled it
                jobs[jid] = dataclasses.replace(jobs[jid], cancelled_by=job.cancelled_by,
                                                user_id=job.user_id)
    return {jid: jobs[jid] for jid in ids if jid in jobs}


def accounted_usage(job_ids: list[str]) -> dict[str, tuple[float, float]]:
    """(elapsed seconds, GPU-seconds) per job from ONE `sacct` call: ElapsedRaw x the
    allocated GPUs, summed over the job's runs (a requeued job runs again under its id);
    empty without accounting."""
    if not job_ids or not accounting_enabled():
        return {}
    out = _check(_run(["sacct", f"--jobs={','.join(job_ids)}", "--allocations", "--duplicates",
                       "--noheader", "--parsable2", "--format=JobID,ElapsedRaw,AllocTRES"]),
                 "sacct")
    totals: dict[str, tuple[float, float]] = {}
    for line in out.splitlines():
        jid, elapsed, alloc = (line.split("|") + ["", ""])[:3]
        if jid in job_ids and elapsed.isdigit():
            seconds, gpu_seconds = totals.get(jid, (0.0, 0.0))
            totals[jid] = (seconds + int(elapsed), gpu_seconds + int(elapsed) * _gpus(alloc))
    return totals


def find_job_by_name(name: str) -> str | None:
    """Id of the newest pending or running job named `name`, or None."""
    out = _check(_run(["squeue", f"--name={name}", "--noheader", "--format=%i"]), "squeue")
    ids = [line.strip() for line in out.splitlines() if line.strip()]
    return max(ids, key=lambda j: [int(p) for p in re.findall(r"\d+", j)], default=None)


def default_partition() -> str:
    """The partition sbatch uses when none is named (sinfo marks it with '*')."""
    out = _check(_run(["sinfo", "--noheader", "--format=%P"]), "sinfo")
    for name in out.split():
        if name.endswith("*"):
            return name[:-1]
    raise NotFoundError("Slurm has no default partition: set `partition` in the profile")


def partition_info(partition: str) -> PartitionInfo:
    """Nodes and GPUs of `partition` (GPUs from each node's configured GRES, sinfo %G)."""
    out = _check(_run(["sinfo", "--Node", f"--partition={partition}", "--noheader",
                       "--format=%N|%G|%a"]), "sinfo")
    per_node: dict[str, int] = {}
    up = False
    for line in out.splitlines():
        fields = line.split("|")
        if len(fields) < 3:
            continue
        per_node[fields[0]] = _gpus(fields[1])
        up = up or fields[2] == "up"
    if not per_node:
        raise NotFoundError(f"Slurm partition {partition!r} not found (or it has no nodes)")
    return PartitionInfo(name=partition, nodes=len(per_node),
                         gpus_per_node=max(per_node.values()),
                         total_gpus=sum(per_node.values()), up=up)


def requeue(job_id: str) -> None:
    """Put a running job back in the queue at the same size (called from inside the job)."""
    subprocess.run(["scontrol", "requeue", job_id], check=False, timeout=30)


SLURM_COMMANDS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel")


class SlurmBackend(SubmititBackend):
    executor = "slurm"
    multi_node = True
    attempt_noun = "Slurm job"

    def executor_parameters(self, gpus: int, name: str, comment: str = "") -> dict[str, Any]:
        params = super().executor_parameters(gpus, name, comment)
        profile = self.profile
        # A rank that exits with an error ends the attempt: its peers would otherwise wait in
        # a collective until the time limit, and rebalance would never see the attempt end.
        params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
        # sacct -W ptctl / squeue -o %k find ptctl's jobs (submitit's default is "submitit").
        params["slurm_wckey"] = "ptctl"
        if comment:
            params["slurm_comment"] = comment
        for key in ("partition", "account", "qos", "mail_type", "mail_user"):
            value = getattr(profile, key)
            if value:
                params[f"slurm_{key}"] = value
        if profile.mem_gb:
            params["mem_gb"] = profile.mem_gb
        if profile.setup:
            params["slurm_setup"] = list(profile.setup)
        if profile.sbatch_args:
            params["slurm_additional_parameters"] = dict(profile.sbatch_args)
        return params

    def ping(self) -> None:
        ping()

    def poll(self, attempt_ids: list[str]) -> dict[str, AttemptStatus]:
        return queue_state(attempt_ids)

    def usage(self, attempt_ids: list[str]) -> dict[str, tuple[float, float]]:
        return accounted_usage(attempt_ids)

    def signal(self, attempt_id: str, sig: signal.Signals) -> None:
        subprocess.run(["scancel", f"--signal={sig.name.removeprefix('SIG')}", attempt_id],
                       capture_output=True, timeout=30, check=False)

    def cancel(self, attempt_id: str) -> None:
        subprocess.run(["scancel", attempt_id], capture_output=True, timeout=30, check=False)

    def find_by_name(self, name: str) -> str | None:
        return find_job_by_name(name)

    def checks(self) -> list[Check]:
        missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
        if missing:
            return [Check("slurm commands", "fail", f"not on PATH: {', '.join(missing)}")]
        checks = [Check("slurm commands", "ok", ", ".join(SLURM_COMMANDS))]
        try:
            ping()
        except PtctlError as exc:
            checks.append(Check("slurm controller", "fail", str(exc)))
            return checks
        checks.append(Check("slurm controller", "ok", "slurmctld answers"))
        try:
            info = partition_info(self.profile.partition or default_partition())
        except PtctlError as exc:
            checks.append(Check("partition", "fail", str(exc)))
            return checks
        checks.append(_partition_gpus_check(info, self.profile))
        return checks


def _partition_gpus_check(info: PartitionInfo, profile: Profile) -> Check:
    part = info.name
    if info.gpus_per_node < 1:
        return Check("partition GPUs", "fail", f"partition {part}: no GPUs visible")
    if info.gpus_per_node < profile.gpus_per_node:
        return Check("partition GPUs", "warn",
                     f"partition {part}: {info.gpus_per_node} GPUs per node, profile "
                     f"{profile.name} expects {profile.gpus_per_node}")
    return Check("partition GPUs", "ok",
                 f"partition {part}: {info.nodes} node(s), {info.gpus_per_node} GPUs per node")
