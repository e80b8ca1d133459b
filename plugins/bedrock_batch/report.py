"""Run report for platform teams: what went in, what came out, which jobs ran, what it cost.

Built from counts and job metadata only; rendered as JSON, Markdown and a plain-text log table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class JobSummary:
    """One model invocation job (or the on-demand fallback) as the report lists it."""

    name: str
    arn: str | None
    status: str
    records: int
    duration_seconds: float | None = None


@dataclass(frozen=True)
class RunReport:
    """Counts of one pipeline run; every input record is in exactly one of the three outcome counts."""

    ds: str
    dag_run_id: str
    model_id: str
    input_records: int
    quarantined: int
    succeeded: int
    failed: int
    retried: int
    input_tokens: int
    output_tokens: int
    estimated_cost_usd: Decimal | None
    jobs: list[JobSummary] = field(default_factory=list)

    @property
    def accounted(self) -> bool:
        """True when quarantined + succeeded + failed adds up to the input records."""
        return self.quarantined + self.succeeded + self.failed == self.input_records

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; the cost is a string so no precision is lost (None when unknown)."""
        out = asdict(self)
        out["estimated_cost_usd"] = None if self.estimated_cost_usd is None else str(self.estimated_cost_usd)
        out["accounted"] = self.accounted
        return out

    def to_markdown(self) -> str:
        """The report as a Markdown document (summary table, then one row per job)."""
        lines = [
            f"# Run report {self.ds}",
            "",
            f"DAG run `{self.dag_run_id}`, model `{self.model_id}`",
            "",
            "| metric | value |",
            "|---|---:|",
            *(f"| {name} | {value} |" for name, value in self._metrics()),
            "",
            "| job | ARN | status | records | duration (s) |",
            "|---|---|---|---:|---:|",
            *(
                f"| {j.name} | {j.arn or '-'} | {j.status} | {j.records:,} | "
                f"{_duration(j.duration_seconds)} |"
                for j in self.jobs
            ),
        ]
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        """A fixed-width table for task logs (counts and ids only)."""
        width = max(len(name) for name, _ in self._metrics())
        rows = [f"{name:<{width}}  {value:>16}" for name, value in self._metrics()]
        rows.append("")
        rows.extend(
            f"{j.name:<40} {j.status:<20} {j.records:>8,} records  {_duration(j.duration_seconds):>8} s"
            for j in self.jobs
        )
        return "\n".join(rows)

    def _metrics(self) -> list[tuple[str, str]]:
        cost = "unknown" if self.estimated_cost_usd is None else f"${self.estimated_cost_usd:.4f}"
        return [
            ("input_records", f"{self.input_records:,}"),
            ("quarantined", f"{self.quarantined:,}"),
            ("succeeded", f"{self.succeeded:,}"),
            ("failed", f"{self.failed:,}"),
            ("retried", f"{self.retried:,}"),
            ("jobs", f"{len(self.jobs):,}"),
            ("input_tokens", f"{self.input_tokens:,}"),
            ("output_tokens", f"{self.output_tokens:,}"),
            ("estimated_cost_usd", cost),
        ]


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:,.0f}"


def job_summaries(results: Iterable[Mapping[str, Any]]) -> list[JobSummary]:
    """Job rows from the submit tasks' XCom results (name, ARN, status, record count, duration)."""
    return [
        JobSummary(
            name=str(r.get("job_name", "")),
            arn=r.get("job_arn"),
            status=str(r.get("status", "")),
            records=int(r.get("records") or 0),
            duration_seconds=r.get("duration_seconds"),
        )
        for r in results
    ]
