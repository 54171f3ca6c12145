"""Every phase change goes through ptctl.jobs.lifecycle.move: walk its whole table."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from ptctl.jobs.lifecycle import TERMINAL, TRANSITIONS, IllegalTransitionError, Phase, move


@pytest.mark.parametrize("start,to", list(itertools.product(Phase, Phase)))
def test_every_pair_is_allowed_or_raises(start, to):
    state = SimpleNamespace(job_id="job-abcd", phase=start.value)
    if to in TRANSITIONS[start]:
        move(state, to)
        assert state.phase == to
    else:
        with pytest.raises(IllegalTransitionError, match=f"from {start} to {to}"):
            move(state, to)
        assert state.phase == start


def test_ended_jobs_never_move_and_live_ones_can_always_be_cancelled():
    assert set(TRANSITIONS) == set(Phase)
    for phase in Phase:
        assert (not TRANSITIONS[phase]) == (phase in TERMINAL)
        assert phase in TERMINAL or Phase.CANCELLED in TRANSITIONS[phase]
