"""Layered configuration and cluster profiles.

Later layers win: built-in defaults < /etc/ptctl/config.yaml < ${XDG_CONFIG_HOME}/ptctl/config.yaml
< ./ptctl.yaml < PTCTL_* environment variables < command-line flags. Every effective value
remembers where it came from, so `ptctl config show` can say why a value is what it is.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from ptctl.errors import BadInputError, NotFoundError
from ptctl.safeload import load_yaml


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback)


def _shipped(folder: str) -> str:
    """A folder shipped inside the package, so that defaults hold in any install, not only in a
    checkout of the repository."""
    return str(files("ptctl") / folder)


def config_files() -> list[tuple[str, Path]]:
    """(layer name, path) in precedence order, lowest first."""
    return [
        ("system", Path("/etc/ptctl/config.yaml")),
        ("user", _xdg("XDG_CONFIG_HOME", ".config") / "ptctl" / "config.yaml"),
        ("project", Path.cwd() / "ptctl.yaml"),
    ]


# Config keys: name -> (default factory, type, help). PTCTL_<NAME upper> overrides each.
CONFIG_KEYS: dict[str, tuple[Any, type, str]] = {
    "home": (lambda: str(_xdg("XDG_STATE_HOME", ".local/state") / "ptctl"), str,
             "state folder: the job registry (must be on a shared filesystem on a cluster)"),
    "profile": (lambda: "local" if shutil.which("sbatch") is None else "slurm", str,
                "cluster profile name or YAML path (default: local without sbatch, else slurm)"),
    "profiles_dir": (lambda: _shipped("profiles"), str, "folder of cluster profile YAML files"),
    "bank_dir": (lambda: _shipped("seed_bank"), str,
                 "Prompt Bank root (one bank per model under it)"),
    "model_cache": (lambda: str(_xdg("XDG_CACHE_HOME", ".cache") / "ptctl" / "models"), str,
                    "where converted built-in models are cached"),
    "policy": (lambda: "prompttuner", str, "scheduling policy used by submit and rebalance"),
}


@dataclass
class Setting:
    value: Any
    source: str


@dataclass
class Config:
    settings: dict[str, Setting]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["settings"][name].value
        except KeyError:
            raise AttributeError(name) from None

    def as_rows(self) -> list[tuple[str, Any, str]]:
        return [(k, s.value, s.source) for k, s in self.settings.items()]


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    """A config or profile file, within safeload's limits (size, depth, no aliases nor
    duplicate keys)."""
    data = load_yaml(path, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a YAML mapping for {what}")
    return data


def load_config(flags: dict[str, Any] | None = None) -> Config:
    """Resolve every config key through the layers; unknown keys in a file are errors."""
    settings = {k: Setting(default(), "default") for k, (default, _, _) in CONFIG_KEYS.items()}
    for layer, path in config_files():
        if not path.is_file():
            continue
        for key, value in _read_yaml(path, "ptctl config").items():
            if key not in CONFIG_KEYS:
                raise BadInputError(f"{path}: {key}: unknown config key (expected one of: "
                                    f"{', '.join(CONFIG_KEYS)})")
            if not isinstance(value, str):
                raise BadInputError(f"{path}: {key}: got {value!r}, expected a string")
            settings[key] = Setting(value, f"{layer} ({path})")
    for key in CONFIG_KEYS:
        env = f"PTCTL_{key.upper()}"
        if os.environ.get(env):
            settings[key] = Setting(os.environ[env], f"env {env}")
    for key, value in (flags or {}).items():
        if value is not None:
            settings[key] = Setting(value, "flag")
    return Config(settings)


@dataclass
class Profile:
    """How ptctl reaches a cluster: the executor, where to submit, what it may use.

    `executor` is `local` (submitit's local executor: processes on this machine) or `slurm`.
    Resize costs (seconds) feed the planner's model of what a checkpoint-and-resubmit costs;
    `resize_hold_s` and `reclaim_min_gain` are the prompttuner policy's hysteresis here (no
    shrink within that long of a resize; a shrink must save that many times its cost).
    """

    name: str
    executor: str = "slurm"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_node: int = 8
    gpu_budget: int = 8
    time_limit_min: int = 240
    signal_lead_s: int = 90
    cpus_per_gpu: int = 1
    mem_gb: float | None = None
    setup: list[str] = field(default_factory=list)
    sbatch_args: dict[str, str] = field(default_factory=dict)
    mail_type: str | None = None  # sbatch --mail-type / --mail-user
    mail_user: str | None = None
    checkpoint_s: float = 5.0
    queue_wait_s: float = 15.0
    start_s: float = 10.0
    model_load_s: float = 5.0
    max_attempts: int = 3
    resize_hold_s: float = 600.0
    reclaim_min_gain: float = 2.0
    steps_per_s_prior: float | None = None  # per GPU, for shapes the speed record lacks
    ref: str = ""  # how it was named (a name or a YAML path): jobs record it to reload it

    def __post_init__(self) -> None:
        checks = [
            ("executor", self.executor in ("local", "slurm"), "local or slurm"),
            ("gpus_per_node", isinstance(self.gpus_per_node, int) and self.gpus_per_node >= 1,
             "an integer >= 1"),
            ("gpu_budget", isinstance(self.gpu_budget, int) and self.gpu_budget >= 1,
             "an integer >= 1"),
            ("time_limit_min", isinstance(self.time_limit_min, int) and self.time_limit_min >= 1,
             "minutes >= 1"),
            ("signal_lead_s", isinstance(self.signal_lead_s, int) and 0 <= self.signal_lead_s,
             "seconds >= 0"),
            ("cpus_per_gpu", isinstance(self.cpus_per_gpu, int) and self.cpus_per_gpu >= 1,
             "an integer >= 1"),
            ("max_attempts", isinstance(self.max_attempts, int) and self.max_attempts >= 1,
             "an integer >= 1"),
            ("setup", isinstance(self.setup, list) and all(isinstance(s, str) for s in self.setup),
             "a list of shell lines"),
            ("sbatch_args", isinstance(self.sbatch_args, dict), "a mapping of sbatch options"),
        ]
        for name_, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name_}: got {getattr(self, name_)!r}, expected {expected}")
        for name_ in ("checkpoint_s", "queue_wait_s", "start_s", "model_load_s",
                      "resize_hold_s", "reclaim_min_gain"):
            value = getattr(self, name_)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name_}: got {value!r}, expected seconds >= 0")
        prior = self.steps_per_s_prior
        if prior is not None and not (isinstance(prior, (int, float)) and prior > 0):
            raise ValueError(f"steps_per_s_prior: got {prior!r}, expected steps/s > 0")

    def with_overrides(self, overrides: dict[str, Any]) -> "Profile":
        """The profile with a job spec's `slurm:` overrides applied."""
        return dataclasses.replace(self, **overrides)


BUILTIN_PROFILES: dict[str, dict[str, Any]] = {
    # The embedded default: no Slurm, jobs run as local processes through submitit.
    "local": {"executor": "local", "gpus_per_node": 1, "gpu_budget": 1, "queue_wait_s": 0.0},
    # A Slurm cluster with every value left to the cluster's defaults.
    "slurm": {"executor": "slurm"},
}


def list_profiles(cfg: Config) -> dict[str, str]:
    """Profile name -> where it is defined."""
    found = {name: "built-in" for name in BUILTIN_PROFILES}
    folder = Path(cfg.profiles_dir)
    if folder.is_dir():
        for path in sorted(folder.glob("*.yaml")):
            found[path.stem] = str(path)
    return found


def load_profile(cfg: Config, name_or_path: str | None = None) -> Profile:
    """A profile by name (profiles_dir, then built-ins) or by YAML path."""
    ref = name_or_path or cfg.profile
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        data, origin = _read_yaml(path, "cluster profile"), str(path)
        name = data.pop("name", path.stem)
        ref = str(path.resolve())
    else:
        candidate = Path(cfg.profiles_dir) / f"{ref}.yaml"
        if candidate.is_file():
            data, origin = _read_yaml(candidate, "cluster profile"), str(candidate)
            name = data.pop("name", ref)
        elif ref in BUILTIN_PROFILES:
            data, origin, name = dict(BUILTIN_PROFILES[ref]), "built-in", ref
        else:
            raise NotFoundError(f"profile {ref!r}: not found (known: "
                                f"{', '.join(list_profiles(cfg))})")
    known = {f.name for f in dataclasses.fields(Profile)} - {"ref"}
    for key in data:
        if key not in known:
            raise BadInputError(f"{origin}: {key}: unknown profile key (expected one of: "
                                f"{', '.join(sorted(known - {'name'}))})")
    try:
        return Profile(name=name, ref=ref, **data)
    except ValueError as exc:
        raise BadInputError(f"{origin}: {exc}") from None
