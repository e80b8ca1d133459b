"""Collect: output lines, manifests, error classes, and the join back to the record index."""

from __future__ import annotations

import io
import logging
from typing import Any

import orjson
import pyarrow as pa
import pytest

from bedrock_batch.collect import (
    OUTPUT_SCHEMA,
    Manifest,
    OutputRecord,
    RecordIndexError,
    classify_error,
    iter_output_batches,
    join_results,
    join_with_report,
    parse_manifest,
    parse_output_line,
    retryable_record_ids,
    summarize_results,
)
from bedrock_batch.errors import OutputFormatError
from bedrock_batch.models import FAMILIES, InferenceParams
from bedrock_batch.replies import ReplyFormat
from tests.unit.review_schema import REVIEW

ANTHROPIC = FAMILIES["anthropic"]
NOVA = FAMILIES["nova"]
PROMPT = "Customer: my account number is 4242 and my modem is down"


def model_input(family_name: str = "anthropic") -> dict[str, Any]:
    return FAMILIES[family_name].build_request("Summarise.", PROMPT, InferenceParams(max_tokens=100))


def anthropic_reply(text: str, input_tokens: int = 30, output_tokens: int = 5) -> dict[str, Any]:
    return {
        "id": "msg_bdrk_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-haiku-20240307",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def success_line(record_id: str, text: str = "summary", **tokens: int) -> bytes:
    line = {
        "recordId": record_id,
        "modelInput": model_input(),
        "modelOutput": anthropic_reply(text, **tokens),
    }
    return orjson.dumps(line) + b"\n"


def error_line(record_id: str, code: int, message: str = "Malformed input request") -> bytes:
    line = {
        "recordId": record_id,
        "modelInput": model_input(),
        "error": {"errorCode": code, "errorMessage": message},
    }
    return orjson.dumps(line) + b"\n"


def index_table(record_ids: list[str], **passthrough: list[Any]) -> pa.Table:
    return pa.table(
        {
            "record_id": record_ids,
            "source_key": [f"call-{record_id}" for record_id in record_ids],
            "source_position": [f"calls/{record_id}.txt" for record_id in record_ids],
            "ordinal": pa.array(range(len(record_ids)), type=pa.int64()),
            **passthrough,
        }
    )


def batches(*lines: bytes) -> list[pa.RecordBatch]:
    return list(iter_output_batches(lines, ANTHROPIC))


def rows_by_id(table: pa.Table) -> dict[str, dict[str, Any]]:
    return {row["record_id"]: row for row in table.to_pylist()}


class TestParseOutputLine:
    def test_success(self) -> None:
        record = parse_output_line(success_line("rec00000001", "The modem is down."), ANTHROPIC)
        assert record == OutputRecord(
            "rec00000001", "succeeded", "The modem is down.", None, 30, 5, "end_turn", None, None, False
        )

    def test_success_for_nova(self) -> None:
        reply = {
            "output": {"message": {"role": "assistant", "content": [{"text": "Modem down."}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 20, "outputTokens": 3, "totalTokens": 23},
        }
        line = orjson.dumps(
            {"recordId": "rec00000001", "modelInput": model_input("nova"), "modelOutput": reply}
        )
        record = parse_output_line(line, NOVA)
        assert (record.status, record.text, record.input_tokens, record.output_tokens) == (
            "succeeded",
            "Modem down.",
            20,
            3,
        )

    def test_prompt_is_not_kept(self) -> None:
        record = parse_output_line(success_line("rec00000001"), ANTHROPIC)
        assert not any(isinstance(value, str) and "4242" in value for value in record)

    def test_validation_error_is_permanent(self) -> None:
        record = parse_output_line(
            error_line("rec00000002", 400, "Malformed input request: bad key"), ANTHROPIC
        )
        assert record == OutputRecord(
            "rec00000002",
            "failed",
            None,
            None,
            None,
            None,
            None,
            "400",
            "Malformed input request: bad key",
            False,
        )

    @pytest.mark.parametrize("code", [429, 500, 503])
    def test_throttling_and_server_errors_are_retryable(self, code: int) -> None:
        record = parse_output_line(error_line("rec00000003", code, "try later"), ANTHROPIC)
        assert (record.status, record.error_code, record.retryable) == ("failed", str(code), True)

    def test_truncated_line_keeps_its_record_id_and_is_retryable(self) -> None:
        line = success_line("rec00000004")[:60]
        record = parse_output_line(line, ANTHROPIC)
        assert (record.record_id, record.status, record.error_code, record.retryable) == (
            "rec00000004",
            "failed",
            "unreadable_line",
            True,
        )
        assert "60 bytes" in (record.error_message or "")

    def test_garbage_line_has_no_record_id(self) -> None:
        record = parse_output_line(b"\x00\xffnot json", ANTHROPIC)
        assert (record.record_id, record.error_code, record.retryable) == (None, "unreadable_line", True)

    @pytest.mark.parametrize(
        "line", [b'{"modelInput": {}, "modelOutput": {}}', b'["rec00000001"]', b'{"recordId": 17}']
    )
    def test_line_without_record_id(self, line: bytes) -> None:
        record = parse_output_line(line, ANTHROPIC)
        assert (record.record_id, record.status, record.error_code) == (None, "failed", "no_record_id")

    def test_unparseable_model_output_keeps_the_raw_reply(self) -> None:
        # A Llama reply read as Anthropic: wrong family or a changed response format.
        reply = {"generation": "Modem down.", "prompt_token_count": 5, "generation_token_count": 2}
        line = orjson.dumps({"recordId": "rec00000005", "modelInput": model_input(), "modelOutput": reply})
        record = parse_output_line(line, ANTHROPIC)
        assert (record.status, record.error_code, record.retryable) == ("failed", "unparseable_output", False)
        assert orjson.loads(record.text or "") == reply
        assert "anthropic" in (record.error_message or "")

    def test_line_with_neither_output_nor_error(self) -> None:
        record = parse_output_line(b'{"recordId": "rec00000006", "modelInput": {}}', ANTHROPIC)
        assert (record.record_id, record.error_code, record.retryable) == ("rec00000006", "no_output", True)

    def test_error_that_is_not_an_object(self) -> None:
        record = parse_output_line(b'{"recordId": "rec00000007", "error": "boom"}', ANTHROPIC)
        assert (record.error_code, record.error_message, record.retryable) == ("unknown", "boom", False)

    def test_windows_line_ending(self) -> None:
        record = parse_output_line(success_line("rec00000008").rstrip(b"\n") + b"\r\n", ANTHROPIC)
        assert record.status == "succeeded"


CLAUDE_3 = "anthropic.claude-3-haiku-20240307-v1:0"
# Prompt mode with the assistant prefill "{": replies continue it.
PROMPTED = ReplyFormat.declare(REVIEW, model_id=CLAUDE_3, family=ANTHROPIC, default_name="review")


class TestReplyValidation:
    def test_a_conforming_reply_succeeds_as_its_value(self) -> None:
        line = success_line("rec00000001", '"sentiment": "Negative", "stars": 2}')
        record = parse_output_line(line, ANTHROPIC, PROMPTED)
        assert (record.status, record.parse_error, record.error_code) == ("succeeded", None, None)
        assert orjson.loads(record.text or "") == {"sentiment": "negative", "stars": 2}

    def test_a_reply_that_breaks_the_schema_is_invalid_output(self) -> None:
        line = success_line("rec00000001", '"sentiment": "furious", "stars": 2}', input_tokens=40)
        record = parse_output_line(line, ANTHROPIC, PROMPTED)
        assert record == OutputRecord(
            "rec00000001",
            "invalid_output",
            '{"sentiment": "furious", "stars": 2}',
            "$.sentiment: is not one of the 3 allowed values",
            40,
            5,
            "end_turn",
            "invalid_output",
            "the reply does not conform to the reply schema review (see parse_error)",
            False,
        )
        assert "furious" not in (record.parse_error or "")

    def test_a_reply_cut_at_max_tokens_is_invalid_output(self) -> None:
        record = parse_output_line(success_line("a", '"sentiment": "neg'), ANTHROPIC, PROMPTED)
        assert record.status == "invalid_output"
        assert (record.parse_error or "").startswith("$: reply is not JSON")
        assert record.retryable is False

    def test_invalid_output_is_never_retried(self) -> None:
        outputs = list(iter_output_batches([success_line("a", '"stars": 9}')], ANTHROPIC, reply=PROMPTED))
        joined = join_results(index_table(["a"]), outputs)
        assert joined["status"].to_pylist() == ["invalid_output"]
        assert retryable_record_ids(joined) == []
        assert summarize_results(joined).invalid_output == 1

    @pytest.mark.parametrize("order", ["invalid first", "invalid last"])
    def test_a_conforming_reply_wins_over_an_invalid_one_which_wins_over_a_failure(self, order: str) -> None:
        valid = success_line("a", '"sentiment": "neutral", "stars": 3}')
        invalid = success_line("a", '"sentiment": "neutral", "stars": 30}')
        lines = [
            invalid,
            error_line("a", 500),
            valid,
            error_line("b", 429),
            invalid.replace(b'"a"', b'"b"', 1),
        ]
        if order == "invalid last":
            lines = [lines[2], lines[0], lines[1], lines[4], lines[3]]
        outputs = list(iter_output_batches(lines, ANTHROPIC, reply=PROMPTED))
        rows = rows_by_id(join_results(index_table(["a", "b"]), outputs))
        assert rows["a"]["status"] == "succeeded"
        assert (rows["b"]["status"], rows["b"]["parse_error"]) == (
            "invalid_output",
            "$.stars: is 30, above the maximum 5",
        )

    def test_a_later_invalid_reply_replaces_an_earlier_one(self) -> None:
        lines = [success_line("a", '"stars": 9}'), success_line("a", '"sentiment": "neutral", "stars": 9}')]
        outputs = list(iter_output_batches(lines, ANTHROPIC, reply=PROMPTED))
        [row] = join_results(index_table(["a"]), outputs).to_pylist()
        assert row["parse_error"] == "$.stars: is 9, above the maximum 5"


class TestClassifyError:
    @pytest.mark.parametrize(
        ("code", "message"),
        [
            (429, "Too many requests"),
            ("429", None),
            (500, "Internal server error"),
            ("503", None),
            (408, "Model timeout"),
            (424, "The model returned an error"),
            (400, "ThrottlingException: rate exceeded"),
            (400, "The request timed out"),
            ("missing", None),
            ("unreadable_line", None),
        ],
    )
    def test_retryable(self, code: str | int, message: str | None) -> None:
        assert classify_error(code, message) == "retryable"

    @pytest.mark.parametrize(
        ("code", "message"),
        [
            (400, "Malformed input request: #: extraneous key [foo] is not permitted"),
            (400, "Input is too long for requested model."),
            (403, "Access denied"),
            ("unparseable_output", "anthropic reply has no 'content' list"),
            (None, None),
            ("50", None),
        ],
    )
    def test_permanent(self, code: str | int | None, message: str | None) -> None:
        assert classify_error(code, message) == "permanent"


class TestParseManifest:
    def test_current_field_names(self) -> None:
        data = orjson.dumps(
            {
                "totalRecordCount": 120,
                "processedRecordCount": 118,
                "successRecordCount": 115,
                "errorRecordCount": 3,
                "inputTokenCount": 54_000,
                "outputTokenCount": 9_000,
            }
        )
        assert parse_manifest(data) == Manifest(120, 118, 115, 3, 54_000, 9_000)

    def test_older_token_field_names(self) -> None:
        data = b'{"totalRecordCount": 100, "inputTextTokenCount": 1200, "outputTextTokenCount": 300}'
        manifest = parse_manifest(data)
        assert (manifest.input_tokens, manifest.output_tokens) == (1200, 300)

    def test_missing_fields_are_none(self) -> None:
        assert parse_manifest(b'{"totalRecordCount": 100}') == Manifest(100, None, None, None, None, None)

    def test_non_integer_counts_are_none(self) -> None:
        manifest = parse_manifest(b'{"totalRecordCount": "100", "errorRecordCount": true}')
        assert (manifest.total_records, manifest.failed_records) == (None, None)

    def test_pretty_printed(self) -> None:
        assert parse_manifest(b'{\n  "successRecordCount": 7\n}\n').succeeded_records == 7

    @pytest.mark.parametrize("data", [b"", b'{"totalRecordCount": 1', b"[1, 2]"])
    def test_malformed(self, data: bytes) -> None:
        with pytest.raises(OutputFormatError, match=r"manifest\.json\.out"):
            parse_manifest(data)


class TestIterOutputBatches:
    def test_schema_and_batch_sizes(self) -> None:
        lines = [success_line(f"rec{i:08d}") for i in range(5)]
        result = list(iter_output_batches(lines, ANTHROPIC, batch_size=2))
        assert [batch.num_rows for batch in result] == [2, 2, 1]
        assert all(batch.schema == OUTPUT_SCHEMA for batch in result)
        assert pa.Table.from_batches(result)["record_id"].to_pylist() == [f"rec{i:08d}" for i in range(5)]

    def test_no_model_input_in_batches(self) -> None:
        table = pa.Table.from_batches(batches(success_line("rec00000001"), error_line("rec00000002", 400)))
        assert "modelInput" not in table.column_names
        for column in table.columns:
            if pa.types.is_string(column.type):
                assert not any(value and "4242" in value for value in column.to_pylist())

    def test_one_row_per_line_with_errors_and_truncated_last_line(self) -> None:
        data = (
            success_line("rec00000001")
            + error_line("rec00000002", 429)
            + b"\n"  # blank lines are not records
            + success_line("rec00000003")[:50]
        )
        table = pa.Table.from_batches(list(iter_output_batches(io.BytesIO(data), ANTHROPIC)))
        assert table.to_pydict()["status"] == ["succeeded", "failed", "failed"]
        assert table["error_code"].to_pylist() == [None, "429", "unreadable_line"]
        assert table["retryable"].to_pylist() == [False, True, True]

    def test_empty_input(self) -> None:
        assert list(iter_output_batches([], ANTHROPIC)) == []

    def test_rows_carry_the_job_they_came_from(self) -> None:
        lines = [success_line("rec00000001"), error_line("rec00000002", 500)]
        table = pa.Table.from_batches(list(iter_output_batches(lines, ANTHROPIC, job_arn="arn:job/1")))
        assert table["job_arn"].to_pylist() == ["arn:job/1", "arn:job/1"]

    def test_missing_records_have_no_job(self) -> None:
        index = index_table(["a", "b"])
        table = join_results(index, list(iter_output_batches([success_line("a")], ANTHROPIC, job_arn="j")))
        assert table["job_arn"].to_pylist() == ["j", None]

    def test_invalid_batch_size(self) -> None:
        with pytest.raises(ValueError, match="batch_size"):
            list(iter_output_batches([success_line("rec00000001")], ANTHROPIC, batch_size=0))


class TestJoinResults:
    def test_every_index_row_once_in_index_order_with_passthrough(self) -> None:
        index = index_table(["a", "b", "c"], agent=["Ann", "Bob", "Cy"], tags=[["x"], [], ["y", "z"]])
        outputs = batches(success_line("c", "C"), error_line("b", 400), success_line("a", "A"))
        table = join_results(index, outputs)
        assert table.column_names == [
            *("record_id", "source_key", "source_position", "ordinal", "agent", "tags"),
            *("status", "text", "parse_error", "input_tokens", "output_tokens", "stop_reason"),
            *("error_code", "error_message", "retryable", "job_arn"),
        ]
        assert table["record_id"].to_pylist() == ["a", "b", "c"]
        assert table["agent"].to_pylist() == ["Ann", "Bob", "Cy"]
        assert table["tags"].to_pylist() == [["x"], [], ["y", "z"]]
        assert table["text"].to_pylist() == ["A", None, "C"]
        assert table["error_code"].to_pylist() == [None, "400", None]

    def test_records_missing_from_output_are_failed_and_retryable(self) -> None:
        table = join_results(index_table(["a", "b"]), batches(success_line("a")))
        missing = rows_by_id(table)["b"]
        assert (missing["status"], missing["error_code"], missing["retryable"]) == ("failed", "missing", True)
        assert missing["text"] is None

    def test_no_output_at_all(self) -> None:
        table = join_results(index_table(["a", "b"]), [])
        assert table["error_code"].to_pylist() == ["missing", "missing"]

    def test_unknown_record_ids_are_reported_not_merged(self, caplog: pytest.LogCaptureFixture) -> None:
        outputs = batches(success_line("a", "A"), success_line("zz", "secret reply text"), b"garbage\n")
        report = join_with_report(index_table(["a"]), outputs)
        assert report.table.num_rows == 1
        assert report.unknown["record_id"].to_pylist() == ["zz", None]
        with caplog.at_level(logging.WARNING, logger="bedrock_batch.collect"):
            table = join_results(index_table(["a"]), outputs)
        assert table["record_id"].to_pylist() == ["a"]
        assert "2 output row(s)" in caplog.text
        assert "secret reply text" not in caplog.text

    @pytest.mark.parametrize("success_first", [True, False])
    def test_success_wins_over_error_for_duplicates(self, success_first: bool) -> None:
        lines = [success_line("a", "ok"), error_line("a", 429)]
        if not success_first:
            lines.reverse()
        report = join_with_report(index_table(["a"]), batches(*lines))
        row = report.table.to_pylist()[0]
        assert (row["status"], row["text"], row["error_code"]) == ("succeeded", "ok", None)
        assert report.duplicates == 1

    def test_later_row_wins_among_equals(self) -> None:
        # Outputs of a resubmitted job come after the original job's.
        outputs = batches(success_line("a", "first"), success_line("a", "second"))
        outputs += batches(error_line("b", 429), error_line("b", 400))
        table = join_results(index_table(["a", "b"]), outputs)
        assert table["text"].to_pylist()[0] == "second"
        assert table["error_code"].to_pylist()[1] == "400"

    def test_duplicates_across_batches(self) -> None:
        lines = [success_line(f"r{i}") for i in range(5)] + [error_line("r2", 500)]
        outputs = list(iter_output_batches(lines, ANTHROPIC, batch_size=2))
        report = join_with_report(index_table([f"r{i}" for i in range(5)]), outputs)
        assert report.table["status"].to_pylist() == ["succeeded"] * 5
        assert report.duplicates == 1

    def test_truncated_line_fails_its_own_record(self) -> None:
        table = join_results(index_table(["a", "b"]), batches(success_line("a"), success_line("b")[:40]))
        row = rows_by_id(table)["b"]
        assert (row["status"], row["error_code"], row["retryable"]) == ("failed", "unreadable_line", True)

    def test_large_string_record_ids(self) -> None:
        index = index_table(["a"]).cast(
            pa.schema(
                [
                    pa.field("record_id", pa.large_string()),
                    pa.field("source_key", pa.string()),
                    pa.field("source_position", pa.string()),
                    pa.field("ordinal", pa.int64()),
                ]
            )
        )
        assert join_results(index, batches(success_line("a")))["status"].to_pylist() == ["succeeded"]

    def test_index_without_required_column(self) -> None:
        with pytest.raises(RecordIndexError, match="source_position"):
            join_results(index_table(["a"]).drop_columns(["source_position"]), [])

    def test_passthrough_column_clashing_with_results(self) -> None:
        with pytest.raises(RecordIndexError, match="text"):
            join_results(index_table(["a"], text=["transcript"]), [])


class TestRetryableRecordIds:
    def test_only_retryable_failures(self) -> None:
        index = index_table(["ok", "bad", "throttled", "missing", "cut"])
        outputs = batches(
            success_line("ok"), error_line("bad", 400), error_line("throttled", 429), success_line("cut")[:30]
        )
        assert retryable_record_ids(join_results(index, outputs)) == ["throttled", "missing", "cut"]


class TestSummarizeResults:
    def test_counts_and_tokens(self) -> None:
        index = index_table(["a", "b", "c", "d"])
        outputs = batches(
            success_line("a", input_tokens=100, output_tokens=10),
            success_line("b", input_tokens=50, output_tokens=5),
            error_line("c", 400),
        )
        summary = summarize_results(join_results(index, outputs))
        assert (summary.records, summary.succeeded, summary.invalid_output, summary.failed) == (4, 2, 0, 2)
        assert (summary.retryable, summary.missing) == (1, 1)
        assert (summary.input_tokens, summary.output_tokens) == (150, 15)

    def test_empty(self) -> None:
        summary = summarize_results(join_results(index_table([]), []))
        assert (summary.records, summary.succeeded, summary.input_tokens) == (0, 0, 0)
