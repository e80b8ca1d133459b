"""The fault matrix: the call-center DAG against moto's S3 and the Bedrock emulator with one fault per row.

Every row asserts zero duplicate jobs (counted in the emulator) and that each input record is published once.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pendulum
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bedrock_batch.operators import BedrockBatchSubmitOperator
from bedrock_batch.sources import SourceReader, SourceSpec
from bedrock_batch.storage import Storage
from tests.conftest import connection_json
from tests.reliability.harness import (
    DAG_ID,
    MODEL_ID,
    STAGING_BUCKET,
    ActiveJobsProbe,
    assert_clean_run,
    assert_every_record_once,
    assert_no_duplicate_jobs,
    assert_no_task_retried,
    call_rows,
    dag_run_of,
    dag_test_command,
    given_calls,
    job_summary,
    load_dag,
    partition_exists,
    peak_active_from_history,
    put,
    put_jsonl,
    read_report,
    row_key,
    run_conf,
    run_dag,
    run_like_a_worker,
    shard_prefix,
    speed_up_when,
    subprocess_env,
    task_context,
    task_instances,
    transcript,
    use_config,
    wait_until,
    xcoms,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ONE_JOB_PER_100 = {"max_records_per_job": 100}


def call_ids(rows: list[dict[str, Any]]) -> list[str]:
    return [str(r["call_id"]) for r in rows]


def looked_up(stack: Any, job: dict[str, Any], since: int) -> str | None:
    """When a task first looked up ``job``'s shard (ListModelInvocationJobs by name) after call ``since``."""
    prefix = shard_prefix(job["jobName"])
    return next(
        (
            str(r["time"])
            for r in stack.admin.requests()[since:]
            if r["operation"] == "ListModelInvocationJobs" and r["params"].get("nameContains") == prefix
        ),
        None,
    )


def clear_faults_after(stack: Any, jobs: int, **cleared: Any) -> threading.Thread:
    """Clear fault settings once ``jobs`` jobs exist and all have ended (before the retry round submits).

    Faults are decided per job (fate at creation, record errors while it runs), so the retry round of the
    same run meets a healthy service.
    """

    def ended() -> bool:
        listed = stack.admin.jobs()
        return len(listed) >= jobs and all("endTime" in j for j in listed)

    def clear() -> None:
        try:
            wait_until(ended, timeout=120, interval=0.01)
        finally:
            stack.admin.set_faults(**cleared)

    thread = threading.Thread(target=clear, name="clear-faults", daemon=True)
    thread.start()
    return thread


def submit_result(dag_run: Any, job_arn: str) -> dict[str, Any]:
    """The submit task's XCom for the shard of job ``job_arn`` (dag.test() runs map indexes in any order)."""
    results = [r for r in xcoms(dag_run, "submit").values() if r["job_arn"] == job_arn]
    assert len(results) == 1, f"{len(results)} submit results for {job_arn}"
    return dict(results[0])


def first_round_jobs(stack: Any, dag_run: Any) -> dict[int, dict[str, Any]]:
    """The emulator's job of each first-round shard of ``dag_run``, by shard number."""
    by_name = {j["jobName"]: j for j in stack.admin.jobs()}
    return {r["shard"]: by_name[r["job_name"]] for r in xcoms(dag_run, "submit").values()}


# --- rows 1 and 2: the task that waits for a job dies or is cleared --------------------------------------


@contextlib.contextmanager
def dag_run_in_a_child(ds: str, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run the DAG for ``ds`` with dag.test() in a child process, its worker and (inline) its triggerer;
    the child is killed on leaving the block if it is still running."""
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        child = subprocess.Popen(
            dag_test_command(ds), env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def wait_for_waiting_job(stack: Any) -> dict[str, Any]:
    """The first job once the worker polls it from its deferred wait (two status reads: submit, trigger)."""

    def polled() -> dict[str, Any] | None:
        jobs = stack.admin.jobs()
        if not jobs:
            return None
        gets = [
            r for r in stack.admin.requests("GetModelInvocationJob") if jobs[0]["jobId"] in str(r["params"])
        ]
        return jobs[0] if len(gets) >= 2 else None

    return dict(wait_until(polled, timeout=120))


def left_submitted_after_reattach(stack: Any, job: dict[str, Any], since: int) -> bool:
    """Whether ``job`` was still Submitted when the re-run's task for its shard looked it up."""
    looked = looked_up(stack, job, since)
    history = stack.admin.job(job["jobArn"])["history"]
    return looked is not None and pendulum.parse(history[1]["time"]) >= pendulum.parse(looked)


class TestRow1SubmitClearedWhileItsJobRuns:
    DS = "2026-07-01"

    def test_rerun_reattaches_while_the_old_try_still_waits(self, stack, tmp_path, monkeypatch):
        # One job: the re-run meets no other held job before it looks this one up (dag.test() runs map
        # indexes in any order).
        s3, rows = given_calls(stack, tmp_path, monkeypatch, self.DS, 100)
        stack.admin.set_time_scale(0.01)  # the job stays Submitted until the re-run has attached

        with dag_run_in_a_child(self.DS, tmp_path / "old-try.log") as old_try:
            job = wait_for_waiting_job(stack)
            since = len(stack.admin.requests())
            release = speed_up_when(stack, lambda: looked_up(stack, job, since))
            # dag.test() of the same logical date clears the run's task instances and runs them again,
            # while the old try is still alive and waiting for the same job.
            rerun = run_dag(self.DS)
            release.join(timeout=10)
            old_try.wait(timeout=60)

        assert_clean_run(stack, s3, self.DS, rerun, rows)
        assert left_submitted_after_reattach(stack, job, since)
        reattached = submit_result(rerun, job["jobArn"])
        assert (reattached["reused"], reattached["status"]) == (True, "Completed")
        assert stack.admin.job(job["jobArn"])["createRequests"] == 1  # found by name, not even re-sent


class TestRow2WorkerKilledWhileWaiting:
    DS = "2026-07-02"

    def test_sigkill_then_rerun_reattaches_and_completes(self, stack, tmp_path, monkeypatch):
        s3, rows = given_calls(stack, tmp_path, monkeypatch, self.DS, 100)
        stack.admin.set_time_scale(0.01)

        with dag_run_in_a_child(self.DS, tmp_path / "killed-worker.log") as worker:
            job = wait_for_waiting_job(stack)
            os.kill(worker.pid, signal.SIGKILL)  # no on_kill, no trigger clean-up: the job is left running
            worker.wait()
        assert worker.returncode == -signal.SIGKILL
        assert stack.admin.job(job["jobArn"])["status"] == "Submitted"

        since = len(stack.admin.requests())
        release = speed_up_when(stack, lambda: looked_up(stack, job, since))
        rerun = run_dag(self.DS)
        release.join(timeout=10)

        assert_clean_run(stack, s3, self.DS, rerun, rows)
        assert left_submitted_after_reattach(stack, job, since)
        reattached = submit_result(rerun, job["jobArn"])
        assert (reattached["reused"], reattached["status"]) == (True, "Completed")
        assert stack.admin.job(job["jobArn"])["createRequests"] == 1
        assert not [r for r in stack.admin.requests() if r["operation"] == "StopModelInvocationJob"]


# --- row 3: more shards than the concurrency quota -------------------------------------------------------


def submit_operators(config: dict[str, Any], shards: list[dict[str, Any]]) -> list[Any]:
    """The DAG's submit task, one operator per shard, with the settings the DAG gives it."""
    from airflow.sdk import DAG

    with DAG(DAG_ID, schedule=None):
        return [
            BedrockBatchSubmitOperator(
                task_id=f"submit_{shard['shard']}",  # the job's name does not depend on the task id
                shard=shard,
                model_id=MODEL_ID,
                role_arn=config["role_arn"],
                invocation_type=config["invocation_type"],
                timeout_hours=config["timeout_hours"],
                poll_interval=config["poll_interval_seconds"],
                quotas=config["quotas"],
                job_slots_uri=f"s3://{STAGING_BUCKET}/batch/_job_slots/",  # as the DAG derives it
                deferrable=True,
            )
            for shard in shards
        ]


def submit_in_parallel(
    operators: list[Any], dag_run: Any, *, start_together: bool = False
) -> tuple[list[Any], list[str]]:
    """Run each operator on its own thread, as parallel workers run a mapped task's instances."""
    barrier = threading.Barrier(len(operators)) if start_together else None
    results: list[Any] = [None] * len(operators)
    errors: list[str] = []

    def work(index: int) -> None:
        if barrier is not None:
            barrier.wait()
        try:
            results[index] = run_like_a_worker(operators[index], task_context(dag_run, "submit", index))
        except Exception as error:
            errors.append(f"shard {index + 1}: {error!r}")

    threads = [threading.Thread(target=work, args=(i,), name=f"worker-{i}") for i in range(len(operators))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results, errors


class TestRow3MoreShardsThanTheQuota:
    @pytest.mark.parametrize(("quota", "ds"), [(20, "2026-07-03"), (3, "2026-07-04")])
    def test_25_shards_never_exceed_the_quota_and_no_task_fails(
        self, stack, tmp_path, monkeypatch, quota, ds
    ):
        config = use_config(tmp_path, monkeypatch, quotas={**ONE_JOB_PER_100, "max_concurrent_jobs": quota})
        s3 = stack.client("s3")
        rows = call_rows(2500)
        put_jsonl(s3, ds, rows)
        stack.admin.set_max_concurrent_jobs(quota)
        dag = load_dag()

        # Stage the run's 25 shards with the DAG's own prepare task (every other task marked done).
        staged = dag.test(
            logical_date=pendulum.parse(ds),
            run_conf=run_conf(ds),
            mark_success_pattern=r"(?!wait_for_source$|prepare$).*",
        )
        shards = xcoms(staged, "prepare")[-1]
        assert len(shards) == 25

        # dag.test() runs mapped task instances one after another; a scheduler runs them side by side.
        # So the 25 submit task instances run here on 25 threads, each deferring as the DAG configures it.
        # Jobs wait in Submitted until the quota is full, then run a quarter of a second each.
        stack.admin.set_time_scale(0.01)
        release = speed_up_when(stack, lambda: stack.admin.created_job_count() >= quota, time_scale=100)
        with ActiveJobsProbe(stack) as probe:
            results, errors = submit_in_parallel(submit_operators(config, shards), staged)
        release.join(timeout=5)
        stack.admin.set_time_scale(3600)
        assert errors == []
        assert {r["status"] for r in results} == {"Completed"}
        jobs = stack.admin.jobs()
        assert len(jobs) == stack.admin.created_job_count() == 25
        assert probe.samples > 10
        assert max(probe.peak, peak_active_from_history(jobs)) == quota  # reached, never exceeded

        # The DAG's own run of the date then reuses the 25 finished jobs and publishes every record.
        run = run_dag(ds, dag=dag)
        assert_clean_run(stack, s3, ds, run, rows)
        assert {r["reused"] for r in xcoms(run, "submit").values()} == {True}

    def test_own_quota_below_the_account_quota_holds_when_tasks_start_together(
        self, stack, tmp_path, monkeypatch
    ):
        config = use_config(tmp_path, monkeypatch, quotas={**ONE_JOB_PER_100, "max_concurrent_jobs": 2})
        stack.admin.set_max_concurrent_jobs(20)  # the account allows 20; this DAG may use 2
        s3 = stack.client("s3")
        lines = b"".join(
            orjson.dumps(
                {
                    "recordId": f"R{n:010d}",
                    "modelInput": {
                        "anthropic_version": "bedrock-2023-05-31",
                        "max_tokens": 64,
                        "messages": [{"role": "user", "content": [{"type": "text", "text": transcript(n)}]}],
                    },
                }
            )
            + b"\n"
            for n in range(100)
        )
        shards = []
        for number in range(1, 7):
            key = f"gate/shard-{number:04d}/part-0001.jsonl"
            s3.put_object(Bucket=STAGING_BUCKET, Key=key, Body=lines)
            shards.append(
                {
                    "shard": number,
                    "input_uri": f"s3://{STAGING_BUCKET}/gate/shard-{number:04d}/",
                    "output_uri": f"s3://{STAGING_BUCKET}/gate/output/shard-{number:04d}/",
                    "records": 100,
                    "fingerprint": f"{number:064x}",
                }
            )
        service = stack.emulator.service
        create = service.create_job

        def create_with_latency(request: Any) -> Any:
            threading.Event().wait(0.3)  # the service takes a moment to answer CreateModelInvocationJob
            return create(request)

        monkeypatch.setattr(service, "create_job", create_with_latency)
        stack.admin.set_time_scale(20)
        dag_run = SimpleNamespace(run_id="manual__gate", logical_date=pendulum.parse("2026-07-05"))

        _, errors = submit_in_parallel(submit_operators(config, shards), dag_run, start_together=True)

        assert errors == []
        assert peak_active_from_history(stack.admin.jobs()) <= 2


# --- row 4: throttling -----------------------------------------------------------------------------------


class TestRow4Throttling:
    DS = "2026-07-06"

    def test_30_percent_of_control_plane_calls_throttled(self, stack, tmp_path, monkeypatch):
        s3, rows = given_calls(stack, tmp_path, monkeypatch, self.DS, 200, quotas=ONE_JOB_PER_100)
        stack.admin.set_faults(throttle_rate=0.3, seed=4)
        stack.admin.set_time_scale(100)  # jobs run a quarter of a second: a few status polls each

        run = run_dag(self.DS)

        assert_clean_run(stack, s3, self.DS, run, rows)
        assert job_summary(stack) == {"Completed": 2}
        throttled = Counter(
            r["operation"] for r in stack.admin.requests() if r.get("error") == "ThrottlingException"
        )
        assert sum(throttled.values()) >= 5, throttled
        assert len(throttled) >= 2, throttled

    def test_a_throttled_status_read_right_after_submit_does_not_fail_the_task(
        self, stack, tmp_path, monkeypatch
    ):
        use_config(tmp_path, monkeypatch, quotas=ONE_JOB_PER_100)
        # botocore's retries off: every throttle reaches our code, which must retry it (as it does elsewhere).
        connection = orjson.loads(connection_json(stack))
        connection["extra"]["config_kwargs"] = {"retries": {"total_max_attempts": 1}}
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", orjson.dumps(connection).decode())
        put_jsonl(stack.client("s3"), "2026-07-07", call_rows(100))
        injector = stack.emulator.faults
        serve = injector.api_fault
        pending = {"throttles": 0}

        def throttle_the_read_after_a_create(operation: str) -> str | None:
            if operation == "CreateModelInvocationJob":
                pending["throttles"] = 1
            elif operation == "GetModelInvocationJob" and pending["throttles"]:
                pending["throttles"] -= 1
                return "ThrottlingException"
            return serve(operation)

        monkeypatch.setattr(injector, "api_fault", throttle_the_read_after_a_create)

        run = run_dag("2026-07-07")

        assert run.state == "success"
        assert_no_task_retried(run)


# --- rows 5 to 8: jobs that end other than Completed ----------------------------------------------------


class TestRow5JobFailed:
    DS = "2026-07-08"

    def test_the_run_fails_with_the_jobs_message_and_a_rerun_recovers(
        self, stack, tmp_path, monkeypatch, capfd
    ):
        s3, rows = given_calls(stack, tmp_path, monkeypatch, self.DS, 200, quotas=ONE_JOB_PER_100)
        stack.admin.set_faults(fail_jobs_matching=r"-s0002-")

        failed_run = run_dag(self.DS)

        # The shard's job failed on every try the DAG allows (3: retries=2), each try a new attempt created
        # only after the previous one had failed; the run fails and publishes nothing.
        assert failed_run.state == "failed"
        states = {(ti.task_id, ti.map_index): (ti.state, ti.try_number) for ti in task_instances(failed_run)}
        assert states[("submit", 0)] == ("success", 1)
        assert states[("submit", 1)] == ("failed", 3)
        assert states[("publish", -1)][0] == "upstream_failed"
        failed = sorted(
            (j for j in stack.admin.jobs() if j["status"] == "Failed"), key=lambda j: j["jobName"]
        )
        assert [j["jobName"][-3:] for j in failed] == ["-a1", "-a2", "-a3"]
        assert len({shard_prefix(j["jobName"]) for j in failed}) == 1
        output = capfd.readouterr().out
        for job in failed:
            assert f"JobFailedError: job {job['jobId']} ended Failed: {job['message']}" in output
        assert not partition_exists(s3, self.DS), "a failed run must not publish a partial table"

        # Nothing is lost: once the cause is gone, a re-run of the date reuses the good shard's job, submits
        # a fourth attempt for the failed one and publishes every record.
        stack.admin.set_faults(fail_jobs_matching=None)
        rerun = run_dag(self.DS)
        assert_clean_run(stack, s3, self.DS, rerun, rows)
        submitted = xcoms(rerun, "submit")
        assert (submitted[0]["reused"], submitted[1]["reused"]) == (True, False)
        assert submitted[1]["job_name"].endswith("-a4")


class TestRow6PartiallyCompleted:
    DS = "2026-07-09"

    def test_processed_records_salvaged_and_the_rest_retried(self, stack, tmp_path, monkeypatch):
        s3, rows = given_calls(stack, tmp_path, monkeypatch, self.DS, 300, quotas=ONE_JOB_PER_100)
        stack.admin.set_faults(partial_jobs_matching=r"-s000[12]-", partial_fraction=0.5)
        healed = clear_faults_after(stack, 3, partial_jobs_matching=None)

        run = run_dag(self.DS)
        healed.join(timeout=5)

        result = assert_clean_run(stack, s3, self.DS, run, rows)
        first = first_round_jobs(stack, run)
        assert {n: j["status"] for n, j in first.items()} == {
            1: "PartiallyCompleted",
            2: "PartiallyCompleted",
            3: "Completed",
        }
        assert [first[n]["processedRecordCount"] for n in (1, 2)] == [50, 50]
        assert {r["outcome"] for r in xcoms(run, "submit").values()} == {"salvage", "success"}
        assert xcoms(run, "collect", "round")[-1]["missing"] == 100
        retry = xcoms(run, "submit_retry")
        assert [(r["records"], r["status"]) for r in retry.values()] == [(100, "Completed")]
        # The salvaged half of each partial job kept its first answer; only the other half was paid again.
        by_job = Counter(r["job_arn"] for r in result.rows)
        assert [by_job[first[n]["jobArn"]] for n in (1, 2, 3)] == [50, 50, 100]
        assert by_job[retry[0]["job_arn"]] == 100


class TestRow7Expired:
    DS = "2026-07-10"

    def test_expired_job_salvaged_and_its_records_retried(self, stack, tmp_path, monkeypatch):
        s3, rows = given_calls(
            stack, tmp_path, monkeypatch, self.DS, 200, quotas=ONE_JOB_PER_100, timeout_hours=24
        )
        stack.admin.set_faults(expire_jobs_matching=r"-s0001-")
        stack.admin.set_time_scale(86_400)  # the 24-hour timeout passes in about a second
        healed = clear_faults_after(stack, 2, expire_jobs_matching=None)

        run = run_dag(self.DS)
        healed.join(timeout=5)

        result = assert_clean_run(stack, s3, self.DS, run, rows)
        first = first_round_jobs(stack, run)
        assert (first[1]["status"], first[1]["processedRecordCount"]) == ("Expired", 0)
        assert first[1]["message"]
        assert xcoms(run, "submit")[0]["outcome"] == "salvage"
        assert xcoms(run, "collect", "round")[-1]["missing"] == 100
        assert [r["status"] for r in xcoms(run, "submit_retry").values()] == ["Completed"]
        assert first[1]["jobArn"] not in {r["job_arn"] for r in result.rows}


class TestRow8StoppedFromOutside:
    DS = "2026-07-11"

    def test_stopped_job_salvaged_and_the_rest_retried(self, stack, tmp_path, monkeypatch):
        s3, rows = given_calls(stack, tmp_path, monkeypatch, self.DS, 200, quotas=ONE_JOB_PER_100)
        stack.admin.configure(time_scale=20, records_per_second=2)  # 100 records take 2.5 s of wall time
        bedrock = stack.client("bedrock")
        stopped: dict[str, Any] = {}

        def stop_from_the_console() -> None:
            try:
                job = wait_until(lambda: next(iter(stack.admin.jobs()), None), timeout=120, interval=0.01)
                wait_until(
                    lambda: stack.admin.job(job["jobArn"])["processedRecordCount"] >= 50,
                    timeout=60,
                    interval=0.01,
                )
                bedrock.stop_model_invocation_job(jobIdentifier=job["jobArn"])
                stopped.update(job)
            finally:
                stack.admin.configure(time_scale=3600, records_per_second=20)

        stopper = threading.Thread(target=stop_from_the_console, daemon=True)
        stopper.start()
        run = run_dag(self.DS)
        stopper.join(timeout=10)

        result = assert_clean_run(stack, s3, self.DS, run, rows)
        job = stack.admin.job(stopped["jobArn"])
        assert job["status"] == "Stopped"
        salvaged = job["processedRecordCount"]
        assert 50 <= salvaged < 100
        assert len(stack.admin.requests("StopModelInvocationJob")) == 1  # ours; the DAG never stops a job
        assert submit_result(run, job["jobArn"])["outcome"] == "salvage"
        assert xcoms(run, "collect", "round")[-1]["retried"] == 100 - salvaged
        assert Counter(r["job_arn"] for r in result.rows)[job["jobArn"]] == salvaged


# --- rows 9 and 10: records that fail, outputs that are damaged -----------------------------------------


def output_lines(s3: Any, output_uri: str) -> list[dict[str, Any]]:
    """Every line of the ``.jsonl.out`` files under a job's output prefix."""
    bucket, _, prefix = output_uri.removeprefix("s3://").partition("/")
    lines = []
    for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        if item["Key"].endswith(".jsonl.out"):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            lines += [orjson.loads(line) for line in body.splitlines() if line.strip()]
    return lines


class TestRow9RecordErrors:
    DS = "2026-07-12"

    def test_500s_retried_and_400s_reported(self, stack, tmp_path, monkeypatch):
        s3, rows = given_calls(stack, tmp_path, monkeypatch, self.DS, 300, quotas=ONE_JOB_PER_100)
        # 7 % of the records answer an error: five in seven a 500, two in seven a 400.
        stack.admin.set_faults(record_error_rate=0.07, record_error_codes=[500, 500, 500, 500, 500, 400, 400])
        healed = clear_faults_after(stack, 3, record_error_rate=0.0)

        run = run_dag(self.DS)
        healed.join(timeout=5)

        assert run.state == "success"
        assert_no_task_retried(run)
        first_round: dict[int, set[str]] = {500: set(), 400: set()}
        for submitted in xcoms(run, "submit").values():
            for line in output_lines(s3, submitted["output_uri"]):
                if "error" in line:
                    first_round[line["error"]["errorCode"]].add(line["recordId"])
        assert first_round[500], "no 500s were injected: the row proves nothing"
        assert first_round[400], "no 400s were injected: the row proves nothing"
        collected = xcoms(run, "collect", "round")[-1]
        assert collected["retryable"] == collected["retried"] == len(first_round[500])

        result = assert_every_record_once(s3, self.DS, call_ids(rows), run_id=run.run_id)
        by_record = {r["record_id"]: r for r in result.rows}
        assert {rid for rid, r in by_record.items() if r["status"] == "failed"} == first_round[400]
        assert result.codes("failed") == {"400": len(first_round[400])}
        assert all(r["retryable"] is False and r["error_message"] for r in result.by_status["failed"])
        assert {by_record[rid]["status"] for rid in first_round[500]} == {"succeeded"}
        assert result.count("succeeded") == len(rows) - len(first_round[400])
        assert read_report(s3, self.DS)["retried"] == len(first_round[500])
        assert_no_duplicate_jobs(stack, [run])


def damage_when_completed(stack: Any, damage: Any, jobs: int) -> threading.Thread:
    """Call ``damage(job)`` for each of the first ``jobs`` jobs as soon as it is Completed: after the
    service wrote its output, before the DAG's collect task reads it."""

    def watch() -> None:
        done: set[str] = set()
        while len(done) < jobs:
            for job in stack.admin.jobs():
                if job["status"] == "Completed" and job["jobId"] not in done and len(done) < jobs:
                    damage(job)
                    done.add(job["jobId"])
            threading.Event().wait(0.01)

    thread = threading.Thread(target=watch, name="damage-output", daemon=True)
    thread.start()
    return thread


def output_keys(s3: Any, job: dict[str, Any]) -> tuple[str, list[str]]:
    """(bucket, keys) of everything a job wrote under ``<output>/<jobId>/``."""
    output = job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
    bucket, _, prefix = f"{output.rstrip('/')}/{job['jobId']}/".removeprefix("s3://").partition("/")
    return bucket, [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


class TestRow10DamagedOutput:
    def test_missing_output_and_truncated_last_line_are_retried(self, stack, tmp_path, monkeypatch):
        ds = "2026-07-13"
        # Up to 150 records per job: the 200 records make two jobs of 100, and their 101 damaged records
        # one retry job.
        s3, rows = given_calls(stack, tmp_path, monkeypatch, ds, 200, quotas={"max_records_per_job": 150})
        truncated: dict[str, str] = {}

        def damage(job: dict[str, Any]) -> None:
            bucket, keys = output_keys(s3, job)
            if "-s0001-" in job["jobName"]:
                for key in keys:  # the job's whole output is gone
                    s3.delete_object(Bucket=bucket, Key=key)
                return
            (key,) = [k for k in keys if k.endswith(".jsonl.out")]
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            head, _, last = body.rstrip(b"\n").rpartition(b"\n")
            truncated["record_id"] = orjson.loads(last)["recordId"]
            s3.put_object(Bucket=bucket, Key=key, Body=head + b"\n" + last[: len(last) // 2])

        damager = damage_when_completed(stack, damage, jobs=2)
        run = run_dag(ds)
        damager.join(timeout=10)

        result = assert_clean_run(stack, s3, ds, run, rows)
        collected = xcoms(run, "collect", "round")[-1]
        assert (collected["missing"], collected["retryable"], collected["retried"]) == (100, 101, 101)
        assert [r["records"] for r in xcoms(run, "submit_retry").values()] == [101]
        first = first_round_jobs(stack, run)
        by_record = {r["record_id"]: r for r in result.rows}
        assert by_record[truncated["record_id"]]["job_arn"] != first[2]["jobArn"]
        assert Counter(r["job_arn"] for r in result.rows)[first[2]["jobArn"]] == 99
        assert first[1]["jobArn"] not in {r["job_arn"] for r in result.rows}

    def test_a_job_whose_whole_output_is_missing_is_resubmitted(self, stack, tmp_path, monkeypatch):
        ds = "2026-07-20"
        s3, rows = given_calls(stack, tmp_path, monkeypatch, ds, 200, quotas=ONE_JOB_PER_100)

        def lose_output(job: dict[str, Any]) -> None:
            bucket, keys = output_keys(s3, job)
            for key in keys:
                s3.delete_object(Bucket=bucket, Key=key)

        damager = damage_when_completed(stack, lose_output, jobs=1)
        run = run_dag(ds)
        damager.join(timeout=10)

        assert run.state == "success"
        result = assert_every_record_once(s3, ds, call_ids(rows), run_id=run.run_id)
        assert result.codes("failed") == {}
        assert result.count("succeeded") == len(rows)


# --- row 11: a bad-input corpus --------------------------------------------------------------------------

PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00"


def assert_corpus_run(
    stack: Any, s3: Any, ds: str, run: Any, good: list[dict[str, Any]], bad: list[tuple[str, str]]
) -> Any:
    """The valid rows all succeeded and each bad row is published once, quarantined with its reason.

    :param bad: (key, reason) per bad row; the key is the row's call id, or ``@<source position>``.
    """
    assert run.state == "success"
    assert_no_duplicate_jobs(stack, [run])
    result = assert_every_record_once(s3, ds, [*call_ids(good), *(key for key, _ in bad)], run_id=run.run_id)
    assert result.count("succeeded") == len(good)
    assert sorted((row_key(r), r["error_code"]) for r in result.by_status["quarantined"]) == sorted(bad)
    return result


class TestRow11BadInputCorpus:
    @staticmethod
    def given_valid_rows(stack: Any, tmp_path: Path, monkeypatch: Any, prefix: str, **quotas: Any) -> Any:
        """Configure the DAG and return the S3 client and 100 valid rows (one batch job)."""
        use_config(tmp_path, monkeypatch, quotas={**ONE_JOB_PER_100, **quotas})
        return stack.client("s3"), call_rows(100, prefix=prefix)

    def test_text_files(self, stack, tmp_path, monkeypatch):
        ds = "2026-07-14"
        # A real 50 MB transcript, refused by its size before it is read (the limit is lowered to 1 MB).
        s3, good = self.given_valid_rows(stack, tmp_path, monkeypatch, "text", max_record_bytes=1_000_000)
        for row in good:
            put(s3, f"{ds}/text/{row['call_id']}.txt", row["transcript"].encode())
        bad = {
            "empty": (b"", "empty_text"),
            "blank": (b" \n\t\n", "empty_text"),
            "png": (PNG_HEADER, "bad_utf8"),
            "latin1": ("Agent: Grüß Gott\nCustomer: Ça va".encode("latin-1"), "bad_utf8"),
            "huge": (b"Agent: hello\nCustomer: " + b"la " * (50 * 1024 * 1024 // 3), "file_too_large"),
        }
        for name, (data, _) in bad.items():
            put(s3, f"{ds}/text/{name}.txt", data)
        put(s3, f"{ds}/text/resent/{good[0]['call_id']}.txt", b"Agent: hi again\nCustomer: me again")

        run = run_dag(ds, "text")

        expected = [(name, reason) for name, (_, reason) in bad.items()] + [
            (good[0]["call_id"], "duplicate_id")
        ]
        result = assert_corpus_run(stack, s3, ds, run, good, expected)
        huge = next(r for r in result.by_status["quarantined"] if r["call_id"] == "huge")
        assert huge["error_message"].startswith(f"{len(bad['huge'][0]):,} bytes")

    def test_jsonl_lines(self, stack, tmp_path, monkeypatch):
        ds = "2026-07-15"
        s3, good = self.given_valid_rows(stack, tmp_path, monkeypatch, "jsonl")
        # (line, the call id it carries or None, the quarantine reason)
        bad_lines = [
            (b'{"call_id": "cut-off", "transcript": "Agent: hel', None, "invalid_json"),
            (b'["call_id", "transcript"]', None, "invalid_json"),
            (b'{"call_id": "latin1", "transcript": "Gr\xfc\xdf Gott"}', None, "bad_utf8"),
            (b"\x89PNG\x1a\x00\x00\x00IHDR\xff\xfe\x00", None, "bad_utf8"),
            (orjson.dumps({"transcript": "Agent: no id here"}), None, "missing_id"),
            (orjson.dumps({"call_id": None, "transcript": "Agent: null id"}), None, "missing_id"),
            (orjson.dumps({"call_id": "no-text"}), "no-text", "missing_text"),
            (orjson.dumps({"call_id": "number-text", "transcript": 42}), "number-text", "missing_text"),
            (orjson.dumps({"call_id": "blank-text", "transcript": "   "}), "blank-text", "empty_text"),
            (orjson.dumps(good[0]), good[0]["call_id"], "duplicate_id"),
        ]
        lines = [orjson.dumps(r) for r in good[:50]] + [b""]  # a blank line is no record
        expected = []
        for data, call_id, reason in bad_lines:
            lines.append(data)
            expected.append((call_id if call_id is not None else f"@calls.jsonl:{len(lines)}", reason))
        lines += [orjson.dumps(r) for r in good[50:]]
        put(s3, f"{ds}/jsonl/calls.jsonl", b"\n".join(lines) + b"\n")
        put(s3, f"{ds}/jsonl/empty.jsonl", b"")  # an empty file holds no record

        run = run_dag(ds, "jsonl")

        assert_corpus_run(stack, s3, ds, run, good, expected)

    def test_csv_rows(self, stack, tmp_path, monkeypatch):
        ds = "2026-07-16"
        s3, good = self.given_valid_rows(stack, tmp_path, monkeypatch, "csv")
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["call_id", "transcript", "agent_id"])
        writer.writerows([r["call_id"], r["transcript"], "a1"] for r in good)  # multi-line quoted fields
        body = buffer.getvalue().encode()
        bad_rows = [
            (b"only-id\r\n", "only-id", "empty_text"),  # the transcript and agent columns are missing
            (b',"Agent: a row without its id",a1\r\n', None, "missing_id"),
            (b'latin1,"Gr\xfc\xdf Gott",a1\r\n', None, "bad_utf8"),
            (b'broken,"Agent: text" after the closing quote,a1\r\n', None, "invalid_csv"),
            (
                f"{good[1]['call_id']},Agent: the same call again,a1\r\n".encode(),
                good[1]["call_id"],
                "duplicate_id",
            ),
        ]
        expected = []
        for data, call_id, reason in bad_rows:
            line = body.count(b"\n") + 1
            expected.append((call_id if call_id is not None else f"@calls.csv:{line}", reason))
            body += data
        put(s3, f"{ds}/csv/calls.csv", body)

        run = run_dag(ds, "csv")

        assert_corpus_run(stack, s3, ds, run, good, expected)

    def test_parquet_rows(self, stack, tmp_path, monkeypatch):
        ds = "2026-07-17"
        s3, good = self.given_valid_rows(stack, tmp_path, monkeypatch, "pq")
        ids = [*call_ids(good), None, "null-text", "latin1", good[2]["call_id"]]
        texts = [r["transcript"].encode() for r in good] + [b"Agent: no id", None, "Grüß".encode("latin-1")]
        texts.append(b"Agent: the same call again")
        table = pa.table({"call_id": pa.array(ids, pa.string()), "transcript": pa.array(texts, pa.binary())})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        put(s3, f"{ds}/parquet/calls.parquet", buffer.getvalue())

        run = run_dag(ds, "parquet")

        expected = [
            ("@calls.parquet:101", "missing_id"),
            ("null-text", "missing_text"),
            ("latin1", "bad_utf8"),
        ]
        assert_corpus_run(stack, s3, ds, run, good, [*expected, (good[2]["call_id"], "duplicate_id")])

    @pytest.mark.parametrize("source_format", ["csv", "parquet"])
    def test_a_file_with_the_wrong_columns_is_quarantined_not_fatal(self, tmp_path, source_format):
        good = call_rows(3, prefix="good")
        if source_format == "csv":
            with (tmp_path / "a-good.csv").open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=["call_id", "transcript"])
                writer.writeheader()
                writer.writerows(good)
            (tmp_path / "b-export.csv").write_text("call_id,notes\nx1,hello\nx2,world\n")
        else:
            pq.write_table(pa.Table.from_pylist(good), tmp_path / "a-good.parquet")
            pq.write_table(
                pa.table({"id": ["x1", "x2"], "body": ["hello", "world"]}), tmp_path / "b-other.parquet"
            )
        spec = SourceSpec(
            uri=str(tmp_path), format=source_format, id_column="call_id", text_column="transcript"
        )

        rows = list(SourceReader(spec, Storage()))

        assert [r.key for r in rows if r.problem is None] == call_ids(good)
        assert len([r for r in rows if r.problem is not None]) == 2


# --- row 12: two runs at once share one model's quota ---------------------------------------------------


class TestRow12TwoRunsShareTheQuota:
    DAYS = ("2026-07-18", "2026-07-19")

    def test_both_succeed_and_the_quota_holds(self, stack, tmp_path, monkeypatch):
        use_config(tmp_path, monkeypatch, quotas={**ONE_JOB_PER_100, "max_concurrent_jobs": 1})
        s3 = stack.client("s3")
        inputs = {}
        for index, ds in enumerate(self.DAYS):
            inputs[ds] = call_rows(200, prefix=f"day{index}")
            put_jsonl(s3, ds, inputs[ds])
        # A quota of one: dag.test() submits a run's shards one after another, so two runs hold at most two
        # jobs at once and only a quota below that makes them compete.
        stack.admin.set_max_concurrent_jobs(1)
        # This run's first job holds the slot until the other run has found the quota full.
        stack.admin.set_time_scale(0.01)

        def competing() -> bool:
            counts = [
                r for r in stack.admin.requests("ListModelInvocationJobs") if "statusEquals" in r["params"]
            ]
            return len(counts) > len(ACTIVE_COUNT_STATUSES) and stack.admin.created_job_count() >= 1

        with dag_run_in_a_child(self.DAYS[1], tmp_path / "other-run.log") as other:
            release = speed_up_when(stack, competing, time_scale=20, timeout=180)
            with ActiveJobsProbe(stack) as probe:
                mine = run_dag(self.DAYS[0])
                other.wait(timeout=180)
            release.join(timeout=5)

        assert other.returncode == 0, (tmp_path / "other-run.log").read_text()[-3000:]
        assert "DAG_RUN_STATE=success" in (tmp_path / "other-run.log").read_text()
        theirs = dag_run_of(self.DAYS[1])
        assert mine.state == theirs.state == "success"
        for run in (mine, theirs):
            assert_no_task_retried(run)
        jobs = stack.admin.jobs()
        assert max(probe.peak, peak_active_from_history(jobs)) == 1
        counts = [r for r in stack.admin.requests("ListModelInvocationJobs") if "statusEquals" in r["params"]]
        # Four shards need four counts of the active jobs; more means a task found the slot taken and waited.
        assert len(counts) > 4 * len(ACTIVE_COUNT_STATUSES), "the runs never competed for the slot"
        assert_no_duplicate_jobs(stack, [mine, theirs])
        for run, ds in ((mine, self.DAYS[0]), (theirs, self.DAYS[1])):
            result = assert_every_record_once(s3, ds, call_ids(inputs[ds]), run_id=run.run_id)
            assert result.count("succeeded") == len(inputs[ds])


ACTIVE_COUNT_STATUSES = ("Submitted", "Validating", "Scheduled", "InProgress")
