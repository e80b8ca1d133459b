"""Run report: built from the results table, accounting check, and its JSON, Markdown and log renderings."""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow as pa

from bedrock_batch.cost import estimate_cost
from bedrock_batch.report import JobSummary, RunReport, job_summaries, report_prefix, run_report, write_report
from bedrock_batch.storage import Storage


def make_report(**overrides) -> RunReport:
    values = {
        "ds": "2026-11-21",
        "dag_run_id": "scheduled__2026-11-21T06:00:00+00:00",
        "model_id": "anthropic.claude-3-haiku-20240307-v1:0",
        "input_records": 1200,
        "quarantined": 3,
        "succeeded": 1190,
        "failed": 7,
        "retried": 12,
        "input_tokens": 1_500_000,
        "output_tokens": 120_000,
        "estimated_cost_usd": Decimal("0.2625"),
        "jobs": [
            JobSummary(
                "cc-20261121-s0001-ab12",
                "arn:aws:bedrock:us-east-1:1:model-invocation-job/abc",
                "Completed",
                1197,
                3600.0,
            )
        ],
    }
    values.update(overrides)
    return RunReport(**values)


class TestRunReport:
    def test_accounted_when_outcomes_add_up(self):
        assert make_report().accounted
        assert not make_report(failed=6).accounted

    def test_invalid_output_is_an_outcome_of_its_own(self):
        report = make_report(succeeded=1180, invalid_output=10, repaired=4)
        assert report.accounted
        assert not make_report(invalid_output=10).accounted
        assert (report.to_dict()["invalid_output"], report.to_dict()["repaired"]) == (10, 4)
        assert "| invalid_output | 10 |" in report.to_markdown()
        assert "| repaired | 4 |" in report.to_markdown()
        assert [line.split()[:2] for line in report.to_text().splitlines()[3:5]] == [
            ["invalid_output", "10"],
            ["failed", "7"],
        ]

    def test_dict_has_the_documented_keys_and_serializes(self):
        data = make_report().to_dict()
        for key in (
            "input_records",
            "quarantined",
            "succeeded",
            "invalid_output",
            "failed",
            "retried",
            "repaired",
            "jobs",
            "input_tokens",
            "output_tokens",
            "estimated_cost_usd",
        ):
            assert key in data
        assert data["estimated_cost_usd"] == "0.2625"
        assert json.loads(json.dumps(data))["jobs"][0]["status"] == "Completed"

    def test_unknown_cost_is_reported_as_unknown_not_zero(self):
        report = make_report(estimated_cost_usd=None)
        assert report.to_dict()["estimated_cost_usd"] is None
        assert "unknown" in report.to_text()
        assert "$0" not in report.to_markdown()

    def test_the_estimate_made_before_any_job_is_beside_the_billed_cost(self):
        estimate = {
            "model_id": "anthropic.claude-3-haiku-20240307-v1:0",
            "records": 1_197,
            "on_demand_records": 0,
            "input_tokens": 1_400_000,
            "output_tokens": 1_225_728,
            "output_basis": "max_tokens",
            "history_runs": 0,
            "estimated_cost_usd": "0.94108",
        }
        report = make_report(cost_estimate=estimate)
        assert json.loads(json.dumps(report.to_dict()))["cost_estimate"] == estimate
        assert "| cost_estimated_before_run | $0.9411 (max_tokens) |" in report.to_markdown()
        assert "$0.9411 (max_tokens)" in report.to_text()
        assert make_report().to_dict()["cost_estimate"] is None
        unknown = make_report(cost_estimate={**estimate, "estimated_cost_usd": None})
        assert "| cost_estimated_before_run | unknown (max_tokens) |" in unknown.to_markdown()

    def test_the_cost_guards_limit_and_verdict_are_recorded(self):
        approved = {
            "estimated_cost_usd": "12.5",
            "limit_usd": "10.0",
            "verdict": "approved",
            "approved_by": "ann",
        }
        report = make_report(cost_guard=approved)
        assert json.loads(json.dumps(report.to_dict()))["cost_guard"] == approved
        assert "| cost_guard | approved by ann (limit $10) |" in report.to_markdown()
        within = {**approved, "limit_usd": "50", "verdict": "within", "approved_by": None}
        assert "within $50" in make_report(cost_guard=within).to_text()
        no_limit = {**within, "limit_usd": None, "verdict": "no_limit"}
        assert "| cost_guard | no limit |" in make_report(cost_guard=no_limit).to_markdown()
        assert make_report().to_dict()["cost_guard"] is None
        assert "| cost_guard | - |" in make_report().to_markdown()

    def test_markdown_and_text_list_every_job(self):
        report = make_report()
        assert "| cc-20261121-s0001-ab12 |" in report.to_markdown()
        assert "1,197 records" in report.to_text()
        assert "1,200" in report.to_text()


class TestManifestWarnings:
    MISMATCH = {
        "job_id": "abc123def456",
        "manifest": {"total": 200, "processed": 200, "success": 198, "error": 2},
        "read": {"total": 150, "success": 149, "error": 1},
    }

    def test_mismatches_and_missing_manifests_are_listed_not_fatal(self):
        report = make_report(manifest_mismatches=[self.MISMATCH], manifests_missing=["fff000fff000"])
        assert report.accounted
        data = json.loads(json.dumps(report.to_dict()))
        assert (data["manifest_mismatches"], data["manifests_missing"]) == ([self.MISMATCH], ["fff000fff000"])
        assert "| abc123def456 | 200 | 198 | 2 | 150 | 149 | 1 |" in report.to_markdown()
        assert "Jobs without a manifest.json.out: fff000fff000" in report.to_markdown()
        assert (
            "manifest mismatch: job abc123def456 manifest processed/success/error 200/198/2"
            in report.to_text()
        )
        assert "no manifest: fff000fff000" in report.to_text()

    def test_none_by_default(self):
        report = make_report()
        assert (report.manifest_mismatches, report.manifests_missing) == ([], [])
        assert "manifest" not in report.to_markdown()


class TestJobSummaries:
    def test_from_submit_results(self):
        jobs = job_summaries(
            [{"job_name": "n", "job_arn": "a", "status": "PartiallyCompleted", "records": 150}]
        )
        assert jobs == [JobSummary("n", "a", "PartiallyCompleted", 150, None)]


HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
JOB = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456"


def results_table(rows: list[tuple[str, str | None, int | None, int | None]]) -> pa.Table:
    status, job_arn, input_tokens, output_tokens = zip(*rows, strict=True)
    return pa.table(
        {
            "status": pa.array(status, pa.string()),
            "job_arn": pa.array(job_arn, pa.string()),
            "input_tokens": pa.array(input_tokens, pa.int64()),
            "output_tokens": pa.array(output_tokens, pa.int64()),
        }
    )


def report_of(table: pa.Table, model_id: str = HAIKU) -> RunReport:
    return run_report(
        table,
        ds="2026-11-21",
        dag_run_id="scheduled__2026-11-21",
        model_id=model_id,
        input_records=table.num_rows,
        retried=2,
        jobs=[
            {
                "job_name": "cc-s0001-a1",
                "job_arn": JOB,
                "status": "Completed",
                "records": 3,
                "duration_seconds": 60.0,
            }
        ],
    )


class TestRunReportFromTheTable:
    TABLE = results_table(
        [
            ("succeeded", JOB, 1000, 100),
            ("succeeded", JOB, 2000, 200),
            ("failed", JOB, None, None),
            ("succeeded", "on-demand", 400, 40),
            ("succeeded", "on-demand-retry", 600, 60),
            ("quarantined", None, None, None),
        ]
    )

    def test_counts_rows_by_outcome(self):
        report = report_of(self.TABLE)
        assert (report.succeeded, report.failed, report.quarantined, report.retried) == (4, 1, 1, 2)
        assert (report.invalid_output, report.repaired) == (0, 0)
        assert report.accounted

    def test_invalid_output_and_repaired_records(self):
        table = results_table(
            [
                ("succeeded", JOB, 1000, 100),
                ("invalid_output", JOB, 1000, 100),
                ("succeeded", "on-demand-repair", 1300, 90),
                ("invalid_output", "on-demand-repair", 1300, 120),
            ]
        )
        report = report_of(table)
        assert (report.succeeded, report.invalid_output, report.repaired, report.failed) == (2, 2, 1, 0)
        assert report.accounted
        # The repair round is invoked on demand: its tokens are billed in full.
        on_demand = estimate_cost(HAIKU, 2600, 210, batch=False)
        batch = estimate_cost(HAIKU, 2000, 200)
        assert on_demand is not None
        assert batch is not None
        assert report.estimated_cost_usd == batch + on_demand

    def test_sums_every_token(self):
        report = report_of(self.TABLE)
        assert (report.input_tokens, report.output_tokens) == (4000, 400)

    def test_batch_tokens_at_the_batch_price_and_on_demand_tokens_at_the_full_price(self):
        batch = estimate_cost(HAIKU, 3000, 300)
        on_demand = estimate_cost(HAIKU, 1000, 100, batch=False)
        assert batch is not None
        assert on_demand is not None
        assert report_of(self.TABLE).estimated_cost_usd == batch + on_demand
        assert on_demand == 2 * estimate_cost(HAIKU, 1000, 100)

    def test_a_model_without_a_price_has_an_unknown_cost(self):
        assert report_of(self.TABLE, model_id="acme.unpriced-model-v1").estimated_cost_usd is None

    def test_lists_the_jobs(self):
        assert report_of(self.TABLE).jobs == [JobSummary("cc-s0001-a1", JOB, "Completed", 3, 60.0)]


def test_write_report_writes_json_and_markdown(tmp_path):
    report = make_report()
    write_report(Storage(), report, str(tmp_path / "reports" / "ds=2026-11-21"))
    folder = tmp_path / "reports" / "ds=2026-11-21"
    assert json.loads((folder / "run_report.json").read_text()) == report.to_dict()
    assert (folder / "run_report.md").read_text() == report.to_markdown()


class TestReasons:
    def test_unsuccessful_records_are_counted_by_reason_code_most_frequent_first(self):
        table = pa.table(
            {
                "status": [
                    "failed",
                    "failed",
                    "failed",
                    "quarantined",
                    "invalid_output",
                    "invalid_output",
                    "succeeded",
                ],
                "job_arn": [JOB] * 7,
                "input_tokens": pa.array([None, None, None, None, 10, 10, 10], pa.int64()),
                "output_tokens": pa.array([None, None, None, None, 1, 1, 1], pa.int64()),
                "error_code": ["429", "400", "400", "empty_text", "invalid_output", "invalid_output", None],
                "parse_error": [
                    None,
                    None,
                    None,
                    None,
                    "$.sentiment: is not one of the 3 allowed values",
                    "the reply says: hello there",
                    None,
                ],
            }
        )
        report = report_of(table)
        assert report.reasons == {
            "failed": {"400": 2, "429": 1},
            "quarantined": {"empty_text": 1},
            # The schema path only; a parse_error that does not start with one is never shown as text.
            "invalid_output": {"$.sentiment": 1, "other": 1},
        }
        assert list(report.reasons["failed"]) == ["400", "429"]
        assert json.loads(json.dumps(report.to_dict()))["reasons"] == report.reasons

    def test_a_clean_run_has_no_reasons(self):
        assert report_of(results_table([("succeeded", JOB, 1, 1)])).reasons == {}


def test_the_report_of_a_day_is_under_reports_ds():
    assert report_prefix("s3://results/cc/", "2026-11-21") == "s3://results/cc/reports/ds=2026-11-21"
