"""What several test modules share: running the CLI as a user would, small job specs, and the
Slurm test cluster's handles. Fixtures live in conftest.py; this module holds plain code."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
LOCAL = {"PTCTL_PROFILE": "local"}
SLURM = {"PTCTL_PROFILE": "localslurm"}
SCRIPTS = Path(__file__).resolve().parent.parent / "slurm_templates" / "local"
PIDFILE = Path(os.environ.get("PTCTL_SLURM_DIR", "/var/lib/ptctl-slurm")) / "run" / "slurmctld.pid"


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `ptctl` as a user would: a separate process, real exit code and streams."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "ptctl", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout)


# --- job specs --------------------------------------------------------------------------------

GOOD = {
    "name": "sentiment-demo",
    "model": "tiny-random",
    "task": {
        "source": "tweet-sentiment",
        "label_words": {"negative": "bad", "neutral": "okay", "positive": "good"},
    },
    "prompt": {"virtual_tokens": 8, "init": "random"},
    "training": {"global_batch_size": 8, "micro_batch_size": 4, "learning_rate": 0.3,
                 "max_steps": 50, "eval_every": 10},
    "target": "accuracy >= 0.6",
    "deadline": "90m",
    "gpus": {"min": 1, "max": 4},
    "slurm": {"partition": "debug", "time_limit_min": 30},
}


def with_value(path: str, value):
    data = copy.deepcopy(GOOD)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return data


# (field path, bad value, text the message must contain besides the path)
BAD_VALUES = [
    ("name", "bad name!", "expected 1-64 letters"),
    ("name", "", "expected"),
    ("model", "no-such-model", "built-in model"),
    ("model", "/nonexistent/model.gguf", "built-in model"),
    ("task.source", "no-such-task", "packaged task"),
    ("task.source", "/nonexistent/data.jsonl", "existing data file"),
    ("task.label_words", {"negative": "bad"}, "one word for each label"),
    ("task.label_words.negative", "  ", "non-empty word"),
    ("task.label_map", {"sarcastic": "negative"}, "labels of tweet-sentiment"),
    ("task.template", "no placeholder", "{text}"),
    ("task.max_length", 4, "8..4096"),
    ("task.eval_samples", 0, ">= 1"),
    ("task.max_train_samples", 0, ">= 1"),
    ("task.split_seed", "zero", "an integer"),
    ("task.text_field", 5, "a string"),
    ("task.label_field", [], "a string"),
    ("prompt.virtual_tokens", 0, "1..512"),
    ("prompt.init", "bank2", "one of bank, random, text"),
    ("prompt.init_text", None, "non-empty text"),
    ("prompt.add_to_bank", "yes", "true or false"),
    ("training.global_batch_size", 0, ">= 1"),
    ("training.micro_batch_size", 16, "1..global_batch_size"),
    ("training.learning_rate", -1, "0 < lr"),
    ("training.learning_rate", "fast", "a number"),
    ("training.max_steps", 0, ">= 1"),
    ("training.eval_every", 0, ">= 1"),
    ("training.checkpoint_every", 0, ">= 1"),
    ("training.keep_checkpoints", 0, ">= 1"),
    ("training.warmup_steps", 1000, "warmup_steps < max_steps"),
    ("training.seed", 1.5, "an integer"),
    ("target", "accuracy > 0.5", "'accuracy >= X'"),
    ("target", "accuracy >= 1.5", "(0, 1]"),
    ("target", "loss >= 0.2", "loss <= a positive value"),
    ("deadline", "tomorrow", "ISO-8601"),
    ("deadline", 90, "duration with a unit"),
    ("deadline", "0m", "ISO-8601"),
    ("gpus.min", 0, ">= 1"),
    ("gpus.max", 0, ">= min"),
    ("slurm.partition", 3, "a string"),
    ("slurm.account", 3, "a string"),
    ("slurm.qos", 3, "a string"),
    ("slurm.time_limit_min", 0, ">= 1"),
    ("slurm.mem_gb", -2, "> 0"),
    ("slurm.cpus_per_gpu", 0, ">= 1"),
    ("slurm.setup", "module load x", "a list"),
    ("slurm.sbatch_args", ["--x"], "a mapping"),
]


def tiny_spec(tmp_path: Path, **overrides) -> Path:
    data = {
        "name": "tiny",
        "model": "tiny-random",
        "task": {"source": "tweet-sentiment",
                 "label_words": {"negative": "bad", "neutral": "okay", "positive": "good"},
                 "max_train_samples": 64, "eval_samples": 16, "max_length": 32},
        "prompt": {"virtual_tokens": 4, "init": "random"},
        "training": {"global_batch_size": 4, "micro_batch_size": 2, "learning_rate": 0.3,
                     "max_steps": 12, "eval_every": 4, "checkpoint_every": 4},
        "target": "accuracy >= 0.99",
        "deadline": "30m",
        "gpus": {"min": 1, "max": 1},
    }
    data.update(overrides)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def steps_for_seconds(tmp_path: Path, training: dict, seconds: float, at_least: int) -> int:
    """Training steps that take about `seconds` on this machine now, never fewer than `at_least`.

    Tests that act on a running Slurm job (cancel, requeue, resize, time limit) need it to still
    be running when they act; an idle machine trains several times faster than a loaded one, so
    the job's length comes from a short measured run on one thread, as each Slurm task has."""
    folder = tmp_path / "calibration"
    folder.mkdir()
    spec = tiny_spec(folder, name="speed", training=training | {
        "max_steps": 200, "eval_every": 200, "checkpoint_every": 200})
    result = run_cli("run", str(spec), "--dir", str(folder / "run"), "--json",
                     env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode == 3, result.stderr  # ran all its steps, short of its target
    speed = json.loads((folder / "run" / "progress.json").read_text())["steps_per_s"]
    return max(at_least, int(speed * seconds))


def benchmark_module(name: str):
    """A script of benchmarks/ loaded as a module (they are scripts, not a package), so tests
    can check the rules their figures rest on."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RecordingBackend:
    """Stands in for the scheduler backend in tests of round logic: signals are recorded, not
    sent, and no attempt is found by name. Subclasses say how attempts are submitted and
    polled."""

    def __init__(self) -> None:
        self.signals: list = []

    def find_by_name(self, name):
        return None

    def signal(self, attempt_id, sig):
        self.signals.append((attempt_id, sig))


def use_backend(monkeypatch, fake):
    """Every scheduler module that asks for a backend gets `fake`."""
    from ptctl.scheduler import control, launch, round as round_mod, views

    for module in (control, launch, round_mod, views):
        monkeypatch.setattr(module, "backend_for", lambda profile: fake)
    return fake


# --- the local Slurm cluster --------------------------------------------------------------------

def slurm_unavailable(reason: str) -> None:
    if os.environ.get("PTCTL_REQUIRE_SLURM") == "1":
        pytest.fail(f"{reason} (PTCTL_REQUIRE_SLURM=1)")
    pytest.skip(reason)


@contextlib.contextmanager
def slurmctld_down():
    """slurmctld stopped for the body, then started again with start.sh (needs root)."""
    if os.geteuid() != 0 or not PIDFILE.exists():
        slurm_unavailable("stopping slurmctld needs root and a cluster started by start.sh")
    subprocess.run(["scontrol", "shutdown", "slurmctld"], timeout=30, check=True)
    try:
        deadline = time.monotonic() + 20
        while PIDFILE.exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # slurmctld removes its pid file on exit
        yield
    finally:
        restart = subprocess.run([str(SCRIPTS / "start.sh")], capture_output=True, text=True,
                                 timeout=120)
        assert restart.returncode == 0, restart.stdout + restart.stderr


def rebalance_until(job_id: str, phases: set[str], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        result = run_cli("rebalance", "--json", "--wait-s", "5", env=SLURM)
        assert result.returncode == 0, result.stderr
        status = json.loads(run_cli("status", job_id, "--json", env=SLURM).stdout)[0]
        if status["phase"] in phases:
            return status
        assert time.monotonic() < deadline, f"{job_id} still {status['phase']}: {status}"
        time.sleep(2)


# --- backends ---------------------------------------------------------------------------------

def wait_for_status(backend, attempt_id: str, done, timeout: float = 60):
    """Poll until `done(status)` holds for the attempt's status (None when not reported)."""
    deadline = time.monotonic() + timeout
    while True:
        status = backend.poll([attempt_id]).get(attempt_id)
        if done(status):
            return status
        assert time.monotonic() < deadline, f"attempt {attempt_id}: still {status}"
        time.sleep(0.5)


def check_backend_runs_and_cancels(backend, tmp_path: Path) -> None:
    """What the scheduler relies on, whatever the backend: a submitted attempt is reported
    alive, found by its name where names are searchable, polled with others in one call,
    survives a signal it does not handle, and is reported ended once cancelled (the task waits
    for a signal with a handler: cancel's SIGTERM, as training does); a short attempt is
    reported ended by itself."""
    import functools
    import signal

    name = f"ptctl-backend-test-{os.getpid()}"
    short = backend.submit(functools.partial(time.sleep, 0), folder=tmp_path / "logs" / "%j",
                           gpus=1, name=f"{name}-short")
    long = backend.submit(signal.pause, folder=tmp_path / "logs" / "%j", gpus=1, name=name)
    try:
        alive = backend.poll([long, short])[long]
        assert not alive.finished
        assert backend.find_by_name(name) in (None, long)
        assert backend.find_by_name(f"{name}-never-submitted") is None
        wait_for_status(backend, short, lambda s: s is None or s.finished)
        wait_for_status(backend, long, lambda s: s is not None and s.state == "RUNNING")
        backend.signal(long, signal.SIGCONT)
        assert not backend.poll([long])[long].finished
    finally:
        backend.cancel(long)
    wait_for_status(backend, long, lambda s: s is None or s.finished)
    assert backend.find_by_name(name) is None


# --- Prompt Bank tasks ----------------------------------------------------------------------

WORDS = {
    "mood": (["great", "good", "happy", "nice"], ["bad", "awful", "sad", "poor"]),
    "pets": (["cat", "dog", "horse", "cow"], ["red", "blue", "green", "pink"]),
    "nums": (["one", "two", "three", "four"], ["apple", "pear", "plum", "fig"]),
}


def write_word_task(path: Path, kind: str, n: int = 120) -> Path:
    """A two-class task of short word lists (`WORDS[kind]`), labels yes/no."""
    rng = random.Random(kind)
    a, b = WORDS[kind]
    with path.open("w") as f:
        for i in range(n):
            words = a if i % 2 else b
            text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 5)))
            f.write(json.dumps({"text": text, "label": "yes" if i % 2 else "no"}) + "\n")
    return path


def write_spec(folder: Path, name: str, kind: str, words=("yes", "no"), steps: int = 6,
               init: str = "bank", virtual_tokens: int = 4) -> Path:
    """A tiny-random job spec over a `write_word_task` task answered with `words`."""
    folder.mkdir(parents=True, exist_ok=True)
    write_word_task(folder / f"{kind}.jsonl", kind)
    spec = {"name": name, "model": "tiny-random", "target": "accuracy >= 0.9", "deadline": "1h",
            "prompt": {"virtual_tokens": virtual_tokens, "init": init},
            "task": {"source": f"{kind}.jsonl", "eval_samples": 16, "max_length": 24,
                     "label_words": {"yes": words[0], "no": words[1]}},
            "training": {"global_batch_size": 4, "micro_batch_size": 4, "learning_rate": 0.1,
                         "max_steps": steps, "eval_every": 3, "checkpoint_every": 100}}
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(spec))
    return path
