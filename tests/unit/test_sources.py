"""Source readers: every format, local and S3, with per-row problems instead of exceptions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bedrock_batch.errors import ConfigError, SourceError, TemplateError
from bedrock_batch.sources import (
    ROW_PROBLEMS,
    SourceReader,
    SourceRow,
    SourceSpec,
    batch_record,
    bind_prompt_columns,
    render_transcribe,
    spec_for_template,
)
from bedrock_batch.storage import Storage

SECRET = "SECRET-TRANSCRIPT-MARKER"
TOKEN = re.compile(r"[\w']+|[.,?!]")


def read(uri: Path | str, fmt: str, **options: Any) -> list[SourceRow]:
    storage = options.pop("storage", None)
    max_object_bytes = options.pop("max_object_bytes", None)
    spec = SourceSpec(str(uri), fmt, **options)  # type: ignore[arg-type]
    return list(SourceReader(spec, storage, max_object_bytes=max_object_bytes))


def text_of(row: SourceRow) -> str | None:
    """The value of a row read with one prompt column."""
    if row.prompt_values is None:
        return None
    [value] = row.prompt_values.values()
    return value


def jsonl(path: Path, lines: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"".join(line if isinstance(line, bytes) else orjson.dumps(line) + b"\n" for line in lines)
    )
    return path


def transcribe_items(turns: list[tuple[str, str]], *, label_items: bool) -> tuple[list[dict], list[dict]]:
    """Plain Transcribe ``items`` and ``speaker_labels.segments`` for speaker turns, as the service writes."""
    items: list[dict] = []
    segments: list[dict] = []
    clock = 0.0
    for speaker, sentence in turns:
        segment_items = []
        for token in TOKEN.findall(sentence):
            if token in ".,?!":
                items.append(
                    {"alternatives": [{"confidence": "0.0", "content": token}], "type": "punctuation"}
                )
                continue
            start, clock = f"{clock:.2f}", clock + 0.3
            item = {
                "start_time": start,
                "end_time": f"{clock:.2f}",
                "alternatives": [{"confidence": "0.99", "content": token}],
                "type": "pronunciation",
            }
            if label_items:
                item["speaker_label"] = speaker
            items.append(item)
            segment_items.append({"start_time": start, "end_time": f"{clock:.2f}", "speaker_label": speaker})
        segments.append({"speaker_label": speaker, "items": segment_items})
    return items, segments


TURNS = [
    ("spk_0", "Thank you for calling, this is Dana."),
    ("spk_1", "Hi, my bill is wrong."),
    ("spk_1", "It doubled!"),
    ("spk_0", "Let me check that."),
]
EXPECTED_TURNS = (
    "Agent: Thank you for calling, this is Dana.\n"
    "Customer: Hi, my bill is wrong. It doubled!\n"
    "Agent: Let me check that."
)


def plain_transcribe(turns: list[tuple[str, str]] = TURNS, *, label_items: bool = False) -> dict:
    items, segments = transcribe_items(turns, label_items=label_items)
    return {
        "jobName": "call-0001",
        "accountId": "123456789012",
        "status": "COMPLETED",
        "results": {
            "transcripts": [{"transcript": " ".join(sentence for _, sentence in turns)}],
            "speaker_labels": {"speakers": 2, "segments": segments},
            "items": items,
        },
    }


def call_analytics() -> dict:
    roles = {"spk_0": "AGENT", "spk_1": "CUSTOMER"}
    return {
        "JobName": "ca-0001",
        "JobStatus": "COMPLETED",
        "LanguageCode": "en-US",
        "AccountId": "123456789012",
        "Channel": "VOICE",
        "Participants": [{"ParticipantRole": "AGENT"}, {"ParticipantRole": "CUSTOMER"}],
        "Transcript": [
            {
                "Id": f"seg-{i}",
                "BeginOffsetMillis": i * 1000,
                "EndOffsetMillis": i * 1000 + 900,
                "Content": sentence,
                "ParticipantRole": roles[speaker],
                "Sentiment": "NEUTRAL",
                "LoudnessScores": [71.2, 73.0],
            }
            for i, (speaker, sentence) in enumerate(TURNS)
        ],
        "Categories": {"MatchedCategories": [], "MatchedDetails": {}},
        "ConversationCharacteristics": {"TotalConversationDurationMillis": 4000},
    }


class TestSourceSpec:
    def test_unknown_format(self):
        with pytest.raises(ConfigError, match="source format"):
            SourceSpec("x", "xml")  # type: ignore[arg-type]

    def test_text_source_has_no_passthrough(self):
        with pytest.raises(ConfigError, match="no columns"):
            SourceSpec("x", "text", passthrough_columns=("agent",))

    def test_passthrough_must_be_a_tuple_of_names(self):
        with pytest.raises(ConfigError, match="single string"):
            SourceSpec("x", "jsonl", passthrough_columns="agent")  # type: ignore[arg-type]


class TestObjects:
    def test_missing_path_raises_source_error(self, tmp_path):
        with pytest.raises(SourceError, match="nothing at"):
            read(tmp_path / "absent", "jsonl")

    def test_no_file_with_the_format_suffix(self, tmp_path):
        (tmp_path / "notes.md").write_text("x")
        with pytest.raises(SourceError, match=r"no \.jsonl/\.ndjson files .* \(1 other objects\)"):
            read(tmp_path, "jsonl")

    def test_custom_suffixes(self, tmp_path):
        jsonl(tmp_path / "day.log", [{"id": "a", "text": "hello"}])
        assert [row.key for row in read(tmp_path, "jsonl", suffixes=(".log",))] == ["a"]


class TestText:
    def test_one_row_per_file_keyed_by_stem_in_key_order(self, tmp_path):
        (tmp_path / "calls" / "b").mkdir(parents=True)
        (tmp_path / "calls" / "0002.txt").write_text("second call")
        (tmp_path / "calls" / "0001.txt").write_bytes("\ufefffirst call é".encode())
        (tmp_path / "calls" / "b" / "0003.TXT").write_text("third")
        (tmp_path / "calls" / "readme.md").write_text("ignored")
        rows = read(tmp_path, "text")
        assert [(r.key, text_of(r), r.position) for r in rows] == [
            ("0001", "first call é", "calls/0001.txt"),
            ("0002", "second call", "calls/0002.txt"),
            ("0003", "third", "calls/b/0003.TXT"),
        ]

    def test_bad_utf8_file_is_a_row_problem(self, tmp_path):
        (tmp_path / "0001.txt").write_bytes(b"ok \xff\xfe broken")
        [row] = read(tmp_path, "text")
        assert (row.key, row.problem, text_of(row)) == ("0001", "bad_utf8", None)
        assert "byte 3" in row.detail

    def test_file_larger_than_the_limit_is_not_read(self, tmp_path):
        (tmp_path / "big.txt").write_text("x" * 5000)
        [row] = read(tmp_path, "text", max_object_bytes=1000)
        assert (row.key, row.problem, text_of(row)) == ("big", "file_too_large", None)
        assert "5,000 bytes" in row.detail


class TestJsonl:
    def test_rows_with_positions_and_passthrough(self, tmp_path):
        jsonl(
            tmp_path / "in" / "day.jsonl",
            [
                {"call_id": "c1", "transcript": "hello", "agent": "Ana", "duration": 312},
                b"\n",
                {"call_id": 42, "transcript": "bye", "agent": None, "tags": ["a", 1]},
            ],
        )
        rows = read(
            tmp_path / "in",
            "jsonl",
            id_column="call_id",
            text_column="transcript",
            passthrough_columns=("agent", "duration", "tags"),
        )
        assert rows == [
            SourceRow("c1", {"transcript": "hello"}, "day.jsonl:1", ("Ana", "312", None)),
            SourceRow("42", {"transcript": "bye"}, "day.jsonl:3", (None, None, '["a",1]')),
        ]

    @pytest.mark.parametrize(
        ("line", "problem", "detail"),
        [
            (b"{not json\n", "invalid_json", "invalid JSON"),
            (b'["a", "b"]\n', "invalid_json", "JSON list"),
            (b'{"id": "x", "text": "caf\xe9"}\n', "bad_utf8", "byte"),
            (b'{"text": "no id"}\n', "missing_id", "no 'id' field"),
            (b'{"id": "  ", "text": "blank id"}\n', "missing_id", "empty 'id'"),
            (b'{"id": 1.5, "text": "float id"}\n', "missing_id", "float"),
            (b'{"id": true, "text": "bool id"}\n', "missing_id", "bool"),
            (b'{"id": "x"}\n', "missing_text", "no 'text' field"),
            (b'{"id": "x", "text": ["a"]}\n', "missing_text", "list"),
        ],
    )
    def test_bad_lines_become_problem_rows_and_reading_continues(self, tmp_path, line, problem, detail):
        jsonl(tmp_path / "day.jsonl", [line, {"id": "ok", "text": "fine"}])
        bad, good = read(tmp_path, "jsonl")
        assert bad.problem == problem
        assert detail in bad.detail
        assert bad.position == "day.jsonl:1"
        assert good == SourceRow("ok", {"text": "fine"}, "day.jsonl:2")

    def test_problem_detail_never_contains_the_text(self, tmp_path):
        jsonl(tmp_path / "day.jsonl", [b'{"id": "x", "text": "SECRET-MARKER" \n'])
        [row] = read(tmp_path, "jsonl")
        assert row.problem == "invalid_json"
        assert "SECRET" not in row.detail


class TestCsv:
    def test_rows_quoted_newlines_and_line_positions(self, tmp_path):
        (tmp_path / "calls.csv").write_text(
            'call_id,transcript,agent\nc1,"Agent: hi\nCustomer: hello, there",Ana\nc2,short,\n',
            encoding="utf-8",
        )
        rows = read(
            tmp_path, "csv", id_column="call_id", text_column="transcript", passthrough_columns=("agent",)
        )
        assert rows == [
            SourceRow("c1", {"transcript": "Agent: hi\nCustomer: hello, there"}, "calls.csv:2", ("Ana",)),
            SourceRow("c2", {"transcript": "short"}, "calls.csv:4", (None,)),
        ]

    def test_a_file_without_the_text_column_quarantines_each_row_and_the_others_are_read(self, tmp_path):
        (tmp_path / "a.csv").write_text("call_id,transcript\ng1,hello\n")
        (tmp_path / "b.csv").write_text(f"call_id,body\nx1,{SECRET}\n,{SECRET} without id\n")
        (tmp_path / "c.csv").write_text("call_id,transcript\ng2,bye\n")
        rows = read(tmp_path, "csv", id_column="call_id", text_column="transcript")
        assert [(r.key, text_of(r), r.position, r.problem) for r in rows] == [
            ("g1", "hello", "a.csv:2", None),
            ("x1", None, "b.csv:2", "missing_column"),
            (None, None, "b.csv:3", "missing_column"),
            ("g2", "bye", "c.csv:2", None),
        ]
        for row in rows[1:3]:
            assert row.detail is not None
            assert "b.csv" in row.detail
            assert "['transcript']" in row.detail
            assert SECRET not in row.detail
            assert "body" not in row.detail  # the file's own header is never repeated

    def test_a_file_without_the_id_column_keeps_positions_and_counts_unparsable_rows(self, tmp_path):
        (tmp_path / "calls.csv").write_bytes(b'key,text\nk1,one\nk2,"two"tail\n\nk3,three\n')
        rows = read(tmp_path, "csv", id_column="call_id")
        assert [(r.key, r.position, r.problem) for r in rows] == [
            (None, "calls.csv:2", "missing_column"),
            (None, "calls.csv:3", "missing_column"),  # a quote error: still one row of this file
            (None, "calls.csv:5", "missing_column"),
        ]
        assert all("['call_id']" in str(r.detail) for r in rows)

    def test_a_missing_passthrough_column_quarantines_the_rows_too(self, tmp_path):
        (tmp_path / "calls.csv").write_text("id,text,agent\nc1,hello,Ana\n")
        (tmp_path / "late.csv").write_text("id,text\nc2,bye\n")
        rows = read(tmp_path, "csv", passthrough_columns=("agent", "region"))
        assert [(r.key, r.passthrough, r.problem) for r in rows] == [
            ("c1", (None, None), "missing_column"),
            ("c2", (None, None), "missing_column"),
        ]
        assert "['region']" in str(rows[0].detail)
        assert "['agent', 'region']" in str(rows[1].detail)

    def test_a_header_only_file_with_a_missing_column_leaves_one_entry_for_the_file(self, tmp_path):
        (tmp_path / "a.csv").write_text("id,body\n")
        (tmp_path / "b.csv").write_text("id,text\n")  # all columns and no rows: no record
        [row] = read(tmp_path, "csv")
        assert (row.key, text_of(row), row.position, row.problem) == (None, None, "a.csv", "missing_column")
        assert "['text']" in str(row.detail)
        assert "no rows" in str(row.detail)

    def test_row_problems(self, tmp_path):
        (tmp_path / "calls.csv").write_bytes(
            b'id,text\n,no id\nc2,caf\xe9 broken\nc3\nc4,"quoted"tail\nc5,ok\n'
        )
        rows = read(tmp_path, "csv")
        assert [(r.position, r.problem) for r in rows] == [
            ("calls.csv:2", "missing_id"),
            ("calls.csv:3", "bad_utf8"),
            ("calls.csv:4", None),
            ("calls.csv:5", "invalid_csv"),
            ("calls.csv:6", None),
        ]
        assert text_of(rows[2]) == ""  # a short row has empty trailing fields; prepare quarantines empty text
        assert text_of(rows[4]) == "ok"

    def test_fields_longer_than_the_csv_default_limit(self, tmp_path):
        long_text = "word " * 60_000
        (tmp_path / "calls.csv").write_text(f'id,text\nc1,"{long_text}"\n')
        [row] = read(tmp_path, "csv")
        assert text_of(row) == long_text

    def test_delimiter_and_bom(self, tmp_path):
        (tmp_path / "calls.csv").write_bytes("\ufeffid;text\nc1;hello\n".encode())
        [row] = read(tmp_path, "csv", csv_delimiter=";")
        assert (row.key, text_of(row)) == ("c1", "hello")

    def test_empty_file_has_no_rows(self, tmp_path):
        (tmp_path / "calls.csv").write_text("")
        assert read(tmp_path, "csv") == []


class TestParquet:
    def write(self, path: Path, **columns: list[Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path, row_group_size=700)

    def test_batches_positions_and_typed_passthrough(self, tmp_path):
        count = 2500  # more than one row group and one read batch
        self.write(
            tmp_path / "part-0.parquet",
            call_id=[f"c{i}" for i in range(count)],
            transcript=[f"text {i}" for i in range(count)],
            duration=list(range(count)),
        )
        spec = SourceSpec(
            str(tmp_path),
            "parquet",
            id_column="call_id",
            text_column="transcript",
            passthrough_columns=("duration",),
        )
        reader = SourceReader(spec)
        assert reader.passthrough_types() == {"duration": pa.int64()}
        rows = list(reader)
        assert len(rows) == count
        assert rows[1234] == SourceRow("c1234", {"transcript": "text 1234"}, "part-0.parquet:1235", (1234,))

    def test_null_and_integer_ids_and_null_text(self, tmp_path):
        self.write(tmp_path / "a.parquet", id=[7, None, 9], text=["seven", "none", None])
        rows = read(tmp_path, "parquet")
        assert [(r.key, r.problem) for r in rows] == [
            ("7", None),
            (None, "missing_id"),
            ("9", "missing_text"),
        ]

    def test_binary_text_with_bad_utf8(self, tmp_path):
        self.write(tmp_path / "a.parquet", id=["a", "b"], text=pa.array([b"fine", b"\xff"], pa.binary()))
        rows = read(tmp_path, "parquet")
        assert [(text_of(r), r.problem) for r in rows] == [("fine", None), (None, "bad_utf8")]

    def test_a_file_with_another_schema_quarantines_each_row_and_the_others_are_read(self, tmp_path):
        count = 2500  # more than one read batch: rows are counted, not loaded at once
        self.write(tmp_path / "a.parquet", id=["g1"], text=["hello"])
        self.write(tmp_path / "b.parquet", id=[f"x{i}" for i in range(count)], body=[SECRET] * count)
        self.write(tmp_path / "c.parquet", call_id=["y1", "y2"], text=[SECRET, SECRET])
        self.write(tmp_path / "d.parquet", id=["g2"], text=["bye"])
        rows = read(tmp_path, "parquet")
        assert [(r.key, text_of(r), r.problem) for r in rows if r.problem is None] == [
            ("g1", "hello", None),
            ("g2", "bye", None),
        ]
        b_rows = [r for r in rows if r.position.startswith("b.parquet")]
        c_rows = [r for r in rows if r.position.startswith("c.parquet")]
        assert [(r.key, r.position) for r in b_rows] == [
            (f"x{i}", f"b.parquet:{i + 1}") for i in range(count)
        ]
        assert [(r.key, r.position) for r in c_rows] == [(None, "c.parquet:1"), (None, "c.parquet:2")]
        assert {r.problem for r in b_rows + c_rows} == {"missing_column"}
        assert {text_of(r) for r in b_rows + c_rows} == {None}
        assert {r.detail for r in b_rows} == {
            "b.parquet has no column(s) ['text'] (check id_column, prompt_columns or text_column, and "
            "passthrough_columns)"
        }
        assert "c.parquet" in str(c_rows[0].detail)
        assert "['id']" in str(c_rows[0].detail)

    def test_id_and_text_columns_of_an_unusable_type(self, tmp_path):
        self.write(tmp_path / "a.parquet", id=["a1", "a2"], text=[1, 2])
        self.write(tmp_path / "b.parquet", id=[1.5, 2.5], text=[SECRET, SECRET])
        self.write(tmp_path / "c.parquet", id=["c1"], text=["fine"])
        rows = read(tmp_path, "parquet")
        assert [(r.key, r.position, r.problem) for r in rows] == [
            ("a1", "a.parquet:1", "wrong_column_type"),
            ("a2", "a.parquet:2", "wrong_column_type"),
            (None, "b.parquet:1", "wrong_column_type"),
            (None, "b.parquet:2", "wrong_column_type"),
            ("c1", "c.parquet:1", None),
        ]
        assert rows[0].detail == "a.parquet: 'text' is int64, expected a string or binary column"
        assert rows[2].detail == "b.parquet: 'id' is double, expected a string or integer column"
        assert SECRET not in str(rows[2].detail)

    def test_a_file_without_rows_and_with_a_missing_column_leaves_one_entry(self, tmp_path):
        self.write(tmp_path / "a.parquet", id=pa.array([], pa.string()), body=pa.array([], pa.string()))
        [row] = read(tmp_path, "parquet")
        assert (row.key, row.position, row.problem) == (None, "a.parquet", "missing_column")
        assert "['text']" in str(row.detail)
        assert "no rows" in str(row.detail)

    def test_not_parquet_is_a_source_error(self, tmp_path):
        (tmp_path / "a.parquet").write_bytes(b"not parquet at all")
        with pytest.raises(SourceError, match="not a readable Parquet file"):
            read(tmp_path, "parquet")

    def test_passthrough_values_that_do_not_convert_to_the_first_files_type(self, tmp_path):
        self.write(tmp_path / "a.parquet", id=["a"], text=["x"], region=[1])
        self.write(tmp_path / "b.parquet", id=["b", "c"], text=["y", "z"], region=["north", "7"])
        self.write(tmp_path / "c.parquet", id=["d"], text=["w"], region=[{"nested": 1}])
        rows = read(tmp_path, "parquet", passthrough_columns=("region",))
        assert [(r.key, r.passthrough, r.problem) for r in rows] == [
            ("a", (1,), None),
            ("b", (None,), "wrong_column_type"),
            ("c", (7,), None),
            ("d", (None,), "wrong_column_type"),
        ]
        assert rows[1].detail == (
            "b.parquet: the 'region' value does not convert from string to int64, its type in the first "
            "file that has it"
        )
        assert "north" not in str(rows[1].detail)

    def test_passthrough_type_comes_from_the_first_file_that_has_the_column(self, tmp_path):
        self.write(tmp_path / "a.parquet", id=["a"], text=["x"])
        self.write(tmp_path / "b.parquet", id=["b"], text=["y"], region=pa.array([None], pa.null()))
        self.write(tmp_path / "c.parquet", id=["c"], text=["z"], region=[3])
        spec = SourceSpec(str(tmp_path), "parquet", passthrough_columns=("region",))
        reader = SourceReader(spec)
        assert reader.passthrough_types() == {"region": pa.int64()}
        assert [(r.key, r.passthrough, r.problem) for r in reader] == [
            ("a", (None,), "missing_column"),
            ("b", (None,), None),
            ("c", (3,), None),
        ]

    def test_a_passthrough_column_no_file_has(self, tmp_path):
        self.write(tmp_path / "a.parquet", id=["a"], text=["x"])
        spec = SourceSpec(str(tmp_path), "parquet", passthrough_columns=("region",))
        reader = SourceReader(spec)
        assert reader.passthrough_types() == {"region": pa.string()}
        assert [(r.key, r.problem) for r in reader] == [("a", "missing_column")]


class TestTranscribe:
    def write(self, path: Path, document: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(document))

    @pytest.mark.parametrize("label_items", [False, True], ids=["segment-labels", "item-labels"])
    def test_plain_transcribe_speaker_turns(self, tmp_path, label_items):
        self.write(tmp_path / "out" / "call-0001.json", plain_transcribe(label_items=label_items))
        [row] = read(tmp_path / "out", "transcribe", passthrough_columns=("jobName", "missing"))
        assert row == SourceRow("call-0001", {"text": EXPECTED_TURNS}, "call-0001.json", ("call-0001", None))

    def test_speaker_roles_are_configurable(self):
        text = render_transcribe(plain_transcribe(), {"spk_0": "Customer", "spk_1": "Agent"})
        assert text.splitlines()[0] == "Customer: Thank you for calling, this is Dana."

    def test_unmapped_speaker_keeps_its_label(self):
        turns = [("spk_0", "Hello."), ("spk_2", "I am the supervisor.")]
        assert render_transcribe(plain_transcribe(turns)) == "Agent: Hello.\nspk_2: I am the supervisor."

    def test_channel_identification(self):
        items, _ = transcribe_items(TURNS, label_items=False)
        channels: dict[str, list] = {"ch_0": [], "ch_1": []}
        for item, (speaker, _) in zip(
            (i for i in items if "start_time" in i), _speakers_per_word(), strict=True
        ):
            channels["ch_0" if speaker == "spk_0" else "ch_1"].append({"start_time": item["start_time"]})
        document = {
            "results": {
                "transcripts": [{"transcript": "..."}],
                "channel_labels": {
                    "channels": [{"channel_label": label, "items": its} for label, its in channels.items()],
                    "number_of_channels": 2,
                },
                "items": items,
            }
        }
        assert render_transcribe(document) == EXPECTED_TURNS

    def test_plain_transcribe_without_labels_gives_the_transcript(self):
        document = {"results": {"transcripts": [{"transcript": "Hello there."}], "items": []}}
        assert render_transcribe(document) == "Hello there."

    def test_call_analytics_roles_and_merged_turns(self, tmp_path):
        self.write(tmp_path / "ca-0001.json", call_analytics())
        [row] = read(tmp_path, "transcribe", passthrough_columns=("LanguageCode",))
        assert row == SourceRow("ca-0001", {"text": EXPECTED_TURNS}, "ca-0001.json", ("en-US",))

    @pytest.mark.parametrize(
        ("content", "problem"),
        [
            (b"{truncated", "invalid_json"),
            (b"[1, 2]", "invalid_json"),
            (b'{"jobName": "x", "status": "FAILED"}', "invalid_transcript"),
            (b'{"results": {"items": []}}', "invalid_transcript"),
            (b'{"results": "\xff"}', "bad_utf8"),
        ],
    )
    def test_unusable_documents_are_row_problems(self, tmp_path, content, problem):
        (tmp_path / "call-9.json").write_bytes(content)
        (tmp_path / "call-z.json").write_bytes(orjson.dumps(call_analytics()))
        bad, good = read(tmp_path, "transcribe")
        assert (bad.key, bad.problem, bad.position) == ("call-9", problem, "call-9.json")
        assert good.problem is None


def _speakers_per_word() -> list[tuple[str, str]]:
    return [
        (speaker, word)
        for speaker, sentence in TURNS
        for word in TOKEN.findall(sentence)
        if word not in ".,?!"
    ]


def test_every_problem_a_reader_reports_is_documented():
    assert set(ROW_PROBLEMS) == {
        "invalid_json",
        "invalid_csv",
        "invalid_transcript",
        "bad_utf8",
        "missing_id",
        "missing_text",
        "file_too_large",
        "missing_column",
        "wrong_column_type",
        "invalid_record_id",
        "missing_model_input",
    }


@pytest.mark.integration
class TestS3Sources:
    def test_jsonl_prefix(self, s3_client, s3_bucket):
        for day in ("2024-01-02", "2024-01-01"):
            body = b"".join(orjson.dumps({"id": f"{day}-{i}", "text": "t"}) + b"\n" for i in range(3))
            s3_client.put_object(Bucket=s3_bucket, Key=f"raw/{day}.jsonl", Body=body)
        rows = read(f"s3://{s3_bucket}/raw/", "jsonl", storage=Storage(s3_client))
        assert [r.position for r in rows][:4] == [
            "2024-01-01.jsonl:1",
            "2024-01-01.jsonl:2",
            "2024-01-01.jsonl:3",
            "2024-01-02.jsonl:1",
        ]

    def test_parquet_reads_through_ranged_gets(self, s3_client, s3_bucket, tmp_path):
        local = tmp_path / "a.parquet"
        pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", "y"], "n": [1, 2]}), local)
        s3_client.upload_file(str(local), s3_bucket, "p/a.parquet")
        reader = SourceReader(
            SourceSpec(f"s3://{s3_bucket}/p", "parquet", passthrough_columns=("n",)), Storage(s3_client)
        )
        assert reader.passthrough_types() == {"n": pa.int64()}
        assert [(r.key, text_of(r), r.passthrough) for r in reader] == [("a", "x", (1,)), ("b", "y", (2,))]

    def test_transcribe_and_text_prefixes(self, s3_client, s3_bucket):
        s3_client.put_object(Bucket=s3_bucket, Key="t/call-0001.json", Body=orjson.dumps(call_analytics()))
        s3_client.put_object(Bucket=s3_bucket, Key="calls/0001.txt", Body=b"hello")
        storage = Storage(s3_client)
        [transcribed] = read(f"s3://{s3_bucket}/t", "transcribe", storage=storage)
        [text] = read(f"s3://{s3_bucket}/calls", "text", storage=storage)
        assert text_of(transcribed) == EXPECTED_TURNS
        assert (text.key, text_of(text), text.position) == ("0001", "hello", "0001.txt")


class TestPromptColumns:
    """Rows carry one value per placeholder, from the columns bound to them."""

    BINDINGS = {"title": "headline", "body": "review_text"}

    def test_jsonl_rows_carry_every_bound_column(self, tmp_path):
        jsonl(
            tmp_path / "r.jsonl",
            [
                {"id": "r1", "headline": "Great", "review_text": "Boils fast.", "stars": 5},
                {"id": "r2", "headline": None, "review_text": "Leaks."},
                {"id": "r3", "headline": "Meh", "review_text": 3},
                {"id": "r4", "review_text": SECRET},
            ],
        )
        rows = read(tmp_path, "jsonl", prompt_columns=self.BINDINGS, passthrough_columns=("stars",))
        assert rows[0] == SourceRow("r1", {"title": "Great", "body": "Boils fast."}, "r.jsonl:1", ("5",))
        assert [(r.key, r.problem, r.detail) for r in rows[1:]] == [
            ("r2", "missing_text", "'headline' is null"),
            ("r3", "missing_text", "'review_text' is a int, expected a string"),
            ("r4", "missing_text", "no 'headline' field"),
        ]

    def test_csv_rows_and_a_file_without_a_bound_column(self, tmp_path):
        (tmp_path / "a.csv").write_text('id,headline,review_text\nr1,Great,"Boils, fast."\n')
        (tmp_path / "b.csv").write_text(f"id,review_text\nr2,{SECRET}\n")
        good, bad = read(tmp_path, "csv", prompt_columns=self.BINDINGS)
        assert good == SourceRow("r1", {"title": "Great", "body": "Boils, fast."}, "a.csv:2")
        assert (bad.key, bad.problem) == ("r2", "missing_column")
        assert "['headline']" in str(bad.detail)
        assert SECRET not in str(bad.detail)

    def test_parquet_rows_name_the_column_of_each_problem(self, tmp_path):
        pq.write_table(
            pa.table(
                {
                    "id": ["r1", "r2", "r3"],
                    "headline": pa.array([b"Great", b"\xff", b"Fine"], pa.binary()),
                    "review_text": ["Boils fast.", "Leaks.", None],
                }
            ),
            tmp_path / "a.parquet",
        )
        pq.write_table(
            pa.table({"id": ["r4"], "headline": [1], "review_text": ["x"]}), tmp_path / "b.parquet"
        )
        rows = read(tmp_path, "parquet", prompt_columns=self.BINDINGS)
        assert rows[0] == SourceRow("r1", {"title": "Great", "body": "Boils fast."}, "a.parquet:1")
        assert [(r.key, r.problem, r.detail) for r in rows[1:]] == [
            ("r2", "bad_utf8", "invalid UTF-8 in 'headline'"),
            ("r3", "missing_text", "no 'review_text' field, or it is null"),
            ("r4", "wrong_column_type", "b.parquet: 'headline' is int64, expected a string or binary column"),
        ]

    def test_one_column_may_fill_two_placeholders_and_pass_through(self, tmp_path):
        jsonl(tmp_path / "r.jsonl", [{"id": "r1", "text": "hello"}])
        [row] = read(
            tmp_path, "jsonl", prompt_columns={"a": "text", "b": "text"}, passthrough_columns=("text",)
        )
        assert row == SourceRow("r1", {"a": "hello", "b": "hello"}, "r.jsonl:1", ("hello",))

    def test_without_prompt_columns_the_text_column_is_the_one_binding(self):
        assert SourceSpec("x", "csv", text_column="body").bindings == {"body": "body"}
        assert SourceSpec("x", "csv", prompt_columns={"t": "body"}).bindings == {"t": "body"}

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"format": "text", "prompt_columns": {"a": "b"}}, "one text per file"),
            ({"format": "jsonl", "prompt_columns": {}}, "must map each placeholder"),
            ({"format": "jsonl", "prompt_columns": {"not a name": "b"}}, "not a placeholder name"),
            ({"format": "jsonl", "prompt_columns": {"a": ""}}, "must be a name"),
        ],
    )
    def test_bad_prompt_columns(self, options, message):
        with pytest.raises(ConfigError, match=message):
            SourceSpec("x", **options)


class TestBindPromptColumns:
    @pytest.mark.parametrize(
        ("placeholders", "source_format", "options", "bindings"),
        [
            ({"title", "body"}, "parquet", {}, {"body": "body", "title": "title"}),
            (
                {"title", "body"},
                "csv",
                {"prompt_columns": {"title": "h", "body": "b"}},
                {"title": "h", "body": "b"},
            ),
            ({"transcript"}, "jsonl", {"text_column": "transcript"}, {"transcript": "transcript"}),
            # A text column that is no placeholder fills the only one, as before prompt columns.
            ({"transcript"}, "jsonl", {"text_column": "body"}, {"transcript": "body"}),
            ({"transcript"}, "text", {}, {"transcript": "transcript"}),
            ({"transcript"}, "transcribe", {"text_column": "transcript"}, {"transcript": "transcript"}),
        ],
    )
    def test_bindings(self, placeholders, source_format, options, bindings):
        assert bind_prompt_columns(placeholders, source_format, **options) == bindings

    @pytest.mark.parametrize(
        ("placeholders", "source_format", "options", "message"),
        [
            ({"a", "b"}, "csv", {"prompt_columns": {"a": "x"}}, r"placeholder\(s\) \['b'\] have no column"),
            ({"a"}, "csv", {"prompt_columns": {"a": "x", "c": "y"}}, r"\['c'\] are not placeholders"),
            ({"a", "b"}, "jsonl", {"text_column": "body"}, "bind each placeholder"),
            ({"a", "b"}, "text", {}, "set text_column"),
            ({"a", "b"}, "text", {"text_column": "a"}, r"fills only \{a\}"),
            ({"a"}, "transcribe", {"text_column": "b"}, r"fills only \{b\}"),
        ],
    )
    def test_placeholders_without_a_value_or_bindings_without_a_placeholder(
        self, placeholders, source_format, options, message
    ):
        with pytest.raises(TemplateError, match=message):
            bind_prompt_columns(placeholders, source_format, **options)

    def test_one_record_per_file_formats_take_no_prompt_columns(self):
        with pytest.raises(ConfigError, match="one text per file"):
            bind_prompt_columns({"a"}, "text", prompt_columns={"a": "a"})

    def test_spec_for_a_template(self):
        spec = spec_for_template({"title", "body"}, uri="s3://b/p/", source_format="parquet", id_column="rid")
        assert (spec.id_column, spec.bindings) == ("rid", {"body": "body", "title": "title"})
        text = spec_for_template({"transcript"}, uri="/calls", source_format="text")
        assert (text.prompt_columns, text.bindings) == (None, {"transcript": "transcript"})


class TestBedrockRecords:
    """Lines already in Bedrock's batch format: read as they are, a bad line a problem record."""

    BODY = {"anthropic_version": "bedrock-2023-05-31", "messages": [{"role": "user", "content": SECRET}]}

    @pytest.mark.parametrize(
        ("line", "record_id", "problem", "detail"),
        [
            (b"{not json", None, "invalid_json", "invalid JSON"),
            (b"[1]", None, "invalid_json", "JSON list"),
            (b'{"modelInput": {}}', None, "missing_id", "no 'recordId' field"),
            (
                b'{"recordId": "short", "modelInput": {}}',
                "short",
                "invalid_record_id",
                "11 letters and digits",
            ),
            (b'{"recordId": 12345678901, "modelInput": {}}', None, "invalid_record_id", "11 letters"),
            (b'{"recordId": "abcdefghijk"}', "abcdefghijk", "missing_model_input", "'modelInput' is absent"),
            (
                b'{"recordId": "abcdefghijk", "modelInput": "x"}',
                "abcdefghijk",
                "missing_model_input",
                "a str",
            ),
        ],
    )
    def test_bad_lines(self, line, record_id, problem, detail):
        record = batch_record(line, "in.jsonl:3")
        assert (record.record_id, record.model_input, record.problem) == (record_id, None, problem)
        assert detail in str(record.detail)

    def test_records_in_key_and_line_order(self, tmp_path):
        jsonl(tmp_path / "b.jsonl", [{"recordId": "B0000000001", "modelInput": self.BODY}])
        jsonl(
            tmp_path / "a.jsonl",
            [{"recordId": "A0000000001", "modelInput": self.BODY, "extra": 1}, b"\n", b"{broken\n"],
        )
        records = list(SourceReader(SourceSpec(str(tmp_path), "bedrock")).records())
        assert [(r.record_id, r.position, r.problem) for r in records] == [
            ("A0000000001", "a.jsonl:1", None),
            (None, "a.jsonl:3", "invalid_json"),
            ("B0000000001", "b.jsonl:1", None),
        ]
        assert records[0].model_input == self.BODY
        assert SECRET not in str(records[1].detail)

    def test_a_bedrock_source_has_no_columns_and_no_rows(self, tmp_path):
        with pytest.raises(ConfigError, match="no prompt or passthrough columns"):
            SourceSpec("x", "bedrock", passthrough_columns=("a",))
        jsonl(tmp_path / "a.jsonl", [{"recordId": "A0000000001", "modelInput": {}}])
        with pytest.raises(ConfigError, match="records\\(\\)"):
            list(SourceReader(SourceSpec(str(tmp_path), "bedrock")).rows())
        with pytest.raises(ConfigError, match="fills no template"):
            bind_prompt_columns({"a"}, "bedrock")
