"""BedrockBatchJobSensor on jobs created outside Airflow, through dag.test() against the Bedrock emulator.

Poke, reschedule and deferrable modes; the DAGs live in tests/test_dags/bedrock_batch_sensor.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bedrock_batch.errors import JobFailedError
from bedrock_batch.sensors import BedrockBatchJobSensor
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

DAGS = load_test_dags("bedrock_batch_sensor")
GET = "GetModelInvocationJob"


def create_outside_airflow(stack: Any, name: str, records: int = 150) -> str:
    """A job created the way a console user or another tool would: plain boto3, no token."""
    shard = write_shard(stack.client("s3"), records=records)
    response = stack.client("bedrock").create_model_invocation_job(
        jobName=name,
        roleArn=ROLE_ARN,
        modelId=MODEL_ID,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": shard["input_uri"]}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": shard["output_uri"]}},
    )
    return str(response["jobArn"])


def run(dag: Any, job_arn: str, day: int) -> Any:
    logical_date = datetime(2025, 3, 1, tzinfo=UTC) + timedelta(days=day)
    return dag.test(logical_date=logical_date, run_conf={"job_arn": job_arn})


class TestBedrockBatchJobSensor:
    @pytest.mark.parametrize("dag_name", ["poke", "reschedule", "deferrable"])
    def test_waits_for_completed_and_returns_metadata(self, airflow_home, stack, dag_name):
        stack.admin.set_time_scale(0.01)  # the job stays Submitted until the sensor has checked once
        arn = create_outside_airflow(stack, f"sensor-done-{dag_name}")
        release = speed_up_when(stack, lambda calls: any(c["operation"] == GET for c in calls))

        dag_run = run(getattr(DAGS, dag_name), arn, day=1)
        release.join(timeout=5)

        assert dag_run.state == "success"
        job_id = arn.rsplit("/", 1)[-1]
        result = xcoms(dag_run, "wait")[-1]
        assert result["job_arn"] == arn
        assert result["job_id"] == job_id
        assert (result["status"], result["outcome"]) == ("Completed", "success")
        assert result["total_records"] == result["success_records"] == 150
        assert result["output_uri"].endswith(f"/output/{job_id}/")
        assert stack.admin.created_job_count() == 1
        # It really waited: the first check saw the job unfinished (checks stop at the end status).
        assert len(stack.admin.requests("GetModelInvocationJob")) >= 2

    def test_accepts_a_job_id_as_well_as_an_arn(self, airflow_home, stack):
        arn = create_outside_airflow(stack, "sensor-by-id")
        dag_run = run(DAGS.poke, arn.rsplit("/", 1)[-1], day=2)
        assert dag_run.state == "success"
        assert xcoms(dag_run, "wait")[-1]["job_arn"] == arn

    @pytest.mark.parametrize("dag_name", ["poke", "deferrable"])
    def test_failed_job_fails_with_its_message(self, airflow_home, stack, capfd, dag_name):
        stack.admin.set_faults(fail_jobs_matching="^sensor-fail")
        arn = create_outside_airflow(stack, f"sensor-fail-{dag_name}")

        dag_run = run(getattr(DAGS, dag_name), arn, day=3)

        assert dag_run.state == "failed"
        message = stack.admin.job(arn)["message"]
        assert f"ended Failed: {message}" in capfd.readouterr().out

    def test_stopped_job_is_salvaged_unless_strict(self, airflow_home, stack):
        stack.admin.set_time_scale(0.01)
        arn = create_outside_airflow(stack, "sensor-stopped")
        stack.client("bedrock").stop_model_invocation_job(jobIdentifier=arn)
        stack.admin.set_time_scale(3600)
        wait_until(lambda: stack.admin.job(arn)["status"] == "Stopped")

        lenient = run(DAGS.deferrable, arn, day=4)
        assert lenient.state == "success"
        assert (xcoms(lenient, "wait")[-1]["status"], xcoms(lenient, "wait")[-1]["outcome"]) == (
            "Stopped",
            "salvage",
        )
        assert run(DAGS.strict, arn, day=4).state == "failed"

    def test_throttled_pokes_do_not_fail_the_sensor(self, airflow_home, stack):
        stack.admin.set_time_scale(100)
        arn = create_outside_airflow(stack, "sensor-throttled")
        stack.admin.set_faults(throttle_rate=0.5, seed=11)

        dag_run = run(DAGS.no_client_retries, arn, day=5)

        assert dag_run.state == "success"
        throttled = [r for r in stack.admin.requests("GetModelInvocationJob") if r.get("error")]
        assert throttled, "no poke was throttled, so the test proves nothing"

    def test_deadline_fails_the_deferred_sensor(self, airflow_home, stack):
        stack.admin.set_time_scale(0.01)  # the job stays Submitted
        arn = create_outside_airflow(stack, "sensor-slow")
        dag_run = run(DAGS.short_timeout, arn, day=6)
        assert dag_run.state == "failed"
        assert task_states(dag_run, "wait") == {-1: "failed"}
        # The sensor only watches: it never stops a job it did not create.
        assert stack.admin.job(arn)["status"] == "Submitted"

    def test_error_event_raises_without_polling_again(self, stack):
        # The job really Completed, but the event says Failed: the sensor must trust the event and
        # fail, never re-poll into success (the provider sensor's defect).
        arn = create_outside_airflow(stack, "sensor-event")
        wait_until(lambda: stack.admin.job(arn)["status"] == "Completed")
        calls_before = len(stack.admin.requests("GetModelInvocationJob"))
        sensor = BedrockBatchJobSensor(task_id="wait", job_arn=arn)
        event = {
            "status": "error",
            "reason": "ended",
            "job_arn": arn,
            "job_status": "Failed",
            "message": "boom",
        }
        with pytest.raises(JobFailedError, match="ended Failed: boom"):
            sensor.execute_complete(context={}, event=event)  # type: ignore[arg-type]
        with pytest.raises(Exception, match="unexpected trigger event"):
            sensor.execute_complete(context={}, event=None)  # type: ignore[arg-type]
        assert len(stack.admin.requests("GetModelInvocationJob")) == calls_before

    def test_state_sets_belong_to_each_sensor(self):
        lenient = BedrockBatchJobSensor(task_id="lenient", job_arn="abcdefabcdef")
        strict = BedrockBatchJobSensor(task_id="strict", job_arn="abcdefabcdef", strict=True)
        assert "PartiallyCompleted" in lenient.success_statuses
        assert "PartiallyCompleted" in strict.failure_statuses
        assert lenient.success_statuses == {"Completed", "PartiallyCompleted", "Stopped", "Expired"}
        assert strict.success_statuses == {"Completed"}
        assert not hasattr(BedrockBatchJobSensor, "success_statuses")
        assert not hasattr(BedrockBatchJobSensor, "failure_statuses")

    def test_default_timeout_outlasts_the_longest_job(self):
        sensor = BedrockBatchJobSensor(task_id="wait", job_arn="abcdefabcdef")
        assert sensor.timeout > timedelta(hours=168).total_seconds()
