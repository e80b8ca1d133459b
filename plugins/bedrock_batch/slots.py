"""Job slots: an exact per-model limit on concurrent jobs across workers, kept in S3.

Counting the active jobs before creating one is not enough when submit tasks start at the same moment:
each sees a free slot and creates its job. The service's own quota still holds (it refuses the extra
job), but a limit *below* the account's quota would be overshot. A slot makes the count-then-create
step exclusive: before creating its job, a task claims one of ``capacity`` small objects under
``<slots_uri>/<model>/`` with a conditional write (``If-None-Match: *`` for a new object, ``If-Match``
for taking over a free one). S3 lets exactly one of two racing writers win.

A slot object names the job created under it, and its ARN once the create call returned. The slot is
busy while that job is active (Submitted, Validating, Scheduled or InProgress) or, before its ARN is
written, while the claim is fresh (the create call is in flight). It is free again once the job has
ended, its claim was released after a failed create, or a claim without an ARN grew older than
``claim_ttl`` (a task killed between claiming and creating; its job, if it exists, is still seen by name
in the service's list of active jobs). Nobody has to clean up after a job: its end frees its slot.

Every submit task that shares a model's limit must use the same ``slots_uri``. Jobs created outside
Airflow are not in any slot; the active-job count that runs before claiming covers them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import orjson
from botocore.exceptions import ClientError

from bedrock_batch.aws_errors import error_code
from bedrock_batch.errors import ConfigError
from bedrock_batch.models import base_model_id
from bedrock_batch.storage import is_s3_uri, join_uri, split_s3_uri

log = logging.getLogger(__name__)

# A claim whose job never appeared (the claiming task died before or during its create call) blocks
# the slot for this long. A create call takes seconds; listing a new job, a few more.
DEFAULT_CLAIM_TTL_SECONDS = 600.0

# S3 answers a lost conditional write with 412 PreconditionFailed, or 409 ConditionalRequestConflict
# when two writes to the same key overlap.
_LOST_RACE_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})

_NOT_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SlotLease:
    """A claimed slot: the object's key and the ETag of the claim written into it."""

    bucket: str
    key: str
    etag: str
    job_name: str


class JobSlots:
    """``capacity`` slots for the jobs of one model, as objects under ``<slots_uri>/<model>/``.

    :param s3: a boto3 S3 client.
    :param slots_uri: ``s3://`` prefix shared by every submit task that shares the limit.
    :param model_id: model id, inference-profile id or ARN; its base model names the slot folder, so a
        cross-region profile and its model share slots, as they share the service's quota.
    :param capacity: how many jobs may be active at once.
    :param claim_ttl: seconds after which a claim whose job never appeared is taken over.
    :param job_is_active: whether the job with this ARN is still active, asked of the service before a
        slot whose job is not in ``active_job_names`` is taken over (a listing can be a moment old).
        Without it, the listing alone decides.
    :param clock: current time in seconds (tests pass their own).
    :param expected_bucket_owner: 12-digit account id that must own the slots' bucket (sent as
        ``ExpectedBucketOwner`` on every read and write); ``None``: not checked.
    :param kms_key_id: KMS key the slot objects are written with (SSE-KMS); ``None``: the bucket's default.
    """

    def __init__(
        self,
        s3: Any,
        slots_uri: str,
        model_id: str,
        capacity: int,
        *,
        claim_ttl: float = DEFAULT_CLAIM_TTL_SECONDS,
        job_is_active: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
        expected_bucket_owner: str | None = None,
        kms_key_id: str | None = None,
    ) -> None:
        if not is_s3_uri(slots_uri):
            raise ConfigError(f"job slots need an s3:// prefix (conditional writes), got {slots_uri!r}")
        if capacity < 1:
            raise ConfigError(f"job slot capacity must be at least 1, got {capacity}")
        folder = _NOT_KEY_CHARS.sub("_", base_model_id(model_id)).strip("_") or "model"
        self.bucket, self.prefix = split_s3_uri(join_uri(slots_uri, folder) + "/")
        self.s3 = s3
        self.capacity = capacity
        self.claim_ttl = claim_ttl
        self.job_is_active = job_is_active
        self.clock = clock
        self._owner = {"ExpectedBucketOwner": expected_bucket_owner} if expected_bucket_owner else {}
        self._sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else {}

    def key(self, number: int) -> str:
        """The object key of slot ``number`` (0-based)."""
        return f"{self.prefix}slot-{number:03d}.json"

    def acquire(self, job_name: str, active_job_names: Collection[str]) -> SlotLease | None:
        """Claim a slot for ``job_name``, or return ``None`` when every slot is busy.

        A slot that already names ``job_name`` (a retried task) is returned as it is.

        :param job_name: the name of the job about to be created.
        :param active_job_names: names of the model's active jobs, as the service lists them now.
        """
        states = [self._read(number) for number in range(self.capacity)]
        for number, state in enumerate(states):
            if state is not None and state[0].get("job_name") == job_name and not state[0].get("released"):
                return SlotLease(self.bucket, self.key(number), state[1], job_name)
        for number, state in enumerate(states):
            if state is None:
                lease = self._claim(number, None, job_name)
            elif self._is_free(state[0], active_job_names):
                lease = self._claim(number, state[1], job_name)
            else:
                continue
            if lease is not None:
                return lease
        return None

    def confirm(self, lease: SlotLease, job_arn: str) -> SlotLease:
        """Record the created job's ARN in its slot: from now on the job's own status frees the slot."""
        body = orjson.dumps({"job_name": lease.job_name, "job_arn": job_arn, "claimed_at": self.clock()})
        try:
            response = self.s3.put_object(
                Bucket=lease.bucket, Key=lease.key, Body=body, IfMatch=lease.etag, **self._owner, **self._sse
            )
        except ClientError as error:
            # Taken over after claim_ttl: the job is active, so the new holder's check sees it by name.
            if error_code(error) not in _LOST_RACE_CODES | _NOT_FOUND_CODES:
                raise
            log.warning("Slot %s changed hands before job %s was recorded in it", lease.key, lease.job_name)
            return lease
        return SlotLease(lease.bucket, lease.key, str(response["ETag"]), lease.job_name)

    def release(self, lease: SlotLease) -> None:
        """Give a slot back after its job could not be created (a no-op if someone took it over)."""
        body = orjson.dumps({"job_name": lease.job_name, "released": True, "claimed_at": self.clock()})
        try:
            self.s3.put_object(
                Bucket=lease.bucket, Key=lease.key, Body=body, IfMatch=lease.etag, **self._owner, **self._sse
            )
        except ClientError as error:
            if error_code(error) not in _LOST_RACE_CODES | _NOT_FOUND_CODES:
                raise

    def held(self, active_job_names: Collection[str]) -> list[str]:
        """The job names of the slots busy now, as :meth:`acquire` would judge them from the listing alone.

        Reads the ``capacity`` slot objects and asks the service nothing: the listing decides.

        :param active_job_names: names of the model's active jobs, as the service lists them now.
        """
        busy = []
        for number in range(self.capacity):
            state = self._read(number)
            if state is None:
                continue
            claim = state[0]
            if claim.get("job_name") in active_job_names:
                busy.append(str(claim["job_name"]))
            elif not claim.get("released") and not claim.get("job_arn") and not self._is_free(claim, ()):
                busy.append(str(claim.get("job_name", "")))  # a create call in flight
        return busy

    # --- internals ------------------------------------------------------------------------------------

    def _is_free(self, claim: dict[str, Any], active_job_names: Collection[str]) -> bool:
        if claim.get("job_name") in active_job_names:
            return False
        if claim.get("released"):
            return True
        job_arn = claim.get("job_arn")
        if isinstance(job_arn, str) and job_arn:
            return self.job_is_active is None or not self.job_is_active(job_arn)
        claimed_at = claim.get("claimed_at")
        if not isinstance(claimed_at, int | float):
            return True  # not a claim this code wrote: treat as free rather than block forever
        return self.clock() - claimed_at >= self.claim_ttl

    def _read(self, number: int) -> tuple[dict[str, Any], str] | None:
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self.key(number), **self._owner)
        except ClientError as error:
            if error_code(error) in _NOT_FOUND_CODES:
                return None
            raise
        with response["Body"] as body:
            raw = body.read()
        try:
            claim = orjson.loads(raw)
        except orjson.JSONDecodeError:
            claim = {}
        return (claim if isinstance(claim, dict) else {}), str(response["ETag"])

    def _claim(self, number: int, etag: str | None, job_name: str) -> SlotLease | None:
        body = orjson.dumps({"job_name": job_name, "claimed_at": self.clock()})
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        try:
            response = self.s3.put_object(
                Bucket=self.bucket, Key=self.key(number), Body=body, **condition, **self._owner, **self._sse
            )
        except ClientError as error:
            if error_code(error) in _LOST_RACE_CODES | _NOT_FOUND_CODES:
                log.debug("Slot %d of %s was taken first", number, self.prefix)
                return None
            raise
        return SlotLease(self.bucket, self.key(number), str(response["ETag"]), job_name)
