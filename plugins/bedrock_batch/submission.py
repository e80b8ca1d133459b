"""Find or create one shard's job: reattach, reuse or create, never more active jobs than the model's quota.

:class:`JobSubmitter` decides from the shard's existing jobs
(:func:`~bedrock_batch.jobs.decide_for_existing`), holds the concurrency gate (the model's active jobs
against ``max_concurrent_jobs``, and a job slot when :mod:`bedrock_batch.slots` are configured), creates the
job with its deterministic name and token, and retries throttling and server errors. Imports nothing from
Airflow: it works through any object with the :class:`SubmitHook` methods
(:class:`~bedrock_batch.hooks.BedrockBatchHook` in a task, a fake in tests).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from botocore.exceptions import ClientError

from bedrock_batch.aws_errors import describe_error, error_code, is_throttling, is_transient
from bedrock_batch.errors import ConfigError
from bedrock_batch.jobs import (
    ACTIVE_STATUSES,
    RunKey,
    ShardJobKey,
    decide_for_existing,
    job_id_from_arn,
    tag_value,
)
from bedrock_batch.slots import JobSlots, SlotLease

if TYPE_CHECKING:
    from bedrock_batch.polling import Log

# The keys of a shard descriptor the submitter needs (see stage_results.ShardDescriptor).
REQUIRED_SHARD_KEYS = ("shard", "input_uri", "output_uri", "fingerprint")
# How long a submit task keeps retrying throttling and server errors before failing its try.
TRANSIENT_RETRY_SECONDS = 900.0
# The service's answers to a create that mean "wait and look again": its own count says the quota is full
# (jobs our count could not see yet), or a concurrent try created this name first.
WAIT_AND_LOOK_AGAIN = frozenset({"ServiceQuotaExceededException", "ConflictException"})

_T = TypeVar("_T")


class SubmitHook(Protocol):
    """The job operations the submitter needs (see :class:`~bedrock_batch.hooks.BedrockBatchHook`)."""

    @property
    def s3_client(self) -> Any: ...

    def find_jobs_by_name(self, prefix: str) -> list[dict[str, Any]]: ...

    def active_jobs(self, model_id: str) -> list[dict[str, Any]]: ...

    def get_job(self, job_identifier: str) -> dict[str, Any]: ...

    @property
    def create_job(self) -> Callable[..., str]:
        """CreateModelInvocationJob with ``job_name``, ``client_request_token`` and a :class:`JobRequest`'s
        fields as keyword arguments; returns the job's ARN."""


@dataclass(frozen=True)
class JobRequest:
    """What the shard's job is created with besides its name and token: the keyword arguments of
    ``BedrockBatchHook.create_job``.

    :param role_arn: service role Bedrock assumes to read the input and write the output.
    :param model_id: model id, inference-profile id or ARN.
    :param input_s3_uri: the shard's input prefix.
    :param output_s3_uri: where the job writes.
    :param invocation_type: ``InvokeModel`` or ``Converse``.
    :param timeout_hours: ``timeoutDurationInHours``; ``None`` keeps the service's.
    :param tags: every tag of the job (see :func:`job_tags`).
    :param vpc_config: ``{"subnetIds": [...], "securityGroupIds": [...]}``.
    :param output_kms_key_id: KMS key that encrypts the output (and the job slots).
    :param input_bucket_owner: account that must own the input bucket (and the slots' bucket).
    :param output_bucket_owner: account that must own the output bucket.
    """

    role_arn: str
    model_id: str
    input_s3_uri: str
    output_s3_uri: str
    invocation_type: str | None = None
    timeout_hours: int | None = None
    tags: Mapping[str, str] | None = None
    vpc_config: Mapping[str, Sequence[str]] | None = None
    output_kms_key_id: str | None = None
    input_bucket_owner: str | None = None
    output_bucket_owner: str | None = None


@dataclass(frozen=True)
class Submitted:
    """The shard's job: its ARN, and whether it existed already (reattached to, or its output reused)."""

    job_arn: str
    reused: bool


def shard_job_key(shard: Any, *, dag_id: str, run_key: RunKey, model_id: str) -> ShardJobKey:
    """The job identity of the shard a descriptor names (its number, fingerprint and round).

    :param shard: a shard descriptor (:class:`~bedrock_batch.stage_results.ShardDescriptor`).
    :param dag_id: the DAG's id.
    :param run_key: the run's logical date or run_id (see :func:`~bedrock_batch.jobs.run_key_for`).
    :param model_id: model id, inference-profile id or ARN.
    :raises ConfigError: when ``shard`` is not a descriptor.
    """
    missing = [key for key in REQUIRED_SHARD_KEYS if not isinstance(shard, Mapping) or key not in shard]
    if missing:
        raise ConfigError(
            f"shard descriptor lacks {missing}; pass the split stage's shard dicts "
            f"(keys {list(REQUIRED_SHARD_KEYS)}), e.g. .expand(shard=split.output)"
        )
    return ShardJobKey(
        dag_id,
        run_key,
        str(shard["fingerprint"]),
        int(shard["shard"]),
        model_id,
        round_number=int(shard.get("round") or 1),
    )


def job_tags(extra: Mapping[str, Any] | None, *, key: ShardJobKey, run_id: str) -> dict[str, str]:
    """Every tag of a shard's job: ``extra`` plus ``dag_id``, ``run_id``, ``shard`` and ``round`` (which win),
    each made valid for the service."""
    automatic = {"dag_id": key.dag_id, "run_id": run_id, "shard": key.index, "round": key.round_number}
    return {tag_value(k): tag_value(v) for k, v in {**(extra or {}), **automatic}.items()}


class JobSubmitter:
    """Finds or creates the job of one shard, within the model's concurrency quota.

    :param hook: the job operations (:class:`SubmitHook`).
    :param key: the shard's job identity; names and tokens derive from it.
    :param request: what a new job is created with.
    :param max_concurrent_jobs: the model's quota of active jobs (jobs created outside Airflow count too).
    :param force: create a new attempt even if a job for this shard exists.
    :param job_slots_uri: ``s3://`` prefix of the job slots (see :mod:`bedrock_batch.slots`) that make the
        quota exact when many tasks create at once; ``None``: the active-job count alone.
    :param records: the shard's record count, for the log.
    :param poll_interval: seconds between two looks at a full quota, and the longest transient-error backoff.
    :param retry_seconds: how long transient errors are retried before the last one is raised.
    :param log: where the decisions are logged (the task's log).
    :param sleep: waits a number of seconds (tests pass their own).
    :param clock: monotonic seconds (tests pass their own).
    :param on_slot_wait: called each time a look finds no job can be created right now (a wait for a slot).
    :param on_throttled: called each time a call is refused for the service's rate and retried.
    """

    def __init__(
        self,
        hook: SubmitHook,
        key: ShardJobKey,
        request: JobRequest,
        *,
        max_concurrent_jobs: int,
        force: bool = False,
        job_slots_uri: str | None = None,
        records: int | None = None,
        poll_interval: float = 60.0,
        retry_seconds: float = TRANSIENT_RETRY_SECONDS,
        log: Log | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_slot_wait: Callable[[], Any] | None = None,
        on_throttled: Callable[[], Any] | None = None,
    ) -> None:
        self.hook = hook
        self.key = key
        self.request = request
        self.max_concurrent_jobs = max_concurrent_jobs
        self.force = force
        self.job_slots_uri = job_slots_uri
        self.records = records
        self.poll_interval = poll_interval
        self.retry_seconds = retry_seconds
        self.log: Log = log if log is not None else logging.getLogger(__name__)
        self._sleep = sleep
        self._clock = clock
        self._on_slot_wait = on_slot_wait or _nothing
        self._on_throttled = on_throttled or _nothing

    def submit(self, *, wait: bool) -> Submitted | None:
        """The shard's job, found or created; at the quota, ``None`` unless ``wait``, which waits for a slot.

        Each look starts from the beginning: another try or run may have created the shard's job meanwhile.

        :param wait: sleep ``poll_interval`` and look again while no job can be created; otherwise return
            ``None`` at once (a deferrable task then waits without holding a worker slot).
        """
        while True:
            submitted = self.retrying("finding or creating its job", self.find_or_create)
            if submitted is not None:
                return submitted
            self._on_slot_wait()
            if not wait:
                return None
            self._sleep(self.poll_interval)

    def retrying(self, what: str, call: Callable[..., _T], *args: Any) -> _T:
        """``call(*args)``, repeated with backoff while Bedrock or S3 answers with a transient error.

        Throttling and server errors clear within seconds: retrying in the worker is cheaper than a
        deferral round trip, and every call repeated here is idempotent (a create carries its token).
        After ``retry_seconds`` of nothing but such errors the last one is raised, and the task's own
        retries take over.

        :param what: what the call does, for the log.
        :param call: the call.
        """
        backoff = min(self.poll_interval, 1.0)
        give_up_at = self._clock() + self.retry_seconds
        while True:
            try:
                return call(*args)
            except Exception as error:
                if is_throttling(error):
                    self._on_throttled()
                if not is_transient(error) or self._clock() + backoff > give_up_at:
                    raise
                self.log.warning(
                    "Shard %s: %s got %s; trying again in %.1f s",
                    self.key.index,
                    what,
                    describe_error(error),
                    backoff,
                )
                self._sleep(backoff)
                backoff = min(backoff * 2, self.poll_interval)

    def find_or_create(self) -> Submitted | None:
        """One look: reattach to or reuse the shard's job, or create one; ``None`` when none can be created
        right now (the quota is full, every slot is taken, or the service said to wait)."""
        existing = self.hook.find_jobs_by_name(self.key.prefix)
        decision = decide_for_existing(existing, self.key.prefix, force=self.force)
        if decision.job is not None:
            arn = str(decision.job["jobArn"])
            self.log.info(
                "Shard %s: %s job %s (%s, attempt %s) instead of submitting a new one",
                self.key.index,
                "reattaching to" if decision.action == "reattach" else "reusing the output of",
                job_id_from_arn(arn),
                decision.job.get("status"),
                decision.attempt,
            )
            return Submitted(arn, reused=True)

        active = self.hook.active_jobs(self.request.model_id)
        if len(active) >= self.max_concurrent_jobs:
            self.log.info(
                "Shard %s: %s active jobs of %s, at the quota of %s; checking again in %s s",
                self.key.index,
                len(active),
                self.request.model_id,
                self.max_concurrent_jobs,
                self.poll_interval,
            )
            return None
        return self._create(decision.attempt, {str(job.get("jobName")) for job in active})

    def _create(self, attempt: int, active_names: set[str]) -> Submitted | None:
        name = self.key.job_name(attempt)
        slots = self._slots()
        lease: SlotLease | None = None
        if slots is not None:
            lease = slots.acquire(name, active_names)
            if lease is None:
                self.log.info(
                    "Shard %s: all %s job slots of %s are taken; checking again in %s s",
                    self.key.index,
                    self.max_concurrent_jobs,
                    self.request.model_id,
                    self.poll_interval,
                )
                return None
        try:
            token = self.key.client_token(attempt)
            arn = self.hook.create_job(job_name=name, client_request_token=token, **vars(self.request))
        except ClientError as error:
            code = error_code(error)
            if (
                slots is not None
                and lease is not None
                and not is_transient(error)
                and code != "ConflictException"
            ):
                # Transient errors are retried under the same name and slot; a conflict means this job
                # exists (another try created it), so its slot stays taken.
                slots.release(lease)
            if code not in WAIT_AND_LOOK_AGAIN:
                raise
            self.log.info(
                "Shard %s: creating job %s got %s; checking again in %s s",
                self.key.index,
                name,
                code,
                self.poll_interval,
            )
            return None
        if slots is not None and lease is not None:
            slots.confirm(lease, arn)
        self.log.info(
            "Shard %s: submitted job %s (%s, attempt %s, %s records)",
            self.key.index,
            job_id_from_arn(arn),
            name,
            attempt,
            "?" if self.records is None else self.records,
        )
        return Submitted(arn, reused=False)

    def _slots(self) -> JobSlots | None:
        if not self.job_slots_uri:
            return None
        return JobSlots(
            self.hook.s3_client,
            self.job_slots_uri,
            self.request.model_id,
            self.max_concurrent_jobs,
            job_is_active=self._job_is_active,
            # The slots live with the staged input: the input bucket's owner, the output's key.
            expected_bucket_owner=self.request.input_bucket_owner,
            kms_key_id=self.request.output_kms_key_id,
        )

    def _job_is_active(self, job_arn: str) -> bool:
        try:
            return self.hook.get_job(job_arn).get("status") in ACTIVE_STATUSES
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return False
            raise


def _nothing() -> None:
    return None
