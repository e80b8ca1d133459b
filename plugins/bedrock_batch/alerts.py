"""An alert for runs that take longer than expected, as the callback of an Airflow deadline alert.

A pipeline with ``alert_after: 6h`` gets a DAG deadline alert (Airflow 3.1+, built by
:func:`bedrock_batch.factory.overdue_run_alert`): when a run has not finished that long after it was queued —
usually because its batch jobs wait in the service's queue or run long — the scheduler queues
:func:`alert_overdue_run`, which the triggerer runs. It logs one WARNING line of ids and times (never a
prompt, a record or a reply; the run's ``conf`` is not logged either). Point the deadline's callback at a
notifier of your own to page someone; the message is :func:`overdue_run_message`.

Imports nothing from Airflow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)


def overdue_run_message(context: Mapping[str, Any], *, pipeline: str, alert_after: str) -> str:
    """The alert's text: the pipeline, the run's ids, its state and times, and what to look at.

    :param context: the deadline callback's context: ``dag_run`` (the REST API's DAG run, as JSON) and
        ``deadline`` (``id``, ``deadline_time``).
    :param pipeline: the pipeline's name.
    :param alert_after: the configured delay, as written (``6h``).
    """
    run: Mapping[str, Any] = context.get("dag_run") or {}
    deadline: Mapping[str, Any] = context.get("deadline") or {}
    partition = str(run.get("logical_date") or run.get("run_after") or "-")[:10]
    return (
        f"pipeline {pipeline}: run {run.get('dag_run_id', '?')} of DAG {run.get('dag_id', '?')} "
        f"(partition {partition}) is still {run.get('state') or 'unfinished'} {alert_after} after it was "
        f"queued at {_time(run.get('queued_at'))} (deadline {_time(deadline.get('deadline_time'))}, "
        f"deadline id {deadline.get('id', '-')}); its batch jobs may be queued or running longer than "
        "expected: see the states of its submit tasks"
    )


def _time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value) if value else "-"


async def alert_overdue_run(
    *, pipeline: str, alert_after: str, context: Mapping[str, Any] | None = None
) -> str:
    """The deadline alert's callback (run by the triggerer): log :func:`overdue_run_message` as a WARNING.

    :param pipeline: the pipeline's name.
    :param alert_after: the configured delay.
    :param context: the deadline's context (see :func:`overdue_run_message`).
    :return: the message (the callback's result, kept by Airflow).
    """
    message = overdue_run_message(context or {}, pipeline=pipeline, alert_after=alert_after)
    log.warning("%s", message)
    return message
