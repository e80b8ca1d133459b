"""The toolkit's metrics, sent through Airflow's own ``Stats``: StatsD, DogStatsD or OpenTelemetry, whichever
Airflow's ``[metrics]`` section turns on, with Airflow's prefix, allow and block lists.

Every name starts with :data:`PREFIX` and carries the tags ``dag_id`` and ``model``. Only StatsD with
DogStatsD (``statsd_datadog_enabled``) or InfluxDB tags (``statsd_influxdb_enabled``) and OpenTelemetry carry
tags; plain StatsD drops them, so there each metric is also sent a second time with the DAG and the model in
its name (``bedrock_batch.records.succeeded.<dag_id>.<model>``), the way Airflow names its own per-DAG
metrics. Where tags arrive that second name would only double every series, so it is not sent.

The values are computed by pure functions (:func:`run_metrics`, :func:`job_timing_metrics`); :func:`emit`
sends them and never raises: a metrics failure is logged at DEBUG and the task goes on. Only counts, token
numbers, money and durations are sent, never text of a record. See ``docs/metrics.md``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from bedrock_batch.aws_errors import is_throttling

if TYPE_CHECKING:
    from bedrock_batch.estimate import CostEstimate
    from bedrock_batch.report import RunReport

PREFIX = "bedrock_batch"
# A StatsD counter carries integers: the estimated cost goes out in millionths of a US dollar.
MICRO_USD_PER_USD = 1_000_000
# The job statuses after the queue: the first description in one of them ends the job's queue time.
RUNNING_STATUSES = frozenset({"InProgress", "Stopping"})

_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_T = TypeVar("_T")

log = logging.getLogger(__name__)

Kind = Literal["counter", "timer"]


@dataclass(frozen=True)
class Metric:
    """One value to send: ``name`` below :data:`PREFIX` (e.g. ``records.succeeded``), its kind and value.

    A counter's value is an increment (an integer), a timer's a :class:`~datetime.timedelta`.
    """

    name: str
    kind: Kind
    value: int | timedelta


def run_metrics(report: RunReport) -> list[Metric]:
    """The published run's counters: records per outcome, tokens, and the estimated cost (when known).

    :param report: the run report (:func:`~bedrock_batch.report.run_report`).
    """
    metrics = [
        Metric("records.succeeded", "counter", report.succeeded),
        Metric("records.failed", "counter", report.failed),
        Metric("records.quarantined", "counter", report.quarantined),
        Metric("records.invalid_output", "counter", report.invalid_output),
        Metric("tokens.input", "counter", report.input_tokens),
        Metric("tokens.output", "counter", report.output_tokens),
    ]
    if report.estimated_cost_usd is not None:
        metrics.append(Metric("cost.estimated_micro_usd", "counter", micro_usd(report.estimated_cost_usd)))
    return metrics


def estimate_metrics(estimate: CostEstimate) -> list[Metric]:
    """The prepared run's estimated cost (before any job) in millionths of a dollar; none when the model has
    no price.

    :param estimate: prepare's estimate (:class:`~bedrock_batch.estimate.CostEstimate`).
    """
    if estimate.estimated_cost_usd is None:
        return []
    return [Metric("cost.run_estimate_micro_usd", "counter", micro_usd(estimate.estimated_cost_usd))]


def micro_usd(usd: Decimal) -> int:
    """``usd`` in millionths of a dollar, rounded half up (StatsD counters carry integers)."""
    from decimal import ROUND_HALF_UP

    return int((usd * MICRO_USD_PER_USD).to_integral_value(rounding=ROUND_HALF_UP))


def running_since(job: Mapping[str, Any]) -> datetime | None:
    """When a job described as InProgress (or later, stopping) left the queue, as far as one description
    tells: its ``lastModifiedTime``. The service reports no start time; its last modification is the move to
    InProgress unless it changed the job again since, so this is exact for the first description read after
    the move and an upper bound otherwise. ``None`` for a job that is still queued or has ended.
    """
    if job.get("status") not in RUNNING_STATUSES:
        return None
    modified = job.get("lastModifiedTime")
    return modified if isinstance(modified, datetime) else None


def job_timing_metrics(job: Mapping[str, Any], started: datetime | None) -> list[Metric]:
    """The timers of an ended job: ``job.duration`` (``submitTime`` to ``endTime``, as the service reports
    them) and ``job.queue_time`` (``submitTime`` to ``started``, when a wait saw the job running).

    :param job: the job's last description (GetModelInvocationJob).
    :param started: see :func:`running_since`; ``None``: no wait saw the job running, no queue time.
    """
    submitted, ended = job.get("submitTime"), job.get("endTime")
    if not isinstance(submitted, datetime):
        return []
    metrics = []
    if isinstance(ended, datetime):
        metrics.append(Metric("job.duration", "timer", max(ended - submitted, timedelta(0))))
    if started is not None:
        metrics.append(Metric("job.queue_time", "timer", max(started - submitted, timedelta(0))))
    return metrics


def stat_names(name: str, *, dag_id: str, model_id: str, tags_carried: bool) -> list[str]:
    """The names a metric is sent under: ``bedrock_batch.<name>``, plus, when the backend drops tags,
    ``bedrock_batch.<name>.<dag_id>.<model>`` with each part's dots doubled to ``__`` (as Airflow does for
    task ids in its per-DAG names) and any character StatsD names do not allow replaced by ``_``.

    :param name: the metric below :data:`PREFIX`, e.g. ``records.succeeded``.
    :param dag_id: the DAG's id.
    :param model_id: model id, inference-profile id or ARN.
    :param tags_carried: whether the configured backend carries tags.
    """
    full = f"{PREFIX}.{name}"
    if tags_carried:
        return [full]
    return [full, f"{full}.{name_part(dag_id)}.{name_part(model_id)}"]


def name_part(value: str) -> str:
    """``value`` as one dot-free segment of a StatsD name (``anthropic.claude-3-haiku-20240307-v1:0`` becomes
    ``anthropic__claude-3-haiku-20240307-v1_0``)."""
    return _INVALID_NAME_CHARS.sub("_", value.replace(".", "__")) or "_"


def tags_for(*, dag_id: str, model_id: str) -> dict[str, str]:
    """The tags of every metric."""
    return {"dag_id": dag_id, "model": model_id}


def emit(metrics: Iterable[Metric], *, dag_id: str, model_id: str) -> None:
    """Send ``metrics`` through Airflow's ``Stats``; never raises (a failure is logged at DEBUG).

    :param metrics: what to send.
    :param dag_id: the DAG the values belong to (a tag, or part of the name under plain StatsD).
    :param model_id: the model the values belong to (likewise).
    """
    try:
        stats = _stats()
        tags = tags_for(dag_id=dag_id, model_id=model_id)
        carried = _tags_carried()
        for metric in metrics:
            for stat in stat_names(metric.name, dag_id=dag_id, model_id=model_id, tags_carried=carried):
                if metric.kind == "counter":
                    stats.incr(stat, metric.value, tags=tags)
                else:
                    stats.timing(stat, metric.value, tags=tags)
    except Exception:
        log.debug("Could not send metrics %s", [m.name for m in metrics], exc_info=True)


def count(name: str, value: int = 1, *, dag_id: str, model_id: str) -> None:
    """Send one counter increment (see :func:`emit`)."""
    emit([Metric(name, "counter", value)], dag_id=dag_id, model_id=model_id)


def job_ended(job: Mapping[str, Any] | None, started: datetime | None, *, dag_id: str, model_id: str) -> None:
    """Send the timers of a job a wait saw end (see :func:`job_timing_metrics`)."""
    if job is not None:
        emit(job_timing_metrics(job, started), dag_id=dag_id, model_id=model_id)


def model_of(job: Mapping[str, Any] | None) -> str:
    """The model of a job description, ``unknown`` before the job was first described."""
    return str((job or {}).get("modelId") or "unknown")


def counting_throttles(call: Callable[..., _T], on_throttled: Callable[[], Any]) -> Callable[..., _T]:
    """``call``, calling ``on_throttled()`` each time it raises a throttling error (then re-raising it)."""

    def counted(*args: Any, **kwargs: Any) -> _T:
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if is_throttling(error):
                on_throttled()
            raise

    return counted


def _stats() -> Any:
    """Airflow's Task SDK ``Stats``, set up from ``[metrics]`` as Airflow's own processes set it up.

    A task process has it set up by Airflow's task runner. The triggerer sets up its own copy in its main
    process, not the Task SDK's that triggers run with, and ``dag.test()`` sets up none: there it is set up
    here, once per process, the same way.
    """
    from airflow.sdk._shared.observability.metrics import stats as shared_stats
    from airflow.sdk.observability import stats

    if getattr(shared_stats, "_factory", None) is None:
        from airflow.sdk.configuration import conf
        from airflow.sdk.observability.metrics.stats_utils import get_stats_factory

        stats.initialize(
            factory=get_stats_factory(),
            export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True),
        )
    return stats


def _tags_carried() -> bool:
    """Whether the configured backend carries tags (plain StatsD drops them)."""
    from airflow.sdk.configuration import conf

    if not conf.getboolean("metrics", "statsd_on", fallback=False):
        return True  # OpenTelemetry, or nothing at all
    return conf.getboolean("metrics", "statsd_datadog_enabled", fallback=False) or conf.getboolean(
        "metrics", "statsd_influxdb_enabled", fallback=False
    )
