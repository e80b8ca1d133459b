"""The cost estimate made before any job: token counts from prepare, output tokens from max_tokens or the
history of earlier run reports, the price table with the batch discount, and the limit check."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from bedrock_batch.config import QuotaConfig
from bedrock_batch.cost import ModelPrice, PriceTable
from bedrock_batch.errors import CostUnknownError
from bedrock_batch.estimate import (
    CostEstimate,
    OutputHistory,
    check_cost_limit,
    estimate_run_cost,
    output_history,
    over_limit_message,
    read_output_history,
)
from bedrock_batch.models import InferenceParams, estimate_tokens, requested_max_tokens
from bedrock_batch.prepare import prepare, prepare_records
from bedrock_batch.prompts import load_template
from bedrock_batch.sources import BatchRecord, SourceRow
from bedrock_batch.storage import Storage

HAIKU = "us.anthropic.claude-3-haiku-20240307-v1:0"
PRICES = PriceTable(models={"anthropic.claude-3-haiku": ModelPrice(Decimal("0.00025"), Decimal("0.00125"))})


def estimate(**options: object) -> CostEstimate:
    arguments: dict[str, object] = {
        "records": 200,
        "input_tokens": 100_000,
        "max_output_tokens": 200 * 512,
        "prices": PRICES,
    }
    return estimate_run_cost(HAIKU, **{**arguments, **options})  # type: ignore[arg-type]


class TestEstimateRunCost:
    def test_output_tokens_are_every_records_max_tokens_at_the_batch_price(self):
        result = estimate()
        assert (result.input_tokens, result.output_tokens, result.output_basis) == (
            100_000,
            102_400,
            "max_tokens",
        )
        # (100,000 x $0.00025 + 102,400 x $0.00125) / 1,000, half price in batch.
        assert result.estimated_cost_usd == Decimal("0.0765")

    def test_records_bound_for_the_on_demand_fallback_pay_the_full_price(self):
        # A quarter of the records on demand: a quarter of the tokens at twice the batch price.
        assert estimate(on_demand_records=50).estimated_cost_usd == Decimal("0.0765") * Decimal("1.25")

    def test_history_replaces_the_upper_bound_but_never_exceeds_it(self):
        result = estimate(history=OutputHistory(tokens_per_record=100.2, runs=3))
        assert (result.output_tokens, result.output_basis, result.history_runs) == (20_040, "history", 3)
        assert (
            result.estimated_cost_usd == (100_000 * Decimal("0.00025") + 20_040 * Decimal("0.00125")) / 2000
        )
        capped = estimate(history=OutputHistory(tokens_per_record=9_000, runs=1))
        assert capped.output_tokens == 102_400

    def test_a_model_without_a_price_has_an_unknown_estimate_not_zero(self):
        unknown = estimate_run_cost(
            "meta.llama9-v1", records=10, input_tokens=10, max_output_tokens=10, prices=PRICES
        )
        assert unknown.estimated_cost_usd is None
        assert unknown.cost_text == "unknown"
        empty = estimate_run_cost(
            "meta.llama9-v1", records=0, input_tokens=0, max_output_tokens=0, prices=PRICES
        )
        assert empty.estimated_cost_usd is None
        assert estimate(records=0, input_tokens=0, max_output_tokens=0).estimated_cost_usd == 0

    def test_round_trips_through_xcom_json(self):
        result = estimate(history=OutputHistory(12.5, 2), on_demand_records=20)
        record = json.loads(json.dumps(result.to_dict()))
        assert record["estimated_cost_usd"] == str(result.estimated_cost_usd)
        assert CostEstimate.from_dict(record) == result

    def test_negative_counts_are_refused(self):
        with pytest.raises(ValueError, match="must not be negative"):
            estimate(input_tokens=-1)
        with pytest.raises(ValueError, match="on-demand records at most"):
            estimate(on_demand_records=201)


class TestLimit:
    def test_no_limit_within_at_and_over(self):
        result = estimate()  # $0.0765
        assert check_cost_limit(result, None) == "no_limit"
        assert check_cost_limit(result, 1) == "within"
        assert check_cost_limit(result, Decimal("0.0765")) == "within"
        assert check_cost_limit(result, 0.07) == "over"
        assert check_cost_limit(result, 0) == "over"

    def test_a_limit_with_an_unknown_price_fails_clearly(self):
        unknown = estimate_run_cost(
            "meta.llama9-v1", records=1, input_tokens=1, max_output_tokens=1, prices=PRICES
        )
        assert check_cost_limit(unknown, None) == "no_limit"
        with pytest.raises(
            CostUnknownError, match=r"\$5 but the price table has no price for model meta.llama9"
        ):
            check_cost_limit(unknown, 5)

    def test_the_message_gives_the_estimate_the_limit_and_the_counts(self):
        message = over_limit_message(estimate(), 0.05)
        assert message.startswith("estimated cost $0.0765 is above max_estimated_cost_usd $0.05; no job")
        assert "200 records" in message
        assert "~100,000 input tokens, 102,400 output tokens from every record's max_tokens" in message


def report(
    ds: str, model: str = HAIKU, output_tokens: int = 1_000, succeeded: int = 9, invalid: int = 1
) -> dict:
    return {
        "ds": ds,
        "model_id": model,
        "output_tokens": output_tokens,
        "succeeded": succeeded,
        "invalid_output": invalid,
    }


class TestHistory:
    def test_the_average_is_over_replied_records_of_the_same_model(self):
        history = output_history(
            [
                report("2026-01-01", output_tokens=1_000, succeeded=9, invalid=1),
                report("2026-01-02", output_tokens=3_000, succeeded=10, invalid=0),
                report("2026-01-03", model="amazon.nova-pro-v1:0", output_tokens=99_999),
                report("2026-01-04", output_tokens=0, succeeded=0, invalid=0),  # nothing replied
            ],
            HAIKU,
        )
        assert history == OutputHistory(tokens_per_record=200.0, runs=2)
        assert output_history([], HAIKU) is None

    def test_reads_the_latest_reports_before_the_run_from_the_results_root(self, tmp_path: Path):
        for day, tokens in [("01", 100), ("02", 200), ("03", 300), ("04", 400), ("05", 5_000)]:
            folder = tmp_path / "results" / "reports" / f"ds=2026-01-{day}"
            folder.mkdir(parents=True)
            (folder / "run_report.json").write_text(
                json.dumps(report(f"2026-01-{day}", output_tokens=tokens))
            )
            (folder / "run_report.md").write_text("# not read")
        (tmp_path / "results" / "reports" / "ds=2026-01-03" / "run_report.json").write_text("{broken")
        history = read_output_history(
            Storage(), str(tmp_path / "results"), model_id=HAIKU, before="2026-01-05", runs=3
        )
        # 2026-01-05 is the run's own date (a rerun) and left out; of 02-04 the broken report too.
        assert history == OutputHistory(tokens_per_record=(200 + 400) / 20, runs=2)

    def test_no_reports_folder_is_no_history(self, tmp_path: Path):
        assert (
            read_output_history(Storage(), str(tmp_path / "none"), model_id=HAIKU, before="2026-01-01")
            is None
        )


class TestRequestedMaxTokens:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ({"anthropic_version": "x", "max_tokens": 300}, 300),
            ({"prompt": "x", "max_gen_len": 256}, 256),
            ({"messages": [], "inferenceConfig": {"maxTokens": 128}}, 128),
            ({"messages": [], "inferenceConfig": {"max_new_tokens": 64}}, 64),
            ({"inputText": "x", "textGenerationConfig": {"maxTokenCount": 32}}, 32),
            ({"messages": []}, None),
            ({"max_tokens": True}, None),
            ({"max_tokens": "300"}, None),
        ],
    )
    def test_each_family_field(self, body, expected):
        assert requested_max_tokens(body) == expected


class TestPrepareCountsWhileStreaming:
    def test_input_tokens_are_the_accepted_records_prompt_estimates(self, tmp_path: Path):
        template = load_template("call_center_summary", "v1")
        texts = ["Agent: hello\nCustomer: my bill is wrong " * n for n in (1, 5, 20)]
        rows = [SourceRow(f"call-{i}", {"transcript": t}, f"f:{i}") for i, t in enumerate(texts)]
        rows.append(SourceRow("call-empty", {"transcript": "  "}, "f:9"))  # quarantined: not counted
        result = prepare(
            rows,
            tmp_path,
            template=template,
            model_id=HAIKU,
            quotas=QuotaConfig(),
            params=InferenceParams(max_tokens=300),
        )
        literal = sum(estimate_tokens(p) for p in (*template.system, *template.user) if isinstance(p, str))
        assert result.records == 3
        assert result.input_tokens == sum(
            literal + estimate_tokens(template.field_value("transcript", t)) for t in texts
        )
        assert result.max_output_tokens == 3 * 300

    def test_records_built_elsewhere_count_their_lines_and_their_own_limits(self, tmp_path: Path):
        body = {"anthropic_version": "bedrock-2023-05-31", "messages": [{"role": "user", "content": "hi"}]}
        records = [
            BatchRecord("A0000000001", {**body, "max_tokens": 50}, "in:1"),
            BatchRecord("A0000000002", body, "in:2"),
        ]
        result = prepare_records(records, tmp_path, quotas=QuotaConfig(), default_max_tokens=700)
        sizes = result.load_sizes().tolist()
        assert result.input_tokens == sum(-(-size // 4) for size in sizes)
        assert result.max_output_tokens == 50 + 700
