"""Putting prompts into a bank: finished jobs, exported adapters, bare prompt files.

Features need the base model (behaviour) and the MiniLM encoder (task); both are computed
before the bank's lock is taken, so a slow add never blocks readers for long.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import time
from typing import Any, Callable

import numpy as np
import yaml

from ptctl.bank import cluster as clusters_mod
from ptctl.bank.search import selection_regret
from ptctl.bank.store import (FEATURE_KINDS, Bank, Entry, decode_prompt, encode_prompt,
                              sha256_bytes, slug_id, validate_id)
from ptctl.errors import BadInputError, CorruptFileError, PtctlError
from ptctl.jobs.spec import Target, TaskSpec

Progress = Callable[[str, int, int], None]
CURVE_POINTS = 16


@dataclass
class Candidate:
    """A prompt ready to be added: its entry (features still to compute) and tensor bytes."""

    entry: Entry
    data: bytes
    model_ref: str


def _downsample(curve: list[list[float]], points: int = CURVE_POINTS) -> list[list[float]]:
    if len(curve) <= points:
        return [list(map(float, p)) for p in curve]
    idx = np.unique(np.linspace(0, len(curve) - 1, points).round().astype(int))
    return [list(map(float, curve[i])) for i in idx]


def steps_to_target(target: str | None, eval_curve: list[list[float]]) -> int | None:
    """The first evaluated step that met `target` ('accuracy >= X' / 'loss <= X')."""
    if not target:
        return None
    try:
        goal = Target.parse(target)
    except ValueError:
        return None
    for row in eval_curve:
        if len(row) >= 3 and goal.reached({"accuracy": row[1], "loss": row[2]}):
            return int(row[0])
    return None


def _job_spec_task(folder: Path) -> dict[str, Any] | None:
    """The task section of the job's spec.yaml, when the result sits in a job folder."""
    for spec in (folder / "spec.yaml", folder.parent / "spec.yaml"):
        if spec.is_file():
            try:
                data = yaml.safe_load(spec.read_text(encoding="utf-8")) or {}
            except (yaml.YAMLError, UnicodeDecodeError):
                return None
            task = data.get("task") if isinstance(data, dict) else None
            return task if isinstance(task, dict) else None
    return None


def from_result(path: str | Path, entry_id: str | None = None) -> Candidate:
    """A finished job folder (holding result/) or an exported adapter folder."""
    from ptctl.tuning.prompt import ADAPTER_WEIGHTS, read_adapter

    path = Path(path)
    adapter = path / "result" if (path / "result" / ADAPTER_WEIGHTS).is_file() else path
    if not (adapter / ADAPTER_WEIGHTS).is_file():
        raise BadInputError(f"{path}: neither a finished job folder (result/{ADAPTER_WEIGHTS}) "
                            f"nor an exported adapter ({ADAPTER_WEIGHTS})")
    tensor, meta = read_adapter(adapter)
    where = str(adapter / ADAPTER_WEIGHTS)
    job_folder = adapter.parent if adapter.name == "result" else adapter
    if entry_id is None:
        entry_id = slug_id(job_folder.name)
    for key in ("model", "hidden_size", "virtual_tokens", "task"):
        if key not in meta:
            raise CorruptFileError(f"{adapter / 'ptctl_meta.json'}: no {key!r} field")
    import torch

    if tensor.dtype != torch.float32:
        tensor = tensor.float()
    data = encode_prompt(tensor)
    decode_prompt(data, where, int(meta["virtual_tokens"]), int(meta["hidden_size"]),
                  error=BadInputError)
    eval_curve = [list(map(float, r)) for r in meta.get("eval_curve") or []]
    losses = meta.get("loss_curve") or []
    summary = {}
    if losses:
        values = [float(r[1]) for r in losses]
        summary = {"first": values[0], "last": values[-1], "min": min(values),
                   "curve": _downsample(losses)}
    task_spec = _job_spec_task(job_folder)
    entry = Entry(
        id=validate_id(entry_id), task=str(meta["task"]), model=str(meta["model"]),
        virtual_tokens=int(meta["virtual_tokens"]), hidden_size=int(meta["hidden_size"]),
        sha256=sha256_bytes(data), labels=list(meta.get("labels") or []),
        label_words=list(meta.get("label_words") or []),
        template=str(meta.get("template") or "{text}\nAnswer:"), task_spec=task_spec,
        job=meta.get("job"), target=meta.get("target"), final_metric=meta.get("final_metric"),
        steps=int(meta.get("steps") or 0),
        steps_to_target=steps_to_target(meta.get("target"), eval_curve),
        loss_summary=summary, eval_curve=eval_curve, origin=str(adapter.resolve()))
    return Candidate(entry, data, str(meta.get("model_ref") or meta["model"]))


def from_prompt_file(path: str | Path, spec, entry_id: str | None = None) -> Candidate:
    """A bare prompt .safetensors (key "prompt") described by a job spec (model and task)."""
    from ptctl.tuning.models import model_name

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ({exc.strerror})") from None
    tensor = decode_prompt(raw, str(path), spec.prompt.virtual_tokens, error=BadInputError)
    data = encode_prompt(tensor)
    entry = Entry(
        id=validate_id(entry_id or slug_id(path.stem)), task=spec.task.source,
        model=model_name(spec.model), virtual_tokens=int(tensor.shape[0]),
        hidden_size=int(tensor.shape[1]), sha256=sha256_bytes(data),
        label_words=list(spec.task.label_words.values()), template=spec.task.template,
        task_spec=_task_dict(spec.task), job=spec.name, target=str(spec.target),
        origin=str(path.resolve()))
    return Candidate(entry, data, spec.model)


def _task_dict(task: TaskSpec) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(task)


# --- features --------------------------------------------------------------------------------

def _task_texts(entry: Entry, tokenizer) -> tuple[list[str], list[str]]:
    """Sample texts and label words of an entry's task (metadata only when data is gone)."""
    from ptctl.bank.features import scoring_examples

    if entry.task_spec:
        try:
            _, texts, words, _ = scoring_examples(TaskSpec(**entry.task_spec), tokenizer, 4)
            return texts, words
        except (PtctlError, TypeError, ValueError):
            pass
    words = entry.label_words or entry.labels or [entry.task]
    return [entry.template.replace("{text}", entry.task)], words


def compute_features(candidates: list[Candidate], model, tokenizer, encoder,
                     progress: Progress | None = None) -> dict[str, np.ndarray]:
    """kind -> [len(candidates), dim] for the new candidates."""
    from ptctl.bank.features import behaviour_features

    behaviour, task = [], []
    for i, cand in enumerate(candidates):
        tensor = decode_prompt(cand.data, cand.entry.id)
        behaviour.append(behaviour_features(model, tokenizer, tensor.unsqueeze(0))[0])
        texts, words = _task_texts(cand.entry, tokenizer)
        task.append(encoder.task_embedding(texts, words))
        if progress:
            progress("features", i + 1, len(candidates))
    return {"behaviour": np.stack(behaviour), "task": np.stack(task)}


def add_candidates(bank: Bank, candidates: list[Candidate], *, model=None, tokenizer=None,
                   progress: Progress | None = None) -> list[str]:
    """Add (or replace, by id) entries in one published version; returns their ids.

    The bank keeps the feature kind it has chosen (behaviour for a new bank); `select_features`
    re-measures the choice."""
    from ptctl.bank.features import PROBE_VERSION, TaskEncoder
    from ptctl.tuning.models import load_base_model, model_identity

    if not candidates:
        return []
    ids = [c.entry.id for c in candidates]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise BadInputError(f"entry ids given twice: {', '.join(dup)}")
    name = candidates[0].entry.model
    for c in candidates:
        if c.entry.model != name:
            raise BadInputError(f"{c.entry.origin}: prompt for model {c.entry.model}, but this "
                                f"batch is for {name}: add one model at a time")
    if model is None:
        model, tokenizer = load_base_model(candidates[0].model_ref)
    identity = model_identity(candidates[0].model_ref, model)
    if identity.name != name:
        raise BadInputError(f"{candidates[0].entry.origin}: prompt for model {name}, but "
                            f"{candidates[0].model_ref} is {identity.name}")
    for c in candidates:
        if c.entry.hidden_size != identity.hidden_size:
            raise BadInputError(f"{c.entry.origin}: hidden size {c.entry.hidden_size} does not "
                                f"match model {name} ({identity.hidden_size})")
    new_features = compute_features(candidates, model, tokenizer, TaskEncoder.shared(), progress)
    with bank.writing() as writer:
        current = writer.current
        model_rec = {"name": name, "hidden_size": identity.hidden_size,
                     "num_layers": identity.num_layers, "vocab_size": identity.vocab_size,
                     "ref": candidates[0].model_ref}
        if current is not None:
            have = current.manifest["model"]
            if have["name"] != name or have["hidden_size"] != identity.hidden_size:
                raise BadInputError(f"{bank.root}: bank is for model {have['name']} (hidden "
                                    f"{have['hidden_size']}), not {name}")
            if current.manifest.get("probe_version") != PROBE_VERSION:
                raise CorruptFileError(f"{bank.manifest_path}: behaviour features from another "
                                       "probe set; rebuild the bank")
            model_rec = have
        replaced = set(ids)
        keep = [i for i, e in enumerate(current.entries) if e.id not in replaced] if current \
            else []
        entries = [current.entries[i] for i in keep] + [c.entry for c in candidates]
        features = {}
        for kind in FEATURE_KINDS:
            old = current.features[kind][keep] if current and kind in current.features else \
                np.zeros((0, new_features[kind].shape[1]), dtype=np.float32)
            features[kind] = np.concatenate([old, new_features[kind]]).astype(np.float32)
        extra = {"probe_version": PROBE_VERSION,
                 "selection": current.manifest.get("selection") if current else None}
        kind = (extra["selection"] or {}).get("chosen", "behaviour")
        built = clusters_mod.cluster([e.id for e in entries], features[kind], kind)
        writer.publish(model_rec, entries, {c.entry.id: c.data for c in candidates}, features,
                       built, extra)
    return ids


def add_from_result(bank_dir: str | Path, result_dir: str | Path) -> str:
    """Add a finished job's prompt (its folder or its result/) to its model's bank.

    Idempotent: the entry id is the job id, so a second call for the same job replaces the
    entry rather than adding a duplicate (and does nothing when the prompt is unchanged).
    """
    candidate = from_result(result_dir)
    bank = Bank.for_model(bank_dir, candidate.entry.model)
    if bank.exists():
        snap = bank.snapshot(features=False)
        same = [e for e in snap.entries if e.id == candidate.entry.id]
        if same and same[0].sha256 == candidate.entry.sha256:
            return candidate.entry.id
    return add_candidates(bank, [candidate])[0]


def remove(bank: Bank, entry_ids: list[str]) -> None:
    """Drop entries (their files go once the new manifest is in); re-cluster the rest."""
    for eid in entry_ids:
        validate_id(eid)
    with bank.writing() as writer:
        current = writer.current
        if current is None:
            raise BadInputError(f"{bank.root}: no bank here")
        known = {e.id for e in current.entries}
        missing = [e for e in entry_ids if e not in known]
        if missing:
            from ptctl.errors import NotFoundError

            raise NotFoundError(f"bank {bank.root}: no entry {', '.join(map(repr, missing))}")
        keep = [i for i, e in enumerate(current.entries) if e.id not in set(entry_ids)]
        entries = [current.entries[i] for i in keep]
        features = {k: m[keep] for k, m in current.features.items()}
        kind = (current.manifest.get("selection") or {}).get("chosen", "behaviour")
        built = clusters_mod.cluster([e.id for e in entries], features[kind], kind) \
            if entries else None
        extra = {k: current.manifest.get(k) for k in ("probe_version", "selection")}
        writer.publish(current.manifest["model"], entries, {}, features if entries else {},
                       built, extra)



def select_features(bank: Bank, model, tokenizer, progress: Progress | None = None
                    ) -> dict[str, Any]:
    """Measure which feature kind's clusters select better, keep it, and record why.

    Every entry whose task is known is scored as a new task against all other entries (a
    leave-one-out loss matrix); each kind's two-layer pick, searched as a query searches
    (nearest entries by task embedding first), is compared with the exhaustive pick (regret,
    in label-word loss). Lower mean regret wins; ties go to behaviour.
    """
    from ptctl.bank.query import scored_matrix

    snap = bank.snapshot()
    tasks, own = [], []
    for j, e in enumerate(snap.entries):
        if e.task_spec:
            try:
                tasks.append(TaskSpec(**e.task_spec))
                own.append(j)
            except (TypeError, ValueError):
                continue
    if len(tasks) < 3:
        return {"chosen": "behaviour", "reason": "fewer than 3 entries with a known task"}
    started = time.perf_counter()
    losses = scored_matrix(snap, tasks, model, tokenizer, progress=progress)
    ids = [e.id for e in snap.entries]
    record: dict[str, Any] = {"measured_on": len(tasks), "version": snap.version}
    built = {}
    for kind in FEATURE_KINDS:
        built[kind] = clusters_mod.cluster(ids, snap.features[kind], kind)
        record[kind] = selection_regret(
            ids, losses, own, built[kind], task_features=snap.features.get("task"),
            placement=clusters_mod.prepared_features(snap.features[kind], kind))
    chosen = min(FEATURE_KINDS, key=lambda k: (round(record[k]["mean_regret"], 4),
                                               record[k]["mean_candidates"], k != "behaviour"))
    record["chosen"] = chosen
    record["seconds"] = round(time.perf_counter() - started, 1)
    with bank.writing() as writer:
        current = writer.current
        if current.version != snap.version:  # changed meanwhile: cluster what is there now
            built[chosen] = clusters_mod.cluster([e.id for e in current.entries],
                                                 current.features[chosen], chosen)
        extra = {"probe_version": current.manifest.get("probe_version"), "selection": record}
        writer.publish(current.manifest["model"], current.entries, {}, current.features,
                       built[chosen], extra)
    return record
