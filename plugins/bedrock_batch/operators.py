"""Airflow operators for the pipeline's stages: one operator per stage, thin adapters over the pure modules.

Heavy libraries (pandas, pyarrow) are imported inside the stages that need them, never at module level.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import conf
from botocore.exceptions import ClientError

from bedrock_batch.config import QuotaConfig, QuotaSettings
from bedrock_batch.errors import ConfigError, JobFailedError
from bedrock_batch.hooks import (
    BedrockBatchHook,
    describe_error,
    error_code,
    is_transient,
)
from bedrock_batch.jobs import (
    ACTIVE_STATUSES,
    DEFAULT_WAIT_MARGIN,
    TERMINAL_STATUSES,
    ShardJobKey,
    abandoned_by_user,
    check_job_s3_uri,
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
from bedrock_batch.task_state import read_task_state
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

# How long the submit task keeps retrying throttling and server errors before failing its try.
TRANSIENT_RETRY_SECONDS = 900.0

_T = TypeVar("_T")


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
        "s3://.../output/", "records": 150, "bytes": 12345, "fingerprint": "<sha256 hex>", "round": 1}``;
        ``round`` (default 1) is 2 for the shards of a retry round. (templated)
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
    :param job_slots_uri: ``s3://`` prefix of the job slots (see :mod:`bedrock_batch.slots`) that make
        ``max_concurrent_jobs`` exact when many submit tasks start at once; every task that shares the
        model's limit must use the same prefix. Without it the active jobs are counted before each create,
        which tasks starting at the same instant can overshoot (the service's own quota still holds).
        (templated)
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
        "job_slots_uri",
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
        job_slots_uri: str | None = None,
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
        self.job_slots_uri = job_slots_uri
        self.quotas = quotas
        self.deferrable = deferrable
        self.job_arn: str | None = None
        self._task_instance: Any = None

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
            self.dag_id,
            run_key,
            str(shard["fingerprint"]),
            int(shard["shard"]),
            self.model_id,
            round_number=int(shard.get("round") or 1),
        )

    def _max_concurrent_jobs(self) -> int:
        return _quota_config(self.quotas, self.model_id).max_concurrent_jobs

    def _tags(self, context: Context, shard_job: ShardJobKey) -> dict[str, str]:
        automatic = {
            "dag_id": self.dag_id,
            "run_id": str(context["run_id"]),
            "shard": str(shard_job.index),
            "round": str(shard_job.round_number),
        }
        return {tag_value(k): tag_value(v) for k, v in {**(self.tags or {}), **automatic}.items()}

    # --- submit ---------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any] | None:
        """Find or create the shard's job, then wait for it unless ``wait_for_completion`` is off."""
        self._task_instance = context["ti"]
        with self._job_stopped_on_timeout():
            while True:
                submitted = self._retrying_transient(
                    "finding or creating its job", self._find_or_create, context
                )
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

    def _retrying_transient(self, what: str, call: Callable[..., _T], *args: Any) -> _T:
        """``call(*args)``, repeated with backoff while Bedrock or S3 answers with a transient error.

        Throttling and server errors clear within seconds: retrying in the worker is cheaper than a
        deferral round trip, and every call repeated here is idempotent (a create carries its token).
        After :data:`TRANSIENT_RETRY_SECONDS` of nothing but such errors the last one is raised, and the
        task's own retries take over.
        """
        backoff = min(self.poll_interval, 1.0)
        give_up_at = time.monotonic() + TRANSIENT_RETRY_SECONDS
        while True:
            try:
                return call(*args)
            except Exception as error:
                if not is_transient(error) or time.monotonic() + backoff > give_up_at:
                    raise
                self.log.warning(
                    "Shard %s: %s got %s; trying again in %.1f s",
                    self.shard.get("shard"),
                    what,
                    describe_error(error),
                    backoff,
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, self.poll_interval)

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
        active = self.hook.active_jobs(self.model_id)
        if len(active) >= quota:
            self.log.info(
                "Shard %s: %s active jobs of %s, at the quota of %s; checking again in %s s",
                shard_job.index,
                len(active),
                self.model_id,
                quota,
                self.poll_interval,
            )
            return None

        name = shard_job.job_name(decision.attempt)
        slots = lease = None
        if self.job_slots_uri:
            from bedrock_batch.slots import JobSlots

            slots = JobSlots(
                self.hook.s3_client,
                self.job_slots_uri,
                self.model_id,
                quota,
                job_is_active=self._job_is_active,
                # The slots live with the staged input: the input bucket's owner, the output's key.
                expected_bucket_owner=self.input_bucket_owner,
                kms_key_id=self.output_kms_key_id,
            )
            lease = slots.acquire(name, {str(job.get("jobName")) for job in active})
            if lease is None:
                self.log.info(
                    "Shard %s: all %s job slots of %s are taken; checking again in %s s",
                    shard_job.index,
                    quota,
                    self.model_id,
                    self.poll_interval,
                )
                return None
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
            if (
                slots is not None
                and lease is not None
                and not is_transient(error)
                and code != "ConflictException"
            ):
                # Transient errors are retried under the same name and slot; a conflict means this job
                # exists (another try created it), so its slot stays taken.
                slots.release(lease)
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
        if slots is not None and lease is not None:
            slots.confirm(lease, arn)
        self.log.info(
            "Shard %s: submitted job %s (%s, attempt %s, %s records)",
            shard_job.index,
            job_id_from_arn(arn),
            name,
            decision.attempt,
            self.shard.get("records", "?"),
        )
        return arn, False

    def _job_is_active(self, job_arn: str) -> bool:
        try:
            return self.hook.get_job(job_arn).get("status") in ACTIVE_STATUSES
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return False
            raise

    def _after_submit(self, context: Context, job_arn: str, reused: bool) -> dict[str, Any] | None:
        self.job_arn = job_arn
        job = self._retrying_transient("reading its job's status", self.hook.get_job, job_arn)
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
                timeout=self._execution_time_left(context),
            )
        return self._result(self._poll_until_done(job), reused)

    def _execution_time_left(self, context: Context) -> timedelta | None:
        """What is left of ``execution_timeout`` since this try started, as the job wait's deferral timeout.

        Airflow 3.3 does not apply ``execution_timeout`` to a deferral (its Execution API stores only the
        deferral's own timeout), so without this a deferred task would wait past it. When the deferral times
        out, Airflow resumes the task to fail it and :meth:`resume_execution` stops the job.
        """
        if self.execution_timeout is None:
            return None
        started = getattr(context["ti"], "start_date", None)
        if started is None:
            return self.execution_timeout
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        return max(self.execution_timeout - (datetime.now(UTC) - started), timedelta(seconds=1))

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
        submission = self._submission(context)
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

    def _submission(self, context: Context) -> Mapping[str, Any] | None:
        """The job this try deferred to wait for (pushed before deferring), or ``None``."""
        ti = context["ti"]
        value = ti.xcom_pull(task_ids=self.task_id, key=SUBMISSION_XCOM_KEY, map_indexes=ti.map_index)
        return value if isinstance(value, Mapping) else None

    # --- timeouts, kills and abandoned jobs -----------------------------------------------------------
    #
    # A job is stopped only when the user gives it up: the task is marked failed, or its execution_timeout
    # passes. A clear, a retry, a worker or triggerer crash or restart, a worker's graceful shutdown (SIGTERM)
    # leave the job running, and the task's next try reattaches to it (its name and token are deterministic).

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume after a deferral; when Airflow resumes the task to fail it on ``execution_timeout`` (it does
        so without calling ``on_kill``), stop the job it was waiting for first."""
        from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason

        self._task_instance = context["ti"]
        timed_out = (
            next_method == TRIGGER_FAIL_REPR
            and (next_kwargs or {}).get("error") == TriggerFailureReason.TRIGGER_TIMEOUT
        )
        if timed_out:
            submission = self._submission(context)
            self.job_arn = str(submission["job_arn"]) if submission and submission.get("job_arn") else None
            if self.job_arn:
                self._fail_after_timeout()
        return super().resume_execution(next_method, next_kwargs, context)

    @contextlib.contextmanager
    def _job_stopped_on_timeout(self) -> Iterator[None]:
        """Stop the submitted job when ``execution_timeout`` passes while the task runs in its worker."""
        from airflow.providers.common.compat.sdk import AirflowTaskTimeout

        try:
            yield
        except AirflowTaskTimeout:
            if not self.job_arn:
                raise  # no job yet: an ordinary timeout, the task's retries apply
            self._fail_after_timeout()

    def _fail_after_timeout(self) -> NoReturn:
        from airflow.providers.common.compat.sdk import AirflowFailException

        job_id = job_id_from_arn(str(self.job_arn))
        self._stop_job("execution_timeout reached")
        # Not retried: a retry would find the job stopped and submit the shard again, paying for it twice.
        raise AirflowFailException(
            f"execution_timeout ({self.execution_timeout}) reached while waiting for job {job_id} of shard "
            f"{self.shard.get('shard')}: the job was stopped and the task fails without retrying. Clear the "
            "task to submit the shard again, or raise execution_timeout."
        )

    def _stop_job(self, why: str) -> None:
        if not self.job_arn:
            return
        if self.hook.stop_job(self.job_arn):
            self.log.info("Requested stop of job %s (%s)", job_id_from_arn(self.job_arn), why)

    def on_kill(self) -> None:
        """The task process is being terminated: stop the job only if the user marked the task failed.

        Airflow sends SIGTERM when the task was marked failed or cleared while running, and when its worker
        shuts down; only the first gives the job up. The state is read from Airflow; when it cannot be read
        the job keeps running (a running job can still be stopped by hand, a stopped one is paid twice).
        """
        if not self.job_arn:
            return
        state = read_task_state(self._task_instance)
        if abandoned_by_user(state):
            self._stop_job("the task was marked failed")
            return
        self.log.info(
            "Task interrupted (state %s); job %s keeps running and the next try reattaches to it. Mark the "
            "task failed to stop the job.",
            state or "unknown",
            job_id_from_arn(self.job_arn),
        )


def _slot_wait_trigger(seconds: float) -> Any:
    # Imported here: the standard provider's triggers are only needed by a task that actually waits.
    from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

    return TimeDeltaTrigger(timedelta(seconds=seconds))


# ========================================================================================================
# Stages 1-3: prepare, split and upload in one streaming pass (or split and upload existing records)
# ========================================================================================================

# The shard lists are the return values (Airflow maps only over those); run metadata goes under these keys.
RUN_XCOM_KEY = "run"
ON_DEMAND_XCOM_KEY = "on_demand_uris"
ROUND_XCOM_KEY = "round"
RETRY_ON_DEMAND_XCOM_KEY = "retry_on_demand"
# Objects that mark a partition as present without being data (Spark/Hive/Glue conventions).
MARKER_PREFIXES = ("_", ".")


def _quota_config(
    quotas: QuotaConfig | QuotaSettings | Mapping[str, Any] | None, model_id: str
) -> QuotaConfig:
    if quotas is None:
        return QuotaConfig()
    if isinstance(quotas, QuotaConfig):
        return quotas
    if isinstance(quotas, QuotaSettings):
        return quotas.for_model(model_id)
    return QuotaSettings.from_mapping(quotas).for_model(model_id)


def run_prefix_for(staging_uri: str, dag_id: str, ds: str) -> str:
    """Where one run's staged files live: ``<staging>/<dag_id>/<ds>`` (a rerun of a date reuses it).

    Not ``ds=<ds>``: Bedrock refuses job S3 URIs with ``=`` in them.
    """
    from bedrock_batch.storage import is_s3_uri, join_uri

    prefix = join_uri(staging_uri, dag_id, ds)
    if is_s3_uri(prefix):
        check_job_s3_uri(prefix + "/", "staging prefix")
    return prefix


def shard_descriptors(manifest: Any, output_prefix: str, round_number: int = 1) -> list[dict[str, Any]]:
    """The submit stage's input: one small dict per written shard.

    :param manifest: a :class:`~bedrock_batch.split.ShardManifest`.
    :param output_prefix: where the jobs write; each shard gets ``<output_prefix>/shard-NNNN/``.
    :param round_number: the run's round (2 for a retry round): part of each shard's job identity.
    """
    from bedrock_batch.storage import join_uri

    return [
        {
            "shard": shard.number,
            "input_uri": shard.input_uri,
            "output_uri": join_uri(output_prefix, f"shard-{shard.number:04d}") + "/",
            "records": shard.span.records,
            "bytes": shard.span.length,
            "fingerprint": shard.fingerprint,
            "round": round_number,
        }
        for shard in manifest.shards
    ]


# Templated by every operator below that reads or writes S3 through Storage.
STORAGE_TEMPLATE_FIELDS = ("kms_key_id", "expected_bucket_owner", "bucket_owners")


class _StagingOperator(AwsBaseOperator[BedrockBatchHook]):
    """Shared plumbing of the operators that read and write staged files through one connection.

    :param kms_key_id: KMS key every object the task writes is encrypted with (SSE-KMS); ``None``: the
        bucket's default encryption. (templated)
    :param expected_bucket_owner: 12-digit account id that must own every bucket the task reads or writes
        (S3 refuses the request otherwise); ``None``: not checked. (templated)
    :param bucket_owners: bucket name → account id, overriding ``expected_bucket_owner`` per bucket.
        (templated)
    """

    aws_hook_class = BedrockBatchHook

    def __init__(
        self,
        *,
        kms_key_id: str | None = None,
        expected_bucket_owner: str | None = None,
        bucket_owners: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kms_key_id = kms_key_id
        self.expected_bucket_owner = expected_bucket_owner
        self.bucket_owners = bucket_owners

    def storage(self) -> Any:
        from bedrock_batch.storage import Storage

        return Storage(
            self.hook.s3_client,
            expected_bucket_owner=self.expected_bucket_owner,
            bucket_owners=self.bucket_owners,
            kms_key_id=self.kms_key_id,
        )


class BedrockBatchPrepareOperator(_StagingOperator):
    """Turn source rows into quota-respecting batch input shards in S3, in one streaming pass.

    Reads the source (text files, JSONL, CSV, Parquet or Amazon Transcribe JSON, from S3 or a local path),
    renders the prompt template, builds each model request body, quarantines rows that cannot become a
    record, plans shards within every service quota and uploads them with the record index and the
    quarantine list. Only metadata goes to XCom: the return value is the submit stage's shard list
    (``.expand(shard=prepare.output)``), the XCom key ``run`` describes the run (counts, URIs; what the
    collect and publish stages take) and ``on_demand_uris`` lists the on-demand fallback's input files.

    A partition that exists but holds only marker objects (``_SUCCESS``) is an empty day: zero records,
    no error. A partition with files of another format is an error, never silently empty.

    :param source_uri: ``s3://bucket/prefix/``, an S3 object, a local directory or file. (templated)
    :param source_format: ``text``, ``jsonl``, ``csv``, ``parquet`` or ``transcribe``. (templated)
    :param staging_uri: S3 prefix (or local directory) for shards, outputs and run files. (templated)
    :param model_id: model id, inference-profile id or ARN. (templated)
    :param prompt_name: prompt template name under ``include/prompts/``. (templated)
    :param prompt_version: prompt template version. (templated)
    :param id_column: source column with the row key (tabular formats). (templated)
    :param text_column: source column with the transcript (tabular formats). (templated)
    :param passthrough_columns: source columns carried to the results table. (templated)
    :param invocation_type: ``InvokeModel`` or ``Converse``.
    :param model_family: override of the model family inferred from ``model_id``.
    :param max_tokens: the model's ``max_tokens`` per record.
    :param temperature: sampling temperature, or None for the model's default.
    :param max_records: read at most this many source rows (0: all), e.g. for a trial run.
    :param quotas: :class:`~bedrock_batch.config.QuotaConfig`, :class:`~bedrock_batch.config.QuotaSettings`
        or a mapping of overrides.
    :param prompts_root: directory of prompt templates; default ``include/prompts``.
    :param kms_key_id: KMS key of every object written (SSE-KMS). (templated)
    :param expected_bucket_owner: account that must own every bucket touched; ``bucket_owners`` overrides it
        per bucket. (templated)
    """

    template_fields: Sequence[str] = aws_template_fields(
        "source_uri",
        "source_format",
        "staging_uri",
        "model_id",
        "prompt_name",
        "prompt_version",
        "id_column",
        "text_column",
        "passthrough_columns",
        "max_records",
        *STORAGE_TEMPLATE_FIELDS,
    )
    ui_color = "#c8e6c9"

    def __init__(
        self,
        *,
        source_uri: str,
        source_format: str,
        staging_uri: str,
        model_id: str,
        prompt_name: str,
        prompt_version: str = "v1",
        id_column: str = "id",
        text_column: str = "text",
        passthrough_columns: Sequence[str] = (),
        invocation_type: str = "InvokeModel",
        model_family: str | None = None,
        max_tokens: int = 1024,
        temperature: float | None = None,
        max_records: int | str = 0,
        quotas: QuotaConfig | QuotaSettings | Mapping[str, Any] | None = None,
        prompts_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_uri = source_uri
        self.source_format = source_format
        self.staging_uri = staging_uri
        self.model_id = model_id
        self.prompt_name = prompt_name
        self.prompt_version = prompt_version
        self.id_column = id_column
        self.text_column = text_column
        self.passthrough_columns = passthrough_columns
        self.invocation_type = invocation_type
        self.model_family = model_family
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.max_records = max_records
        self.quotas = quotas
        self.prompts_root = prompts_root

    def execute(self, context: Context) -> list[dict[str, Any]]:
        import itertools
        import tempfile

        from bedrock_batch.models import InferenceParams
        from bedrock_batch.prepare import prepare
        from bedrock_batch.prompts import load_template
        from bedrock_batch.sources import SourceReader, SourceSpec
        from bedrock_batch.split import plan_shards, write_shards
        from bedrock_batch.storage import join_uri

        quotas = _quota_config(self.quotas, self.model_id)
        template = load_template(self.prompt_name, self.prompt_version, root=self.prompts_root)
        storage = self.storage()
        spec = SourceSpec(
            uri=self.source_uri,
            format=self.source_format,  # type: ignore[arg-type]
            id_column=self.id_column,
            text_column=self.text_column,
            passthrough_columns=tuple(self.passthrough_columns or ()),
        )
        reader = SourceReader(spec, storage, max_object_bytes=quotas.max_record_bytes)
        run_prefix = run_prefix_for(self.staging_uri, self.dag_id, context["ds"])
        empty = _is_empty_partition(storage, self.source_uri)
        max_records = int(self.max_records or 0)

        with tempfile.TemporaryDirectory(prefix="bedrock-batch-prepare-") as work:
            rows = iter(()) if empty else iter(reader)
            if max_records > 0:
                rows = itertools.islice(rows, max_records)
            prepared = prepare(
                rows,
                work,
                template=template,
                model_id=self.model_id,
                quotas=quotas,
                params=InferenceParams(max_tokens=self.max_tokens, temperature=self.temperature),
                invocation_type=self.invocation_type,
                family=self.model_family,
                passthrough_types={} if empty else reader.passthrough_types(),
            )
            plan = plan_shards(prepared.load_sizes(), quotas)
            remove_stale_files(storage, join_uri(run_prefix, "input"), plan)
            manifest = write_shards(prepared.spool_path, plan, join_uri(run_prefix, "input"), storage=storage)
            index_uri = join_uri(run_prefix, "record_index.parquet")
            quarantine_uri = join_uri(run_prefix, "quarantine.jsonl")
            storage.write_file(prepared.index_path, index_uri)
            storage.write_file(prepared.quarantine_path, quarantine_uri)

        shards = shard_descriptors(manifest, join_uri(run_prefix, "output"))
        context["ti"].xcom_push(key=ON_DEMAND_XCOM_KEY, value=[f.uri for f in manifest.on_demand])
        result = {
            "run_prefix": run_prefix,
            "index_uri": index_uri,
            "quarantine_uri": quarantine_uri,
            "source_uri": self.source_uri,
            "model_id": self.model_id,
            "invocation_type": self.invocation_type,
            "model_family": self.model_family,
            "passthrough_columns": list(self.passthrough_columns or ()),
            "rows": prepared.rows,
            "records": prepared.records,
            "quarantined": prepared.quarantined,
            "quarantine_counts": {k: v for k, v in prepared.quarantine_counts.items() if v},
            "bytes": prepared.total_bytes,
            "shards": shards,
            "on_demand_uris": [f.uri for f in manifest.on_demand],
            "on_demand_records": plan.on_demand_records,
        }
        self.log.info(
            "Prepared %s rows: %s records in %d shard(s), %s for on-demand, %s quarantined %s",
            f"{prepared.rows:,}",
            f"{prepared.records:,}",
            len(shards),
            f"{plan.on_demand_records:,}",
            f"{prepared.quarantined:,}",
            result["quarantine_counts"] or "",
        )
        context["ti"].xcom_push(key=RUN_XCOM_KEY, value=result)
        return shards


def remove_stale_files(storage: Any, destination: str, plan: Any) -> int:
    """Delete files an earlier run of the same date staged under ``destination`` that ``plan`` does not
    write again; return how many.

    A rerun over changed data plans other shards, and files of the old plan left in a shard prefix would
    be read by the new job too. Files the plan writes again are overwritten in place instead (one atomic
    PUT each), so a job of an identical earlier run that is still reading them never sees them missing.

    :param storage: local and S3 access.
    :param destination: the ``write_shards`` destination.
    :param plan: the :class:`~bedrock_batch.split.ShardPlan` about to be written there.
    """
    from bedrock_batch.split import ON_DEMAND_DIR
    from bedrock_batch.storage import StorageReadError, join_uri

    keep = {
        join_uri(destination, f"shard-{shard.number:04d}", f"part-{n:04d}.jsonl")
        for shard in plan.shards
        for n in range(1, len(shard.files) + 1)
    }
    keep |= {
        join_uri(destination, ON_DEMAND_DIR, f"part-{n:04d}.jsonl") for n in range(1, len(plan.on_demand) + 1)
    }
    try:
        stale = [obj.uri for obj in storage.list_objects(destination + "/") if obj.uri not in keep]
    except StorageReadError:
        return 0
    storage.delete_objects(stale)
    return len(stale)


def _is_empty_partition(storage: Any, uri: str) -> bool:
    """True when ``uri`` holds only marker objects such as ``_SUCCESS`` (an empty day)."""
    names = [obj.name for obj in storage.list_objects(uri)]
    return all(name.rsplit("/", 1)[-1].startswith(MARKER_PREFIXES) for name in names)


# ========================================================================================================
# On-demand fallback: records too few for a batch job
# ========================================================================================================


class BedrockOnDemandOperator(_StagingOperator):
    """Invoke the model record by record for input files too small for a batch job.

    Writes ``<output_uri>/<file>.out`` in the batch output line format, so collection treats these records
    like any job's. An input file whose output already exists with one line per record is not invoked
    again (a rerun does not pay twice).

    :param input_uris: batch input files (``{"recordId", "modelInput"}`` lines). (templated)
    :param output_uri: prefix for the output files. (templated)
    :param model_id: model id or inference-profile id. (templated)
    :param invocation_type: ``InvokeModel`` or ``Converse``.
    :param requests_per_second: client-side rate limit.
    :param max_attempts: attempts per record for throttling and transient errors.
    :param kms_key_id: KMS key of every object written (SSE-KMS). (templated)
    :param expected_bucket_owner: account that must own every bucket touched; ``bucket_owners`` overrides it
        per bucket. (templated)
    """

    template_fields: Sequence[str] = aws_template_fields(
        "input_uris", "output_uri", "model_id", *STORAGE_TEMPLATE_FIELDS
    )
    ui_color = "#ffe0b2"

    def __init__(
        self,
        *,
        input_uris: Sequence[str] | str,
        output_uri: str,
        model_id: str,
        invocation_type: str = "InvokeModel",
        requests_per_second: float = 5.0,
        max_attempts: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_uris = input_uris
        self.output_uri = output_uri
        self.model_id = model_id
        self.invocation_type = invocation_type
        self.requests_per_second = requests_per_second
        self.max_attempts = max_attempts

    def execute(self, context: Context) -> dict[str, Any]:
        import tempfile

        from bedrock_batch.on_demand import OnDemandStats, invoke_records, runtime_invoker
        from bedrock_batch.storage import join_uri

        storage = self.storage()
        uris = [self.input_uris] if isinstance(self.input_uris, str) else list(self.input_uris or ())
        stats = OnDemandStats()
        reused = 0
        invoke = runtime_invoker(self.hook.runtime_client, self.model_id, self.invocation_type)
        for uri in uris:
            target = join_uri(self.output_uri, uri.rsplit("/", 1)[-1] + ".out")
            expected = _count_lines(storage, uri)
            if _output_complete(storage, target, expected):
                reused += expected
                continue
            with (
                tempfile.NamedTemporaryFile(prefix="bedrock-batch-on-demand-", delete=False) as out,
                storage.open_read(uri) as lines,
            ):
                for line in invoke_records(
                    lines,
                    invoke,
                    requests_per_second=self.requests_per_second,
                    max_attempts=self.max_attempts,
                    stats=stats,
                ):
                    out.write(line)
            try:
                storage.write_file(out.name, target)
            finally:
                os.unlink(out.name)
        self.log.info(
            "On-demand: %d file(s), %s records invoked (%s succeeded, %s failed, %s retries), %s reused",
            len(uris),
            f"{stats.records:,}",
            f"{stats.succeeded:,}",
            f"{stats.failed:,}",
            f"{stats.retries:,}",
            f"{reused:,}",
        )
        return {
            "output_uri": self.output_uri if uris else None,
            "records": stats.records + reused,
            "succeeded": stats.succeeded,
            "failed": stats.failed,
            "reused": reused,
        }


def _count_lines(storage: Any, uri: str) -> int:
    with storage.open_read(uri) as stream:
        return sum(1 for line in stream if line.strip())


def _output_complete(storage: Any, uri: str, expected: int) -> bool:
    from bedrock_batch.storage import StorageReadError

    try:
        return _count_lines(storage, uri) == expected
    except StorageReadError:
        return False


# ========================================================================================================
# Stage 6: collect outputs, run the retry round, publish the results table and the run report
# ========================================================================================================


def _job_outputs(
    jobs: Sequence[Mapping[str, Any]] | None, on_demand: Mapping[str, Any] | None, on_demand_label: str
) -> list[Any]:
    from bedrock_batch.results import JobOutput

    outputs = [
        JobOutput(label=str(job["job_arn"]), uri=str(job["output_uri"]))
        for job in (jobs or ())
        if job and job.get("output_uri")
    ]
    if on_demand and on_demand.get("output_uri"):
        outputs.append(JobOutput(label=on_demand_label, uri=str(on_demand["output_uri"])))
    return outputs


class _CollectingOperator(_StagingOperator):
    """Reads a run's outputs and joins them to its record index."""

    def __init__(
        self,
        *,
        prepared: Mapping[str, Any] | str,
        jobs: Sequence[Mapping[str, Any]] | str | None = None,
        on_demand: Mapping[str, Any] | str | None = None,
        quotas: QuotaConfig | QuotaSettings | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prepared = prepared
        self.jobs = jobs
        self.on_demand = on_demand
        self.quotas = quotas

    def _family(self) -> Any:
        from bedrock_batch.models import family_for

        prepared = dict(self.prepared)  # type: ignore[arg-type]
        return family_for(
            prepared["model_id"],
            invocation_type=prepared.get("invocation_type") or "InvokeModel",
            override=prepared.get("model_family"),
        )

    def _join(self, outputs: Sequence[Any]) -> Any:
        from bedrock_batch.collect import join_results
        from bedrock_batch.results import load_index, read_output_batches

        storage = self.storage()
        index = load_index(storage, str(dict(self.prepared)["index_uri"]))  # type: ignore[arg-type]
        return join_results(index, read_output_batches(storage, outputs, self._family()))


class BedrockBatchCollectOperator(_CollectingOperator):
    """Collect the first round and stage the retry round.

    Joins every job's and the on-demand fallback's output to the record index, then writes the records
    whose errors are retryable (throttling, 5xx, timeouts, records missing from the output) as a new
    round: shards of at least the service minimum go to a new job (the return value, a shard list like
    prepare's), the rest to the on-demand fallback (XCom key ``retry_on_demand``). Non-retryable errors
    are kept as they are. The round's counts go under the XCom key ``round``.

    :param prepared: the prepare stage's ``run`` XCom. (templated)
    :param jobs: the submit stage's results (all map indexes). (templated)
    :param on_demand: the on-demand stage's result. (templated)
    :param quotas: quotas for planning the retry shards.
    :param retry: stage a retry round at all.
    :param kms_key_id: KMS key of every object written (SSE-KMS). (templated)
    :param expected_bucket_owner: account that must own every bucket touched; ``bucket_owners`` overrides it
        per bucket. (templated)
    """

    template_fields: Sequence[str] = aws_template_fields(
        "prepared", "jobs", "on_demand", *STORAGE_TEMPLATE_FIELDS
    )
    ui_color = "#b3e5fc"

    def __init__(self, *, retry: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retry = retry

    def execute(self, context: Context) -> list[dict[str, Any]]:
        import tempfile

        from bedrock_batch.collect import retryable_record_ids, summarize_results
        from bedrock_batch.results import write_retry_spool
        from bedrock_batch.split import plan_shards, write_shards
        from bedrock_batch.storage import join_uri

        prepared = dict(self.prepared)  # type: ignore[arg-type]
        jobs = [dict(j) for j in (self.jobs or ()) if isinstance(j, Mapping)]
        joined = self._join(_job_outputs(jobs, self.on_demand, "on-demand"))  # type: ignore[arg-type]
        summary = summarize_results(joined)
        retry_ids = retryable_record_ids(joined) if self.retry else []
        self.log.info(
            "Round 1: %s records, %s succeeded, %s failed (%s retryable, %s missing)",
            f"{summary.records:,}",
            f"{summary.succeeded:,}",
            f"{summary.failed:,}",
            f"{summary.retryable:,}",
            f"{summary.missing:,}",
        )
        retry_shards: list[dict[str, Any]] = []
        retry_on_demand: list[str] = []
        retried = 0
        if retry_ids:
            storage = self.storage()
            quotas = _quota_config(self.quotas, prepared["model_id"]).replace(below_minimum="on_demand")
            retry_prefix = join_uri(prepared["run_prefix"], "retry-1")
            inputs = [job["input_uri"] for job in jobs if job.get("input_uri")]
            inputs += list(prepared.get("on_demand_uris") or ())
            with tempfile.TemporaryDirectory(prefix="bedrock-batch-retry-") as work:
                spool = os.path.join(work, "retry.jsonl")
                sizes = write_retry_spool(storage, inputs, retry_ids, spool)
                plan = plan_shards(sizes, quotas)
                remove_stale_files(storage, join_uri(retry_prefix, "input"), plan)
                manifest = write_shards(spool, plan, join_uri(retry_prefix, "input"), storage=storage)
            retry_shards = shard_descriptors(manifest, join_uri(retry_prefix, "output"), round_number=2)
            retry_on_demand = [f.uri for f in manifest.on_demand]
            retried = int(plan.records)
            self.log.info(
                "Retry round: %s records in %d shard(s), %s for on-demand",
                f"{retried:,}",
                len(retry_shards),
                f"{plan.on_demand_records:,}",
            )
        context["ti"].xcom_push(key=RETRY_ON_DEMAND_XCOM_KEY, value=retry_on_demand)
        round_summary = {
            "records": summary.records,
            "succeeded": summary.succeeded,
            "failed": summary.failed,
            "retryable": summary.retryable,
            "missing": summary.missing,
            "retried": retried,
            "retry_shards": len(retry_shards),
            "retry_on_demand_files": len(retry_on_demand),
        }
        context["ti"].xcom_push(key=ROUND_XCOM_KEY, value=round_summary)
        return retry_shards


class BedrockBatchPublishOperator(_CollectingOperator):
    """Publish a run: the results table partition, the run report, and the report through XCom.

    Joins the outputs of every round in order (first-round jobs, first-round on-demand, retry jobs, retry
    on-demand), so a retried success replaces the earlier failure; adds the quarantined rows; parses each
    reply into the call-summary columns; and replaces the ``ds`` partition of
    ``<results_uri>/<table_name>/`` in one atomic write. The run report goes to
    ``<results_uri>/reports/ds=<ds>/run_report.json`` and ``run_report.md`` and is printed to the log.

    :param prepared: the prepare stage's ``run`` XCom. (templated)
    :param jobs: the first round's submit results. (templated)
    :param on_demand: the first round's on-demand result. (templated)
    :param retry_jobs: the retry round's submit results. (templated)
    :param retry_on_demand: the retry round's on-demand result. (templated)
    :param collected: the collect stage's ``round`` XCom (for the retry count). (templated)
    :param results_uri: root of the results tables and reports. (templated)
    :param table_name: name of the results table under ``results_uri``.
    :param glue_database: an existing Glue database to register the table and the partition in, for Athena
        (see :func:`bedrock_batch.catalog.register_partition`); ``None`` or empty: no registration. Only
        results in S3 are registered. The XCom's ``catalog`` names what was registered. (templated)
    :param glue_table: the table's name in that database. (templated)
    :param kms_key_id: KMS key of every object written (SSE-KMS). (templated)
    :param expected_bucket_owner: account that must own every bucket touched; ``bucket_owners`` overrides it
        per bucket. (templated)
    """

    template_fields: Sequence[str] = aws_template_fields(
        "prepared",
        "jobs",
        "on_demand",
        "retry_jobs",
        "retry_on_demand",
        "collected",
        "results_uri",
        "glue_database",
        "glue_table",
        *STORAGE_TEMPLATE_FIELDS,
    )
    ui_color = "#d1c4e9"

    def __init__(
        self,
        *,
        results_uri: str,
        retry_jobs: Sequence[Mapping[str, Any]] | str | None = None,
        retry_on_demand: Mapping[str, Any] | str | None = None,
        collected: Mapping[str, Any] | str | None = None,
        table_name: str = "call_summaries",
        glue_database: str | None = None,
        glue_table: str = "call_summaries",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.results_uri = results_uri
        self.retry_jobs = retry_jobs
        self.retry_on_demand = retry_on_demand
        self.collected = collected
        self.table_name = table_name
        self.glue_database = glue_database
        self.glue_table = glue_table

    def execute(self, context: Context) -> dict[str, Any]:
        from datetime import UTC, datetime

        from bedrock_batch.results import (
            assemble_call_summaries,
            load_quarantine,
            write_bytes,
            write_json,
            write_partition,
        )
        from bedrock_batch.storage import join_uri

        prepared = dict(self.prepared)  # type: ignore[arg-type]
        first = [dict(j) for j in (self.jobs or ()) if isinstance(j, Mapping)]
        retry = [dict(j) for j in (self.retry_jobs or ()) if isinstance(j, Mapping)]
        outputs = _job_outputs(first, _mapping(self.on_demand), "on-demand")
        outputs += _job_outputs(retry, _mapping(self.retry_on_demand), "on-demand-retry")
        joined = self._join(outputs)
        storage = self.storage()
        ds = str(context["ds"])
        table = assemble_call_summaries(
            joined,
            load_quarantine(storage, prepared["quarantine_uri"]),
            ds=ds,
            model_id=prepared["model_id"],
            dag_run_id=str(context["run_id"]),
            processed_at=datetime.now(UTC),
            passthrough=prepared.get("passthrough_columns") or (),
        )
        table_uri = write_partition(storage, table, join_uri(self.results_uri, self.table_name), ds)

        report = self._report(context, prepared, table, [*first, *retry])
        report_prefix = join_uri(self.results_uri, "reports", f"ds={ds}")
        write_json(storage, report.to_dict(), join_uri(report_prefix, "run_report.json"))
        write_bytes(storage, report.to_markdown().encode(), join_uri(report_prefix, "run_report.md"))
        self.log.info("Run report for %s:\n%s", ds, report.to_text())
        catalog = self._register(join_uri(self.results_uri, self.table_name), table.schema, ds)
        # Consumers scheduled on the table (e.g. the KPI DAG) read which partition changed from the event.
        for asset in self.outlets:
            context["outlet_events"][asset].extra = {
                "ds": ds,
                "partition_uri": table_uri,
                "results_uri": self.results_uri,
                "rows": table.num_rows,
            }
        if not report.accounted:
            raise OutputAccountingError(
                f"{report.input_records:,} input rows but {report.succeeded:,} succeeded + {report.failed:,} "
                f"failed + {report.quarantined:,} quarantined; the published partition is {table_uri}"
            )
        return {**report.to_dict(), "results_uri": table_uri, "report_uri": report_prefix, "catalog": catalog}

    def _register(self, table_root: str, schema: Any, ds: str) -> dict[str, Any] | None:
        """Register the ``ds`` partition in the Glue Data Catalog when a database is configured and the table
        is in S3; what was registered, or ``None``."""
        from bedrock_batch.catalog import register_partition
        from bedrock_batch.storage import is_s3_uri

        if not self.glue_database:
            self.log.info("No glue_database configured: the partition is not registered in Glue")
            return None
        if not is_s3_uri(table_root):
            self.log.info("The results table is not in S3: skipping the Glue Data Catalog registration")
            return None
        registration = register_partition(
            self.hook.glue_client,
            database=str(self.glue_database),
            table=str(self.glue_table),
            location=table_root,
            schema=schema,
            partition_value=ds,
        )
        return registration.to_dict()

    def _report(
        self, context: Context, prepared: Mapping[str, Any], table: Any, jobs: Sequence[Mapping[str, Any]]
    ) -> Any:
        import pyarrow.compute as pc

        from bedrock_batch.cost import estimate_cost
        from bedrock_batch.report import RunReport, job_summaries

        status = table["status"]

        def count(value: str) -> int:
            return int(pc.sum(pc.equal(status, value)).as_py() or 0)

        def tokens(column: str, batch: bool) -> int:
            on_demand = pc.fill_null(pc.starts_with(table["job_arn"], "on-demand"), False)
            mask = pc.invert(on_demand) if batch else on_demand
            return int(pc.sum(table[column].filter(mask)).as_py() or 0)

        model_id = str(prepared["model_id"])
        # Batch tokens cost half the on-demand price; the fallback's tokens are billed in full.
        batch_cost = estimate_cost(model_id, tokens("input_tokens", True), tokens("output_tokens", True))
        fallback_cost = estimate_cost(
            model_id, tokens("input_tokens", False), tokens("output_tokens", False), batch=False
        )
        cost = None if batch_cost is None or fallback_cost is None else batch_cost + fallback_cost
        collected = _mapping(self.collected) or {}
        summaries = job_summaries({**job, "duration_seconds": self._duration(job)} for job in jobs)
        return RunReport(
            ds=str(context["ds"]),
            dag_run_id=str(context["run_id"]),
            model_id=model_id,
            input_records=int(prepared.get("rows") or 0),
            quarantined=count("quarantined"),
            succeeded=count("succeeded"),
            failed=count("failed"),
            retried=int(collected.get("retried") or 0),
            input_tokens=int(pc.sum(table["input_tokens"]).as_py() or 0),
            output_tokens=int(pc.sum(table["output_tokens"]).as_py() or 0),
            estimated_cost_usd=cost,
            jobs=summaries,
        )

    def _duration(self, job: Mapping[str, Any]) -> float | None:
        try:
            described = self.hook.get_job(str(job["job_arn"]))
        except Exception:
            self.log.warning("Could not read the timing of job %s", job.get("job_id"))
            return None
        start, end = described.get("submitTime"), described.get("endTime")
        return (end - start).total_seconds() if start and end else None


class OutputAccountingError(JobFailedError):
    """The published rows do not add up to the input rows: a record was lost or counted twice."""


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None
