"""The speed record: what finished sessions measured here, so that the next job of the same
shape is planned at a measured rate instead of a guess.

`<home>/speeds.json` holds one entry per shape: model, world size, global and micro batch,
max_length, virtual tokens and device (the cluster profile and partition it ran on), with

    train_s       seconds per training step, evaluations and saves taken out
    eval_s        seconds per evaluation;  checkpoint_s: seconds per checkpoint save
    overhead_s    seconds from submit to the end not spent in the training loop (launch,
                  imports, model load, first evaluation); only from a job run in one session
    runs, updated

Each new session is averaged in (the newer counts half). A job's rate is priced from its own
eval_every and checkpoint_every (`rate_of`), so a shape that evaluates more often is slower.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptctl.fsutil import atomic_write_json, file_lock
from ptctl.jobs.progress import Progress

FILE = "speeds.json"
MAX_ENTRIES = 500  # the oldest go first: the file stays small
KEEP_NEW = 0.5     # weight of the newest session in an entry's running average


@dataclass
class SpeedEstimate:
    """A new job's expected steps/s per world size, and its launch overhead if known."""

    rates: dict[int, float]
    overhead_s: float | None
    exact: bool  # same batch sizes as a recorded run (else scaled from the nearest batch)


def device_key(profile: Any) -> str:
    """Where a job runs, as far as speed goes: the profile and its partition."""
    return f"{profile.name}/{profile.partition or '-'}"


def _shape(spec: dict[str, Any], device: str) -> dict[str, Any]:
    t = spec["training"]
    return {"model": spec["model"], "global_batch": t["global_batch_size"],
            "micro_batch": t["micro_batch_size"], "max_length": spec["task"]["max_length"],
            "virtual_tokens": spec["prompt"]["virtual_tokens"], "device": device}


def _key(shape: dict[str, Any], world_size: int) -> str:
    return json.dumps([shape[k] for k in sorted(shape)] + [world_size])


def load(home: str | Path) -> dict[str, dict[str, Any]]:
    """The entries; an unreadable file reads as empty (it is a cache of measurements)."""
    try:
        data = json.loads((Path(home) / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def rate_of(entry: dict[str, Any], training: dict[str, Any], batch_scale: float = 1.0) -> float:
    """All-inclusive steps/s of a job with `training`'s eval and checkpoint periods."""
    per_step = (entry["train_s"] * batch_scale
                + (entry.get("eval_s") or 0.0) / training["eval_every"]
                + (entry.get("checkpoint_s") or 0.0) / training["checkpoint_every"])
    return 1.0 / per_step


def record_session(home: str | Path, spec: dict[str, Any], device: str, progress: Progress,
                   created_at: float | None) -> dict[str, Any] | None:
    """Fold one ended session's progress into the record; the shape's entry after it (None
    when the session measured nothing). `created_at` (the job's submit time) is given only
    when the job ran in this one session: its overhead is then known."""
    if not progress.steps_per_s or not progress.world_size:
        return None
    steps = progress.step - (progress.resumed_from_step or 0)
    if steps < 1:
        return None
    t = spec["training"]
    per_step = 1.0 / progress.steps_per_s
    eval_s, save_s = progress.eval_s or 0.0, progress.checkpoint_s or 0.0
    # What is left once evaluations and saves are taken out, never below a tenth of the step.
    train_s = max(0.1 * per_step, per_step - eval_s / t["eval_every"]
                  - save_s / t["checkpoint_every"])
    new: dict[str, Any] = {"train_s": train_s, "eval_s": eval_s, "checkpoint_s": save_s}
    if created_at is not None and progress.updated is not None:
        new["overhead_s"] = max(0.0, progress.updated - created_at - steps * per_step)
    shape = _shape(spec, device)
    path = Path(home) / FILE
    with file_lock(Path(home) / "speeds.lock"):
        entries = load(home)
        key = _key(shape, progress.world_size)
        old = entries.get(key)
        entry = dict(shape, world_size=progress.world_size, runs=1, overhead_s=None)
        if old:
            entry.update(old, runs=old.get("runs", 1) + 1)
        for name, value in new.items():
            before = old.get(name) if old else None
            entry[name] = value if before is None else (1 - KEEP_NEW) * before + KEEP_NEW * value
        entry["updated"] = time.time()
        entries[key] = entry
        if len(entries) > MAX_ENTRIES:
            for stale in sorted(entries, key=lambda k: entries[k].get("updated", 0))[
                    :len(entries) - MAX_ENTRIES]:
                del entries[stale]
        atomic_write_json(path, entries)
    return entry


def estimate(home: str | Path, spec: dict[str, Any], device: str) -> SpeedEstimate | None:
    """The rates the record gives a new job: entries of the same model, lengths and device,
    at its batch sizes when recorded, else scaled from the nearest global batch (time per
    step in proportion to it). None when nothing comparable ran here."""
    shape = _shape(spec, device)
    same = {k: shape[k] for k in ("model", "max_length", "virtual_tokens", "device")}
    found = [e for e in load(home).values() if isinstance(e, dict) and "train_s" in e
             and all(e.get(k) == v for k, v in same.items())]
    if not found:
        return None
    exact = [e for e in found if e.get("global_batch") == shape["global_batch"]
             and e.get("micro_batch") == shape["micro_batch"]]
    if not exact:
        nearest = min(found, key=lambda e: abs(math.log(e["global_batch"] / shape["global_batch"])))
        exact_batch = [e for e in found if e["global_batch"] == nearest["global_batch"]]
    chosen = exact or exact_batch
    rates = {}
    for entry in chosen:
        scale = shape["global_batch"] / entry["global_batch"]
        rates[int(entry["world_size"])] = rate_of(entry, spec["training"], scale)
    overheads = [e["overhead_s"] for e in chosen if e.get("overhead_s") is not None]
    return SpeedEstimate(rates, sum(overheads) / len(overheads) if overheads else None,
                         bool(exact))
