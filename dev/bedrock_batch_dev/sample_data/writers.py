"""Writes synthetic data in every source format the library reads, to a local directory or an s3:// prefix.

Calls: a text file per call, JSONL, CSV, Parquet, Amazon Transcribe JSON (standard and Call Analytics).
Reviews and tickets: JSONL, CSV, Parquet. Tabular files are written as rows stream in: Parquet one row group
at a time, so a large count never sits in memory whole.
"""

from __future__ import annotations

import csv
import io
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from bedrock_batch_dev.sample_data.calls import Call, Turn
from bedrock_batch_dev.sample_data.reviews import Review
from bedrock_batch_dev.sample_data.tickets import Ticket

FORMATS = ("text", "jsonl", "csv", "parquet", "transcribe", "transcribe-call-analytics")
TABULAR_EXTENSIONS = {"jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}
TABULAR_FORMATS = tuple(TABULAR_EXTENSIONS)
COLUMNS = (
    "call_id",
    "transcript",
    "agent_id",
    "agent_name",
    "queue",
    "scenario",
    "customer_id",
    "started_at",
    "duration_seconds",
    "language_code",
)
PARQUET_SCHEMA = pa.schema(
    [
        ("call_id", pa.string()),
        ("transcript", pa.string()),
        ("agent_id", pa.string()),
        ("agent_name", pa.string()),
        ("queue", pa.string()),
        ("scenario", pa.string()),
        ("customer_id", pa.string()),
        ("started_at", pa.timestamp("ms", tz="UTC")),
        ("duration_seconds", pa.int64()),
        ("language_code", pa.string()),
    ]
)
REVIEW_SCHEMA = pa.schema(
    [
        ("review_id", pa.string()),
        ("product_id", pa.string()),
        ("product_category", pa.string()),
        ("rating", pa.int64()),
        ("title", pa.string()),
        ("review_text", pa.string()),
        ("language", pa.string()),
        ("created_at", pa.timestamp("ms", tz="UTC")),
    ]
)
TICKET_SCHEMA = pa.schema(
    [
        ("ticket_id", pa.string()),
        ("created_at", pa.timestamp("ms", tz="UTC")),
        ("channel", pa.string()),
        ("customer_email", pa.string()),
        ("subject", pa.string()),
        ("body", pa.string()),
        ("priority", pa.string()),  # null (an empty CSV field) when the ticket has none
    ]
)
# Transcribe labels the first speaker spk_0; in these calls the agent always speaks first.
SPEAKER_LABELS = {"Agent": "spk_0", "Customer": "spk_1"}
PARTICIPANT_ROLES = {"Agent": "AGENT", "Customer": "CUSTOMER"}
_PUNCTUATION = ".,?!;:"
_ACCOUNT_ID = "111122223333"


@dataclass(frozen=True)
class TableLayout:
    """How one kind of record is written as rows.

    :param stem: file name without extension (``reviews.parquet``, ``reviews-00001.parquet``).
    :param schema: the columns, in order, and their Parquet types.
    :param row_group_rows: rows per Parquet row group, a few MB of text.
    """

    stem: str
    schema: pa.Schema
    row_group_rows: int


CALLS_TABLE = TableLayout("calls", PARQUET_SCHEMA, 1_000)  # transcripts run to 20 KiB
REVIEWS_TABLE = TableLayout("reviews", REVIEW_SCHEMA, 10_000)
TICKETS_TABLE = TableLayout("tickets", TICKET_SCHEMA, 10_000)


@contextmanager
def _target(destination: str, name: str, s3_client: Any) -> Iterator[IO[bytes]]:
    """A binary file for ``destination/name``; S3 targets are spooled to a temp file and uploaded on close."""
    if destination.startswith("s3://"):
        if s3_client is None:
            raise ValueError(f"writing to {destination} needs an s3_client")
        bucket, _, prefix = destination.removeprefix("s3://").partition("/")
        key = f"{prefix.rstrip('/')}/{name}".lstrip("/")
        with tempfile.TemporaryFile() as spool:
            yield spool
            spool.seek(0)
            s3_client.upload_fileobj(spool, bucket, key)
    else:
        path = Path(destination) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            yield handle


def _join(destination: str, name: str) -> str:
    return f"{destination.rstrip('/')}/{name}"


_END = object()


def _files(rows: Iterator[Any], rows_per_file: int | None) -> Iterator[Iterator[Any]]:
    """The rows of each file in turn, without reading ahead; each must be consumed before the next."""
    if rows_per_file is None:
        yield rows  # one file, even an empty one
        return
    while (first := next(rows, _END)) is not _END:
        yield chain([first], islice(rows, rows_per_file - 1))


def _batches(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def _check(fmt: str, formats: tuple[str, ...], rows_per_file: int | None) -> None:
    if fmt not in formats:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(formats)}")
    if rows_per_file is not None and rows_per_file < 1:
        raise ValueError(f"rows_per_file must be positive, got {rows_per_file}")


def _write_table(
    rows: Iterable[Mapping[str, Any]],
    layout: TableLayout,
    fmt: str,
    destination: str,
    *,
    s3_client: Any,
    rows_per_file: int | None,
    row_group_rows: int | None = None,
) -> list[str]:
    _check(fmt, TABULAR_FORMATS, rows_per_file)
    if row_group_rows is not None and row_group_rows < 1:
        raise ValueError(f"row_group_rows must be positive, got {row_group_rows}")
    extension = TABULAR_EXTENSIONS[fmt]
    written: list[str] = []
    for number, file_rows in enumerate(_files(iter(rows), rows_per_file), start=1):
        name = f"{layout.stem}-{number:05d}{extension}" if rows_per_file else f"{layout.stem}{extension}"
        with _target(destination, name, s3_client) as handle:
            TABULAR_WRITERS[fmt](file_rows, handle, layout, row_group_rows or layout.row_group_rows)
        written.append(_join(destination, name))
    return written


def write_calls(
    calls: Iterable[Call],
    fmt: str,
    destination: str,
    *,
    s3_client: Any = None,
    rows_per_file: int | None = None,
) -> list[str]:
    """Write ``calls`` as ``fmt`` under ``destination`` (a directory or ``s3://bucket/prefix``).

    Text and Transcribe formats write one ``<call_id>.txt`` / ``<call_id>.json`` per call; tabular formats
    write ``calls.<ext>``, or ``calls-00001.<ext>``, … with ``rows_per_file`` rows each.

    :returns: the paths or URIs written, in order.
    """
    _check(fmt, FORMATS, rows_per_file)
    if fmt in TABULAR_EXTENSIONS:
        rows = (call.row() for call in calls)
        return _write_table(
            rows, CALLS_TABLE, fmt, destination, s3_client=s3_client, rows_per_file=rows_per_file
        )
    written: list[str] = []
    for call in calls:
        if fmt == "text":
            name, data = f"{call.call_id}.txt", (call.transcript + "\n").encode()
        elif fmt == "transcribe":
            name, data = f"{call.call_id}.json", orjson.dumps(transcribe_json(call))
        else:
            name, data = f"{call.call_id}.json", orjson.dumps(call_analytics_json(call))
        with _target(destination, name, s3_client) as handle:
            handle.write(data)
        written.append(_join(destination, name))
    return written


def write_reviews(
    reviews: Iterable[Review],
    fmt: str,
    destination: str,
    *,
    s3_client: Any = None,
    rows_per_file: int | None = None,
    row_group_rows: int | None = None,
) -> list[str]:
    """Write ``reviews`` as ``fmt`` (``parquet``, ``csv`` or ``jsonl``) under ``destination``.

    Writes ``reviews.<ext>``, or ``reviews-00001.<ext>``, … with ``rows_per_file`` rows each; the truth of
    each review is not written. ``row_group_rows`` sets the Parquet row group size (default 10,000).

    :returns: the paths or URIs written, in order.
    """
    return _write_table(
        (review.row() for review in reviews),
        REVIEWS_TABLE,
        fmt,
        destination,
        s3_client=s3_client,
        rows_per_file=rows_per_file,
        row_group_rows=row_group_rows,
    )


def write_tickets(
    tickets: Iterable[Ticket],
    fmt: str,
    destination: str,
    *,
    s3_client: Any = None,
    rows_per_file: int | None = None,
    row_group_rows: int | None = None,
) -> list[str]:
    """Write ``tickets`` as ``fmt`` (``csv``, ``parquet`` or ``jsonl``) under ``destination``.

    Writes ``tickets.<ext>``, or ``tickets-00001.<ext>``, … with ``rows_per_file`` rows each; the truth of
    each ticket is not written. In CSV, a ticket without priority has an empty ``priority`` field.

    :returns: the paths or URIs written, in order.
    """
    return _write_table(
        (ticket.row() for ticket in tickets),
        TICKETS_TABLE,
        fmt,
        destination,
        s3_client=s3_client,
        rows_per_file=rows_per_file,
        row_group_rows=row_group_rows,
    )


def _write_jsonl(
    rows: Iterable[Mapping[str, Any]], handle: IO[bytes], layout: TableLayout, group: int
) -> None:
    for row in rows:
        handle.write(orjson.dumps(row) + b"\n")


def _write_csv(rows: Iterable[Mapping[str, Any]], handle: IO[bytes], layout: TableLayout, group: int) -> None:
    # QUOTE_MINIMAL quotes every field holding a comma, a quote or a line break; readers need newline="".
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
    writer = csv.DictWriter(text, fieldnames=layout.schema.names)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()})
    text.flush()
    text.detach()  # leave the underlying file open for the caller to close (and upload)


def _write_parquet(
    rows: Iterable[Mapping[str, Any]], handle: IO[bytes], layout: TableLayout, group: int
) -> None:
    with pq.ParquetWriter(handle, layout.schema, compression="zstd") as writer:
        for batch in _batches(rows, group):
            writer.write_table(pa.Table.from_pylist(batch, schema=layout.schema), row_group_size=group)


TabularWriter = Callable[[Iterable[Mapping[str, Any]], IO[bytes], TableLayout, int], None]
TABULAR_WRITERS: Mapping[str, TabularWriter] = {
    "jsonl": _write_jsonl,
    "csv": _write_csv,
    "parquet": _write_parquet,
}


# --- Amazon Transcribe output ---------------------------------------------------------------------------


def _tokens(text: str) -> list[tuple[str, str]]:
    """(type, content) items as Transcribe emits them: words, and punctuation split off their word."""
    items: list[tuple[str, str]] = []
    for word in text.split():
        core = word.rstrip(_PUNCTUATION)
        if core:
            items.append(("pronunciation", core))
        items.extend(("punctuation", mark) for mark in word[len(core) :])
    return items


def _timed_turns(call: Call) -> Iterator[tuple[Turn, list[tuple[str, str, float, float]]]]:
    """Each turn with its items and their start/end seconds (~0.35 s per word, a pause between turns)."""
    clock = 0.4
    for turn in call.turns:
        timed = []
        for kind, content in _tokens(turn.text):
            if kind == "pronunciation":
                length = 0.12 + 0.045 * len(content)
                timed.append((kind, content, clock, clock + length))
                clock += length + 0.03
            else:
                timed.append((kind, content, clock, clock))
        yield turn, timed
        clock += 0.7


def _confidence(content: str) -> float:
    # Long words are recognized a little less surely; stable per word so files are deterministic.
    return round(max(0.62, 0.999 - 0.012 * max(0, len(content) - 6)), 4)


def transcribe_json(call: Call) -> dict[str, Any]:
    """The JSON a standard Transcribe job with speaker diarization (ShowSpeakerLabels) writes."""
    items: list[dict[str, Any]] = []
    segments: list[dict[str, Any]] = []
    audio_segments: list[dict[str, Any]] = []
    for turn, timed in _timed_turns(call):
        label = SPEAKER_LABELS[turn.speaker]
        ids = []
        segment_items = []
        for kind, content, start, end in timed:
            item: dict[str, Any] = {"id": len(items)}
            if kind == "pronunciation":
                item.update(start_time=f"{start:.3f}", end_time=f"{end:.3f}")
                segment_items.append(
                    {"start_time": f"{start:.3f}", "speaker_label": label, "end_time": f"{end:.3f}"}
                )
            item.update(
                speaker_label=label,
                alternatives=[
                    {
                        "confidence": str(_confidence(content) if kind == "pronunciation" else 0.0),
                        "content": content,
                    }
                ],
                type=kind,
            )
            ids.append(item["id"])
            items.append(item)
        begin, finish = timed[0][2], timed[-1][3]
        segments.append(
            {
                "start_time": f"{begin:.3f}",
                "speaker_label": label,
                "end_time": f"{finish:.3f}",
                "items": segment_items,
            }
        )
        audio_segments.append(
            {
                "id": len(audio_segments),
                "transcript": turn.text,
                "start_time": f"{begin:.3f}",
                "end_time": f"{finish:.3f}",
                "speaker_label": label,
                "items": ids,
            }
        )
    return {
        "jobName": call.call_id,
        "accountId": _ACCOUNT_ID,
        "status": "COMPLETED",
        "results": {
            "transcripts": [{"transcript": " ".join(t.text for t in call.turns)}],
            "speaker_labels": {"channel_label": "ch_0", "speakers": 2, "segments": segments},
            "items": items,
            "audio_segments": audio_segments,
        },
    }


_NEGATIVE_WORDS = ("frustrat", "unacceptable", "ridiculous", "disappoint", "rude", "wasted", "not happy")
_POSITIVE_WORDS = ("thank", "great", "perfect", "appreciate", "wonderful")


def _turn_sentiment(text: str) -> str:
    lowered = text.lower()
    negative = any(w in lowered for w in _NEGATIVE_WORDS)
    positive = any(w in lowered for w in _POSITIVE_WORDS)
    if negative and positive:
        return "MIXED"
    return "NEGATIVE" if negative else "POSITIVE" if positive else "NEUTRAL"


def call_analytics_json(call: Call) -> dict[str, Any]:
    """The JSON a Transcribe Call Analytics (post-call) job writes: turns carry a ``ParticipantRole``."""
    transcript: list[dict[str, Any]] = []
    talk_ms = {"AGENT": 0, "CUSTOMER": 0}
    words = {"AGENT": 0, "CUSTOMER": 0}
    end_ms = 0
    for number, (turn, timed) in enumerate(_timed_turns(call)):
        role = PARTICIPANT_ROLES[turn.speaker]
        begin_ms, end_ms = round(timed[0][2] * 1000), round(timed[-1][3] * 1000)
        talk_ms[role] += end_ms - begin_ms
        words[role] += sum(1 for kind, *_ in timed if kind == "pronunciation")
        transcript.append(
            {
                "LoudnessScores": [
                    round(70 + (i * 7 + number * 3) % 20 + 0.37, 2)
                    for i in range(max(1, (end_ms - begin_ms) // 1000))
                ],
                "Content": turn.text,
                "Id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{call.call_id}/{number}")),
                "BeginOffsetMillis": begin_ms,
                "EndOffsetMillis": end_ms,
                "Sentiment": _turn_sentiment(turn.text),
                "ParticipantRole": role,
                "Items": [
                    {
                        "Confidence": _confidence(content) if kind == "pronunciation" else 0.0,
                        "Content": content,
                        "BeginOffsetMillis": round(start * 1000),
                        "EndOffsetMillis": round(end * 1000),
                        "Type": kind,
                    }
                    for kind, content, start, end in timed
                ],
            }
        )
    total_talk = sum(talk_ms.values())
    return {
        "JobStatus": "COMPLETED",
        "LanguageCode": "en-US",
        "AccountId": _ACCOUNT_ID,
        "JobName": call.call_id,
        "Channel": "VOICE",
        "Participants": [{"ParticipantRole": "AGENT"}, {"ParticipantRole": "CUSTOMER"}],
        "ContentMetadata": {"Output": "Raw"},
        "Transcript": transcript,
        "Categories": {"MatchedCategories": [], "MatchedDetails": {}},
        "ConversationCharacteristics": {
            "NonTalkTime": {"Instances": [], "TotalTimeMillis": 0},
            "Interruptions": {"TotalCount": 0, "TotalTimeMillis": 0, "InterruptionsByInterrupter": {}},
            "TotalConversationDurationMillis": end_ms,
            "Sentiment": {
                "OverallSentiment": {"AGENT": 1.5, "CUSTOMER": _overall_customer_sentiment(call)},
                "SentimentByPeriod": {"QUARTER": {"AGENT": [], "CUSTOMER": []}},
            },
            "TalkSpeed": {
                "DetailsByParticipant": {
                    role: {"AverageWordsPerMinute": round(words[role] / max(talk_ms[role], 1) * 60_000)}
                    for role in ("AGENT", "CUSTOMER")
                }
            },
            "TalkTime": {
                "DetailsByParticipant": {
                    role: {"TotalTimeMillis": talk_ms[role]} for role in ("AGENT", "CUSTOMER")
                },
                "TotalTimeMillis": total_talk,
            },
        },
    }


def _overall_customer_sentiment(call: Call) -> float:
    score = {"POSITIVE": 1.0, "NEGATIVE": -1.0, "MIXED": 0.0, "NEUTRAL": 0.0}
    customer = [score[_turn_sentiment(t.text)] for t in call.turns if t.speaker == "Customer"]
    return round(5 * sum(customer) / max(len(customer), 1), 1)
