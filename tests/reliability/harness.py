"""Shared machinery of the reliability tests: run the call-center DAG against the local stack, then account.

Every matrix row ends with the same two checks: no duplicate jobs (counted in the emulator) and every input
record exactly once in the published partition (succeeded, failed with a code, or quarantined with a reason).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pendulum
import pytest

from tests.integration.bedrock_shards import load_test_dags, wait_until, xcoms
from tests.published_day import read_day
from tests.stack_state import reset_stack

# Not imported from tests.conftest: importing it gives a process a new Airflow home, and the DAG runs
# this module starts in child processes must share the parent's.
REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
TEST_DAGS_FOLDER = REPO / "tests" / "test_dags"
MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
DAG_ID = "call_center_summarization"
SOURCE_BUCKET, STAGING_BUCKET, RESULTS_BUCKET = "calls", "staging", "results"
RESULTS_URI = f"s3://{RESULTS_BUCKET}/analytics"
BUCKETS = (SOURCE_BUCKET, STAGING_BUCKET, RESULTS_BUCKET)
ACTIVE = frozenset({"Submitted", "Validating", "Scheduled", "InProgress"})
RESUBMIT = frozenset({"Failed", "Stopping", "Stopped", "Expired"})
STATUSES = frozenset({"succeeded", "failed", "quarantined"})
CONFIG_FILE = REPO / "include" / "config" / "call_center_summarization.json"

# Short polls and no throttle on the fallback keep a run to seconds; the quotas are the shipped ones unless
# a test overrides them (the service minimum of 100 records per job stays). The shipped retries stay, without
# their 5-minute delay, which dag.test() would sleep through.
FAST_SETTINGS: dict[str, Any] = {
    "poll_interval_seconds": 0.1,
    "source_poke_interval_seconds": 1,
    "on_demand_requests_per_second": 200,
    "retry_delay_seconds": 0,
}
_ATTEMPT = re.compile(r"-a(\d+)$")


# --- the DAG ---------------------------------------------------------------------------------------------


def use_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> dict[str, Any]:
    """Point the DAG at the shipped configuration plus fast polling and ``overrides`` (``quotas`` merge)."""
    config = orjson.loads(CONFIG_FILE.read_bytes())
    quotas = {**config["quotas"], **overrides.pop("quotas", {})}
    merged = {**config, **FAST_SETTINGS, **overrides, "quotas": quotas}
    path = tmp_path / "call_center_summarization.json"
    path.write_bytes(orjson.dumps(merged))
    monkeypatch.setenv("CALL_CENTER_CONFIG", str(path))
    return merged


def load_dag() -> Any:
    """A fresh import of the call-center DAG (its module reads the configuration at import time)."""
    spec = importlib.util.spec_from_file_location(f"reliability_{DAG_ID}", DAGS_FOLDER / f"{DAG_ID}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.dag


def load_test_dag_module(name: str) -> Any:
    """The module of ``tests/test_dags/<name>.py`` (the ``test-dags`` bundle that dag.test() requires)."""
    # The bundle's parser puts its folder on sys.path, so its DAG files may import each other.
    if str(TEST_DAGS_FOLDER) not in sys.path:
        sys.path.append(str(TEST_DAGS_FOLDER))
    return load_test_dags(name)


def run_conf(ds: str, source_format: str = "jsonl", **conf: Any) -> dict[str, Any]:
    """The run conf of one test run: the day's source prefix and this stack's buckets."""
    return {
        "source_uri": f"s3://{SOURCE_BUCKET}/{{ds}}/{source_format}/",
        "source_format": source_format,
        "staging_uri": f"s3://{STAGING_BUCKET}/batch",
        "results_uri": RESULTS_URI,
        "model_id": MODEL_ID,
        **conf,
    }


def run_dag(ds: str, source_format: str = "jsonl", dag: Any = None, **conf: Any) -> Any:
    """Run the call-center DAG for ``ds`` through dag.test(); returns the DagRun."""
    dag = dag if dag is not None else load_dag()
    return dag.test(logical_date=pendulum.parse(ds), run_conf=run_conf(ds, source_format, **conf))


DAG_TEST_SCRIPT = """
import os, sys, pendulum
sys.path.insert(0, os.environ["RELIABILITY_REPO"])
from tests.reliability.harness import load_dag, run_conf
ds, fmt = sys.argv[1], sys.argv[2]
dag = load_dag()
run = dag.test(logical_date=pendulum.parse(ds), run_conf=run_conf(ds, fmt))
print("DAG_RUN_STATE=" + str(run.state), flush=True)
"""


def dag_test_command(ds: str, source_format: str = "jsonl") -> list[str]:
    """A command that runs the DAG for ``ds`` with dag.test() in its own Python process (a worker)."""
    return [sys.executable, "-c", DAG_TEST_SCRIPT, ds, source_format]


def subprocess_env() -> dict[str, str]:
    """This process's environment (Airflow home, metadata DB, connection, config override) for a child."""
    return {**os.environ, "RELIABILITY_REPO": str(REPO), "PYTHONUNBUFFERED": "1"}


# --- the local stack -------------------------------------------------------------------------------------


def prepare_stack(local_stack: Any) -> Any:
    """Forget every job, call and fault of the emulator, and make sure the test buckets exist."""
    return reset_stack(local_stack, BUCKETS)


def speed_up_when(
    stack: Any, seen: Callable[[], Any], time_scale: float = 3600.0, timeout: float = 120.0
) -> threading.Thread:
    """Raise the emulator's time scale from a background thread once ``seen()`` holds."""

    def release() -> None:
        try:
            wait_until(seen, timeout=timeout)
        finally:
            stack.admin.set_time_scale(time_scale)

    thread = threading.Thread(target=release, name="speed-up-emulator", daemon=True)
    thread.start()
    return thread


class ActiveJobsProbe:
    """Samples the emulator's jobs on a background thread: the most jobs of the model active at once."""

    def __init__(self, stack: Any, interval: float = 0.02) -> None:
        self._stack = stack
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="active-jobs-probe", daemon=True)
        self.peak = 0
        self.samples = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            active = sum(1 for job in self._stack.admin.jobs() if job["status"] in ACTIVE)
            self.peak = max(self.peak, active)
            self.samples += 1
            self._stop.wait(self._interval)

    def __enter__(self) -> ActiveJobsProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def peak_active_from_history(jobs: Iterable[Mapping[str, Any]]) -> int:
    """The most jobs that were active at once, from each job's status history in the emulator.

    A job is active from its creation until its first status outside Submitted, Validating, Scheduled and
    InProgress. At equal timestamps an end is counted before a start (the service frees the slot first).
    """
    events: list[tuple[datetime, int]] = []
    for job in jobs:
        history = job["history"]
        start = _time(history[0]["time"])
        end = next((_time(h["time"]) for h in history if h["status"] not in ACTIVE), None)
        events.append((start, 1))
        if end is not None:
            events.append((end, -1))
    peak = active = 0
    for _, delta in sorted(events):
        active += delta
        peak = max(peak, active)
    return peak


# --- source data -----------------------------------------------------------------------------------------


def marker(index: int, salt: str = "") -> str:
    """A string that occurs in one transcript and nowhere else: found in a log, it proves a leak."""
    return f"QX{salt}{index:05d}ZEBRAQUOKKA"


def transcript(index: int, salt: str = "") -> str:
    """A short call transcript whose customer turn carries :func:`marker` (the model's reply echoes it)."""
    return (
        "Agent: Thank you for calling, this is Dana, how can I help?\n"
        f"Customer: My invoice {marker(index, salt)} shows a double charge for last month.\n"
        "Agent: I am sorry about that. I will refund the duplicate charge today and you will receive an "
        "email confirmation.\n"
        "Customer: Thanks, that solves it."
    )


def call_rows(count: int, prefix: str = "call", salt: str = "") -> list[dict[str, Any]]:
    """``count`` source rows (``call_id``, ``transcript``) with distinct ids and markers."""
    return [{"call_id": f"{prefix}-{i:05d}", "transcript": transcript(i, salt)} for i in range(count)]


def put(s3: Any, key: str, data: bytes) -> None:
    s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=data)


def put_jsonl(s3: Any, ds: str, rows: Sequence[Mapping[str, Any]], name: str = "calls.jsonl") -> None:
    """Write ``rows`` as one JSONL object of the day's ``jsonl`` partition."""
    put(s3, f"{ds}/jsonl/{name}", b"".join(orjson.dumps(dict(r)) + b"\n" for r in rows))


# --- results ---------------------------------------------------------------------------------------------


def _results_location(results_uri: str, *parts: str) -> tuple[str, str]:
    """(bucket, key) of ``parts`` under the ``results_uri`` of a run (``s3://bucket[/prefix]``)."""
    bucket, _, prefix = results_uri.removeprefix("s3://").partition("/")
    return bucket, "/".join(part for part in (prefix.strip("/"), *parts) if part)


def read_partition(s3: Any, ds: str, results_uri: str = RESULTS_URI) -> list[dict[str, Any]]:
    """The rows of the published ``call_summaries`` partition of ``ds`` (the files of the version its pointer
    names, and nothing else in the partition)."""
    bucket, prefix = _results_location(results_uri, "call_summaries")
    return read_day(s3, bucket, prefix, ds).to_pylist()


def partition_exists(s3: Any, ds: str, results_uri: str = RESULTS_URI) -> bool:
    bucket, prefix = _results_location(results_uri, "call_summaries", f"ds={ds}/")
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents"))


def read_report(s3: Any, ds: str, results_uri: str = RESULTS_URI) -> dict[str, Any]:
    bucket, key = _results_location(results_uri, "reports", f"ds={ds}", "run_report.json")
    return dict(orjson.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def row_key(row: Mapping[str, Any]) -> str:
    """How a published row is matched to its input: its call id, or ``@<position>`` for a row without one."""
    return str(row["call_id"]) if row.get("call_id") is not None else f"@{row['source_position']}"


@dataclass
class Accounting:
    """The published partition grouped by outcome, after the exactly-once check passed."""

    rows: list[dict[str, Any]]
    by_status: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return len(self.by_status.get(status, []))

    def codes(self, status: str) -> Counter[str]:
        return Counter(str(r["error_code"]) for r in self.by_status.get(status, []))


def assert_every_record_once(
    s3: Any, ds: str, expected: Iterable[str], *, run_id: str | None = None, results_uri: str = RESULTS_URI
) -> Accounting:
    """The partition of ``ds`` holds each input record exactly once, with a valid outcome.

    :param expected: one key per input row (see :func:`row_key`); a key given twice (a duplicate id in the
        source) must appear twice: once as the first occurrence, once quarantined as ``duplicate_id``.
    :param results_uri: the run's ``results_uri`` (the partition and the run report are under it).
    """
    rows = read_partition(s3, ds, results_uri)
    expected_counts = Counter(expected)
    published_counts = Counter(row_key(r) for r in rows)
    assert published_counts == expected_counts, {
        "missing": sorted((expected_counts - published_counts).elements())[:20],
        "unexpected": sorted((published_counts - expected_counts).elements())[:20],
    }
    accounting = Accounting(rows)
    for row in rows:
        assert row["status"] in STATUSES, row
        accounting.by_status.setdefault(row["status"], []).append(row)
        if row["status"] == "succeeded":
            assert row["error_code"] is None, row
            assert row["record_id"], row
            assert len(row["record_id"]) == 11, row
            assert row["job_arn"], row
        else:
            assert row["error_code"], f"{row['status']} row without a code or reason: {row}"
        if run_id is not None:
            assert row["dag_run_id"] == run_id
    # A record id (the join key) belongs to one row, except the quarantined repeats of a duplicate key.
    processed = Counter(r["record_id"] for r in rows if r["status"] != "quarantined")
    assert [rid for rid, n in processed.items() if n > 1] == []
    for key, n in expected_counts.items():
        if n > 1:
            copies = [r for r in rows if row_key(r) == key]
            assert sum(r["error_code"] == "duplicate_id" for r in copies) == n - 1, copies
    summary = read_report(s3, ds, results_uri)
    assert summary["accounted"] is True
    assert summary["input_records"] == len(rows)
    assert (summary["succeeded"], summary["failed"], summary["quarantined"]) == (
        accounting.count("succeeded"),
        accounting.count("failed"),
        accounting.count("quarantined"),
    )
    return accounting


# --- jobs ------------------------------------------------------------------------------------------------


def all_xcoms(dag_run: Any) -> list[tuple[str, str, int, Any]]:
    """Every XCom of ``dag_run``: (task_id, key, map_index, value)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id)
        ).all()
        return [(r.task_id, r.key, r.map_index, XComModel.deserialize_value(r)) for r in rows]


def task_instances(dag_run: Any, task_id: str | None = None) -> list[Any]:
    """The run's task instances as the metadata DB has them now (optionally of one task)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(TaskInstance).where(
            TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
        )
        if task_id is not None:
            query = query.where(TaskInstance.task_id == task_id)
        tis = session.scalars(query).all()
        for ti in tis:
            session.expunge(ti)
        return list(tis)


def assert_no_task_retried(dag_run: Any) -> None:
    """Every task of the run succeeded (or was skipped) at its first try."""
    states = {(ti.task_id, ti.map_index): (ti.state, ti.try_number) for ti in task_instances(dag_run)}
    bad = {k: v for k, v in states.items() if v[0] not in ("success", "skipped") or v[1] > 1}
    assert bad == {}, bad


def planned_shards(dag_run: Any) -> list[dict[str, Any]]:
    """The shards the run planned a job for: prepare's, then collect's retry round."""
    return [*xcoms(dag_run, "prepare").get(-1, []), *(xcoms(dag_run, "collect").get(-1) or [])]


def shard_prefix(job_name: str) -> str:
    """A job's shard identity: its name without the ``-a<attempt>`` suffix."""
    return _ATTEMPT.sub("", job_name)


def shard_prefixes(
    shards: Iterable[Mapping[str, Any]],
    *,
    logical_date: datetime | None,
    run_id: str,
    dag_id: str = DAG_ID,
    model_id: str = MODEL_ID,
) -> set[str]:
    """The job-name prefixes ``shards`` (prepare's and collect's shard descriptors) map to in one run: one
    per shard of each round (a retry shard is a new job even when it holds the very records of a
    first-round shard)."""
    from bedrock_batch.jobs import ShardJobKey, run_key_for

    run_key = run_key_for(logical_date, run_id)
    return {
        ShardJobKey(
            dag_id,
            run_key,
            str(s["fingerprint"]),
            int(s["shard"]),
            model_id,
            round_number=int(s.get("round") or 1),
        ).prefix
        for s in shards
    }


def planned_prefixes(dag_run: Any) -> set[str]:
    """The job-name prefixes of the shards ``dag_run`` planned (see :func:`shard_prefixes`)."""
    return shard_prefixes(planned_shards(dag_run), logical_date=dag_run.logical_date, run_id=dag_run.run_id)


def assert_no_duplicate_jobs(stack: Any, dag_runs: Sequence[Any]) -> None:
    """Zero duplicate jobs in the emulator of ``stack`` for the shards ``dag_runs`` planned (see
    :func:`assert_jobs_match_plan`)."""
    planned = set().union(*(planned_prefixes(run) for run in dag_runs))
    assert_jobs_match_plan(stack.admin.jobs(), stack.admin.created_job_count(), planned)


def assert_jobs_match_plan(
    jobs: Sequence[Mapping[str, Any]], created_job_count: int, planned: set[str]
) -> None:
    """Zero duplicate jobs, counted in the emulator (``jobs`` and ``created_job_count`` from its admin).

    - the jobs are exactly those of the ``planned`` shard prefixes (created jobs == distinct shards
      submitted);
    - each shard has one job per attempt, and a later attempt exists only because the previous one ended
      Failed, Stopped or Expired before the later one was created.
    """
    by_shard: dict[str, list[Mapping[str, Any]]] = {}
    for job in jobs:
        by_shard.setdefault(shard_prefix(job["jobName"]), []).append(job)
    for prefix, attempts in by_shard.items():
        attempts.sort(key=lambda j: int(_ATTEMPT.search(j["jobName"]).group(1)))  # type: ignore[union-attr]
        numbers = [int(_ATTEMPT.search(j["jobName"]).group(1)) for j in attempts]  # type: ignore[union-attr]
        assert numbers == list(range(1, len(attempts) + 1)), (prefix, numbers)
        for previous, later in itertools.pairwise(attempts):
            ended = next((h for h in previous["history"] if h["status"] in RESUBMIT), None)
            assert ended is not None, f"{later['jobName']} created while {previous['jobName']} could finish"
            assert _time(ended["time"]) <= _time(later["history"][0]["time"])
    assert set(by_shard) == planned, {"unplanned": set(by_shard) - planned, "no job": planned - set(by_shard)}
    assert created_job_count == len(jobs)


def given_calls(
    stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ds: str, count: int, **config: Any
) -> tuple[Any, list[dict[str, Any]]]:
    """Configure the DAG (``config`` overrides the shipped file) and put ``count`` calls in the day's
    JSONL partition; returns the S3 client and the rows."""
    use_config(tmp_path, monkeypatch, **config)
    s3 = stack.client("s3")
    rows = call_rows(count)
    put_jsonl(s3, ds, rows)
    return s3, rows


def assert_clean_run(
    stack: Any, s3: Any, ds: str, dag_run: Any, rows: Sequence[Mapping[str, Any]]
) -> Accounting:
    """The run succeeded without a task retry or a duplicate job and published every row as succeeded."""
    assert dag_run.state == "success"
    assert_no_task_retried(dag_run)
    assert_no_duplicate_jobs(stack, [dag_run])
    result = assert_every_record_once(s3, ds, [str(r["call_id"]) for r in rows], run_id=dag_run.run_id)
    assert result.count("succeeded") == len(rows)
    return result


def job_summary(stack: Any) -> Counter[str]:
    """How many of the emulator's jobs are in each status."""
    return Counter(job["status"] for job in stack.admin.jobs())


# --- tasks outside dag.test() ----------------------------------------------------------------------------


class TaskInstanceStub:
    """What an operator reads from ``context["ti"]``: its map index and its own XComs."""

    def __init__(self, task_id: str, map_index: int = -1) -> None:
        self.task_id = task_id
        self.map_index = map_index
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return self.pushed.get(key)


def task_context(dag_run: Any, task_id: str, map_index: int = -1) -> dict[str, Any]:
    """The parts of a task's context the submit operator uses, for a task instance of ``dag_run``."""
    return {
        "dag_run": dag_run,
        "run_id": dag_run.run_id,
        "ds": dag_run.logical_date.strftime("%Y-%m-%d"),
        "ti": TaskInstanceStub(task_id, map_index),
    }


def run_like_a_worker(operator: Any, context: dict[str, Any]) -> Any:
    """Execute ``operator`` as a worker and a triggerer would: every deferral runs its trigger to its first
    event, then the task resumes in the method the deferral named, with that event."""
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred

    async def first_event(trigger: Any) -> Any:
        async for event in trigger.run():
            return event
        return None

    method, kwargs = operator.execute, {}
    while True:
        try:
            return method(context, **kwargs)
        except TaskDeferred as deferred:
            event = asyncio.run(first_event(deferred.trigger))
            method = getattr(operator, deferred.method_name)
            kwargs = {**(deferred.kwargs or {}), "event": event.payload if event is not None else None}


def dag_run_of(ds: str, dag_id: str = DAG_ID) -> Any:
    """The DagRun of ``dag_id`` for the logical date ``ds`` as the metadata DB has it now."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.logical_date == pendulum.parse(ds))
        )
        assert run is not None, f"no run of {dag_id} for {ds}"
        session.expunge(run)
        return run
