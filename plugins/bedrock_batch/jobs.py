"""Stages 4-5 pure logic: deterministic job names and client tokens, job statuses and their outcomes.

Imports nothing from Airflow: the submit operator, the sensor and the trigger adapt these rules to Airflow.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from bedrock_batch.errors import ConfigError
from bedrock_batch.models import base_model_id

# --- Statuses -------------------------------------------------------------------------------------------

SUBMITTED: Final = "Submitted"
VALIDATING: Final = "Validating"
SCHEDULED: Final = "Scheduled"
IN_PROGRESS: Final = "InProgress"
COMPLETED: Final = "Completed"
PARTIALLY_COMPLETED: Final = "PartiallyCompleted"
FAILED: Final = "Failed"
STOPPING: Final = "Stopping"
STOPPED: Final = "Stopped"
EXPIRED: Final = "Expired"

ALL_STATUSES: Final = frozenset(
    {
        SUBMITTED,
        VALIDATING,
        SCHEDULED,
        IN_PROGRESS,
        COMPLETED,
        PARTIALLY_COMPLETED,
        FAILED,
        STOPPING,
        STOPPED,
        EXPIRED,
    }
)
# The statuses that count against the per-model "submitted + in-progress jobs" quota.
ACTIVE_STATUSES: Final = frozenset({SUBMITTED, VALIDATING, SCHEDULED, IN_PROGRESS})
TERMINAL_STATUSES: Final = frozenset({COMPLETED, PARTIALLY_COMPLETED, FAILED, STOPPED, EXPIRED})
# Ended with output worth collecting, but not every record was processed.
SALVAGE_STATUSES: Final = frozenset({PARTIALLY_COMPLETED, STOPPED, EXPIRED})
# A job in one of these will never produce (more) output: a rerun submits the next attempt.
# Stopping counts here because someone decided to end that job; a rerun means results are wanted.
RESUBMIT_STATUSES: Final = frozenset({FAILED, STOPPING, STOPPED, EXPIRED})

Outcome = Literal["success", "salvage", "failed"]


def outcome_for(status: str, strict: bool = False) -> Outcome:
    """Map a terminal job status to what the pipeline does with the job.

    :param status: a terminal status (see :data:`TERMINAL_STATUSES`).
    :param strict: treat every ending other than ``Completed`` as a failure instead of salvaging it.
    :return: ``success`` (Completed), ``salvage`` (PartiallyCompleted, Stopped, Expired: collect what
        exists, retry the rest) or ``failed`` (Failed, or any non-Completed ending in strict mode).
    :raises ValueError: for a status that is not terminal; waiting on it must continue.
    """
    if status not in TERMINAL_STATUSES:
        raise ValueError(
            f"job status {status!r} is not terminal; terminal statuses: {sorted(TERMINAL_STATUSES)}"
        )
    if status == COMPLETED:
        return "success"
    if status in SALVAGE_STATUSES and not strict:
        return "salvage"
    return "failed"


# --- Names and tokens -----------------------------------------------------------------------------------

MAX_JOB_NAME_LENGTH: Final = 63
# The service's jobName pattern, anchored: the API matches the whole name.
JOB_NAME_PATTERN: Final = re.compile(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}")
CLIENT_TOKEN_PATTERN: Final = re.compile(r"[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}")
# 12 hex digits = 48 bits: collisions between shards of one DAG are out of reach, and it stays readable.
NAME_HASH_LENGTH: Final = 12
# The readable dag_id/date part may not crowd out the shard number, hash and attempt.
_DATE_FORMAT = "%Y%m%dT%H%M%S"
_NOT_NAME_CHARS = re.compile(r"[^a-zA-Z0-9]+")

RunKey = datetime | str


def run_key_for(logical_date: datetime | None, run_id: str) -> RunKey:
    """The value that identifies a run's jobs: its logical date, or its run_id when it has none.

    Two runs of the same logical date share jobs on purpose (a rerun reuses finished output); runs
    without a logical date (asset-triggered, manual in Airflow 3) are told apart by their run_id.

    :param logical_date: the run's logical date, ``None`` for runs that have none.
    :param run_id: the run's id.
    """
    return logical_date if logical_date is not None else run_id


def _slug(text: str) -> str:
    return _NOT_NAME_CHARS.sub("-", text).strip("-")


def _run_key_text(run_key: RunKey) -> tuple[str, str]:
    """(readable part, exact part) of a run key; datetimes are compared in UTC."""
    if isinstance(run_key, datetime):
        utc = run_key.astimezone(UTC) if run_key.tzinfo else run_key.replace(tzinfo=UTC)
        return utc.strftime(_DATE_FORMAT), utc.isoformat()
    return _slug(run_key), run_key


def _digest(*parts: str) -> str:
    # A separator that cannot occur in the parts keeps ("ab", "c") and ("a", "bc") apart.
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _round_parts(round_number: int) -> tuple[str, ...]:
    # Round 1 adds nothing, so first-round names and tokens are the same as before rounds existed.
    if round_number < 1:
        raise ValueError(f"round_number must be at least 1, got {round_number}")
    return () if round_number == 1 else (f"round{round_number}",)


def shard_job_prefix(
    dag_id: str,
    run_key: RunKey,
    shard_fingerprint: str,
    shard_index: int,
    *,
    model_id: str,
    round_number: int = 1,
) -> str:
    """The part of a job name shared by every attempt of one shard: ``<dag>-<date>-s<n>-<hash>``.

    Shards of a later round (a retry round) read ``<dag>-<date>-r<round>s<n>-<hash>``.

    :param dag_id: the DAG's id; its start is kept as a readable prefix.
    :param run_key: the run's logical date or run_id (see :func:`run_key_for`).
    :param shard_fingerprint: digest of the shard's content (records, hence prompts).
    :param shard_index: the shard's number within the run.
    :param model_id: model or inference-profile id; a different model is a different job.
    :param round_number: 1 for the run's first jobs, 2 for its retry round: a retry shard that holds the
        very records of a first-round shard is still a new job.
    """
    if shard_index < 0:
        raise ValueError(f"shard_index must not be negative, got {shard_index}")
    date_text, date_exact = _run_key_text(run_key)
    parts = (dag_id, date_exact, shard_fingerprint, str(shard_index), model_id, *_round_parts(round_number))
    digest = _digest(*parts)[:NAME_HASH_LENGTH]
    # Reserve room for "-a<attempt>" up to 3 digits, so every attempt of the shard keeps the same prefix.
    shard_text = f"s{shard_index:04d}" if round_number == 1 else f"r{round_number}s{shard_index:04d}"
    tail = f"-{shard_text}-{digest}"
    room = MAX_JOB_NAME_LENGTH - len(tail) - len("-a999")
    # The dag_id yields to the date, but keeps at least half the room when the run key is a long run_id.
    dag_room = max(room - len(date_text) - 1, room // 2)
    readable = f"{_slug(dag_id)[:dag_room].strip('-')}-{date_text}"[:room].strip("-")
    return f"{readable}{tail}" if readable else tail.lstrip("-")


def job_name_for(
    dag_id: str,
    run_key: RunKey,
    shard_fingerprint: str,
    shard_index: int,
    attempt: int = 1,
    *,
    model_id: str,
    round_number: int = 1,
) -> str:
    """Deterministic job name of one attempt of one shard, valid for the jobName pattern (≤ 63 chars).

    :param dag_id: the DAG's id.
    :param run_key: the run's logical date or run_id (see :func:`run_key_for`).
    :param shard_fingerprint: digest of the shard's content.
    :param shard_index: the shard's number within the run.
    :param attempt: 1 for the first job of the shard, n+1 when job n ended without usable output.
    :param model_id: model or inference-profile id.
    :param round_number: the run's round the shard belongs to (see :func:`shard_job_prefix`).
    """
    if not 1 <= attempt <= 999:
        raise ValueError(f"attempt must be between 1 and 999, got {attempt}")
    prefix = shard_job_prefix(
        dag_id, run_key, shard_fingerprint, shard_index, model_id=model_id, round_number=round_number
    )
    return f"{prefix}-a{attempt}"


def client_token_for(
    dag_id: str,
    run_key: RunKey,
    shard_fingerprint: str,
    shard_index: int,
    attempt: int = 1,
    *,
    model_id: str,
    round_number: int = 1,
) -> str:
    """The clientRequestToken of one attempt of one shard: same inputs, same token, same job.

    A retried create call with this token returns the job the first call created instead of a second job.

    :param dag_id: the DAG's id.
    :param run_key: the run's logical date or run_id.
    :param shard_fingerprint: digest of the shard's content; changed data or prompt gives a new token.
    :param shard_index: the shard's number within the run.
    :param attempt: the attempt number; a new attempt needs a new token.
    :param model_id: model or inference-profile id; another model gives a new token.
    :param round_number: the run's round the shard belongs to; another round gives a new token.
    """
    _, date_exact = _run_key_text(run_key)
    token = "bb" + _digest(
        "token",
        dag_id,
        date_exact,
        shard_fingerprint,
        str(shard_index),
        model_id,
        str(attempt),
        *_round_parts(round_number),
    )
    assert CLIENT_TOKEN_PATTERN.fullmatch(token), token
    return token


@dataclass(frozen=True)
class ShardJobKey:
    """Everything that identifies one shard's jobs in one run; names and tokens derive from it.

    :param dag_id: the DAG's id.
    :param run_key: the run's logical date or run_id (see :func:`run_key_for`).
    :param fingerprint: digest of the shard's content.
    :param index: the shard's number within the run.
    :param model_id: model or inference-profile id.
    :param round_number: the run's round: 1 for its first jobs, 2 for the retry round.
    """

    dag_id: str
    run_key: RunKey
    fingerprint: str
    index: int
    model_id: str
    round_number: int = 1

    @property
    def prefix(self) -> str:
        """The name prefix every attempt of this shard shares (see :func:`shard_job_prefix`)."""
        return shard_job_prefix(
            self.dag_id,
            self.run_key,
            self.fingerprint,
            self.index,
            model_id=self.model_id,
            round_number=self.round_number,
        )

    def job_name(self, attempt: int = 1) -> str:
        """See :func:`job_name_for`."""
        return job_name_for(
            self.dag_id,
            self.run_key,
            self.fingerprint,
            self.index,
            attempt,
            model_id=self.model_id,
            round_number=self.round_number,
        )

    def client_token(self, attempt: int = 1) -> str:
        """See :func:`client_token_for`."""
        return client_token_for(
            self.dag_id,
            self.run_key,
            self.fingerprint,
            self.index,
            attempt,
            model_id=self.model_id,
            round_number=self.round_number,
        )


_NOT_TAG_CHARS = re.compile(r"[^a-zA-Z0-9\s._:/=+@-]")
MAX_TAG_VALUE_LENGTH: Final = 256


def tag_value(text: object) -> str:
    """``text`` made valid as a tag value (pattern ``[a-zA-Z0-9\\s._:/=+@-]*``, ≤ 256 chars)."""
    return _NOT_TAG_CHARS.sub("_", str(text))[:MAX_TAG_VALUE_LENGTH]


def attempt_of(job_name: str, prefix: str) -> int | None:
    """The attempt number of ``job_name`` if it is an attempt of the shard ``prefix``, else ``None``.

    ``nameContains`` matches substrings, so a listing may hold other shards' jobs too.
    """
    if not job_name.startswith(prefix + "-a"):
        return None
    number = job_name[len(prefix) + 2 :]
    return int(number) if number.isdigit() else None


# --- Existing jobs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobDecision:
    """What the submitter does for a shard, given the jobs that already exist for it.

    :param action: ``reattach`` to a job still running, ``reuse`` the output of a finished job,
        or ``create`` a new job.
    :param attempt: attempt number of the job reattached to, reused, or to create.
    :param job: the summary of the existing job (``None`` when creating).
    """

    action: Literal["reattach", "reuse", "create"]
    attempt: int
    job: Mapping[str, Any] | None = None


def decide_for_existing(jobs: Iterable[Mapping[str, Any]], prefix: str, force: bool = False) -> JobDecision:
    """Choose between reattaching, reusing and creating, from the shard's existing jobs.

    A job still running is reattached to (never a duplicate while one runs); otherwise the latest
    attempt is reused if it ended Completed or PartiallyCompleted, and a new attempt is created if it
    ended Failed, Stopped or Expired (or is Stopping).

    :param jobs: job summaries (``jobName``, ``status``, ...) as listed by the service; jobs of other
        shards are ignored.
    :param prefix: the shard's job name prefix (see :func:`shard_job_prefix`).
    :param force: always create a new attempt, whatever exists.
    """
    attempts = sorted(
        ((n, job) for job in jobs if (n := attempt_of(str(job.get("jobName", "")), prefix)) is not None),
        key=lambda pair: pair[0],
    )
    if not attempts:
        return JobDecision("create", 1)
    latest_attempt, latest = attempts[-1]
    if force:
        return JobDecision("create", latest_attempt + 1)
    running = [(n, job) for n, job in attempts if job.get("status") in ACTIVE_STATUSES]
    if running:
        n, job = running[-1]
        return JobDecision("reattach", n, job)
    if latest.get("status") in (COMPLETED, PARTIALLY_COMPLETED):
        return JobDecision("reuse", latest_attempt, latest)
    return JobDecision("create", latest_attempt + 1)


# Task instance states in which the user has given up on the task's job. Only "failed" says so: Airflow sets
# it when a user marks the task failed, while a clear sets no state (the next try reattaches), a retry sets
# up_for_retry, a restart or a move between triggerers leaves it deferred, and "success" means the user
# accepts the task as done.
ABANDONED_TASK_STATES: Final = frozenset({"failed"})


def abandoned_by_user(task_state: str | None) -> bool:
    """Whether a task whose waiting was cancelled should stop its job: only when it was marked failed.

    :param task_state: the task instance's state right after the cancellation; ``None`` when it could not be
        read, which never stops a job (a job left running can still be stopped; a stopped one is paid twice).
    """
    return task_state in ABANDONED_TASK_STATES


# --- Descriptions ---------------------------------------------------------------------------------------


def job_id_from_arn(job_arn: str) -> str:
    """The 12-character job id at the end of a job ARN (an id is returned unchanged)."""
    return job_arn.rsplit("/", 1)[-1]


def model_matches(job_model_id: str, model_id: str) -> bool:
    """Whether a job's ``modelId`` counts against the same per-model quota as ``model_id``.

    Both may be ids, inference-profile ids or ARNs: the service may store an ARN for a job submitted with
    a bare id, and the quota is per base model, so a cross-region profile counts with its model.
    """
    return base_model_id(job_model_id) == base_model_id(model_id)


def output_uri_for(output_s3_uri: str, job_id: str) -> str:
    """Where a job writes its ``.out`` files and manifest: ``<output>/<jobId>/``."""
    return f"{output_s3_uri.rstrip('/')}/{job_id}/"


def format_progress(job_id: str, status: str, processed: int | None = None, total: int | None = None) -> str:
    """One log line for a job's state: ``job abc123def456 InProgress 12,400/50,000 records``.

    The record counts are left out while the service does not know them yet (total 0 while validating).
    """
    if total:
        return f"job {job_id} {status} {processed or 0:,}/{total:,} records"
    return f"job {job_id} {status}"


def progress_of(job: Mapping[str, Any]) -> tuple[str, int, int]:
    """(status, processed, total) of a job description, for detecting progress worth logging."""
    return (
        str(job.get("status", "")),
        int(job.get("processedRecordCount") or 0),
        int(job.get("totalRecordCount") or 0),
    )


# Beyond the job's own expiration the service needs time to move it to its final status.
DEFAULT_WAIT_MARGIN: Final = timedelta(hours=6)
# The service's longest timeoutDurationInHours; used when a description carries neither timeout field.
MAX_JOB_TIMEOUT: Final = timedelta(hours=168)


def wait_deadline(job: Mapping[str, Any], margin: timedelta = DEFAULT_WAIT_MARGIN) -> datetime:
    """The latest moment worth waiting for a job to end: its own expiration time plus ``margin``.

    Never an attempt count: a job may legitimately be queued and run for its whole timeout (24-168 h).

    :param job: a GetModelInvocationJob description.
    :param margin: time granted beyond the job's expiration for the service to settle its status.
    """
    expiration = job.get("jobExpirationTime")
    if isinstance(expiration, datetime):
        return _as_utc(expiration) + margin
    submitted = job.get("submitTime")
    start = _as_utc(submitted) if isinstance(submitted, datetime) else datetime.now(UTC)
    hours = job.get("timeoutDurationInHours")
    timeout = timedelta(hours=int(hours)) if hours else MAX_JOB_TIMEOUT
    return start + timeout + margin


def _as_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def counts_of(job: Mapping[str, Any]) -> dict[str, int]:
    """The four record counts of a job description (0 where the service reports none yet)."""
    return {
        "total_records": int(job.get("totalRecordCount") or 0),
        "processed_records": int(job.get("processedRecordCount") or 0),
        "success_records": int(job.get("successRecordCount") or 0),
        "error_records": int(job.get("errorRecordCount") or 0),
    }


# The service model's pattern for a job's input and output S3 URIs: no '=' or spaces in keys, so Hive-style
# partition names (ds=2026-11-21) cannot be part of a staging prefix.
JOB_S3_URI = re.compile(
    r"s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-zA-Z0-9]+(?:/[-!_*'().a-zA-Z0-9]+)*)?/?"
)


def check_job_s3_uri(uri: str, what: str = "staging URI") -> None:
    """Raise :class:`ConfigError` when Bedrock would refuse ``uri`` as a job's input or output location.

    :param uri: the S3 URI (prefix) jobs will read from or write to.
    :param what: what the URI is, for the message.
    """
    if not JOB_S3_URI.fullmatch(uri):
        raise ConfigError(
            f"{what} {uri!r} is not a valid Bedrock job S3 URI: keys may only use letters, digits and "
            "-!_*'(). between slashes (no '=', spaces or '//'), and the bucket must be a plain S3 bucket name"
        )


# --- Polling --------------------------------------------------------------------------------------------

# A job left unchanged for a long time is still checked this often: a week-long job is noticed within about
# 30 minutes of its end (0.3 % of its run), and 1,000 such waits make about 0.6 calls per second.
MAX_POLL_INTERVAL: Final = 1800.0
# Between two checks, wait this fraction of the time the job has spent in its current status: when the job
# ends, the wait has added at most a tenth of its last phase (and never more than MAX_POLL_INTERVAL).
POLL_GROWTH: Final = 0.1
# Each wait is stretched by a random 0-20 %, so that waits created together stop polling in lockstep.
POLL_JITTER: Final = 0.2


def poll_delay(
    in_status_seconds: float,
    poll_interval: float,
    *,
    max_interval: float = MAX_POLL_INTERVAL,
    growth: float = POLL_GROWTH,
    expected_end_in: float | None = None,
    deadline_in: float | None = None,
    jitter: float = POLL_JITTER,
    draw: float = 0.0,
) -> float:
    """Seconds to wait before checking a job's status again: longer the longer the job has not moved.

    The wait is ``growth`` times the time the job has spent in its current status, at least
    ``poll_interval`` and at most ``max_interval`` (``poll_interval`` wins if it is the longer). When the
    job's progress predicts its end sooner, the wait shortens to that prediction, never below
    ``poll_interval``. Jitter then only lengthens it, by the fraction ``jitter * draw``, so no wait is shorter
    than ``poll_interval``. The deadline caps it all: a waiter never sleeps past it.

    :param in_status_seconds: how long the job has been in its current status.
    :param poll_interval: the shortest wait.
    :param max_interval: the longest wait before jitter.
    :param growth: the wait as a fraction of ``in_status_seconds``.
    :param expected_end_in: seconds until the job's predicted end, ``None`` without a prediction.
    :param deadline_in: seconds until the wait deadline, ``None`` without one.
    :param jitter: the largest stretch, as a fraction of the wait.
    :param draw: a random number in [0, 1) that picks the stretch.
    """
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be positive, got {poll_interval}")
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be in [0, 1), got {draw}")
    delay = min(max(poll_interval, growth * max(in_status_seconds, 0.0)), max(poll_interval, max_interval))
    if expected_end_in is not None:
        delay = max(poll_interval, min(delay, expected_end_in))
    delay *= 1.0 + jitter * draw
    if deadline_in is not None:
        delay = min(delay, max(deadline_in, 0.0))
    return delay


def _timestamp(value: Any) -> float | None:
    return _as_utc(value).timestamp() if isinstance(value, datetime) else None


@dataclass
class PollSchedule:
    """When to check one job's status next, from what its waiter has seen of it (see :func:`poll_delay`).

    A new status restarts the clock (the wait drops back to ``poll_interval`` and grows again); growing
    record counts predict the job's end from their rate, and the wait shortens to that prediction while it
    lies ahead. The first description seen dates the current status from the job's ``lastModifiedTime``
    (else ``submitTime``), so a waiter rebuilt after a triggerer restart keeps its long waits.

    :param poll_interval: the shortest wait.
    :param max_interval: the longest wait before jitter.
    :param growth: the wait as a fraction of the time in the current status.
    :param jitter: the largest random stretch of a wait, as a fraction of it.
    """

    poll_interval: float
    max_interval: float = MAX_POLL_INTERVAL
    growth: float = POLL_GROWTH
    jitter: float = POLL_JITTER
    status: str | None = None
    status_since: float = 0.0
    _counted: tuple[float, int] | None = None
    _processed: int = 0
    _expected_end: float | None = None

    def observe(self, job: Mapping[str, Any], now: float) -> None:
        """Record a description read at ``now`` (POSIX seconds)."""
        status, processed, total = progress_of(job)
        if status != self.status:
            since = now
            if self.status is None:
                since = _timestamp(job.get("lastModifiedTime")) or _timestamp(job.get("submitTime")) or now
            self.status, self.status_since = status, min(since, now)
            self._counted, self._processed, self._expected_end = None, processed, None
        if not total or not processed:
            return
        if self._counted is None:
            self._counted, self._processed = (now, processed), processed
        elif processed > self._processed and now > self._counted[0]:
            # Records processed since the first count of this status, over the time that took.
            rate = (processed - self._counted[1]) / (now - self._counted[0])
            self._processed = processed
            self._expected_end = now + max(total - processed, 0) / rate

    def next_delay(self, now: float, *, deadline: float | None = None, draw: float = 0.0) -> float:
        """Seconds to wait from ``now`` before the next check.

        :param now: POSIX seconds.
        :param deadline: POSIX seconds past which the waiter gives up, ``None`` without one.
        :param draw: a random number in [0, 1) for the jitter.
        """
        ahead = self._expected_end - now if self._expected_end is not None else None
        return poll_delay(
            now - self.status_since if self.status is not None else 0.0,
            self.poll_interval,
            max_interval=self.max_interval,
            growth=self.growth,
            # A prediction that has passed says nothing: the job is late, the wait grows as usual.
            expected_end_in=ahead if ahead is not None and ahead > 0 else None,
            deadline_in=deadline - now if deadline is not None else None,
            jitter=self.jitter,
            draw=draw,
        )


class CallBudget:
    """A token bucket shared by concurrent waiters: at most ``calls_per_second`` calls, whatever their number.

    :meth:`acquire` hands out turns in the order it is called (each caller reserves the next free turn, then
    sleeps until it), so a thousand waiters that ask at once are served one turn apart, none starves, and no
    second is ever busier than ``burst`` calls plus the rate. A waiter that wakes more than half a turn late
    (its event loop was blocked past its turn, as a triggerer's loop is by a trigger that blocks) takes a new
    turn instead of calling at once, so the waiters a stall held up do not call in one burst when it ends; it
    does so at most :attr:`MAX_LATE_RETURNS` times, then calls. A rate of 0 (or less) means no limit. Safe to
    share between event loops and threads.

    :param calls_per_second: the sustained rate.
    :param burst: how many calls may go at once after a quiet spell.
    :param clock: a monotonic clock in seconds.
    """

    MAX_LATE_RETURNS = 2

    def __init__(
        self, calls_per_second: float, *, burst: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.calls_per_second = float(calls_per_second)
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._next_turn = -math.inf

    def reserve(self) -> float:
        """Take the next turn; returns how many seconds the caller must wait for it (0: go now)."""
        if self.calls_per_second <= 0:
            return 0.0
        spacing = 1.0 / self.calls_per_second
        with self._lock:
            now = self._clock()
            # Turns left unused while nobody asked are not saved up beyond the burst.
            turn = max(self._next_turn, now - (self.burst - 1) * spacing)
            self._next_turn = turn + spacing
        return max(turn - now, 0.0)

    async def acquire(self) -> float:
        """Wait for a turn; returns the seconds waited."""
        started = self._clock()
        for _ in range(self.MAX_LATE_RETURNS + 1):
            wait = self.reserve()
            if wait <= 0:
                break
            turn = self._clock() + wait
            await asyncio.sleep(wait)
            if self._clock() - turn <= 0.5 / self.calls_per_second:
                break
        return self._clock() - started
