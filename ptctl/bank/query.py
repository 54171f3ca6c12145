"""Choosing a new job's initial prompt: the two-layer search, or all entries (--exhaustive).

A candidate's score is its rank-classification loss on a few samples of the new task: the
cross-entropy of each sample's label among the task's label words, read after that prompt, as
evaluation ranks them (ptctl.tuning.data.prompt_label_losses: candidates batched, no peft).
Layer 1 scores cluster medoids; layer 2 the members of the best clusters. The predicted number
of steps comes from how fast the best-scoring entries' own jobs converged.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from ptctl.bank.cluster import prepared_features
from ptctl.bank.search import Budget, SearchResult, two_layer_search
from ptctl.bank.store import Bank, Snapshot
from ptctl.errors import BadInputError, NotFoundError
from ptctl.jobs.spec import JobSpec

Progress = Callable[[str, int, int], None]
Notify = Callable[[str], None]
SAMPLES = 8          # task samples each candidate is scored on
SCORE_BATCH = 64     # sequences per forward pass


@dataclass
class QueryResult:
    prompt_id: str
    score: float                 # rank-classification loss on the task's samples (lower = better)
    predicted_steps: int
    candidates_scored: int
    seconds: float               # the search: samples, features, LM scoring
    load_seconds: float          # loading the base model (a warm pool has it loaded)
    bank_size: int
    eligible: int
    exhaustive: bool
    clusters_expanded: int
    dtype: str                   # the scoring model's (bfloat16 where the hardware runs it fast)
    scored: dict[str, float]

    def as_dict(self, with_scored: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_scored:
            data.pop("scored")
        return data


def bank_for_spec(bank_dir: str, spec: JobSpec) -> Bank:
    from ptctl.tuning.models import model_name

    return Bank.for_model(bank_dir, model_name(spec.model))


def check_model(snap: Snapshot, spec: JobSpec) -> None:
    """A prompt only means something to the model it was tuned on: refuse others by name."""
    from ptctl.tuning.models import model_name

    have, want = snap.manifest["model"]["name"], model_name(spec.model)
    if have != want:
        raise BadInputError(f"{snap.root}: bank is for model {have}; the spec's model is {want}")


def predict_steps(snap: Snapshot, scored: dict[str, float], max_steps: int, top: int = 3) -> int:
    """Median steps-to-target of the best `top` scored entries, within [1, max_steps]."""
    best = sorted(scored, key=scored.get)[:top]
    steps = [snap.entry(eid).convergence_steps for eid in best]
    return int(min(max_steps, max(1, round(float(np.median(steps))))))


def run_query(snap: Snapshot, spec: JobSpec, model, tokenizer, *, exhaustive: bool = False,
              samples: int = SAMPLES, budget: Budget = Budget(),
              progress: Progress | None = None, encoder=None) -> QueryResult:
    """Search `snap` for the best initial prompt for `spec` with an already loaded model."""
    import torch

    from ptctl.bank.features import TaskEncoder, scoring_examples
    from ptctl.tuning.data import prompt_label_losses

    check_model(snap, spec)
    started = time.perf_counter()
    vt = spec.prompt.virtual_tokens
    eligible = [e for e in snap.entries if e.virtual_tokens == vt]
    if not eligible:
        raise NotFoundError(f"{snap.root}: no entry with virtual_tokens={vt}")
    examples, texts, words, label_ids = scoring_examples(spec.task, tokenizer, samples)
    by_id = {e.id: e for e in eligible}
    row = {e.id: i for i, e in enumerate(snap.entries)}
    planned = len(eligible) if exhaustive else budget.total(len(eligible))
    done = [0]

    def score(ids: list[str]) -> np.ndarray:
        prompts = torch.stack([snap.prompt(by_id[i]) for i in ids])
        losses = prompt_label_losses(model, tokenizer, prompts, examples, label_ids,
                                     max_batch=SCORE_BATCH)
        done[0] += len(ids)
        if progress:
            progress("scoring", done[0], planned)
        return losses.numpy()

    query_vec: list[np.ndarray] = []

    def similarity(ids: list[str]) -> np.ndarray:
        if not query_vec:
            query_vec.append((encoder or TaskEncoder.shared()).task_embedding(texts, words))
        mat = snap.features["task"][[row[i] for i in ids]]
        return mat @ query_vec[0]

    if exhaustive or snap.clusters is None:
        ids = [e.id for e in eligible]
        losses = np.concatenate([score(ids[i:i + 16]) for i in range(0, len(ids), 16)])
        scored = {i: float(v) for i, v in zip(ids, losses)}
        best = min(scored, key=scored.get)
        result = SearchResult(best, scored[best], scored, len(snap.clusters.medoids)
                              if snap.clusters else 0)
    else:
        kind = snap.clusters.features
        placed = prepared_features(snap.features[kind], kind)
        result = two_layer_search(snap.clusters, score, budget,
                                  similarity if "task" in snap.features else None, set(by_id),
                                  lambda ids: placed[[row[i] for i in ids]])
    return QueryResult(
        prompt_id=result.best, score=result.loss,
        predicted_steps=predict_steps(snap, result.scored, spec.training.max_steps),
        candidates_scored=len(result.scored), seconds=time.perf_counter() - started,
        load_seconds=0.0, bank_size=len(snap.entries), eligible=len(eligible),
        exhaustive=exhaustive, clusters_expanded=result.clusters_expanded,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."), scored=result.scored)


def query(bank_dir: str, spec: JobSpec, *, exhaustive: bool = False, samples: int = SAMPLES,
          budget: Budget = Budget(), progress: Progress | None = None, dtype: str = "auto"
          ) -> tuple[QueryResult, Snapshot]:
    """Load the spec's model and search its bank; the snapshot holds the chosen tensor.

    `dtype` "auto" scores in bfloat16 where the hardware runs it natively: twice as fast on
    AVX512-BF16 CPUs, with the same picks as float32 on every held-out task measured
    (benchmarks/RESULTS.md)."""
    import torch

    from ptctl.tuning.models import load_base_model, scoring_dtype

    dtype = scoring_dtype(dtype)
    snap = bank_for_spec(bank_dir, spec).snapshot()
    check_model(snap, spec)
    t0 = time.perf_counter()
    model, tokenizer = load_base_model(spec.model, dtype=dtype)
    load_s = time.perf_counter() - t0
    with torch.inference_mode():
        result = run_query(snap, spec, model, tokenizer, exhaustive=exhaustive,
                           samples=samples, budget=budget, progress=progress)
    result.load_seconds = load_s
    return result, snap


def choose_initial_prompt(bank_dir: str, spec: JobSpec, *, info: Notify | None = None,
                          warn: Notify | None = None) -> dict[str, Any] | None:
    """`ptctl submit`'s hook: the bank's pick for a spec with prompt.init 'bank', or None
    (with a warning) when there is no bank for the model or no entry of the prompt's length.
    Progress goes to `info` and the reason for a random start to `warn`, so that any caller
    can show them its own way."""
    info = info or _silent
    warn = warn or _silent
    bank = bank_for_spec(bank_dir, spec)
    if not bank.exists():
        warn(f"no Prompt Bank for model {bank.root.name} in {bank_dir}: starting from "
             "a random prompt")
        return None
    vt = spec.prompt.virtual_tokens
    snap = bank.snapshot(features=False)
    if not any(e.virtual_tokens == vt for e in snap.entries):
        warn(f"Prompt Bank {bank.root} has no entry with virtual_tokens={vt}: starting from "
             "a random prompt")
        return None
    info(f"ptctl: searching Prompt Bank {bank.root} ({len(snap.entries)} entries)")
    result, snap = query(bank_dir, spec)
    data = result.as_dict()
    data["prompt_bytes"] = snap.prompt_bytes(snap.entry(result.prompt_id))
    info(f"ptctl: initial prompt {result.prompt_id} (loss {result.score:.3f}, "
         f"{result.candidates_scored} candidates in {result.seconds:.1f} s; predicted "
         f"{result.predicted_steps} steps)")
    return data


def _silent(message: str) -> None:
    """The default `info`/`warn`: a library call says nothing unless asked."""


def scored_matrix(snap: Snapshot, tasks: list, model, tokenizer, samples: int = SAMPLES,
                  progress: Progress | None = None) -> np.ndarray:
    """Loss [len(tasks), len(entries)] of every entry on every TaskSpec in `tasks`."""
    import torch

    from ptctl.bank.features import scoring_examples
    from ptctl.tuning.data import prompt_label_losses

    by_length: dict[int, list[int]] = {}
    for j, e in enumerate(snap.entries):
        by_length.setdefault(e.virtual_tokens, []).append(j)
    tensors = {j: snap.prompt(e) for j, e in enumerate(snap.entries)}
    out = np.zeros((len(tasks), len(snap.entries)), dtype=np.float32)
    for t, task in enumerate(tasks):
        examples, _, _, label_ids = scoring_examples(task, tokenizer, samples)
        for cols in by_length.values():
            prompts = torch.stack([tensors[j] for j in cols])
            with torch.inference_mode():
                out[t, cols] = prompt_label_losses(model, tokenizer, prompts, examples,
                                                   label_ids, max_batch=SCORE_BATCH).numpy()
        if progress:
            progress("selection", t + 1, len(tasks))
    return out

