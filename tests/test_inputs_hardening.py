"""Hostile inputs through the CLI as a user would feed them: each gets one bounded line on
stderr, its documented exit code, no traceback, and nothing written under the state folder."""

from __future__ import annotations

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
