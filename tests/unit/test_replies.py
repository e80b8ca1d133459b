"""A run's reply format: declared from a schema file or mapping, recorded in the run, and every reply read
back with the very same schema."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pyarrow as pa
import pytest

from bedrock_batch.errors import ConfigError, SchemaError
from bedrock_batch.models import family_for
from bedrock_batch.replies import (
    FREE_TEXT_COLUMN,
    INVALID_OUTPUT,
    RESULT_COLUMNS,
    SUCCEEDED,
    ReplyFormat,
    load_reply_schema,
)
from tests.conftest import REPO
from tests.unit.review_schema import REVIEW

CLAUDE_3 = "anthropic.claude-3-haiku-20240307-v1:0"
CLAUDE_45 = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
NOVA = "amazon.nova-lite-v1:0"
CALL_CENTER = REPO / "include" / "pipelines" / "call_center_summarization" / "reply_schema.json"


def declare(schema: Any = REVIEW, model_id: str = CLAUDE_3, **options: Any) -> ReplyFormat:
    invocation_type = options.get("invocation_type", "InvokeModel")
    family = options.pop("family", family_for(model_id, invocation_type=invocation_type))
    return ReplyFormat.declare(schema, model_id=model_id, family=family, **options)


def anthropic(text: str) -> dict[str, Any]:
    return {
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 120, "output_tokens": 9},
    }


class TestDeclare:
    @pytest.mark.parametrize("nothing", [None, "", "None"])
    def test_no_schema_is_free_text(self, nothing):
        reply = declare(nothing)
        assert reply == ReplyFormat()
        assert reply.columns == pa.schema([(FREE_TEXT_COLUMN, pa.string())])
        assert reply.instructions == ""

    @pytest.mark.parametrize(
        ("model_id", "options", "mode", "prefill", "strict"),
        [
            (CLAUDE_3, {}, "prompt", True, False),
            (CLAUDE_45, {}, "native", True, True),
            (NOVA, {}, "tool", True, False),
            (CLAUDE_3, {"invocation_type": "Converse"}, "prompt", True, False),
            (CLAUDE_3, {"structured_output": "tool"}, "tool", True, False),
            (CLAUDE_45, {"structured_output": "prompt"}, "prompt", True, True),
        ],
    )
    def test_the_mode_is_the_models_best_unless_asked(self, model_id, options, mode, prefill, strict):
        output = declare(model_id=model_id, **options).output
        assert output is not None
        assert (output.mode, output.prefill, output.strict) == (mode, prefill, strict)

    def test_the_service_gets_the_schema_without_validator_only_keywords(self):
        output = declare(model_id=CLAUDE_45).output
        assert output is not None
        assert output.schema["properties"]["stars"] == {
            "type": "integer",
            "description": "Constraints: at least 1; at most 5.",
        }

    def test_prompt_mode_instructions_carry_the_whole_schema(self):
        assert '"maximum":5' in declare().instructions
        assert declare(model_id=CLAUDE_45).instructions == ""

    def test_a_mode_the_family_cannot_carry(self):
        with pytest.raises(ConfigError, match=r"llama family cannot carry.*structured_output"):
            declare(model_id="meta.llama3-1-70b-instruct-v1:0", structured_output="native")

    def test_an_unknown_mode(self):
        with pytest.raises(ConfigError, match="structured_output must be one of"):
            declare(structured_output="json")

    def test_records_built_elsewhere_keep_the_schema_for_validation_only(self):
        reply = declare(family=None)
        assert reply.output is None
        assert reply.schema is not None


class TestLoadReplySchema:
    def test_a_file_is_named_after_its_pipeline_folder(self):
        schema = load_reply_schema(str(CALL_CENTER))
        assert schema is not None
        assert schema.name == "call_center_summarization"

    def test_a_relative_path_is_found_in_the_projects_include_folder(self):
        schema = load_reply_schema("pipelines/call_center_summarization/reply_schema.json", name="calls")
        assert schema is not None
        assert schema.name == "calls"
        assert "summary" in schema.schema["properties"]

    def test_a_mapping_or_json_text_takes_the_default_name(self):
        mapping = load_reply_schema(REVIEW, default_name="reviews.v2")
        text = load_reply_schema(json.dumps(REVIEW), default_name="reviews")
        assert mapping is not None
        assert text is not None
        assert (mapping.name, text.name) == ("reviews_v2", "reviews")

    def test_an_unsupported_schema_names_the_file_and_the_pointer(self, tmp_path):
        path = tmp_path / "pipelines" / "reviews" / "reply_schema.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({**REVIEW, "properties": {"n": {"type": "integer", "oneOf": []}}}))
        with pytest.raises(SchemaError) as caught:
            load_reply_schema(str(path))
        assert caught.value.source == str(path)
        assert caught.value.pointer == "/properties/n/oneOf"


class TestTheRunRecord:
    @pytest.mark.parametrize("model_id", [CLAUDE_3, CLAUDE_45, NOVA])
    def test_round_trips_through_the_run_xcom(self, model_id):
        reply = declare(CALL_CENTER, model_id=model_id)
        run = json.loads(json.dumps(reply.to_run()))
        assert ReplyFormat.from_run(run) == reply

    def test_runs_of_earlier_versions_are_free_text(self):
        assert ReplyFormat.from_run({"model_id": CLAUDE_3}) == ReplyFormat()
        assert ReplyFormat().to_run() == {"output_format": None, "reply_schema": None}


class TestColumns:
    def test_the_reply_columns_in_declaration_order(self):
        assert declare().columns == pa.schema([("sentiment", pa.string()), ("stars", pa.int64())])

    @pytest.mark.parametrize("name", ["status", "Record_ID", "processed_at", "agent"])
    def test_a_property_named_like_another_column(self, name):
        reply = declare({**REVIEW, "properties": {name: {"type": "string"}}, "required": [name]})
        with pytest.raises(SchemaError, match=f'reply property "{name}"'):
            reply.check_columns([*RESULT_COLUMNS, "agent"])

    def test_free_text_has_nothing_to_collide(self):
        ReplyFormat().check_columns(["text"])


class TestRead:
    family = family_for(CLAUDE_3)

    def test_a_conforming_reply_is_its_value_as_compact_json(self):
        # Prompt mode prefilled "{": the text continues it; the enum's capitalization is folded.
        read = declare().read(self.family, anthropic('"sentiment": "Positive", "stars": 4}'))
        assert read.status == SUCCEEDED
        assert orjson.loads(read.text) == {"sentiment": "positive", "stars": 4}
        assert (read.parse_error, read.input_tokens, read.output_tokens, read.stop_reason) == (
            None,
            120,
            9,
            "end_turn",
        )

    def test_a_reply_that_breaks_the_schema_is_invalid_output_with_its_first_violation(self):
        read = declare().read(self.family, anthropic('"sentiment": "positive", "stars": 9}'))
        assert read.status == INVALID_OUTPUT
        assert read.parse_error == "$.stars: is 9, above the maximum 5"
        assert read.text == '{"sentiment": "positive", "stars": 9}'  # as written, the prefill re-attached

    def test_prose_is_invalid_output(self):
        read = declare().read(self.family, anthropic("Sure! The customer was happy."))
        assert read.status == INVALID_OUTPUT
        assert read.parse_error is not None
        assert read.parse_error.startswith("$: reply is not JSON")
        assert "happy" not in read.parse_error

    @pytest.mark.parametrize(
        "text", ['{"sentiment": "neutral", "stars": 3}', '"sentiment": "neutral", "stars": 3}']
    )
    def test_records_built_elsewhere_are_read_with_or_without_a_prefill(self, text):
        read = declare(family=None).read(self.family, anthropic(text))
        assert (read.status, orjson.loads(read.text)) == (SUCCEEDED, {"sentiment": "neutral", "stars": 3})

    def test_free_text_is_kept_as_written(self):
        read = ReplyFormat().read(self.family, anthropic("A short summary."))
        assert (read.status, read.text, read.parse_error) == (SUCCEEDED, "A short summary.", None)

    def test_a_forced_tool_call_is_the_reply(self):
        body = {
            "content": [
                {
                    "type": "tool_use",
                    "id": "t1",
                    "name": "review",
                    "input": {"sentiment": "neutral", "stars": 3},
                }
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        read = declare(structured_output="tool").read(self.family, body)
        assert (read.status, orjson.loads(read.text)) == (SUCCEEDED, {"sentiment": "neutral", "stars": 3})
