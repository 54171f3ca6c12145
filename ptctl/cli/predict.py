"""`ptctl predict` and `ptctl eval`: use a tuned prompt (ptctl.tuning.predict does the work)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Callable, Iterator, Optional

import typer

from ptctl.cli import common
from ptctl.cli.output import JsonOpt, Output, QuietOpt
from ptctl.errors import BadInputError

SourceArg = Annotated[str, typer.Argument(
    metavar="JOB|ADAPTER_DIR", help="A finished job's id, or a folder with ptctl_meta.json.")]
MaxLengthOpt = Annotated[Optional[int], typer.Option(
    "--max-length", help="Tokens per text with template and label word (the job's "
                         "task.max_length reproduces its accuracy). Default: the model's context.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Texts per forward pass.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device, e.g. cuda.")]


def _classifier(source: str, max_length: int | None, batch_size: int, device: str):
    from ptctl.tuning.predict import PromptClassifier  # torch loads only here

    return PromptClassifier.load(source, device=device, batch_size=batch_size,
                                 max_length=max_length, home=common.config().home)


@contextlib.contextmanager
def _progress(out: Output, total: int, what: str, show: bool = True
              ) -> Iterator[Callable[[int], None] | None]:
    """A callback(n done) drawing a rich progress bar on a terminal, else None."""
    if not (show and out.progress_enabled()):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=out.err, transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda n: progress.advance(task, n)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def predict(
    source: SourceArg,
    texts: Annotated[Optional[list[str]], typer.Argument(
        metavar="[TEXT...]", help="Texts to classify.")] = None,
    input_file: Annotated[Optional[str], typer.Option(
        "--input", metavar="FILE|-", help="One text per line (- for stdin), or a .jsonl/.csv "
                                          "file's text column.")] = None,
    text_field: Annotated[Optional[str], typer.Option(
        "--text-field", help="The text column of a .jsonl/.csv --input. Default: the "
                             "adapter's, else text.")] = None,
    max_length: MaxLengthOpt = None,
    batch_size: BatchOpt = 16,
    device: DeviceOpt = "cpu",
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Classify texts with a tuned prompt: each text's label and label-word probabilities."""
    from ptctl.tuning.predict import read_texts

    out = Output(json_mode=json, quiet=quiet)
    if not texts and input_file is None:
        raise BadInputError("nothing to classify: give TEXT arguments or --input FILE|-")
    clf = _classifier(source, max_length, batch_size, device)
    texts = list(texts or []) + (read_texts(input_file, text_field or clf.text_field)
                                 if input_file is not None else [])
    with _progress(out, len(texts), "predict", show=input_file is not None) as bar:
        predictions = clf.predict(texts, on_batch=bar)
    rows = [{"text": text, "label": p.label, "probabilities": p.probabilities}
            for text, p in zip(texts, predictions)]
    if json:
        out.emit({"adapter": str(clf.folder), "labels": list(clf.labels),
                  "label_words": list(clf.label_words), "predictions": rows})
        return
    out.table(["text", "label", *clf.label_words],
              [(r["text"], r["label"], *(f"{r['probabilities'][w]:.3f}" for w in clf.label_words))
               for r in rows])


def evaluate(
    source: SourceArg,
    data: Annotated[Path, typer.Option(
        "--data", metavar="FILE", help="Labelled .jsonl/.csv file, as a job spec's task.source.")],
    text_field: Annotated[Optional[str], typer.Option(
        "--text-field", help="Text column. Default: the adapter's, else text.")] = None,
    label_field: Annotated[Optional[str], typer.Option(
        "--label-field", help="Label column. Default: the adapter's, else label.")] = None,
    max_length: MaxLengthOpt = None,
    batch_size: BatchOpt = 16,
    device: DeviceOpt = "cpu",
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score a tuned prompt on labelled data: accuracy, precision, recall, confusion matrix."""
    from ptctl.tuning.predict import read_labelled

    out = Output(json_mode=json, quiet=quiet)
    clf = _classifier(source, max_length, batch_size, device)
    rows = read_labelled(data, text_field or clf.text_field, label_field or clf.label_field)
    with _progress(out, len(rows), "eval") as bar:
        result = clf.evaluate(rows, source=str(data), on_batch=bar)
    summary = {"adapter": str(clf.folder), "data": str(data), **result.to_dict()}
    if json:
        out.emit(summary)
        return
    out.emit(summary, human=f"accuracy {result.accuracy:.4f} on {result.count} rows of {data}")
    out.table(["label", "precision", "recall", "rows"],
              [(label, _ratio(result.precision[label]), _ratio(result.recall[label]),
                sum(result.confusion[i])) for i, label in enumerate(result.labels)])
    out.table(["gold \\ predicted", *result.labels],
              [(label, *row) for label, row in zip(result.labels, result.confusion)])


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
    app.command("eval")(evaluate)
