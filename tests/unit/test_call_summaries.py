"""Parsing the call-summary JSON reply into typed columns."""

from __future__ import annotations

import orjson

from bedrock_batch.call_summaries import SUMMARY_FIELDS, parse_summary, summary_columns

VALID = {
    "summary": "Customer was double charged. Agent issued a refund.",
    "sentiment": "Negative",
    "primary_topic": "billing",
    "resolution": "resolved",
    "action_items": ["Send refund confirmation", " "],
}


class TestParseSummary:
    def test_valid_reply_becomes_typed_columns(self):
        row = parse_summary(orjson.dumps(VALID).decode())
        assert row == {
            "summary": "Customer was double charged. Agent issued a refund.",
            "sentiment": "negative",
            "primary_topic": "billing",
            "resolution": "resolved",
            "action_items": ["Send refund confirmation"],
            "parse_error": None,
        }

    def test_reply_wrapped_in_code_fence_and_prose(self):
        text = "Here is the summary:\n```json\n" + orjson.dumps(VALID).decode() + "\n```"
        assert parse_summary(text)["parse_error"] is None

    def test_not_json_keeps_row_with_parse_error(self):
        row = parse_summary("The customer called about billing.")
        assert row["summary"] is None
        assert row["parse_error"] == "reply is not a JSON object: reply contains no JSON object"

    def test_truncated_json_is_reported(self):
        assert parse_summary('{"summary": "x", ')["parse_error"] == (
            "reply is not a JSON object: reply contains no JSON object"
        )

    def test_malformed_json_reports_decode_problem(self):
        row = parse_summary('{"summary": unquoted}')
        assert row["parse_error"].startswith("reply is not a JSON object: ")
        assert row["parse_error"] != "reply is not a JSON object: reply contains no JSON object"

    def test_invalid_enum_is_reported_and_valid_fields_kept(self):
        row = parse_summary(orjson.dumps({**VALID, "sentiment": "furious"}).decode())
        assert row["sentiment"] is None
        assert row["summary"] == VALID["summary"]
        assert "sentiment 'furious' is not one of positive/neutral/negative" in row["parse_error"]

    def test_too_many_sentences_is_flagged(self):
        row = parse_summary(orjson.dumps({**VALID, "summary": "A. B. C. D. E. F."}).decode())
        assert row["summary"] == "A. B. C. D. E. F."
        assert "more than 5 sentences" in row["parse_error"]

    def test_amounts_and_versions_do_not_end_sentences(self):
        summary = "Charged $93.53 instead of $58.72. Refund of $21.89 issued. Plan v2.1 kept. Ok. Done."
        assert parse_summary(orjson.dumps({**VALID, "summary": summary}).decode())["parse_error"] is None

    def test_action_items_must_be_strings(self):
        row = parse_summary(orjson.dumps({**VALID, "action_items": "call back"}).decode())
        assert "action_items is not a list of strings" in row["parse_error"]

    def test_failed_record_has_all_nulls(self):
        assert parse_summary(None) == dict.fromkeys(SUMMARY_FIELDS.names)


class TestSummaryColumns:
    def test_table_has_schema_and_one_row_per_reply(self):
        table = summary_columns([orjson.dumps(VALID).decode(), None, "nope"])
        assert table.schema == SUMMARY_FIELDS
        assert table.column("sentiment").to_pylist() == ["negative", None, None]
        assert table.column("parse_error").null_count == 2
