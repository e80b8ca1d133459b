"""The checks that end every deployment scenario, through the REST API instead of the metadata DB.

The same two checks as the fault matrix (tests/reliability/harness.py, whose functions they reuse): no
duplicate jobs — the emulator's jobs are exactly those of the shards the run planned, read from ``prepare``'s
and ``collect``'s XComs over the API — and every input record exactly once in the published partition.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow.parquet as pq

from bedrock_batch_dev.deployment import AirflowApiError, AirflowClient
from bedrock_batch_dev.deployment.local_setup import bucket_of
from tests.reliability.harness import (
    Accounting,
    assert_every_record_once,
    assert_jobs_match_plan,
    shard_prefixes,
)

DAG_ID = "call_center_summarization"
KPI_DAG_ID = "call_summary_kpis"
# Jobs of at most 100 records (the service minimum stays 100), so a few hundred calls make a mapped submit
# of several shards plus an on-demand remainder, on both workers. At most 2 active jobs of the model: two runs
# of 200 calls want 4 at once, so the quota binds (test_faults.py); no other scenario needs more than 2.
# job_wait_timeout_minutes (the submit tasks' execution_timeout) is the smallest the setting allows, for the
# scenario that lets it pass (test_faults.py, test_execution_timeout_while_deferred_...). It is set for the
# whole session because the DAG reads its configuration whenever its file is parsed, by the DAG processor
# every ~30 s and by each task process: changing it for one test would leave the scheduler's and the
# workers' copies of the DAG apart for a while. Every other scenario releases its jobs well within the
# minute (each prints when; at most about 20 s after its submit tasks' start), and a clean run's jobs take
# seconds.
DEPLOYMENT_CONFIG: Mapping[str, Any] = {
    "quotas": {"max_records_per_job": 100, "max_concurrent_jobs": 2},
    "job_wait_timeout_minutes": 1,
}


def logical_date_of(ds: str) -> str:
    """The logical date the daily 06:00 schedule gives the run of ``ds`` (its data interval's start)."""
    return f"{ds}T06:00:00+00:00"


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def xcom_or(client: AirflowClient, run: Mapping[str, Any], task_id: str, default: Any, **kwargs: Any) -> Any:
    """An XCom of ``run``, or ``default`` when the task pushed none."""
    try:
        return client.xcom(str(run["dag_id"]), str(run["dag_run_id"]), task_id, **kwargs)
    except AirflowApiError as exc:
        if exc.status != 404:
            raise
        return default


def planned_shards(client: AirflowClient, run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The shards the run planned a job for: prepare's, then collect's retry round."""
    return [*(xcom_or(client, run, "prepare", None) or []), *(xcom_or(client, run, "collect", None) or [])]


def assert_no_duplicate_jobs(
    client: AirflowClient, admin: Any, runs: Sequence[Mapping[str, Any]], model_id: str
) -> None:
    """Zero duplicate jobs in the emulator for the shards ``runs`` (API dag-run dicts) planned."""
    planned: set[str] = set()
    for run in runs:
        planned |= shard_prefixes(
            planned_shards(client, run),
            logical_date=parse_time(run.get("logical_date")),
            run_id=str(run["dag_run_id"]),
            dag_id=str(run["dag_id"]),
            model_id=model_id,
        )
    assert_jobs_match_plan(admin.jobs(), admin.created_job_count(), planned)


def assert_every_record_published_once(
    s3: Any, config: Mapping[str, Any], ds: str, call_ids: Iterable[str], run: Mapping[str, Any]
) -> Accounting:
    """Every input call of ``ds`` exactly once in the run's published partition, report ``accounted``."""
    return assert_every_record_once(
        s3, ds, call_ids, run_id=str(run["dag_run_id"]), results_uri=str(config["results_uri"])
    )


def task_states(client: AirflowClient, run: Mapping[str, Any]) -> dict[str, tuple[str | None, int]]:
    """``task_id[map_index]`` → (state, try number) of every task instance of ``run``."""
    return {
        f"{ti['task_id']}[{ti['map_index']}]": (ti["state"], ti["try_number"])
        for ti in client.task_instances(str(run["dag_id"]), str(run["dag_run_id"]))
    }


def assert_no_task_retried(client: AirflowClient, run: Mapping[str, Any]) -> None:
    """Every task of the run succeeded (or was skipped) at its first try."""
    bad = {
        key: value
        for key, value in task_states(client, run).items()
        if value[0] not in ("success", "skipped") or value[1] > 1
    }
    assert bad == {}, bad


def read_kpis(s3: Any, kpi_uri: str) -> list[dict[str, Any]]:
    """The rows of a KPI partition file (``s3://bucket/key``)."""
    key = kpi_uri.removeprefix("s3://").split("/", 1)[1]
    body = s3.get_object(Bucket=bucket_of(kpi_uri), Key=key)["Body"].read()
    return pq.read_table(io.BytesIO(body)).to_pylist()


def unpause_without_catch_up_run(client: AirflowClient, dag_id: str, *, timeout: float = 60.0) -> None:
    """Unpause ``dag_id`` and fail the run the scheduler creates at once for the latest interval (catchup is
    off), so no scenario meets a running run it did not make. A DAG without a time schedule creates none.

    The run is failed, not deleted: a run deleted while the scheduler is scheduling it makes Airflow 3.3's
    scheduler loop exit (``ObjectDeletedError`` in ``_schedule_all_dag_runs``, raised again by its own error
    log line), and the scenarios would wait for a scheduler that is not there."""
    schedule = client.dag(dag_id).get("timetable_summary")
    client.unpause(dag_id)
    if not schedule or schedule.startswith("Asset"):
        return
    deadline = time.monotonic() + timeout
    while not (runs := client.dag_runs(dag_id, run_type=["scheduled"])):
        assert time.monotonic() < deadline, f"unpausing {dag_id} created no scheduled run in {timeout:.0f} s"
        time.sleep(0.5)
    for run in runs:
        # Failing it also ends its deferred source sensor.
        client.set_dag_run_state(dag_id, str(run["dag_run_id"]), "failed")


def clear_job_slots(s3: Any, config: Mapping[str, Any]) -> int:
    """Delete the job slots under the configured ``staging_uri`` (``_job_slots/``, as the DAG derives them);
    how many there were. After the emulator forgot its jobs, a slot naming one is stale: the next claim would
    look that job up first (a GetModelInvocationJob a slow-call fault would hold)."""
    bucket, _, prefix = str(config["staging_uri"]).removeprefix("s3://").partition("/")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix.rstrip('/')}/_job_slots/".lstrip("/"))
    keys = [item["Key"] for item in listed.get("Contents", [])]
    for key in keys:
        s3.delete_object(Bucket=bucket, Key=key)
    return len(keys)


def end_unfinished_runs(client: AirflowClient, dag_ids: Iterable[str]) -> None:
    """Mark every queued or running run of ``dag_ids`` failed and drop the asset events queued for them, so
    the next scenario starts from none: a scenario's published partition queues an event for the KPI DAG,
    which a later scenario's KPI run would otherwise consume together with its own."""
    dag_ids = list(dag_ids)
    for dag_id in dag_ids:
        client.delete_queued_asset_events(dag_id)  # first: a run the scheduler creates meanwhile is ended
    for dag_id in dag_ids:
        for run in client.dag_runs(dag_id, state=["queued", "running"]):
            client.set_dag_run_state(dag_id, str(run["dag_run_id"]), "failed")
