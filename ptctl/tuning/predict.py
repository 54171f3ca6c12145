"""Use a tuned prompt: classify new texts with an exported adapter folder, and score it.

The folder alone is enough (a job's result/, or a copy of it anywhere): ptctl_meta.json names
the base model (`model_ref`), the template, the labels and their words; the adapter's weights
hold the prompt. Scoring is the one evaluation uses during training (data.label_scores, rank
classification over the label words), so `ptctl eval` on a job's own eval split agrees with the
accuracy the job reported. The probabilities are the softmax of those scores over the label
words: the distribution the label_words objective trains.

Texts are cut to `max_length` tokens (template and label word included) as in training: the
argument, else the job's `task.max_length` recorded in the meta, else (an adapter exported
before the meta recorded it) the model's context; the data columns default to the job's own
(`text_field`, `label_field` in the meta; else `text` and `label`).

    clf = PromptClassifier.load("runs/tiny/result")   # or a job id in the state folder
    clf.predict(["what a lovely day"])                 # [Prediction(label, {word: p})]
    clf.evaluate([("what a lovely day", "positive")])  # Evaluation: accuracy, confusion, ...
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import torch

from ptctl.errors import BadInputError, CorruptFileError, NotFoundError
from ptctl.jobs.spec import TaskSpec
from ptctl.jobs.catalog import TASK_FILE_SUFFIXES
from ptctl.tuning.data import _label_tokens, _tokenise, label_scores, read_rows
from ptctl.tuning.models import load_base_model
from ptctl.tuning.prompt import ADAPTER_WEIGHTS, META, read_adapter

OBJECTIVES = ("label_words", "vocabulary")


class Prediction(NamedTuple):
    """One text's label and the probability of each label word."""

    label: str
    probabilities: dict[str, float]


@dataclass(frozen=True)
class Evaluation:
    """Rank-classification results on labelled rows; confusion[gold][predicted] counts rows."""

    labels: tuple[str, ...]
    confusion: list[list[int]]

    @property
    def count(self) -> int:
        return sum(map(sum, self.confusion))

    @property
    def accuracy(self) -> float:
        return sum(self.confusion[i][i] for i in range(len(self.labels))) / self.count

    @property
    def precision(self) -> dict[str, float | None]:
        """Per label; None where the label was never predicted (precision is undefined)."""
        cols = [sum(row[j] for row in self.confusion) for j in range(len(self.labels))]
        return {label: self.confusion[j][j] / cols[j] if cols[j] else None
                for j, label in enumerate(self.labels)}

    @property
    def recall(self) -> dict[str, float | None]:
        """Per label; None where the data holds no row of that label."""
        return {label: row[i] / sum(row) if sum(row) else None
                for i, (label, row) in enumerate(zip(self.labels, self.confusion))}

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "accuracy": self.accuracy, "labels": list(self.labels),
                "precision": self.precision, "recall": self.recall,
                "confusion": self.confusion}


@dataclass(frozen=True)
class _Format:
    """What the tokenisation helpers read of a task: its template and token budget."""

    template: str
    max_length: int


def resolve_adapter(source: str | Path, home: str | Path | None = None) -> Path:
    """The adapter folder of `source`: a folder as given, or the result/ of a job id in the
    state folder `home` (default: the configured one)."""
    path = Path(source)
    if path.is_dir():
        return path
    from ptctl.config import load_config
    from ptctl.jobs.registry import Registry

    registry = Registry(home if home is not None else load_config().home)
    if not registry.exists(str(source)):
        raise NotFoundError(f"{source}: neither an adapter folder nor a job in "
                            f"{registry.jobs_dir}")
    folder = registry.paths(str(source)).result
    if not (folder / META).is_file():
        phase = registry.load(str(source)).phase
        raise NotFoundError(f"job {source} is {phase}: no result yet ({folder})")
    return folder


class PromptClassifier:
    """A base model, a tuned prompt and its task's label words: text in, label out."""

    def __init__(self, folder: Path, meta: dict[str, Any], prompt: torch.Tensor, model,
                 tokenizer, *, device: str = "cpu", batch_size: int = 16,
                 max_length: int | None = None):
        self.folder, self.meta = folder, meta
        self.labels: tuple[str, ...] = tuple(meta["labels"])
        self.label_words: tuple[str, ...] = tuple(meta["label_words"])
        self.text_field: str = meta.get("text_field", "text")
        self.label_field: str = meta.get("label_field", "label")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.prompt = prompt.to(device)
        context = int(getattr(model.config, "max_position_embeddings", 0) or 4096)
        self._format = _Format(meta["template"],
                               max_length or meta.get("max_length", context - prompt.shape[0]))
        self._label_ids = tuple(_label_tokens(tokenizer, self._format, label, word)
                                for label, word in zip(self.labels, self.label_words))

    @classmethod
    def load(cls, source: str | Path, *, device: str = "cpu", batch_size: int = 16,
             max_length: int | None = None, home: str | Path | None = None
             ) -> "PromptClassifier":
        """Load from an adapter folder, or from a finished job's id (`home`: state folder)."""
        if max_length is not None and not 8 <= max_length <= 4096:
            raise BadInputError(f"max_length: got {max_length}, expected 8..4096 tokens")
        if batch_size < 1:
            raise BadInputError(f"batch_size: got {batch_size}, expected an integer >= 1")
        folder = resolve_adapter(source, home)
        for name in (META, ADAPTER_WEIGHTS):
            if not (folder / name).is_file():
                raise BadInputError(f"{folder / name}: missing (not an exported ptctl prompt)")
        prompt, meta = read_adapter(folder)
        check_meta(meta, folder / META, prompt)
        model, tokenizer = load_base_model(meta["model_ref"], device)
        hidden = model.get_input_embeddings().embedding_dim
        if prompt.shape[1] != hidden:
            raise CorruptFileError(f"{folder / ADAPTER_WEIGHTS}: prompt width {prompt.shape[1]}"
                                   f" does not fit model {meta['model_ref']} (hidden {hidden})")
        return cls(folder, meta, prompt, model, tokenizer, device=device, batch_size=batch_size,
                   max_length=max_length)

    def predict(self, texts: Iterable[str], *, on_batch: Callable[[int], None] | None = None
                ) -> list[Prediction]:
        """Each text's label and label-word probabilities, in order. Texts are scored
        `batch_size` at a time, shortest first (little padding); `on_batch(n)` after each."""
        texts = list(texts)
        # The tokenisation helpers want a label per row; only the text is scored here.
        rows = [(text, self.labels[0]) for text in texts]
        examples = _tokenise(rows, self._format, self.tokenizer, {self.labels[0]: 0},
                             self._label_ids, max(map(len, self._label_ids)))
        order = sorted(range(len(examples)), key=lambda i: examples[i].length)
        scores = torch.zeros(len(examples), len(self.labels))
        for lo in range(0, len(order), self.batch_size):
            index = order[lo:lo + self.batch_size]
            scores[index] = label_scores(self.model, self.prompt, [examples[i] for i in index],
                                         self._label_ids, self.tokenizer.pad_token_id,
                                         micro_batch=self.batch_size)
            if on_batch is not None:
                on_batch(len(index))
        return [Prediction(self.labels[best], dict(zip(self.label_words, probs)))
                for best, probs in zip(scores.argmax(1).tolist(), scores.softmax(1).tolist())]

    def evaluate(self, rows: Iterable[tuple[str, str]], *, source: str = "rows",
                 on_batch: Callable[[int], None] | None = None) -> Evaluation:
        """Accuracy, per-label precision and recall and the confusion matrix on (text, label)
        rows; a label the adapter does not know is an error naming `source`."""
        rows = list(rows)
        if not rows:
            raise BadInputError(f"{source}: no examples")
        unknown = sorted({label for _, label in rows} - set(self.labels))
        if unknown:
            raise BadInputError(f"{source}: label {', '.join(map(repr, unknown))} is not one of "
                                f"the adapter's labels ({', '.join(self.labels)})")
        index = {label: i for i, label in enumerate(self.labels)}
        confusion = [[0] * len(self.labels) for _ in self.labels]
        predicted = self.predict([text for text, _ in rows], on_batch=on_batch)
        for (_, gold), guess in zip(rows, predicted):
            confusion[index[gold]][index[guess.label]] += 1
        return Evaluation(self.labels, confusion)


def check_meta(meta: Any, path: Path, prompt: torch.Tensor) -> None:
    """Refuse a ptctl_meta.json the classifier cannot use, naming the file and the field."""
    if not isinstance(meta, dict):
        raise CorruptFileError(f"{path}: expected a JSON object, got {type(meta).__name__}")

    def need(ok: bool, field: str, expected: str) -> None:
        if not ok:
            raise CorruptFileError(f"{path}: {field}: got {meta.get(field)!r}, expected "
                                   f"{expected}")

    def words(value: Any) -> bool:
        return (isinstance(value, list) and len(value) >= 2 and len(set(value)) == len(value)
                and all(isinstance(v, str) and v.strip() for v in value))

    need(isinstance(meta.get("model_ref"), str) and bool(meta.get("model_ref")), "model_ref",
         "a model reference")
    need(words(meta.get("labels")), "labels", "a list of at least 2 distinct labels")
    need(words(meta.get("label_words")) and len(meta["label_words"]) == len(meta["labels"]),
         "label_words", f"{len(meta['labels'])} distinct words, one per label")
    need(isinstance(meta.get("template"), str) and "{text}" in meta["template"], "template",
         "a string containing {text}")
    need(isinstance(meta.get("virtual_tokens"), int) and not isinstance(meta["virtual_tokens"], bool)
         and meta["virtual_tokens"] == prompt.shape[0], "virtual_tokens",
         f"{prompt.shape[0]} (the prompt's length in {ADAPTER_WEIGHTS})")
    need(meta.get("objective") in OBJECTIVES, "objective", " or ".join(OBJECTIVES))
    if "max_length" in meta:
        need(isinstance(meta["max_length"], int) and not isinstance(meta["max_length"], bool)
             and 8 <= meta["max_length"] <= 4096, "max_length", "8..4096 tokens")
    for field in ("text_field", "label_field"):
        if field in meta:
            need(isinstance(meta[field], str) and bool(meta[field]), field, "a column name")


def read_texts(source: str, text_field: str = "text") -> list[str]:
    """Texts to classify: a .jsonl/.csv file's `text_field` column (read by the task reader),
    else one text per non-blank line of the file, or of stdin for "-"."""
    path = Path(source)
    if source != "-" and not path.is_file():
        raise BadInputError(f"{path}: no such file")
    if source != "-" and path.suffix.lower() in TASK_FILE_SUFFIXES:
        # The task reader wants a label column too: the text column stands in for it.
        return [text for text, _ in read_rows(TaskSpec(str(path), text_field, text_field))]
    try:
        text = sys.stdin.read() if source == "-" else path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    texts = [line for line in text.splitlines() if line.strip()]
    if not texts:
        raise BadInputError(f"{path}: no texts")
    return texts


def read_labelled(path: Path, text_field: str = "text", label_field: str = "label"
                  ) -> list[tuple[str, str]]:
    """(text, label) rows of a .jsonl/.csv file, read as a job's task file is."""
    if not path.is_file():
        raise BadInputError(f"{path}: no such data file")
    if path.suffix.lower() not in TASK_FILE_SUFFIXES:
        raise BadInputError(f"{path}: expected a .jsonl or .csv file")
    return read_rows(TaskSpec(str(path), text_field, label_field))
