"""The overdue-run alert: the deadline callback's message holds ids and times, never a run's conf or text."""

from __future__ import annotations

import asyncio
import logging

from bedrock_batch.alerts import alert_overdue_run, overdue_run_message

CONTEXT = {
    "dag_run": {
        "dag_run_id": "scheduled__2026-03-02T06:00:00+00:00",
        "dag_id": "call_center_summarization",
        "logical_date": "2026-03-02T06:00:00Z",
        "queued_at": "2026-03-03T06:00:04Z",
        "state": "running",
        "conf": {"note": "SECRET-CONF-MARKER"},
    },
    "deadline": {"id": "0199-deadline", "deadline_time": "2026-03-03T12:00:04Z"},
}


def test_the_message_names_the_pipeline_run_partition_and_deadline():
    message = overdue_run_message(CONTEXT, pipeline="call_center_summarization", alert_after="6h")
    assert message.startswith(
        "pipeline call_center_summarization: run scheduled__2026-03-02T06:00:00+00:00 of DAG "
        "call_center_summarization (partition 2026-03-02) is still running 6h after it was queued at "
        "2026-03-03T06:00:04Z (deadline 2026-03-03T12:00:04Z, deadline id 0199-deadline)"
    )
    assert "SECRET-CONF-MARKER" not in message


def test_a_context_without_a_run_still_gives_a_message():
    message = overdue_run_message({}, pipeline="orders", alert_after="90m")
    assert message.startswith("pipeline orders: run ? of DAG ? (partition -) is still unfinished 90m after")


def test_the_callback_logs_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="bedrock_batch.alerts"):
        result = asyncio.run(
            alert_overdue_run(pipeline="call_center_summarization", alert_after="6h", context=CONTEXT)
        )
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert caplog.records[0].getMessage() == result
    assert "SECRET-CONF-MARKER" not in caplog.text
