"""What the fault scenarios of the deployment tier share: waiting for states an operator can observe (a task
instance through the REST API, the emulator's record of calls), and reading what happened (a job's calls,
the worker that ran a task, a try's log with its exception).

Waiting is always for an observable state, polled every :data:`POLL` seconds; never a fixed sleep.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from bedrock_batch_dev.deployment import AirflowApiError, AirflowClient, Deployment
from tests.deployment.checks import DAG_ID, logical_date_of, parse_time

POLL = 0.3  # seconds between two looks at an observable state
FAILED_STATES = frozenset({"failed", "upstream_failed"})
_T = TypeVar("_T")

# A Celery worker's log line for each workload it runs (a task's start, and each resumption after a deferral).
_WORKLOAD = re.compile(
    r"Executing workload in Celery: .*?ti=TaskInstanceDTO\(id=UUID\('(?P<id>[0-9a-f-]+)'\), "
    r"task_id='(?P<task_id>[^']+)', dag_id='(?P<dag_id>[^']+)', run_id='(?P<run_id>[^']+)', "
    r"try_number=(?P<try_number>\d+), .*?map_index=(?P<map_index>-?\d+)"
)


def wait_for(what: str, condition: Callable[[], _T | None], timeout: float, interval: float = POLL) -> _T:
    """Poll ``condition()`` until it returns something truthy and return it; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(interval)


def now_iso() -> str:
    """Now as the emulator stamps a recorded call (UTC, milliseconds, ``Z``), for comparing with its times."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- runs ------------------------------------------------------------------------------------------------


def trigger_run(client: AirflowClient, ds: str) -> dict[str, Any]:
    """Trigger the call-center run of ``ds`` (its scheduled logical date) through the API, as an operator."""
    return client.trigger(DAG_ID, logical_date=logical_date_of(ds))


def submit_instance(client: AirflowClient, run: Mapping[str, Any], map_index: int = 0) -> dict[str, Any]:
    """The run's ``submit`` task instance of ``map_index`` as the API shows it now."""
    return client.task_instance(DAG_ID, str(run["dag_run_id"]), "submit", map_index)


def wait_for_submit(
    client: AirflowClient,
    run: Mapping[str, Any],
    states: Collection[str],
    *,
    map_index: int = 0,
    try_number: int | None = None,
    timeout: float = 90.0,
) -> dict[str, Any]:
    """Wait until ``submit[map_index]`` is in one of ``states`` (at ``try_number``, when given)."""

    def reached() -> dict[str, Any] | None:
        try:
            ti = submit_instance(client, run, map_index)
        except AirflowApiError as exc:  # a mapped instance exists once prepare's shards are known
            if exc.status != 404:
                raise
            return None
        wanted = ti["state"] in states and (try_number is None or ti["try_number"] == try_number)
        return ti if wanted else None

    at = "" if try_number is None else f" at try {try_number}"
    return wait_for(f"submit[{map_index}] of {run['dag_run_id']} {sorted(states)}{at}", reached, timeout)


def wait_for_run_state(
    client: AirflowClient, run: Mapping[str, Any], state: str, timeout: float = 120.0
) -> dict[str, Any]:
    """Wait until the run has finished and check it ended ``state``, naming its task states otherwise."""
    finished = client.wait_for_run(DAG_ID, str(run["dag_run_id"]), timeout=timeout, interval=POLL)
    if finished["state"] != state:
        tasks = {
            f"{ti['task_id']}[{ti['map_index']}]": (ti["state"], ti["try_number"])
            for ti in client.task_instances(DAG_ID, str(run["dag_run_id"]))
        }
        raise AssertionError(f"run {run['dag_run_id']} ended {finished['state']}, not {state}: {tasks}")
    return finished


def rerun_failed_tasks(client: AirflowClient, run: Mapping[str, Any]) -> list[str]:
    """Clear the run's failed and upstream-failed tasks (the UI's Clear with "only failed"), as a user
    re-running a failed run; the task ids cleared."""
    run_id = str(run["dag_run_id"])
    failed = sorted(
        {ti["task_id"] for ti in client.task_instances(DAG_ID, run_id) if ti["state"] in FAILED_STATES}
    )
    assert failed, f"run {run_id} has no failed task to clear"
    client.clear_task_instances(DAG_ID, run_id, failed, only_failed=True)
    return failed


def try_states(client: AirflowClient, run: Mapping[str, Any], task_id: str, map_index: int) -> list[str]:
    """The state of each try of one task instance, first try first (its task instance history)."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/{task_id}/{map_index}/tries"
    tries = sorted(client.get(path)["task_instances"], key=lambda ti: ti["try_number"])
    return [str(ti["state"]) for ti in tries]


def task_log(
    client: AirflowClient, run: Mapping[str, Any], task_id: str, try_number: int, map_index: int = -1
) -> str:
    """One try's log through the task-log API, as the UI shows it: each event, and after a failure the
    exception (``AirflowFailException: <message>``), which the log holds as structured detail."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/{task_id}/logs/{try_number}"
    response = client.request(
        "GET",
        path,
        params={"full_content": "true", "map_index": map_index},
        headers={"Accept": "application/json"},
    )
    lines = []
    for entry in response.json()["content"]:
        if not isinstance(entry, Mapping):
            lines.append(str(entry))
            continue
        lines.append(str(entry.get("event", "")))
        for error in entry.get("error_detail") or ():
            lines.append(f"{error.get('exc_type')}: {error.get('exc_value')}")
    return "\n".join(lines)


# --- the emulator's record -------------------------------------------------------------------------------


def calls_for(admin: Any, job: Mapping[str, Any], operation: str, since: str = "") -> list[dict[str, Any]]:
    """The recorded ``operation`` calls (GetModelInvocationJob, StopModelInvocationJob) naming ``job``,
    started at ``since`` (an ISO time, see :func:`now_iso`) or later."""
    job_id = str(job["jobId"])
    return [
        call
        for call in admin.requests(operation)
        if str(call["params"].get("jobIdentifier", "")).rsplit("/", 1)[-1] == job_id and call["time"] >= since
    ]


def stop_calls(admin: Any, jobs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every StopModelInvocationJob the emulator recorded for ``jobs``."""
    return [call for job in jobs for call in calls_for(admin, job, "StopModelInvocationJob")]


def name_lookups(admin: Any, job: Mapping[str, Any], since: str = "") -> list[dict[str, Any]]:
    """ListModelInvocationJobs calls looking for ``job``'s shard by name (a submit task finding its job)."""
    prefix = re.sub(r"-a\d+$", "", str(job["jobName"]))
    return [
        call
        for call in admin.requests("ListModelInvocationJobs")
        if call["params"].get("nameContains") == prefix and call["time"] >= since
    ]


def statuses(job: Mapping[str, Any]) -> list[str]:
    """The statuses a job went through, in order."""
    return [str(entry["status"]) for entry in job["history"]]


def status_time(job: Mapping[str, Any], status: str) -> datetime:
    """When ``job`` entered ``status``."""
    moment = next((entry["time"] for entry in job["history"] if entry["status"] == status), None)
    assert moment is not None, f"{job['jobName']} never was {status}: {statuses(job)}"
    parsed = parse_time(str(moment))
    assert parsed is not None
    return parsed


def wait_for_jobs(admin: Any, count: int, timeout: float = 90.0) -> list[dict[str, Any]]:
    """Wait until the emulator holds ``count`` jobs; them, oldest first."""

    def created() -> list[dict[str, Any]] | None:
        jobs = admin.jobs()
        return jobs if len(jobs) >= count else None

    return wait_for(f"{count} job(s) created", created, timeout)


def wait_for_polls(
    admin: Any, jobs: Sequence[Mapping[str, Any]], *, since: str = "", calls: int = 1, timeout: float = 60.0
) -> None:
    """Wait until each of ``jobs`` has had ``calls`` status reads (GetModelInvocationJob) since ``since``."""

    def polled() -> bool:
        return all(len(calls_for(admin, job, "GetModelInvocationJob", since)) >= calls for job in jobs)

    names = [str(job["jobId"]) for job in jobs]
    wait_for(f"{calls} status read(s) of each of {names} since {since or 'their creation'}", polled, timeout)


def wait_until_waited_for_in_triggerer(
    client: AirflowClient, admin: Any, run: Mapping[str, Any], shards: int
) -> list[dict[str, Any]]:
    """Wait until each of the run's ``shards`` submit tasks is deferred and its trigger has read its job's
    status in the triggerer (the submit task reads it once before deferring: two reads); the jobs."""
    for map_index in range(shards):
        wait_for_submit(client, run, {"deferred"}, map_index=map_index)
    jobs = wait_for_jobs(admin, shards)
    wait_for_polls(admin, jobs, calls=2)
    return jobs


def wait_for_status(admin: Any, job: Mapping[str, Any], status: str, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until the emulator reports ``job`` in ``status``; the job."""
    return wait_for(
        f"job {job['jobId']} {status}",
        lambda: next((j for j in admin.jobs() if j["jobId"] == job["jobId"] and j["status"] == status), None),
        timeout,
    )


# --- workers ---------------------------------------------------------------------------------------------


def worker_running(deployment: Deployment, ti_id: str) -> str:
    """The Celery worker whose task process runs task instance ``ti_id`` (the API's ``id``) now."""
    running = [worker for worker in deployment.workers if ti_id in deployment.task_processes(worker)]
    assert len(running) == 1, f"task instance {ti_id} runs in {running}"
    return running[0]


def workloads(deployment: Deployment, run_id: str, task_id: str) -> list[dict[str, Any]]:
    """Every workload of ``task_id`` in run ``run_id`` a worker executed (a start or a resumption after a
    deferral), from the workers' logs: ``worker``, ``map_index``, ``try_number``, ``id``.

    The task instance's ``hostname`` cannot say which worker ran it here: every worker shares this machine's.
    """
    found = []
    for worker in deployment.workers:
        text = deployment.process(worker).log_path.read_text(errors="replace")
        for match in _WORKLOAD.finditer(text):
            if match["run_id"] == run_id and match["task_id"] == task_id and match["dag_id"] == DAG_ID:
                found.append(
                    {
                        "worker": worker,
                        "map_index": int(match["map_index"]),
                        "try_number": int(match["try_number"]),
                        "id": match["id"],
                    }
                )
    return found
