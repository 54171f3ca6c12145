"""Job spec validation: every field's bad value is refused with a message naming the field."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from ptctl.errors import BadInputError
from ptctl.jobs.spec import load_spec, parse_deadline, parse_duration, spec_from_dict
from helpers import BAD_VALUES, GOOD, with_value

def test_good_spec_loads_and_resolves_deadline():
    spec = spec_from_dict(GOOD)
    assert spec.training.learning_rate == 0.3
    assert str(spec.target) == "accuracy >= 0.6"
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert spec.deadline_at(now) == now + timedelta(minutes=90)





@pytest.mark.parametrize("path,value,expected", BAD_VALUES,
                         ids=[f"{p}={v!r}" for p, v, _ in BAD_VALUES])
def test_bad_value_names_field(path, value, expected):
    data = with_value(path, value)
    if path == "prompt.init_text":
        data["prompt"]["init"] = "text"
    with pytest.raises(BadInputError) as err:
        spec_from_dict(data, origin="job.yaml")
    message = str(err.value)
    assert message.startswith("job.yaml: ")
    # The field path is named (label_words.* errors name the label itself).
    assert path in message, message
    assert expected in message, message
    assert "\n" not in message


@pytest.mark.parametrize("path", ["trainig", "training.learnig_rate", "task.lable_words",
                                  "gpus.maximum", "slurm.partiton", "prompt.tokens"])
def test_unknown_key_is_an_error(path):
    data = with_value(path, 1)
    with pytest.raises(BadInputError, match=rf"{path.replace('.', '[.]')}: unknown key"):
        spec_from_dict(data)


@pytest.mark.parametrize("field", ["name", "model", "task", "target", "deadline"])
def test_missing_required_field(field):
    data = copy.deepcopy(GOOD)
    del data[field]
    with pytest.raises(BadInputError, match=rf"{field}: missing \(required\)"):
        spec_from_dict(data)


def test_file_errors_name_the_file(tmp_path: Path):
    with pytest.raises(BadInputError, match="no such job spec file"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(BadInputError, match=r"bad.yaml: not valid YAML"):
        load_spec(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(BadInputError, match=r"scalar.yaml: expected a YAML mapping"):
        load_spec(scalar)


def test_relative_data_path_resolves_against_spec_folder(tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "a", "label": "x"}\n')
    data = with_value("task", {"source": "data/train.jsonl"})
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(data))
    spec = load_spec(tmp_path / "job.yaml")
    assert spec.task.source == str(tmp_path / "data" / "train.jsonl")


def test_task_shorthand_and_label_map():
    data = with_value("task", "bbc-topics")
    assert spec_from_dict(data).task.source == "bbc-topics"
    data = with_value("task", {"source": "bbc-topics",
                               "label_map": {"sport": "leisure", "entertainment": "leisure",
                                             "business": "serious"},
                               "label_words": {"leisure": "fun", "serious": "work"}})
    assert spec_from_dict(data).task.label_words == {"leisure": "fun", "serious": "work"}


def test_durations_and_iso_deadlines():
    assert parse_duration("1h30m") == timedelta(hours=1, minutes=30)
    assert parse_duration("1d") == timedelta(days=1)
    assert parse_duration("abc") is None
    when = parse_deadline("2030-01-02T03:04:05+00:00")
    assert when == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert parse_deadline("2030-01-02T03:04:05").tzinfo is not None


def test_hugging_face_ids(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert spec_from_dict(with_value("model", "HuggingFaceTB/SmolLM2-135M")).model
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: only what the local cache holds
    with pytest.raises(BadInputError, match=r"model: got 'HuggingFaceTB/SmolLM2-135M'"):
        spec_from_dict(with_value("model", "HuggingFaceTB/SmolLM2-135M"))
