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
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ptctl.errors import BadInputError, CorruptFileError, NotFoundError, bounded
from ptctl.fsutil import atomic_write_bytes, file_lock, utcnow

FORMAT = 1
MANIFEST = "manifest.json"
PROMPT_KEY = "prompt"
FEATURE_KINDS = ("behaviour", "task")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")


def validate_id(entry_id: str) -> str:
    """Entry ids become file names: lower-case letters, digits, '.', '_', '-'; no path parts."""
    if not isinstance(entry_id, str) or not _ID_RE.match(entry_id) or ".." in entry_id:
        raise BadInputError(f"entry id {entry_id!r}: expected 1-80 lower-case letters, digits, "
                            "'.', '_' or '-', starting with a letter or digit (no '..' or '/')")
    return entry_id


def slug_id(text: str) -> str:
    """A valid entry id made from a free-form name (a job id, a folder name)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    slug = re.sub(r"\.{2,}", ".", slug)[:80]
    return validate_id(slug or "prompt")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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

    @property
    def convergence_steps(self) -> int:
        """Steps this prompt's own job needed: to its target, else all it ran."""
        return self.steps_to_target if self.steps_to_target is not None else max(1, self.steps)

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
    path = root / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptFileError(f"{path}: missing (named by {root / MANIFEST})") from None
    if sha256_bytes(data) != sha:
        raise CorruptFileError(f"{path}: checksum mismatch (the file changed after it was "
                               f"written; expected sha256 {sha[:12]}..)")
    return data


def _write_shared(path: Path, data: bytes) -> None:
    """Atomic write, then world-readable: a bank on a shared filesystem serves every user."""
    atomic_write_bytes(path, data)
    os.chmod(path, 0o644)


def _manifest_digest(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


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
        return self.root / ".lock"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    # --- reading ------------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any]:
        path = self.manifest_path
        if not path.is_file():
            raise NotFoundError(f"{self.root}: no Prompt Bank here (no {MANIFEST}); build one "
                                "with `ptctl bank build`")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CorruptFileError(f"{path}: not a version-{FORMAT} Prompt Bank manifest")
        if manifest.get("manifest_sha256") != _manifest_digest(manifest):
            raise CorruptFileError(f"{path}: manifest checksum mismatch (edited or truncated)")
        return manifest

    def snapshot(self, features: bool = True) -> Snapshot:
        """The current version, whole: manifest, entries, feature matrices, clusters."""
        with file_lock(self.lock_path, shared=True):
            return self._snapshot(features)

    def _snapshot(self, features: bool = True) -> Snapshot:
        manifest = self.read_manifest()
        try:
            entries = [Entry(**e) for e in manifest["entries"]]
            clusters = Clusters(**manifest["clusters"]) if manifest.get("clusters") else None
        except (TypeError, ValueError, KeyError) as exc:
            raise CorruptFileError(f"{self.manifest_path}: bad entry ({exc})") from None
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            raise CorruptFileError(f"{self.manifest_path}: duplicate entry ids")
        mats: dict[str, np.ndarray] = {}
        if features:
            for kind, rel in manifest.get("indexes", {}).items():
                mat = _index_matrix(_read_checked(self.root, rel, manifest["files"][rel]),
                                    str(self.root / rel))
                if mat.shape[0] != len(entries):
                    raise CorruptFileError(f"{self.root / rel}: {mat.shape[0]} rows for "
                                           f"{len(entries)} entries")
                mats[kind] = mat
        return Snapshot(self.root, manifest, entries, mats, clusters)

    # --- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self) -> Iterator["Writer"]:
        """Exclusive access; the writer's `publish` commits a new version."""
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.lock_path):
            yield Writer(self, self._snapshot() if self.exists() else None)


class Writer:
    """Changes to one bank version, made under the exclusive lock."""

    def __init__(self, bank: Bank, current: Snapshot | None):
        self.bank = bank
        self.current = current

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
                _write_shared(root / e.file, tensors[e.id])
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
            _write_shared(root / rel, data)
            files[rel] = sha256_bytes(data)
            indexes[kind] = rel
        manifest = {
            "format": FORMAT, "version": version, "model": model, "updated": utcnow(),
            "entries": [e.to_dict() for e in entries], "files": files, "indexes": indexes,
            "clusters": asdict(clusters) if clusters else None,
        }
        manifest.update(extra or {})
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        _write_shared(self.bank.manifest_path, (json.dumps(manifest, indent=2, sort_keys=True)
                                                + "\n").encode("utf-8"))
        for rel in set(old_files) - set(files):
            (root / rel).unlink(missing_ok=True)
        self.current = self.bank._snapshot()
        return self.current


# --- checks ----------------------------------------------------------------------------------

def verify(bank: Bank) -> list[str]:
    """Every problem found in a bank, each naming its file; empty when the bank is whole."""
    problems: list[str] = []
    with file_lock(bank.lock_path, shared=True):
        try:
            snap = bank._snapshot()
        except (CorruptFileError, NotFoundError) as exc:
            return [str(exc)]
        for e in snap.entries:
            try:
                snap.prompt(e)
            except CorruptFileError as exc:
                problems.append(str(exc))
            if e.model != snap.manifest["model"]["name"] or e.hidden_size != snap.manifest[
                    "model"]["hidden_size"]:
                problems.append(f"{bank.root / e.file}: entry {e.id} is for model {e.model} "
                                f"(hidden {e.hidden_size}), not this bank's")
        if snap.clusters:
            ids = {e.id for e in snap.entries}
            listed = [m for group in snap.clusters.members for m in group]
            if sorted(listed) != sorted(ids):
                problems.append(f"{bank.manifest_path}: clusters do not cover the entries "
                                "exactly once")
        named = set(snap.manifest["files"]) | {MANIFEST, ".lock"}
        for path in sorted(bank.root.rglob("*")):
            rel = path.relative_to(bank.root).as_posix()
            if path.is_file() and rel not in named and not path.name.endswith(".tmp"):
                problems.append(f"{path}: not named by the manifest (left over by an "
                                "interrupted write: safe to delete)")
    return problems
