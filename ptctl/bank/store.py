"""The Prompt Bank on disk: one bank per base model, published whole by one atomic rename.

    <bank_dir>/<model name>/
        manifest.json                  the commit point: entries, clusters, file checksums
        prompts/<entry id>.safetensors one tensor "prompt" [virtual_tokens, hidden], float32
        index/v<N>.behaviour.faiss     behaviour features, row i = entries[i] (IndexFlatL2)
        index/v<N>.task.faiss          task embeddings, normalised, row i = entries[i] (IndexFlatIP)
        .lock                          flock: writers exclusive, readers shared

A write (add, remove, rebuild) prepares every new file under a new name, then replaces
manifest.json atomically, then deletes what the new manifest no longer names. Readers hold the
shared lock while they read the manifest and the files it names, so they always see one whole
version. Every file is checked against its sha256 in the manifest when read; the manifest
carries a checksum of its own body, so a hand-edited or truncated manifest is refused too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from ptctl.bank import manifest as manifest_mod
from ptctl.bank.manifest import (FEATURE_KINDS, LOCK, MANIFEST, bank_path, leftovers,
                                 sha256_bytes, validate_id)
from ptctl.errors import BadInputError, CorruptFileError, NotFoundError, PtctlError, bounded
from ptctl.fsutil import atomic_write_bytes, file_lock, utcnow

PROMPT_KEY = "prompt"
T = TypeVar("T")


def slug_id(text: str) -> str:
    """A valid entry id made from a free-form name (a job id, a folder name)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    slug = re.sub(r"\.{2,}", ".", slug)[:80]
    return validate_id(slug or "prompt")


@dataclass
class Entry:
    """One tuned prompt and what is known about how it was made and how fast it converged."""

    id: str
    task: str                              # source task (packaged name or file path)
    model: str
    virtual_tokens: int
    hidden_size: int
    sha256: str
    labels: list[str] = field(default_factory=list)
    label_words: list[str] = field(default_factory=list)
    template: str = "{text}\nAnswer:"
    task_spec: dict[str, Any] | None = None  # the TaskSpec fields, when known (re-scoring)
    job: str | None = None
    target: str | None = None
    final_metric: dict[str, float] | None = None
    steps: int = 0                         # steps the source job ran
    steps_to_target: int | None = None     # first evaluation that met the source's target
    loss_summary: dict[str, Any] = field(default_factory=dict)
    eval_curve: list[list[float]] = field(default_factory=list)
    origin: str | None = None
    added: str = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        validate_id(self.id)
        for name in ("virtual_tokens", "hidden_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: got {value!r}, expected an integer >= 1")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps: got {self.steps!r}, expected an integer >= 0")
        if self.steps_to_target is not None and (not isinstance(self.steps_to_target, int)
                                                 or self.steps_to_target < 0):
            raise ValueError(f"steps_to_target: got {self.steps_to_target!r}, expected an "
                             "integer >= 0 or null")
        if not re.fullmatch(r"[0-9a-f]{64}", str(self.sha256)):
            raise ValueError(f"sha256: got {self.sha256!r}, expected 64 hex digits")

    @property
    def file(self) -> str:
        return f"prompts/{self.id}.safetensors"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Clusters:
    """Layer 1 of the bank: one medoid (a real entry) per cluster, and the members of each."""

    features: str
    medoids: list[str]
    members: list[list[str]]

    def __post_init__(self) -> None:
        if self.features not in FEATURE_KINDS:
            raise ValueError(f"features: got {self.features!r}, expected one of "
                             f"{', '.join(FEATURE_KINDS)}")
        if len(self.medoids) != len(self.members):
            raise ValueError(f"medoids: {len(self.medoids)} medoids for {len(self.members)} "
                             "clusters")
        for medoid, group in zip(self.medoids, self.members):
            if medoid not in group:
                raise ValueError(f"medoids: {medoid!r} is not a member of its own cluster")


def encode_prompt(tensor) -> bytes:
    """The safetensors bytes of a prompt: key "prompt", float32, contiguous."""
    import torch
    from safetensors.torch import save

    return save({PROMPT_KEY: tensor.detach().to(torch.float32).contiguous().cpu()})


def decode_prompt(data: bytes, where: str, virtual_tokens: int | None = None,
                  hidden_size: int | None = None, error=CorruptFileError):
    """A prompt tensor from safetensors bytes; any other content is refused naming `where`."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise error(f"{where}: not a safetensors file ({bounded(exc)})") from None
    if list(tensors) != [PROMPT_KEY]:
        raise error(f"{where}: expected one tensor named {PROMPT_KEY!r}, found "
                    f"{sorted(tensors) or 'none'}")
    tensor = tensors[PROMPT_KEY]
    if tensor.dtype != torch.float32:
        raise error(f"{where}: dtype {str(tensor.dtype).replace('torch.', '')}, expected float32")
    if tensor.dim() != 2:
        raise error(f"{where}: shape {tuple(tensor.shape)}, expected [virtual_tokens, hidden]")
    expected = (virtual_tokens or tensor.shape[0], hidden_size or tensor.shape[1])
    if tuple(tensor.shape) != expected:
        raise error(f"{where}: shape {tuple(tensor.shape)}, expected {expected}")
    if not torch.isfinite(tensor).all():
        raise error(f"{where}: holds NaN or infinite values")
    return tensor


def _index_bytes(matrix: np.ndarray, metric: str) -> bytes:
    import faiss

    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    index = faiss.IndexFlatIP(matrix.shape[1]) if metric == "ip" else faiss.IndexFlatL2(
        matrix.shape[1])
    index.add(matrix)
    return faiss.serialize_index(index).tobytes()


def _index_matrix(data: bytes, where: str) -> np.ndarray:
    import faiss

    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8).copy())
    except RuntimeError as exc:
        raise CorruptFileError(f"{where}: not a faiss index ({bounded(exc)})") from None
    return index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros(
        (0, index.d), dtype=np.float32)


@dataclass
class Snapshot:
    """One whole version of a bank as read under the shared lock."""

    root: Path
    manifest: dict[str, Any]
    entries: list[Entry]
    features: dict[str, np.ndarray]       # kind -> [len(entries), dim]
    clusters: Clusters | None

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    def entry(self, entry_id: str) -> Entry:
        for e in self.entries:
            if e.id == entry_id:
                return e
        raise NotFoundError(f"bank {self.root}: no entry {entry_id!r}")

    def prompt(self, entry: Entry):
        """The entry's tensor, read and checked against the manifest's checksum."""
        return decode_prompt(_read_checked(self.root, entry.file, entry.sha256), str(
            self.root / entry.file), entry.virtual_tokens, entry.hidden_size)

    def prompt_bytes(self, entry: Entry) -> bytes:
        data = _read_checked(self.root, entry.file, entry.sha256)
        decode_prompt(data, str(self.root / entry.file), entry.virtual_tokens, entry.hidden_size)
        return data


def _read_checked(root: Path, rel: str, sha: str) -> bytes:
    path = bank_path(root, rel, f"{root / MANIFEST}: files")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptFileError(f"{path}: missing (named by {root / MANIFEST})") from None
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read ({exc.strerror})") from None
    if sha256_bytes(data) != sha:
        raise CorruptFileError(f"{path}: checksum mismatch (the file changed after it was "
                               f"written; expected sha256 {sha[:12]}..)")
    return data


def _write_shared(root: Path, rel: str, data: bytes) -> None:
    """Atomic write inside the bank, then world-readable: a bank on a shared filesystem serves
    every user."""
    path = bank_path(root, rel, f"{root / rel}: writing")
    atomic_write_bytes(path, data)
    os.chmod(path, 0o644)


class Bank:
    """A bank folder. Reading needs no model; writing takes precomputed features."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def for_model(cls, bank_dir: str | Path, model: str) -> "Bank":
        if not model or "/" in model or model.startswith("."):
            raise BadInputError(f"model name {model!r}: cannot name a bank folder")
        return cls(Path(bank_dir) / model)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    # --- reading ------------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any]:
        """The manifest, its checksum, structure, types and paths checked (manifest.py)."""
        path = self.manifest_path
        if not path.is_file():
            raise NotFoundError(f"{self.root}: no Prompt Bank here (no {MANIFEST}); build one "
                                "with `ptctl bank build`")
        try:
            data = bank_path(self.root, MANIFEST, str(path)).read_text(encoding="utf-8")
            manifest = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"{path}: not valid JSON ({bounded(exc)})") from None
        except OSError as exc:
            raise CorruptFileError(f"{path}: cannot read ({exc.strerror})") from None
        manifest_mod.check(manifest, path)
        for rel in manifest["files"]:
            bank_path(self.root, rel, f"{path}: files")
        return manifest

    def reading(self, read: Callable[[], T]) -> T:
        """`read()` under the shared lock. Readers create nothing: with no lock file (no bank
        yet, or one no writer has touched in place, like the seed bank shipped read-only) they
        read without a lock. Writers create the lock file before changing anything, so when it
        is still absent after the read, that read saw one version; else it is read again under
        the lock."""
        with file_lock(self.lock_path, shared=True, create=False) as locked:
            if locked:
                return read()
            try:
                result = read()
            except PtctlError:
                if not os.path.lexists(self.lock_path):
                    raise
            else:
                if not os.path.lexists(self.lock_path):
                    return result
        with file_lock(self.lock_path, shared=True, create=False):
            return read()

    def snapshot(self, features: bool = True) -> Snapshot:
        """The current version, whole: manifest, entries, feature matrices, clusters."""
        return self.reading(lambda: self._snapshot(features))

    def _snapshot(self, features: bool = True) -> Snapshot:
        manifest = self.read_manifest()
        try:
            entries = []
            for i, e in enumerate(manifest["entries"]):
                where = f"entries[{i}]"
                entries.append(Entry(**e))
            where = "clusters"
            clusters = Clusters(**manifest["clusters"]) if manifest["clusters"] else None
        except (TypeError, ValueError, PtctlError) as exc:
            raise CorruptFileError(f"{self.manifest_path}: {where}: {bounded(exc)}") from None
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            raise CorruptFileError(f"{self.manifest_path}: entries: duplicate entry ids")
        mats: dict[str, np.ndarray] = {}
        if features:
            for kind, rel in manifest["indexes"].items():
                mat = _index_matrix(_read_checked(self.root, rel, manifest["files"][rel]),
                                    str(self.root / rel))
                if mat.shape[0] != len(entries):
                    raise CorruptFileError(f"{self.root / rel}: {mat.shape[0]} rows for "
                                           f"{len(entries)} entries")
                mats[kind] = mat
        return Snapshot(self.root, manifest, entries, mats, clusters)

    def leftovers(self, manifest: dict[str, Any]) -> list[Path]:
        """Files an interrupted writer left: all the bank folder holds beyond `manifest`."""
        return leftovers(self.root, manifest["files"])

    # --- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self) -> Iterator["Writer"]:
        """Exclusive access; the writer's `publish` commits a new version. What an interrupted
        writer left is deleted first, once the current manifest has passed its checks (with no
        manifest yet, nothing is: the folder may not be ptctl's)."""
        with file_lock(self.lock_path):
            current = self._snapshot() if self.exists() else None
            removed = self.leftovers(current.manifest) if current else []
            for path in removed:
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    raise PtctlError(f"{path}: cannot delete this leftover ({exc.strerror})"
                                     ) from None
            yield Writer(self, current, removed)


class Writer:
    """Changes to one bank version, made under the exclusive lock."""

    def __init__(self, bank: Bank, current: Snapshot | None, removed: list[Path]):
        self.bank = bank
        self.current = current
        self.removed = removed  # leftovers of interrupted writers, deleted on the way in

    def publish(self, model: dict[str, Any], entries: list[Entry], tensors: dict[str, bytes],
                features: dict[str, np.ndarray], clusters: Clusters | None,
                extra: dict[str, Any] | None = None) -> Snapshot:
        """Write new prompt files and indexes, swap the manifest in, delete what it dropped.

        `tensors` holds the safetensors bytes of new or changed entries only; the others keep
        their files. `features[kind]` rows follow `entries`.
        """
        root = self.bank.root
        version = (self.current.version + 1) if self.current else 1
        old_files = dict(self.current.manifest["files"]) if self.current else {}
        files: dict[str, str] = {}
        for e in entries:
            if e.id in tensors:
                if sha256_bytes(tensors[e.id]) != e.sha256:
                    raise ValueError(f"entry {e.id}: sha256 does not match its tensor bytes")
                _write_shared(root, e.file, tensors[e.id])
            elif old_files.get(e.file) != e.sha256:
                raise ValueError(f"entry {e.id}: no tensor given and no stored file")
            files[e.file] = e.sha256
        indexes = {}
        for kind, mat in features.items():
            if mat.shape[0] != len(entries):
                raise ValueError(f"features.{kind}: {mat.shape[0]} rows for {len(entries)} "
                                 "entries")
            rel = f"index/v{version}.{kind}.faiss"
            data = _index_bytes(mat, "ip" if kind == "task" else "l2")
            _write_shared(root, rel, data)
            files[rel] = sha256_bytes(data)
            indexes[kind] = rel
        manifest = {
            "format": manifest_mod.FORMAT, "version": version, "model": model,
            "updated": utcnow(), "entries": [e.to_dict() for e in entries], "files": files,
            "indexes": indexes, "clusters": asdict(clusters) if clusters else None,
        }
        manifest.update(extra or {})
        manifest["manifest_sha256"] = manifest_mod.digest(manifest)
        _write_shared(root, MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True)
                                       + "\n").encode("utf-8"))
        for rel in set(old_files) - set(files):
            bank_path(root, rel, f"{self.bank.manifest_path}: files").unlink(missing_ok=True)
        self.current = self.bank._snapshot()
        return self.current


# --- checks ----------------------------------------------------------------------------------

def verify(bank: Bank) -> list[str]:
    """Every problem found in a bank, each naming its file; empty when the bank is whole."""
    return bank.reading(lambda: _problems(bank))


def _problems(bank: Bank) -> list[str]:
    try:
        snap = bank._snapshot()
    except (CorruptFileError, NotFoundError) as exc:
        return [str(exc)]
    problems: list[str] = []
    model = snap.manifest["model"]
    for e in snap.entries:
        try:
            snap.prompt(e)
        except CorruptFileError as exc:
            problems.append(str(exc))
        if e.model != model["name"] or e.hidden_size != model["hidden_size"]:
            problems.append(f"{bank.root / e.file}: entry {e.id} is for model {e.model} "
                            f"(hidden {e.hidden_size}), not this bank's")
    if snap.clusters:
        listed = [m for group in snap.clusters.members for m in group]
        if sorted(listed) != sorted(e.id for e in snap.entries):
            problems.append(f"{bank.manifest_path}: clusters do not cover the entries "
                            "exactly once")
    for path in bank.leftovers(snap.manifest):
        problems.append(f"{path}: not named by the manifest (left over by an interrupted "
                        "write; `ptctl bank verify --repair` deletes it)")
    return problems


def repair(bank: Bank) -> list[str]:
    """Delete what interrupted writers left, as the next writer would; the paths deleted.
    A bank whose manifest fails its checks is left untouched (a CorruptFileError)."""
    if not bank.exists():
        bank.read_manifest()  # the NotFoundError, before the writer creates anything
    with bank.writing() as writer:
        return [str(p) for p in writer.removed]
