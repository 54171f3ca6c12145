"""Test isolation: every test gets its own config layers, state folder and cache."""

from __future__ import annotations


import pytest

@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No user config leaks in; the state folder is per test. The model cache is shared."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("PTCTL_HOME", str(tmp_path / "ptctl-home"))
    for var in ("PTCTL_PROFILE", "PTCTL_POLICY", "PTCTL_BANK_DIR", "PTCTL_PROFILES_DIR", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    yield
