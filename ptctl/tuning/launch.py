"""Run a job on this machine with N ranks: `ptctl run --gpus N`.

N = 1 runs in-process. N > 1 spawns N processes that meet over tcp://127.0.0.1 (NCCL when the
machine has N CUDA devices, else gloo on CPU, so a CPU box still runs real ranks). The parent
forwards SIGUSR2/SIGTERM/SIGINT to the ranks, which checkpoint and exit together; ranks die
with the parent (killed -9 it forwards nothing). The folder is held (`.run.lock`, pid and host)
while a run owns it: a second run there is refused, never interleaved with the first.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from ptctl import errors
from ptctl.errors import PtctlError
from ptctl.fsutil import owner_lock
from ptctl.jobs.spec import JobSpec
from ptctl.tuning.train import TrainOutcome, train


def default_device(rank: int, world_size: int) -> str:
    """cuda:<rank> when this machine has a GPU per rank, else cpu."""
    if torch.cuda.is_available() and torch.cuda.device_count() >= world_size:
        return f"cuda:{rank}"
    return "cpu"


def launch(spec: JobSpec, root: Path, gpus: int, *, init_prompt: torch.Tensor | None = None,
           init_prompt_id: str | None = None, stop_after: int | None = None,
           display: str = "auto") -> TrainOutcome:
    """Train (or resume) the job in `root` with `gpus` local ranks; rank 0's outcome.
    `display`: how rank 0 shows progress on stderr (ptctl.tuning.report)."""
    if gpus < 1:
        raise errors.BadInputError(f"--gpus: got {gpus}, expected an integer >= 1")
    with owner_lock(Path(root) / RUN_LOCK, f"{root}: run folder"):
        return _launch(spec, Path(root), gpus, init_prompt=init_prompt,
                       init_prompt_id=init_prompt_id, stop_after=stop_after, display=display)


RUN_LOCK = ".run.lock"
_PR_SET_PDEATHSIG = 1


def _launch(spec: JobSpec, root: Path, gpus: int, *, init_prompt: torch.Tensor | None,
            init_prompt_id: str | None, stop_after: int | None, display: str) -> TrainOutcome:
    if gpus == 1:
        return train(spec, root, rank=0, world_size=1, device=default_device(0, 1),
                     init_prompt=init_prompt, init_prompt_id=init_prompt_id,
                     stop_after=stop_after, display=display)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    kwargs = {"init_prompt": init_prompt, "init_prompt_id": init_prompt_id,
              "stop_after": stop_after, "display": display}
    procs = [ctx.Process(target=_worker, args=(spec, root, rank, gpus, init_method,
                                               kwargs, results, os.getpid()), daemon=False)
             for rank in range(gpus)]
    for p in procs:
        p.start()

    def forward(sig, _frame):
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGUSR2 if sig == signal.SIGINT else sig)

    previous = {sig: signal.signal(sig, forward)
                for sig in (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)}
    try:
        reports = _collect(procs, results)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
    failures = [r for r in reports if r[1] != "ok"]
    if failures:
        rank, _, kind, message = sorted(failures)[0]
        cls = getattr(errors, kind, None)
        if isinstance(cls, type) and issubclass(cls, PtctlError):
            raise cls(message)
        raise PtctlError(f"rank {rank} failed: {message}")
    return next(r[2] for r in reports if r[0] == 0)


def _collect(procs, results) -> list[tuple]:
    """Every rank's report; the first failure (or a rank dying silently) ends the wait, since
    the other ranks would block in their next collective."""
    reports: dict[int, tuple] = {}
    while len(reports) < len(procs):
        try:
            report = results.get(timeout=0.5)
        except queue.Empty:
            dead = [i for i, p in enumerate(procs)
                    if i not in reports and not p.is_alive() and p.exitcode != 0]
            if not dead:
                continue
            report = (dead[0], "error", "", f"exited with code {procs[dead[0]].exitcode}")
        reports[report[0]] = report
        if report[1] != "ok":
            break
    return list(reports.values())


def _die_with(parent: int) -> None:
    """End this rank when its launcher ends: a launcher killed -9 forwards no stop, and ranks
    left behind would keep checkpointing into the folder a resumed run then writes too. Linux
    kills us at once (parent-death signal); elsewhere a thread watches the parent pid."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    if os.getppid() != parent:  # it ended before the signal was set
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="ptctl-parent-watch").start()


def _worker(spec: JobSpec, root: Path, rank: int, world_size: int, init_method: str,
            kwargs: dict[str, Any], results, parent: int) -> None:
    _die_with(parent)
    # The parent forwards signals; a Ctrl-C reaching the whole process group must not kill us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    device = default_device(rank, world_size)
    if device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    try:
        outcome = train(spec, root, rank=rank, world_size=world_size, init_method=init_method,
                        device=device, **kwargs)
        results.put((rank, "ok", outcome))
    except PtctlError as exc:
        results.put((rank, "error", type(exc).__name__, str(exc)))
    except BaseException as exc:  # report, so the parent never waits on a dead rank
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        results.put((rank, "error", "", last))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
