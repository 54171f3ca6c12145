"""`ptctl bank ...`: build, query and maintain the Prompt Bank (one bank per base model).

torch, transformers and faiss load inside the commands that need them, so `ptctl --help`
stays fast.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from ptctl.bank.query import SAMPLES
from ptctl.cli import common
from ptctl.cli.output import JsonOpt, Output, QuietOpt
from ptctl.errors import BadInputError, CorruptFileError, NotFoundError

app = typer.Typer(help="The Prompt Bank: tuned prompts to start new jobs from.",
                  no_args_is_help=True)

BankDirOpt = Annotated[Optional[str], typer.Option(
    "--bank-dir", help="Bank root (config key bank_dir; one bank per model under it).")]
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="The bank's model (name or reference). Default: the only bank there is.")]


@contextlib.contextmanager
def _progress(out: Output) -> Iterator:
    """A callback(phase, done, total) drawing rich progress bars on a TTY, else a no-op."""
    if not out.progress_enabled():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn

    bars: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=out.err, transient=False) as progress:
        def update(phase: str, done: int, total: int) -> None:
            if phase not in bars:
                bars[phase] = progress.add_task(phase, total=total)
            progress.update(bars[phase], completed=done, total=total)

        yield update


def _bank(bank_dir: str, model: str | None):
    from ptctl.bank.store import Bank
    from ptctl.tuning.models import model_name

    if model:
        return Bank.for_model(bank_dir, model_name(model))
    found = sorted(p.parent.name for p in Path(bank_dir).glob("*/manifest.json"))
    if len(found) == 1:
        return Bank.for_model(bank_dir, found[0])
    if not found:
        raise NotFoundError(f"{bank_dir}: no Prompt Bank (build one with `ptctl bank build`)")
    raise BadInputError(f"{bank_dir}: holds banks for {', '.join(found)}; choose one with "
                        "--model")


def _entry_row(e) -> dict:
    acc = (e.final_metric or {}).get("accuracy")
    return {"id": e.id, "task": Path(e.task).name, "labels": "/".join(e.label_words or e.labels),
            "virtual_tokens": e.virtual_tokens, "accuracy": None if acc is None else round(acc, 3),
            "steps": e.steps, "steps_to_target": e.steps_to_target, "target": e.target}


def _collect(dirs: list[Path]) -> list[Path]:
    """Job folders and adapter folders under DIRs (a DIR may hold many job folders)."""
    from ptctl.tuning.prompt import ADAPTER_WEIGHTS

    found = []
    for d in dirs:
        if not d.is_dir():
            raise BadInputError(f"{d}: no such folder")
        if (d / ADAPTER_WEIGHTS).is_file() or (d / "result" / ADAPTER_WEIGHTS).is_file():
            found.append(d)
            continue
        subs = sorted(p for p in d.iterdir() if (p / "result" / ADAPTER_WEIGHTS).is_file()
                      or (p / ADAPTER_WEIGHTS).is_file())
        if not subs:
            raise BadInputError(f"{d}: no finished job (result/{ADAPTER_WEIGHTS}) or exported "
                                "adapter in it or its sub-folders")
        found += subs
    return found


@app.command()
def build(
    sources: Annotated[Optional[Path], typer.Option(
        "--sources", help="Sources manifest: tune each listed task, then ingest it.")] = None,
    from_dirs: Annotated[Optional[list[Path]], typer.Option(
        "--from", help="Finished job folders or exported adapters (repeatable).")] = None,
    submit: Annotated[bool, typer.Option(
        "--submit", help="Tune the sources as ptctl jobs (Slurm or local, as the cluster "
                         "profile says) instead of in this process.")] = False,
    profile: Annotated[Optional[str], typer.Option(
        "--profile", help="Cluster profile for --submit.")] = None,
    bank_dir: BankDirOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build or extend a bank from tuned prompts, then re-measure which features cluster it."""
    from ptctl.bank import ingest
    from ptctl.bank.store import Bank

    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config(bank_dir=bank_dir)
    if (sources is None) == (not from_dirs):
        raise BadInputError("bank build: give exactly one of --sources FILE or --from DIR...")
    with _progress(out) as progress:
        if sources is not None:
            from ptctl.bank.sources import load_sources, tune_locally
            from ptctl.jobs.registry import Registry
            from ptctl.scheduler.batch import submit_all

            _, items = load_sources(sources)
            registry = Registry(cfg.home)
            todo = [s for s in items if not s.done(registry)]
            out.info(f"ptctl: {len(items)} sources, {len(todo)} to tune")
            if submit:
                submit_all(todo, common.config(bank_dir=bank_dir, profile=profile),
                           progress=progress)
            for i, source in enumerate([] if submit else todo):
                out.info(f"ptctl: tuning {source.name} in {source.run_dir}")
                tune_locally(source)
                if progress:
                    progress("tuning", i + 1, len(todo))
            candidates = [ingest.from_result(s.job_folder(registry), s.name) for s in items]
        else:
            candidates = [ingest.from_result(p) for p in _collect(list(from_dirs))]
        from ptctl.tuning.models import load_base_model

        model, tokenizer = load_base_model(candidates[0].model_ref)
        bank = Bank.for_model(cfg.bank_dir, candidates[0].entry.model)
        ids = ingest.add_candidates(bank, candidates, model=model, tokenizer=tokenizer,
                                    progress=progress)
        selection = ingest.select_features(bank, model, tokenizer, progress=progress)
    snap = bank.snapshot(features=False)
    data = {"bank": str(bank.root), "version": snap.version, "entries": len(snap.entries),
            "added": ids, "selection": selection,
            "clusters": len(snap.clusters.medoids) if snap.clusters else 0}
    out.emit(data, human=f"{bank.root}: version {snap.version}, {len(snap.entries)} entries "
                         f"({len(ids)} added), {data['clusters']} clusters on "
                         f"{selection.get('chosen')} features")


@app.command()
def query(
    spec_file: Annotated[Path, typer.Argument(help="Job spec (YAML).", metavar="SPEC.yaml")],
    exhaustive: Annotated[bool, typer.Option(
        "--exhaustive", help="Score every entry (the quality reference; slow).")] = False,
    samples: Annotated[int, typer.Option(
        "--samples", help="Task samples per candidate.")] = SAMPLES,
    dtype: Annotated[str, typer.Option(
        "--dtype", help="Scoring dtype: auto (bfloat16 where the CPU or GPU runs it natively), "
                        "float32 or bfloat16.")] = "auto",
    bank_dir: BankDirOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The best initial prompt for a job spec, with its score and predicted steps.

    A bank entry is picked only when it scores better than the job's own random (or text)
    start on the task's samples."""
    from ptctl.bank import query as bank_query
    from ptctl.jobs.spec import load_spec
    from ptctl.tuning.models import scoring_dtype

    if samples < 1:
        raise BadInputError(f"--samples: got {samples}, expected an integer >= 1")
    dtype = scoring_dtype(dtype, field="--dtype")
    out = Output(json_mode=json, quiet=quiet)
    spec = load_spec(spec_file)
    cfg = common.config(bank_dir=bank_dir)
    with _progress(out) as progress:
        result, _ = bank_query.query(cfg.bank_dir, spec, exhaustive=exhaustive,
                                     samples=samples, progress=progress, dtype=dtype)
    starts = ", ".join(f"{k} {v:.4f}" for k, v in result.start_scores.items())
    pick = result.prompt_id if result.init_picked == "bank" else f"{result.init_picked} start"
    out.emit(result.as_dict(), human=(
        f"{pick}: loss {result.score:.4f} (best entry {result.best_entry} "
        f"{result.best_entry_score:.4f}, {starts}); predicted "
        f"{bank_query.steps_words(result.predicted_steps)} "
        f"({result.interval_lo}-{result.interval_hi} at {result.interval_coverage:.0%}); "
        f"{result.candidates_scored} of {result.eligible} candidates scored in "
        f"{result.seconds:.1f} s, {result.dtype} (model load {result.load_seconds:.1f} s)"))


@app.command()
def add(
    path: Annotated[Path, typer.Argument(help="A finished job folder, an exported adapter, or "
                                              "a prompt .safetensors (with --spec).")],
    spec_file: Annotated[Optional[Path], typer.Option(
        "--spec", help="Job spec describing a bare .safetensors prompt (model and task).")
    ] = None,
    entry_id: Annotated[Optional[str], typer.Option("--id", help="Entry id (default: the job "
                                                                 "or file name).")] = None,
    bank_dir: BankDirOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Add one prompt to its model's bank (replacing an entry with the same id)."""
    from ptctl.bank import ingest
    from ptctl.bank.store import Bank

    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config(bank_dir=bank_dir)
    if path.is_file():
        if spec_file is None:
            raise BadInputError(f"{path}: a bare prompt file needs --spec SPEC.yaml for its "
                                "model and task")
        from ptctl.jobs.spec import load_spec

        candidate = ingest.from_prompt_file(path, load_spec(spec_file), entry_id)
    elif path.is_dir():
        candidate = ingest.from_result(path, entry_id)
    else:
        raise BadInputError(f"{path}: no such file or folder")
    bank = Bank.for_model(cfg.bank_dir, candidate.entry.model)
    with _progress(out) as progress:
        ids = ingest.add_candidates(bank, [candidate], progress=progress)
    out.emit({"bank": str(bank.root), "id": ids[0]}, human=f"{bank.root}: added {ids[0]}")


@app.command("ls")
def ls(
    model: ModelOpt = None,
    bank_dir: BankDirOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List a bank's entries."""
    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config(bank_dir=bank_dir)
    snap = _bank(cfg.bank_dir, model).snapshot(features=False)
    rows = [_entry_row(e) for e in snap.entries]
    columns = ["id", "task", "labels", "virtual_tokens", "accuracy", "steps", "steps_to_target"]
    out.table(columns, [[r[c] for c in columns] for r in rows], data=rows,
              title=f"{snap.root} (version {snap.version})")


@app.command()
def show(
    entry_id: Annotated[str, typer.Argument(help="Entry id.")],
    model: ModelOpt = None,
    bank_dir: BankDirOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Everything recorded about one entry, and its cluster."""
    from ptctl.bank.store import validate_id

    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config(bank_dir=bank_dir)
    snap = _bank(cfg.bank_dir, model).snapshot(features=False)
    entry = snap.entry(validate_id(entry_id))
    data = entry.to_dict()
    data["file"] = str(snap.root / entry.file)
    if snap.clusters:
        for medoid, members in zip(snap.clusters.medoids, snap.clusters.members):
            if entry.id in members:
                data["cluster"] = {"medoid": medoid, "members": members,
                                   "features": snap.clusters.features}
    if json:
        out.emit(data)
        return
    rows = [[k, v] for k, v in data.items() if k not in ("eval_curve", "loss_summary")]
    rows.append(["eval_curve", "; ".join(f"{int(s)}: {a:.3f}" for s, a, *_ in entry.eval_curve)])
    out.table(["field", "value"], rows)


@app.command()
def rm(
    entry_ids: Annotated[list[str], typer.Argument(help="Entry ids to remove.")],
    model: ModelOpt = None,
    bank_dir: BankDirOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Remove entries (the rest are re-clustered)."""
    from ptctl.bank import ingest

    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config(bank_dir=bank_dir)
    bank = _bank(cfg.bank_dir, model)
    ingest.remove(bank, entry_ids)
    out.emit({"bank": str(bank.root), "removed": entry_ids},
             human=f"{bank.root}: removed {', '.join(entry_ids)}")


@app.command()
def verify(
    repair: Annotated[bool, typer.Option(
        "--repair", help="First delete what interrupted writes left: prompts and indexes "
                         "the manifest does not name, temp files.")] = False,
    model: ModelOpt = None,
    bank_dir: BankDirOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check every file of a bank against its manifest (exit 1 when anything is wrong)."""
    from ptctl.bank.store import repair as repair_bank
    from ptctl.bank.store import verify as verify_bank

    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config(bank_dir=bank_dir)
    bank = _bank(cfg.bank_dir, model)
    removed = repair_bank(bank) if repair else []
    for path in removed:
        out.info(f"ptctl: deleted leftover {path}")
    problems = verify_bank(bank)
    out.emit({"bank": str(bank.root), "ok": not problems, "problems": problems,
              "removed": removed}, human=f"{bank.root}: ok" if not problems else None)
    if problems:
        for p in problems[1:]:
            out.warn(p)
        raise CorruptFileError(problems[0])
