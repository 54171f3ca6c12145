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


def test_ended_jobs_move_only_back_to_the_queue_and_live_ones_can_always_be_cancelled():
    """`ptctl resume` takes a cancelled or failed job back to the queue; a job with a result
    never moves again."""
    assert set(TRANSITIONS) == set(Phase)
    for phase in Phase:
        assert phase in TERMINAL or Phase.CANCELLED in TRANSITIONS[phase]
    assert {p: TRANSITIONS[p] for p in TERMINAL} == {
        Phase.FINISHED: frozenset(), Phase.UNMET: frozenset(),
        Phase.FAILED: {Phase.QUEUED}, Phase.CANCELLED: {Phase.QUEUED}}


def test_a_job_short_of_its_target_ends_apart_from_a_finished_one():
    """`unmet` (max_steps, target not reached) is an ended phase of its own, reached from
    wherever `finished` is."""
    assert Phase.UNMET in TERMINAL and Phase.FINISHED in TERMINAL
    assert {p for p in Phase if Phase.UNMET in TRANSITIONS[p]} == \
        {p for p in Phase if Phase.FINISHED in TRANSITIONS[p]}
