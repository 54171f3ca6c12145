"""Generated hostile inputs through the real readers: job specs (values at every field, YAML
text, bytes), data files, traces, convergence files, checkpoint records, registered jobs'
stored specs, config and profile files and throughput tables. Only PtctlError subclasses may
escape, each message one bounded line; nothing is written under the state folder.
PTCTL_FUZZ_EXAMPLES raises the per-test budget (default 40, ~20 s on 2 cores)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers import GOOD, run_cli, with_value
from ptctl.errors import MESSAGE_CHARS, PtctlError

EXAMPLES = int(os.environ.get("PTCTL_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 40,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


def only_known_errors(call) -> None:
    """Run `call`; a PtctlError must be one bounded line, anything else fails the test."""
    try:
        call()
    except PtctlError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) <= MESSAGE_CHARS, message[:300]
    assert not any(p.is_file() for p in Path(os.environ["PTCTL_HOME"]).rglob("*"))


# YAML/JSON-shaped values: scalars of every type and size, nested a little.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**40, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["90m", "99999999999d", "accuracy >= 0.5", "loss <= 1e999", "{text}",
                     "tiny-random", "tweet-sentiment", "x" * 5000, "../../etc/passwd",
                     "a\x00b", "1e30", "2030-01-01T00:00:00"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)


def field_paths(data: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in data.items():
        paths.append(prefix + key)
        if isinstance(value, dict):
            paths += field_paths(value, prefix + key + ".")
    return paths


FIELDS = field_paths(GOOD) + [
    "task.text_field", "task.label_field", "task.label_map", "task.template", "task.max_length",
    "task.eval_samples", "task.max_train_samples", "task.split_seed", "prompt.init_text",
    "prompt.add_to_bank", "training.checkpoint_every", "training.keep_checkpoints",
    "training.warmup_steps", "training.seed", "training.objective", "slurm.account",
    "slurm.qos", "slurm.mem_gb", "slurm.cpus_per_gpu", "slurm.setup", "slurm.sbatch_args",
    "unknown", "task.unknown"]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(FIELDS), values), min_size=1, max_size=3))
def test_spec_values_at_every_field(changes):
    from ptctl.jobs.spec import spec_from_dict

    data = GOOD
    for path, value in changes:
        data = with_value(path, value) if data is GOOD else _set(data, path, value)
    only_known_errors(lambda: spec_from_dict(data, origin="fuzz.yaml"))


def _set(data: dict, path: str, value) -> dict:
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value
    return data


GOOD_YAML = yaml.safe_dump(GOOD, sort_keys=False)
yaml_texts = st.one_of(
    st.text(max_size=300),
    st.builds(lambda n, open_, close: GOOD_YAML + "x: " + open_ * n + close * n,
              st.integers(0, 3000), st.sampled_from(["[", "{a: "]), st.sampled_from(["]", "}"])),
    st.builds(lambda pos, junk: GOOD_YAML[:pos] + junk + GOOD_YAML[pos:],
              st.integers(0, len(GOOD_YAML)),
              st.sampled_from(["&a ", "*a", "<<: *a\n", "!!python/object:os.system ", "\t",
                               "name: dup\n", "---\n", "%YAML 1.1\n", "9" * 5000, "\x00",
                               ": :", "? [1]\n: 2\n", "\ufeff", "!!binary AAAA\n"])),
    values.map(lambda v: yaml.safe_dump(v)))


@FUZZ
@given(st.one_of(yaml_texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.binary(max_size=300)))
@example(b"name: &a [" + b"*a," * 50 + b"]")
@example(b"\xff\xfe\x00\x01")
def test_spec_files(tmp_path, content):
    from ptctl.jobs.spec import load_spec

    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content)
    only_known_errors(lambda: load_spec(path))


csv_cells = st.one_of(st.text(max_size=20), st.sampled_from(['"', '""', '"a', 'a"b', ",", "\n",
                                                             "\r", "\x00", "x" * 140_000]))
csv_texts = st.builds(
    lambda header, rows: header + "".join(",".join(r) + "\n" for r in rows),
    st.sampled_from(["text,label\n", "label,text\n", "text\n", "", '"text,label\n']),
    st.lists(st.lists(csv_cells, max_size=4), max_size=6))
jsonl_texts = st.lists(st.one_of(values.map(json.dumps), st.text(max_size=30)),
                       max_size=5).map("\n".join)


@FUZZ
@given(st.sampled_from([".csv", ".jsonl"]),
       st.one_of(csv_texts.map(str.encode), jsonl_texts.map(str.encode),
                 st.binary(max_size=200)))
def test_data_files(tmp_path, suffix, content):
    from ptctl.jobs.spec import TaskSpec
    from ptctl.tuning.data import task_rows

    path = tmp_path / f"data{suffix}"
    path.write_bytes(content)
    only_known_errors(lambda: task_rows(TaskSpec(source=str(path), eval_samples=1)))


TRACE_HEADERS = ["job_id,arrival_s,deadline_s,model,iterations,iterations_bank,global_batch,"
                 "min_gpus,max_gpus\n", "job_id,submit_time,iteration,model_name,ddl,batch_size\n"]
trace_cells = st.one_of(st.sampled_from(["gpt-base", "32", "1", "0", "-1", "nan", "inf", "1e400",
                                         "5000", '"', "", "x" * 140_000]),
                        st.text(max_size=8), st.integers().map(str))


@FUZZ
@given(st.sampled_from(TRACE_HEADERS),
       st.lists(st.lists(trace_cells, min_size=5, max_size=10), max_size=5),
       st.binary(max_size=40))
def test_traces(tmp_path, header, rows, tail):
    from ptctl.sim.gen import prompt_tuning_throughputs
    from ptctl.sim.traces import check_trace_file, read_trace

    path = tmp_path / "trace.csv"
    path.write_bytes((header + "".join(",".join(r) + "\n" for r in rows)).encode() + tail)
    table = prompt_tuning_throughputs()
    only_known_errors(lambda: (check_trace_file(path), read_trace(path, table)))


@FUZZ
@given(st.one_of(st.dictionaries(st.sampled_from(["bank_over_random_median",
                                                  "bank_over_random_sigma",
                                                  "random_iterations_median",
                                                  "random_iterations_sigma", "x"]),
                                 values, max_size=4).map(json.dumps),
                 values.map(json.dumps), st.text(max_size=100)).map(str.encode)
       | st.binary(max_size=100))
def test_convergence_files(tmp_path, content):
    from ptctl.sim.gen import GenSpec, generate, load_convergence

    path = tmp_path / "conv.json"
    path.write_bytes(content)
    only_known_errors(lambda: generate(GenSpec(jobs=20), load_convergence(path)))


@FUZZ
@given(st.dictionaries(st.sampled_from(["format", "step", "state", "files", "extra"]), values,
                       max_size=5),
       st.booleans())
def test_checkpoint_records(tmp_path, record, keep_format):
    from ptctl.tuning import checkpoint as ck

    step = tmp_path / "step_1"
    step.mkdir(exist_ok=True)
    if keep_format:
        record["format"] = ck.FORMAT
    record = json.loads(json.dumps(record))  # as the file holds it (keys become strings)
    record["sha256"] = ck._sha256(ck._canonical({k: v for k, v in record.items()}))
    (step / ck.RECORD).write_text(json.dumps(record))
    (step / ck.TENSORS).write_bytes(b"")
    only_known_errors(lambda: ck.load_checkpoint(step))


@settings(max_examples=max(3, EXAMPLES // 10), deadline=None, derandomize=EXAMPLES <= 40,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.one_of(yaml_texts.map(str.encode), st.binary(max_size=100)))
def test_cli_wraps_every_spec_error_in_one_line(tmp_path, content):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content)
    result = run_cli("submit", str(path), "--dry-run", env={"PTCTL_PROFILE": "local"})
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    if result.returncode != 0:
        assert result.returncode in (1, 2), result.stderr[-2000:]
        assert result.stderr.count("\n") == 1 and len(result.stderr) <= MESSAGE_CHARS + 20
    assert not any(p.is_file() for p in Path(os.environ["PTCTL_HOME"]).rglob("*"))


def _stored_spec() -> dict:
    from datetime import datetime, timezone

    from ptctl.jobs.spec import resolved_spec_dict, spec_from_dict

    return resolved_spec_dict(spec_from_dict(GOOD), datetime.now(timezone.utc))


STORED_FIELDS = field_paths(_stored_spec()) + ["unknown", "task.unknown", "slurm.unknown"]


def _read_every_way(registry, job_id: str) -> None:
    """What status, result, resize, launch, the speed record and a round read of a job."""
    import time

    from ptctl.config import Profile
    from ptctl.planner import speeds
    from ptctl.scheduler.launch import attempt_profile
    from ptctl.scheduler.limits import GpuLimits
    from ptctl.scheduler.status import deadline_margin_s, outcome_words, status_record
    from ptctl.scheduler.views import load_job, load_live_jobs, plan

    profile = Profile(name="fuzz", executor="local", gpus_per_node=8, gpu_budget=8)
    job = load_job(registry, job_id)
    status_record(job, time.time())
    outcome_words(job.state, job.spec)
    deadline_margin_s(job.state, job.spec)
    GpuLimits.of(job.spec, profile).why_not(3)
    attempt_profile(registry, job_id, profile)
    speeds.estimate(registry.home, job.spec, "fuzz")
    plan(load_live_jobs(registry), profile, "prompttuner", time.time())


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(STORED_FIELDS), values), min_size=1, max_size=3))
def test_registered_job_specs(tmp_path, changes):
    """A registered job's spec changed on disk: every reader refuses it in one line naming the
    file, or works with it."""
    from ptctl.jobs.registry import Registry

    registry = Registry(tmp_path / "registry")  # not the state folder, which must stay empty
    job_id = (registry.ids() or [registry.create("fuzz", _stored_spec()).job_id])[0]
    data = _stored_spec()
    for path, value in changes:
        data = _set(data, path, value)
    registry.paths(job_id).spec.write_text(yaml.safe_dump(data))
    state = registry.paths(job_id).state.read_bytes()
    only_known_errors(lambda: _read_every_way(registry, job_id))
    assert registry.paths(job_id).state.read_bytes() == state  # readers change no record


config_keys = ["home", "profile", "policy", "bank_dir", "executor", "partition", "gpus_per_node",
               "gpu_budget", "time_limit_min", "setup", "sbatch_args", "checkpoint_s",
               "steps_per_s_prior", "mem_gb", "name", "ref", "unknown"]
config_texts = st.one_of(
    st.dictionaries(st.sampled_from(config_keys), values, max_size=4).map(yaml.safe_dump),
    yaml_texts)


@FUZZ
@given(st.one_of(config_texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.binary(max_size=300)))
@example(b"policy: edf\npolicy: fifo\n")
@example(b"gpu_budget: [" + b"[" * 3000 + b"]" * 3001)
def test_config_and_profile_files(tmp_path, content):
    from ptctl.config import load_config, load_profile

    (tmp_path / "ptctl.yaml").write_bytes(content)
    only_known_errors(load_config)
    (tmp_path / "ptctl.yaml").unlink()
    (tmp_path / "fuzz.yaml").write_bytes(content)
    only_known_errors(lambda: load_profile(load_config(), str(tmp_path / "fuzz.yaml")))


rate_cells = st.one_of(trace_cells, st.sampled_from(["1e-300", "1e300", "6.03", "0.0", "-0"]),
                       st.floats().map(str))


@FUZZ
@given(st.sampled_from(["global_batch_size,1,2,4\n", "global_batch_size\n", "batch,1\n",
                        "global_batch_size,1,1\n", "global_batch_size,0,x\n",
                        "global_batch_size,64," + "9" * 40 + "\n"]),
       st.lists(st.lists(rate_cells, min_size=1, max_size=5), max_size=5),
       st.binary(max_size=40))
def test_throughput_tables(tmp_path, header, rows, tail):
    from ptctl.planner.throughput import ThroughputTable

    (tmp_path / "tables").mkdir(exist_ok=True)
    path = tmp_path / "tables" / "gpt2.csv"
    path.write_bytes((header + "".join(",".join(r) + "\n" for r in rows)).encode() + tail)
    only_known_errors(lambda: ThroughputTable.from_elasticflow_dir(tmp_path / "tables"))
