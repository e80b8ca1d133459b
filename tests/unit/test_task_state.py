"""Which interrupted waits stop their job, and reading a task instance's state from Airflow's answer."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bedrock_batch.jobs import abandoned_by_user
from bedrock_batch.task_state import _state_of, read_task_state


@dataclass
class TI:
    dag_id: str = "call_center_summarization"
    run_id: str = "scheduled__2026-11-29T06:00:00+00:00"
    task_id: str = "submit"
    map_index: int | None = -1


class TestAbandonedByUser:
    def test_only_a_task_marked_failed_gives_its_job_up(self):
        assert abandoned_by_user("failed") is True

    @pytest.mark.parametrize(
        "state",
        # cleared (no state, then scheduled/queued/running), retried, still deferred (a triggerer restart or a
        # move to another triggerer), marked success, or unknown.
        [
            None,
            "scheduled",
            "queued",
            "running",
            "restarting",
            "up_for_retry",
            "deferred",
            "success",
            "removed",
        ],
    )
    def test_every_other_state_keeps_the_job(self, state):
        assert abandoned_by_user(state) is False


class TestStateOf:
    def test_an_unmapped_task_is_keyed_by_its_id(self):
        ti = TI()
        assert _state_of(ti, {ti.run_id: {"submit": "failed", "submit_0": "running"}}) == "failed"

    def test_a_mapped_task_is_keyed_by_id_and_index(self):
        ti = TI(map_index=3)
        answer = {ti.run_id: {"submit": "success", "submit_3": "deferred", "submit_30": "failed"}}
        assert _state_of(ti, answer) == "deferred"

    def test_another_run_or_no_answer_is_unknown(self):
        ti = TI(map_index=0)
        assert _state_of(ti, {"another_run": {"submit_0": "failed"}}) is None
        assert _state_of(ti, {ti.run_id: {"submit_0": None}}) is None
        assert _state_of(ti, None) is None


def test_outside_a_task_process_the_state_is_unknown_not_an_error():
    # No supervisor to ask: the reader gives up quietly, so a kill never fails on it.
    assert read_task_state(TI(), timeout=5) is None
    assert read_task_state(None) is None
