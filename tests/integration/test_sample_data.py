"""The synthetic generators (calls, reviews, tickets) and their writers: content, ground truth, determinism,
every format, local and on S3.

Transcribe output is compared with the shape of the examples in the Amazon Transcribe developer guide.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import types
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from bedrock_batch_dev.emulator import LocalStack
from bedrock_batch_dev.emulator.responders import analyze_transcript
from bedrock_batch_dev.sample_data import (
    ASPECTS,
    CHANNELS,
    PRIORITIES,
    PRODUCT_CATEGORIES,
    REQUESTED_ACTIONS,
    REVIEW_LABELS,
    SCENARIOS,
    TICKET_CATEGORIES,
    Review,
    Ticket,
    generate_calls,
    generate_reviews,
    generate_tickets,
    make_review,
    make_ticket,
    write_calls,
    write_reviews,
    write_tickets,
)
from bedrock_batch_dev.sample_data.__main__ import main as sample_data_main
from bedrock_batch_dev.sample_data.reviews import ASPECT_KEYWORDS

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


# --- product reviews (classification) and support tickets (extraction) ----------------------------------

REVIEW_COLUMNS = [
    "review_id",
    "product_id",
    "product_category",
    "rating",
    "title",
    "review_text",
    "language",
    "created_at",
]
# The session's moto server is shared with other modules: a bucket name of this module's own.
SHARED_BUCKET = f"sample-data-{uuid.uuid4().hex[:8]}"
TICKET_COLUMNS = ["ticket_id", "created_at", "channel", "customer_email", "subject", "body", "priority"]


@pytest.fixture(scope="module")
def reviews() -> list[Review]:
    return list(generate_reviews(1000, seed=11))


@pytest.fixture(scope="module")
def tickets() -> list[Ticket]:
    return list(generate_tickets(1000, seed=11))


@pytest.fixture
def s3(moto_s3: str) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=moto_s3,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=SHARED_BUCKET)
    return client


def flat(text: str) -> str:
    """``text`` with every run of whitespace one space: hard-wrapped mail lines join up again."""
    return " ".join(text.split())


def written_forms(amount: Decimal, currency: str) -> set[str]:
    """The ways the generator may write ``amount`` (US and European separators; yen without decimals)."""
    if currency == "JPY":
        return {f"{int(amount):,}", str(int(amount))}
    us = f"{amount:,.2f}"
    return {us, us.replace(",", " ").replace(".", ",").replace(" ", ".")}


class TestGeneratedReviews:
    def test_same_seed_same_reviews_and_prefix_stability(self, reviews: list[Review]):
        assert list(generate_reviews(200, seed=11)) == reviews[:200]
        assert make_review(11, 640) == reviews[640]
        other = [r.review_text for r in generate_reviews(200, seed=12)]
        assert sum(a == b.review_text for a, b in zip(other, reviews, strict=False)) < 10

    def test_rows_hold_the_source_columns_and_never_the_truth(self, reviews: list[Review]):
        row = reviews[0].row()
        assert list(row) == REVIEW_COLUMNS
        assert reviews[0].truth.label in REVIEW_LABELS
        assert isinstance(row["rating"], int)
        assert row["created_at"].tzinfo is not None

    def test_labels_ratings_and_aspects_agree(self, reviews: list[Review]):
        assert {r.truth.label for r in reviews} == set(REVIEW_LABELS)
        assert {r.product_category for r in reviews} == set(PRODUCT_CATEGORIES)
        for review in reviews:
            truth = review.truth
            sentiments = {m.sentiment for m in truth.aspects}
            assert set(truth.aspect_names) <= set(ASPECTS)
            assert len(set(truth.aspect_names)) == len(truth.aspects), "an aspect is listed once"
            assert review.rating in range(1, 6)
            if truth.label == "positive":
                assert review.rating >= 4
                assert "negative" not in sentiments
            elif truth.label == "negative":
                assert review.rating <= 2
                assert "positive" not in sentiments
            elif truth.label == "mixed":
                assert {"positive", "negative"} <= sentiments
            else:
                assert sentiments <= {"neutral"}

    def test_english_texts_name_every_aspect_of_their_truth(self, reviews: list[Review]):
        english = [r for r in reviews if r.language == "en"]
        for review in english:
            text = review.review_text.lower()
            for aspect in review.truth.aspect_names:
                assert any(k in text for k in ASPECT_KEYWORDS[aspect]), (aspect, review.review_text)
        counted = Counter(a for r in english for a in r.truth.aspect_names)
        assert set(counted) == set(ASPECTS)

    def test_texts_are_varied_like_real_reviews(self, reviews: list[Review]):
        texts = [r.review_text for r in reviews]
        assert len(set(texts)) >= 0.95 * len(texts)
        assert len({r.review_id for r in reviews}) == len(reviews)
        languages = Counter(r.language for r in reviews)
        assert languages["en"] >= 0.85 * len(reviews)
        assert len(languages) >= 4, "a few reviews in other languages"
        assert sum(len(t) < 40 for t in texts) >= 30, "some very short reviews"
        assert sum(len(t) > 400 and "\n\n" in t for t in texts) >= 10, "a few long ones, in paragraphs"
        assert sum(not t.isascii() for t in texts) >= 50, "names, emojis and other languages"
        assert sum(bool(re.search(r"[\U0001F300-\U0001FAFF]", t)) for t in texts) >= 30, "emojis"
        per_product = Counter(r.product_id for r in reviews)
        assert per_product.most_common(1)[0][1] >= 5, "popular products collect many reviews"
        assert all(re.fullmatch(r"B0[A-Z0-9]{8}", p) for p in per_product)

    def test_large_counts_are_made_one_at_a_time(self, reviews: list[Review]):
        lazy = generate_reviews(100_000, seed=11)
        assert isinstance(lazy, types.GeneratorType)
        assert list(itertools.islice(lazy, 3)) == reviews[:3]
        assert make_review(11, 99_999).review_id == "review-11-100000"

    def test_bad_arguments(self, reviews: list[Review]):
        with pytest.raises(ValueError, match="negative"):
            list(generate_reviews(-1))
        with pytest.raises(ValueError, match="unknown format"):
            write_reviews(reviews, "text", "/tmp/never")
        with pytest.raises(ValueError, match="row_group_rows"):
            write_reviews(reviews, "parquet", "/tmp/never", row_group_rows=0)


class TestGeneratedTickets:
    def test_same_seed_same_tickets_and_prefix_stability(self, tickets: list[Ticket]):
        assert list(generate_tickets(200, seed=11)) == tickets[:200]
        assert make_ticket(11, 777) == tickets[777]
        other = generate_tickets(200, seed=12)
        assert sum(a.body == b.body for a, b in zip(other, tickets, strict=False)) < 3

    def test_rows_hold_the_source_columns_and_never_the_truth(self, tickets: list[Ticket]):
        assert list(tickets[0].row()) == TICKET_COLUMNS
        assert tickets[0].row()["created_at"].tzinfo is not None

    def test_the_body_states_every_fact_of_the_truth(self, tickets: list[Ticket]):
        for ticket in tickets:
            body, truth = flat(ticket.body), ticket.truth
            stated = [truth.issue.product, truth.issue.order_id, *truth.issue.error_codes]
            stated += [other.order_id for other in truth.other_issues]
            assert all(fact in body for fact in stated if fact), ticket.ticket_id
            if truth.refund is not None:
                assert "refund" in truth.requested_actions
                assert written_forms(truth.refund.amount, truth.refund.currency) & set(
                    re.findall(r"\d[\d.,]*\d|\d", body)
                ), ticket.ticket_id
            if not truth.extractable:
                assert not re.search(r"ORD-\d|\d{3}-\d{7}-\d{7}", body), ticket.ticket_id
            assert truth.issue.category in TICKET_CATEGORIES
            assert set(truth.requested_actions) <= set(REQUESTED_ACTIONS)
            assert truth.urgency in PRIORITIES

    def test_expected_extraction_has_the_nested_shape(self, tickets: list[Ticket]):
        for ticket in tickets:
            truth, expected = ticket.truth, ticket.truth.extraction()
            assert orjson.loads(orjson.dumps(expected)) == expected, "plain JSON"
            assert set(expected) == {"issue", "requested_actions", "urgency"} | (
                {"refund"} if truth.refund else set()
            )
            assert ("order_id" in expected["issue"]) == (truth.issue.order_id is not None)
            assert expected["issue"]["error_codes"] == list(truth.issue.error_codes)
        truth = next(t.truth for t in tickets if t.truth.refund)
        assert truth.refund is not None
        assert truth.extraction()["refund"] == {
            "amount": float(truth.refund.amount),
            "currency": truth.refund.currency,
        }

    def test_tickets_are_varied_like_a_real_queue(self, tickets: list[Ticket]):
        bodies = [t.body for t in tickets]
        assert len(set(bodies)) >= 0.95 * len(bodies)
        assert len({t.ticket_id for t in tickets}) == len(tickets)
        assert {t.channel for t in tickets} == set(CHANNELS)
        assert {t.truth.issue.category for t in tickets} == set(TICKET_CATEGORIES)
        assert {t.priority for t in tickets} == {*PRIORITIES, None}
        assert all("\n" in body for body in bodies)
        assert sum("," in b and '"' in b for b in bodies) >= 20, "commas and quotes for the CSV quoting"
        assert sum(bool(t.truth.other_issues) for t in tickets) >= 100, "sometimes a second issue"
        assert sum(not t.truth.extractable for t in tickets) >= 50, "sometimes nothing to extract"
        assert sum(len(t.truth.issue.error_codes) == 2 for t in tickets) >= 10
        assert len({t.truth.refund.currency for t in tickets if t.truth.refund}) >= 4
        assert all(re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", t.customer_email) for t in tickets)
        assert sum(t.created_at.isoformat() < "2025-07-01" for t in tickets) in range(300, 700)

    def test_large_counts_are_made_one_at_a_time(self, tickets: list[Ticket]):
        lazy = generate_tickets(100_000, seed=11)
        assert isinstance(lazy, types.GeneratorType)
        assert list(itertools.islice(lazy, 3)) == tickets[:3]
        assert make_ticket(11, 99_999).ticket_id == "ticket-11-100000"


class TestReviewAndTicketFiles:
    def test_reviews_parquet_schema_row_groups_and_rows(self, tmp_path: Path, reviews: list[Review]):
        (path,) = write_reviews(reviews, "parquet", str(tmp_path), row_group_rows=300)
        assert Path(path).name == "reviews.parquet"
        parquet = pq.ParquetFile(path)
        assert parquet.schema_arrow.names == REVIEW_COLUMNS, "the truth is not a column"
        assert parquet.schema_arrow.field("rating").type == pa.int64()
        assert parquet.schema_arrow.field("created_at").type == pa.timestamp("ms", tz="UTC")
        assert [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)] == [
            300,
            300,
            300,
            100,
        ]
        assert parquet.read().to_pylist() == [r.row() for r in reviews]

    def test_parquet_is_written_as_rows_stream_in(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        pulled = 0

        def counted() -> Iterator[Review]:
            nonlocal pulled
            for review in generate_reviews(1000, seed=11):
                pulled += 1
                yield review

        seen: list[int] = []
        original = pq.ParquetWriter.write_table

        def spy(self: pq.ParquetWriter, table: pa.Table, *args: Any, **kwargs: Any) -> None:
            seen.append(pulled)
            original(self, table, *args, **kwargs)

        monkeypatch.setattr(pq.ParquetWriter, "write_table", spy)
        write_reviews(counted(), "parquet", str(tmp_path), row_group_rows=300)
        assert seen == [300, 600, 900, 1000], "one row group in memory at a time"

    def test_reviews_csv_and_jsonl(self, tmp_path: Path, reviews: list[Review]):
        (csv_path,) = write_reviews(reviews[:50], "csv", str(tmp_path))
        with open(csv_path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["review_text"] for r in rows] == [r.review_text for r in reviews[:50]]
        assert [int(r["rating"]) for r in rows] == [r.rating for r in reviews[:50]]
        (jsonl_path,) = write_reviews(reviews[:50], "jsonl", str(tmp_path))
        lines = [orjson.loads(line) for line in Path(jsonl_path).read_bytes().splitlines()]
        assert list(lines[0]) == REVIEW_COLUMNS
        assert lines[7]["created_at"] == reviews[7].created_at.isoformat()

    def test_tickets_csv_round_trips_multiline_bodies(self, tmp_path: Path, tickets: list[Ticket]):
        (path,) = write_tickets(tickets, "csv", str(tmp_path))
        assert Path(path).name == "tickets.csv"
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
        assert reader.fieldnames == TICKET_COLUMNS, "the truth is not a column"
        assert [r["body"] for r in rows] == [t.body for t in tickets]
        assert [r["subject"] for r in rows] == [t.subject for t in tickets]
        assert [r["priority"] or None for r in rows] == [t.priority for t in tickets]
        assert [datetime.fromisoformat(r["created_at"]) for r in rows] == [t.created_at for t in tickets]
        # A columnar reader that splits records on line breaks sees the same rows.
        table = pa_csv.read_csv(path, parse_options=pa_csv.ParseOptions(newlines_in_values=True))
        assert table.num_rows == len(tickets)
        assert table.column("body").to_pylist() == [t.body for t in tickets]

    def test_tickets_parquet_keeps_missing_priorities_null(self, tmp_path: Path, tickets: list[Ticket]):
        written = write_tickets(tickets, "parquet", str(tmp_path), rows_per_file=400)
        assert [Path(p).name for p in written] == [
            "tickets-00001.parquet",
            "tickets-00002.parquet",
            "tickets-00003.parquet",
        ]
        table = pa.concat_tables(pq.read_table(p) for p in written)
        assert table.schema.names == TICKET_COLUMNS
        assert table.column("priority").null_count == sum(t.priority is None for t in tickets) > 0
        assert table.column("body").to_pylist() == [t.body for t in tickets]

    def test_empty_input_writes_one_empty_file(self, tmp_path: Path):
        (path,) = write_tickets([], "csv", str(tmp_path))
        assert Path(path).read_text(encoding="utf-8").splitlines() == [",".join(TICKET_COLUMNS)]
        (path,) = write_reviews(iter([]), "parquet", str(tmp_path))
        assert pq.read_table(path).num_rows == 0
        assert write_reviews([], "parquet", str(tmp_path / "split"), rows_per_file=10) == []

    def test_reviews_and_tickets_to_s3(self, s3: Any, reviews: list[Review], tickets: list[Ticket]):
        written = write_reviews(
            reviews[:30], "parquet", f"s3://{SHARED_BUCKET}/reviews/", s3_client=s3, rows_per_file=20
        )
        assert written == [
            f"s3://{SHARED_BUCKET}/reviews/reviews-00001.parquet",
            f"s3://{SHARED_BUCKET}/reviews/reviews-00002.parquet",
        ]
        body = s3.get_object(Bucket=SHARED_BUCKET, Key="reviews/reviews-00002.parquet")["Body"].read()
        assert pq.read_table(io.BytesIO(body)).column("review_id").to_pylist() == [
            r.review_id for r in reviews[20:30]
        ]
        (uri,) = write_tickets(tickets[:40], "csv", f"s3://{SHARED_BUCKET}/tickets", s3_client=s3)
        assert uri == f"s3://{SHARED_BUCKET}/tickets/tickets.csv"
        text = s3.get_object(Bucket=SHARED_BUCKET, Key="tickets/tickets.csv")["Body"].read().decode()
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        assert [r["body"] for r in rows] == [t.body for t in tickets[:40]]
        with pytest.raises(ValueError, match="s3_client"):
            write_tickets(tickets[:1], "csv", f"s3://{SHARED_BUCKET}/tickets")


class TestKindOnTheCommandLine:
    def test_reviews_default_to_parquet(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
        args = ["--kind", "reviews", "--count", "12", "--seed", "4", "--output", str(tmp_path)]
        assert sample_data_main(args) == 0
        table = pq.read_table(tmp_path / "reviews.parquet")
        assert table.to_pylist() == [r.row() for r in generate_reviews(12, seed=4)]
        assert capsys.readouterr().out.strip() == f"parquet: 12 reviews in 1 file(s) under {tmp_path}"

    def test_tickets_in_every_tabular_format(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
        args = ["--kind", "tickets", "--count", "9", "--format", "all", "--output", str(tmp_path)]
        assert sample_data_main([*args, "--rows-per-file", "5"]) == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["csv", "jsonl", "parquet"]
        assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == [
            "tickets-00001.csv",
            "tickets-00002.csv",
        ]
        with open(tmp_path / "csv" / "tickets-00002.csv", newline="", encoding="utf-8") as handle:
            bodies = [r["body"] for r in csv.DictReader(handle)]
        assert bodies == [t.body for t in generate_tickets(9)][5:]
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 3
        assert all(re.fullmatch(r"\w+: 9 tickets in 2 file\(s\) under \S+", line) for line in lines), (
            "the command never prints ticket text"
        )

    def test_formats_and_options_of_another_kind_are_refused(self, tmp_path: Path):
        with pytest.raises(SystemExit) as refused:
            sample_data_main(["--kind", "tickets", "--format", "transcribe", "--output", str(tmp_path)])
        assert refused.value.code == 2
        with pytest.raises(SystemExit):
            sample_data_main(["--kind", "reviews", "--max-bytes", "4000", "--output", str(tmp_path)])
        assert list(tmp_path.iterdir()) == []

    def test_tickets_to_s3(self, s3: Any, moto_s3: str, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        bucket = f"cli-tickets-{uuid.uuid4().hex[:8]}"
        args = ["--kind", "tickets", "--count", "6", "--output", f"s3://{bucket}/in/", "--create-bucket"]
        assert sample_data_main([*args, "--endpoint-url", moto_s3]) == 0
        body = s3.get_object(Bucket=bucket, Key="in/tickets.csv")["Body"].read().decode()
        assert len(list(csv.DictReader(io.StringIO(body, newline="")))) == 6
