"""The rows of the Bedrock batch page, built from what the services return; no I/O, no Airflow.

- a :class:`JobRow` per job the toolkit created: its ``ListModelInvocationJobs`` summary (status, model,
  record counts, times), when ``ListTagsForResource`` shows the tags every submit task puts on its job
  (:data:`TOOLKIT_TAGS`, see :func:`bedrock_batch.submission.job_tags`); a finished job's tokens and estimated
  cost from its ``manifest.json.out``;
- a :class:`ModelRow` per model: its active jobs in the account against the configured concurrency quota,
  and the job slots held under each pipeline's ``<staging_uri>/_job_slots/``;
- a :class:`DayRow` per day and DAG: the run report publish wrote to
  ``<results_uri>/reports/ds=<ds>/run_report.json`` (records, tokens, cost, unsuccessful records by reason,
  the cost estimated before any job and the cost guard's verdict);
- a :class:`Snapshot` holds them all, and :meth:`Snapshot.visible_to` what a user who may read some DAGs sees.

Nothing here carries a prompt, a record or a reply: counts, ids, sizes and reason codes only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from bedrock_batch.cost import estimate_cost
from bedrock_batch.jobs import ACTIVE_STATUSES, job_id_from_arn
from bedrock_batch.models import base_model_id

#: The tags every job the submit operator creates carries; a job with all of them is the toolkit's.
TOOLKIT_TAGS = ("dag_id", "run_id", "shard", "round")
#: Reasons shown per unsuccessful outcome of a day.
TOP_REASONS = 3
DEFAULT_LOOKBACK_DAYS = 7
_CONSOLE_DOMAINS = {"aws-cn": "amazonaws.cn", "aws-us-gov": "amazonaws-us-gov.com"}


@dataclass(frozen=True)
class Source:
    """Where the page reads one pipeline's data (the platform team's configuration decides which).

    :param dag_id: the pipeline's DAG.
    :param results_uri: ``s3://`` prefix of its results; its run reports are under ``reports/ds=<ds>/``.
    :param staging_uri: ``s3://`` prefix of its staging; its job slots are under ``_job_slots/``.
    :param model_id: the model its jobs use.
    :param max_concurrent_jobs: the model's concurrency quota the pipeline is configured with.
    :param aws_conn_id: the Airflow connection its tasks use.
    """

    dag_id: str
    results_uri: str
    staging_uri: str
    model_id: str
    max_concurrent_jobs: int
    aws_conn_id: str = "aws_default"

    @property
    def slots_uri(self) -> str:
        """The job slots' prefix, as the pipeline's submit tasks use it."""
        return f"{self.staging_uri.rstrip('/')}/_job_slots/"


@dataclass(frozen=True)
class Problem:
    """Something the page could not read; ``dag_id`` when it concerns one DAG only (shown to its readers)."""

    message: str
    dag_id: str | None = None


@dataclass(frozen=True)
class JobRow:
    """One batch inference job the toolkit created.

    ``task_id`` and ``map_index`` name the submit task instance that created it when the adapter found it
    (Airflow's own records); ``None`` otherwise.
    """

    job_arn: str
    job_name: str
    dag_id: str
    run_id: str
    shard: str
    round: str
    model_id: str
    status: str
    submitted_at: datetime | None
    ended_at: datetime | None
    age_seconds: float | None
    total_records: int
    processed_records: int
    success_records: int
    error_records: int
    input_tokens: int | None = None
    output_tokens: int | None = None
    estimated_cost_usd: Decimal | None = None
    task_id: str | None = None
    map_index: int | None = None

    @property
    def job_id(self) -> str:
        """The 12-character job id."""
        return job_id_from_arn(self.job_arn)

    @property
    def active(self) -> bool:
        """Whether the job counts against its model's concurrency quota."""
        return self.status in ACTIVE_STATUSES

    @property
    def progress(self) -> float | None:
        """Processed records as a fraction of the total; ``None`` while the total is unknown (validating)."""
        if not self.total_records:
            return None
        return min(self.processed_records / self.total_records, 1.0)

    @property
    def console_url(self) -> str:
        """The job's page in the Bedrock console."""
        return console_url(self.job_arn)


@dataclass(frozen=True)
class ModelRow:
    """One model: its active jobs against the concurrency quota, and the job slots held.

    :param model_id: the base model id (profiles and ARNs of one model share its quota).
    :param active_jobs: Submitted, Validating, Scheduled and InProgress jobs of the model in the account,
        the toolkit's or not.
    :param toolkit_active_jobs: those among them the toolkit created.
    :param quota: the smallest ``max_concurrent_jobs`` the pipelines using the model are configured with;
        ``None`` when no configured pipeline uses it.
    :param slots_held: job slots busy now, over every slot folder of the model.
    :param slot_capacity: job slots there are, over the same folders.
    :param dag_ids: the DAGs using the model.
    """

    model_id: str
    active_jobs: int
    toolkit_active_jobs: int
    quota: int | None
    slots_held: int
    slot_capacity: int
    dag_ids: tuple[str, ...]


@dataclass(frozen=True)
class DayRow:
    """One day of one DAG, from its run report.

    :param estimated_cost_usd: the cost of the tokens billed.
    :param reasons: for ``failed``, ``quarantined`` and ``invalid_output``: the :data:`TOP_REASONS` most
        frequent reason codes with their counts.
    :param pre_run_cost_usd: the cost estimated before any job; ``None`` also for a model without a price.
    :param pre_run_basis: where that estimate took its output tokens from: ``max_tokens`` (an upper bound) or
        ``history`` (of ``pre_run_history_runs`` earlier runs); ``None``: the report has no estimate (runs
        of earlier versions).
    :param cost_verdict: the cost guard's verdict (``no_limit``, ``within``, ``approved``) against
        ``cost_limit_usd``, approved by ``cost_approved_by``; ``None``: not recorded.
    """

    ds: str
    dag_id: str
    dag_run_id: str
    model_id: str
    input_records: int
    succeeded: int
    failed: int
    quarantined: int
    invalid_output: int
    input_tokens: int
    output_tokens: int
    estimated_cost_usd: Decimal | None
    reasons: Mapping[str, tuple[tuple[str, int], ...]]
    report_uri: str
    jobs: int = 0
    pre_run_cost_usd: Decimal | None = None
    pre_run_basis: str | None = None
    pre_run_history_runs: int = 0
    cost_limit_usd: Decimal | None = None
    cost_verdict: str | None = None
    cost_approved_by: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything the page shows, at ``generated_at``."""

    generated_at: datetime
    jobs: tuple[JobRow, ...] = ()
    models: tuple[ModelRow, ...] = ()
    days: tuple[DayRow, ...] = ()
    problems: tuple[Problem, ...] = ()
    lookback_days: int = DEFAULT_LOOKBACK_DAYS

    @property
    def dag_ids(self) -> set[str]:
        """Every DAG the snapshot mentions."""
        return (
            {job.dag_id for job in self.jobs}
            | {day.dag_id for day in self.days}
            | {dag_id for model in self.models for dag_id in model.dag_ids}
            | {problem.dag_id for problem in self.problems if problem.dag_id}
        )

    def visible_to(self, dag_ids: Iterable[str]) -> Snapshot:
        """The snapshot as a user who may read only ``dag_ids`` sees it: other DAGs' jobs, days and problems
        are left out, and a model only its DAGs use is left out with them."""
        allowed = set(dag_ids)
        return replace(
            self,
            jobs=tuple(job for job in self.jobs if job.dag_id in allowed),
            days=tuple(day for day in self.days if day.dag_id in allowed),
            models=tuple(
                replace(model, dag_ids=tuple(d for d in model.dag_ids if d in allowed))
                for model in self.models
                if allowed.intersection(model.dag_ids)
            ),
            problems=tuple(p for p in self.problems if p.dag_id is None or p.dag_id in allowed),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: times in ISO 8601, costs as decimal strings (``None`` when unknown)."""
        return {
            "generated_at": self.generated_at.isoformat(),
            "lookback_days": self.lookback_days,
            "jobs": [
                {
                    "job_arn": j.job_arn,
                    "job_id": j.job_id,
                    "job_name": j.job_name,
                    "dag_id": j.dag_id,
                    "run_id": j.run_id,
                    "shard": j.shard,
                    "round": j.round,
                    "model_id": j.model_id,
                    "status": j.status,
                    "active": j.active,
                    "submitted_at": _iso(j.submitted_at),
                    "ended_at": _iso(j.ended_at),
                    "age_seconds": j.age_seconds,
                    "total_records": j.total_records,
                    "processed_records": j.processed_records,
                    "success_records": j.success_records,
                    "error_records": j.error_records,
                    "input_tokens": j.input_tokens,
                    "output_tokens": j.output_tokens,
                    "estimated_cost_usd": _money(j.estimated_cost_usd),
                    "console_url": j.console_url,
                    "task_id": j.task_id,
                    "map_index": j.map_index,
                }
                for j in self.jobs
            ],
            "models": [
                {
                    "model_id": m.model_id,
                    "active_jobs": m.active_jobs,
                    "toolkit_active_jobs": m.toolkit_active_jobs,
                    "quota": m.quota,
                    "slots_held": m.slots_held,
                    "slot_capacity": m.slot_capacity,
                    "dag_ids": list(m.dag_ids),
                }
                for m in self.models
            ],
            "days": [
                {
                    "ds": d.ds,
                    "dag_id": d.dag_id,
                    "dag_run_id": d.dag_run_id,
                    "model_id": d.model_id,
                    "input_records": d.input_records,
                    "succeeded": d.succeeded,
                    "failed": d.failed,
                    "quarantined": d.quarantined,
                    "invalid_output": d.invalid_output,
                    "input_tokens": d.input_tokens,
                    "output_tokens": d.output_tokens,
                    "estimated_cost_usd": _money(d.estimated_cost_usd),
                    "jobs": d.jobs,
                    "pre_run_cost_usd": _money(d.pre_run_cost_usd),
                    "pre_run_basis": d.pre_run_basis,
                    "pre_run_history_runs": d.pre_run_history_runs,
                    "cost_limit_usd": _money(d.cost_limit_usd),
                    "cost_verdict": d.cost_verdict,
                    "cost_approved_by": d.cost_approved_by,
                    "reasons": {k: [list(pair) for pair in v] for k, v in d.reasons.items()},
                    "report_uri": d.report_uri,
                }
                for d in self.days
            ],
            "problems": [{"message": p.message, "dag_id": p.dag_id} for p in self.problems],
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


# --- rows from what the services return -----------------------------------------------------------------


def toolkit_tags(tags: Iterable[Mapping[str, Any]]) -> dict[str, str] | None:
    """The job's tags as a mapping when it carries every one of :data:`TOOLKIT_TAGS`, else ``None``.

    :param tags: ``ListTagsForResource``'s ``tags`` (``[{"key", "value"}]``).
    """
    mapping = {str(tag.get("key")): str(tag.get("value", "")) for tag in tags}
    return mapping if all(mapping.get(key) for key in TOOLKIT_TAGS) else None


def as_utc(value: Any) -> datetime | None:
    """A service timestamp (a datetime, or ISO 8601 text) in UTC; ``None`` when it is neither."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def job_row(
    summary: Mapping[str, Any],
    tags: Mapping[str, str],
    now: datetime,
    tokens: tuple[int | None, int | None] = (None, None),
) -> JobRow:
    """A job's row from its ``ListModelInvocationJobs`` summary and its tags.

    :param summary: the job's summary (``jobArn``, ``status``, ``modelId``, times, record counts).
    :param tags: its tags (see :func:`toolkit_tags`).
    :param now: the time its age is measured at.
    :param tokens: (input, output) tokens from its manifest; unknown until the job has ended.
    """
    submitted = as_utc(summary.get("submitTime"))
    ended = as_utc(summary.get("endTime"))
    model_id = str(summary.get("modelId", ""))
    input_tokens, output_tokens = tokens
    return JobRow(
        job_arn=str(summary["jobArn"]),
        job_name=str(summary.get("jobName", "")),
        dag_id=tags["dag_id"],
        run_id=tags["run_id"],
        shard=tags["shard"],
        round=tags["round"],
        model_id=model_id,
        status=str(summary.get("status", "")),
        submitted_at=submitted,
        ended_at=ended,
        age_seconds=None if submitted is None else max((now - submitted).total_seconds(), 0.0),
        total_records=int(summary.get("totalRecordCount") or 0),
        processed_records=int(summary.get("processedRecordCount") or 0),
        success_records=int(summary.get("successRecordCount") or 0),
        error_records=int(summary.get("errorRecordCount") or 0),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        estimated_cost_usd=estimate_cost(model_id, input_tokens, output_tokens),
    )


def console_url(job_arn: str) -> str:
    """The job's details page in the Amazon Bedrock console (region and partition from its ARN)."""
    parts = job_arn.split(":")
    partition = parts[1] if len(parts) > 3 else "aws"
    region = parts[3] if len(parts) > 3 else "us-east-1"
    domain = _CONSOLE_DOMAINS.get(partition, "aws.amazon.com")
    return (
        f"https://console.{domain}/bedrock/home?region={region}"
        f"#/batch-inference/details?arn={quote(job_arn, safe='')}"
    )


def top_reasons(
    reasons: Mapping[str, Mapping[str, int]], limit: int = TOP_REASONS
) -> dict[str, tuple[tuple[str, int], ...]]:
    """The ``limit`` most frequent reason codes of each outcome (ties by code), from a report's reasons."""
    top: dict[str, tuple[tuple[str, int], ...]] = {}
    for outcome, counts in reasons.items():
        if not isinstance(counts, Mapping):
            continue
        ranked = sorted(
            ((str(code), int(n)) for code, n in counts.items()), key=lambda pair: (-pair[1], pair[0])
        )
        if ranked:
            top[str(outcome)] = tuple(ranked[:limit])
    return top


def day_row(source: Source, report: Mapping[str, Any], report_uri: str) -> DayRow:
    """A day's row from a run report (``run_report.json``).

    :param source: the pipeline whose results the report is under.
    :param report: the report's JSON.
    :param report_uri: where it was read.
    """
    cost = report.get("estimated_cost_usd")
    raw_reasons = report.get("reasons")
    estimate = _mapping(report.get("cost_estimate"))
    guard = _mapping(report.get("cost_guard"))
    return DayRow(
        ds=str(report.get("ds", "")),
        dag_id=source.dag_id,
        dag_run_id=str(report.get("dag_run_id", "")),
        model_id=str(report.get("model_id", source.model_id)),
        input_records=int(report.get("input_records") or 0),
        succeeded=int(report.get("succeeded") or 0),
        failed=int(report.get("failed") or 0),
        quarantined=int(report.get("quarantined") or 0),
        invalid_output=int(report.get("invalid_output") or 0),
        input_tokens=int(report.get("input_tokens") or 0),
        output_tokens=int(report.get("output_tokens") or 0),
        estimated_cost_usd=None if cost is None else Decimal(str(cost)),
        reasons=top_reasons(raw_reasons) if isinstance(raw_reasons, Mapping) else {},
        report_uri=report_uri,
        jobs=len(report.get("jobs") or ()),
        pre_run_cost_usd=_decimal(estimate.get("estimated_cost_usd")),
        pre_run_basis=str(estimate.get("output_basis") or "max_tokens") if estimate else None,
        pre_run_history_runs=int(estimate.get("history_runs") or 0),
        cost_limit_usd=_decimal(guard.get("limit_usd")),
        cost_verdict=str(guard["verdict"]) if guard.get("verdict") else None,
        cost_approved_by=str(guard["approved_by"]) if guard.get("approved_by") else None,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _decimal(value: Any) -> Decimal | None:
    """A report's decimal string as a :class:`Decimal`; ``None`` when absent or not a number."""
    if value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def model_rows(
    sources: Sequence[Source],
    listed: Iterable[Mapping[str, Any]],
    jobs: Iterable[JobRow],
    slots: Mapping[str, tuple[int, int]],
) -> list[ModelRow]:
    """One row per model that a source is configured with or a toolkit job used.

    :param sources: the configured pipelines.
    :param listed: every job summary of the accounts (the toolkit's or not).
    :param jobs: the toolkit's jobs.
    :param slots: base model id → (slots held, slot capacity) over its slot folders.
    """
    models: dict[str, dict[str, Any]] = {}

    def entry(model_id: str) -> dict[str, Any]:
        return models.setdefault(
            base_model_id(model_id), {"quotas": [], "dag_ids": set(), "active": 0, "toolkit": 0}
        )

    for source in sources:
        row = entry(source.model_id)
        row["quotas"].append(source.max_concurrent_jobs)
        row["dag_ids"].add(source.dag_id)
    for summary in listed:
        if (
            summary.get("status") in ACTIVE_STATUSES
            and base_model_id(str(summary.get("modelId", ""))) in models
        ):
            models[base_model_id(str(summary["modelId"]))]["active"] += 1
    for job in jobs:
        row = entry(job.model_id)
        row["dag_ids"].add(job.dag_id)
        row["toolkit"] += int(job.active)
    return [
        ModelRow(
            model_id=model_id,
            active_jobs=max(row["active"], row["toolkit"]),
            toolkit_active_jobs=row["toolkit"],
            quota=min(row["quotas"]) if row["quotas"] else None,
            slots_held=slots.get(model_id, (0, 0))[0],
            slot_capacity=slots.get(model_id, (0, 0))[1],
            dag_ids=tuple(sorted(row["dag_ids"])),
        )
        for model_id, row in sorted(models.items())
    ]
