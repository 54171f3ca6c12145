"""Choosing a new job's initial prompt: the two-layer search, or all entries (--exhaustive).

A candidate's score is its rank-classification loss on a few samples of the new task: the
cross-entropy of each sample's label among the task's label words, read after that prompt, as
evaluation ranks them (ptctl.tuning.data.prompt_label_losses: candidates batched, no peft).
Layer 1 scores cluster medoids; layer 2 the members of the best clusters. The job's own random
start (the draw its seed makes) and its text start (when the spec has an `init_text`) are scored
the same way, and a bank entry is picked only when it scores better than both: the bank never
hands a job a start that looks worse than the one it would have had without it. The predicted
number of steps, with its spread, comes from ptctl.bank.forecast.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np

from ptctl.bank.cluster import prepared_features
from ptctl.bank.forecast import forecast_steps
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
    init_picked: str             # "bank", "random" or "text": the start the job gets
    prompt_id: str | None        # the bank entry picked; None for a random or text start
    score: float                 # the pick's rank-classification loss on the task's samples
    predicted_steps: int         # steps to the target from the pick (ptctl.bank.forecast)
    predicted_steps_sd_log: float  # spread of log(steps): the planner's margin
    interval_lo: int             # the range that holds the steps with `interval_coverage`
    interval_hi: int
    interval_coverage: float
    best_entry: str              # the search's best-scoring entry, picked or not
    best_entry_score: float
    start_scores: dict[str, float]  # the loss of the job's own starts: random, text
    candidates_scored: int       # bank entries scored
    seconds: float               # the search: samples, features, LM scoring
    load_seconds: float          # loading the base model for scoring
    bank_size: int
    eligible: int
    exhaustive: bool
    clusters_expanded: int
    dtype: str                   # the scoring model's (bfloat16 where the hardware runs it fast)
    scored: dict[str, float]     # every scored entry's loss
    own_start: Any = field(default=None, repr=False)  # the tensor of a random or text pick

    def as_dict(self, with_scored: bool = True) -> dict[str, Any]:
        skip = {"own_start"} | (set() if with_scored else {"scored"})
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def estimates(self) -> dict[str, Any]:
        """What a job keeps of its query: the prediction the planner reads and what the
        pick was compared with."""
        return {"predicted_steps": self.predicted_steps,
                "predicted_steps_sd_log": self.predicted_steps_sd_log,
                "predicted_interval": [self.interval_lo, self.interval_hi],
                "predicted_coverage": self.interval_coverage,
                "init_picked": self.init_picked, "start_scores": self.start_scores,
                "best_entry": self.best_entry, "best_entry_score": self.best_entry_score}


def bank_for_spec(bank_dir: str, spec: JobSpec) -> Bank:
    from ptctl.tuning.models import model_name

    return Bank.for_model(bank_dir, model_name(spec.model))


def check_model(snap: Snapshot, spec: JobSpec) -> None:
    """A prompt only means something to the model it was tuned on: refuse others by name."""
    from ptctl.tuning.models import model_name

    have, want = snap.manifest["model"]["name"], model_name(spec.model)
    if have != want:
        raise BadInputError(f"{snap.root}: bank is for model {have}; the spec's model is {want}")


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
    starts = own_starts(spec, model)
    planned = len(starts) + (len(eligible) if exhaustive else budget.total(len(eligible)))
    done = [0]

    def score_prompts(prompts: list) -> np.ndarray:
        losses = prompt_label_losses(model, tokenizer, torch.stack(prompts), examples,
                                     label_ids, max_batch=SCORE_BATCH)
        done[0] += len(prompts)
        if progress:
            progress("scoring", done[0], planned)
        return losses.numpy()

    def score(ids: list[str]) -> np.ndarray:
        return score_prompts([snap.prompt(by_id[i]) for i in ids])

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
    start_scores = dict(zip(starts, map(float, score_prompts(list(starts.values())))))
    own = min(start_scores, key=start_scores.get)
    init = "bank" if result.loss < start_scores[own] else own
    score_of = result.loss if init == "bank" else start_scores[own]
    ids = [e.id for e in eligible]
    forecast = forecast_steps(snap, spec, result.scored, score_of, len(words),
                              similarity(ids) if "task" in snap.features else None, ids)
    return QueryResult(
        init_picked=init, prompt_id=result.best if init == "bank" else None, score=score_of,
        predicted_steps=forecast.steps, predicted_steps_sd_log=forecast.sd_log,
        interval_lo=forecast.lo, interval_hi=forecast.hi, interval_coverage=forecast.coverage,
        best_entry=result.best, best_entry_score=result.loss, start_scores=start_scores,
        candidates_scored=len(result.scored), seconds=time.perf_counter() - started,
        load_seconds=0.0, bank_size=len(snap.entries), eligible=len(eligible),
        exhaustive=exhaustive, clusters_expanded=result.clusters_expanded,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."), scored=result.scored,
        own_start=None if init == "bank" else starts[init])


def own_starts(spec: JobSpec, model) -> dict[str, Any]:
    """The prompts the job would start from without the bank: its random draw (the training
    seed's, as ptctl.tuning.prompt makes it) and, when the spec has an `init_text`, its text."""
    from ptctl.tuning.models import resolve_model
    from ptctl.tuning.prompt import fresh_prompt

    folder = resolve_model(spec.model)
    inits = ["random"] + (["text"] if spec.prompt.init_text else [])
    return {init: fresh_prompt(model, folder, spec.prompt, spec.training.seed, init)
            for init in inits}


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
    data = result.as_dict(with_scored=False)
    data["prompt_bytes"] = start_bytes(result, snap)
    data["estimates"] = result.estimates()
    compared = ", ".join(f"{k} {v:.3f}" for k, v in result.start_scores.items())
    start = (f"bank entry {result.prompt_id}" if result.init_picked == "bank"
             else f"its own {result.init_picked} start")
    info(f"ptctl: starting from {start} (loss {result.score:.3f}; best entry "
         f"{result.best_entry} {result.best_entry_score:.3f}, {compared}; "
         f"{result.candidates_scored} candidates in {result.seconds:.1f} s); predicted "
         f"{steps_words(result.predicted_steps)} ({result.interval_lo}-{result.interval_hi} at "
         f"{result.interval_coverage:.0%})")
    return data


def start_bytes(result: QueryResult, snap: Snapshot) -> bytes | None:
    """The safetensors bytes the job starts from: the bank entry, or the scored text start.
    None for a random pick: the job's own seeded draw is the very prompt that was scored."""
    from ptctl.bank.store import encode_prompt

    if result.init_picked == "bank":
        return snap.prompt_bytes(snap.entry(result.prompt_id))
    if result.init_picked == "text":
        return encode_prompt(result.own_start)
    return None


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


def steps_words(steps: int) -> str:
    return f"{steps} step" if steps == 1 else f"{steps} steps"
