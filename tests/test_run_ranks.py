"""`ptctl run --gpus 2` with real processes: a run folder has one owner at a time, and ranks
die with their launcher (killed -9, it forwards no stop)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers import run_cli, tiny_spec
from ptctl.fsutil import owner_lock
from ptctl.tuning.launch import RUN_LOCK


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ranks_die_with_their_launcher_and_the_folder_has_one_owner(tmp_path: Path):
    spec = tiny_spec(tmp_path, training={"global_batch_size": 4, "micro_batch_size": 2,
                                         "learning_rate": 0.3, "max_steps": 100000,
                                         "eval_every": 100000, "checkpoint_every": 20})
    folder = tmp_path / "run"
    parent = subprocess.Popen([sys.executable, "-m", "ptctl", "run", str(spec), "--gpus", "2",
                               "--dir", str(folder), "--quiet"], env=os.environ | {
                                   "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while not list((folder / "checkpoints").glob("step_*")):
            assert parent.poll() is None, "the run ended early"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.5)
        ranks = _children(parent.pid)
        assert len(ranks) >= 2, ranks  # two ranks (and multiprocessing's resource tracker)

        second = run_cli("run", str(spec), "--gpus", "1", "--dir", str(folder), "--quiet",
                         timeout=120)
        assert second.returncode == 1, second.stderr
        line = second.stderr.strip()
        assert "\n" not in line and f"pid {parent.pid} on {socket.gethostname()}" in line, line
        assert "in use" in line and RUN_LOCK in line

        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in ranks) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in ranks if _alive(p)], "ranks outlived their launcher"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    with owner_lock(folder / RUN_LOCK, "run folder"):
        pass  # free again once its owner has gone
