"""Airflow sensor that waits for a Bedrock batch inference job created anywhere (by ARN or id) to end.

Pokes (poke or reschedule mode) or defers to the same trigger as the submit operator; same terminal mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.sensors.base_aws import AwsBaseSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout, conf
from airflow.sdk import PokeReturnValue
from botocore.exceptions import ClientError

from bedrock_batch.aws_errors import describe_error, error_code, is_transient
from bedrock_batch.config import as_bool
from bedrock_batch.errors import ConfigError, JobWaitTimeoutError
from bedrock_batch.hooks import BedrockBatchHook
from bedrock_batch.jobs import (
    DEFAULT_WAIT_MARGIN,
    MAX_JOB_TIMEOUT,
    format_progress,
    job_id_from_arn,
    progress_of,
)
from bedrock_batch.links import BedrockBatchJobLink, BedrockBatchOutputLink, persist_job_links
from bedrock_batch.polling import DEFAULT_POLL_INTERVAL, accepted_statuses, job_event, result_from_event
from bedrock_batch.stage_results import JobResult
from bedrock_batch.triggers import BedrockBatchJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

# A job may be queued and run for its whole timeout (up to 168 h): the sensor must not give up sooner.
DEFAULT_SENSOR_TIMEOUT = (MAX_JOB_TIMEOUT + DEFAULT_WAIT_MARGIN).total_seconds()


class BedrockBatchJobSensor(AwsBaseSensor[BedrockBatchHook]):
    """Wait for a batch inference job to end: Completed succeeds, Failed fails with the job's message.

    PartiallyCompleted, Stopped and Expired succeed with ``outcome`` ``salvage`` (collect what exists)
    unless ``strict``. Returns (XCom) ``{"job_arn", "job_id", "job_name", "status", "outcome",
    "total_records", "processed_records", "success_records", "error_records", "input_uri", "output_uri",
    "model_id"}``. The sensor only watches: it never stops the job.

    :param job_arn: ARN or 12-character id of the job. (templated)
    :param strict: treat every ending other than Completed as a failure. (templated)
    :param deferrable: wait in the triggerer instead of a worker.
        (default: the ``[operators] default_deferrable`` setting, False if unset)
    :param poke_interval: seconds between two status checks. (default: 60)
    :param timeout: seconds to wait at most. (default: the longest job timeout, 168 h, plus 6 h)
    :param aws_conn_id: The Airflow connection used for AWS credentials and endpoints.
    :param region_name: AWS region name. If not specified, the connection's is used.
    :param verify: Whether or not to verify SSL certificates.
    :param botocore_config: Configuration dictionary (key-values) for botocore client.
    """

    aws_hook_class = BedrockBatchHook
    template_fields: Sequence[str] = aws_template_fields("job_arn", "strict")
    operator_extra_links = (BedrockBatchJobLink(), BedrockBatchOutputLink())
    ui_color = "#66c3ff"

    def __init__(
        self,
        *,
        job_arn: str,
        strict: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | timedelta = DEFAULT_SENSOR_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.job_arn = job_arn
        self.strict = strict
        self.deferrable = deferrable
        # Per instance, never on the class: sensors with different strictness must not share them. A templated
        # strict is applied once rendered, when the task runs (resolve_arguments).
        self.success_statuses, self.failure_statuses = accepted_statuses(strict is True)
        self._last_progress: tuple[str, int, int] | None = None
        self._links_persisted = False

    def resolve_arguments(self) -> None:
        """Coerce the rendered ``strict`` (it may arrive as a string) and derive the accepted statuses."""
        self.strict = as_bool("strict", self.strict)
        self.success_statuses, self.failure_statuses = accepted_statuses(self.strict)

    def execute(self, context: Context) -> Any:
        """Poke (or reschedule) until the job ends, or defer to the trigger when deferrable."""
        self.resolve_arguments()
        if not self.deferrable:
            return super().execute(context)
        self.defer(
            trigger=BedrockBatchJobTrigger(
                job_arn=self.job_arn,
                poll_interval=self.poke_interval,
                strict=self.strict,
                timeout=self.timeout,
                stop_on_kill=False,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                verify=self.verify,
                botocore_config=self.botocore_config,
            ),
            method_name="execute_complete",
        )
        return None  # not reached: defer() raises

    def poke(self, context: Context) -> PokeReturnValue | bool:
        """Check the job once; done when it ended with an accepted status, raises when it failed."""
        try:
            job = self.hook.get_job(self.job_arn)
        except Exception as error:
            # Throttling or a server error is not an answer about the job: check again next poke.
            if not is_transient(error):
                raise
            self.log.warning("Checking job %s got %s; next poke retries", self.job_arn, describe_error(error))
            return False
        self._persist_links(context, job)
        progress = progress_of(job)
        if progress != self._last_progress:
            self.log.info(format_progress(job_id_from_arn(str(job["jobArn"])), *progress))
            self._last_progress = progress
        status = progress[0]
        if status not in self.success_statuses and status not in self.failure_statuses:
            return False
        # Raises JobFailedError with the job's message for a failure status.
        return PokeReturnValue(is_done=True, xcom_value=result_from_event(job_event(job, strict=self.strict)))

    def execute_complete(self, context: Context, event: Any = None) -> JobResult:
        """Resume from the trigger. An error event raises; it never pokes again (provider defect 3)."""
        try:
            return result_from_event(event)
        except JobWaitTimeoutError as error:
            raise AirflowSensorTimeout(str(error)) from error

    def _persist_links(self, context: Context, job: dict[str, Any]) -> None:
        # Reschedule mode builds a new instance per poke: this only saves repeats within one poke loop.
        if not self._links_persisted:
            persist_job_links(context, self, job, self.hook.conn_region_name, self.hook.conn_partition)
            self._links_persisted = True


FIRST_CHECK_XCOM_KEY = "first_check_at"


class SourcePartitionSensor(AwsBaseSensor[BedrockBatchHook]):
    """Wait until a source partition (an S3 prefix or a local directory) holds at least one object.

    A partition holding only a marker such as ``_SUCCESS`` counts as present: that is how an upstream
    system says "this day had no calls", and prepare turns it into an empty run.

    A missing partition is "not yet"; a location that can never hold one fails the task at once, without
    retry and without waiting for ``timeout``: a ``source_uri`` without a scheme (see
    :func:`~bedrock_batch.preflight.check_location`), a bucket that does not exist, or one that refuses
    access (403, including a bucket of another account than ``expected_bucket_owner``).

    Deferrable: between two checks the task waits in the triggerer, holding no worker slot; ``timeout``
    still applies, counted from the first check.

    :param source_uri: the partition to wait for. (templated)
    :param expected_bucket_owner: 12-digit account id that must own the source bucket (sent as
        ``ExpectedBucketOwner``); ``None``: not checked. (templated)
    :param bucket_owners: bucket name → account id, overriding ``expected_bucket_owner`` per bucket.
        (templated)
    :param deferrable: wait in the triggerer between checks.
        (default: the ``[operators] default_deferrable`` setting, False if unset)
    :param poke_interval: seconds between two checks.
    """

    aws_hook_class = BedrockBatchHook
    template_fields: Sequence[str] = aws_template_fields(
        "source_uri", "expected_bucket_owner", "bucket_owners"
    )
    ui_color = "#fff9c4"

    def __init__(
        self,
        *,
        source_uri: str,
        expected_bucket_owner: str | None = None,
        bucket_owners: Mapping[str, str] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_uri = source_uri
        self.expected_bucket_owner = expected_bucket_owner
        self.bucket_owners = bucket_owners
        self.deferrable = deferrable

    def poke(self, context: Context) -> bool:
        """Whether the partition holds an object. A missing partition is "not yet"; a location that can never
        hold it (no scheme, a bucket that does not exist or refuses access) fails at once, without retry."""
        from bedrock_batch.preflight import bucket_of, bucket_problem, check_location
        from bedrock_batch.storage import Storage, StorageReadError, is_s3_uri

        try:
            source_uri = check_location("source_uri", self.source_uri)
        except ConfigError as error:
            raise AirflowFailException(str(error)) from error
        storage = Storage(
            self.hook.s3_client if is_s3_uri(source_uri) else None,
            expected_bucket_owner=self.expected_bucket_owner,
            bucket_owners=self.bucket_owners,
        )
        try:
            found = next(iter(storage.list_objects(source_uri)), None) is not None
        except StorageReadError as error:
            bucket = bucket_of(source_uri)
            cause = error.__cause__
            if bucket is not None and isinstance(cause, ClientError):
                problem = bucket_problem(bucket, error_code(cause), storage.expected_owner(bucket))
                if problem is not None:
                    raise AirflowFailException(f"source_uri {source_uri}: {problem}") from error
            found = False
        self.log.info("Source partition %s %s", source_uri, "is present" if found else "not there yet")
        return found

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        return self.execute_complete(context)

    def execute_complete(self, context: Context, event: Any = None) -> None:
        """Check once; if the partition is not there yet, defer for ``poke_interval`` and check again."""
        if self.poke(context):
            return
        # The first check's time survives deferrals in an XCom (the task's start date is reset on resume).
        ti = context["ti"]
        first = ti.xcom_pull(task_ids=self.task_id, key=FIRST_CHECK_XCOM_KEY, map_indexes=ti.map_index)
        now = timezone_now()
        if first is None:
            ti.xcom_push(key=FIRST_CHECK_XCOM_KEY, value=now.isoformat())
        elif (now - datetime.fromisoformat(first)).total_seconds() > self.timeout:
            raise AirflowSensorTimeout(
                f"source partition {self.source_uri} did not appear in {self.timeout} s"
            )
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        self.defer(
            trigger=TimeDeltaTrigger(timedelta(seconds=self.poke_interval)), method_name="execute_complete"
        )


def timezone_now() -> Any:
    from airflow.sdk import timezone

    return timezone.utcnow()
