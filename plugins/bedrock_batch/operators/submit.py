"""Stages 4-5: submit one shard's job and wait for it, stopping it only when the user gives it up."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, cast

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import conf

from bedrock_batch import metrics
from bedrock_batch.config import (
    QuotasArgument,
    as_bool,
    as_choice,
    as_float,
    as_optional_int,
    quota_config_for,
)
from bedrock_batch.errors import JobWaitTimeoutError
from bedrock_batch.hooks import BedrockBatchHook
from bedrock_batch.jobs import abandoned_by_user, job_id_from_arn, run_key_for
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
from bedrock_batch.stage_results import SUBMISSION_XCOM_KEY, JobEvent, SubmissionState, SubmitResult
from bedrock_batch.submission import JobRequest, JobSubmitter, Submitted, job_tags, shard_job_key
from bedrock_batch.task_state import read_task_state
from bedrock_batch.triggers import BedrockBatchJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class BedrockBatchSubmitOperator(AwsBaseOperator[BedrockBatchHook]):
    """Submit one Bedrock batch inference job for one shard and (by default) wait until it ends.

    Map it over the shards of a run: ``BedrockBatchSubmitOperator.partial(...).expand(shard=shards)``.
    The job name and ``clientRequestToken`` derive from the dag_id, the run's logical date (its run_id
    when it has none), the shard's fingerprint and the model, so a retried or cleared task, or a second
    run of the same date over the same data, reattaches to the running job or reuses the finished one
    instead of paying twice. At most ``max_concurrent_jobs`` jobs of the model are Submitted, Validating,
    Scheduled or InProgress in the account at once (jobs created outside Airflow count too); at the quota
    the task waits for a slot without holding a worker slot when deferrable.

    Returns (XCom) a :class:`~bedrock_batch.stage_results.SubmitResult`: ``{"shard", "job_arn", "job_id",
    "job_name", "status", "outcome", "records", "total_records", "processed_records", "success_records",
    "error_records", "input_uri", "output_uri", "model_id", "reused"}`` where ``outcome`` is ``success`` or
    ``salvage`` (``None`` when not waiting) and ``output_uri`` is ``<output>/<jobId>/``. A Failed job raises
    :class:`~bedrock_batch.errors.JobFailedError` with the job's message. Finding or creating the job is
    :class:`~bedrock_batch.submission.JobSubmitter`'s; waiting is :class:`~bedrock_batch.polling.JobWatch`'s,
    driven by the trigger (deferrable) or in the worker.

    :param shard: the shard descriptor ``{"shard": 1, "input_uri": "s3://.../shard-0001/", "output_uri":
        "s3://.../output/", "records": 150, "bytes": 12345, "fingerprint": "<sha256 hex>", "round": 1}``;
        ``round`` (default 1) is 2 for the shards of a retry round. (templated)
    :param model_id: model id, inference-profile id or ARN. (templated)
    :param role_arn: service role Bedrock assumes to read the input and write the output. (templated)
    :param invocation_type: ``InvokeModel`` or ``Converse``. (templated)
    :param timeout_hours: the job's ``timeoutDurationInHours`` (24-168); ``None`` keeps the service's.
        (templated)
    :param tags: extra job tags; ``dag_id``, ``run_id`` and ``shard`` are added automatically. (templated)
    :param vpc_config: ``{"subnetIds": [...], "securityGroupIds": [...]}``. (templated)
    :param output_kms_key_id: KMS key that encrypts the output. (templated)
    :param input_bucket_owner: account id that must own the input bucket. (templated)
    :param output_bucket_owner: account id that must own the output bucket. (templated)
    :param force: submit a new attempt even if a job for this shard exists (every run of the task with
        ``force`` submits one, so use it for a deliberate resubmission only). (templated)
    :param strict: treat PartiallyCompleted, Stopped and Expired as failures instead of salvaging them.
        (templated)
    :param wait_for_completion: wait until the job ends; otherwise return right after submitting.
        (templated)
    :param poll_interval: seconds between two status checks, and between two checks for a free slot.
        (templated)
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
        "timeout_hours",
        "tags",
        "vpc_config",
        "output_kms_key_id",
        "input_bucket_owner",
        "output_bucket_owner",
        "job_slots_uri",
        "force",
        "strict",
        "wait_for_completion",
        "poll_interval",
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
        quotas: QuotasArgument = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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

    def resolve_arguments(self) -> None:
        """Coerce and check the scalar arguments once templates are rendered (they may arrive as strings);
        a :class:`~bedrock_batch.errors.ConfigError` names the argument and the value."""
        self.invocation_type = as_choice("invocation_type", self.invocation_type, INVOCATION_TYPES)
        # timeoutDurationInHours: the service takes 24 to 168.
        self.timeout_hours = as_optional_int("timeout_hours", self.timeout_hours, minimum=24, maximum=168)
        self.force = as_bool("force", self.force)
        self.strict = as_bool("strict", self.strict)
        self.wait_for_completion = as_bool("wait_for_completion", self.wait_for_completion)
        self.poll_interval = as_float("poll_interval", self.poll_interval, positive=True)

    def _submitter(self, context: Context) -> JobSubmitter:
        run_key = run_key_for(getattr(context["dag_run"], "logical_date", None), str(context["run_id"]))
        key = shard_job_key(self.shard, dag_id=self.dag_id, run_key=run_key, model_id=self.model_id)
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
            on_slot_wait=lambda: self._count("job_slot.waits"),
            on_throttled=lambda: self._count("throttled_calls"),
        )

    def _count(self, name: str, value: int = 1) -> None:
        metrics.count(name, value, dag_id=self.dag_id, model_id=str(self.model_id))

    def _counted(self, read_job: Any) -> Any:
        """``read_job`` counting the calls the service throttles."""
        return metrics.counting_throttles(read_job, lambda: self._count("throttled_calls"))

    # --- submit ---------------------------------------------------------------------------------------

    def execute(self, context: Context) -> SubmitResult:
        """Find or create the shard's job, then wait for it unless ``wait_for_completion`` is off."""
        self._task_instance = context["ti"]
        self.resolve_arguments()
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
        if not submitted.reused:
            self._count("records.submitted", int(self.shard.get("records") or 0))
        job = submitter.retrying("reading its job's status", self.hook.get_job, submitted.job_arn)
        persist_job_links(context, self, job, self.hook.conn_region_name, self.hook.conn_partition)
        watch = JobWatch(submitted.job_arn, poll_interval=self.poll_interval, strict=self.strict)
        step = watch.checked(job, datetime.now(UTC))
        log_step(self.log, step)
        if not self.wait_for_completion:
            return self._result(job_event(job, strict=self.strict), submitted.reused)
        if step.event is not None:
            if not submitted.reused:  # a reused job's timers were sent by the wait that saw it end
                metrics.job_ended(job, watch.started, dag_id=self.dag_id, model_id=str(self.model_id))
            return self._finished(step.event, submitted.reused)
        if self.deferrable:
            state: SubmissionState = {"job_arn": submitted.job_arn, "reused": submitted.reused}
            context["ti"].xcom_push(key=SUBMISSION_XCOM_KEY, value=state)
            self.defer(
                trigger=BedrockBatchJobTrigger(
                    job_arn=submitted.job_arn,
                    poll_interval=self.poll_interval,
                    strict=self.strict,
                    dag_id=self.dag_id,
                    model_id=str(self.model_id),
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
                timeout=self._execution_time_left(context),
            )
        # Not deferrable: the trigger's wait (the same JobWatch), run in the worker.
        event = wait_until_ended(
            watch,
            step,
            self._counted(self.hook.get_job),
            reconnect=lambda: self._counted(self._new_client()),
            log=self.log,
        )
        if event.get("reason") == "ended":
            metrics.job_ended(watch.last_job, watch.started, dag_id=self.dag_id, model_id=str(self.model_id))
        return self._finished(event, submitted.reused)

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
        span = {key: self.shard[key] for key in ("start", "stop") if key in self.shard}
        return {
            "shard": self.shard.get("shard"),
            "records": self.shard.get("records"),
            **span,  # type: ignore[typeddict-item]
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
