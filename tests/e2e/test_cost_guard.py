"""The cost guard end to end through dag.test(), on moto's S3 server and the Bedrock emulator: a run above
its limit creates no job and its cost_guard task says why; a run within its limit with approval on asks no
one, runs through, and its report carries the estimate prepare made before any job."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bedrock_batch_dev.sample_data.calls import generate_calls
from bedrock_batch_dev.sample_data.writers import write_calls
from tests.e2e.test_call_center_dag import read_report, run_dag, stack, use_config

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
__all__ = ["stack"]  # the fixture, imported so pytest finds it here


def task_states(run: Any) -> dict[str, str]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        instances = session.query(TaskInstance).filter(TaskInstance.run_id == run.run_id).all()
        return {ti.task_id: str(ti.state) for ti in instances}


def prepared_estimate(run: Any) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(XComModel.run_id == run.run_id, XComModel.task_id == "prepare", XComModel.key == "run")
            .one()
        )
        return dict(XComModel.deserialize_value(row)["cost_estimate"])


def test_above_the_limit_no_job_is_created_and_the_guard_says_why(stack, tmp_path, monkeypatch, capfd):
    use_config(tmp_path, monkeypatch, retries=0)
    ds = "2026-10-05"
    s3 = stack.client("s3")
    write_calls(generate_calls(130, seed=21), "text", f"s3://calls/{ds}/text/", s3_client=s3)

    run = run_dag(ds, "text", max_estimated_cost_usd=0.0001)

    assert run.state == "failed"
    states = task_states(run)
    assert (states["prepare"], states["cost_guard"]) == ("success", "failed")
    assert states["on_demand"] == "upstream_failed"
    assert states.get("submit") in (None, "upstream_failed")  # its map never expanded
    assert stack.admin.jobs() == []
    assert stack.admin.created_job_count() == 0
    assert stack.admin.requests("InvokeModel") == []
    estimate = prepared_estimate(run)
    assert estimate["records"] == 130
    assert Decimal(estimate["estimated_cost_usd"]) > Decimal("0.0001")
    output = capfd.readouterr()
    assert "is above max_estimated_cost_usd $0.0001; no job was created" in output.out + output.err
    assert "130 records (0 on demand)" in output.out + output.err


def test_within_the_limit_approval_asks_no_one_and_the_report_holds_the_estimate(
    stack, tmp_path, monkeypatch
):
    use_config(tmp_path, monkeypatch, retries=0, poll_interval_seconds=0.1)
    ds = "2026-10-06"
    s3 = stack.client("s3")
    write_calls(generate_calls(110, seed=22), "text", f"s3://calls/{ds}/text/", s3_client=s3)

    run = run_dag(ds, "text", max_estimated_cost_usd=1000, cost_approval=True)

    assert run.state == "success"
    assert task_states(run)["cost_guard"] == "success"
    report = read_report(s3, ds)
    estimate = report["cost_estimate"]
    assert (estimate["records"], estimate["on_demand_records"], estimate["output_basis"]) == (
        110,
        0,
        "max_tokens",
    )
    # An upper bound: every reply is at most max_tokens, and the prompt estimate errs high.
    assert estimate["output_tokens"] >= report["output_tokens"]
    assert Decimal(estimate["estimated_cost_usd"]) >= Decimal(report["estimated_cost_usd"])
    assert stack.admin.created_job_count() == 1
