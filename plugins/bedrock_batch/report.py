"""Run report for platform teams: what went in, what came out, which jobs ran, what it cost.

Built from the results table's counts and the jobs' metadata only (:func:`run_report`); rendered as JSON,
Markdown and a plain-text log table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bedrock_batch.cost import estimate_cost
from bedrock_batch.estimate import usd
from bedrock_batch.stage_results import CostEstimateRecord, CostGuardResult, ManifestMismatch
from bedrock_batch.staging import ON_DEMAND_LABEL, REPAIR_LABEL
from bedrock_batch.storage import Storage, join_uri

if TYPE_CHECKING:
    import pyarrow as pa

    from bedrock_batch.results import ManifestCheck


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
    """Counts of one pipeline run; every input record is in exactly one of the four outcome counts:
    ``quarantined``, ``succeeded``, ``invalid_output`` (a reply that does not conform to the reply schema,
    after the repair round if there was one) and ``failed``. ``repaired`` counts the succeeded records whose
    conforming reply came from the repair round. ``cost_estimate`` is what prepare estimated before any job
    (``None`` for runs of earlier versions), beside ``estimated_cost_usd``, the cost of the tokens billed;
    ``cost_guard`` the cost guard's limit and verdict (``None`` when the run recorded none).
    ``reasons`` counts the records of each unsuccessful outcome by reason code (:func:`reason_counts`).
    """

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
    invalid_output: int = 0
    repaired: int = 0
    manifest_mismatches: list[ManifestMismatch] = field(default_factory=list)
    manifests_missing: list[str] = field(default_factory=list)
    cost_estimate: CostEstimateRecord | None = None
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    cost_guard: CostGuardResult | None = None

    @property
    def accounted(self) -> bool:
        """True when quarantined + succeeded + invalid_output + failed adds up to the input records."""
        outcomes = self.quarantined + self.succeeded + self.invalid_output + self.failed
        return outcomes == self.input_records

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
        if self.manifest_mismatches:
            lines += [
                "",
                "Jobs whose manifest.json.out does not match their output:",
                "",
                "| job | manifest processed | manifest success | manifest error | lines | replies | errors |",
                "|---|---:|---:|---:|---:|---:|---:|",
                *(f"| {' | '.join(_mismatch_cells(m))} |" for m in self.manifest_mismatches),
            ]
        if self.manifests_missing:
            lines += ["", f"Jobs without a manifest.json.out: {', '.join(self.manifests_missing)}"]
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
        rows.extend(
            "manifest mismatch: job {} manifest processed/success/error {}/{}/{}, "
            "output lines/replies/errors {}/{}/{}".format(*_mismatch_cells(m))
            for m in self.manifest_mismatches
        )
        if self.manifests_missing:
            rows.append(f"no manifest: {', '.join(self.manifests_missing)}")
        return "\n".join(rows)

    def _metrics(self) -> list[tuple[str, str]]:
        cost = "unknown" if self.estimated_cost_usd is None else f"${self.estimated_cost_usd:.4f}"
        return [
            ("input_records", f"{self.input_records:,}"),
            ("quarantined", f"{self.quarantined:,}"),
            ("succeeded", f"{self.succeeded:,}"),
            ("invalid_output", f"{self.invalid_output:,}"),
            ("failed", f"{self.failed:,}"),
            ("retried", f"{self.retried:,}"),
            ("repaired", f"{self.repaired:,}"),
            ("jobs", f"{len(self.jobs):,}"),
            ("input_tokens", f"{self.input_tokens:,}"),
            ("output_tokens", f"{self.output_tokens:,}"),
            ("estimated_cost_usd", cost),
            ("cost_estimated_before_run", _estimate_text(self.cost_estimate)),
            ("cost_guard", guard_text(self.cost_guard)),
        ]


def _estimate_text(estimate: CostEstimateRecord | None) -> str:
    if estimate is None:
        return "-"
    cost = estimate["estimated_cost_usd"]
    return f"{'unknown' if cost is None else f'${Decimal(cost):.4f}'} ({estimate['output_basis']})"


def guard_text(guard: Mapping[str, Any] | None) -> str:
    """The cost guard's verdict against its limit: ``no limit``, ``within $5``, ``approved by ann (limit
    $5)``; ``-`` when none was recorded."""
    if not guard:
        return "-"
    verdict, limit = str(guard.get("verdict") or "-"), guard.get("limit_usd")
    if limit is None or verdict == "no_limit":
        return "no limit"
    limit_text = usd(Decimal(str(limit)))
    if verdict == "approved":
        return f"approved by {guard.get('approved_by') or 'unknown'} (limit {limit_text})"
    return f"{verdict} {limit_text}"


#: Where publish writes a day's report: ``<results_uri>/reports/ds=<ds>/run_report.json`` (and ``.md``).
REPORTS_FOLDER = "reports"
REPORT_FILE = "run_report.json"

#: The outcomes whose records the report counts by reason.
REASON_OUTCOMES = ("failed", "quarantined", "invalid_output")
# The path part of an invalid_output row's parse_error ("$.sentiment: is not one of ..."): a location in the
# reply schema, never reply text. Anything else is counted under "other".
_SCHEMA_PATH = re.compile(r"\$[A-Za-z0-9_.\[\]-]{0,120}")


def reason_counts(table: pa.Table) -> dict[str, dict[str, int]]:
    """Records of each unsuccessful outcome by reason code, most frequent first.

    ``failed`` and ``quarantined`` rows count by ``error_code`` (``400``, ``429``, ``missing``,
    ``empty_text`` ...); ``invalid_output`` rows by the schema path where the reply first broke the reply
    schema (``$.sentiment``), never by any text of the reply.

    :param table: the results table (``status``, ``error_code``, ``parse_error`` columns).
    """
    if "status" not in table.column_names:
        return {}
    import pyarrow.compute as pc

    # Counted in Arrow, one outcome at a time: only the (usually few) invalid_output rows reach Python.
    counts: dict[str, dict[str, int]] = {}
    for outcome in REASON_OUTCOMES:
        rows = table.filter(pc.equal(table.column("status"), outcome))
        if not rows.num_rows:
            continue
        by_code = counts.setdefault(outcome, {})
        if outcome == "invalid_output":
            errors = rows.column("parse_error").to_pylist() if "parse_error" in rows.column_names else []
            for error in errors or [None] * rows.num_rows:
                path = str(error or "").split(":", 1)[0].strip()
                code = path if _SCHEMA_PATH.fullmatch(path) else "other"
                by_code[code] = by_code.get(code, 0) + 1
        elif "error_code" in rows.column_names:
            grouped = rows.group_by("error_code").aggregate([("status", "count")]).to_pydict()
            for value, count in zip(grouped["error_code"], grouped["status_count"], strict=True):
                code = str(value or "unknown")
                by_code[code] = by_code.get(code, 0) + int(count)
        else:
            by_code["unknown"] = rows.num_rows
    return _most_frequent_first(counts)


def _most_frequent_first(counts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    return {
        outcome: dict(sorted(by_code.items(), key=lambda item: (-item[1], item[0])))
        for outcome, by_code in counts.items()
    }


def _mismatch_cells(mismatch: ManifestMismatch) -> list[str]:
    manifest, read = mismatch["manifest"], mismatch["read"]
    processed = manifest["processed"] if manifest["processed"] is not None else manifest["total"]
    counts = [
        processed,
        manifest["success"],
        manifest["error"],
        read["total"],
        read["success"],
        read["error"],
    ]
    return [mismatch["job_id"], *("-" if n is None else f"{n:,}" for n in counts)]


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


@dataclass
class ResultTally:
    """What the run report counts in a results table, added up one piece of the table at a time (so a run's
    table need never be in memory as a whole)."""

    statuses: dict[str, int] = field(default_factory=dict)
    repaired: int = 0
    batch_tokens: tuple[int, int] = (0, 0)
    fallback_tokens: tuple[int, int] = (0, 0)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, table: pa.Table) -> None:
        """Count one piece of the results table (``status``, ``job_arn``, ``input_tokens``,
        ``output_tokens``, ``error_code``, ``parse_error`` columns)."""
        import pyarrow.compute as pc

        status = table["status"]
        on_demand = pc.fill_null(pc.starts_with(table["job_arn"], ON_DEMAND_LABEL), False)

        def tokens(column: str, rows: Any = None) -> int:
            values = table[column] if rows is None else table[column].filter(rows)
            return int(pc.sum(values).as_py() or 0)

        grouped = table.group_by("status").aggregate([("status", "count")]).to_pydict()
        for value, count in zip(grouped["status"], grouped["status_count"], strict=True):
            self.statuses[str(value)] = self.statuses.get(str(value), 0) + int(count)
        repaired = pc.and_(pc.equal(status, "succeeded"), pc.equal(table["job_arn"], REPAIR_LABEL))
        self.repaired += int(pc.sum(repaired).as_py() or 0)
        batch = pc.invert(on_demand)
        self.batch_tokens = (
            self.batch_tokens[0] + tokens("input_tokens", batch),
            self.batch_tokens[1] + tokens("output_tokens", batch),
        )
        self.fallback_tokens = (
            self.fallback_tokens[0] + tokens("input_tokens", on_demand),
            self.fallback_tokens[1] + tokens("output_tokens", on_demand),
        )
        for outcome, by_code in reason_counts(table).items():
            mine = self.reasons.setdefault(outcome, {})
            for code, count in by_code.items():
                mine[code] = mine.get(code, 0) + count

    @property
    def input_tokens(self) -> int:
        """Input tokens of every row, batch and on demand."""
        return self.batch_tokens[0] + self.fallback_tokens[0]

    @property
    def output_tokens(self) -> int:
        """Output tokens of every row, batch and on demand."""
        return self.batch_tokens[1] + self.fallback_tokens[1]

    def count(self, status: str) -> int:
        """Rows of one status."""
        return self.statuses.get(status, 0)

    def sorted_reasons(self) -> dict[str, dict[str, int]]:
        """The reasons of each unsuccessful outcome, most frequent first (as :func:`reason_counts`)."""
        return _most_frequent_first(self.reasons)


def run_report(
    table: pa.Table | Iterable[pa.Table] | ResultTally,
    *,
    ds: str,
    dag_run_id: str,
    model_id: str,
    input_records: int,
    retried: int,
    jobs: Iterable[Mapping[str, Any]],
    manifests: ManifestCheck | None = None,
    cost_estimate: CostEstimateRecord | None = None,
    cost_guard: CostGuardResult | None = None,
) -> RunReport:
    """The report of a published run, from its results table.

    Counts rows by ``status``, and the succeeded rows whose reply came from the repair round (``job_arn``
    :data:`~bedrock_batch.staging.REPAIR_LABEL`); splits the tokens between batch jobs (billed at the batch
    discount) and the on-demand fallback and repair round (rows whose ``job_arn`` starts with
    :data:`~bedrock_batch.staging.ON_DEMAND_LABEL`, billed in full) for the estimated cost. Only the tokens of
    each record's final reply are in the table: an invalid reply that was repaired, or a retried failure,
    is not counted.

    :param table: the results table (``status``, ``job_arn``, ``input_tokens``, ``output_tokens`` columns),
        or its pieces (:class:`ResultTally`), or a tally already made.
    :param ds: the run's date.
    :param dag_run_id: the run's id.
    :param model_id: the model the records were sent to (its price).
    :param input_records: the source rows the run read.
    :param retried: the records that went through the retry round.
    :param jobs: the submit results of both rounds, each with its ``duration_seconds`` if known.
    :param manifests: each job's manifest against its output
        (:func:`~bedrock_batch.results.reconcile_manifests`).
    :param cost_estimate: the estimate prepare made before any job (the prepared run's ``cost_estimate``).
    :param cost_guard: the cost guard's result (its XCom): the limit and the verdict.
    """
    import pyarrow as pa

    if isinstance(table, ResultTally):
        tally = table
    else:
        tally = ResultTally()
        for piece in [table] if isinstance(table, pa.Table) else table:
            tally.add(piece)
    batch_cost = estimate_cost(model_id, *tally.batch_tokens)
    fallback_cost = estimate_cost(model_id, *tally.fallback_tokens, batch=False)
    return RunReport(
        ds=ds,
        dag_run_id=dag_run_id,
        model_id=model_id,
        input_records=input_records,
        quarantined=tally.count("quarantined"),
        succeeded=tally.count("succeeded"),
        invalid_output=tally.count("invalid_output"),
        failed=tally.count("failed"),
        repaired=tally.repaired,
        retried=retried,
        input_tokens=tally.input_tokens,
        output_tokens=tally.output_tokens,
        estimated_cost_usd=None
        if batch_cost is None or fallback_cost is None
        else batch_cost + fallback_cost,
        jobs=job_summaries(jobs),
        manifest_mismatches=list(manifests.mismatches) if manifests else [],
        manifests_missing=list(manifests.missing) if manifests else [],
        cost_estimate=cost_estimate,
        reasons=tally.sorted_reasons(),
        cost_guard=cost_guard,
    )


def report_prefix(results_uri: str, ds: str) -> str:
    """The folder of the report of day ``ds``: ``<results_uri>/reports/ds=<ds>``."""
    return join_uri(results_uri, REPORTS_FOLDER, f"ds={ds}")


def write_report(storage: Storage, report: RunReport, prefix: str) -> None:
    """Write ``run_report.json`` and ``run_report.md`` under ``prefix``.

    :param storage: local and S3 access.
    :param report: the report.
    :param prefix: e.g. ``<results_uri>/reports/ds=<ds>``.
    """
    from bedrock_batch.results import write_bytes, write_json

    write_json(storage, report.to_dict(), join_uri(prefix, REPORT_FILE))
    write_bytes(storage, report.to_markdown().encode(), join_uri(prefix, "run_report.md"))
