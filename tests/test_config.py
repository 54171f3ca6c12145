"""Layered config: later layers win and every value names its source."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import ptctl
from helpers import run_cli
from ptctl.config import load_config, load_profile
from ptctl.errors import BadInputError, NotFoundError


def test_layers_later_wins(tmp_path: Path, monkeypatch):
    user = tmp_path / "xdg-config" / "ptctl" / "config.yaml"
    user.parent.mkdir(parents=True)
    user.write_text("policy: edf\nprofile: from-user\n")
    (tmp_path / "ptctl.yaml").write_text("profile: from-project\n")
    monkeypatch.delenv("PTCTL_HOME")
    cfg = load_config()
    assert cfg.policy == "edf" and cfg.settings["policy"].source.startswith("user")
    assert cfg.profile == "from-project" and cfg.settings["profile"].source.startswith("project")
    monkeypatch.setenv("PTCTL_PROFILE", "from-env")
    assert load_config().profile == "from-env"
    assert load_config({"profile": "from-flag"}).settings["profile"].source == "flag"
    assert load_config().settings["home"].value == str(tmp_path / "xdg-state" / "ptctl")


def test_unknown_config_key_is_an_error(tmp_path: Path):
    (tmp_path / "ptctl.yaml").write_text("profle: local\n")
    with pytest.raises(BadInputError, match=r"ptctl.yaml: profle: unknown config key"):
        load_config()


def test_profiles_builtin_file_and_errors(tmp_path: Path):
    cfg = load_config({"profiles_dir": str(tmp_path)})
    assert load_profile(cfg, "local").executor == "local"
    (tmp_path / "mine.yaml").write_text("partition: gpu\ngpu_budget: 16\n")
    prof = load_profile(cfg, "mine")
    assert (prof.partition, prof.gpu_budget, prof.executor) == ("gpu", 16, "slurm")
    (tmp_path / "bad.yaml").write_text("gpu_budget: -1\n")
    with pytest.raises(BadInputError, match=r"bad.yaml: gpu_budget: got -1"):
        load_profile(cfg, "bad")
    (tmp_path / "typo.yaml").write_text("partiton: gpu\n")
    with pytest.raises(BadInputError, match=r"typo.yaml: partiton: unknown profile key"):
        load_profile(cfg, "typo")
    with pytest.raises(NotFoundError, match="profile 'nope'"):
        load_profile(cfg, "nope")


def test_shipped_profiles_are_valid():
    cfg = load_config()
    assert Path(cfg.profiles_dir) == Path(ptctl.__file__).parent / "profiles"
    for name in ("local", "localslurm", "example-hpc"):
        load_profile(cfg, name)


def test_config_show_cli_json_and_sources():
    result = run_cli("--profile", "local", "config", "show", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["profile"] == {"value": "local", "source": "flag"}
    assert data["home"]["source"] == "env PTCTL_HOME"


def test_config_show_human_has_no_colour_when_piped():
    result = run_cli("config", "show")
    assert result.returncode == 0
    assert "\x1b[" not in result.stdout and "home" in result.stdout


def test_usage_error_exit_2():
    result = run_cli("config", "nonsense")
    assert result.returncode == 2


@pytest.mark.parametrize("text, expected", [
    ("policy: edf\npolicy: fifo\n", "line 2: duplicate key 'policy'"),
    ("policy: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 32"),
    ("a: &a [x, x]\npolicy: *a\n", "YAML aliases (*a) are not allowed"),
    ("home: " + "x" * 2_000_000 + "\n", "over the 1 MiB limit"),
])
def test_config_and_profile_files_are_read_within_limits(tmp_path: Path, text, expected):
    (tmp_path / "ptctl.yaml").write_text(text)
    with pytest.raises(BadInputError, match=r"ptctl\.yaml: .*" + re.escape(expected)):
        load_config()
    result = run_cli("config", "show")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "ptctl.yaml" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "ptctl.yaml").unlink()
    profile = tmp_path / "mine.yaml"
    profile.write_text(text.replace("policy", "partition").replace("home", "partition"))
    with pytest.raises(BadInputError, match=r"mine\.yaml: .*" + re.escape(
            expected.replace("policy", "partition"))):
        load_profile(load_config(), str(profile))
