"""A job's wait as decisions (JobWatch), the blocking driver, and the event a wait ends with.

The schedule behind the delays (jobs.PollSchedule) has its own tests in test_polling.py; the draws of its
jitter are 0 here, so the delays are exact.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from bedrock_batch.errors import BedrockBatchError, JobFailedError, JobStatusError, JobWaitTimeoutError
from bedrock_batch.polling import (
    MAX_BACKOFF_SECONDS,
    JobWatch,
    accepted_statuses,
    job_event,
    result_from_event,
    wait_until_ended,
)

ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456"
T0 = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
EXPIRES = T0 + timedelta(hours=24)


def job(status: str, processed: int = 0, total: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "jobArn": ARN,
        "jobName": "cc-20261121-s0001-a1",
        "status": status,
        "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
        "processedRecordCount": processed,
        "totalRecordCount": total,
        "successRecordCount": processed,
        "jobExpirationTime": EXPIRES,
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://staging/input/shard-0001/"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://staging/output/shard-0001/"}},
        **extra,
    }


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "said the service"}}, "GetModelInvocationJob")


def watch(**options: Any) -> JobWatch:
    return JobWatch(ARN, poll_interval=options.pop("poll_interval", 60.0), draw=lambda: 0.0, **options)


class TestChecked:
    def test_a_running_job_is_checked_again_after_the_poll_interval(self):
        step = watch().checked(job("InProgress", 10, 150), T0)
        assert (step.event, step.delay, step.reconnect) == (None, 60.0, False)
        assert step.progress == "job abc123def456 InProgress 10/150 records"

    def test_a_job_long_in_its_status_is_checked_less_often_up_to_the_cap(self):
        wait = watch(max_interval=1800.0)
        assert wait.checked(job("Scheduled", lastModifiedTime=T0 - timedelta(hours=1)), T0).delay == 360.0
        assert wait.checked(job("Scheduled"), T0 + timedelta(hours=9)).delay == 1800.0
        # A new status starts over.
        assert wait.checked(job("InProgress", 1, 150), T0 + timedelta(hours=9)).delay == 60.0

    def test_progress_is_reported_only_when_it_changes(self):
        wait = watch()
        assert wait.checked(job("Submitted"), T0).progress == "job abc123def456 Submitted"
        assert wait.checked(job("Submitted"), T0).progress is None
        assert (
            wait.checked(job("InProgress", 0, 150), T0).progress
            == "job abc123def456 InProgress 0/150 records"
        )

    def test_a_completed_job_ends_the_wait_with_a_success_event(self):
        step = watch().checked(job("Completed", 150, 150), T0)
        assert step.event is not None
        assert (step.event["status"], step.event["outcome"], step.event["reason"]) == (
            "success",
            "success",
            "ended",
        )
        assert step.progress == "job abc123def456 Completed 150/150 records"

    @pytest.mark.parametrize("status", ["PartiallyCompleted", "Stopped", "Expired"])
    def test_salvageable_endings_succeed_unless_strict(self, status):
        lenient = watch().checked(job(status, 90, 150), T0).event
        strict = watch(strict=True).checked(job(status, 90, 150), T0).event
        assert lenient is not None
        assert strict is not None
        assert (lenient["status"], lenient["outcome"]) == ("success", "salvage")
        assert (strict["status"], strict["outcome"]) == ("error", "failed")

    def test_a_failed_job_ends_with_an_error_event_carrying_its_message(self):
        event = watch().checked(job("Failed", message="bad input"), T0).event
        assert event is not None
        assert (event["status"], event["reason"], event["message"]) == ("error", "ended", "bad input")


class TestDeadline:
    def test_defaults_to_the_jobs_expiration_plus_the_margin(self):
        wait = watch()
        wait.checked(job("Scheduled"), T0)
        assert wait.deadline == EXPIRES + timedelta(hours=6)

    def test_no_wait_runs_past_the_deadline(self):
        step = watch(deadline=T0 + timedelta(seconds=20)).checked(job("Scheduled"), T0)
        assert step.delay == 20.0

    def test_a_job_still_running_at_the_deadline_ends_the_wait_with_a_timeout(self):
        wait = watch(deadline=T0)
        step = wait.checked(job("Scheduled"), T0 + timedelta(seconds=1))
        assert step.event is not None
        assert (step.event["status"], step.event["reason"], step.event["job_status"]) == (
            "error",
            "timeout",
            "Scheduled",
        )
        assert (
            step.event["message"] == f"job abc123def456 still Scheduled at the wait deadline {T0.isoformat()}"
        )
        with pytest.raises(JobWaitTimeoutError, match="still Scheduled"):
            result_from_event(step.event)

    def test_a_job_that_ended_at_the_deadline_still_counts(self):
        step = watch(deadline=T0).checked(job("Completed", 150, 150), T0 + timedelta(seconds=1))
        assert step.event is not None
        assert step.event["status"] == "success"

    def test_a_deadline_that_passes_while_checks_fail_times_out(self):
        wait = watch(deadline=T0)
        step = wait.check_failed(client_error("ThrottlingException"), T0 + timedelta(seconds=1))
        assert step.event is not None
        assert (step.event["reason"], step.event["job_status"]) == ("timeout", None)


class TestCheckFailed:
    def test_throttling_backs_off_doubling_up_to_the_cap_and_resets_after_a_good_check(self):
        wait = watch(poll_interval=100.0)
        delays = [wait.check_failed(client_error("ThrottlingException"), T0).delay for _ in range(5)]
        assert delays == [100.0, 200.0, 400.0, MAX_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS]
        wait.checked(job("InProgress"), T0)
        assert wait.check_failed(client_error("ThrottlingException"), T0).delay == 100.0

    def test_a_retried_failure_is_a_warning_naming_the_error(self):
        step = watch().check_failed(EndpointConnectionError(endpoint_url="https://x"), T0)
        assert step.event is None
        assert step.warning == "Polling job abc123def456 got EndpointConnectionError; retrying in 60.0 s"

    def test_expired_credentials_ask_for_a_new_client_and_back_off(self):
        wait = watch()
        first = wait.check_failed(client_error("ExpiredTokenException"), T0)
        again = wait.check_failed(client_error("ExpiredTokenException"), T0)
        assert (first.reconnect, first.event, first.delay, again.delay) == (True, None, 60.0, 120.0)
        assert first.progress == "Credentials expired while waiting for job abc123def456; reconnecting"

    def test_an_error_no_retry_fixes_ends_the_wait_with_an_api_error(self):
        wait = watch()
        wait.checked(job("InProgress", 5, 150), T0)
        step = wait.check_failed(client_error("AccessDeniedException"), T0)
        assert step.event is not None
        assert (step.event["status"], step.event["reason"], step.event["job_status"]) == (
            "error",
            "api_error",
            "InProgress",
        )
        assert "AccessDeniedException" in step.event["message"]
        with pytest.raises(JobStatusError, match="job abc123def456: GetModelInvocationJob failed"):
            result_from_event(step.event)


class Reads:
    """GetModelInvocationJob answers in order (a description, or an error to raise), and the sleeps."""

    def __init__(self, *answers: Any) -> None:
        self.answers: Iterator[Any] = iter(answers)
        self.sleeps: list[float] = []
        self.now = T0
        self.reconnects = 0

    def __call__(self, job_arn: str) -> dict[str, Any]:
        answer = next(self.answers)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)

    def reconnect(self) -> Reads:
        self.reconnects += 1
        return self


def wait_blocking(reads: Reads, first: dict[str, Any], **options: Any) -> Any:
    wait = watch(poll_interval=30.0, **options)
    return wait_until_ended(
        wait,
        wait.checked(first, reads.now),
        reads,
        reconnect=reads.reconnect,
        log=logging.getLogger("test"),
        sleep=reads.sleep,
        clock=lambda: reads.now,
    )


class TestWaitUntilEnded:
    def test_polls_until_the_job_ends(self):
        reads = Reads(job("InProgress", 50, 150), job("InProgress", 100, 150), job("Completed", 150, 150))
        event = wait_blocking(reads, job("Submitted"))
        assert (event["status"], event["job_status"], event["success_records"]) == (
            "success",
            "Completed",
            150,
        )
        assert reads.sleeps == [30.0, 30.0, 30.0]

    def test_retries_transient_errors_with_backoff(self):
        throttled = client_error("ThrottlingException")
        reads = Reads(throttled, throttled, job("Completed", 150, 150))
        event = wait_blocking(reads, job("Submitted"))
        assert event["status"] == "success"
        assert reads.sleeps == [30.0, 30.0, 60.0]

    def test_reconnects_on_expired_credentials(self):
        reads = Reads(client_error("ExpiredToken"), job("Completed", 150, 150))
        assert wait_blocking(reads, job("Submitted"))["status"] == "success"
        assert (reads.reconnects, reads.sleeps) == (1, [30.0, 30.0])

    def test_an_error_no_retry_fixes_is_raised_as_it_came(self):
        reads = Reads(client_error("AccessDeniedException"))
        with pytest.raises(ClientError, match="AccessDeniedException"):
            wait_blocking(reads, job("Submitted"))

    def test_returns_the_timeout_event_at_the_deadline(self):
        reads = Reads(*[job("Scheduled")] * 10)
        event = wait_blocking(reads, job("Scheduled"), deadline=T0 + timedelta(seconds=75))
        assert (event["status"], event["reason"]) == ("error", "timeout")
        assert reads.sleeps == [30.0, 30.0, 15.0]

    def test_logs_one_line_per_change_and_the_retries(self, caplog):
        reads = Reads(job("Submitted"), client_error("ThrottlingException"), job("Completed", 150, 150))
        with caplog.at_level(logging.INFO, logger="test"):
            wait_blocking(reads, job("Submitted"))
        assert [r.getMessage() for r in caplog.records] == [
            "Polling job abc123def456 got ThrottlingException; retrying in 30.0 s",
            "job abc123def456 Completed 150/150 records",
        ]


class TestEvents:
    def test_job_event_carries_ids_locations_and_counts(self):
        event = job_event(job("Completed", 150, 150), strict=False)
        assert event == {
            "status": "success",
            "job_arn": ARN,
            "job_id": "abc123def456",
            "job_name": "cc-20261121-s0001-a1",
            "job_status": "Completed",
            "outcome": "success",
            "reason": "ended",
            "message": "",
            "model_id": "anthropic.claude-3-haiku-20240307-v1:0",
            "input_s3_uri": "s3://staging/input/shard-0001/",
            "output_s3_uri": "s3://staging/output/shard-0001/",
            "total_records": 150,
            "processed_records": 150,
            "success_records": 150,
            "error_records": 0,
        }

    def test_result_of_a_success_event_points_at_the_jobs_output_folder(self):
        result = result_from_event(job_event(job("PartiallyCompleted", 90, 150), strict=False))
        assert result["output_uri"] == "s3://staging/output/shard-0001/abc123def456/"
        assert (result["status"], result["outcome"], result["processed_records"]) == (
            "PartiallyCompleted",
            "salvage",
            90,
        )

    def test_a_failed_job_raises_with_its_message(self):
        with pytest.raises(JobFailedError, match="job abc123def456 ended Failed: bad input"):
            result_from_event(job_event(job("Failed", message="bad input"), strict=False))

    def test_a_strict_failure_says_why(self):
        with pytest.raises(JobFailedError, match="strict mode"):
            result_from_event(job_event(job("Stopped"), strict=True))

    @pytest.mark.parametrize("event", [None, {}, {"status": "weird", "job_arn": ARN}, {"status": "success"}])
    def test_anything_else_is_refused(self, event):
        with pytest.raises(BedrockBatchError, match="unexpected trigger event"):
            result_from_event(event)


def test_accepted_statuses():
    assert accepted_statuses(False) == (
        {"Completed", "PartiallyCompleted", "Stopped", "Expired"},
        {"Failed"},
    )
    assert accepted_statuses(True) == ({"Completed"}, {"PartiallyCompleted", "Stopped", "Expired", "Failed"})
