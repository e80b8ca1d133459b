"""BedrockBatchJobTrigger run as the triggerer runs it (its async generator) against the Bedrock emulator.

Also checks that serialize() round-trips, since the triggerer rebuilds the trigger from it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk.module_loading import import_string

from bedrock_batch.hooks import BedrockBatchHook
from bedrock_batch.triggers import BedrockBatchJobTrigger
from tests.integration.bedrock_shards import MODEL_ID, ROLE_ARN, stack, write_shard

__all__ = ["stack"]  # the fixture, imported so pytest finds it here

pytestmark = pytest.mark.integration

NO_RETRIES = {"retries": {"total_max_attempts": 1}}


def submit(stack: Any, name: str, records: int = 150) -> str:
    shard = write_shard(stack.client("s3"), records=records)
    return BedrockBatchHook(aws_conn_id="aws_default").create_job(
        job_name=name,
        role_arn=ROLE_ARN,
        model_id=MODEL_ID,
        input_s3_uri=shard["input_uri"],
        output_s3_uri=shard["output_uri"],
        client_request_token=f"bb{name.replace('-', '')}",
    )


def run_trigger(trigger: BedrockBatchJobTrigger, timeout: float = 60) -> list[dict[str, Any]]:
    """Every event the trigger yields before its generator ends."""

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout))


def trigger_for(job_arn: str, **kwargs: Any) -> BedrockBatchJobTrigger:
    return BedrockBatchJobTrigger(job_arn=job_arn, poll_interval=0.05, **kwargs)


class TestBedrockBatchJobTrigger:
    def test_serialize_round_trips(self):
        trigger = BedrockBatchJobTrigger(
            job_arn="arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456",
            poll_interval=30,
            strict=True,
            timeout=3600,
            margin_seconds=120,
            stop_on_kill=False,
            aws_conn_id="aws_prod",
            region_name="eu-west-1",
            verify=False,
            botocore_config={"retries": {"mode": "adaptive"}},
        )
        classpath, kwargs = trigger.serialize()
        assert classpath == "bedrock_batch.triggers.BedrockBatchJobTrigger"
        # The triggerer stores the kwargs as JSON and rebuilds the trigger from them, maybe much later.
        rebuilt = import_string(classpath)(**json.loads(json.dumps(kwargs)))
        assert rebuilt.serialize() == (classpath, kwargs)
        # The timeout became an absolute deadline: a triggerer restart does not restart the clock.
        deadline = datetime.fromisoformat(kwargs["deadline"])
        assert 3500 < (deadline - datetime.now(UTC)).total_seconds() <= 3600

    def test_completed_job_yields_exactly_one_success_event(self, stack):
        arn = submit(stack, "trig-done-a1")
        events = run_trigger(trigger_for(arn))
        assert len(events) == 1
        event = events[0]
        assert event["status"] == "success"
        assert event["job_arn"] == arn
        assert event["job_id"] == arn.rsplit("/", 1)[-1]
        assert event["job_status"] == "Completed"
        assert event["outcome"] == "success"
        assert event["total_records"] == event["success_records"] == 150
        assert event["error_records"] == 0
        assert event["output_s3_uri"].endswith("/output/")
        json.dumps(event)  # events are stored in the metadata database as JSON

    def test_failed_job_yields_error_event_with_the_job_message(self, stack):
        stack.admin.set_faults(fail_jobs_matching="^trig-fail")
        arn = submit(stack, "trig-fail-a1")
        (event,) = run_trigger(trigger_for(arn))
        assert event["status"] == "error"
        assert event["job_status"] == "Failed"
        assert (event["reason"], event["outcome"]) == ("ended", "failed")
        service_message = stack.admin.job(arn)["message"]
        assert service_message
        assert event["message"] == service_message

    def test_partially_completed_is_salvage_unless_strict(self, stack):
        stack.admin.set_faults(partial_jobs_matching="^trig-partial", partial_fraction=0.4)
        arn = submit(stack, "trig-partial-a1")
        (event,) = run_trigger(trigger_for(arn))
        assert (event["status"], event["job_status"], event["outcome"]) == (
            "success",
            "PartiallyCompleted",
            "salvage",
        )
        assert 0 < event["processed_records"] < event["total_records"] == 150
        (strict,) = run_trigger(trigger_for(arn, strict=True))
        assert strict["status"] == "error"

    def test_throttling_is_retried_not_fatal(self, stack):
        arn = submit(stack, "trig-throttle-a1")
        stack.admin.set_faults(throttle_rate=0.6, seed=7)
        (event,) = run_trigger(trigger_for(arn, botocore_config=NO_RETRIES))
        assert event["status"] == "success"
        throttled = [r for r in stack.admin.requests("GetModelInvocationJob") if r.get("error")]
        assert throttled, "the fault injection did not reach the trigger"

    def test_unknown_job_is_an_api_error_event(self, stack):
        (event,) = run_trigger(
            trigger_for("arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/zzzzzzzzzzzz")
        )
        assert (event["status"], event["reason"]) == ("error", "api_error")
        assert "ResourceNotFoundException" in event["message"]

    def test_deadline_yields_timeout_error_event(self, stack):
        stack.admin.set_time_scale(0.001)  # the job stays Submitted
        arn = submit(stack, "trig-slow-a1")
        (event,) = run_trigger(trigger_for(arn, timeout=0.3))
        assert (event["status"], event["reason"], event["job_status"]) == ("error", "timeout", "Submitted")

    def test_logs_one_line_per_change_without_contents(self, stack, capfd):
        arn = submit(stack, "trig-log-a1")
        run_trigger(trigger_for(arn))
        job_id = arn.rsplit("/", 1)[-1]
        # Airflow routes trigger logs through structlog to the console, not through stdlib logging.
        output = capfd.readouterr().out.splitlines()
        lines = [line for line in output if "bedrock_batch.triggers" in line and f"job {job_id}" in line]
        progress = [line.split(f"job {job_id} ", 1)[1].split(" [", 1)[0].strip() for line in lines]
        assert progress, "the trigger logged no progress"
        assert progress[-1] == "Completed 150/150 records"
        assert len(progress) == len(set(progress)), "a state was logged twice"
        assert not any("Summarize call" in line for line in output if "bedrock_batch.triggers" in line)

    def test_on_kill_leaves_the_job_running_unless_the_task_was_marked_failed(self, stack):
        # Outside a triggerer the task's state cannot be read: like a clear, a restart or a move to another
        # triggerer, that never stops the job. (Marked failed → stopped is proven on a running Airflow, in
        # tests/deployment.)
        stack.admin.set_time_scale(0.001)
        arn = submit(stack, "trig-kill-a1")
        asyncio.run(trigger_for(arn).on_kill())
        assert stack.admin.job(arn)["status"] == "Submitted"
        assert "StopModelInvocationJob" not in {r["operation"] for r in stack.admin.requests()}
