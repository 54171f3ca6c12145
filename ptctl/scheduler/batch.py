"""Many jobs submitted together and seen through to the end: `ptctl bank build --submit`."""

from __future__ import annotations

import json
import time
from typing import Callable

from ptctl.bank.sources import Source
from ptctl.config import Config, load_profile
from ptctl.errors import BadInputError, PtctlError
from ptctl.fsutil import atomic_write_json
from ptctl.jobs.lifecycle import WITH_RESULT
from ptctl.jobs.registry import Registry
from ptctl.scheduler import admission
from ptctl.scheduler.round import rebalance_once


def submit_all(sources: list[Source], cfg: Config, poll_s: float = 10.0,
               progress: Callable[[str, int, int], None] | None = None) -> None:
    """Tune the bank's sources as jobs (admitted best-effort, then a round every `poll_s` until
    they end): locally or on Slurm, as the cluster profile says. Already submitted sources are
    not submitted again (each records its job id in its `job_file`); a source whose job failed
    is an error naming it (one that stopped at max_steps short of its target still exported a
    prompt, and the bank takes it)."""
    registry = Registry(cfg.home)
    for source in sources:
        if source.job_file.is_file():
            continue
        source.run_dir.mkdir(parents=True, exist_ok=True)
        profile = load_profile(cfg).with_overrides(source.spec.slurm.as_dict())
        try:
            answer = admission.submit(cfg, profile, source.spec, origin=f"source {source.name}",
                                      best_effort=True)
        except PtctlError as exc:
            raise BadInputError(f"source {source.name}: submit failed: {exc}") from None
        atomic_write_json(source.job_file, {"job_id": answer["job_id"]})
    profile = load_profile(cfg)
    while True:
        states = {s.name: registry.load(json.loads(s.job_file.read_text())["job_id"])
                  for s in sources}
        failed = [n for n, st in states.items() if st.is_terminal and st.phase not in WITH_RESULT]
        if failed:
            raise BadInputError(f"source {failed[0]}: job {states[failed[0]].job_id} ended "
                                f"{states[failed[0]].phase}")
        finished = sum(st.phase in WITH_RESULT for st in states.values())
        if progress:
            progress("tuning", finished, len(sources))
        if finished == len(sources):
            return
        rebalance_once(registry, profile, cfg.policy, bank_dir=cfg.bank_dir, wait_for_lock=False)
        time.sleep(poll_s)
