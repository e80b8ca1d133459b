"""Daily KPIs from a results partition."""

from __future__ import annotations

import pyarrow as pa
import pytest

from bedrock_batch.cost import parse_price_table
from bedrock_batch.kpis import KPI_SCHEMA, daily_kpis

PRICES = parse_price_table(
    {
        "source": "test",
        "prices_as_of": "2026-01",
        "currency": "USD",
        "unit": "per 1,000 tokens",
        "models": {"anthropic.claude-3-haiku": {"input": 0.001, "output": 0.002}},
    }
)
HAIKU = "us.anthropic.claude-3-haiku-20240307-v1:0"


def results(rows: list[dict]) -> pa.Table:
    base = {
        "model_id": HAIKU,
        "status": "succeeded",
        "sentiment": None,
        "resolution": None,
        "primary_topic": None,
        "input_tokens": None,
        "output_tokens": None,
    }
    return pa.Table.from_pylist([{**base, **r} for r in rows])


class TestDailyKpis:
    def test_counts_shares_topics_and_cost(self):
        table = results(
            [
                {
                    "sentiment": "positive",
                    "resolution": "resolved",
                    "primary_topic": "Billing",
                    "input_tokens": 1000,
                    "output_tokens": 100,
                },
                {
                    "sentiment": "negative",
                    "resolution": "escalated",
                    "primary_topic": "billing",
                    "input_tokens": 3000,
                    "output_tokens": 300,
                },
                {
                    "sentiment": "negative",
                    "resolution": "resolved",
                    "primary_topic": "outage",
                    "input_tokens": 2000,
                    "output_tokens": 200,
                },
                {"status": "failed"},
                {"status": "quarantined"},
            ]
        )
        row = daily_kpis(table, "2026-11-21", prices=PRICES).to_pylist()[0]
        assert (row["calls"], row["succeeded"], row["failed"], row["quarantined"]) == (5, 3, 1, 1)
        assert row["sentiment_negative"] == pytest.approx(2 / 3)
        assert row["sentiment_neutral"] == 0
        assert row["resolution_rate"] == pytest.approx(2 / 3)
        assert row["escalation_rate"] == pytest.approx(1 / 3)
        assert row["top_topics"][0] == {"topic": "billing", "calls": 2}
        assert row["avg_input_tokens"] == 2000
        # (6000 * 0.001 + 600 * 0.002) / 1000 * 0.5 batch discount / 3 calls
        assert row["avg_cost_usd"] == pytest.approx(0.0036 / 3)

    def test_invalid_output_rows_are_counted_and_their_tokens_billed(self):
        table = results(
            [
                {"sentiment": "positive", "resolution": "resolved", "input_tokens": 1000, "output_tokens": 1},
                # A summary that broke the reply schema: no values, but the model answered and was paid.
                {"status": "invalid_output", "input_tokens": 3000, "output_tokens": 300},
                {"status": "failed"},
            ]
        )
        row = daily_kpis(table, "2026-11-21", prices=PRICES).to_pylist()[0]
        assert (row["calls"], row["succeeded"], row["invalid_output"], row["failed"]) == (3, 1, 1, 1)
        assert row["calls"] == row["succeeded"] + row["invalid_output"] + row["failed"] + row["quarantined"]
        assert row["sentiment_positive"] == 1
        assert row["resolution_rate"] == 1
        assert row["avg_input_tokens"] == 2000
        # (4000 * 0.001 + 301 * 0.002) / 1000 * 0.5 batch discount / 2 answered calls
        assert row["avg_cost_usd"] == pytest.approx(0.002301 / 2)

    def test_unknown_price_gives_unknown_cost(self):
        table = results([{"model_id": "acme.unknown-v1", "input_tokens": 10, "output_tokens": 1}])
        assert daily_kpis(table, "2026-11-21", prices=PRICES).column("avg_cost_usd").to_pylist() == [None]

    def test_empty_day_has_zero_calls_and_no_averages(self):
        schema = results(
            [{"sentiment": "x", "resolution": "x", "primary_topic": "x", "input_tokens": 1}]
        ).schema
        kpis = daily_kpis(schema.empty_table(), "2026-11-21", prices=PRICES)
        assert kpis.schema == KPI_SCHEMA
        assert kpis.to_pylist()[0]["calls"] == 0
        assert kpis.to_pylist()[0]["avg_input_tokens"] is None
