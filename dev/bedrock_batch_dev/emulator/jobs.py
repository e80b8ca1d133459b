"""Batch inference jobs of the emulated service: the in-memory store, the ten-status state machine, a worker.

Input is read from and output written to S3 through any endpoint; durations run on a time-scaled clock.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import secrets
import string
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from bedrock_batch_dev.emulator import responders
from bedrock_batch_dev.emulator.faults import RECORD_ERROR_MESSAGES, FaultInjector, JobFate

log = logging.getLogger("bedrock_batch_dev.emulator")

STATUSES = (
    "Submitted",
    "Validating",
    "Scheduled",
    "InProgress",
    "Completed",
    "PartiallyCompleted",
    "Failed",
    "Stopping",
    "Stopped",
    "Expired",
)
# Jobs in these statuses count toward the per-model concurrency quota.
ACTIVE_STATUSES = frozenset({"Submitted", "Validating", "Scheduled", "InProgress"})
TERMINAL_STATUSES = frozenset({"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"})

# HTTP status of each error shape, as the botocore service models declare them. (The facts sheet lists
# ConflictException as 409; the model says 400. botocore maps errors by x-amzn-ErrorType, not status.)
ERROR_HTTP_STATUS: Mapping[str, int] = {
    "ValidationException": 400,
    "ConflictException": 400,
    "ServiceQuotaExceededException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ThrottlingException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
    "UnknownOperationException": 404,
}
ERROR_MESSAGES: Mapping[str, str] = {
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "InternalServerException": "An internal server error occurred. Retry your request.",
}

_JOB_ID_ALPHABET = string.ascii_lowercase + string.digits
# Input up to this size is held in memory from validation to processing instead of being read twice.
INPUT_CACHE_BYTES = 1_000_000_000
_RECORD_ID_ALPHABET = string.ascii_uppercase + string.digits


class ApiError(Exception):
    """An error answer of the service: ``code`` is the error shape botocore maps to an exception class."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(message or ERROR_MESSAGES.get(code, code))
        self.code = code
        self.message = message or ERROR_MESSAGES.get(code, code)

    @property
    def status(self) -> int:
        return ERROR_HTTP_STATUS.get(self.code, 400)


@dataclass(frozen=True)
class ServiceLimits:
    """The service quotas the emulator enforces; defaults are the service-quotas table for base models.

    The emulator keeps its own copy rather than importing the library's ``QuotaConfig`` so that a wrong
    library default cannot hide behind an emulator that shares it.

    :param min_records_per_job: fewer records fail validation (service: 100).
    :param max_records_per_job: more records fail validation (service: 50,000).
    :param max_records_per_file: more records in one input file fail validation (service: 50,000).
    :param max_file_bytes: a larger input file fails validation (service: 1 GB).
    :param max_job_bytes: larger input in total fails validation (service: 5 GB).
    :param max_concurrent_jobs: Submitted + Validating + Scheduled + InProgress jobs per model; one more
        is refused with ServiceQuotaExceededException (service: 20).
    :param max_running_jobs: InProgress jobs the whole service runs at once; the rest wait in Scheduled
        (and expire if they wait past their timeout). ``None`` means no limit.
    :param default_timeout_hours: ``timeoutDurationInHours`` when a request does not set it.
    :param name_in_use_error: the error a second job with a used name gets; Bedrock's job APIs answer
        ValidationException "The provided job name is currently in use.", some report ConflictException.
    """

    min_records_per_job: int = 100
    max_records_per_job: int = 50_000
    max_records_per_file: int = 50_000
    max_file_bytes: int = 1_000_000_000
    max_job_bytes: int = 5_000_000_000
    max_concurrent_jobs: int = 20
    max_running_jobs: int | None = None
    default_timeout_hours: int = 168
    name_in_use_error: str = "ValidationException"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "name_in_use_error":
                if value not in ("ValidationException", "ConflictException"):
                    raise ValueError(
                        f"name_in_use_error must be ValidationException or ConflictException, got {value!r}"
                    )
            elif value is None and f.name == "max_running_jobs":
                continue
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{f.name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ServiceTimings:
    """How long each phase takes, in service seconds (wall seconds times the time scale).

    :param submitted_seconds: time in Submitted before validation starts.
    :param validating_seconds: least time in Validating (longer if reading the input takes longer).
    :param scheduled_seconds: time in Scheduled before the job starts, when there is capacity.
    :param stopping_seconds: time in Stopping for a job that had not started processing.
    :param records_per_second: processing speed of one job.
    :param chunk_records: most records processed between two updates of the job's counts.
    """

    submitted_seconds: float = 5.0
    validating_seconds: float = 10.0
    scheduled_seconds: float = 5.0
    stopping_seconds: float = 2.0
    records_per_second: float = 20.0
    chunk_records: int = 500

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{f.name} must be a non-negative number, got {value!r}")
        if self.records_per_second <= 0 or self.chunk_records < 1:
            raise ValueError("records_per_second and chunk_records must be positive")


class ServiceClock:
    """Service time in seconds since start, running ``time_scale`` times faster than the wall clock."""

    def __init__(self, time_scale: float = 1.0) -> None:
        _check_scale(time_scale)
        self._lock = threading.Lock()
        self._scale = float(time_scale)
        self._base_service = 0.0
        self._base_wall = time.monotonic()

    @property
    def scale(self) -> float:
        return self._scale

    def now(self) -> float:
        with self._lock:
            return self._base_service + (time.monotonic() - self._base_wall) * self._scale

    def set_scale(self, time_scale: float) -> None:
        _check_scale(time_scale)
        with self._lock:
            wall = time.monotonic()
            # Rebase so that service time stays continuous across the change.
            self._base_service += (wall - self._base_wall) * self._scale
            self._base_wall = wall
            self._scale = float(time_scale)

    def wall_seconds(self, service_seconds: float) -> float:
        return max(0.0, service_seconds) / self._scale


def _check_scale(time_scale: float) -> None:
    if isinstance(time_scale, bool) or not isinstance(time_scale, int | float) or not time_scale > 0:
        raise ValueError(f"time_scale must be a positive number, got {time_scale!r}")


def utc_now() -> datetime:
    """Now, to the millisecond: the precision the wire carries, so list filters compare like clients do."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(moment: datetime) -> str:
    """The service's timestamp format: ISO 8601 UTC with milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


@dataclass(frozen=True)
class InputFile:
    """One validated input file, with its lines when validation kept them for processing."""

    bucket: str
    key: str
    size: int
    records: int
    lines: list[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


@dataclass
class Validation:
    """The outcome of validating a job's input: its files, or the message the job fails with."""

    files: list[InputFile] = field(default_factory=list)
    error: str | None = None

    @property
    def total_records(self) -> int:
        return sum(f.records for f in self.files)


class _Cancelled(Exception):
    """The emulator was reset or closed while the job ran; drop it without writing anything."""


@dataclass(eq=False)
class Job:
    """One model invocation job and everything the emulator tracks about it."""

    job_id: str
    arn: str
    request: dict[str, Any]
    family: str | None
    quota_key: str
    timeout_hours: int
    fate: JobFate | None
    submit_time: datetime
    expires_at: float  # service seconds
    phase_started: float  # service seconds at which the current status began
    status: str = "Submitted"
    message: str | None = None
    last_modified: datetime | None = None
    end_time: datetime | None = None
    total: int = 0
    processed: int = 0
    success: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    create_requests: int = 1
    validation: Validation | None = None
    worker: threading.Thread | None = None
    stop_requested: bool = False
    cancelled: bool = False
    wake: threading.Event = field(default_factory=threading.Event)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.request["jobName"])

    @property
    def expiration_time(self) -> datetime:
        return self.submit_time + timedelta(hours=self.timeout_hours)

    def to_wire(self) -> dict[str, Any]:
        """The GetModelInvocationJob body (ListModelInvocationJobs summaries have the same members)."""
        body: dict[str, Any] = {
            "jobArn": self.arn,
            "jobName": self.name,
            "modelId": self.request["modelId"],
            "roleArn": self.request["roleArn"],
            "status": self.status,
            "submitTime": iso(self.submit_time),
            "lastModifiedTime": iso(self.last_modified or self.submit_time),
            "inputDataConfig": self.request["inputDataConfig"],
            "outputDataConfig": self.request["outputDataConfig"],
            "timeoutDurationInHours": self.timeout_hours,
            "jobExpirationTime": iso(self.expiration_time),
            "totalRecordCount": self.total,
            "processedRecordCount": self.processed,
            "successRecordCount": self.success,
            "errorRecordCount": self.errors,
        }
        for key in ("clientRequestToken", "vpcConfig", "modelInvocationType"):
            if self.request.get(key) is not None:
                body[key] = self.request[key]
        if self.message:
            body["message"] = self.message
        if self.end_time:
            body["endTime"] = iso(self.end_time)
        return body

    def to_admin(self) -> dict[str, Any]:
        """What the admin endpoint reports: the wire body plus the emulator's bookkeeping."""
        return {
            **self.to_wire(),
            "jobId": self.job_id,
            "tags": self.request.get("tags", []),
            "createRequests": self.create_requests,
            "idempotentReplays": self.create_requests - 1,
            "fate": self.fate,
            "inputTokenCount": self.input_tokens,
            "outputTokenCount": self.output_tokens,
            "history": [dict(h) for h in self.history],
        }


class BatchJobService:
    """The control plane's behaviour: create, get, list and stop jobs, and run them in the background."""

    def __init__(
        self,
        s3_client: Any,
        *,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        limits: ServiceLimits | None = None,
        timings: ServiceTimings | None = None,
        faults: FaultInjector | None = None,
        clock: ServiceClock | None = None,
    ) -> None:
        self.s3 = s3_client
        self.region = region
        self.account_id = account_id
        self.limits = limits or ServiceLimits()
        self.timings = timings or ServiceTimings()
        self.faults = faults or FaultInjector()
        self.clock = clock or ServiceClock()
        self._cond = threading.Condition(threading.RLock())
        self._jobs: dict[str, Job] = {}
        self._by_name: dict[str, Job] = {}
        self._by_token: dict[str, Job] = {}
        self._created = 0
        self._closed = False
        self._scheduler = threading.Thread(
            target=self._schedule_forever, name="emulator-scheduler", daemon=True
        )

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._scheduler.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            workers = self._cancel_all()
            self._cond.notify_all()
        if self._scheduler.is_alive():
            self._scheduler.join(timeout=5)
        for worker in workers:
            worker.join(timeout=5)

    def reset(self) -> None:
        """Forget every job (running ones stop without writing more output)."""
        with self._cond:
            self._cancel_all()
            self._jobs.clear()
            self._by_name.clear()
            self._by_token.clear()
            self._created = 0
            self._cond.notify_all()

    def _cancel_all(self) -> list[threading.Thread]:
        workers = []
        for job in self._jobs.values():
            job.cancelled = True
            job.wake.set()
            if job.worker is not None:
                workers.append(job.worker)
        return workers

    def configure(
        self,
        *,
        limits: ServiceLimits | None = None,
        timings: ServiceTimings | None = None,
        time_scale: float | None = None,
    ) -> None:
        with self._cond:
            if limits is not None:
                self.limits = limits
            if timings is not None:
                self.timings = timings
            if time_scale is not None:
                self.clock.set_scale(time_scale)
            for job in self._jobs.values():
                job.wake.set()
            self._cond.notify_all()

    # --- API operations --------------------------------------------------------------------------------

    def create_job(self, request: Mapping[str, Any]) -> tuple[str, bool]:
        """Create a job from a validated request; returns its ARN and False if it is an idempotent replay."""
        model_id = str(request["modelId"])
        try:
            family = responders.refuse_unknown_model(model_id, request.get("modelInvocationType"))
        except responders.ModelInputError as exc:
            raise ApiError("ValidationException", str(exc)) from exc
        token = request.get("clientRequestToken")
        with self._cond:
            if token and token in self._by_token:
                job = self._by_token[token]
                job.create_requests += 1
                return job.arn, False
            name = str(request["jobName"])
            if name in self._by_name:
                raise ApiError(self.limits.name_in_use_error, "The provided job name is currently in use.")
            # Quotas are per base model: a cross-region profile shares its model's quota here.
            quota_key = responders.base_model_id(model_id)
            active = sum(
                1 for j in self._jobs.values() if j.quota_key == quota_key and j.status in ACTIVE_STATUSES
            )
            if active >= self.limits.max_concurrent_jobs:
                raise ApiError(
                    "ServiceQuotaExceededException",
                    f"You have reached the quota of {self.limits.max_concurrent_jobs} submitted and "
                    f"in-progress batch inference jobs for model {quota_key}. Wait for a job to end or "
                    "request a quota increase.",
                )
            job_id = "".join(secrets.choice(_JOB_ID_ALPHABET) for _ in range(12))
            timeout_hours = int(request.get("timeoutDurationInHours") or self.limits.default_timeout_hours)
            now = self.clock.now()
            job = Job(
                job_id=job_id,
                arn=f"arn:aws:bedrock:{self.region}:{self.account_id}:model-invocation-job/{job_id}",
                request=dict(request),
                family=family,
                quota_key=quota_key,
                timeout_hours=timeout_hours,
                fate=self.faults.job_fate(name),
                submit_time=utc_now(),
                expires_at=now + timeout_hours * 3600.0,
                phase_started=now,
            )
            self._jobs[job_id] = job
            self._by_name[name] = job
            if token:
                self._by_token[token] = job
            self._created += 1
            self._record_transition(job, None)
            self._cond.notify_all()
            return job.arn, True

    def get_job(self, identifier: str) -> dict[str, Any]:
        with self._cond:
            return self._find(identifier).to_wire()

    def list_jobs(
        self,
        *,
        submit_time_after: datetime | None = None,
        submit_time_before: datetime | None = None,
        status: str | None = None,
        name_contains: str | None = None,
        descending: bool = True,
    ) -> list[dict[str, Any]]:
        with self._cond:
            jobs = [
                j
                for j in self._jobs.values()
                if (submit_time_after is None or j.submit_time > submit_time_after)
                and (submit_time_before is None or j.submit_time < submit_time_before)
                and (status is None or j.status == status)
                and (name_contains is None or name_contains in j.name)
            ]
            # Insertion order breaks ties between jobs submitted within the same clock tick.
            jobs = sorted(jobs, key=lambda j: j.submit_time)
            if descending:
                jobs.reverse()
            return [j.to_wire() for j in jobs]

    def job_tags(self, arn: str) -> list[dict[str, str]]:
        """The tags a job was created with (ListTagsForResource); only jobs are taggable here."""
        with self._cond:
            return [dict(tag) for tag in self._find(arn).request.get("tags", [])]

    def stop_job(self, identifier: str) -> None:
        with self._cond:
            job = self._find(identifier)
            if job.status not in ACTIVE_STATUSES:
                raise ApiError(
                    "ValidationException",
                    f"Unable to stop job {job.arn}: only jobs in Submitted, Validating, Scheduled or "
                    f"InProgress status can be stopped. State was: {job.status}",
                )
            job.stop_requested = True
            job.wake.set()
            self._set_status(job, "Stopping")

    def _find(self, identifier: str) -> Job:
        job_id = identifier.rsplit("/", 1)[-1]
        job = self._jobs.get(job_id)
        arn_ok = not identifier.startswith("arn:") or (job is not None and job.arn == identifier)
        if job is None or not arn_ok:
            raise ApiError(
                "ResourceNotFoundException", f"The batch inference job {identifier} could not be found."
            )
        return job

    # --- admin views -------------------------------------------------------------------------------------

    def admin_jobs(self) -> list[dict[str, Any]]:
        with self._cond:
            return [j.to_admin() for j in self._jobs.values()]

    def created_job_count(self) -> int:
        with self._cond:
            return self._created

    # --- state machine ---------------------------------------------------------------------------------

    def _record_transition(self, job: Job, previous: str | None) -> None:
        job.history.append(
            {
                "status": job.status,
                "time": iso(job.last_modified or job.submit_time),
                "totalRecordCount": job.total,
                "processedRecordCount": job.processed,
            }
        )
        # Ids and counts only: never record text.
        log.info(
            "job %s %s%s %d/%d records%s",
            job.job_id,
            f"{previous} -> " if previous else "",
            job.status,
            job.processed,
            job.total,
            f" ({job.errors} errors)" if job.errors else "",
        )

    def _set_status(self, job: Job, status: str, message: str | None = None) -> None:
        previous = job.status
        job.status = status
        if message is not None:
            job.message = message
        job.last_modified = utc_now()
        job.phase_started = self.clock.now()
        if status in TERMINAL_STATUSES:
            job.end_time = job.last_modified
            _forget_input(job)
        self._record_transition(job, previous)
        self._cond.notify_all()

    def _schedule_forever(self) -> None:
        with self._cond:
            while not self._closed:
                now = self.clock.now()
                next_due = math.inf
                for job in list(self._jobs.values()):
                    if job.status not in TERMINAL_STATUSES and not job.cancelled:
                        next_due = min(next_due, self._advance(job, now))
                # Wake at the next deadline; poll at least twice a second in case the time scale changes.
                wait = 0.5 if next_due == math.inf else self.clock.wall_seconds(next_due - now)
                self._cond.wait(min(max(wait, 0.001), 0.5))

    def _advance(self, job: Job, now: float) -> float:
        """Move ``job`` along if its current phase is over; returns the service time to look at it again."""
        t = self.timings
        if job.status == "Submitted":
            due = job.phase_started + t.submitted_seconds
            if now < due:
                return due
            self._set_status(job, "Validating")
            self._start_validation(job)
            return now + t.validating_seconds
        if job.status == "Validating":
            due = job.phase_started + t.validating_seconds
            if now < due or job.validation is None:
                return due if now < due else math.inf  # the validation thread notifies when done
            # Reading the input takes wall time that the time scale inflates; the emulator's own slowness
            # must not eat into the job's timeout.
            job.expires_at += max(0.0, now - due)
            if job.validation.error:
                self._set_status(job, "Failed", job.validation.error)
            elif job.fate == "fail":
                self._set_status(
                    job, "Failed", "An internal error occurred while processing the job (injected fault)."
                )
            else:
                job.total = job.validation.total_records
                self._set_status(job, "Scheduled")
            return now
        if job.status == "Scheduled":
            if now >= job.expires_at:
                self._set_status(
                    job,
                    "Expired",
                    f"The job did not start within its timeout of {job.timeout_hours} hours. "
                    "Submit a new job.",
                )
                return math.inf
            due = job.phase_started + t.scheduled_seconds
            if job.fate == "expire":
                return job.expires_at
            if now < due:
                return min(due, job.expires_at)
            if not self._has_capacity():
                return job.expires_at  # a job that ends frees capacity and notifies the scheduler
            self._set_status(job, "InProgress")
            job.worker = threading.Thread(
                target=self._run_job, args=(job,), name=f"job-{job.job_id}", daemon=True
            )
            job.worker.start()
            return job.expires_at
        if job.status == "Stopping" and job.worker is None:
            due = job.phase_started + t.stopping_seconds
            if now < due:
                return due
            self._set_status(job, "Stopped")
            return math.inf
        return math.inf  # InProgress, or Stopping with a worker: the worker ends it and notifies

    def _has_capacity(self) -> bool:
        limit = self.limits.max_running_jobs
        if limit is None:
            return True
        return sum(1 for j in self._jobs.values() if j.worker is not None) < limit

    # --- validation ------------------------------------------------------------------------------------

    def _start_validation(self, job: Job) -> None:
        def run() -> None:
            result = self._validate(job)
            with self._cond:
                job.validation = result
                if job.status in TERMINAL_STATUSES:  # stopped while validating
                    _forget_input(job)
                self._cond.notify_all()

        threading.Thread(target=run, name=f"validate-{job.job_id}", daemon=True).start()

    def _validate(self, job: Job) -> Validation:
        limits = self.limits
        in_cfg = job.request["inputDataConfig"]["s3InputDataConfig"]
        out_cfg = job.request["outputDataConfig"]["s3OutputDataConfig"]
        uri = in_cfg["s3Uri"]
        for cfg in (in_cfg, out_cfg):
            owner = cfg.get("s3BucketOwner")
            if owner and owner != self.account_id:
                bucket = parse_s3_uri(cfg["s3Uri"])[0]
                return Validation(
                    error=f"Access denied to bucket {bucket}: it is not owned by account {owner}."
                )
        try:
            out_bucket = parse_s3_uri(out_cfg["s3Uri"])[0]
            try:
                self.s3.head_bucket(Bucket=out_bucket)
            except ClientError:
                return Validation(
                    error=f"Unable to access the output location {out_cfg['s3Uri']}. Check that the bucket "
                    f"exists and that the service role {job.request['roleArn']} can write to it."
                )
            keys = self._input_keys(uri)
        except (ClientError, BotoCoreError) as exc:
            return Validation(
                error=f"Unable to access the input location {uri} ({_error_code(exc)}). Check that it exists "
                f"and that the service role {job.request['roleArn']} has s3:GetObject and "
                "s3:ListBucket on it."
            )
        if isinstance(keys, str):
            return Validation(error=keys)
        files: list[InputFile] = []
        job_bytes = 0
        for bucket, key, size in keys:
            name = key.rsplit("/", 1)[-1]
            if size > limits.max_file_bytes:
                return Validation(
                    error=f"Input file {name} is {size:,} bytes, above the maximum file size of "
                    f"{limits.max_file_bytes:,} bytes."
                )
            job_bytes += size
            if job_bytes > limits.max_job_bytes:
                return Validation(
                    error="The job's input files total more than the maximum job size of "
                    f"{limits.max_job_bytes:,} bytes."
                )
            try:
                lines = self._read_lines(bucket, key)
            except (ClientError, BotoCoreError) as exc:
                return Validation(error=f"Unable to read input file {name} ({_error_code(exc)}).")
            for number, line in enumerate(lines, start=1):
                problem = _record_problem(line)
                if problem:
                    return Validation(error=f"Input file {name}, line {number}: {problem}")
            if len(lines) > limits.max_records_per_file:
                return Validation(
                    error=f"Input file {name} contains {len(lines):,} records, more than the maximum of "
                    f"{limits.max_records_per_file:,} records per file."
                )
            # Keep what was read for processing unless the input is huge: a second read through the S3
            # server costs as much as answering a tenth of the records.
            keep = job_bytes <= INPUT_CACHE_BYTES
            files.append(InputFile(bucket, key, size, len(lines), lines if keep else None))
        result = Validation(files=files)
        total = result.total_records
        # The service's own wording for the record-count checks.
        if total < limits.min_records_per_job:
            result.error = (
                f"Batch job {job.arn} contains less records ({total}) than the required minimum of: "
                f"{limits.min_records_per_job}"
            )
        elif total > limits.max_records_per_job:
            result.error = (
                f"Batch job {job.arn} contains more records ({total}) than the allowed maximum of: "
                f"{limits.max_records_per_job}"
            )
        return result

    def _input_keys(self, uri: str) -> list[tuple[str, str, int]] | str:
        """(bucket, key, size) of every input file, or the failure message when there is none usable."""
        bucket, key = parse_s3_uri(uri)
        if key and not key.endswith("/"):
            try:
                head = self.s3.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                    raise
            else:
                if not key.endswith(".jsonl"):
                    return f"The input file {uri} is not a .jsonl file. Provide files in JSON Lines format."
                return [(bucket, key, int(head["ContentLength"]))]
            key += "/"
        found: list[tuple[str, str, int]] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(".jsonl"):
                    found.append((bucket, obj["Key"], int(obj["Size"])))
        if not found:
            return (
                f"No .jsonl files found at the input location {uri}. "
                "Provide a .jsonl object or a prefix of .jsonl files."
            )
        return sorted(found)

    def _read_lines(self, bucket: str, key: str) -> list[bytes]:
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return [line for line in body.split(b"\n") if line.strip()]

    # --- processing ------------------------------------------------------------------------------------

    def _run_job(self, job: Job) -> None:
        try:
            status, message = self._process(job)
        except _Cancelled:
            return
        except Exception:  # an S3 failure mid-job: the service reports it as a failed job
            log.exception("job %s: processing failed", job.job_id)
            status, message = (
                "Failed",
                "An internal error occurred while processing the job. Submit it again.",
            )
        with self._cond:
            job.worker = None
            if not job.cancelled:
                self._set_status(job, status, message)

    def _process(self, job: Job) -> tuple[str, str | None]:
        assert job.validation is not None
        total = job.total
        limit = total
        if job.fate == "partial":
            limit = min(total - 1, math.floor(total * self.faults.config.partial_fraction))
        out_bucket, out_key = parse_s3_uri(job.request["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"])
        out_prefix = f"{out_key.rstrip('/')}/{job.job_id}/".lstrip("/")
        started = self.clock.now()
        done = 0
        interruption: str | None = None
        files = job.validation.files
        # Reading the next file and writing the previous output overlap with answering records: socket I/O
        # and the S3 server's hashing release the GIL, and output writes are half the cost of a big job.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"job-{job.job_id}-io") as io:
            reading: Future[list[bytes]] = io.submit(self._input_lines, files[0])
            writes: list[Future[None]] = []
            for file_index, input_file in enumerate(files):
                lines = reading.result()
                if file_index + 1 < len(files):
                    reading = io.submit(self._input_lines, files[file_index + 1])
                order = _shuffled(len(lines), f"{job.job_id}/{input_file.key}")
                out: list[bytes] = []
                position = 0
                while position < len(order):
                    interruption = self._interruption(job, started, done, limit)
                    if interruption:
                        break
                    budget = self._budget(job, started, done)
                    if budget <= 0:
                        continue
                    take = min(budget, self.timings.chunk_records, len(order) - position, limit - done)
                    success = in_tokens = out_tokens = 0
                    for index in order[position : position + take]:
                        line, ok, used_in, used_out = self._answer(job, lines[index], file_index, index)
                        out.append(line)
                        success += ok
                        in_tokens += used_in
                        out_tokens += used_out
                    position += take
                    done += take
                    with self._cond:
                        job.processed += take
                        job.success += success
                        job.errors += take - success
                        job.input_tokens += in_tokens
                        job.output_tokens += out_tokens
                if out:
                    key = f"{out_prefix}{input_file.name}.out"
                    writes.append(io.submit(self._put, job, out_bucket, key, b"\n".join(out) + b"\n"))
                if interruption:
                    break
            for write in writes:
                write.result()
        if job.cancelled:
            raise _Cancelled
        manifest = {
            "totalRecordCount": total,
            "processedRecordCount": job.processed,
            "successRecordCount": job.success,
            "errorRecordCount": job.errors,
            "inputTokenCount": job.input_tokens,
            "outputTokenCount": job.output_tokens,
        }
        self._put(job, out_bucket, f"{out_prefix}manifest.json.out", orjson.dumps(manifest))
        if interruption == "stopped":
            return "Stopped", None
        if interruption in ("expired", "partial"):
            return "PartiallyCompleted", (
                f"Not all records could be processed before the job timed out: {job.processed} of {total} "
                "records were processed. Their output is in the output location."
            )
        return "Completed", None

    def _input_lines(self, input_file: InputFile) -> list[bytes]:
        if input_file.lines is not None:
            return input_file.lines
        return self._read_lines(input_file.bucket, input_file.key)

    def _interruption(self, job: Job, started: float, done: int, limit: int) -> str | None:
        if job.cancelled:
            raise _Cancelled
        if job.stop_requested:
            return "stopped"
        # The job's own clock runs no faster than its simulated progress: when the emulator is slower than
        # records_per_second (CPU-bound at a high time scale), that slowness does not time the job out.
        job_time = min(self.clock.now(), started + (done + 1) / self.timings.records_per_second)
        if job_time >= job.expires_at:
            return "expired"
        if done >= limit:
            return "partial"
        return None

    def _budget(self, job: Job, started: float, done: int) -> int:
        """Records the job may process now; sleeps (interruptibly) until at least one is due."""
        rate = self.timings.records_per_second
        now = self.clock.now()
        budget = math.floor((now - started) * rate) - done
        if budget > 0:
            return budget
        next_due = started + (done + 1) / rate
        wait = min(self.clock.wall_seconds(min(next_due, job.expires_at) - now), 0.25)
        job.wake.wait(max(wait, 0.001))
        job.wake.clear()
        return 0

    def _answer(self, job: Job, raw: bytes, file_index: int, line_index: int) -> tuple[bytes, bool, int, int]:
        """One output line for one input line; validation guaranteed it is an object with modelInput."""
        record = orjson.loads(raw)
        record_id = record.get("recordId") or _generated_record_id(job.job_id, file_index, line_index)
        model_input = record["modelInput"]
        code = self.faults.record_error(job.job_id, record_id)
        if code is None:
            invocation = responders.Invocation(
                model_id=str(job.request["modelId"]),
                batch=True,
                invalid_draw=self.faults.invalid_reply(job.job_id, record_id),
            )
            try:
                reply = responders.respond(job.family, model_input, invocation)
            except responders.ModelInputError as exc:
                code, message = 400, str(exc)
            else:
                line = orjson.dumps(
                    {"recordId": record_id, "modelInput": model_input, "modelOutput": reply.body}
                )
                return line, True, reply.input_tokens, reply.output_tokens
        else:
            message = RECORD_ERROR_MESSAGES[code]
        error = {"errorCode": code, "errorMessage": message}
        return orjson.dumps({"recordId": record_id, "modelInput": model_input, "error": error}), False, 0, 0

    def _put(self, job: Job, bucket: str, key: str, body: bytes) -> None:
        extra: dict[str, Any] = {}
        kms_key = job.request["outputDataConfig"]["s3OutputDataConfig"].get("s3EncryptionKeyId")
        if kms_key:
            extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key}
        self.s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)


def _forget_input(job: Job) -> None:
    """Drop the input lines validation kept for processing (an ended job needs them no more)."""
    if job.validation is not None:
        job.validation.files = [dataclasses.replace(f, lines=None) for f in job.validation.files]


def _record_problem(line: bytes) -> str | None:
    """Why ``line`` is not a batch record (the service checks the record format, not the model body)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "the line is not valid JSON. Each line must be one JSON object."
    if not isinstance(record, dict):
        return "the line is not a JSON object."
    if not isinstance(record.get("modelInput"), dict):
        return "the record has no modelInput object."
    record_id = record.get("recordId")
    if record_id is not None and not isinstance(record_id, str):
        return "recordId must be a string."
    return None


def _shuffled(count: int, seed: str) -> list[int]:
    """Processing order for a file: deterministic per job and file, and never the input order."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    if count > 1 and order == sorted(order):
        order = order[1:] + order[:1]
    return order


def _generated_record_id(job_id: str, file_index: int, line_index: int) -> str:
    """The id the service assigns to a record that has none: 11 characters, stable per position."""
    rng = random.Random(f"{job_id}:{file_index}:{line_index}")
    return "".join(rng.choice(_RECORD_ID_ALPHABET) for _ in range(11))


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__
