"""One rule for the modes of a job's files: they follow the umask, like the state folder's
(a teammate who may read a job's state may read its checkpoints and result too)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from helpers import run_cli, tiny_spec


def test_a_jobs_files_follow_the_umask(tmp_path: Path):
    spec = tiny_spec(tmp_path, training={"global_batch_size": 4, "micro_batch_size": 2,
                                         "learning_rate": 0.3, "max_steps": 4,
                                         "eval_every": 4, "checkpoint_every": 2})
    old = os.umask(0o022)
    try:  # a fresh model cache: it is built under this umask
        result = run_cli("run", str(spec), "--dir", str(tmp_path / "run"), "--quiet",
                         env={"PTCTL_MODEL_CACHE": str(tmp_path / "cache")})
    finally:
        os.umask(old)
    assert result.returncode in (0, 3), result.stderr
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for root in ("run", "cache") for p in (tmp_path / root).rglob("*")}
    assert any(p.startswith("run/checkpoints/step_") for p in modes)
    assert "run/result/adapter_model.safetensors" in modes
    assert any(p.endswith("model.safetensors") and p.startswith("cache/") for p in modes)
    wrong = {p: oct(m) for p, m in modes.items()
             if m != (0o755 if (tmp_path / p).is_dir() else 0o644)}
    assert not wrong, wrong
