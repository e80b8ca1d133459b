"""The current state of a task instance, read from inside its own task process or from its trigger.

The operator and the trigger need it to tell apart why their waiting was interrupted (see
:func:`bedrock_batch.jobs.abandoned_by_user`). Both ask Airflow through the Task SDK's channel to the
supervisor, the same way ``RuntimeTaskInstance.get_task_states`` does for sensors; Airflow is imported only
when a state is read.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any, Protocol

# Reading a state must never hold up a kill: past this, the state counts as unknown.
READ_TIMEOUT_SECONDS = 10.0


class TaskInstanceLike(Protocol):
    """What identifies a task instance: a runtime task instance, a trigger's ``task_instance``."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int | None


def _state_of(ti: TaskInstanceLike, states: Mapping[str, Mapping[str, Any]] | None) -> str | None:
    # Airflow keys mapped task instances as "<task_id>_<map_index>" in this answer.
    map_index = ti.map_index if ti.map_index is not None else -1
    key = ti.task_id if map_index < 0 else f"{ti.task_id}_{map_index}"
    state = (states or {}).get(ti.run_id, {}).get(key)
    return str(state) if state is not None else None


def _query(ti: TaskInstanceLike) -> dict[str, Any]:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    map_index = ti.map_index if ti.map_index is not None else -1
    return dict(
        RuntimeTaskInstance.get_task_states(
            dag_id=ti.dag_id, map_index=map_index, task_ids=[ti.task_id], run_ids=[ti.run_id]
        )
    )


def read_task_state(ti: TaskInstanceLike | None, timeout: float = READ_TIMEOUT_SECONDS) -> str | None:
    """The state of ``ti`` as the metadata DB has it now, from a task process; ``None`` if it cannot be read.

    Runs the request on a helper thread: this is called from a signal handler, which may have interrupted the
    main thread in the middle of another request to the supervisor (whose lock it would then wait on forever).

    :param ti: the task instance (``context["ti"]``); ``None`` gives ``None``.
    :param timeout: seconds to wait for the answer.
    """
    if ti is None:
        return None
    answer: list[dict[str, Any]] = []

    def read() -> None:
        # An unreadable state is reported as unknown (None) below.
        with contextlib.suppress(Exception):
            answer.append(_query(ti))

    reader = threading.Thread(target=read, name="bedrock-batch-task-state", daemon=True)
    reader.start()
    reader.join(timeout)
    return _state_of(ti, answer[0]) if answer else None


async def aread_task_state(ti: TaskInstanceLike | None) -> str | None:
    """:func:`read_task_state` for a trigger running in the triggerer's event loop."""
    if ti is None:
        return None
    from asgiref.sync import sync_to_async

    try:
        states = await sync_to_async(_query)(ti)
    except Exception:
        return None
    return _state_of(ti, states)
