"""Cost estimates from the price table shipped in the package (or a file that overrides it)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from bedrock_batch.cost import (
    BATCH_DISCOUNT,
    DEFAULT_PRICE_FILE,
    ModelPrice,
    PriceTable,
    PriceTableError,
    estimate_cost,
    load_price_table,
    parse_price_table,
)
from bedrock_batch.models import (
    TOOL_USE_SYSTEM_PROMPT_TOKENS,
    OutputFormat,
    output_format_for,
    output_format_tokens,
)
from bedrock_batch.resources import PRICE_FILE_ENV

REPO = Path(__file__).resolve().parents[2]

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
TABLE = PriceTable(
    models={
        "anthropic.claude-3-haiku": ModelPrice(Decimal("0.00025"), Decimal("0.00125")),
        "anthropic.claude-opus-4": ModelPrice(Decimal("0.015"), Decimal("0.075")),
        "anthropic.claude-opus-4-5": ModelPrice(Decimal("0.005"), Decimal("0.025")),
    }
)


class TestEstimateCost:
    def test_batch_is_half_of_on_demand(self) -> None:
        on_demand = estimate_cost(HAIKU, 1_000_000, 100_000, batch=False, prices=TABLE)
        assert on_demand == Decimal("0.375")  # 1,000 x 0.00025 + 100 x 0.00125
        assert estimate_cost(HAIKU, 1_000_000, 100_000, prices=TABLE) == Decimal("0.1875")
        assert Decimal("0.5") == BATCH_DISCOUNT

    def test_exact_decimal_arithmetic(self) -> None:
        assert estimate_cost(HAIKU, 3, 7, batch=False, prices=TABLE) == Decimal("0.0000095")

    @pytest.mark.parametrize(
        "model_id",
        [
            "us.anthropic.claude-3-haiku-20240307-v1:0",
            "global.anthropic.claude-3-haiku-20240307-v1:0",
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0",
        ],
    )
    def test_profile_ids_and_arns_cost_like_the_base_model(self, model_id: str) -> None:
        assert estimate_cost(model_id, 1000, 1000, prices=TABLE) == Decimal("0.00075")

    def test_longest_prefix_wins(self) -> None:
        opus_4_5 = "anthropic.claude-opus-4-5-20251101-v1:0"
        opus_4_1 = "anthropic.claude-opus-4-1-20250805-v1:0"
        assert estimate_cost(opus_4_5, 1000, 0, batch=False, prices=TABLE) == Decimal("0.005")
        assert estimate_cost(opus_4_1, 1000, 0, batch=False, prices=TABLE) == Decimal("0.015")

    @pytest.mark.parametrize(
        "model_id",
        [
            "mistral.mistral-large-2407-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/x",
        ],
    )
    def test_unknown_price_is_none_not_zero(self, model_id: str) -> None:
        assert estimate_cost(model_id, 1000, 1000, prices=TABLE) is None

    def test_unknown_token_count_is_none(self) -> None:
        assert estimate_cost(HAIKU, None, 10, prices=TABLE) is None
        assert estimate_cost(HAIKU, 10, None, prices=TABLE) is None

    def test_zero_tokens_cost_zero(self) -> None:
        assert estimate_cost(HAIKU, 0, 0, prices=TABLE) == 0

    def test_negative_tokens_are_refused(self) -> None:
        with pytest.raises(ValueError, match="negative"):
            estimate_cost(HAIKU, -1, 0, prices=TABLE)

    def test_default_table_is_used_without_prices(self) -> None:
        assert estimate_cost(HAIKU, 1_000_000, 0) == Decimal("0.125")


class TestLoadPriceTable:
    def test_default_file_is_the_one_copy_shipped_in_the_package(self) -> None:
        package = REPO / "plugins" / "bedrock_batch"
        assert Path(str(DEFAULT_PRICE_FILE)) == package / "pricing" / "bedrock_batch_prices.json"
        copies = [path for top in ("dags", "include", "plugins") for path in (REPO / top).rglob("*prices*")]
        assert copies == [Path(str(DEFAULT_PRICE_FILE))]

    def test_default_file_has_source_date_and_every_family(self) -> None:
        table = load_price_table()
        assert table.source.startswith("https://aws.amazon.com/bedrock/pricing")
        assert table.prices_as_of
        for model_id in (
            "anthropic.claude-3-5-haiku-20241022-v1:0",
            "amazon.nova-lite-v1:0",
            "meta.llama3-1-8b-instruct-v1:0",
            "amazon.titan-text-express-v1",
            "mistral.mistral-7b-instruct-v0:2",
            "mistral.mistral-large-2402-v1:0",
        ):
            assert table.price_for(model_id) is not None, model_id

    def test_default_file_keeps_prices_exact(self) -> None:
        assert load_price_table().price_for(HAIKU) == ModelPrice(Decimal("0.00025"), Decimal("0.00125"))

    def test_explicit_path(self, tmp_path: Path) -> None:
        path = tmp_path / "prices.json"
        path.write_text(json.dumps({"source": "test", "models": {"meta.llama3": {"input": 1, "output": 2}}}))
        table = load_price_table(path)
        assert table.source == "test"
        assert table.price_for("meta.llama3-8b-instruct-v1:0") == ModelPrice(Decimal(1), Decimal(2))

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(PriceTableError, match="does not exist"):
            load_price_table(tmp_path / "absent.json")

    def test_environment_variable_overrides_the_shipped_table(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "prices.json"
        models = {"anthropic.claude-3-haiku": {"input": 1, "output": 2}}
        path.write_text(json.dumps({"source": "ours", "models": models}))
        monkeypatch.setenv(PRICE_FILE_ENV, str(path))
        assert load_price_table().source == "ours"
        assert estimate_cost(HAIKU, 1_000, 1_000, batch=False) == Decimal(3)
        monkeypatch.delenv(PRICE_FILE_ENV)
        assert load_price_table().source.startswith("https://aws.amazon.com/bedrock/pricing")

    def test_environment_variable_naming_a_missing_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(PRICE_FILE_ENV, str(tmp_path / "absent.json"))
        with pytest.raises(PriceTableError, match=f"absent.json does not exist.*{PRICE_FILE_ENV}"):
            load_price_table()

    def test_not_json(self, tmp_path: Path) -> None:
        path = tmp_path / "prices.json"
        path.write_text("{not json")
        with pytest.raises(PriceTableError, match="JSON"):
            load_price_table(path)


class TestParsePriceTable:
    @pytest.mark.parametrize(
        ("data", "match"),
        [
            ({}, "'models'"),
            ({"models": {"x": {"input": 1}}}, "'input' and 'output'"),
            ({"models": {"x": {"input": -1, "output": 1}}}, "non-negative"),
            ({"models": {"x": {"input": "cheap", "output": 1}}}, "number"),
            ({"models": {"x": {"input": True, "output": 1}}}, "number"),
        ],
    )
    def test_malformed(self, data: dict[str, object], match: str) -> None:
        with pytest.raises(PriceTableError, match=match):
            parse_price_table(data)


MISTRAL_PRICES = [
    ("mistral.mistral-7b-instruct-v0:2", "0.00015", "0.0002"),
    ("mistral.mixtral-8x7b-instruct-v0:1", "0.00045", "0.0007"),
    ("mistral.mistral-small-2402-v1:0", "0.001", "0.003"),
    ("mistral.mistral-large-2402-v1:0", "0.004", "0.012"),
]


class TestMistralPrices:
    @pytest.mark.parametrize(("model_id", "input_per_1k", "output_per_1k"), MISTRAL_PRICES)
    def test_default_table_has_the_on_demand_price(
        self, model_id: str, input_per_1k: str, output_per_1k: str
    ) -> None:
        price = ModelPrice(Decimal(input_per_1k), Decimal(output_per_1k))
        assert load_price_table().price_for(model_id) == price
        assert load_price_table().price_for(f"eu.{model_id}") == price

    def test_batch_discount_applies_to_mistral_too(self) -> None:
        model = "mistral.mistral-7b-instruct-v0:2"
        assert estimate_cost(model, 1_000_000, 1_000_000, batch=False) == Decimal("0.35")
        assert estimate_cost(model, 1_000_000, 1_000_000) == Decimal("0.175")

    def test_the_table_says_where_the_mistral_rows_come_from(self) -> None:
        data = json.loads(Path(str(DEFAULT_PRICE_FILE)).read_text(encoding="utf-8"))
        assert "Mistral" in data["mistral_note"]
        assert "mistral.mistral-large-2407" in data["mistral_note"]  # why Large 2 has no row


SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}},
    "required": ["summary"],
    "additionalProperties": False,
}


class TestReplySchemaCost:
    """The tokens a reply schema adds to every record, priced like the rest of the prompt."""

    def test_tool_mode_costs_its_schema_and_tool_prompt_on_every_record(self) -> None:
        output = OutputFormat(SCHEMA, "summary", mode="tool")
        extra = output_format_tokens(output)
        # 112-character schema (28 tokens) + "summary" (2 tokens) + the tool-use system prompt.
        assert extra == 28 + 2 + TOOL_USE_SYSTEM_PROMPT_TOKENS
        records = 1_000
        plain = estimate_cost(HAIKU, 500 * records, 100 * records, prices=TABLE)
        with_schema = estimate_cost(HAIKU, (500 + extra) * records, 100 * records, prices=TABLE)
        assert plain is not None
        assert with_schema is not None
        # 370,000 more input tokens at $0.00025 per 1K, halved for batch.
        assert with_schema - plain == Decimal("0.04625")

    def test_prompt_mode_for_claude_3_haiku_costs_far_less_than_a_forced_tool(self) -> None:
        prompt = output_format_for(HAIKU, SCHEMA, "summary")
        tool = output_format_for(HAIKU, SCHEMA, "summary", mode="tool")
        assert prompt.mode == "prompt"
        assert output_format_tokens(prompt) == 28 + 1  # the schema and the "{" prefill
        assert output_format_tokens(tool) - output_format_tokens(prompt) > TOOL_USE_SYSTEM_PROMPT_TOKENS
