"""Waiting for a job to end, as decisions: after each status check, is the wait over, and when to check again.

:class:`JobWatch` holds those decisions. The trigger (the deferrable wait, async, in the triggerer) and
:func:`wait_until_ended` (the submit operator's blocking wait, in the worker) drive the same watch; they
differ only in how they call the service, sleep and reconnect. Also the event payload a wait ends with
(:func:`job_event`) and how a task reads it (:func:`result_from_event`). Imports nothing from Airflow.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bedrock_batch.aws_errors import describe_error, is_expired_credentials, is_transient
from bedrock_batch.errors import BedrockBatchError, JobFailedError, JobStatusError, JobWaitTimeoutError
from bedrock_batch.jobs import (
    COMPLETED,
    DEFAULT_WAIT_MARGIN,
    MAX_POLL_INTERVAL,
    SALVAGE_STATUSES,
    TERMINAL_STATUSES,
    PollSchedule,
    counts_of,
    format_progress,
    job_id_from_arn,
    outcome_for,
    output_uri_for,
    progress_of,
    wait_deadline,
)
from bedrock_batch.metrics import running_since
from bedrock_batch.stage_results import JobEvent, JobResult

DEFAULT_POLL_INTERVAL = 60.0
COUNT_KEYS = ("total_records", "processed_records", "success_records", "error_records")
# Throttled or failing checks back off up to this long; the job's own deadline still bounds the wait.
MAX_BACKOFF_SECONDS = 600.0


def job_event(job: Mapping[str, Any], *, strict: bool) -> JobEvent:
    """The event payload for a job description: its ids, status, outcome, record counts and S3 locations.

    Shared by the trigger and the operators' non-deferrable paths so both return the same shape.

    :param job: a GetModelInvocationJob description.
    :param strict: treat PartiallyCompleted, Stopped and Expired as failures.
    """
    status = str(job.get("status", ""))
    outcome = outcome_for(status, strict=strict) if status in TERMINAL_STATUSES else None
    return {
        "status": "error" if outcome == "failed" else "success",
        "job_arn": job.get("jobArn"),
        "job_id": job_id_from_arn(str(job.get("jobArn", ""))),
        "job_name": job.get("jobName"),
        "job_status": status,
        "outcome": outcome,
        "reason": "ended" if outcome else "running",
        "message": job.get("message") or "",
        "model_id": job.get("modelId"),
        "input_s3_uri": job.get("inputDataConfig", {}).get("s3InputDataConfig", {}).get("s3Uri"),
        "output_s3_uri": job.get("outputDataConfig", {}).get("s3OutputDataConfig", {}).get("s3Uri"),
        **counts_of(job),  # type: ignore[typeddict-item]
    }


def result_from_event(event: Any) -> JobResult:
    """Check an event of :class:`~bedrock_batch.triggers.BedrockBatchJobTrigger` (or :func:`job_event`) and
    return the job's metadata.

    Never polls: an ``error`` event always raises, whatever the job's status is by now.

    :param event: the payload the task resumed with.
    :return: ``job_arn``, ``job_id``, ``job_name``, ``status``, ``outcome``, ``model_id``, ``input_uri``,
        ``output_uri`` (``<output>/<jobId>/``) and the record counts.
    :raises JobFailedError: the job ended Failed (or, in strict mode, not Completed); carries its message.
    :raises JobWaitTimeoutError: the job did not end before the deadline.
    :raises JobStatusError: the job's status could not be read.
    """
    if (
        not isinstance(event, Mapping)
        or event.get("status") not in ("success", "error")
        or not event.get("job_arn")
    ):
        raise BedrockBatchError(
            f"unexpected trigger event {event!r}: expected a BedrockBatchJobTrigger event"
        )
    job_id = str(event.get("job_id") or job_id_from_arn(str(event["job_arn"])))
    if event["status"] == "error":
        message = event.get("message") or "no message from the service"
        if event.get("reason") == "timeout":
            raise JobWaitTimeoutError(message)
        if event.get("reason") == "api_error":
            raise JobStatusError(f"job {job_id}: {message}")
        status = event.get("job_status")
        hint = "" if status == "Failed" else " (strict mode treats every ending but Completed as a failure)"
        raise JobFailedError(f"job {job_id} ended {status}{hint}: {message}")
    output_s3_uri = event.get("output_s3_uri")
    return {
        "job_arn": event["job_arn"],
        "job_id": job_id,
        "job_name": event.get("job_name"),
        "status": event.get("job_status"),
        "outcome": event.get("outcome"),
        "model_id": event.get("model_id"),
        "input_uri": event.get("input_s3_uri"),
        "output_uri": output_uri_for(output_s3_uri, job_id) if output_s3_uri else None,
        **{key: int(event.get(key) or 0) for key in COUNT_KEYS},  # type: ignore[typeddict-item]
    }


def accepted_statuses(strict: bool) -> tuple[frozenset[str], frozenset[str]]:
    """(statuses a wait succeeds with, terminal statuses it fails with).

    :param strict: only Completed succeeds; otherwise PartiallyCompleted, Stopped and Expired do too.
    """
    success = frozenset({COMPLETED}) | (frozenset() if strict else SALVAGE_STATUSES)
    return success, TERMINAL_STATUSES - success


@dataclass(frozen=True)
class WatchStep:
    """What a waiter does after one status check.

    :param event: the wait is over (the job ended, the deadline passed, or the status cannot be read): the
        event to end it with. ``None``: check again.
    :param delay: seconds to wait before the next check.
    :param reconnect: the check failed on expired credentials: open a new client before the next check.
    :param progress: a line worth logging at INFO (the job's status or counts changed; a reconnect).
    :param warning: a failed check that is retried, worth a WARNING line.
    """

    event: JobEvent | None = None
    delay: float = 0.0
    reconnect: bool = False
    progress: str | None = None
    warning: str | None = None


class Log(Protocol):
    """What the pure modules log through: a stdlib logger, or the task's (structlog) ``self.log``."""

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


def log_step(log: Log, step: WatchStep) -> None:
    """Write a step's lines (one per state change, counts and ids only) to ``log``."""
    if step.progress:
        log.info("%s", step.progress)
    if step.warning:
        log.warning("%s", step.warning)


class JobWatch:
    """One wait for one job: what each status check, or failed check, means for the waiter.

    Checks come every ``poll_interval`` at first, then further apart the longer the job stays in one status,
    up to ``max_interval`` (:class:`~bedrock_batch.jobs.PollSchedule`). A check that failed on throttling, a
    server error or a dropped connection is retried after a doubling delay (up to
    :data:`MAX_BACKOFF_SECONDS`), and so is one that failed on expired credentials, with a new client; any
    other failure ends the wait with an ``api_error`` event. The wait ends with a ``timeout`` event when a
    check finds the job still running at the deadline, and no delay runs past it.

    :param job_arn: ARN (or id) of the job.
    :param poll_interval: seconds between two checks.
    :param strict: treat every ending other than Completed as a failure.
    :param deadline: when to give up; ``None``: the job's own expiration time plus ``margin``, read from its
        first description.
    :param margin: time granted beyond the job's expiration for the service to settle its status.
    :param max_interval: the longest wait between two checks of a job that does not change (before jitter).
    :param draw: random numbers in [0, 1) for the schedule's jitter (tests pass a constant).
    """

    def __init__(
        self,
        job_arn: str,
        *,
        poll_interval: float,
        strict: bool = False,
        deadline: datetime | None = None,
        margin: timedelta = DEFAULT_WAIT_MARGIN,
        max_interval: float = MAX_POLL_INTERVAL,
        draw: Callable[[], float] = random.random,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self.job_arn = job_arn
        self.job_id = job_id_from_arn(job_arn)
        self.poll_interval = float(poll_interval)
        self.strict = strict
        self.deadline = deadline
        self.margin = margin
        self.last_job: Mapping[str, Any] | None = None
        # When a check first saw the job running (see bedrock_batch.metrics.running_since): its queue time.
        self.started: datetime | None = None
        self._schedule = PollSchedule(self.poll_interval, max_interval=max_interval)
        self._draw = draw
        self._last_progress: tuple[str, int, int] | None = None
        self._error_delay = self.poll_interval

    def checked(self, job: Mapping[str, Any], now: datetime) -> WatchStep:
        """The job's description was read at ``now``: ended, or when to check again."""
        self.last_job = job
        self._error_delay = self.poll_interval
        if self.started is None:
            self.started = running_since(job)
        if self.deadline is None:
            self.deadline = wait_deadline(job, self.margin)
        progress = progress_of(job)
        line = None
        if progress != self._last_progress:
            line = format_progress(self.job_id, *progress)
            self._last_progress = progress
        if job.get("status") in TERMINAL_STATUSES:
            return WatchStep(event=job_event(job, strict=self.strict), progress=line)
        self._schedule.observe(job, now.timestamp())
        return self._next(self._schedule.next_delay(now.timestamp(), draw=self._draw()), now, progress=line)

    def check_failed(self, error: BaseException, now: datetime) -> WatchStep:
        """Reading the job's description raised ``error`` at ``now``: reconnect, retry later, or give up."""
        expired = is_expired_credentials(error)
        if not expired and not is_transient(error):
            return WatchStep(event=self._error_event("api_error", f"GetModelInvocationJob failed: {error}"))
        delay = self._error_delay
        self._error_delay = min(delay * 2, max(MAX_BACKOFF_SECONDS, self.poll_interval))
        if expired:
            # Jobs outlive temporary credentials; a new client fetches fresh ones.
            line = f"Credentials expired while waiting for job {self.job_id}; reconnecting"
            return self._next(delay, now, progress=line, reconnect=True)
        warning = f"Polling job {self.job_id} got {describe_error(error)}; retrying in {delay:.1f} s"
        return self._next(delay, now, warning=warning)

    def _next(
        self,
        delay: float,
        now: datetime,
        *,
        progress: str | None = None,
        warning: str | None = None,
        reconnect: bool = False,
    ) -> WatchStep:
        if self.deadline is not None:
            remaining = (self.deadline - now).total_seconds()
            if remaining <= 0:
                status = self.last_job.get("status") if self.last_job else "unknown"
                message = f"job {self.job_id} still {status} at the wait deadline {self.deadline.isoformat()}"
                event = self._error_event("timeout", message)
                return WatchStep(event=event, progress=progress, warning=warning)
            delay = min(delay, remaining)
        return WatchStep(delay=delay, reconnect=reconnect, progress=progress, warning=warning)

    def _error_event(self, reason: str, message: str) -> JobEvent:
        """An ``error`` event that did not come from the job ending (timeout, unrecoverable API error)."""
        if self.last_job:
            event = job_event(self.last_job, strict=self.strict)
        else:
            event = {
                "status": "error",
                "reason": reason,
                "job_arn": self.job_arn,
                "job_id": self.job_id,
                "job_status": None,
                "outcome": None,
                "message": message,
            }
        event.update({"status": "error", "reason": reason, "message": message, "outcome": None})
        return event


def _utc_now() -> datetime:
    return datetime.now(UTC)


def wait_until_ended(
    watch: JobWatch,
    step: WatchStep,
    read_job: Callable[[str], Mapping[str, Any]],
    *,
    reconnect: Callable[[], Callable[[str], Mapping[str, Any]]],
    log: Log,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], datetime] = _utc_now,
) -> JobEvent:
    """Drive ``watch`` in this thread until the wait is over and return the event it ended with.

    The blocking twin of the trigger's loop. A check that fails for good raises its own error (the task's
    log shows the service's answer) instead of returning an ``api_error`` event.

    :param watch: the wait.
    :param step: the step of the check made before (the first description was read by the caller).
    :param read_job: GetModelInvocationJob by ARN.
    :param reconnect: a new ``read_job`` with a new client, for expired credentials.
    :param log: where progress lines go.
    :param sleep: waits a number of seconds.
    :param clock: the current UTC time.
    """
    while step.event is None:
        if step.reconnect:
            read_job = reconnect()
        sleep(step.delay)
        try:
            job = read_job(watch.job_arn)
        except Exception as error:
            step = watch.check_failed(error, clock())
            if step.event is not None:
                raise
        else:
            step = watch.checked(job, clock())
        log_step(log, step)
    return step.event
