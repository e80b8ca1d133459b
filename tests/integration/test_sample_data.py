"""The synthetic call generator and its writers: content, determinism, every format, local and on S3.

Transcribe output is compared with the shape of the examples in the Amazon Transcribe developer guide.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bedrock_batch_dev.emulator import LocalStack
from bedrock_batch_dev.emulator.responders import analyze_transcript
from bedrock_batch_dev.sample_data import SCENARIOS, generate_calls, write_calls
from bedrock_batch_dev.sample_data.__main__ import main as sample_data_main

pytestmark = pytest.mark.integration

CALLS = list(generate_calls(60, seed=42))
BUCKET = "sample-data"

# Abridged from "Example diarization output (batch)" in the Amazon Transcribe developer guide.
TRANSCRIBE_EXAMPLE = {
    "jobName": "my-first-transcription-job",
    "accountId": "111122223333",
    "results": {
        "transcripts": [{"transcript": "I've been on hold for an hour. Sorry about that."}],
        "speaker_labels": {
            "channel_label": "ch_0",
            "speakers": 2,
            "segments": [
                {
                    "start_time": "4.87",
                    "speaker_label": "spk_0",
                    "end_time": "6.88",
                    "items": [{"start_time": "4.87", "speaker_label": "spk_0", "end_time": "5.02"}],
                }
            ],
        },
        "items": [
            {
                "id": 0,
                "start_time": "4.87",
                "speaker_label": "spk_0",
                "end_time": "5.02",
                "alternatives": [{"confidence": "1.0", "content": "I've"}],
                "type": "pronunciation",
            }
        ],
    },
}
# Abridged from "Post-call analytics output" (compiled example) in the same guide.
CALL_ANALYTICS_EXAMPLE = {
    "JobStatus": "COMPLETED",
    "LanguageCode": "en-US",
    "Transcript": [
        {
            "LoudnessScores": [78.63, 78.37],
            "Content": "Hi, my name is Mike.",
            "Id": "be4ffd4a-6d17-4d3f-8fab-5a3ab4fc7c25",
            "BeginOffsetMillis": 3950,
            "EndOffsetMillis": 5360,
            "Sentiment": "NEUTRAL",
            "ParticipantRole": "AGENT",
            "Items": [
                {
                    "Confidence": 0.9972,
                    "Content": "Hi",
                    "BeginOffsetMillis": 3950,
                    "EndOffsetMillis": 4280,
                    "Type": "pronunciation",
                }
            ],
        }
    ],
    "Categories": {"MatchedCategories": [], "MatchedDetails": {}},
    "ConversationCharacteristics": {
        "NonTalkTime": {"Instances": [], "TotalTimeMillis": 0},
        "Interruptions": {"TotalCount": 0, "TotalTimeMillis": 0, "InterruptionsByInterrupter": {}},
        "TotalConversationDurationMillis": 24000,
        "Sentiment": {"OverallSentiment": {"AGENT": 2.5, "CUSTOMER": 0.0}},
        "TalkSpeed": {"DetailsByParticipant": {"AGENT": {"AverageWordsPerMinute": 150}}},
        "TalkTime": {"DetailsByParticipant": {"AGENT": {"TotalTimeMillis": 12000}}, "TotalTimeMillis": 20000},
    },
    "JobName": "my-call-analytics-job",
    "AccountId": "111122223333",
    "Channel": "VOICE",
    "Participants": [{"ParticipantRole": "AGENT"}, {"ParticipantRole": "CUSTOMER"}],
}


def missing_from(example: Any, actual: Any, path: str = "$") -> list[str]:
    """Paths where ``actual`` lacks a key of ``example`` or holds another JSON type."""
    if isinstance(example, dict):
        if not isinstance(actual, dict):
            return [f"{path} is {type(actual).__name__}, not an object"]
        return [
            p
            for key in example
            for p in missing_from(example[key], actual.get(key, _MISSING), f"{path}.{key}")
        ]
    if isinstance(example, list):
        if not isinstance(actual, list) or (example and not actual):
            return [f"{path} is not a list with items"]
        return missing_from(example[0], actual[0], f"{path}[0]") if example else []
    if actual is _MISSING:
        return [f"{path} is missing"]
    numeric = (int, float)
    same = isinstance(actual, numeric) if isinstance(example, numeric) else type(actual) is type(example)
    return [] if same else [f"{path} is {type(actual).__name__}, expected {type(example).__name__}"]


_MISSING = object()


def text_from_items(items: list[dict[str, Any]], content: Any, kind: Any) -> str:
    """Rebuild text from Transcribe items the way readers do: words spaced, punctuation attached."""
    text = ""
    for item in items:
        if kind(item) == "punctuation":
            text += content(item)
        else:
            text += (" " if text else "") + content(item)
    return text


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as local:
        local.client("s3").create_bucket(Bucket=BUCKET)
        yield local


class TestGeneratedCalls:
    def test_same_seed_same_calls_and_prefix_stability(self):
        again = list(generate_calls(60, seed=42))
        assert [c.transcript for c in again] == [c.transcript for c in CALLS]
        assert [c.row() for c in again] == [c.row() for c in CALLS]
        assert [c.transcript for c in generate_calls(10, seed=42)] == [c.transcript for c in CALLS[:10]]
        other = [c.transcript for c in generate_calls(60, seed=43)]
        assert not set(other) & {c.transcript for c in CALLS}

    def test_scenarios_sizes_and_turns(self):
        calls = list(generate_calls(200, seed=1))
        assert set(Counter(c.scenario for c in calls)) == set(SCENARIOS)
        sizes = [len(c.transcript.encode()) for c in calls]
        assert min(sizes) >= 1024
        assert max(sizes) <= 20 * 1024
        assert max(sizes) > 12 * 1024, "the size distribution should have a long tail"
        for call in calls:
            lines = call.transcript.splitlines()
            assert lines[0].startswith("Agent: ")
            assert all(line.startswith(("Agent: ", "Customer: ")) for line in lines)
            speakers = [t.speaker for t in call.turns]
            assert all(a != b for a, b in itertools.pairwise(speakers)), "turns alternate"
        assert len({c.call_id for c in calls}) == 200

    def test_size_bounds_are_configurable(self):
        sizes = [
            len(c.transcript.encode()) for c in generate_calls(30, seed=3, min_bytes=2000, max_bytes=3000)
        ]
        assert min(sizes) >= 2000
        assert max(sizes) <= 3000

    def test_transcripts_carry_their_scenario(self):
        # The emulator's summarizer recovers topic and outcome from the text alone: the calls read as
        # what they claim to be, so demo results are meaningful.
        analyses = [(call, analyze_transcript(call.transcript)) for call in CALLS]
        assert sum(a.topic == c.scenario for c, a in analyses) >= 0.9 * len(CALLS)
        assert sum(a.resolution == c.outcome for c, a in analyses) >= 0.9 * len(CALLS)

    def test_rows_have_passthrough_columns(self):
        row = CALLS[0].row()
        assert {"call_id", "transcript", "agent_id", "queue", "started_at"} <= set(row)
        assert row["started_at"].tzinfo is not None
        assert row["queue"]
        assert row["agent_id"].startswith("AGT-")

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="negative"):
            list(generate_calls(-1))
        with pytest.raises(ValueError, match="min_bytes"):
            list(generate_calls(1, min_bytes=500, max_bytes=100))
        with pytest.raises(ValueError, match="unknown format"):
            write_calls(CALLS, "xml", "/tmp/never")
        with pytest.raises(ValueError, match="s3_client"):
            write_calls(CALLS[:1], "text", "s3://bucket/prefix")


class TestLocalFormats:
    def test_text_file_per_call(self, tmp_path: Path):
        written = write_calls(CALLS, "text", str(tmp_path))
        assert sorted(Path(p).name for p in written) == sorted(f"{c.call_id}.txt" for c in CALLS)
        assert (tmp_path / f"{CALLS[3].call_id}.txt").read_text() == CALLS[3].transcript + "\n"

    def test_jsonl(self, tmp_path: Path):
        (path,) = write_calls(CALLS, "jsonl", str(tmp_path))
        rows = [orjson.loads(line) for line in Path(path).read_bytes().splitlines()]
        assert [r["call_id"] for r in rows] == [c.call_id for c in CALLS]
        assert rows[5]["transcript"] == CALLS[5].transcript
        assert rows[5]["started_at"] == CALLS[5].started_at.isoformat()

    def test_csv_round_trips_multiline_transcripts(self, tmp_path: Path):
        (path,) = write_calls(CALLS, "csv", str(tmp_path))
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["transcript"] for r in rows] == [c.transcript for c in CALLS]
        assert rows[0]["agent_id"] == CALLS[0].agent_id
        assert int(rows[0]["duration_seconds"]) == CALLS[0].duration_seconds

    def test_parquet_schema_and_rows(self, tmp_path: Path):
        (path,) = write_calls(CALLS, "parquet", str(tmp_path))
        table = pq.read_table(path)
        assert table.schema.field("started_at").type == pa.timestamp("ms", tz="UTC")
        assert table.schema.field("duration_seconds").type == pa.int64()
        assert table.column("transcript").to_pylist() == [c.transcript for c in CALLS]
        assert table.column("queue").to_pylist() == [c.queue for c in CALLS]

    def test_rows_per_file_splits_tabular_output(self, tmp_path: Path):
        written = write_calls(CALLS, "parquet", str(tmp_path), rows_per_file=25)
        assert [Path(p).name for p in written] == [
            "calls-00001.parquet",
            "calls-00002.parquet",
            "calls-00003.parquet",
        ]
        assert [pq.read_table(p).num_rows for p in written] == [25, 25, 10]

    def test_transcribe_json_matches_the_service_output(self, tmp_path: Path):
        written = write_calls(CALLS[:5], "transcribe", str(tmp_path))
        for path, call in zip(written, CALLS[:5], strict=True):
            doc = orjson.loads(Path(path).read_bytes())
            assert missing_from(TRANSCRIBE_EXAMPLE, doc) == []
            results = doc["results"]
            items = results["items"]
            assert [i["id"] for i in items] == list(range(len(items)))
            assert all("start_time" not in i for i in items if i["type"] == "punctuation")
            assert {s["speaker_label"] for s in results["speaker_labels"]["segments"]} == {"spk_0", "spk_1"}
            rebuilt = text_from_items(items, lambda i: i["alternatives"][0]["content"], lambda i: i["type"])
            assert rebuilt == " ".join(t.text for t in call.turns) == results["transcripts"][0]["transcript"]
            turns = [(s["speaker_label"], s["transcript"]) for s in results["audio_segments"]]
            assert turns == [({"Agent": "spk_0", "Customer": "spk_1"}[t.speaker], t.text) for t in call.turns]
            starts = [float(i["start_time"]) for i in items if i["type"] == "pronunciation"]
            assert starts == sorted(starts)

    def test_call_analytics_json_matches_the_service_output(self, tmp_path: Path):
        written = write_calls(CALLS[:5], "transcribe-call-analytics", str(tmp_path))
        for path, call in zip(written, CALLS[:5], strict=True):
            doc = orjson.loads(Path(path).read_bytes())
            assert missing_from(CALL_ANALYTICS_EXAMPLE, doc) == []
            turns = [(t["ParticipantRole"], t["Content"]) for t in doc["Transcript"]]
            assert turns == [(t.speaker.upper(), t.text) for t in call.turns]
            first = doc["Transcript"][0]
            rebuilt = text_from_items(first["Items"], lambda i: i["Content"], lambda i: i["Type"])
            assert rebuilt == call.turns[0].text
            assert (
                first["BeginOffsetMillis"]
                < first["EndOffsetMillis"]
                <= doc["Transcript"][1]["BeginOffsetMillis"]
            )


class TestS3AndCommandLine:
    def test_every_format_to_s3(self, stack: LocalStack):
        s3 = stack.client("s3")
        for fmt in ("text", "jsonl", "csv", "parquet", "transcribe", "transcribe-call-analytics"):
            written = write_calls(CALLS[:7], fmt, f"s3://{BUCKET}/calls/{fmt}/", s3_client=s3)
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"calls/{fmt}/")["Contents"]]
            assert sorted(f"s3://{BUCKET}/{k}" for k in keys) == sorted(written)
        body = s3.get_object(Bucket=BUCKET, Key="calls/parquet/calls.parquet")["Body"].read()
        assert pq.read_table(io.BytesIO(body)).column("call_id").to_pylist() == [c.call_id for c in CALLS[:7]]
        text = s3.get_object(Bucket=BUCKET, Key=f"calls/text/{CALLS[2].call_id}.txt")["Body"].read().decode()
        assert text == CALLS[2].transcript + "\n"

    def test_command_line_writes_all_formats_locally(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ):
        assert (
            sample_data_main(["--count", "8", "--seed", "9", "--format", "all", "--output", str(tmp_path)])
            == 0
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["text", "jsonl", "csv", "parquet", "transcribe", "transcribe-call-analytics"]
        )
        assert len(list((tmp_path / "transcribe").glob("*.json"))) == 8
        rows = (tmp_path / "jsonl" / "calls.jsonl").read_bytes().splitlines()
        assert [orjson.loads(r)["transcript"] for r in rows] == [
            c.transcript for c in generate_calls(8, seed=9)
        ]
        assert "Agent:" not in capsys.readouterr().out, "the command never prints call text"

    def test_command_line_writes_to_s3(self, stack: LocalStack, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        args = ["--count", "5", "--format", "csv", "--output", "s3://cli-created/in/", "--create-bucket"]
        assert sample_data_main([*args, "--endpoint-url", stack.s3_endpoint_url]) == 0
        body = stack.client("s3").get_object(Bucket="cli-created", Key="in/calls.csv")["Body"].read().decode()
        assert len(list(csv.DictReader(io.StringIO(body)))) == 5
