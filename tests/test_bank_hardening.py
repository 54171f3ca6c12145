"""A Prompt Bank's files are data from a shared folder: a tampered manifest (paths leaving the
bank, bad ids or types, missing fields), a `.lock` that is a folder, leftovers of a killed
writer, and read-only commands on a bank that does not exist. Each case goes through the CLI
as a user would, and checks the exit code, one bounded line on stderr, and that nothing
outside the bank was read into a result, written or deleted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli, tiny_spec

from ptctl.bank.cluster import cluster
from ptctl.bank.manifest import digest
from ptctl.bank.store import Bank, Entry, encode_prompt, sha256_bytes

TESTS = Path(__file__).resolve().parent


def publish_random(bank: Bank, ids: list[str], seed: int = 0) -> None:
    """A version adding `ids` with random prompts and features (no model needed)."""
    rng = np.random.default_rng(seed)
    with bank.writing() as writer:
        cur = writer.current
        entries = list(cur.entries) if cur else []
        feats = dict(cur.features) if cur else {"behaviour": np.zeros((0, 8), np.float32),
                                                "task": np.zeros((0, 6), np.float32)}
        tensors = {}
        for eid in ids:
            data = encode_prompt(torch.from_numpy(rng.normal(size=(4, 8)).astype(np.float32)))
            entries.append(Entry(id=eid, task="t", model="m", virtual_tokens=4, hidden_size=8,
                                 sha256=sha256_bytes(data)))
            tensors[eid] = data
        for kind, dim in (("behaviour", 8), ("task", 6)):
            feats[kind] = np.concatenate([feats[kind], rng.normal(size=(len(ids), dim))]
                                         ).astype(np.float32)
        clusters = cluster([e.id for e in entries], feats["behaviour"], "behaviour")
        writer.publish({"name": "m", "hidden_size": 8}, entries, tensors, feats, clusters)


@pytest.fixture
def bank(tmp_path) -> Bank:
    """A three-entry bank for model "m" under tmp_path/banks."""
    made = Bank(tmp_path / "banks" / "m")
    publish_random(made, ["a", "b", "c"])
    return made


def rewrite(bank: Bank, change) -> None:
    """Edit the manifest as an attacker would: checksum recomputed, so only the checks on
    what it says can refuse it."""
    manifest = json.loads(bank.manifest_path.read_text())
    change(manifest)
    manifest["manifest_sha256"] = digest(manifest)
    bank.manifest_path.write_text(json.dumps(manifest))


def refused(result: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The one stderr line of a refused command, checked."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 500, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def bank_cli(bank: Bank, *args: str) -> subprocess.CompletedProcess:
    return run_cli("bank", *args, "--bank-dir", str(bank.root.parent))


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


# --- paths the manifest names -------------------------------------------------------------

def test_manifest_paths_outside_the_bank_are_refused_and_never_deleted(bank, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("not the bank's")
    sha = sha256_bytes(victim.read_bytes())
    manifest = bank.manifest_path
    for bad in ("../../victim.txt", str(victim), "prompts/../../../victim.txt"):
        rewrite(bank, lambda m: m["files"].__setitem__(bad, sha))
        line = refused(bank_cli(bank, "verify"), 1, str(manifest), "files", repr(bad))
        assert "not a bank file" in line
        # rm would publish a manifest without `bad`, then delete it as a dropped file
        refused(bank_cli(bank, "rm", "a"), 1, str(manifest), "files")
        assert victim.read_text() == "not the bank's"
        rewrite(bank, lambda m: m["files"].pop(bad))
    assert bank_cli(bank, "verify").returncode == 0


def test_index_outside_the_bank_is_not_read(bank, tmp_path):
    outside = tmp_path / "outside.faiss"
    outside.write_bytes((bank.root / "index" / "v1.task.faiss").read_bytes())
    sha = sha256_bytes(outside.read_bytes())

    def point_outside(m):
        del m["files"][m["indexes"]["task"]]
        m["indexes"]["task"] = str(outside)
        m["files"][str(outside)] = sha

    rewrite(bank, point_outside)
    refused(bank_cli(bank, "verify"), 1, str(bank.manifest_path), "files", str(outside))


def test_symlinks_leaving_the_bank_are_refused(bank, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (bank.root / "prompts").rename(elsewhere)
    (bank.root / "prompts").symlink_to(elsewhere)  # same files, same checksums, outside
    before = files_under(elsewhere)
    refused(bank_cli(bank, "verify"), 1, "prompts/a.safetensors", "outside the bank")
    refused(bank_cli(bank, "rm", "a"), 1, "outside the bank")
    assert files_under(elsewhere) == before


# --- structure and types ----------------------------------------------------------------------

@pytest.mark.parametrize("change, field", [
    (lambda m: m["entries"][1].__setitem__("id", "../x"), "entries[1].id"),
    (lambda m: m.pop("model"), "model"),
    (lambda m: m["model"].pop("hidden_size"), "model.hidden_size"),
    (lambda m: m["entries"][0].__setitem__("virtual_tokens", "4"), "entries[0].virtual_tokens"),
    (lambda m: m["entries"][0].__setitem__("virtual_tokens", 0), "entries[0]"),
    (lambda m: m["entries"][2].pop("sha256"), "entries[2]"),
    (lambda m: m.__setitem__("entries", {"a": 1}), "entries"),
    (lambda m: m.__setitem__("indexes", ["x"]), "indexes"),
    (lambda m: m["clusters"].__setitem__("members", "abc"), "clusters.members"),
    (lambda m: m.__setitem__("version", "2"), "version"),
])
def test_bad_manifest_fields_are_a_corrupt_bank_naming_the_field(bank, change, field):
    rewrite(bank, change)
    refused(bank_cli(bank, "verify"), 1, f"{bank.manifest_path}: {field}")


def test_every_command_refuses_a_bad_entry_id_and_changes_nothing(bank):
    rewrite(bank, lambda m: m["entries"][0].__setitem__("id", "../../x"))
    before = files_under(bank.root)
    for args in (["ls"], ["show", "b"], ["rm", "b"]):
        refused(bank_cli(bank, *args), 1, f"{bank.manifest_path}: entries[0].id")
    assert files_under(bank.root) == before


# --- read-only commands create nothing --------------------------------------------------------

def test_read_only_commands_on_a_missing_bank_create_nothing(tmp_path):
    banks = tmp_path / "banks"
    spec = tiny_spec(tmp_path, prompt={"virtual_tokens": 4, "init": "bank"})
    for args in (["bank", "ls", "--model", "tiny-random"],
                 ["bank", "verify", "--model", "tiny-random"],
                 ["bank", "query", str(spec)]):
        refused(run_cli(*args, "--bank-dir", str(banks)), 1, "no Prompt Bank")
    result = run_cli("submit", str(spec), "--dry-run", env={"PTCTL_BANK_DIR": str(banks),
                                                            "PTCTL_PROFILE": "local"})
    assert result.returncode == 0, result.stderr
    assert not banks.exists()


def test_readers_of_a_bank_without_lock_file_create_none(bank):
    bank.lock_path.unlink()
    before = files_under(bank.root)
    assert bank_cli(bank, "ls").returncode == 0
    assert bank_cli(bank, "verify").returncode == 0
    assert files_under(bank.root) == before and not bank.lock_path.exists()


def test_lock_that_is_a_folder_is_one_line(bank):
    bank.lock_path.unlink()
    bank.lock_path.mkdir()
    for args in (["ls"], ["rm", "a"], ["verify", "--repair"]):
        refused(bank_cli(bank, *args), 1, str(bank.lock_path))
    assert Bank(bank.root).read_manifest()["version"] == 1


# --- leftovers of interrupted writers -------------------------------------------------------

def kill_during_publish(root: str) -> None:
    """Publish a new version and SIGKILL this process just before the new index is renamed
    into place: the new prompt file is written, the index is a temp file, the manifest old."""
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith(".faiss"):
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)

    os.replace = replace
    publish_random(Bank(root), ["killed"], seed=1)


def test_a_killed_writer_leaves_files_that_verify_names_and_repair_removes(bank):
    before = files_under(bank.root)
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_bank_hardening as t; "
            f"t.kill_during_publish({str(bank.root)!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = sorted(set(files_under(bank.root)) - set(before))
    assert "prompts/killed.safetensors" in left and any(
        p.startswith("index/.v2.") and p.endswith(".tmp") for p in left), left
    result = bank_cli(bank, "verify")
    assert result.returncode == 1
    for rel in left:
        assert str(bank.root / rel) in result.stderr
    result = bank_cli(bank, "verify", "--repair", "--json")
    assert result.returncode == 0, result.stderr
    assert sorted(json.loads(result.stdout)["removed"]) == sorted(
        str(bank.root / rel) for rel in left)
    assert files_under(bank.root) == before


def test_the_next_writer_removes_leftovers_and_nothing_else(bank, tmp_path):
    orphan = bank.root / "prompts" / "orphan.safetensors"
    orphan.write_bytes((bank.root / "prompts" / "a.safetensors").read_bytes())
    temp = bank.root / "index" / ".v2.task.faiss.x1y2.tmp"
    temp.write_bytes(b"half an index")
    beside = tmp_path / "banks" / "keep.txt"
    beside.write_text("beside the bank, not in it")
    notes = bank.root / "NOTES.txt"
    notes.write_text("an admin's notes: not a file a writer leaves")
    result = bank_cli(bank, "verify")
    assert result.returncode == 1 and str(orphan) in result.stderr and str(temp) in result.stderr
    result = bank_cli(bank, "rm", "c")
    assert result.returncode == 0, result.stderr
    assert not orphan.exists() and not temp.exists() and beside.exists() and notes.exists()
    assert bank_cli(bank, "verify", "--repair").returncode == 0 and notes.exists()
