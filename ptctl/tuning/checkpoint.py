"""Checkpoints: one resume record per step_N/ folder, tensors in safetensors, the rest in JSON.

    checkpoints/step_N/tensors.safetensors   every tensor of the record
    checkpoints/step_N/record.json           everything else, with the sha256 and size of
                                             tensors.safetensors and a sha256 of itself

A checkpoint is written in a hidden temp folder, fsynced, then renamed to step_N: a process
killed mid-write leaves only a temp folder (cleared by the next save) and the previous step_N
intact. Loading checks every checksum, so a truncated or edited file is a CorruptFileError
naming it, never a silently wrong resume; a record whose checksum holds but whose fields are
missing or mistyped (written by hand, or by another version) names the field. No pickle
anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ptctl.errors import CorruptFileError, excerpt
from ptctl.fsutil import follow_umask, fsync_dir
from ptctl.safeload import MAX_RECORD_BYTES, load_json

FORMAT = "ptctl-checkpoint/1"
TENSORS = "tensors.safetensors"
RECORD = "record.json"
_STEP_RE = re.compile(r"^step_(\d+)$")


# --- nested state <-> (tensors, JSON) --------------------------------------------------------

def _split(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors by {"__tensor__": key}; dicts with non-string keys keep their key types."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _split(v, f"{path}/{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, _split(v, f"{path}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join(obj: Any, tensors: dict[str, torch.Tensor], where: Path) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            if not isinstance(obj["__tensor__"], str) or obj["__tensor__"] not in tensors:
                raise CorruptFileError(f"{where / TENSORS}: missing tensor "
                                       f"{excerpt(obj['__tensor__'])}")
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            items = obj["__items__"]
            if not isinstance(items, list) or not all(
                    isinstance(i, list) and len(i) == 2 and isinstance(i[0], (str, int, float))
                    for i in items):
                raise CorruptFileError(f"{where / RECORD}: an __items__ entry is not a list of "
                                       "[key, value] pairs")
            return {k: _join(v, tensors, where) for k, v in items}
        return {k: _join(v, tensors, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors, where) for v in obj]
    return obj


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# --- save / load -----------------------------------------------------------------------------

def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write `state` (nested dicts/lists of JSON values and tensors) as step_<step>/ and keep
    the newest `keep` checkpoints. Returns the new folder."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    body = {"format": FORMAT, "step": step, "state": _split(state, "state", tensors)}
    blob = st_save(tensors)
    body["files"] = {TENSORS: {"sha256": _sha256(blob), "bytes": len(blob)}}
    record = {**body, "sha256": _sha256(_canonical(body))}

    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step}.", suffix=".tmp", dir=folder))
    try:
        _write(tmp / TENSORS, blob)
        _write(tmp / RECORD, json.dumps(record, indent=1, sort_keys=True).encode("utf-8"))
        follow_umask(tmp)
        fsync_dir(tmp)
        final = folder / f"step_{step}"
        if final.exists():  # saved again at the same step (e.g. stop right after a save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(folder, keep)
    return final


def _prune(folder: Path, keep: int) -> None:
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in folder.glob(".step_*.tmp"):  # left by a killed writer
        shutil.rmtree(stale, ignore_errors=True)


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (temp folders of unfinished writes excluded)."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if p.is_dir() and (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


_MAX_STATE_DEPTH = 64  # optimizer state nests ~6 deep; far more is damage, not a record
# record field (a key path: TENSORS holds a dot) -> type, what it must be
_FIELDS = [(("step",), int, "an integer"), (("state",), dict, "a mapping"),
           (("files",), dict, "a mapping"), (("files", TENSORS), dict, "a mapping"),
           (("files", TENSORS, "sha256"), str, "a sha256 string"),
           (("files", TENSORS, "bytes"), int, "an integer")]


def _check_fields(record: dict, record_path: Path) -> None:
    """Each field load_checkpoint reads is there with its type, else the error names it."""
    for keys, kind, what in _FIELDS:
        node: Any = record
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, kind) or isinstance(node, bool):
            raise CorruptFileError(f"{record_path}: field {'.'.join(keys)!r} is "
                                   f"{'missing' if node is None else excerpt(node)}, "
                                   f"expected {what}")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The state saved in `path` (a step_N folder), after checking both files' checksums."""
    record_path = path / RECORD
    if not record_path.is_file():
        raise CorruptFileError(f"{record_path}: missing")
    record = load_json(record_path, str(record_path), MAX_RECORD_BYTES, CorruptFileError,
                       allow_nan=True, max_depth=_MAX_STATE_DEPTH)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CorruptFileError(f"{record_path}: not a {FORMAT} record")
    claimed = record.pop("sha256", None)
    if claimed != _sha256(_canonical(record)):
        raise CorruptFileError(f"{record_path}: checksum mismatch (edited or damaged)")
    _check_fields(record, record_path)
    tensors_path = path / TENSORS
    try:
        blob = tensors_path.read_bytes()
    except FileNotFoundError:
        raise CorruptFileError(f"{tensors_path}: missing") from None
    expected = record["files"][TENSORS]
    if len(blob) != expected["bytes"]:
        raise CorruptFileError(f"{tensors_path}: {len(blob)} bytes, expected "
                               f"{expected['bytes']} (truncated?)")
    if _sha256(blob) != expected["sha256"]:
        raise CorruptFileError(f"{tensors_path}: checksum mismatch (edited or damaged)")
    try:
        tensors = st_load(blob)
    except SafetensorError as exc:
        raise CorruptFileError(f"{tensors_path}: unreadable ({exc})") from None
    return _join(record["state"], tensors, path)
