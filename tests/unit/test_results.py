"""The results table: its columns from the run's reply schema, typed replies, invalid_output rows with their
violation, and the call-center table exactly as it was before reply schemas."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from bedrock_batch import results as results_module
from bedrock_batch.collect import iter_output_batches, join_results
from bedrock_batch.errors import ConfigError, SchemaError
from bedrock_batch.models import FAMILIES
from bedrock_batch.replies import ReplyFormat
from bedrock_batch.results import (
    QUARANTINE_COLUMNS,
    JobOutput,
    ManifestCheck,
    OutputCounts,
    assemble_results,
    read_output_batches,
    reconcile_manifests,
    result_schema,
)
from bedrock_batch.storage import Storage
from tests.call_center_table import CALL_SUMMARIES_SCHEMA
from tests.conftest import REPO
from tests.unit.test_collect import error_line, index_table, success_line

ANTHROPIC = FAMILIES["anthropic"]
CLAUDE_3 = "anthropic.claude-3-haiku-20240307-v1:0"
CALL_CENTER = REPO / "include" / "pipelines" / "call_center_summarization" / "reply_schema.json"
AT = datetime(2026, 11, 21, 6, 30, tzinfo=UTC)
TICKET = {
    "type": "object",
    "properties": {
        "priority": {"type": "string", "enum": ["low", "medium", "high"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "products": {"type": "array", "items": {"type": "string"}},
        "customer": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "tier": {"type": "integer", "minimum": 1}},
            "required": ["name", "tier"],
            "additionalProperties": False,
        },
    },
    "required": ["priority", "confidence", "products", "customer"],
    "additionalProperties": False,
}
VALID = {
    "priority": "High",
    "confidence": 0.8,
    "products": ["router"],
    "customer": {"name": "Ana", "tier": 2},
}


def reply(schema: Any = TICKET) -> ReplyFormat:
    return ReplyFormat.declare(schema, model_id=CLAUDE_3, family=ANTHROPIC, default_name="ticket")


def prefilled(value: Any) -> str:
    """A reply to a request prefilled with ``{``: the text after it."""
    return orjson.dumps(value).decode()[1:]


def joined(run_reply: ReplyFormat, lines: list[bytes], ids: list[str], **passthrough: list[Any]) -> pa.Table:
    outputs = list(iter_output_batches(lines, ANTHROPIC, reply=run_reply, job_arn="arn:job"))
    return join_results(index_table(ids, **passthrough), outputs)


def quarantine(*entries: dict[str, Any]) -> pa.Table:
    schema = pa.schema([(name, pa.string()) for name in QUARANTINE_COLUMNS])
    return pa.Table.from_pylist(list(entries), schema=schema)


def assemble(
    run_reply: ReplyFormat, table: pa.Table, quarantined: pa.Table | None = None, **options: Any
) -> pa.Table:
    return assemble_results(
        table,
        quarantined if quarantined is not None else quarantine(),
        reply=run_reply,
        ds="2026-11-20",
        model_id=CLAUDE_3,
        dag_run_id="run-1",
        processed_at=AT,
        **options,
    )


class TestTheCallCenterTable:
    def test_keeps_todays_columns_and_types(self):
        call_center = reply(str(CALL_CENTER))
        assert result_schema(call_center, "call_id") == CALL_SUMMARIES_SCHEMA
        table = assemble(call_center, joined(call_center, [], []), key_column="call_id")
        assert table.schema == CALL_SUMMARIES_SCHEMA

    def test_passthrough_columns_follow_with_their_types(self):
        call_center = reply(str(CALL_CENTER))
        records = joined(call_center, [], ["a"], agent_id=["ag-7"], duration=pa.array([31], pa.int32()))
        table = assemble(call_center, records, key_column="call_id", passthrough=["agent_id", "duration"])
        expected = [
            *CALL_SUMMARIES_SCHEMA,
            pa.field("agent_id", pa.string()),
            pa.field("duration", pa.int32()),
        ]
        assert table.schema == pa.schema(expected)


class TestRows:
    def test_every_outcome_once(self):
        run_reply = reply()
        lines = [
            success_line("ok", prefilled(VALID)),
            success_line("bad", prefilled({**VALID, "confidence": 1.7})),
            error_line("err", 400),
        ]
        records = joined(run_reply, lines, ["ok", "bad", "err", "lost"])
        quarantined = quarantine(
            {"source_position": "t.parquet:9", "source_key": "q", "record_id": None, "reason": "missing_text",
             "detail": "'body' is null"}
        )  # fmt: skip
        rows = {
            r["ticket_id"]: r
            for r in assemble(run_reply, records, quarantined, key_column="ticket_id").to_pylist()
        }
        assert [rows[k]["status"] for k in ("call-ok", "call-bad", "call-err", "call-lost", "q")] == [
            "succeeded",
            "invalid_output",
            "failed",
            "failed",
            "quarantined",
        ]
        ok = rows["call-ok"]
        assert {k: ok[k] for k in TICKET["properties"]} == {**VALID, "priority": "high"}
        assert (ok["parse_error"], ok["raw_text"], ok["error_code"]) == (None, None, None)
        bad = rows["call-bad"]
        assert {k: bad[k] for k in TICKET["properties"]} == dict.fromkeys(TICKET["properties"])
        assert bad["parse_error"] == "$.confidence: is 1.7, above the maximum 1"
        assert orjson.loads(bad["raw_text"]) == {**VALID, "confidence": 1.7}  # the "{" of the prefill is back
        assert (bad["error_code"], bad["retryable"], bad["input_tokens"]) == ("invalid_output", False, 30)
        assert (rows["call-lost"]["error_code"], rows["q"]["error_code"]) == ("missing", "missing_text")
        assert {r["ds"] for r in rows.values()} == {"2026-11-20"}

    def test_typed_columns_of_enum_number_array_and_nested_object(self):
        table = assemble(reply(), joined(reply(), [success_line("a", prefilled(VALID))], ["a"]))
        types = {f.name: f.type for f in table.schema}
        assert types["priority"] == pa.string()
        assert types["confidence"] == pa.float64()
        assert types["products"] == pa.list_(pa.string())
        assert types["customer"] == pa.struct([("name", pa.string()), ("tier", pa.int64())])
        assert table.schema.names[0] == "source_key"

    def test_free_text_replies_are_the_text_column(self):
        records = joined(
            ReplyFormat(), [success_line("a", "A short summary."), error_line("b", 400)], ["a", "b"]
        )
        table = assemble(ReplyFormat(), records)
        assert table.schema.names[4:7] == ["text", "parse_error", "raw_text"]
        assert table.column("text").to_pylist() == ["A short summary.", None]

    def test_replies_are_built_chunk_by_chunk(self, monkeypatch):
        monkeypatch.setattr(results_module, "ASSEMBLE_CHUNK_ROWS", 3)
        ids = [f"r{i}" for i in range(8)]
        lines = [success_line(i, prefilled({**VALID, "customer": {"name": i, "tier": 1}})) for i in ids[::2]]
        table = assemble(reply(), joined(reply(), lines, ids))
        names = [c and c["name"] for c in table.column("customer").to_pylist()]
        assert names == ["r0", None, "r2", None, "r4", None, "r6", None]


class TestColumnNames:
    def test_a_key_column_named_like_another_column(self):
        with pytest.raises(ConfigError, match=r"\['status'\] would appear twice"):
            result_schema(reply(), "status")

    def test_a_reply_property_named_like_the_key_column(self):
        with pytest.raises(SchemaError, match='reply property "priority"'):
            result_schema(reply(), "priority")

    def test_a_passthrough_column_named_like_a_reply_property(self):
        with pytest.raises(SchemaError, match='reply property "products"'):
            result_schema(reply(), "ticket_id", [pa.field("products", pa.string())])


class TestManifests:
    """Each job's manifest.json.out against what its output held: a warning, never a crash."""

    JOB = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456"

    def job_output(
        self, folder: Path, lines: list[bytes], manifest: dict[str, Any] | bytes | None
    ) -> JobOutput:
        folder.mkdir(parents=True)
        (folder / "part-0001.jsonl.out").write_bytes(b"".join(lines))
        if manifest is not None:
            data = manifest if isinstance(manifest, bytes) else orjson.dumps(manifest)
            (folder / "manifest.json.out").write_bytes(data)
        return JobOutput(label=self.JOB.replace("abc123def456", folder.name), uri=str(folder) + "/")

    def check(self, *outputs: JobOutput) -> ManifestCheck:
        counts: dict[str, OutputCounts] = {}
        for _ in read_output_batches(Storage(), outputs, ANTHROPIC, reply(), counts):
            pass
        return reconcile_manifests(Storage(), outputs, counts)

    def lines(self) -> list[bytes]:
        return [
            success_line("a", prefilled(VALID)),
            success_line("b", prefilled({**VALID, "confidence": 3})),  # invalid_output: still a reply
            error_line("c", 400),
            success_line("d")[:30],  # unreadable: a line, neither a reply nor an error
        ]

    def test_a_job_whose_counts_match(self, tmp_path):
        manifest = {
            "totalRecordCount": 4,
            "processedRecordCount": 4,
            "successRecordCount": 2,
            "errorRecordCount": 1,
        }
        assert self.check(self.job_output(tmp_path / "job1", self.lines(), manifest)) == ManifestCheck([], [])

    def test_a_mismatch_names_the_job_and_both_counts(self, tmp_path, caplog):
        manifest = {
            "totalRecordCount": 6,
            "processedRecordCount": 6,
            "successRecordCount": 4,
            "errorRecordCount": 1,
        }
        with caplog.at_level(logging.WARNING, logger="bedrock_batch.results"):
            check = self.check(self.job_output(tmp_path / "job2", self.lines(), manifest))
        assert check.mismatches == [
            {
                "job_id": "job2",
                "manifest": {"total": 6, "processed": 6, "success": 4, "error": 1},
                "read": {"total": 4, "success": 2, "error": 1},
            }
        ]
        assert "job job2: its manifest says 6 records processed" in caplog.text

    def test_jobs_without_a_readable_manifest_are_noted_and_the_fallback_is_left_out(self, tmp_path):
        none = self.job_output(tmp_path / "job3", self.lines(), None)
        broken = self.job_output(tmp_path / "job4", self.lines(), b"{truncated")
        fallback = JobOutput(label="on-demand", uri=str(tmp_path / "od") + "/")
        assert self.check(none, broken, fallback) == ManifestCheck([], ["job3", "job4"])

    def test_counts_a_manifest_lacks_are_not_compared(self, tmp_path):
        manifest = {"totalRecordCount": 4}
        assert self.check(self.job_output(tmp_path / "job5", self.lines(), manifest)).mismatches == []
