"""What a bank's manifest.json may say, and which paths a bank may touch.

A manifest is data from a shared folder, so it is checked before anything acts on it: its
structure and types field by field, and every path it names against the only names a bank
writes (`prompts/<id>.safetensors`, `index/v<N>.<kind>.faiss`), resolved inside the bank's own
folder. A check that fails is a corrupt bank (exit 1) naming the manifest and the field.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ptctl.errors import BadInputError, CorruptFileError

FORMAT = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
FEATURE_KINDS = ("behaviour", "task")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_INDEX_RE = re.compile(r"^index/v[0-9]{1,9}\.(behaviour|task)\.faiss$")
_NONE = type(None)
# Entry fields and the JSON types each may hold (required ones have no default in Entry).
ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "task": (str,), "model": (str,), "virtual_tokens": (int,),
    "hidden_size": (int,), "sha256": (str,), "labels": (list,), "label_words": (list,),
    "template": (str,), "task_spec": (dict, _NONE), "job": (str, _NONE),
    "target": (str, _NONE), "final_metric": (dict, _NONE), "steps": (int,),
    "steps_to_target": (int, _NONE), "loss_summary": (dict,), "eval_curve": (list,),
    "origin": (str, _NONE), "added": (str,)}
ENTRY_REQUIRED = ("id", "task", "model", "virtual_tokens", "hidden_size", "sha256")


def validate_id(entry_id: str) -> str:
    """Entry ids become file names: lower-case letters, digits, '.', '_', '-'; no path parts."""
    if not isinstance(entry_id, str) or not _ID_RE.match(entry_id) or ".." in entry_id:
        raise BadInputError(f"entry id {entry_id!r}: expected 1-80 lower-case letters, digits, "
                            "'.', '_' or '-', starting with a letter or digit (no '..' or '/')")
    return entry_id


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is _NONE else {"str": "a string", "int": "an integer",
                                                  "list": "a list", "dict": "an object"}[
        t.__name__] for t in types)


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, types)


def check(manifest: Any, path: Path) -> dict[str, Any]:
    """The manifest at `path` if its structure and types are a bank's; else the first field
    that is not, as a CorruptFileError naming `path` and the field."""
    def bad(field: str, why: str) -> CorruptFileError:
        return CorruptFileError(f"{path}: {field}: {why}"[:400])

    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptFileError(f"{path}: not a version-{FORMAT} Prompt Bank manifest")
    if manifest.get("manifest_sha256") != digest(manifest):
        raise CorruptFileError(f"{path}: manifest checksum mismatch (edited or truncated)")
    version = manifest.get("version")
    if not _is(version, (int,)) or version < 1:
        raise bad("version", f"got {version!r}, expected an integer >= 1")
    model = manifest.get("model")
    if not isinstance(model, dict):
        raise bad("model", f"got {model!r}, expected an object with name and hidden_size")
    if not isinstance(model.get("name"), str) or not model["name"]:
        raise bad("model.name", f"got {model.get('name')!r}, expected a non-empty string")
    if not _is(model.get("hidden_size"), (int,)) or model["hidden_size"] < 1:
        raise bad("model.hidden_size", f"got {model.get('hidden_size')!r}, expected an "
                                       "integer >= 1")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise bad("files", f"got {type(files).__name__}, expected an object path -> sha256")
    for rel, sha in files.items():
        if not (_INDEX_RE.match(rel) or (rel.startswith("prompts/") and rel.endswith(
                ".safetensors") and _ID_RE.match(rel[8:-12]) and ".." not in rel)):
            raise bad("files", f"{rel!r} is not a bank file (expected prompts/<id>.safetensors "
                               "or index/v<N>.<kind>.faiss inside the bank)")
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise bad(f"files[{rel!r}]", f"got {sha!r}, expected 64 hex digits")
    entries = manifest.get("entries")
    if not isinstance(entries, list):
        raise bad("entries", f"got {type(entries).__name__}, expected a list")
    for i, entry in enumerate(entries):
        _check_entry(entry, f"entries[{i}]", files, bad)
    indexes = manifest.get("indexes")
    if not isinstance(indexes, dict):
        raise bad("indexes", f"got {type(indexes).__name__}, expected an object kind -> path")
    for kind, rel in indexes.items():
        if kind not in FEATURE_KINDS:
            raise bad("indexes", f"{kind!r} is not a feature kind ({', '.join(FEATURE_KINDS)})")
        if not isinstance(rel, str) or not _INDEX_RE.match(rel) or rel not in files:
            raise bad(f"indexes.{kind}", f"{rel!r} is not an index file named in files")
    clusters = manifest.get("clusters")
    if clusters is not None:
        if not isinstance(clusters, dict) or set(clusters) != {"features", "medoids",
                                                               "members"}:
            raise bad("clusters", "expected null or an object with features, medoids, members")
        if not isinstance(clusters["medoids"], list) or not all(
                isinstance(m, str) for m in clusters["medoids"]):
            raise bad("clusters.medoids", "expected a list of entry ids")
        if not isinstance(clusters["members"], list) or not all(
                isinstance(g, list) and all(isinstance(m, str) for m in g)
                for g in clusters["members"]):
            raise bad("clusters.members", "expected a list of lists of entry ids")
    return manifest


def _check_entry(entry: Any, where: str, files: dict[str, str], bad) -> None:
    if not isinstance(entry, dict):
        raise bad(where, f"got {type(entry).__name__}, expected an object")
    for key in ENTRY_REQUIRED:
        if key not in entry:
            raise bad(where, f"no {key!r} field")
    for key, value in entry.items():
        if key not in ENTRY_TYPES:
            raise bad(f"{where}.{key}", "not an entry field")
        if not _is(value, ENTRY_TYPES[key]):
            raise bad(f"{where}.{key}", f"got {value!r:.60}, expected "
                                        f"{_type_name(ENTRY_TYPES[key])}")
    try:
        validate_id(entry["id"])
    except BadInputError as exc:
        raise bad(f"{where}.id", str(exc)) from None
    rel = f"prompts/{entry['id']}.safetensors"
    if files.get(rel) != entry["sha256"]:
        raise bad(where, f"its file {rel} is not in files with the entry's sha256")


def bank_path(root: Path, rel: str, named_by: str) -> Path:
    """`root/rel` if it stays inside the bank folder once symlinks are resolved; a path that
    leaves it (a symlinked prompts/ or file) is a corrupt bank: nothing outside is read,
    written or deleted."""
    path = root / rel
    real = Path(os.path.realpath(path))
    home = Path(os.path.realpath(root))
    if os.path.isabs(rel) or ".." in Path(rel).parts or not real.is_relative_to(home) \
            or real == home:
        raise CorruptFileError(f"{named_by}: {rel!r} resolves outside the bank folder "
                               f"{home} ({real})")
    return path


def leftovers(root: Path, files: dict[str, str]) -> list[Path]:
    """What an interrupted writer left: files in prompts/ and index/ that the manifest does not
    name, and the manifest's temp files. Only the names a writer writes: anything else in the
    folder (a user's notes, a job folder) is never a leftover, and no symlink is followed."""
    found = [root / name for name in _names(root) if name.startswith(f".{MANIFEST}.")
             and name.endswith(".tmp")]
    for folder in ("prompts", "index"):
        if not os.path.islink(root / folder):
            found += [root / folder / name for name in _names(root / folder)
                      if f"{folder}/{name}" not in files
                      and not _real_dir(root / folder / name)]
    return sorted(found)


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()
