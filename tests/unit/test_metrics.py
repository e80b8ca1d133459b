"""The metrics' values and names (pure), and where the pure modules report slot waits, throttles and the
moment a job left the queue. Sending them through Airflow's Stats to a real StatsD listener:
tests/integration/test_metrics_statsd.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bedrock_batch.estimate import estimate_run_cost
from bedrock_batch.metrics import (
    Metric,
    counting_throttles,
    estimate_metrics,
    job_timing_metrics,
    micro_usd,
    name_part,
    run_metrics,
    running_since,
    stat_names,
)
from bedrock_batch.polling import JobWatch
from tests.unit.test_report import make_report
from tests.unit.test_submission import Clock, FakeHook, client_error, other_shard_jobs, submitter_for

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
T0 = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


class TestRunMetrics:
    def test_every_outcome_tokens_and_cost_from_the_report(self):
        report = make_report(succeeded=1180, invalid_output=10)
        assert run_metrics(report) == [
            Metric("records.succeeded", "counter", 1180),
            Metric("records.failed", "counter", 7),
            Metric("records.quarantined", "counter", 3),
            Metric("records.invalid_output", "counter", 10),
            Metric("tokens.input", "counter", 1_500_000),
            Metric("tokens.output", "counter", 120_000),
            Metric("cost.estimated_micro_usd", "counter", 262_500),
        ]

    def test_an_unknown_cost_is_not_sent(self):
        names = [m.name for m in run_metrics(make_report(estimated_cost_usd=None))]
        assert "cost.estimated_micro_usd" not in names
        assert len(names) == 6

    def test_the_estimate_before_any_job_is_sent_when_the_price_is_known(self):
        known = estimate_run_cost(MODEL, records=200, input_tokens=100_000, max_output_tokens=102_400)
        assert known.estimated_cost_usd is not None
        assert estimate_metrics(known) == [
            Metric("cost.run_estimate_micro_usd", "counter", micro_usd(known.estimated_cost_usd))
        ]
        unknown = estimate_run_cost("meta.llama9-v1", records=1, input_tokens=1, max_output_tokens=1)
        assert estimate_metrics(unknown) == []

    @pytest.mark.parametrize(
        ("usd", "micros"),
        [("0.2625", 262_500), ("0.0000004", 0), ("0.0000005", 1), ("12.3456789", 12_345_679), ("0", 0)],
    )
    def test_cost_in_millionths_of_a_dollar_rounded_half_up(self, usd, micros):
        assert micro_usd(Decimal(usd)) == micros


class TestJobTiming:
    def job(self, status: str, **times: Any) -> dict[str, Any]:
        return {"status": status, "modelId": MODEL, "submitTime": T0, **times}

    def test_duration_from_submit_to_end_and_queue_time_to_the_start(self):
        ended = self.job("Completed", endTime=T0 + timedelta(minutes=42))
        assert job_timing_metrics(ended, T0 + timedelta(minutes=12, seconds=30)) == [
            Metric("job.duration", "timer", timedelta(minutes=42)),
            Metric("job.queue_time", "timer", timedelta(minutes=12, seconds=30)),
        ]

    def test_no_queue_time_when_no_wait_saw_the_job_running(self):
        ended = self.job("Completed", endTime=T0 + timedelta(minutes=42))
        assert [m.name for m in job_timing_metrics(ended, None)] == ["job.duration"]

    def test_nothing_without_a_submit_time(self):
        assert job_timing_metrics({"status": "Completed", "endTime": T0}, T0) == []

    def test_running_since_is_the_last_modification_of_a_running_job(self):
        modified = T0 + timedelta(minutes=5)
        assert running_since(self.job("InProgress", lastModifiedTime=modified)) == modified
        assert running_since(self.job("Stopping", lastModifiedTime=modified)) == modified
        for queued_or_ended in ("Submitted", "Validating", "Scheduled", "Completed"):
            assert running_since(self.job(queued_or_ended, lastModifiedTime=modified)) is None

    def test_the_watch_keeps_the_first_start_it_saw(self):
        watch = JobWatch("arn:aws:bedrock:us-east-1:1:model-invocation-job/abc123def456", poll_interval=60)
        expires = {"jobExpirationTime": T0 + timedelta(hours=24)}
        watch.checked(self.job("Scheduled", lastModifiedTime=T0, **expires), T0)
        assert watch.started is None
        started = T0 + timedelta(minutes=3)
        watch.checked(self.job("InProgress", lastModifiedTime=started, **expires), T0 + timedelta(minutes=4))
        later = T0 + timedelta(minutes=9)
        watch.checked(self.job("InProgress", lastModifiedTime=later, **expires), later)
        assert watch.started == started


class TestNames:
    def test_tags_carried_one_name(self):
        assert stat_names("records.succeeded", dag_id="cc", model_id=MODEL, tags_carried=True) == [
            "bedrock_batch.records.succeeded"
        ]

    def test_plain_statsd_also_gets_the_dag_and_model_in_the_name(self):
        names = stat_names("job.duration", dag_id="call_center.v2", model_id=MODEL, tags_carried=False)
        assert names == [
            "bedrock_batch.job.duration",
            "bedrock_batch.job.duration.call_center__v2.anthropic__claude-3-haiku-20240307-v1_0",
        ]

    def test_an_arn_becomes_one_valid_segment(self):
        profile = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku"
        part = name_part(profile)
        assert "." not in part
        expected = "arn_aws_bedrock_us-east-1_123456789012_inference-profile_us__anthropic__claude-3-haiku"
        assert part == expected


class TestThrottles:
    def test_only_throttling_is_counted_and_every_error_is_raised(self):
        counted: list[int] = []
        errors = [client_error("ThrottlingException"), client_error("InternalServerException")]

        def call() -> str:
            if errors:
                raise errors.pop(0)
            return "ok"

        wrapped = counting_throttles(call, lambda: counted.append(1))
        for code in ("ThrottlingException", "InternalServerException"):
            with pytest.raises(ClientError, match=code):
                wrapped()
        assert wrapped() == "ok"
        assert counted == [1]

    def test_the_submitter_reports_each_throttled_call_it_retries(self):
        hook = FakeHook()
        hook.find_errors = [
            client_error("ThrottlingException", "ListModelInvocationJobs"),
            client_error("InternalServerException", "ListModelInvocationJobs"),
            client_error("TooManyRequestsException", "ListModelInvocationJobs"),
        ]
        throttled: list[int] = []
        submitter_for(hook, on_throttled=lambda: throttled.append(1)).submit(wait=False)
        assert len(throttled) == 2


class TestSlotWaits:
    def test_each_look_at_a_full_quota_is_a_wait(self):
        hook = FakeHook()
        other_shard_jobs(hook, 1)
        clock = Clock()
        waits: list[int] = []

        def sleep_then_end_the_other_job(seconds: float) -> None:
            clock.sleep(seconds)
            if len(clock.sleeps) == 3:
                hook.jobs[0]["status"] = "Completed"

        submitter = submitter_for(hook, clock, quota=1, on_slot_wait=lambda: waits.append(1))
        submitter._sleep = sleep_then_end_the_other_job
        assert submitter.submit(wait=True) is not None
        assert len(waits) == 3

    def test_a_deferrable_look_reports_its_wait_too(self):
        hook = FakeHook()
        other_shard_jobs(hook, 1)
        waits: list[int] = []
        assert submitter_for(hook, quota=1, on_slot_wait=lambda: waits.append(1)).submit(wait=False) is None
        assert waits == [1]

    def test_no_wait_when_a_job_is_created(self):
        waits: list[int] = []
        assert submitter_for(FakeHook(), on_slot_wait=lambda: waits.append(1)).submit(wait=False) is not None
        assert waits == []
