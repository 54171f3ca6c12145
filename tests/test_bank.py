"""The Prompt Bank on the tiny-random model: build, query, add, verify, rm round-trips,
concurrent writers and readers, and every bad input named by its file."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, benchmark_module, run_cli, write_spec, write_word_task
from typer.testing import CliRunner

from ptctl.bank import ingest
from ptctl.bank.cluster import cluster, prepared_features
from ptctl.bank.ingest import add_from_result
from ptctl.bank.query import choose_initial_prompt, query
from ptctl.bank.search import Budget, selection_regret, two_layer_search
from ptctl.bank.sources import load_sources
from ptctl.bank.store import (Bank, Clusters, Entry, encode_prompt, sha256_bytes, validate_id,
                              verify)
from ptctl.cli.bank import app
from ptctl.config import load_config
from ptctl.errors import EXIT_BAD_INPUT, BadInputError, CorruptFileError, NotFoundError
from ptctl.jobs.spec import load_spec
from ptctl.tuning.launch import launch
from ptctl.tuning.models import scoring_dtype

@pytest.fixture(scope="module")
def jobs(tmp_path_factory) -> dict[str, Path]:
    """Five finished tiny-random jobs (job folders with spec.yaml and result/)."""
    root = tmp_path_factory.mktemp("jobs")
    made = {}
    plan = [("mood-yes", "mood", ("yes", "no")), ("mood-ab", "mood", ("a", "b")),
            ("pets-yes", "pets", ("yes", "no")), ("pets-xy", "pets", ("x", "y")),
            ("nums-yes", "nums", ("yes", "no"))]
    for name, kind, words in plan:
        spec_path = write_spec(root / "specs", name, kind, words, init="random")
        spec = load_spec(spec_path)
        job = root / name
        job.mkdir()
        (job / "spec.yaml").write_text(json.dumps(spec.to_dict()))
        launch(spec, job, 1)
        made[name] = job
    return made


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("PTCTL_BANK_DIR", str(tmp_path / "banks"))
    return load_config()


@pytest.fixture(scope="module")
def template(jobs, tmp_path_factory) -> tuple[Path, dict]:
    """A bank built once from the first four jobs (CLI `bank build --from`)."""
    root = tmp_path_factory.mktemp("template")
    args = ["build", "--json", "--bank-dir", str(root)]
    for name in ("mood-yes", "mood-ab", "pets-yes", "pets-xy"):
        args += ["--from", str(jobs[name])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return root / "tiny-random", json.loads(result.stdout)


@pytest.fixture
def built(cfg, template):
    """A private copy of the template bank under this test's bank_dir."""
    source, data = template
    shutil.copytree(source, Path(cfg.bank_dir) / "tiny-random")
    return Bank.for_model(cfg.bank_dir, "tiny-random"), data


def manifest_bytes(bank: Bank) -> bytes:
    return bank.manifest_path.read_bytes()


# --- build, ls, show, query, add, rm, verify ------------------------------------------------

def test_build_from_jobs_then_list_show_verify(built):
    bank, data = built
    assert data["entries"] == 4 and sorted(data["added"]) == sorted(
        ["mood-yes", "mood-ab", "pets-yes", "pets-xy"])
    assert data["selection"]["chosen"] in ("behaviour", "task")
    assert {"behaviour", "task"} <= set(data["selection"])
    manifest = json.loads(bank.manifest_path.read_text())
    assert manifest["model"]["name"] == "tiny-random" and manifest["model"]["hidden_size"] == 64
    entry = manifest["entries"][0]
    for key in ("id", "task", "model", "virtual_tokens", "final_metric", "steps",
                "steps_to_target", "loss_summary", "sha256"):
        assert key in entry
    assert (bank.root / "prompts" / "mood-yes.safetensors").is_file()
    assert any(p.suffix == ".faiss" for p in (bank.root / "index").iterdir())
    assert verify(bank) == []
    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["ls", "--json"]).stdout)
    assert sorted(r["id"] for r in listed) == sorted(data["added"])
    shown = json.loads(runner.invoke(app, ["show", "pets-xy", "--json"]).stdout)
    assert shown["virtual_tokens"] == 4 and "cluster" in shown
    assert runner.invoke(app, ["verify", "--json"]).exit_code == 0


def test_query_two_layer_and_exhaustive(built, tmp_path):
    bank, _ = built
    spec = load_spec(write_spec(tmp_path / "new", "new-mood", "mood", ("yes", "no")))
    two, snap = query(str(bank.root.parent), spec, budget=Budget(minimum=2), dtype="float32")
    full, _ = query(str(bank.root.parent), spec, exhaustive=True, dtype="float32")
    assert two.dtype == full.dtype == "float32"
    assert full.candidates_scored == 4 and two.candidates_scored <= 4
    assert full.best_entry_score <= two.best_entry_score + 1e-6
    assert two.best_entry in full.scored
    assert abs(full.scored[two.best_entry] - two.best_entry_score) < 1e-4
    assert 1 <= two.interval_lo <= two.predicted_steps <= two.interval_hi
    assert two.interval_hi <= spec.training.max_steps
    result = CliRunner().invoke(app, ["query", str(tmp_path / "new" / "new-mood.yaml"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("init_picked", "prompt_id", "score", "predicted_steps", "predicted_steps_sd_log",
                "interval_lo", "interval_hi", "start_scores", "best_entry", "scored",
                "candidates_scored", "seconds"):
        assert key in data
    assert data["dtype"] == scoring_dtype("auto")


def test_bfloat16_scoring_agrees_with_float32(built, tmp_path):
    """The query's fast path: bfloat16 scores every entry within a few hundredths of float32
    and ranks the bank's entries the same way (the ranking is all a query uses)."""
    bank, _ = built
    spec = load_spec(write_spec(tmp_path / "new", "new-pets", "pets", ("yes", "no")))
    wide, _ = query(str(bank.root.parent), spec, exhaustive=True, dtype="float32")
    fast, _ = query(str(bank.root.parent), spec, exhaustive=True, dtype="bfloat16")
    assert fast.dtype == "bfloat16"
    for eid, loss in wide.scored.items():
        assert abs(fast.scored[eid] - loss) < 0.05 * max(1.0, loss), (eid, loss, fast.scored)
    assert fast.best_entry == wide.best_entry


def test_bad_scoring_dtype_is_refused(built, tmp_path):
    with pytest.raises(BadInputError, match="dtype: got 'float16'"):
        scoring_dtype("float16")
    result = run_cli("bank", "query", str(write_spec(tmp_path / "d", "d", "pets")),
                     "--dtype", "half")
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.strip().splitlines() == [
        "ptctl: error: --dtype: got 'half', expected one of auto, float32, bfloat16"]


def test_choose_initial_prompt_for_submit(built, cfg, tmp_path):
    spec = load_spec(write_spec(tmp_path / "s", "sub", "pets"))
    choice = choose_initial_prompt(cfg.bank_dir, spec)
    assert set(choice) >= {"init_picked", "prompt_id", "score", "predicted_steps",
                           "candidates_scored", "seconds", "prompt_bytes", "estimates"}
    assert set(choice["estimates"]) >= {"predicted_steps", "predicted_steps_sd_log",
                                        "init_picked", "start_scores"}
    from safetensors.torch import load

    if choice["init_picked"] == "bank":
        tensor = load(choice["prompt_bytes"])["prompt"]
        assert tensor.shape == (4, 64) and tensor.dtype == torch.float32
    else:  # the job draws its own random start from its seed
        assert choice["prompt_bytes"] is None and choice["prompt_id"] is None
    other = load_spec(write_spec(tmp_path / "s", "sub8", "pets", virtual_tokens=8))
    warnings = []
    assert choose_initial_prompt(cfg.bank_dir, other, warn=warnings.append) is None
    assert warnings and "no entry with virtual_tokens=8" in warnings[0]


def test_no_bank_means_random_start(cfg, tmp_path):
    spec = load_spec(write_spec(tmp_path / "s", "sub", "pets"))
    warnings = []
    assert choose_initial_prompt(cfg.bank_dir, spec, warn=warnings.append) is None
    assert warnings and warnings[0].startswith("no Prompt Bank for model")


def test_query_with_another_model_is_refused_by_name(built, tmp_path):
    bank, _ = built
    manifest = json.loads(bank.manifest_path.read_text())
    other = tmp_path / "banks2" / "tiny-random"
    other.mkdir(parents=True)
    for p in bank.root.rglob("*"):
        if p.is_file():
            (other / p.relative_to(bank.root)).parent.mkdir(parents=True, exist_ok=True)
            (other / p.relative_to(bank.root)).write_bytes(p.read_bytes())
    snap = Bank(other).snapshot()
    snap.manifest["model"]["name"] = "smollm2-135m"
    spec = load_spec(write_spec(tmp_path / "q", "q", "mood"))
    from ptctl.bank.query import check_model

    with pytest.raises(BadInputError, match="bank is for model smollm2-135m; the spec's model "
                                            "is tiny-random"):
        check_model(snap, spec)
    assert manifest["model"]["name"] == "tiny-random"


def test_add_from_result_is_idempotent_and_rm(built, cfg, jobs):
    bank, _ = built
    before = len(bank.snapshot().entries)
    assert add_from_result(cfg.bank_dir, jobs["nums-yes"] / "result") == "nums-yes"
    version = bank.snapshot().version
    assert add_from_result(cfg.bank_dir, jobs["nums-yes"]) == "nums-yes"
    snap = bank.snapshot()
    assert len(snap.entries) == before + 1 and snap.version == version
    assert sum(len(m) for m in snap.clusters.members) == len(snap.entries)
    result = CliRunner().invoke(app, ["rm", "nums-yes", "--json"])
    assert result.exit_code == 0, result.output
    snap = bank.snapshot()
    assert len(snap.entries) == before and not (bank.root / "prompts/nums-yes.safetensors"
                                                ).exists()
    assert verify(bank) == []
    with pytest.raises(NotFoundError, match="nums-yes"):
        ingest.remove(bank, ["nums-yes"])


def test_add_bare_prompt_file_with_spec(built, tmp_path):
    bank, _ = built
    spec_path = write_spec(tmp_path / "p", "bare", "nums")
    prompt = tmp_path / "bare.safetensors"
    prompt.write_bytes(encode_prompt(torch.randn(4, 64) * 0.1))
    result = CliRunner().invoke(app, ["add", str(prompt), "--spec", str(spec_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == "bare"
    assert bank.snapshot().entry("bare").task_spec["source"].endswith("nums.jsonl")


# --- bad input: named by file, bank left as it was -------------------------------------------

@pytest.mark.parametrize("content,match", [
    (b"not a safetensors file at all", "not a safetensors file"),
    ("fp16", "dtype float16, expected float32"),
    ("shape", r"shape \(3, 64\), expected \(4, 64\)"),
    ("key", "expected one tensor named 'prompt'"),
])
def test_bad_prompt_files_are_refused_by_name(built, tmp_path, content, match):
    bank, _ = built
    from safetensors.torch import save

    spec = load_spec(write_spec(tmp_path / "b", "bad", "nums"))
    path = tmp_path / "bad.safetensors"
    if content == "fp16":
        content = save({"prompt": torch.zeros(4, 64, dtype=torch.float16)})
    elif content == "shape":
        content = save({"prompt": torch.zeros(3, 64)})
    elif content == "key":
        content = save({"weights": torch.zeros(4, 64)})
    path.write_bytes(content)
    before = manifest_bytes(bank)
    with pytest.raises(BadInputError, match=match) as info:
        ingest.from_prompt_file(path, spec)
    assert str(path) in str(info.value)
    assert manifest_bytes(bank) == before


def test_checksum_failure_is_named_and_bank_unchanged(built, cfg, tmp_path):
    bank, _ = built
    victim = bank.root / "prompts" / "pets-xy.safetensors"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    problems = verify(bank)
    assert len(problems) == 1 and str(victim) in problems[0] and "checksum" in problems[0]
    result = CliRunner().invoke(app, ["verify"])
    assert result.exit_code != 0 and isinstance(result.exception, CorruptFileError)
    spec = load_spec(write_spec(tmp_path / "c", "c", "pets", ("x", "y")))
    before = manifest_bytes(bank)
    with pytest.raises(CorruptFileError, match=str(victim)):
        query(cfg.bank_dir, spec, exhaustive=True)
    assert manifest_bytes(bank) == before


def test_tampered_manifest_and_index_are_refused(built):
    bank, _ = built
    manifest = json.loads(bank.manifest_path.read_text())
    index = bank.root / next(iter(manifest["indexes"].values()))
    index.write_bytes(b"garbage")
    with pytest.raises(CorruptFileError, match=str(index)):
        bank.snapshot()
    manifest["entries"][0]["steps"] = 999
    bank.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CorruptFileError, match="manifest.json: manifest checksum mismatch"):
        bank.snapshot()


def test_empty_task_file_is_named(built, cfg, tmp_path):
    spec_path = write_spec(tmp_path / "e", "empty", "pets")
    (tmp_path / "e" / "pets.jsonl").write_text("")
    with pytest.raises(BadInputError, match=r"pets\.jsonl: no examples"):
        query(cfg.bank_dir, load_spec(spec_path))


def test_bad_ids_and_non_job_folders(tmp_path):
    for bad in ("../x", "a/b", "..", "", "UPPER", ".hidden"):
        with pytest.raises(BadInputError):
            validate_id(bad)
    with pytest.raises(BadInputError, match="neither a finished job folder"):
        ingest.from_result(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"junk")
    (tmp_path / "ptctl_meta.json").write_text("{}")
    with pytest.raises(CorruptFileError, match=str(tmp_path)):
        ingest.from_result(tmp_path)


def test_sources_manifest_errors_name_file_and_source(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text("model: tiny-random\nsources:\n  - name: a\n    task: {source: nope.jsonl}\n"
                    "    target: accuracy >= 0.5\n")
    with pytest.raises(BadInputError, match=r"sources\.yaml: sources\[0\] \(a\)"):
        load_sources(path)
    path.write_text("model: tiny-random\nsources:\n  - name: ../up\n")
    with pytest.raises(BadInputError, match=r"sources\[0\]: name"):
        load_sources(path)


# --- concurrency -----------------------------------------------------------------------------

def _publish_random(bank: Bank, n_new: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with bank.writing() as writer:
        cur = writer.current
        entries = list(cur.entries) if cur else []
        feats = {k: cur.features[k] for k in ("behaviour", "task")} if cur else {
            "behaviour": np.zeros((0, 8), np.float32), "task": np.zeros((0, 6), np.float32)}
        tensors = {}
        for i in range(n_new):
            data = encode_prompt(torch.from_numpy(rng.normal(size=(4, 8)).astype(np.float32)))
            eid = f"w{seed}-{i}"
            entries.append(Entry(id=eid, task="t", model="m", virtual_tokens=4, hidden_size=8,
                                 sha256=sha256_bytes(data)))
            tensors[eid] = data
        for kind, dim in (("behaviour", 8), ("task", 6)):
            feats[kind] = np.concatenate([feats[kind], rng.normal(size=(n_new, dim))]).astype(
                np.float32)
        clusters = cluster([e.id for e in entries], feats["behaviour"], "behaviour")
        writer.publish({"name": "m", "hidden_size": 8}, entries, tensors, feats, clusters)


def test_concurrent_adds_and_queries_see_whole_versions(tmp_path):
    bank = Bank(tmp_path / "m")
    _publish_random(bank, 3, 0)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(seed: int) -> None:
        try:
            for k in range(6):
                _publish_random(bank, 2, seed * 100 + k)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                snap = bank.snapshot()
                assert snap.features["behaviour"].shape[0] == len(snap.entries)
                for e in snap.entries:
                    snap.prompt(e)
                result = two_layer_search(snap.clusters, lambda ids: np.zeros(len(ids)))
                assert result.best in {e.id for e in snap.entries}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (1, 2)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors[0]
    snap = bank.snapshot()
    assert len(snap.entries) == 3 + 2 * 6 * 2 and snap.version == 1 + 12
    assert verify(bank) == []


# --- the search itself -----------------------------------------------------------------------

def test_two_layer_search_scores_about_sqrt_n():
    rng = np.random.default_rng(0)
    for n in (100, 1000, 10000):
        ids = [f"e{i}" for i in range(n)]
        features = rng.normal(size=(n, 16)).astype(np.float32)
        clusters = cluster(ids, features, "task")
        assert len(clusters.medoids) <= int(np.ceil(np.sqrt(n)))
        truth = {i: float(v) for i, v in zip(ids, rng.random(n))}
        placed = prepared_features(features, "task")
        result = two_layer_search(clusters, lambda c: np.array([truth[i] for i in c]),
                                  similarity=lambda c: np.zeros(len(c)),
                                  placement=lambda c: placed[[int(i[1:]) for i in c]])
        assert len(result.scored) == Budget().total(n) <= max(8, np.ceil(0.6 * np.sqrt(n)))
    with pytest.raises(ValueError, match="medoids"):
        Clusters("task", ["a"], [["b"]])


def test_nearest_entries_are_scored_before_the_medoids():
    """A cluster whose medoid scores badly on the new task can still hold its best start (the
    seed bank's tweet cluster on tweets-neg-vs-neutral): the entries nearest by task embedding
    are scored first, within the same budget."""
    clusters = Clusters("task", ["m1", "m2"], [["m1", "a", "b"], ["m2", "c", "best"]])
    loss = {"m1": 0.5, "a": 0.6, "b": 0.7, "m2": 2.0, "c": 2.1, "best": 0.1}
    near = {"best": 0.9, "c": 0.8, "m2": 0.7, "m1": 0.1, "a": 0.0, "b": 0.0}

    def search(nearest: int):
        return two_layer_search(clusters, lambda ids: np.array([loss[i] for i in ids]),
                                Budget(scale=0.1, minimum=4, nearest=nearest,
                                       distinct_nearest=False, medoid_order="medoid"),
                                lambda ids: np.array([near[i] for i in ids]))

    assert search(0).best == "m1"                  # medoids first: m2's cluster is never opened
    found = search(2)
    assert found.best == "best" and len(found.scored) <= 4
    assert list(found.scored)[:2] == ["best", "c"]
    with pytest.raises(ValueError, match="nearest"):
        Budget(nearest=-1)


def test_search_variants_reach_a_cluster_whose_medoid_looks_unrelated():
    """Copies of one prompt can fill every nearest slot, and a behaviour cluster's medoid can
    be unlike the task while a member is close: distinct_nearest takes the nearest entries
    from different clusters, medoid_order="member" ranks a cluster by its closest member,
    "spread" takes medoids far apart in the clustering features. The default has both
    guards (benchmarks/bank_search_scale.py; RESULTS sections 8-9)."""
    place = {"m1": [0.0, 0.0], "m2": [0.1, 0.0], "m3": [1.0, 0.0]}  # m2 behaves like m1

    def search(clusters, loss, near, **options):
        return two_layer_search(clusters, lambda ids: np.array([loss[i] for i in ids]),
                                Budget(scale=0.1, minimum=4, **options),
                                lambda ids: np.array([near[i] for i in ids]), None,
                                lambda ids: np.array([place.get(i, [0.5, 0.5]) for i in ids]))

    def previous(clusters, loss, near, **options):  # the search before spread+distinct
        return search(clusters, loss, near,
                      **{"distinct_nearest": False, "medoid_order": "medoid", **options})

    copies = Clusters("behaviour", ["m1", "m2"], [["m1", "dup1", "dup2"], ["m2", "best"]])
    copies_loss = {"m1": 1.0, "dup1": 1.0, "dup2": 1.0, "m2": 2.0, "best": 0.1}
    copies_near = {"dup1": 0.9, "dup2": 0.89, "m1": 0.8, "best": 0.5, "m2": 0.0}
    plain = previous(copies, copies_loss, copies_near)
    assert list(plain.scored)[:2] == ["dup1", "dup2"] and plain.best != "best"
    distinct = previous(copies, copies_loss, copies_near, distinct_nearest=True)
    assert list(distinct.scored)[:2] == ["dup1", "best"] and distinct.best == "best"

    unlike = Clusters("behaviour", ["m1", "m2", "m3"], [["m1", "a"], ["m2", "x"], ["m3", "best"]])
    loss = {"m1": 1.0, "a": 1.0, "m2": 2.0, "x": 2.0, "m3": 1.5, "best": 0.1}
    near = {"m1": 0.6, "a": 0.1, "m2": 0.5, "x": 0.4, "m3": 0.0, "best": 0.55}
    assert previous(unlike, loss, near, nearest=0).best != "best"      # layer 1: m1, m2
    member = previous(unlike, loss, near, nearest=0, medoid_order="member")
    assert list(member.scored)[:2] == ["m1", "m3"] and member.best == "best"
    spread = previous(unlike, loss, near, nearest=0, medoid_order="spread")
    assert list(spread.scored)[:2] == ["m1", "m3"] and spread.best == "best"

    for layout, loss_of, near_of in ((copies, copies_loss, copies_near), (unlike, loss, near)):
        shipped = search(layout, loss_of, near_of)
        assert shipped.best == "best" and len(shipped.scored) <= 4
    with pytest.raises(ValueError, match="clustering features"):
        two_layer_search(unlike, lambda ids: np.zeros(len(ids)), Budget(scale=0.1, minimum=4),
                         lambda ids: np.array([near[i] for i in ids]))
    with pytest.raises(ValueError, match="medoid_order"):
        Budget(medoid_order="centroid")


def test_selection_regret_searches_as_a_query_does():
    """The build's feature choice measures the search that queries run: with the entries' task
    embeddings, the nearest entries are scored first (the task's own entry stands in)."""
    ids = ["m1", "a", "b", "m2", "c", "best", "own"]
    clusters = Clusters("task", ["m1", "m2", "own"],
                        [["m1", "a", "b"], ["m2", "c", "best"], ["own"]])
    losses = np.array([[0.5, 0.6, 0.7, 2.0, 2.1, 0.1, 0.0]])
    features = np.array([[0, 1], [0, 1], [0, 1], [0.5, 0.5], [0.8, 0.2], [1, 0], [1, 0]])
    budget = Budget(scale=0.1, minimum=4)
    medoids_first = selection_regret(ids, losses, [6], clusters, budget)
    as_queried = selection_regret(ids, losses, [6], clusters, budget, task_features=features,
                                  placement=prepared_features(features, "task"))
    assert medoids_first["mean_regret"] == pytest.approx(0.4)
    assert as_queried["mean_regret"] == 0.0 and as_queried["mean_candidates"] <= 4


@pytest.mark.slow
def test_build_sources_through_the_job_registry(tmp_path, cfg):
    """`bank build --sources --submit`: each source is a ptctl job (local profile here)."""
    for kind in ("mood", "pets", "nums"):
        write_word_task(tmp_path / f"{kind}.jsonl", kind)
    (tmp_path / "sources.yaml").write_text(
        "model: tiny-random\ndefaults:\n  target: accuracy >= 0.99\n"
        "  prompt: {virtual_tokens: 4}\n  task: {eval_samples: 16, max_length: 24}\n"
        "  training: {global_batch_size: 4, micro_batch_size: 4, learning_rate: 0.1,"
        " max_steps: 6, eval_every: 3, checkpoint_every: 100}\nsources:\n"
        + "".join(f"  - name: {k}\n    task: {{source: {k}.jsonl}}\n"
                  for k in ("mood", "pets", "nums")))
    result = CliRunner().invoke(app, ["build", "--sources", str(tmp_path / "sources.yaml"),
                                      "--submit", "--profile", "local", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(data["added"]) == ["mood", "nums", "pets"]
    assert data["selection"]["chosen"] in ("behaviour", "task")
    assert verify(Bank.for_model(cfg.bank_dir, "tiny-random")) == []


# --- the committed seed bank and the convergence benchmark's bookkeeping ---------------------




def test_seed_bank_matches_its_sources_manifest():
    """The default bank_dir, the seed bank shipped in the package, is whole and holds one
    random-init entry per listed source, each recording the target it was tuned to and how many
    steps it ran."""
    seed = Path(load_config().bank_dir)
    assert seed == REPO / "ptctl" / "seed_bank"
    model, sources = load_sources(seed / "sources.yaml")
    assert model == "smollm2-135m" and len(sources) >= 12
    assert all(s.spec.prompt.init == "random" for s in sources)
    bank = Bank.for_model(str(seed), "smollm2-135m")
    assert verify(bank) == []
    snap = bank.snapshot(features=False)
    by_id = {e.id: e for e in snap.entries}
    assert sorted(by_id) == sorted(s.name for s in sources)
    for s in sources:
        entry = by_id[s.name]
        assert entry.target == str(s.spec.target)
        assert 1 <= entry.steps <= s.spec.training.max_steps
        assert entry.steps_to_target is None or entry.steps_to_target <= entry.steps


def test_bank_start_lr_rule_needs_a_complete_variant_at_most_0_8x_the_current_mean():
    lr_bench = benchmark_module("bank_start_lr")
    tasks = list(lr_bench.VALIDATION)

    def rows(lr, steps):
        return [{"task": t, "lr": lr, "steps_to_target": s} for t, s in zip(tasks, steps)]

    current = rows(0.05, [50] * len(tasks))
    faster = rows(0.005, [30] * len(tasks))                  # 0.6x: adopted
    assert lr_bench.decide(current + faster)[0] == 0.005
    assert lr_bench.decide(current + faster[:-1])[0] is None  # one task short: not a candidate
    censored = rows(0.015, [None] * 6 + [30] * (len(tasks) - 6))  # 110 counts against it
    adopted, summary, best = lr_bench.decide(current + censored)
    assert (adopted, best) == (None, 0.015)
    assert summary[0.015]["mean"] == pytest.approx((6 * 110 + 12 * 30) / 18)
    fewer = rows(0.015, [0] * (len(tasks) - 1) + [None])     # lower mean, one target fewer
    assert lr_bench.decide(current + fewer)[0] is None


def test_bank_objective_rules_need_every_cell_a_bank_gain_and_no_smaller_gap():
    obj = benchmark_module("bank_objective")

    def cell(init, objective, accuracies):
        return {(init, objective): {t: {"eval_curve": [[0, 0.1, 0.0], [10, a, 0.0], [100, a, 0.0]]}
                                    for t, a in zip(obj.TASKS, accuracies)}}

    n = len(obj.TASKS)
    runs = {**cell("bank", "vocabulary", [0.6] * n), **cell("bank", "label_words", [0.65] * n),
            **cell("random", "vocabulary", [0.5] * n), **cell("random", "label_words", [0.5] * n)}
    result = obj.decide(runs)
    assert result["gain"]["bank"] == pytest.approx(0.05) and result["bank_higher_on"] == n
    assert result["rule_a"] and not result["rule_b"]      # random gained nothing
    runs.update(cell("random", "label_words", [0.53] * n))  # gap 0.10 -> 0.12: A; and B
    assert obj.decide(runs)["rule_a"] and obj.decide(runs)["rule_b"]
    runs.update(cell("random", "label_words", [0.6] * n))   # random gains more: the gap shrinks
    assert not obj.decide(runs)["rule_a"] and obj.decide(runs)["rule_b"]
    few = [0.7] * 4 + [0.6] * (n - 4)                       # higher on 4 of 8 only
    runs.update(cell("bank", "label_words", few) | cell("random", "label_words", [0.5] * n))
    assert not obj.decide(runs)["rule_a"]
    del runs[("random", "label_words")][obj.TASKS[0]]
    assert obj.decide(runs) == {"complete": False}


def test_convergence_summary_counts_censored_runs_and_pairs_inits(tmp_path):
    conv = benchmark_module("bank_convergence")
    settings = {"eval_every": 5}

    def rec(task, init, seed, steps, prompt=None, score=None):
        return {"task": task, "init": init, "seed": seed, "steps_to_target": steps,
                "max_steps": 30, "settings": settings, "target": 0.8, "prompt_id": prompt,
                "eval_curve": [[0, 0.5, 1.0], [30, 0.9, 0.2]],
                "query": {"score": score, "candidates_scored": 8} if prompt else None}

    rows = [rec("a", "bank", s, v, "p", 1.0) for s, v in enumerate([0, 5, 10])]
    rows += [rec("a", "random", s, v) for s, v in enumerate([20, None, 10])]
    rows += [rec("a", "bank-exhaustive", s, v, "q", 0.9) for s, v in enumerate([5, 5, 10])]
    rows += [rec("b", "random", 0, 5)]            # no bank run to pair with: left out
    rows += [rec("a", "random", 2, 25)]           # a rerun replaces the earlier record
    summary = conv.summarise(rows)
    assert summary["censored"]["random"] == 1
    assert summary["paired_runs"] == 3
    # random: 20, censored -> 30 + 5, 25 -> median 25; bank: 0, 5, 10 -> 5
    assert summary["bank_random_medians"] == [5, 25]
    assert summary["bank_random_ratio"] == pytest.approx(0.2)
    (quality,) = summary["two_layer_vs_exhaustive"]
    assert (quality["two_layer_pick"], quality["exhaustive_pick"]) == ("p", "q")
    assert quality["two_layer_median"] == 5 and quality["exhaustive_median"] == 5
    assert quality["extra_steps"] == 0.0
    # What `ptctl sim gen --convergence` reads: one task, so no spread.
    from ptctl.sim.gen import load_convergence

    measured = conv.sim_convergence(summary)
    assert measured == {"bank_over_random_median": 0.2, "bank_over_random_sigma": 0.0}
    path = tmp_path / "measured.json"
    path.write_text(json.dumps(measured))
    assert load_convergence(path)["bank_over_random_median"] == 0.2


def test_convergence_learnable_tasks_are_those_random_init_reaches_on_most_seeds():
    conv = benchmark_module("bank_convergence")

    def rec(task, init, seed, steps):
        return {"task": task, "init": init, "seed": seed, "steps_to_target": steps,
                "max_steps": 30, "settings": {"eval_every": 5}, "target": 0.8,
                "prompt_id": "p" if init == "bank" else None,
                "eval_curve": [[0, 0.5, 1.0]], "query": None}

    rows = [rec("a", "bank", s, v) for s, v in enumerate([0, 5, 5])]
    rows += [rec("a", "random", s, v) for s, v in enumerate([10, None, 20])]   # 2 of 3
    rows += [rec("t", "bank", s, v) for s, v in enumerate([None, 0, None])]
    rows += [rec("t", "random", s, v) for s, v in enumerate([None, 30, None])]  # 1 of 3
    summary = conv.summarise(rows)
    # all six pairs: bank 0, 5, 5, 35, 0, 35 -> 5; random 10, 35, 20, 35, 30, 35 -> 32.5
    assert summary["bank_random_medians"] == [5, 32.5]
    # task t is out (random reached its target on one seed of three), whatever bank did there
    assert summary["learnable"] == {"tasks": ["a"], "paired_runs": 3,
                                    "bank_random_medians": [5, 20],
                                    "bank_random_ratio": 0.25}


def test_convergence_report_retargets_only_downwards():
    conv = benchmark_module("bank_convergence")
    run = {"task": "tweets-angry-vs-calm", "init": "random", "seed": 0, "target": 0.75,
           "steps_to_target": None, "max_steps": 20,
           "eval_curve": [[0, 0.5, 9.0], [5, 0.62, 3.0], [10, 0.7, 2.0], [20, 0.72, 1.0]]}
    assert conv.rule_target("tweets-angry-vs-calm", 0.5) == 0.75   # majority 0.5
    (low,) = conv.retarget([run], 0.25)                              # target 0.6 (0.625 -> 0.6)
    assert (low["target"], low["steps_to_target"]) == (0.6, 5)
    with pytest.raises(ValueError, match="above the recorded"):
        conv.retarget([run], 0.8)
