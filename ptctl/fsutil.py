"""Atomic writes, file locks and the timestamp state files record: no state file is ever seen
half-written."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import stat
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ptctl.errors import PtctlError


def utcnow() -> str:
    """Now as ISO 8601 in UTC, to the millisecond: the scheduler reads job states' times back
    (arrivals, resize timings) finer than a second."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600 files; state on a shared filesystem is read by other users
        # (cron's rebalance, colleagues' `ptctl status`): use the usual umask-derived mode.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def follow_umask(root: str | os.PathLike) -> None:
    """Give `root` and everything under it the modes the umask gives new files and folders.

    One rule for every file a job produces (state, checkpoints, results, the model cache):
    mkdtemp makes private folders and some libraries private files (safetensors), which
    left a teammate able to read a job's state but not its result."""
    mask = _umask()
    root = Path(root)
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, shared: bool = False, create: bool = True
              ) -> Iterator[bool]:
    """An advisory flock on `path`; works across processes and NFS v4. Yields whether it holds
    the lock: with `create` False a missing lock file is not created and no lock is taken
    (readers never write, so they can read folders they cannot write). A lock path that is not
    a regular file, or cannot be opened, is one PtctlError naming it, never a traceback."""
    path = Path(path)
    flags = (os.O_RDWR | os.O_CREAT if create else os.O_RDONLY) | os.O_NOFOLLOW
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        if create:
            raise PtctlError(f"{path}: cannot create the lock file (its folder vanished)"
                             ) from None
        fd = None
    except OSError as exc:
        raise PtctlError(f"{path}: cannot open as a lock file ({exc.strerror})") from None
    if fd is None:
        yield False
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PtctlError(f"{path}: not a regular file, cannot be a lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        except OSError as exc:
            raise PtctlError(f"{path}: cannot lock ({exc.strerror})") from None
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def owner_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold `path` for this process, writing its pid and host in it; PtctlError naming the
    holder when another process holds it (`what` says what is held). The flock is the truth:
    the words left in the file by an ended holder mean nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            raise PtctlError(f"{what}: in use by {holder} ({path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def try_file_lock(path: str | os.PathLike) -> Iterator[bool]:
    """Non-blocking exclusive lock: yields False when another process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
