"""Call-summary replies: parse the model's JSON object into typed, validated columns.

A reply that does not parse keeps its row, with ``parse_error`` saying why and the raw text kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import pyarrow as pa

SENTIMENTS = ("positive", "neutral", "negative")
RESOLUTIONS = ("resolved", "unresolved", "escalated")
MAX_SUMMARY_SENTENCES = 5

SUMMARY_FIELDS = pa.schema(
    [
        pa.field("summary", pa.string()),
        pa.field("sentiment", pa.string()),
        pa.field("primary_topic", pa.string()),
        pa.field("resolution", pa.string()),
        pa.field("action_items", pa.list_(pa.string())),
        pa.field("parse_error", pa.string()),
    ]
)


def _extract_object(text: str) -> Any:
    """The reply's JSON object, tolerating code fences or prose around it."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("reply contains no JSON object")
    return orjson.loads(text[start : end + 1])


def _choice(raw: Mapping[str, Any], key: str, allowed: tuple[str, ...], problems: list[str]) -> str | None:
    value = raw.get(key)
    if not isinstance(value, str) or value.strip().lower() not in allowed:
        problems.append(f"{key} {value!r} is not one of {'/'.join(allowed)}")
        return None
    return value.strip().lower()


# A sentence ends at . ! or ? followed by a space or the end, so "$93.53" or "v1.2" do not split one.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def _count_sentences(text: str) -> int:
    return sum(1 for part in _SENTENCE_END.split(text) if part.strip())


def parse_summary(text: str | None) -> dict[str, Any]:
    """Parse one reply into the :data:`SUMMARY_FIELDS` columns.

    Values that are present and valid are kept even when another field is wrong; every problem found is
    listed in ``parse_error`` (None when the reply is fully valid).

    :param text: the model's reply text, or None when the record failed.
    """
    row: dict[str, Any] = dict.fromkeys(SUMMARY_FIELDS.names)
    if text is None:
        return row
    try:
        raw = _extract_object(text)
    except ValueError as err:  # orjson.JSONDecodeError is a ValueError
        row["parse_error"] = f"reply is not a JSON object: {str(err)[:120]}"
        return row
    if not isinstance(raw, dict):
        row["parse_error"] = "reply is JSON but not an object"
        return row

    problems: list[str] = []
    summary = raw.get("summary")
    if isinstance(summary, str) and summary.strip():
        row["summary"] = summary.strip()
        if _count_sentences(summary) > MAX_SUMMARY_SENTENCES:
            problems.append(f"summary has more than {MAX_SUMMARY_SENTENCES} sentences")
    else:
        problems.append("summary is missing or empty")
    row["sentiment"] = _choice(raw, "sentiment", SENTIMENTS, problems)
    row["resolution"] = _choice(raw, "resolution", RESOLUTIONS, problems)
    topic = raw.get("primary_topic")
    if isinstance(topic, str) and topic.strip():
        row["primary_topic"] = topic.strip()
    else:
        problems.append("primary_topic is missing or empty")
    items = raw.get("action_items", [])
    if isinstance(items, list) and all(isinstance(i, str) for i in items):
        row["action_items"] = [i.strip() for i in items if i.strip()]
    else:
        problems.append("action_items is not a list of strings")
    row["parse_error"] = "; ".join(problems) or None
    return row


def summary_columns(texts: Iterable[str | None]) -> pa.Table:
    """Parse many replies into a table with the :data:`SUMMARY_FIELDS` schema, one row per reply."""
    rows = [parse_summary(t) for t in texts]
    return pa.Table.from_pylist(rows, schema=SUMMARY_FIELDS)
