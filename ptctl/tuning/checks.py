"""The checks `ptctl submit` (and `--dry-run`) runs on a job's inputs before it registers
anything: a bad data file or initial prompt then fails the submit naming file and line
(exit 2), rather than every attempt of the job, one after another, on the cluster.

A file task is read whole (every line parses, both columns are present, every label has a
label word and every label word a label, enough rows for the evaluation split plus one global
batch of training). A packaged task's rows are known good and slow to read: only its label
words are checked. Label words and the initial text are tokenised with the model's tokenizer
wherever it can be had without building or downloading the model (`local_tokenizer`); where it
cannot, a warning says they were not checked.
"""

from __future__ import annotations

from typing import Callable

from ptctl.errors import BadInputError
from ptctl.jobs.spec import JobSpec
from ptctl.tuning.data import label_token_ids, read_file_rows, task_labels
from ptctl.tuning.models import TokenizerUnavailable, local_tokenizer


def check_inputs(spec: JobSpec, origin: str, warn: Callable[[str], None] | None = None) -> None:
    """Raise BadInputError (prefixed by `origin`, the spec file) for inputs a run would
    refuse; `warn` hears which could not be checked here."""
    task = spec.task
    if task.is_packaged:
        labels = (tuple(dict.fromkeys(task.label_map.values())) if task.label_map
                  else task.packaged_labels)
    else:
        numbered = read_file_rows(task)
        first_line: dict[str, int] = {}
        for _, label, line in numbered:
            first_line.setdefault(task.label_map.get(label, label), line)
        rows, labels = task_labels(task, [(text, label) for text, label, _ in numbered],
                                   first_line)
        _check_sizes(spec, len(rows))
    try:
        tokenizer = local_tokenizer(spec.model)
    except TokenizerUnavailable as exc:
        if warn:
            text = " and prompt.init_text" if spec.prompt.init == "text" else ""
            warn(f"{origin}: the label words{text} are not checked: model {spec.model}: {exc}; "
                 "the job's first attempt checks them")
        return
    try:
        label_token_ids(tokenizer, task, labels,
                        tuple(task.label_words.get(label, label) for label in labels))
    except BadInputError as exc:
        raise BadInputError(f"{origin}: task.{exc}") from None
    if spec.prompt.init == "text" and not tokenizer(spec.prompt.init_text,
                                                    add_special_tokens=False)["input_ids"]:
        raise BadInputError(f"{origin}: prompt.init_text: {spec.prompt.init_text!r} tokenizes "
                            f"to nothing with the tokenizer of {spec.model}")


def _check_sizes(spec: JobSpec, rows: int) -> None:
    task, batch = spec.task, spec.training.global_batch_size
    train = rows - task.eval_samples
    if task.max_train_samples is not None:
        train = min(train, task.max_train_samples)
    if train < batch:
        raise BadInputError(f"{task.source}: {rows} examples leave {max(0, train)} for training "
                            f"after eval_samples={task.eval_samples}, fewer than "
                            f"global_batch_size={batch}")
