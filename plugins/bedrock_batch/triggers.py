"""Airflow trigger that waits for a Bedrock model invocation job to end, in the triggerer, without a worker.

Used by the submit operator and the job sensor when they run deferrable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import conf
from airflow.triggers.base import BaseTrigger, TriggerEvent

from bedrock_batch import metrics
from bedrock_batch.aws_errors import is_throttling

# The wait's decisions and its event live in polling (pure, shared with the submit operator's blocking wait),
# its exception types in errors; the names imported "as" themselves are imported from here by earlier callers.
from bedrock_batch.errors import JobStatusError as JobStatusError
from bedrock_batch.errors import JobWaitTimeoutError as JobWaitTimeoutError
from bedrock_batch.hooks import BedrockBatchHook, shared_async_client
from bedrock_batch.jobs import (
    DEFAULT_WAIT_MARGIN,
    MAX_POLL_INTERVAL,
    CallBudget,
    abandoned_by_user,
    job_id_from_arn,
)
from bedrock_batch.polling import COUNT_KEYS as COUNT_KEYS
from bedrock_batch.polling import DEFAULT_POLL_INTERVAL, JobWatch, log_step
from bedrock_batch.polling import MAX_BACKOFF_SECONDS as MAX_BACKOFF_SECONDS
from bedrock_batch.polling import job_event as job_event
from bedrock_batch.polling import result_from_event as result_from_event
from bedrock_batch.task_state import aread_task_state

# GetModelInvocationJob calls per second that all the job triggers of one triggerer may make together
# ([bedrock_batch] status_calls_per_second, env AIRFLOW__BEDROCK_BATCH__STATUS_CALLS_PER_SECOND; 0: no limit).
# The service's rate quota for the call is per account and Region and not published; every triggerer (two
# for high availability), worker and console shares it. 2 per second is 7,200 checks an hour: 1,000 waits of
# any age at least one check every 500 s, and room to spare for everything else on the account.
BUDGET_SECTION, BUDGET_OPTION = "bedrock_batch", "status_calls_per_second"
DEFAULT_STATUS_CALLS_PER_SECOND = 2.0
_status_budget: CallBudget | None = None


def status_call_budget() -> CallBudget:
    """The token bucket every :class:`BedrockBatchJobTrigger` of this process draws its status checks from.

    Built from ``[bedrock_batch] status_calls_per_second``; built anew when that setting changes.
    """
    global _status_budget
    rate = conf.getfloat(BUDGET_SECTION, BUDGET_OPTION, fallback=DEFAULT_STATUS_CALLS_PER_SECOND)
    if _status_budget is None or _status_budget.calls_per_second != rate:
        _status_budget = CallBudget(rate)
    return _status_budget


class BedrockBatchJobTrigger(BaseTrigger):
    """Poll GetModelInvocationJob until the job ends, then fire exactly one event.

    Checks come every ``poll_interval`` at first, then further apart the longer the job stays in one status
    (a tenth of the time in it, up to ``max_poll_interval``, plus up to 20 % jitter; see
    :class:`~bedrock_batch.jobs.PollSchedule`); a new status starts over, and growing record counts shorten
    the wait to the job's predicted end. All triggers of a triggerer share one client per connection and one
    budget of ``[bedrock_batch] status_calls_per_second`` calls (default 2): a thousand waits never call
    faster.

    The payload (see :func:`job_event`) is ``{"status", "reason", "job_arn", "job_id", "job_name",
    "job_status", "outcome", "message", "model_id", "input_s3_uri", "output_s3_uri", "total_records",
    "processed_records", "success_records", "error_records"}``. ``status`` is ``success`` for Completed
    (``outcome`` ``success``) and, unless ``strict``, PartiallyCompleted/Stopped/Expired (``outcome``
    ``salvage``); it is ``error`` for a Failed job (``reason`` ``ended``, ``outcome`` ``failed``,
    ``message`` the job's), the deadline passing (``reason`` ``timeout``) or an error no retry can fix
    (``reason`` ``api_error``). Throttling, server errors and expired credentials are retried.

    :param job_arn: ARN (or id) of the job to wait for.
    :param poll_interval: seconds between two status checks at first, and the shortest wait ever.
    :param max_poll_interval: longest wait between two checks of a job that does not change (before jitter).
    :param strict: treat every ending other than Completed as an error.
    :param timeout: seconds to wait at most; ``None`` waits until the job's own expiration time plus
        ``margin_seconds`` (the service ends a job by then, so this is never shorter than the job).
    :param deadline: absolute UTC deadline (ISO 8601); set by :meth:`serialize` from ``timeout`` so a
        triggerer restart does not restart the clock.
    :param margin_seconds: extra time beyond the job's expiration when no timeout is given.
    :param stop_on_kill: stop the job when the user abandons the waiting task, i.e. marks it failed. Airflow
        cancels the trigger for any user action on the task and for reassignments between triggerers;
        :meth:`on_kill` reads the task's state and stops the job only when it is ``failed`` (see
        :func:`~bedrock_batch.jobs.abandoned_by_user`): a clear, a retry, a crash or a restart reattaches.
    :param dag_id: the waiting task's DAG, the metrics' ``dag_id`` tag; ``None``: the task instance's, which
        the triggerer gives the trigger.
    :param model_id: the model the job was created with, the metrics' ``model`` tag (the service may report
        it as an ARN); ``None``: the job's ``modelId``.
    :param aws_conn_id: The Airflow connection used for AWS credentials and endpoints.
    :param region_name: AWS region name; ``None`` uses the connection's.
    :param verify: Whether or not to verify SSL certificates.
    :param botocore_config: Configuration dictionary (key-values) for botocore client.
    """

    def __init__(
        self,
        *,
        job_arn: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = MAX_POLL_INTERVAL,
        strict: bool = False,
        timeout: float | None = None,
        deadline: str | None = None,
        margin_seconds: float = DEFAULT_WAIT_MARGIN.total_seconds(),
        stop_on_kill: bool = True,
        dag_id: str | None = None,
        model_id: str | None = None,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self.job_arn = job_arn
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.strict = strict
        if deadline is None and timeout is not None:
            deadline = (datetime.now(UTC) + timedelta(seconds=timeout)).isoformat()
        self.deadline = deadline
        self.margin_seconds = float(margin_seconds)
        self.stop_on_kill = stop_on_kill
        self.dag_id = dag_id
        self.model_id = model_id
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and keyword arguments that rebuild this trigger in the triggerer."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_arn": self.job_arn,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "strict": self.strict,
                "deadline": self.deadline,
                "margin_seconds": self.margin_seconds,
                "stop_on_kill": self.stop_on_kill,
                "dag_id": self.dag_id,
                "model_id": self.model_id,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "verify": self.verify,
                "botocore_config": self.botocore_config,
            },
        )

    def hook(self) -> BedrockBatchHook:
        """The hook the trigger polls with, built from the same parameters as the task's."""
        return BedrockBatchHook(
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            config=self.botocore_config,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the job ends or the deadline passes; yield one event (decisions: :class:`JobWatch`)."""
        watch = JobWatch(
            self.job_arn,
            poll_interval=self.poll_interval,
            strict=self.strict,
            deadline=datetime.fromisoformat(self.deadline) if self.deadline else None,
            margin=timedelta(seconds=self.margin_seconds),
            max_interval=self.max_poll_interval,
        )
        budget = status_call_budget()
        async with shared_async_client(
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            config=self.botocore_config,
        ) as client:
            while True:
                await budget.acquire()
                try:
                    job = await client.get_job(self.job_arn)
                except Exception as error:
                    if is_throttling(error):
                        metrics.count("throttled_calls", dag_id=self._dag_id(), model_id=self._model(watch))
                    step = watch.check_failed(error, datetime.now(UTC))
                else:
                    step = watch.checked(job, datetime.now(UTC))
                log_step(self.log, step)
                if step.event is not None:
                    if step.event.get("reason") == "ended":
                        metrics.job_ended(
                            watch.last_job, watch.started, dag_id=self._dag_id(), model_id=self._model(watch)
                        )
                    yield TriggerEvent(step.event)
                    return
                if step.reconnect:
                    await client.reconnect()
                await asyncio.sleep(step.delay)

    def _dag_id(self) -> str:
        return self.dag_id or str(getattr(getattr(self, "task_instance", None), "dag_id", None) or "unknown")

    def _model(self, watch: JobWatch) -> str:
        return self.model_id or metrics.model_of(watch.last_job)

    async def on_kill(self) -> None:
        """The waiting was cancelled by a user action: stop the job only if the user abandoned the task.

        The triggerer calls this when a user clears the deferred task, marks it failed or succeeded, and when
        the trigger moves to another triggerer. Only a task marked failed means "I no longer want this job";
        after a clear the next try reattaches to the running job, which must not be stopped under it.
        """
        job_id = job_id_from_arn(self.job_arn)
        if not self.stop_on_kill:
            return
        state = await aread_task_state(getattr(self, "task_instance", None))
        if not abandoned_by_user(state):
            self.log.info(
                "Waiting for job %s was cancelled (task state %s); the job keeps running and the task's "
                "next try reattaches to it. Mark the task failed to stop the job.",
                job_id,
                state or "unknown",
            )
            return
        if await self.hook().stop_job_async(self.job_arn):
            self.log.info("The task was marked failed: requested stop of job %s", job_id)
