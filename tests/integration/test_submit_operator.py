"""BedrockBatchSubmitOperator through real dag.test() runs against the Bedrock emulator and moto's S3.

The DAGs live in tests/test_dags/bedrock_batch_submit.py; jobs are counted in the emulator, not in mocks.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bedrock_batch.hooks import BedrockBatchHook
from bedrock_batch.jobs import ShardJobKey
from bedrock_batch.links import BedrockBatchJobLink, BedrockBatchOutputLink
from tests.integration.bedrock_shards import (
    MODEL_ID,
    ROLE_ARN,
    load_test_dags,
    speed_up_when,
    stack,
    task_states,
    wait_until,
    write_shard,
    xcoms,
)

__all__ = ["stack"]  # the fixture, imported so pytest finds it here

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


DAGS = load_test_dags("bedrock_batch_submit")


GET = "GetModelInvocationJob"


def count_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ListModelInvocationJobs calls that count active jobs (the concurrency gate's)."""
    return [c for c in calls if c["operation"] == "ListModelInvocationJobs" and "statusEquals" in c["params"]]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def logical_date(day: int) -> datetime:
    return datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=day)


def run(dag: Any, shards: list[dict[str, Any]], day: int) -> Any:
    return dag.test(logical_date=logical_date(day), run_conf={"shards": shards})


def jobs_by_status(stack: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in stack.admin.jobs():
        counts[job["status"]] = counts.get(job["status"], 0) + 1
    return counts


class TestBedrockBatchSubmitOperator:
    def test_one_shard_submitted_and_waited_to_completed(self, airflow_home, stack):
        shard = write_shard(stack.client("s3"), index=1, records=150)
        dag_run = run(DAGS.deferrable, [shard], day=1)

        assert dag_run.state == "success"
        assert stack.admin.created_job_count() == 1
        (job,) = stack.admin.jobs()
        result = xcoms(dag_run, "submit")[0]
        assert result == {
            "shard": 1,
            "records": 150,
            "reused": False,
            "job_arn": job["jobArn"],
            "job_id": job["jobId"],
            "job_name": job["jobName"],
            "status": "Completed",
            "outcome": "success",
            "model_id": MODEL_ID,
            "input_uri": shard["input_uri"],
            "output_uri": f"{shard['output_uri']}{job['jobId']}/",
            "total_records": 150,
            "processed_records": 150,
            "success_records": 150,
            "error_records": 0,
        }
        # Deterministic identity: the job carries our name, token and tags.
        key = ShardJobKey("bb_submit_deferrable", logical_date(1), shard["fingerprint"], 1, MODEL_ID)
        assert job["jobName"] == key.job_name(1)
        assert job["clientRequestToken"] == key.client_token(1)
        tags = {t["key"]: t["value"] for t in job["tags"]}
        assert tags == {
            "dag_id": "bb_submit_deferrable",
            "run_id": dag_run.run_id,
            "shard": "1",
            "round": "1",
        }

    def test_links_point_at_the_job_and_its_output(self, airflow_home, stack):
        shard = write_shard(stack.client("s3"), index=1)
        dag_run = run(DAGS.blocking, [shard], day=2)
        (job,) = stack.admin.jobs()
        job_link = BedrockBatchJobLink().format_link(**xcoms(dag_run, "submit", BedrockBatchJobLink.key)[0])
        assert job_link == (
            "https://console.aws.amazon.com/bedrock/home?region=us-east-1#/batch-inference/details?arn="
            + job["jobArn"].replace(":", "%3A").replace("/", "%2F")
        )
        output_link = BedrockBatchOutputLink().format_link(
            **xcoms(dag_run, "submit", BedrockBatchOutputLink.key)[0]
        )
        bucket, _, prefix = shard["output_uri"].removeprefix("s3://").partition("/")
        assert output_link == (
            f"https://console.aws.amazon.com/s3/buckets/{bucket}?region=us-east-1&prefix={prefix}{job['jobId']}/"
        )

    @pytest.mark.parametrize("dag_name", ["deferrable", "blocking"])
    def test_rerun_of_the_same_date_creates_zero_extra_jobs(self, airflow_home, stack, dag_name):
        dag = getattr(DAGS, dag_name)
        s3 = stack.client("s3")
        shards = [write_shard(s3, index=i) for i in (1, 2, 3)]
        first = run(dag, shards, day=3)
        assert first.state == "success"
        assert stack.admin.created_job_count() == 3

        # dag.test() of the same logical date clears the run's task instances and runs them again,
        # exactly like clearing the submit tasks in the UI.
        second = run(dag, shards, day=3)
        assert second.state == "success"
        assert stack.admin.created_job_count() == 3
        results = xcoms(second, "submit")
        assert {r["reused"] for r in results.values()} == {True}
        assert sorted(r["job_arn"] for r in results.values()) == sorted(
            j["jobArn"] for j in stack.admin.jobs()
        )

        # Changed data is a new job; so is another logical date.
        changed = [*shards[:2], write_shard(s3, index=3)]
        assert run(dag, changed, day=3).state == "success"
        assert stack.admin.created_job_count() == 4
        assert run(dag, shards, day=4).state == "success"
        assert stack.admin.created_job_count() == 7

    def test_reattaches_to_a_job_a_killed_try_left_running(self, airflow_home, stack):
        stack.admin.set_time_scale(0.01)  # the job stays Submitted until the operator has looked at it
        shard = write_shard(stack.client("s3"), index=1)
        # What a try that died after submitting (worker lost, no on_kill) leaves behind.
        key = ShardJobKey("bb_submit_deferrable", logical_date(5), shard["fingerprint"], 1, MODEL_ID)
        BedrockBatchHook(aws_conn_id="aws_default").create_job(
            job_name=key.job_name(1),
            role_arn=ROLE_ARN,
            model_id=MODEL_ID,
            input_s3_uri=shard["input_uri"],
            output_s3_uri=shard["output_uri"],
            client_request_token=key.client_token(1),
        )
        release = speed_up_when(stack, lambda calls: any(c["operation"] == GET for c in calls))

        dag_run = run(DAGS.deferrable, [shard], day=5)
        release.join(timeout=5)
        assert dag_run.state == "success"
        assert stack.admin.created_job_count() == 1
        assert stack.admin.jobs()[0]["createRequests"] == 1  # found by name, not even re-sent
        assert xcoms(dag_run, "submit")[0]["reused"] is True
        assert xcoms(dag_run, "submit")[0]["status"] == "Completed"

    def test_more_shards_than_the_quota_wait_for_a_slot(self, airflow_home, stack):
        stack.admin.set_max_concurrent_jobs(2)
        stack.admin.set_time_scale(0.01)
        s3 = stack.client("s3")
        # Two jobs started outside Airflow fill the quota until the gate has counted them once.
        outside = stack.client("bedrock")
        for n in (1, 2):
            blocker = write_shard(s3, index=90 + n)
            outside.create_model_invocation_job(
                jobName=f"console-job-{n}",
                roleArn=ROLE_ARN,
                modelId=MODEL_ID,
                inputDataConfig={"s3InputDataConfig": {"s3Uri": blocker["input_uri"]}},
                outputDataConfig={"s3OutputDataConfig": {"s3Uri": blocker["output_uri"]}},
            )
        shards = [write_shard(s3, index=i) for i in range(1, 6)]
        release = speed_up_when(stack, lambda calls: len(count_calls(calls)) >= 4, time_scale=60)

        dag_run = run(DAGS.deferrable, shards, day=6)
        release.join(timeout=5)

        assert dag_run.state == "success"
        assert set(task_states(dag_run, "submit").values()) == {"success"}
        assert stack.admin.created_job_count() == 7
        assert jobs_by_status(stack) == {"Completed": 7}
        # The gate waited: our first job was created only after a console job ended, the quota was
        # counted more than once, and the service never had to refuse a create.
        jobs = stack.admin.jobs()
        console_end = min(parse_time(j["endTime"]) for j in jobs if j["jobName"].startswith("console-job"))
        ours_start = min(parse_time(j["submitTime"]) for j in jobs if j["jobName"].startswith("bb-submit"))
        assert ours_start >= console_end
        assert len(count_calls(stack.admin.requests())) > 4 * len(shards)
        refused = [r for r in stack.admin.requests("CreateModelInvocationJob") if r.get("error")]
        assert refused == []

    def test_service_quota_refusals_are_waited_out(self, airflow_home, stack):
        # The operator's own gate allows 20; the account allows 1 and a console job holds it.
        stack.admin.set_max_concurrent_jobs(1)
        stack.admin.set_time_scale(0.01)
        s3 = stack.client("s3")
        blocker = write_shard(s3, index=99)
        stack.client("bedrock").create_model_invocation_job(
            jobName="console-job",
            roleArn=ROLE_ARN,
            modelId=MODEL_ID,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": blocker["input_uri"]}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": blocker["output_uri"]}},
        )
        shards = [write_shard(s3, index=i) for i in (1, 2)]
        release = speed_up_when(stack, lambda calls: any(c.get("error") for c in calls), time_scale=60)

        dag_run = run(DAGS.blocking, shards, day=7)
        release.join(timeout=5)

        assert dag_run.state == "success"
        assert stack.admin.created_job_count() == 3
        refused = [r for r in stack.admin.requests("CreateModelInvocationJob") if r.get("error")]
        assert refused, "the service never refused a create, so the test proves nothing"
        assert {r["error"] for r in refused} == {"ServiceQuotaExceededException"}

    def test_throttling_never_fails_a_task(self, airflow_home, stack):
        s3 = stack.client("s3")
        shards = [write_shard(s3, index=i) for i in (1, 2, 3)]
        stack.admin.set_faults(throttle_rate=0.3, seed=3)
        stack.admin.set_time_scale(30)  # each job runs about a second: a few dozen status checks in all

        dag_run = run(DAGS.no_client_retries, shards, day=8)

        assert dag_run.state == "success"
        assert stack.admin.created_job_count() == 3
        requests = stack.admin.requests()
        throttled = {r["operation"] for r in requests if r.get("error") == "ThrottlingException"}
        # Which calls draw a throttle depends on timing; the reads are frequent enough to always draw some.
        assert {"GetModelInvocationJob", "ListModelInvocationJobs"} <= throttled

    def test_failed_job_fails_the_task_with_the_job_message(self, airflow_home, stack, capfd):
        stack.admin.set_faults(fail_jobs_matching="s0002")
        s3 = stack.client("s3")
        shards = [write_shard(s3, index=i) for i in (1, 2)]

        dag_run = run(DAGS.deferrable, shards, day=9)

        assert dag_run.state == "failed"
        assert task_states(dag_run, "submit") == {0: "success", 1: "failed"}
        failed = next(j for j in stack.admin.jobs() if j["status"] == "Failed")
        output = capfd.readouterr().out
        assert "JobFailedError" in output
        assert f"job {failed['jobId']} ended Failed: {failed['message']}" in output

    @pytest.mark.parametrize(
        ("faults", "status"),
        [
            ({"partial_jobs_matching": ".", "partial_fraction": 0.5}, "PartiallyCompleted"),
            ({"expire_jobs_matching": "."}, "Expired"),
        ],
    )
    def test_partial_and_expired_jobs_are_salvaged(self, airflow_home, stack, faults, status):
        stack.admin.set_faults(**faults)
        stack.admin.set_time_scale(86_400)  # a 24-hour timeout passes in a second
        shard = write_shard(stack.client("s3"), index=1)

        dag_run = run(DAGS.expiring, [shard], day=10)

        assert dag_run.state == "success"
        result = xcoms(dag_run, "submit")[0]
        assert (result["status"], result["outcome"]) == (status, "salvage")
        assert result["processed_records"] < 150

    def test_stopped_job_is_salvaged(self, airflow_home, stack):
        stack.admin.set_time_scale(5)
        shard = write_shard(stack.client("s3"), index=1)
        bedrock = stack.client("bedrock")

        def stop_when_running() -> None:
            job = wait_until(lambda: next(iter(stack.admin.jobs()), None), timeout=60)
            wait_until(lambda: stack.admin.job(job["jobArn"])["status"] == "InProgress", timeout=60)
            bedrock.stop_model_invocation_job(jobIdentifier=job["jobArn"])

        stopper = threading.Thread(target=stop_when_running, daemon=True)
        stopper.start()
        dag_run = run(DAGS.deferrable, [shard], day=11)
        stopper.join(timeout=5)

        assert dag_run.state == "success"
        assert (xcoms(dag_run, "submit")[0]["status"], xcoms(dag_run, "submit")[0]["outcome"]) == (
            "Stopped",
            "salvage",
        )

    def test_strict_mode_fails_on_partial(self, airflow_home, stack):
        stack.admin.set_faults(partial_jobs_matching=".")
        shard = write_shard(stack.client("s3"), index=1)
        dag_run = run(DAGS.strict, [shard], day=12)
        assert dag_run.state == "failed"
        assert jobs_by_status(stack) == {"PartiallyCompleted": 1}

    def test_execution_timeout_stops_its_job_and_fails_without_retrying(self, airflow_home, stack):
        stack.admin.set_time_scale(0.01)  # the job would take hours of wall time
        shard = write_shard(stack.client("s3"), index=1)

        dag_run = run(DAGS.short_timeout, [shard], day=13)

        assert dag_run.state == "failed"
        (job,) = stack.admin.jobs()
        assert job["status"] in ("Stopping", "Stopped")
        assert [r["operation"] for r in stack.admin.requests()].count("StopModelInvocationJob") == 1
        # The task has 2 retries, none used: a retry would find the job stopped and pay for the shard again.
        (ti,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == "submit"]
        assert (ti.state, ti.try_number) == ("failed", 1)
        assert stack.admin.created_job_count() == 1
