"""Run report: accounting check and its JSON, Markdown and log renderings."""

from __future__ import annotations

import json
from decimal import Decimal

from bedrock_batch.report import JobSummary, RunReport, job_summaries


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

    def test_dict_has_the_documented_keys_and_serializes(self):
        data = make_report().to_dict()
        for key in (
            "input_records",
            "quarantined",
            "succeeded",
            "failed",
            "retried",
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

    def test_markdown_and_text_list_every_job(self):
        report = make_report()
        assert "| cc-20261121-s0001-ab12 |" in report.to_markdown()
        assert "1,197 records" in report.to_text()
        assert "1,200" in report.to_text()


class TestJobSummaries:
    def test_from_submit_results(self):
        jobs = job_summaries(
            [{"job_name": "n", "job_arn": "a", "status": "PartiallyCompleted", "records": 150}]
        )
        assert jobs == [JobSummary("n", "a", "PartiallyCompleted", 150, None)]
