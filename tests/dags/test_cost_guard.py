"""The cost guard task and the overdue-run alert on real Airflow objects (no run, no AWS): what the guard
does with each estimate and limit, the approval it asks for and each answer, and the deadline alert the
pipeline's ``alert_after`` adds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.providers.standard.operators import hitl
from airflow.sdk import DAG
from airflow.sdk.exceptions import TaskAwaitingInput

from bedrock_batch.cost import ModelPrice, PriceTable
from bedrock_batch.estimate import estimate_run_cost
from bedrock_batch.factory import overdue_run_alert, pipeline_dag
from bedrock_batch.operators import BedrockBatchCostGuardOperator
from bedrock_batch.pipelines import load_pipeline

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
PRICES = PriceTable(models={"anthropic.claude-3-haiku": ModelPrice(Decimal("0.00025"), Decimal("0.00125"))})
# $0.0765: (100,000 x 0.00025 + 102,400 x 0.00125) / 1,000 at half price.
ESTIMATE = estimate_run_cost(
    HAIKU, records=200, input_tokens=100_000, max_output_tokens=102_400, prices=PRICES
)
UNPRICED = estimate_run_cost(
    "meta.llama9-v1", records=200, input_tokens=1, max_output_tokens=1, prices=PRICES
)


def guard(estimate: Any = ESTIMATE, **arguments: Any) -> BedrockBatchCostGuardOperator:
    with DAG("cost_guard_test", schedule=None):
        return BedrockBatchCostGuardOperator(
            task_id="cost_guard",
            prepared={"model_id": HAIKU, "cost_estimate": estimate.to_dict()},
            **arguments,
        )


def context() -> dict[str, Any]:
    return {"task_instance": SimpleNamespace(id=uuid.uuid4())}


def answer(option: str) -> dict[str, Any]:
    return {
        "chosen_options": [option],
        "params_input": {},
        "responded_at": datetime(2026, 11, 30, tzinfo=UTC),
        "responded_by_user": {"id": "7", "name": "finance-lead"},
    }


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The human-in-the-loop requests written (instead of the Execution API's)."""
    requests: list[dict[str, Any]] = []
    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **request: requests.append(request))
    return requests


def test_every_templated_field_is_an_attribute():
    operator = guard()
    assert {"prepared", "max_estimated_cost_usd", "cost_approval"} <= set(operator.template_fields)
    assert all(field in vars(operator) for field in operator.template_fields)


@pytest.mark.parametrize(
    ("limit", "verdict"), [(None, "no_limit"), ("None", "no_limit"), ("0.0765", "within"), (5, "within")]
)
def test_no_limit_or_within_it_passes_without_asking(asked, limit, verdict):
    result = guard(max_estimated_cost_usd=limit, cost_approval="True").execute(context())
    assert Decimal(str(result.pop("estimated_cost_usd"))) == Decimal("0.0765")
    assert result == {
        "limit_usd": None if verdict == "no_limit" else str(float(limit)),
        "verdict": verdict,
        "approved_by": None,
    }
    assert asked == []


def test_above_the_limit_without_approval_fails_with_the_estimate_and_the_limit(asked):
    with pytest.raises(AirflowFailException) as failure:
        guard(max_estimated_cost_usd="0.05", cost_approval="False").execute(context())
    assert str(failure.value).startswith(
        "estimated cost $0.0765 is above max_estimated_cost_usd $0.05; no job was created."
    )
    assert asked == []


def test_a_limit_with_an_unknown_price_fails_even_with_approval(asked):
    with pytest.raises(AirflowFailException, match=r"no price for model meta\.llama9-v1"):
        guard(UNPRICED, max_estimated_cost_usd=100, cost_approval=True).execute(context())
    assert asked == []
    # Without a limit an unknown price passes: nothing to compare.
    assert guard(UNPRICED).execute(context())["verdict"] == "no_limit"


def test_a_bad_limit_fails_naming_it():
    with pytest.raises(AirflowFailException, match="max_estimated_cost_usd must be at least 0"):
        guard(max_estimated_cost_usd="-1").execute(context())


class TestApproval:
    def test_above_the_limit_it_asks_and_waits(self, asked):
        operator = guard(max_estimated_cost_usd="0.05", cost_approval="True")
        with pytest.raises(TaskAwaitingInput):
            operator.execute(context())
        [request] = asked
        assert request["options"] == ["Approve", "Reject"]
        assert request["subject"] == "Approve $0.0765 for cost_guard_test, above its limit of $0.05"
        assert "| records | 200 (0 on demand) |" in request["body"]
        assert "| limit | $0.05 |" in request["body"]

    def test_approve_lets_the_run_go_on(self):
        result = guard(max_estimated_cost_usd="0.05", cost_approval="True").execute_complete(
            context(), answer("Approve")
        )
        assert Decimal(str(result.pop("estimated_cost_usd"))) == Decimal("0.0765")
        assert result == {
            "limit_usd": "0.05",
            "verdict": "approved",
            "approved_by": "finance-lead",
        }

    def test_reject_fails_the_guard_so_no_job_is_created(self):
        operator = guard(max_estimated_cost_usd="0.05", cost_approval="True")
        with pytest.raises(AirflowFailException) as failure:
            operator.execute_complete(context(), answer("Reject"))
        assert str(failure.value) == (
            "finance-lead rejected the estimated cost $0.0765 (limit $0.05); no job was created"
        )


class TestOverdueRunAlert:
    def test_alert_after_adds_a_deadline_from_when_the_run_was_queued(self, tmp_path):
        pipeline = load_pipeline("product_reviews", environ={})
        assert overdue_run_alert(pipeline) is None
        assert pipeline_dag(pipeline).deadline is None

        override = tmp_path / "override.yaml"
        override.write_text("alert_after: 6h\n")
        pipeline = load_pipeline(
            "product_reviews", environ={"BEDROCK_BATCH_PIPELINE_PRODUCT_REVIEWS_CONFIG": str(override)}
        )
        alert = overdue_run_alert(pipeline)
        assert alert is not None
        assert alert.interval == timedelta(hours=6)
        assert type(alert.reference).__name__ == "DagRunQueuedAtDeadline"
        assert alert.callback.path == "bedrock_batch.alerts.alert_overdue_run"
        assert alert.callback.kwargs == {"pipeline": "product_reviews", "alert_after": "6h"}
        assert pipeline_dag(pipeline).deadline == [alert]
