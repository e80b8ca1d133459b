"""A small reply schema the unit tests share: an enum and an integer range, the two ways a reply most often
breaks a schema."""

from __future__ import annotations

from typing import Any

REVIEW: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["sentiment", "stars"],
    "additionalProperties": False,
}
