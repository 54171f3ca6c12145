"""The sources manifest of `ptctl bank build --sources FILE`: which tasks to tune the bank from.

    model: smollm2-135m            # every source uses this model
    workdir: .build/smollm2-135m   # job folders of the source runs (relative to this file)
    defaults:                      # job-spec fields merged under each source (deep merge)
      target: accuracy >= 0.85
      task: {max_length: 40, eval_samples: 64}
      training: {max_steps: 40, learning_rate: 0.03}
    sources:
      - name: bbc-topics-5         # becomes the entry id
        task: {source: bbc-topics}
      - name: tweets-binary
        task: {source: tweet-sentiment, label_map: {negative: neg, positive: pos},
               label_words: {neg: bad, pos: good}}

Each source is a whole job spec once merged (validated like `ptctl submit`'s); its prompt
starts from random unless it says otherwise, so a bank never depends on itself.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from ptctl.bank.store import validate_id
from ptctl.errors import BadInputError
from ptctl.jobs.spec import JobSpec, spec_from_dict

_TOP_KEYS = ("model", "workdir", "defaults", "sources")


@dataclass
class Source:
    name: str
    spec: JobSpec
    run_dir: Path

    @property
    def job_file(self) -> Path:
        """Where a build through the job registry (--submit) records the source's job id."""
        return self.run_dir / "job.json"

    def job_folder(self, registry) -> Path:
        """The folder holding result/: the registry's job folder when submitted, else run_dir."""
        if self.job_file.is_file():
            return registry.paths(json.loads(self.job_file.read_text())["job_id"]).root
        return self.run_dir

    def done(self, registry=None) -> bool:
        """Tuned already: the job exported its result (builds resume where they stopped)."""
        folder = self.job_folder(registry) if registry is not None else self.run_dir
        return (folder / "result" / "ptctl_meta.json").is_file()


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_sources(path: str | Path) -> tuple[str, list[Source]]:
    """(model, sources) of a sources manifest; every error names the file and the source."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such sources file") from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInputError(f"{path}: cannot read sources manifest ({first})") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a YAML mapping with {', '.join(_TOP_KEYS)}")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise BadInputError(f"{path}: {unknown[0]}: unknown key (expected one of: "
                            f"{', '.join(_TOP_KEYS)})")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadInputError(f"{path}: model: got {model!r}, expected a model name or path")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise BadInputError(f"{path}: defaults: expected a mapping of job-spec fields")
    items = data.get("sources")
    if not isinstance(items, list) or not items:
        raise BadInputError(f"{path}: sources: expected a non-empty list")
    workdir = path.resolve().parent / str(data.get("workdir") or f".build/{Path(model).name}")
    seen: set[str] = set()
    sources = []
    for i, item in enumerate(items):
        where = f"{path}: sources[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadInputError(f"{where}: expected a mapping with a name")
        name = item["name"]
        try:
            validate_id(name)
        except BadInputError as exc:
            raise BadInputError(f"{where}: name: {exc}") from None
        if name in seen:
            raise BadInputError(f"{where}: name {name!r} appears twice")
        seen.add(name)
        merged = _merge(_merge({"deadline": "24h", "prompt": {"init": "random"}}, defaults),
                        item)
        merged["model"] = model
        spec = spec_from_dict(merged, origin=f"{where} ({name})", base=path.parent)
        if spec.prompt.init == "bank":
            raise BadInputError(f"{where} ({name}): prompt.init: a source cannot start from the "
                                "bank it builds (use random or text)")
        sources.append(Source(name, spec, workdir / name))
    return model, sources


def tune_locally(source: Source) -> Path:
    """Run (or resume) one source job here, in-process; returns its job folder."""
    from ptctl.fsutil import atomic_write_text
    from ptctl.jobs.spec import resolved_spec_dict
    from ptctl.tuning.launch import launch

    source.run_dir.mkdir(parents=True, exist_ok=True)
    spec_file = source.run_dir / "spec.yaml"
    if not spec_file.is_file():
        atomic_write_text(spec_file, yaml.safe_dump(
            resolved_spec_dict(source.spec, datetime.now(timezone.utc)), sort_keys=False))
    outcome = launch(source.spec, source.run_dir, 1)
    if outcome.status != "finished":
        raise BadInputError(f"source {source.name}: stopped ({outcome.reason}) at step "
                            f"{outcome.step}; run the build again to resume it")
    return source.run_dir

