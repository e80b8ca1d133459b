"""Airflow operators for the pipeline's stages: one operator per stage, thin adapters over the pure modules.

Heavy libraries (pandas, pyarrow) are imported inside the stages that need them, never at module level.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, cast

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import conf

from bedrock_batch.config import QuotaConfig, QuotaSettings, quota_config_for
from bedrock_batch.errors import ConfigError, JobWaitTimeoutError, OutputAccountingError
from bedrock_batch.hooks import BedrockBatchHook
from bedrock_batch.jobs import ShardJobKey, abandoned_by_user, job_id_from_arn, run_key_for
from bedrock_batch.links import BedrockBatchJobLink, BedrockBatchOutputLink, persist_job_links
from bedrock_batch.models import INVOCATION_TYPES
from bedrock_batch.polling import (
    DEFAULT_POLL_INTERVAL,
    JobWatch,
    job_event,
    log_step,
    result_from_event,
    wait_until_ended,
)
from bedrock_batch.stage_results import (
    ON_DEMAND_XCOM_KEY,
    RETRY_ON_DEMAND_XCOM_KEY,
    ROUND_XCOM_KEY,
    RUN_XCOM_KEY,
    SUBMISSION_XCOM_KEY,
    CollectRound,
    JobEvent,
    OnDemandResult,
    PreparedRun,
    PublishResult,
    ShardDescriptor,
    SubmissionState,
    SubmitResult,
)
from bedrock_batch.staging import (
    MARKER_PREFIXES,
    ON_DEMAND_LABEL,
    ON_DEMAND_RETRY_LABEL,
    count_lines,
    is_empty_partition,
    job_outputs,
    job_results,
    on_demand_output_uri,
    output_complete,
    remove_stale_files,
    run_prefix_for,
    shard_descriptors,
)
from bedrock_batch.submission import TRANSIENT_RETRY_SECONDS, JobRequest, JobSubmitter, Submitted, job_tags
from bedrock_batch.task_state import read_task_state
from bedrock_batch.triggers import BedrockBatchJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

REQUIRED_SHARD_KEYS = ("shard", "input_uri", "output_uri", "fingerprint")

__all__ = [
    "MARKER_PREFIXES",
    "ON_DEMAND_XCOM_KEY",
    "RETRY_ON_DEMAND_XCOM_KEY",
    "ROUND_XCOM_KEY",
    "RUN_XCOM_KEY",
    "SUBMISSION_XCOM_KEY",
    "TRANSIENT_RETRY_SECONDS",
    "BedrockBatchCollectOperator",
    "BedrockBatchPrepareOperator",
    "BedrockBatchPublishOperator",
    "BedrockBatchSubmitOperator",
    "BedrockOnDemandOperator",
    "OutputAccountingError",
    "remove_stale_files",
    "run_prefix_for",
    "shard_descriptors",
]


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

    def _submitter(self, context: Context) -> JobSubmitter:
        key = self._shard_job(context)
        request = JobRequest(
            role_arn=self.role_arn,
            model_id=self.model_id,
            input_s3_uri=str(self.shard["input_uri"]),
            output_s3_uri=str(self.shard["output_uri"]),
            invocation_type=self.invocation_type,
            timeout_hours=self.timeout_hours,
            tags=job_tags(self.tags, key=key, run_id=str(context["run_id"])),
            vpc_config=self.vpc_config,
            output_kms_key_id=self.output_kms_key_id,
            input_bucket_owner=self.input_bucket_owner,
            output_bucket_owner=self.output_bucket_owner,
        )
        return JobSubmitter(
            self.hook,
            key,
            request,
            max_concurrent_jobs=quota_config_for(self.quotas, self.model_id).max_concurrent_jobs,
            force=self.force,
            job_slots_uri=self.job_slots_uri,
            records=self.shard.get("records"),
            poll_interval=self.poll_interval,
            log=self.log,
        )

    # --- submit ---------------------------------------------------------------------------------------

    def execute(self, context: Context) -> SubmitResult:
        """Find or create the shard's job, then wait for it unless ``wait_for_completion`` is off."""
        self._task_instance = context["ti"]
        submitter = self._submitter(context)
        with self._job_stopped_on_timeout():
            submitted = submitter.submit(wait=not self.deferrable)
            if submitted is None:
                # At the quota: wait for a slot without holding a worker slot, then look again from the start.
                self.defer(
                    trigger=_slot_wait_trigger(self.poll_interval), method_name="execute_after_slot_wait"
                )
            return self._after_submit(context, submitter, submitted)

    def execute_after_slot_wait(self, context: Context, event: Any = None) -> SubmitResult:
        """Resume after waiting for a free slot: check again from the start."""
        return self.execute(context)

    def _after_submit(self, context: Context, submitter: JobSubmitter, submitted: Submitted) -> SubmitResult:
        self.job_arn = submitted.job_arn
        job = submitter.retrying("reading its job's status", self.hook.get_job, submitted.job_arn)
        persist_job_links(context, self, job, self.hook.conn_region_name, self.hook.conn_partition)
        watch = JobWatch(submitted.job_arn, poll_interval=self.poll_interval, strict=self.strict)
        step = watch.checked(job, datetime.now(UTC))
        log_step(self.log, step)
        if not self.wait_for_completion:
            return self._result(job_event(job, strict=self.strict), submitted.reused)
        if step.event is not None:
            return self._finished(step.event, submitted.reused)
        if self.deferrable:
            state: SubmissionState = {"job_arn": submitted.job_arn, "reused": submitted.reused}
            context["ti"].xcom_push(key=SUBMISSION_XCOM_KEY, value=state)
            self.defer(
                trigger=BedrockBatchJobTrigger(
                    job_arn=submitted.job_arn,
                    poll_interval=self.poll_interval,
                    strict=self.strict,
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
            )
        # Not deferrable: the trigger's wait (the same JobWatch), run in the worker.
        event = wait_until_ended(watch, step, self.hook.get_job, reconnect=self._new_client, log=self.log)
        return self._finished(event, submitted.reused)

    def _new_client(self) -> Any:
        """GetModelInvocationJob through a new hook (credentials read again), after credentials expired."""
        return self.aws_hook_class(**self._hook_parameters).get_job

    # --- wait -----------------------------------------------------------------------------------------

    def execute_complete(self, context: Context, event: Any = None) -> SubmitResult:
        """Resume from :class:`~bedrock_batch.triggers.BedrockBatchJobTrigger`; an error event raises."""
        submission = self._submission(context)
        return self._finished(event, bool(submission and submission.get("reused")))

    def _finished(self, event: JobEvent | Any, reused: bool) -> SubmitResult:
        """The task's result for the event the wait ended with; the wait deadline passing stops the job."""
        try:
            return self._result(event, reused)
        except JobWaitTimeoutError:
            self.job_arn = event.get("job_arn") if isinstance(event, Mapping) else None
            self._stop_job("wait deadline passed")
            raise

    def _result(self, event: JobEvent | Any, reused: bool) -> SubmitResult:
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

    def _submission(self, context: Context) -> SubmissionState | None:
        """The job this try deferred to wait for (pushed before deferring), or ``None``."""
        ti = context["ti"]
        value = ti.xcom_pull(task_ids=self.task_id, key=SUBMISSION_XCOM_KEY, map_indexes=ti.map_index)
        return cast(SubmissionState, value) if isinstance(value, Mapping) else None

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

    def execute(self, context: Context) -> list[ShardDescriptor]:
        import itertools
        import tempfile

        from bedrock_batch.models import InferenceParams
        from bedrock_batch.prepare import prepare
        from bedrock_batch.prompts import load_template
        from bedrock_batch.sources import SourceReader, SourceSpec
        from bedrock_batch.split import plan_shards, write_shards
        from bedrock_batch.storage import join_uri

        quotas = quota_config_for(self.quotas, self.model_id)
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
        empty = is_empty_partition(storage, self.source_uri)
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
        result: PreparedRun = {
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

    def execute(self, context: Context) -> OnDemandResult:
        import tempfile

        from bedrock_batch.on_demand import OnDemandStats, invoke_records, runtime_invoker

        storage = self.storage()
        uris = [self.input_uris] if isinstance(self.input_uris, str) else list(self.input_uris or ())
        stats = OnDemandStats()
        reused = 0
        invoke = runtime_invoker(self.hook.runtime_client, self.model_id, self.invocation_type)
        for uri in uris:
            target = on_demand_output_uri(self.output_uri, uri)
            expected = count_lines(storage, uri)
            if output_complete(storage, target, expected):
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


# ========================================================================================================
# Stage 6: collect outputs, run the retry round, publish the results table and the run report
# ========================================================================================================


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

    def execute(self, context: Context) -> list[ShardDescriptor]:
        import tempfile

        from bedrock_batch.collect import retryable_record_ids, summarize_results
        from bedrock_batch.results import write_retry_spool
        from bedrock_batch.split import plan_shards, write_shards
        from bedrock_batch.storage import join_uri

        prepared = dict(self.prepared)  # type: ignore[arg-type]
        jobs = job_results(self.jobs)
        joined = self._join(job_outputs(jobs, _mapping(self.on_demand), ON_DEMAND_LABEL))
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
        retry_shards: list[ShardDescriptor] = []
        retry_on_demand: list[str] = []
        retried = 0
        if retry_ids:
            storage = self.storage()
            quotas = quota_config_for(self.quotas, prepared["model_id"]).replace(below_minimum="on_demand")
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
        round_summary: CollectRound = {
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

    def execute(self, context: Context) -> PublishResult:
        from bedrock_batch.report import run_report
        from bedrock_batch.results import (
            assemble_call_summaries,
            load_quarantine,
            write_bytes,
            write_json,
            write_partition,
        )
        from bedrock_batch.storage import join_uri

        prepared = dict(self.prepared)  # type: ignore[arg-type]
        first = job_results(self.jobs)
        retry = job_results(self.retry_jobs)
        outputs = job_outputs(first, _mapping(self.on_demand), ON_DEMAND_LABEL)
        outputs += job_outputs(retry, _mapping(self.retry_on_demand), ON_DEMAND_RETRY_LABEL)
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

        report = run_report(
            table,
            ds=ds,
            dag_run_id=str(context["run_id"]),
            model_id=str(prepared["model_id"]),
            input_records=int(prepared.get("rows") or 0),
            retried=int((_mapping(self.collected) or {}).get("retried") or 0),
            jobs=[{**job, "duration_seconds": self._duration(job)} for job in [*first, *retry]],
        )
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
        where = {"results_uri": table_uri, "report_uri": report_prefix, "catalog": catalog}
        return cast(PublishResult, {**report.to_dict(), **where})

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

    def _duration(self, job: Mapping[str, Any]) -> float | None:
        try:
            described = self.hook.get_job(str(job["job_arn"]))
        except Exception:
            self.log.warning("Could not read the timing of job %s", job.get("job_id"))
            return None
        start, end = described.get("submitTime"), described.get("endTime")
        return (end - start).total_seconds() if start and end else None


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None
