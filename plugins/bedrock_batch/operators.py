"""Airflow operators for the pipeline's stages: one operator per stage, thin adapters over the pure modules.

Heavy libraries (pandas, pyarrow) are imported inside the stages that need them, never at module level.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import conf
from botocore.exceptions import ClientError

from bedrock_batch.config import QuotaConfig, QuotaSettings
from bedrock_batch.errors import ConfigError
from bedrock_batch.hooks import (
    BedrockBatchHook,
    describe_error,
    error_code,
    is_transient,
)
from bedrock_batch.jobs import (
    DEFAULT_WAIT_MARGIN,
    TERMINAL_STATUSES,
    ShardJobKey,
    decide_for_existing,
    format_progress,
    job_id_from_arn,
    progress_of,
    run_key_for,
    tag_value,
    wait_deadline,
)
from bedrock_batch.links import BedrockBatchJobLink, BedrockBatchOutputLink, persist_job_links
from bedrock_batch.models import INVOCATION_TYPES
from bedrock_batch.triggers import (
    DEFAULT_POLL_INTERVAL,
    BedrockBatchJobTrigger,
    JobWaitTimeoutError,
    job_event,
    result_from_event,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

REQUIRED_SHARD_KEYS = ("shard", "input_uri", "output_uri", "fingerprint")
# Survives the deferral: resume-method kwargs are replaced by the event in dag.test(), an XCom is not.
SUBMISSION_XCOM_KEY = "bedrock_batch_submission"


# ========================================================================================================
# Stages 4-5: submit one job per shard and wait for it
# ========================================================================================================


class BedrockBatchSubmitOperator(AwsBaseOperator[BedrockBatchHook]):
    """Submit one Bedrock batch inference job for one shard and (by default) wait until it ends.

    Map it over the shards of a run: ``BedrockBatchSubmitOperator.partial(...).expand(shard=shards)``.
    The job name and ``clientRequestToken`` derive from the dag_id, the run's logical date (its run_id
    when it has none), the shard's fingerprint and the model, so a retried or cleared task, or a second
    run of the same date over the same data, reattaches to the running job or reuses the finished one
    instead of paying twice. At most ``max_concurrent_jobs`` jobs of the model are Submitted, Validating,
    Scheduled or InProgress in the account at once (jobs created outside Airflow count too); at the quota
    the task waits for a slot without holding a worker slot when deferrable.

    Returns (XCom) ``{"shard", "job_arn", "job_id", "job_name", "status", "outcome", "records",
    "total_records", "processed_records", "success_records", "error_records", "input_uri", "output_uri",
    "model_id", "reused"}`` where ``outcome`` is ``success`` or ``salvage`` (``None`` when not waiting)
    and ``output_uri`` is ``<output>/<jobId>/``. A Failed job raises
    :class:`~bedrock_batch.errors.JobFailedError` with the job's message.

    :param shard: the shard descriptor ``{"shard": 1, "input_uri": "s3://.../shard-0001/", "output_uri":
        "s3://.../output/", "records": 150, "bytes": 12345, "fingerprint": "<sha256 hex>"}``. (templated)
    :param model_id: model id, inference-profile id or ARN. (templated)
    :param role_arn: service role Bedrock assumes to read the input and write the output. (templated)
    :param invocation_type: ``InvokeModel`` or ``Converse``. (templated)
    :param timeout_hours: the job's ``timeoutDurationInHours`` (24-168); ``None`` keeps the service's.
    :param tags: extra job tags; ``dag_id``, ``run_id`` and ``shard`` are added automatically. (templated)
    :param vpc_config: ``{"subnetIds": [...], "securityGroupIds": [...]}``. (templated)
    :param output_kms_key_id: KMS key that encrypts the output. (templated)
    :param input_bucket_owner: account id that must own the input bucket. (templated)
    :param output_bucket_owner: account id that must own the output bucket. (templated)
    :param force: submit a new attempt even if a job for this shard exists (every run of the task with
        ``force`` submits one, so use it for a deliberate resubmission only).
    :param strict: treat PartiallyCompleted, Stopped and Expired as failures instead of salvaging them.
    :param wait_for_completion: wait until the job ends; otherwise return right after submitting.
    :param poll_interval: seconds between two status checks, and between two checks for a free slot.
    :param quotas: a :class:`~bedrock_batch.config.QuotaConfig`, a
        :class:`~bedrock_batch.config.QuotaSettings`, or a mapping for
        :meth:`QuotaSettings.from_mapping <bedrock_batch.config.QuotaSettings.from_mapping>`; its
        ``max_concurrent_jobs`` is the gate. ``None`` uses the service default.
    :param deferrable: wait in the triggerer instead of a worker (recommended: ``True``).
        (default: the ``[operators] default_deferrable`` setting, False if unset)
    :param aws_conn_id: The Airflow connection used for AWS credentials and endpoints.
    :param region_name: AWS region name. If not specified, the connection's is used.
    :param verify: Whether or not to verify SSL certificates.
    :param botocore_config: Configuration dictionary (key-values) for botocore client.
    """

    aws_hook_class = BedrockBatchHook
    template_fields: Sequence[str] = aws_template_fields(
        "shard",
        "model_id",
        "role_arn",
        "invocation_type",
        "tags",
        "vpc_config",
        "output_kms_key_id",
        "input_bucket_owner",
        "output_bucket_owner",
    )
    template_fields_renderers = {"shard": "json", "tags": "json", "vpc_config": "json"}
    operator_extra_links = (BedrockBatchJobLink(), BedrockBatchOutputLink())
    ui_color = "#66c3ff"

    def __init__(
        self,
        *,
        shard: Mapping[str, Any],
        model_id: str,
        role_arn: str,
        invocation_type: str = "InvokeModel",
        timeout_hours: int | None = None,
        tags: Mapping[str, str] | None = None,
        vpc_config: Mapping[str, Sequence[str]] | None = None,
        output_kms_key_id: str | None = None,
        input_bucket_owner: str | None = None,
        output_bucket_owner: str | None = None,
        force: bool = False,
        strict: bool = False,
        wait_for_completion: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        quotas: QuotaConfig | QuotaSettings | Mapping[str, Any] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if timeout_hours is not None and not 24 <= timeout_hours <= 168:
            raise ConfigError(
                f"timeout_hours must be between 24 and 168 (service limits), got {timeout_hours}"
            )
        if poll_interval <= 0:
            raise ConfigError(f"poll_interval must be positive, got {poll_interval}")
        self.shard = shard
        self.model_id = model_id
        self.role_arn = role_arn
        self.invocation_type = invocation_type
        self.timeout_hours = timeout_hours
        self.tags = tags
        self.vpc_config = vpc_config
        self.output_kms_key_id = output_kms_key_id
        self.input_bucket_owner = input_bucket_owner
        self.output_bucket_owner = output_bucket_owner
        self.force = force
        self.strict = strict
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.quotas = quotas
        self.deferrable = deferrable
        self.job_arn: str | None = None

    # --- identity and configuration -------------------------------------------------------------------

    def _shard_job(self, context: Context) -> ShardJobKey:
        shard = self.shard
        missing = [key for key in REQUIRED_SHARD_KEYS if not isinstance(shard, Mapping) or key not in shard]
        if missing:
            raise ConfigError(
                f"shard descriptor lacks {missing}; pass the split stage's shard dicts "
                f"(keys {list(REQUIRED_SHARD_KEYS)}), e.g. .expand(shard=split.output)"
            )
        if self.invocation_type not in INVOCATION_TYPES:
            raise ConfigError(
                f"invocation_type must be one of {INVOCATION_TYPES}, got {self.invocation_type!r}"
            )
        dag_run = context["dag_run"]
        run_key = run_key_for(getattr(dag_run, "logical_date", None), str(context["run_id"]))
        return ShardJobKey(
            self.dag_id, run_key, str(shard["fingerprint"]), int(shard["shard"]), self.model_id
        )

    def _max_concurrent_jobs(self) -> int:
        quotas = self.quotas
        if quotas is None:
            return QuotaConfig().max_concurrent_jobs
        if isinstance(quotas, QuotaConfig):
            return quotas.max_concurrent_jobs
        if isinstance(quotas, QuotaSettings):
            return quotas.for_model(self.model_id).max_concurrent_jobs
        return QuotaSettings.from_mapping(quotas).for_model(self.model_id).max_concurrent_jobs

    def _tags(self, context: Context, shard_job: ShardJobKey) -> dict[str, str]:
        automatic = {"dag_id": self.dag_id, "run_id": str(context["run_id"]), "shard": str(shard_job.index)}
        return {tag_value(k): tag_value(v) for k, v in {**(self.tags or {}), **automatic}.items()}

    # --- submit ---------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any] | None:
        """Find or create the shard's job, then wait for it unless ``wait_for_completion`` is off."""
        backoff = min(self.poll_interval, 1.0)
        while True:
            try:
                submitted = self._find_or_create(context)
            except Exception as error:
                if not is_transient(error):
                    raise
                # Throttling and server errors clear within seconds: retry in the worker, backing off,
                # rather than paying a deferral round trip. Every call repeated here is idempotent.
                self.log.warning(
                    "Shard %s: Bedrock answered %s; trying again in %.1f s",
                    self.shard.get("shard"),
                    describe_error(error),
                    backoff,
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, self.poll_interval)
                continue
            if submitted is not None:
                return self._after_submit(context, *submitted)
            # At the concurrency quota: wait for a slot, then look again from the start (another try
            # or run may have created the shard's job meanwhile). Deferrable: no worker slot is held.
            if self.deferrable:
                self.defer(
                    trigger=_slot_wait_trigger(self.poll_interval),
                    method_name="execute_after_slot_wait",
                )
            time.sleep(self.poll_interval)

    def execute_after_slot_wait(self, context: Context, event: Any = None) -> dict[str, Any] | None:
        """Resume after waiting for a free slot: check again from the start."""
        return self.execute(context)

    def _find_or_create(self, context: Context) -> tuple[str, bool] | None:
        """(job ARN, reused) of the shard's job, or ``None`` when no job can be created right now."""
        shard_job = self._shard_job(context)
        existing = self.hook.find_jobs_by_name(shard_job.prefix)
        decision = decide_for_existing(existing, shard_job.prefix, force=self.force)
        if decision.job is not None:
            arn = str(decision.job["jobArn"])
            self.log.info(
                "Shard %s: %s job %s (%s, attempt %s) instead of submitting a new one",
                shard_job.index,
                "reattaching to" if decision.action == "reattach" else "reusing the output of",
                job_id_from_arn(arn),
                decision.job.get("status"),
                decision.attempt,
            )
            return arn, True

        quota = self._max_concurrent_jobs()
        active = self.hook.count_active_jobs(self.model_id)
        if active >= quota:
            self.log.info(
                "Shard %s: %s active jobs of %s, at the quota of %s; checking again in %s s",
                shard_job.index,
                active,
                self.model_id,
                quota,
                self.poll_interval,
            )
            return None

        name = shard_job.job_name(decision.attempt)
        try:
            arn = self.hook.create_job(
                job_name=name,
                role_arn=self.role_arn,
                model_id=self.model_id,
                input_s3_uri=str(self.shard["input_uri"]),
                output_s3_uri=str(self.shard["output_uri"]),
                client_request_token=shard_job.client_token(decision.attempt),
                invocation_type=self.invocation_type,
                timeout_hours=self.timeout_hours,
                tags=self._tags(context, shard_job),
                vpc_config=self.vpc_config,
                output_kms_key_id=self.output_kms_key_id,
                input_bucket_owner=self.input_bucket_owner,
                output_bucket_owner=self.output_bucket_owner,
            )
        except ClientError as error:
            code = error_code(error)
            # The service's own count says the quota is full (jobs our count could not see yet), or a
            # concurrent try created this name first: both are answered by waiting and looking again.
            if code not in ("ServiceQuotaExceededException", "ConflictException"):
                raise
            self.log.info(
                "Shard %s: creating job %s got %s; checking again in %s s",
                shard_job.index,
                name,
                code,
                self.poll_interval,
            )
            return None
        self.log.info(
            "Shard %s: submitted job %s (%s, attempt %s, %s records)",
            shard_job.index,
            job_id_from_arn(arn),
            name,
            decision.attempt,
            self.shard.get("records", "?"),
        )
        return arn, False

    def _after_submit(self, context: Context, job_arn: str, reused: bool) -> dict[str, Any] | None:
        self.job_arn = job_arn
        job = self.hook.get_job(job_arn)
        persist_job_links(context, self, job, self.hook.conn_region_name, self.hook.conn_partition)
        status, processed, total = progress_of(job)
        self.log.info(format_progress(job_id_from_arn(job_arn), status, processed, total))
        if status in TERMINAL_STATUSES or not self.wait_for_completion:
            return self._result(job_event(job, strict=self.strict), reused)
        if self.deferrable:
            context["ti"].xcom_push(key=SUBMISSION_XCOM_KEY, value={"job_arn": job_arn, "reused": reused})
            self.defer(
                trigger=BedrockBatchJobTrigger(
                    job_arn=job_arn,
                    poll_interval=self.poll_interval,
                    strict=self.strict,
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
            )
        return self._result(self._poll_until_done(job), reused)

    # --- wait -----------------------------------------------------------------------------------------

    def _poll_until_done(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """Non-deferrable wait: the trigger's loop, run in the worker."""
        job_arn = str(job["jobArn"])
        job_id = job_id_from_arn(job_arn)
        deadline = wait_deadline(job, DEFAULT_WAIT_MARGIN)
        last = progress_of(job)
        while job.get("status") not in TERMINAL_STATUSES:
            if time.time() >= deadline.timestamp():
                self._stop_job("wait deadline passed")
                raise JobWaitTimeoutError(f"job {job_id} still {job.get('status')} at {deadline.isoformat()}")
            time.sleep(self.poll_interval)
            try:
                job = self.hook.get_job(job_arn)
            except Exception as error:
                if not is_transient(error):
                    raise
                self.log.warning("Polling job %s got %s; retrying", job_id, describe_error(error))
                continue
            if (progress := progress_of(job)) != last:
                self.log.info(format_progress(job_id, *progress))
                last = progress
        return job_event(job, strict=self.strict)

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume from :class:`~bedrock_batch.triggers.BedrockBatchJobTrigger`; an error event raises."""
        submission = context["ti"].xcom_pull(
            task_ids=self.task_id, key=SUBMISSION_XCOM_KEY, map_indexes=context["ti"].map_index
        )
        reused = bool(submission and submission.get("reused"))
        try:
            return self._result(event, reused)
        except JobWaitTimeoutError:
            self.job_arn = event.get("job_arn") if isinstance(event, Mapping) else None
            self._stop_job("wait deadline passed")
            raise

    def _result(self, event: Any, reused: bool) -> dict[str, Any]:
        metadata = result_from_event(event)
        self.log.info(
            "Shard %s: job %s %s, outcome %s",
            self.shard.get("shard"),
            metadata["job_id"],
            metadata["status"],
            metadata["outcome"] or "not waited for",
        )
        return {
            "shard": self.shard.get("shard"),
            "records": self.shard.get("records"),
            "reused": reused,
            **metadata,
        }

    # --- kill and links -------------------------------------------------------------------------------

    def _stop_job(self, why: str) -> None:
        if not self.job_arn:
            return
        if self.hook.stop_job(self.job_arn):
            self.log.info("Requested stop of job %s (%s)", job_id_from_arn(self.job_arn), why)

    def on_kill(self) -> None:
        """Stop the job when the task is killed or times out; stopping an ended job is a no-op."""
        self._stop_job("task killed")


def _slot_wait_trigger(seconds: float) -> Any:
    # Imported here: the standard provider's triggers are only needed by a task that actually waits.
    from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

    return TimeDeltaTrigger(timedelta(seconds=seconds))
