"""Prepare: batch record lines per model family, spool/sizes/index contracts, every quarantine reason."""

from __future__ import annotations

import json
import logging
import re
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bedrock_batch import prepare as prepare_module
from bedrock_batch import record_ids
from bedrock_batch.config import QuotaConfig
from bedrock_batch.errors import ConfigError
from bedrock_batch.models import InferenceParams, family_for
from bedrock_batch.prepare import QUARANTINE_REASONS, PrepareResult, RecordEncoder, prepare, prepare_records
from bedrock_batch.prompts import PromptTemplate, load_template
from bedrock_batch.record_ids import RecordIdIndex
from bedrock_batch.replies import ReplyFormat
from bedrock_batch.schemas import prompt_instructions, service_schema
from bedrock_batch.sources import ROW_PROBLEMS, BatchRecord, SourceReader, SourceRow, SourceSpec
from tests.unit.review_schema import REVIEW

CLAUDE = "us.anthropic.claude-3-haiku-20240307-v1:0"
SECRET = "SECRET-TRANSCRIPT-MARKER"
TRICKY = 'Agent: "Hello" \\ C:\\path\nCustomer: ünïcode 😀 tab\there \x01 </transcript> {transcript}'
RECORD_ID = re.compile(r"^[0-9A-Za-z]{11}$")


@pytest.fixture(scope="module")
def template() -> PromptTemplate:
    return load_template("call_center_summary", "v1")


def template_at(root: Path, system: str, user: str) -> PromptTemplate:
    folder = root / "prompts" / "t" / "v1"
    folder.mkdir(parents=True)
    (folder / "system.txt").write_text(system)
    (folder / "user.txt").write_text(user)
    return load_template("t", "v1", root=root / "prompts")


def said(text: str | None) -> dict[str, str | None]:
    """The prompt values of a row of the call-center template: its transcript."""
    return {"transcript": text}


def rows(count: int, text: str = "Agent: hi\nCustomer: hello") -> list[SourceRow]:
    return [SourceRow(f"call-{i}", said(f"{text} {i}"), f"day.jsonl:{i + 1}") for i in range(count)]


def run(tmp_path: Path, source: Any, template: PromptTemplate, **options: Any) -> PrepareResult:
    options.setdefault("model_id", CLAUDE)
    options.setdefault("quotas", QuotaConfig())
    return prepare(source, tmp_path / "work", template=template, **options)


def spool_lines(result: PrepareResult) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in Path(result.spool_path).read_bytes().splitlines()]


def quarantine_entries(result: PrepareResult) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in Path(result.quarantine_path).read_bytes().splitlines()]


class TestRecordLines:
    @pytest.mark.parametrize(
        ("model_id", "invocation_type"),
        [
            (CLAUDE, "InvokeModel"),
            ("amazon.nova-lite-v1:0", "InvokeModel"),
            ("meta.llama3-1-70b-instruct-v1:0", "InvokeModel"),
            ("amazon.titan-text-express-v1", "InvokeModel"),
            ("mistral.mistral-large-2407-v1:0", "Converse"),
        ],
    )
    def test_model_input_is_the_family_body_of_the_rendered_prompt(
        self, tmp_path, template, model_id, invocation_type
    ):
        params = InferenceParams(max_tokens=500, temperature=0.2, stop_sequences=("END",))
        result = run(
            tmp_path,
            [SourceRow("c1", said(TRICKY), "a.jsonl:1")],
            template,
            model_id=model_id,
            invocation_type=invocation_type,
            params=params,
        )
        [line] = spool_lines(result)
        system, user = template.render({"transcript": TRICKY})
        family = family_for(model_id, invocation_type=invocation_type)
        assert line == {
            "recordId": line["recordId"],
            "modelInput": family.build_request(system, user, params),
        }
        assert RECORD_ID.match(line["recordId"])
        assert RecordEncoder(template, family, params).spliced

    def test_template_with_system_placeholders_is_serialized_in_full(self, tmp_path):
        template = template_at(tmp_path, "You help {agent}.", "<transcript>{transcript}</transcript>")
        family = family_for(CLAUDE)
        assert not RecordEncoder(template, family, InferenceParams()).spliced
        result = run(tmp_path, [SourceRow("c1", {"transcript": TRICKY, "agent": "Ana"}, "a:1")], template)
        system, user = template.render({"transcript": TRICKY, "agent": "Ana"})
        assert spool_lines(result)[0]["modelInput"] == family.build_request(system, user, InferenceParams())

    def test_lines_are_compact_orjson_one_per_record(self, tmp_path, template):
        result = run(tmp_path, rows(3), template)
        data = Path(result.spool_path).read_bytes()
        assert data.count(b"\n") == 3
        assert data.startswith(b'{"recordId":"')
        first = data.split(b"\n")[0]
        assert first == orjson.dumps(orjson.loads(first))


class TestOutputs:
    def test_spool_sizes_and_index_agree(self, tmp_path, template):
        source = [
            SourceRow("c1", said("one"), "day.jsonl:1", ("Ana", 3)),
            SourceRow("c2", said(""), "day.jsonl:2", ("Bo", 4)),
            SourceRow("c3", said("three"), "day.jsonl:3", (None, 5)),
        ]
        result = run(tmp_path, source, template, passthrough_types={"agent": pa.string(), "n": pa.int64()})
        lines = Path(result.spool_path).read_bytes().splitlines(keepends=True)
        sizes = result.load_sizes()
        assert sizes.dtype == np.int64
        assert sizes.tolist() == [len(line) for line in lines]
        assert result.total_bytes == Path(result.spool_path).stat().st_size == int(sizes.sum())
        index = pq.read_table(result.index_path)
        assert index.schema.names == ["record_id", "source_key", "source_position", "ordinal", "agent", "n"]
        assert index.schema.field("n").type == pa.int64()
        assert index.to_pydict() == {
            "record_id": [orjson.loads(line)["recordId"] for line in lines],
            "source_key": ["c1", "c3"],
            "source_position": ["day.jsonl:1", "day.jsonl:3"],
            "ordinal": [0, 1],
            "agent": ["Ana", None],
            "n": [3, 5],
        }

    def test_index_is_written_in_row_groups(self, tmp_path, template, monkeypatch):
        monkeypatch.setattr(prepare_module, "INDEX_ROW_GROUP_ROWS", 100)
        result = run(tmp_path, rows(450), template)
        metadata = pq.ParquetFile(result.index_path).metadata
        assert metadata.num_rows == 450
        assert metadata.num_row_groups == 5
        assert pq.read_table(result.index_path, columns=["ordinal"])["ordinal"].to_pylist() == list(
            range(450)
        )

    def test_empty_source_writes_empty_outputs(self, tmp_path, template):
        result = run(tmp_path, [], template)
        assert (result.rows, result.records, result.total_bytes) == (0, 0, 0)
        assert result.load_sizes().tolist() == []
        assert pq.read_table(result.index_path).num_rows == 0

    def test_result_is_json_metadata_that_round_trips(self, tmp_path, template):
        result = run(tmp_path, [*rows(2), SourceRow("c0", said(" "), "x:9")], template)
        data = json.loads(json.dumps(result.to_dict()))
        assert PrepareResult.from_dict(data) == result
        assert set(data["quarantine_counts"]) == set(QUARANTINE_REASONS)
        assert (data["rows"], data["records"], data["quarantined"]) == (3, 2, 1)

    def test_rerun_writes_identical_files(self, tmp_path, template):
        source = [
            *rows(50),
            SourceRow("call-3", said("dup"), "day.jsonl:99"),
            SourceRow(None, None, "x:1", (), "invalid_json", "bad"),
        ]
        first = run(tmp_path / "a", source, template)
        second = run(tmp_path / "b", source, template)
        for name in ("spool_path", "quarantine_path"):
            assert Path(getattr(first, name)).read_bytes() == Path(getattr(second, name)).read_bytes()

    def test_colliding_keys_are_both_accepted_with_distinct_ids(self, tmp_path, template):
        result = run(tmp_path, rows(40), template, id_index=RecordIdIndex(id_space=53))
        ids = [line["recordId"] for line in spool_lines(result)]
        assert result.records == 40
        assert len(set(ids)) == 40


class TestQuarantine:
    def quarantine_reason(
        self,
        tmp_path: Path,
        row: SourceRow,
        template: PromptTemplate,
        good: tuple[Any, ...] = (),
        **options: Any,
    ) -> dict:
        values = options.pop("good_values", said("Agent: hi"))
        result = run(tmp_path, [row, SourceRow("good", values, "a:2", good)], template, **options)
        [entry] = quarantine_entries(result)
        assert result.records == 1
        assert result.quarantine_counts[entry["reason"]] == 1
        assert result.quarantined == 1
        return entry

    @pytest.mark.parametrize("text", ["", "   \n\t "])
    def test_empty_text(self, tmp_path, template, text):
        entry = self.quarantine_reason(tmp_path, SourceRow("c9", said(text), "a.jsonl:4"), template)
        assert entry["reason"] == "empty_text"
        assert entry["source_position"] == "a.jsonl:4"
        assert entry["source_key"] == "c9"
        assert RECORD_ID.match(entry["record_id"])

    def test_duplicate_keeps_the_first_occurrence(self, tmp_path, template):
        source = [
            SourceRow("c1", said("first"), "a:1"),
            SourceRow("c2", said("other"), "a:2"),
            SourceRow("c1", said("second"), "a:3"),
        ]
        result = run(tmp_path, source, template)
        [entry] = quarantine_entries(result)
        kept = spool_lines(result)
        assert (entry["reason"], entry["source_position"]) == ("duplicate_id", "a:3")
        assert entry["record_id"] == kept[0]["recordId"]
        assert "first" in kept[0]["modelInput"]["messages"][0]["content"][0]["text"]

    def test_a_quarantined_first_occurrence_still_owns_its_key(self, tmp_path, template):
        source = [SourceRow("c1", said("  "), "a:1"), SourceRow("c1", said("good text"), "a:2")]
        result = run(tmp_path, source, template)
        assert [e["reason"] for e in quarantine_entries(result)] == ["empty_text", "duplicate_id"]

    def test_template_error(self, tmp_path):
        template = template_at(tmp_path, "System.", "Agent {agent}: <transcript>{transcript}</transcript>")
        entry = self.quarantine_reason(
            tmp_path,
            SourceRow("c9", {"transcript": "text"}, "a:1"),
            template,
            good_values={"transcript": "Agent: hi", "agent": "Ana"},
        )
        assert (entry["reason"], entry["detail"]) == ("template_error", "no value for agent")

    def test_one_empty_value_among_several_is_not_empty_text(self, tmp_path):
        template = template_at(tmp_path, "System.", "Title: {title}\n<review>{body}</review>")
        result = run(
            tmp_path,
            [
                SourceRow("r1", {"title": "", "body": "Great kettle."}, "a:1"),
                SourceRow("r2", {"title": " ", "body": "\n"}, "a:2"),
            ],
            template,
        )
        assert result.records == 1
        assert [e["reason"] for e in quarantine_entries(result)] == ["empty_text"]

    def test_context_window_exceeded(self, tmp_path, template):
        # Titan Text Lite: 4,096 tokens; 1,024 of them reserved for the answer.
        entry = self.quarantine_reason(
            tmp_path,
            SourceRow("c9", said("word " * 3000), "a:1"),
            template,
            model_id="amazon.titan-text-lite-v1",
        )
        assert entry["reason"] == "context_window_exceeded"
        assert "1,024 max_tokens > 4,096" in entry["detail"]

    def test_record_too_large(self, tmp_path, template):
        entry = self.quarantine_reason(
            tmp_path,
            SourceRow("c9", said("x" * 5000), "a:1"),
            template,
            quotas=QuotaConfig(max_record_bytes=4000),
        )
        assert entry["reason"] == "record_too_large"
        assert "> max_record_bytes 4,000" in entry["detail"]

    def test_lone_surrogates_are_bad_utf8(self, tmp_path, template):
        entry = self.quarantine_reason(tmp_path, SourceRow("c9", said("broken \udcff byte"), "a:1"), template)
        assert entry["reason"] == "bad_utf8"

    @pytest.mark.parametrize("problem", sorted(ROW_PROBLEMS))
    def test_source_problems_are_quarantined_with_their_reason(self, tmp_path, template, problem):
        key = None if problem in ("invalid_json", "missing_id") else "c9"
        entry = self.quarantine_reason(tmp_path, SourceRow(key, None, "a:1", (), problem, "what"), template)
        assert (entry["reason"], entry["detail"], entry["source_key"]) == (problem, "what", key)
        assert (entry["record_id"] is None) == (key is None)

    def test_every_reason_from_real_files_and_never_the_text(self, tmp_path, template, caplog):
        source_dir = tmp_path / "in"
        source_dir.mkdir()
        good = {"id": "ok", "text": f"Agent: fine {SECRET}"}
        lines = [
            orjson.dumps(good),
            b'{"id": "j", "text": "' + SECRET.encode() + b'" broken',
            b'{"id": "u", "text": "' + SECRET.encode() + b'\xff"}',
            orjson.dumps({"text": SECRET}),
            orjson.dumps({"id": "t"}),
            orjson.dumps({"id": "e", "text": "   "}),
            orjson.dumps({"id": "ok", "text": SECRET}),
            orjson.dumps({"id": "big", "text": SECRET + " word" * 30_000}),
        ]
        (source_dir / "day.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        reader = SourceReader(SourceSpec(str(source_dir), "jsonl", prompt_columns={"transcript": "text"}))
        with caplog.at_level(logging.DEBUG):
            result = run(tmp_path, reader, template, model_id="amazon.titan-text-express-v1")
        assert result.records == 1
        assert {reason: count for reason, count in result.quarantine_counts.items() if count} == {
            "invalid_json": 1,
            "bad_utf8": 1,
            "missing_id": 1,
            "missing_text": 1,
            "empty_text": 1,
            "duplicate_id": 1,
            "context_window_exceeded": 1,
        }
        assert [e["source_position"] for e in quarantine_entries(result)] == [
            f"day.jsonl:{n}" for n in range(2, 9)
        ]
        assert SECRET.encode() not in Path(result.quarantine_path).read_bytes()
        assert SECRET not in caplog.text
        assert "quarantined 7" in caplog.text

    @pytest.mark.parametrize("source_format", ["csv", "parquet"])
    def test_a_file_with_the_wrong_columns_is_quarantined_row_by_row(
        self, tmp_path, template, caplog, source_format
    ):
        source_dir = tmp_path / "in"
        source_dir.mkdir()
        good = [{"call_id": f"g{i}", "transcript": f"Agent: fine {i}"} for i in range(3)]
        bad = [{"call_id": "x1", "notes": SECRET}, {"call_id": "x2", "notes": SECRET}]
        if source_format == "csv":
            (source_dir / "a.csv").write_text(
                "call_id,transcript\n" + "".join(f"{r['call_id']},{r['transcript']}\n" for r in good)
            )
            (source_dir / "b.csv").write_text(
                "call_id,notes\n" + "".join(f"{r['call_id']},{r['notes']}\n" for r in bad)
            )
            positions = ["b.csv:2", "b.csv:3"]
        else:
            pq.write_table(pa.Table.from_pylist(good), source_dir / "a.parquet")
            pq.write_table(pa.Table.from_pylist(bad), source_dir / "b.parquet")
            positions = ["b.parquet:1", "b.parquet:2"]
        spec = SourceSpec(str(source_dir), source_format, id_column="call_id", text_column="transcript")
        assert spec.bindings == {"transcript": "transcript"}
        with caplog.at_level(logging.DEBUG):
            result = run(tmp_path, SourceReader(spec), template)
        assert (result.rows, result.records, result.quarantined) == (5, 3, 2)
        assert {reason: count for reason, count in result.quarantine_counts.items() if count} == {
            "missing_column": 2
        }
        entries = quarantine_entries(result)
        assert [(e["source_position"], e["source_key"], e["reason"]) for e in entries] == [
            (positions[0], "x1", "missing_column"),
            (positions[1], "x2", "missing_column"),
        ]
        assert all(RECORD_ID.match(e["record_id"]) for e in entries)
        assert all(
            "['transcript']" in e["detail"] and positions[0].split(":")[0] in e["detail"] for e in entries
        )
        assert SECRET.encode() not in Path(result.quarantine_path).read_bytes()
        assert SECRET not in caplog.text
        assert "missing_column=2" in caplog.text

    def test_reasons_are_documented(self):
        assert set(ROW_PROBLEMS) < set(QUARANTINE_REASONS)
        assert {
            "empty_text",
            "duplicate_id",
            "template_error",
            "context_window_exceeded",
            "record_too_large",
        } < set(QUARANTINE_REASONS)


class TestSetupErrors:
    def test_passthrough_clashing_with_index_columns(self, tmp_path, template):
        with pytest.raises(ConfigError, match="ordinal"):
            run(tmp_path, rows(1), template, passthrough_types={"ordinal": pa.int64()})

    def test_max_tokens_filling_the_context_window(self, tmp_path, template):
        with pytest.raises(ConfigError, match="lower max_tokens"):
            run(
                tmp_path,
                rows(1),
                template,
                model_id="amazon.titan-text-lite-v1",
                params=InferenceParams(max_tokens=4096),
            )


def lazy_rows(count: int) -> Iterator[SourceRow]:
    text = "Agent: thanks for calling.\nCustomer: my invoice is wrong. " * 20
    for i in range(count):
        yield SourceRow(f"call-{i:08d}", said(text), f"day.jsonl:{i + 1}")


def test_memory_does_not_grow_with_input_beyond_compact_arrays(tmp_path, template, monkeypatch):
    # Shrink the bounded buffers so that both runs are past them; what remains is per-record arrays.
    monkeypatch.setattr(prepare_module, "INDEX_ROW_GROUP_ROWS", 1000)
    monkeypatch.setattr(record_ids, "_PENDING_LIMIT", 1000)
    run(tmp_path / "warm-up", lazy_rows(100), template)  # one-time allocations (imports, caches) stay out
    peaks = {}
    for count in (5_000, 25_000):
        tracemalloc.start()
        try:
            run(tmp_path / str(count), lazy_rows(count), template)
            peaks[count] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # 20,000 more records may cost their 8-byte size and 16-byte id entry (plus merge copies), not their text:
    # holding the transcripts alone would take 20,000 x 1.2 KB = 24 MB.
    assert peaks[25_000] - peaks[5_000] < 20_000 * 100


class TestReplySchema:
    """The reply schema reaches each model the way its mode says; prepare counts it in the context window."""

    def reply(self, model_id: str, **options: Any) -> ReplyFormat:
        return ReplyFormat.declare(
            REVIEW, model_id=model_id, family=family_for(model_id), default_name="review", **options
        )

    def test_prompt_mode_appends_the_schema_to_the_system_prompt_and_prefills(self, tmp_path, template):
        reply = self.reply(CLAUDE)
        assert reply.output is not None
        assert reply.output.mode == "prompt"
        result = run(tmp_path, rows(2), template, output=reply.output, instructions=reply.instructions)
        body = spool_lines(result)[0]["modelInput"]
        system, _ = template.render({"transcript": "x"})
        assert body["system"] == f"{system}\n\n{prompt_instructions(REVIEW)}"
        assert '"maximum":5' in body["system"]  # the prompt carries the whole schema, constraints included
        assert body["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "{"}]}
        encoder = RecordEncoder(
            template, family_for(CLAUDE), InferenceParams(), reply.output, reply.instructions
        )
        assert encoder.spliced

    def test_native_mode_sends_the_service_schema(self, tmp_path, template):
        model = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
        reply = self.reply(model)
        result = run(tmp_path, rows(1), template, model_id=model, output=reply.output)
        body = spool_lines(result)[0]["modelInput"]
        sent = body["output_config"]["format"]["schema"]
        assert sent == service_schema(REVIEW)
        assert "minimum" not in sent["properties"]["stars"]
        assert body["messages"][-1]["role"] == "user"  # no prefill
        system, _ = template.render({"transcript": "x"})
        assert body["system"] == system

    def test_tool_mode_forces_one_tool(self, tmp_path, template):
        model = "amazon.nova-lite-v1:0"
        reply = self.reply(model)
        result = run(tmp_path, rows(1), template, model_id=model, output=reply.output)
        config = spool_lines(result)[0]["modelInput"]["toolConfig"]
        assert config["toolChoice"] == {"tool": {"name": "review"}}
        assert config["tools"][0]["toolSpec"]["inputSchema"] == {"json": service_schema(REVIEW)}

    def test_the_schema_counts_in_the_context_window(self, tmp_path, template):
        # Titan Text Lite: 4,096 tokens, 1,024 of them for the answer; a prompt of ~2,900 tokens fits alone..
        long = SourceRow("c1", said("word " * 2000), "a:1")
        model = "amazon.titan-text-lite-v1"
        assert run(tmp_path / "plain", [long], template, model_id=model).records == 1
        big = {
            **REVIEW,
            "properties": {
                f"aspect_{n}": {"type": "string", "description": "what the review says about it " * 3}
                for n in range(20)
            },
            "required": [f"aspect_{n}" for n in range(20)],
        }
        reply = ReplyFormat.declare(big, model_id=model, family=family_for(model))
        result = run(
            tmp_path / "schema",
            [long],
            template,
            model_id=model,
            output=reply.output,
            instructions=reply.instructions,
        )
        assert result.quarantine_counts["context_window_exceeded"] == 1


class TestPrepareRecords:
    """A bedrock source: records built elsewhere, taken as they are."""

    BODY = {"anthropic_version": "bedrock-2023-05-31", "messages": [{"role": "user", "content": SECRET}]}

    def test_records_keep_their_ids_and_bodies(self, tmp_path):
        records = [
            BatchRecord("A0000000001", self.BODY, "in.jsonl:1"),
            BatchRecord("A0000000002", {**self.BODY, "max_tokens": 9}, "in.jsonl:2"),
        ]
        result = prepare_records(records, tmp_path / "work", quotas=QuotaConfig())
        assert spool_lines(result) == [
            {"recordId": "A0000000001", "modelInput": self.BODY},
            {"recordId": "A0000000002", "modelInput": {**self.BODY, "max_tokens": 9}},
        ]
        assert result.load_sizes().tolist() == [
            len(line) for line in Path(result.spool_path).read_bytes().splitlines(keepends=True)
        ]
        assert pq.read_table(result.index_path).to_pydict() == {
            "record_id": ["A0000000001", "A0000000002"],
            "source_key": ["A0000000001", "A0000000002"],
            "source_position": ["in.jsonl:1", "in.jsonl:2"],
            "ordinal": [0, 1],
        }

    def test_every_bad_line_is_quarantined_with_its_reason_and_never_its_content(self, tmp_path):
        records = [
            BatchRecord("A0000000001", self.BODY, "in.jsonl:1"),
            BatchRecord(None, None, "in.jsonl:2", "invalid_json", "invalid JSON: unexpected character"),
            BatchRecord("short", None, "in.jsonl:3", "invalid_record_id", "'recordId' must be 11 letters"),
            BatchRecord("A0000000004", None, "in.jsonl:4", "missing_model_input", "'modelInput' is absent"),
            BatchRecord("A0000000001", self.BODY, "in.jsonl:5"),
            BatchRecord("A0000000006", {"text": SECRET * 300}, "in.jsonl:6"),
        ]
        result = prepare_records(records, tmp_path / "work", quotas=QuotaConfig(max_record_bytes=4000))
        assert (result.rows, result.records, result.quarantined) == (6, 1, 5)
        assert [
            (e["source_position"], e["source_key"], e["record_id"], e["reason"])
            for e in quarantine_entries(result)
        ] == [
            ("in.jsonl:2", None, None, "invalid_json"),
            ("in.jsonl:3", "short", None, "invalid_record_id"),
            ("in.jsonl:4", "A0000000004", "A0000000004", "missing_model_input"),
            ("in.jsonl:5", "A0000000001", "A0000000001", "duplicate_id"),
            ("in.jsonl:6", "A0000000006", "A0000000006", "record_too_large"),
        ]
        assert SECRET.encode() not in Path(result.quarantine_path).read_bytes()
