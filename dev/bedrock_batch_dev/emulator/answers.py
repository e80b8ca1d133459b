"""What the emulated model answers to a reply schema: a value valid against it, drawn from the request's text.

Strings are phrases and sentences of the input, enums and numbers are picked by a hash of the input (so every
record gets its own answer, and the same record always the same one), and fields a call transcript answers
(summary, sentiment, topic, resolution, action items) take what the call summarizer found. The invalid-reply
fault turns such an answer into one that breaks the schema in a known way.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bedrock_batch_dev.emulator.schemas import resolve_pointer

# Property name stem → the call-analysis field that answers it (the first stem found in a name wins).
FIELD_OF_KEY: tuple[tuple[str, str], ...] = (
    ("summar", "summary"),
    ("sentiment", "sentiment"),
    ("topic", "topic"),
    ("category", "topic"),
    ("reason", "topic"),
    ("resolution", "resolution"),
    ("resolved", "resolution"),
    ("outcome", "resolution"),
    ("action", "action_items"),
    ("next_step", "action_items"),
    ("follow", "action_items"),
)

# Nesting deeper than this answers only what the schema requires, so recursive-looking schemas end; past
# HARD_DEPTH (a schema that requires itself, which no finite value satisfies) the answer is null.
MAX_DEPTH = 6
HARD_DEPTH = 24
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'&-]*")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_URL = re.compile(r"https?://[^\s\"'<>]+[^\s\"'<>.,;:!?)]")
_SHORT_NAMES = ("title", "name", "topic", "subject", "category", "label", "keyword", "tag", "kind", "type")
_LONG_NAMES = ("summar", "description", "abstract", "overview", "synopsis")


@dataclass(frozen=True)
class Grounding:
    """What an answer is drawn from.

    :param text: the input the model reads (the record's data, without the instructions where they can be told
        apart); every choice is a hash of it.
    :param sentences: the input's sentences, the material of string values.
    :param facts: call-analysis fields (``summary``, ``sentiment``, ``topic``, ``resolution``,
        ``action_items``) when the input is a call transcript.
    """

    text: str
    sentences: tuple[str, ...]
    facts: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, text: str, facts: Mapping[str, Any] | None = None) -> Grounding:
        sentences = [s.strip(" \t-*•") for s in _SENTENCE.split(text[:6000])]
        kept = tuple(s for s in sentences if len(s) > 3 and "json" not in s.lower())
        return cls(text, kept, facts or {})


def answer(schema: Mapping[str, Any], grounding: Grounding) -> Any:
    """A value valid against ``schema`` (a JSON Schema), built from ``grounding``; deterministic."""
    return _Builder(schema, grounding).value(schema, "", "", 0)


def fact_field(name: str) -> str | None:
    """The call-analysis field a property name asks for (``primary_topic`` → ``topic``), if any."""
    lowered = name.lower()
    return next((f for stem, f in FIELD_OF_KEY if stem in lowered), None)


class _Builder:
    def __init__(self, root: Mapping[str, Any], grounding: Grounding) -> None:
        self.root = root
        self.grounding = grounding
        self.seed = hashlib.blake2b(grounding.text.encode(), digest_size=16).digest()
        self.next_sentence = 0

    # -- deterministic choices --

    def unit(self, path: str) -> float:
        digest = hashlib.blake2b(path.encode(), key=self.seed, digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def pick(self, path: str, count: int) -> int:
        return min(int(self.unit(path) * count), count - 1)

    # -- dispatch --

    def resolve(self, schema: Any, hops: int = 0) -> Mapping[str, Any]:
        """``schema`` with its ``$ref`` followed and its ``allOf`` merged (a schema written in a prompt is not
        checked, so reference cycles end after a few hops)."""
        while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str) and hops < 32:
            target = resolve_pointer(self.root, schema["$ref"])
            if not isinstance(target, Mapping):
                break
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest}
            hops += 1
        if isinstance(schema, Mapping) and isinstance(schema.get("allOf"), list) and hops < 32:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for branch in schema["allOf"]:
                part = self.resolve(branch, hops + 1)
                for key, value in part.items():
                    if key == "properties":
                        merged["properties"] = {**merged.get("properties", {}), **value}
                    elif key == "required":
                        merged["required"] = [*merged.get("required", []), *value]
                    else:
                        merged.setdefault(key, value)
            schema = merged
        return schema if isinstance(schema, Mapping) else {}

    def value(self, schema: Any, path: str, name: str, depth: int) -> Any:
        if depth > HARD_DEPTH:
            return None
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.enum(schema["enum"], path, name)
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self.value(self.branch(schema, key, name, depth), path, name, depth)
        kind = self.kind(schema, depth)
        if kind == "object":
            return self.object(schema, path, depth)
        if kind == "array":
            return self.array(schema, path, name, depth)
        if kind in ("integer", "number"):
            return self.number(schema, path, kind == "integer")
        if kind == "boolean":
            return self.boolean(path, name)
        if kind == "null":
            return None
        return self.string(schema, path, name)

    def kind(self, schema: Mapping[str, Any], depth: int) -> str:
        declared = schema.get("type")
        if isinstance(declared, list):
            concrete = [t for t in declared if t != "null"]
            if "null" in declared and (not concrete or depth >= MAX_DEPTH):
                return "null"
            return str(concrete[0])
        if isinstance(declared, str):
            return declared
        if "properties" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return "string"

    def branch(self, schema: Mapping[str, Any], key: str, name: str, depth: int) -> Any:
        """The alternative to answer: the one the call facts fit, else the first that is not null."""
        siblings = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        branches = [{**siblings, **self.resolve(b)} for b in schema[key]]
        non_null = [b for b in branches if b.get("type") != "null" and b.get("const", 0) is not None]
        if not non_null or (depth >= MAX_DEPTH and len(non_null) < len(branches)):
            return next(b for b in branches if b not in non_null)
        fact = self.fact(name)
        if fact is not None:
            for candidate in non_null:
                if (
                    isinstance(candidate.get("enum"), list)
                    and _match_label(fact, candidate["enum"]) is not None
                ):
                    return candidate
        return non_null[0]

    def fact(self, name: str) -> Any:
        key = fact_field(name) if name else None
        return self.grounding.facts.get(key) if key else None

    # -- values --

    def enum(self, values: Sequence[Any], path: str, name: str) -> Any:
        fact = self.fact(name)
        if fact is not None:
            matched = _match_label(fact, values)
            if matched is not None:
                return matched
        return values[self.pick(f"{path}#enum", len(values))]

    def boolean(self, path: str, name: str) -> bool:
        key = fact_field(name) if name else None
        if key == "resolution" and "resolution" in self.grounding.facts:
            return bool(self.grounding.facts["resolution"] == "resolved")
        return self.unit(f"{path}#bool") < 0.5

    def object(self, schema: Mapping[str, Any], path: str, depth: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        required = [r for r in schema.get("required", []) if isinstance(r, str)]
        minimum = schema.get("minProperties", 0)
        maximum = schema.get("maxProperties")
        chosen = [name for name in properties if name in required]
        optional = [name for name in properties if name not in required]
        if depth < MAX_DEPTH:
            # Some optional properties, not all: the same ones for the same input.
            chosen += [name for name in optional if self.unit(f"{path}/{name}#opt") < 0.6]
        for name in optional:
            if len(chosen) >= minimum:
                break
            if name not in chosen:
                chosen.append(name)
        if isinstance(maximum, int) and len(chosen) > maximum:
            chosen = [n for n in chosen if n in required] + [n for n in chosen if n not in required]
            chosen = chosen[: max(maximum, len([n for n in chosen if n in required]))]
        result = {
            name: self.value(properties[name], f"{path}/{name}", name, depth + 1)
            for name in properties
            if name in chosen
        }
        extra = schema.get("additionalProperties", True)
        for name in required:  # required but undeclared: allowed only if extra properties are
            if name not in result and extra is not False:
                result[name] = self.value(
                    extra if isinstance(extra, Mapping) else {}, f"{path}/{name}", name, depth + 1
                )
        index = 0
        while len(result) < minimum and extra is not False and index < 50:
            key = f"field_{index + 1}"
            if key not in result:
                result[key] = self.value(
                    extra if isinstance(extra, Mapping) else {}, f"{path}/{key}", key, depth + 1
                )
            index += 1
        return result

    def array(self, schema: Mapping[str, Any], path: str, name: str, depth: int) -> list[Any]:
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        given = schema.get("prefixItems")
        prefix: list[Any] = given if isinstance(given, list) else []
        items = schema.get("items", {})
        item_schema = self.resolve(items) if isinstance(items, Mapping) else {}
        fact = self.fact(name)
        values: list[Any] = []
        if isinstance(fact, list | tuple) and self.kind(item_schema, depth) == "string" and not prefix:
            values = [self.fit_string(str(v), item_schema, f"{path}/{i}") for i, v in enumerate(fact)]
        else:
            wanted = 0 if depth >= MAX_DEPTH else 1 + self.pick(f"{path}#len", 3)
            count = max(low, len(prefix), wanted)
            if isinstance(high, int):
                count = min(count, high)
            singular = name[:-1] if name.endswith("s") else name
            for i in range(count):
                sub = prefix[i] if i < len(prefix) else item_schema
                values.append(self.value(sub, f"{path}/{i}", singular, depth + 1))
        if schema.get("uniqueItems"):
            unique: list[Any] = []
            for v in values:
                if v not in unique:
                    unique.append(v)
            values = unique
        if isinstance(high, int):
            values = values[:high]
        index = len(values)
        while len(values) < low and index < low + 50:  # the facts gave too few: make up the rest
            candidate = self.value(item_schema, f"{path}/{index}", name, depth + 1)
            if not schema.get("uniqueItems") or candidate not in values:
                values.append(candidate)
            index += 1
        return values

    def number(self, schema: Mapping[str, Any], path: str, integer: bool) -> int | float:
        low, high = _bounds(schema, integer)
        step = schema.get("multipleOf")
        if isinstance(step, bool) or not isinstance(step, int | float) or step <= 0:
            step = None
        draw = self.unit(f"{path}#num")
        # Unbounded sides get a small range (1-10, or 0-1 for numbers), wide enough to hold a multiple.
        span = max(9 if integer else 1.0, 10 * step if step else 0)
        if low is None:
            low = high - span if high is not None else (1 if integer else 0.0)
        if high is None:
            high = low + span
        if step:
            return _multiple(low, high, step, draw, integer)
        if integer:
            first, last = math.ceil(low), math.floor(high)
            return first + min(int(draw * (last - first + 1)), last - first) if last >= first else first
        return round(low + draw * (high - low), 2) if high - low >= 0.01 else low

    def string(self, schema: Mapping[str, Any], path: str, name: str) -> str:
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            return _FORMATS[fmt](self, path)
        pattern = schema.get("pattern")
        fact = self.fact(name)
        text = str(fact).replace("_", " ") if isinstance(fact, str) and fact else self.phrase(path, name)
        if isinstance(pattern, str):
            if _search(pattern, text):
                return text
            for sentence in self.grounding.sentences:
                for piece in (sentence, *_WORD.findall(sentence)):
                    if _search(pattern, piece):
                        return piece
            return _from_pattern(pattern, self.unit(f"{path}#re"))
        return self.fit_string(text, schema, path)

    def phrase(self, path: str, name: str) -> str:
        sentences = self.grounding.sentences
        if not sentences:
            return "unknown"
        lowered = name.lower()
        if any(stem in lowered for stem in _LONG_NAMES):
            return " ".join(sentences[:2])
        index = (self.pick(f"{path}#s", len(sentences)) + self.next_sentence) % len(sentences)
        self.next_sentence += 1  # the next string field gets another sentence
        sentence = sentences[index]
        if any(stem in lowered for stem in _SHORT_NAMES):
            words = _WORD.findall(sentence)
            return " ".join(words[: 2 + self.pick(f"{path}#w", 4)]) or sentence
        return sentence

    def fit_string(self, text: str, schema: Mapping[str, Any], path: str) -> str:
        high = schema.get("maxLength")
        low = schema.get("minLength", 0)
        if isinstance(high, int) and len(text) > high:
            cut = text[:high]
            text = cut.rsplit(" ", 1)[0] if " " in cut and len(cut.rsplit(" ", 1)[0]) >= low else cut
        if isinstance(low, int) and len(text) < low:
            filler = " ".join(self.grounding.sentences) or "no further detail"
            while len(text) < low:
                text = f"{text} {filler}".strip()
            if isinstance(high, int):
                text = text[:high]
        return text


def _bounds(schema: Mapping[str, Any], integer: bool) -> tuple[float | None, float | None]:
    low = schema.get("minimum")
    high = schema.get("maximum")
    ex_low = schema.get("exclusiveMinimum")
    ex_high = schema.get("exclusiveMaximum")
    tiny = 1 if integer else 0.01
    if isinstance(ex_low, int | float) and not isinstance(ex_low, bool):
        low = max(low, ex_low + tiny) if isinstance(low, int | float) else ex_low + tiny
    if isinstance(ex_high, int | float) and not isinstance(ex_high, bool):
        high = min(high, ex_high - tiny) if isinstance(high, int | float) else ex_high - tiny
    low = low if isinstance(low, int | float) and not isinstance(low, bool) else None
    high = high if isinstance(high, int | float) and not isinstance(high, bool) else None
    if low is not None and high is not None and high < low:
        high = low
    return low, high


def _multiple(low: float, high: float, step: float, draw: float, integer: bool) -> int | float:
    """A multiple of ``step`` in [low, high] that passes a float check like ``(v / step).is_integer()``."""
    first, last = math.ceil(low / step), math.floor(high / step)
    if last < first:
        return 0 if low <= 0 <= high else low
    start = first + min(int(draw * (last - first + 1)), last - first)
    for offset in range(min(last - first + 1, 200)):
        k = first + (start - first + offset) % (last - first + 1)
        value: int | float = k * step
        if isinstance(step, float):
            value = round(value, 10)
            if value / step != int(value / step):
                continue
        if integer:
            if value != int(value):
                continue
            value = int(value)
        if low <= value <= high:
            return value
    return 0 if low <= 0 <= high else start * step


def _match_label(fact: Any, values: Sequence[Any]) -> Any:
    """The enum value that spells the fact (``"technical_support"`` ~ ``"Technical Support"``), if any."""
    wanted = str(fact).lower().replace("_", " ")
    for value in values:
        if isinstance(value, str) and value.lower().replace("_", " ") == wanted:
            return value
    return None


def _search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def _from_pattern(pattern: str, draw: float) -> str:
    """A string matching a simple regular expression (literals, classes, groups, alternation, repeats)."""
    try:
        parsed = re._parser.parse(pattern)  # type: ignore[attr-defined]
    except Exception:  # a pattern the emulator cannot read is answered with a plain string
        return "unknown"
    rng = _Draws(draw)
    return "".join(_emit(parsed, rng))


class _Draws:
    """A deterministic stream of small choices for the pattern generator."""

    def __init__(self, draw: float) -> None:
        self.state = int(draw * 2**32) or 1

    def choose(self, count: int) -> int:
        self.state = (self.state * 1103515245 + 12345) % 2**31
        return self.state % max(count, 1)


def _emit(parsed: Any, rng: _Draws) -> list[str]:
    constants = re._constants  # type: ignore[attr-defined]
    out: list[str] = []
    for op, arg in parsed:
        if op == constants.LITERAL:
            out.append(chr(arg))
        elif op == constants.ANY:
            out.append("x")
        elif op == constants.IN:
            out.append(_class_member(arg, rng))
        elif op in (constants.MAX_REPEAT, constants.MIN_REPEAT, constants.POSSESSIVE_REPEAT):
            low, high, sub = arg
            count = (
                low
                if high == constants.MAXREPEAT or high <= low
                else low + rng.choose(min(high, low + 3) - low + 1)
            )
            for _ in range(count):
                out.extend(_emit(sub, rng))
        elif op == constants.SUBPATTERN:
            out.extend(_emit(arg[-1], rng))
        elif op == constants.ATOMIC_GROUP:
            out.extend(_emit(arg, rng))
        elif op == constants.BRANCH:
            options = arg[1]
            out.extend(_emit(options[rng.choose(len(options))], rng))
        elif op == constants.CATEGORY:
            out.append(_category_member(arg))
        # AT (anchors) and anything else emit nothing
    return out


def _class_member(items: Any, rng: _Draws) -> str:
    constants = re._constants  # type: ignore[attr-defined]
    if items and items[0][0] == constants.NEGATE:
        for candidate in "aA0x_":
            if re.fullmatch(_class_source(items), candidate):
                return candidate
        return "~"
    op, arg = items[rng.choose(len(items))]
    if op == constants.LITERAL:
        return chr(arg)
    if op == constants.RANGE:
        return chr(arg[0] + rng.choose(arg[1] - arg[0] + 1))
    if op == constants.CATEGORY:
        return _category_member(arg)
    return "a"


def _class_source(items: Any) -> str:
    """Rebuild a negated class as a regex, to test candidates against it."""
    constants = re._constants  # type: ignore[attr-defined]
    parts = []
    for op, arg in items[1:]:
        if op == constants.LITERAL:
            parts.append(re.escape(chr(arg)))
        elif op == constants.RANGE:
            parts.append(f"{re.escape(chr(arg[0]))}-{re.escape(chr(arg[1]))}")
        elif op == constants.CATEGORY:
            parts.append(
                {"CATEGORY_DIGIT": r"\d", "CATEGORY_SPACE": r"\s", "CATEGORY_WORD": r"\w"}.get(str(arg), "")
            )
    return f"[^{''.join(parts)}]"


def _category_member(category: Any) -> str:
    return {
        "CATEGORY_DIGIT": "7",
        "CATEGORY_NOT_DIGIT": "a",
        "CATEGORY_SPACE": " ",
        "CATEGORY_NOT_SPACE": "a",
        "CATEGORY_WORD": "a",
        "CATEGORY_NOT_WORD": "-",
    }.get(str(category), "a")


# --- string formats ---------------------------------------------------------------------------------------


def _date(builder: _Builder, path: str) -> str:
    for year, month, day in _ISO_DATE.findall(builder.grounding.text):
        if 1 <= int(month) <= 12 and 1 <= int(day) <= 28:
            return f"{year}-{month}-{day}"
    draw = builder.pick(f"{path}#date", 365)
    return f"2025-{draw // 28 % 12 + 1:02d}-{draw % 28 + 1:02d}"


def _time(builder: _Builder, path: str) -> str:
    minutes = builder.pick(f"{path}#time", 24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00Z"


def _email(builder: _Builder, path: str) -> str:
    found = _EMAIL.search(builder.grounding.text)
    return found.group(0) if found else f"contact{builder.pick(path, 100)}@example.com"


def _uri(builder: _Builder, path: str) -> str:
    found = _URL.search(builder.grounding.text)
    return found.group(0) if found else f"https://example.com/items/{builder.pick(path, 1000)}"


_FORMATS: Mapping[str, Any] = {
    "date": _date,
    "date-time": lambda b, p: f"{_date(b, p)}T{_time(b, p)}",
    "time": _time,
    "duration": lambda b, p: f"PT{1 + b.pick(p, 59)}M",
    "email": _email,
    "hostname": lambda b, p: "example.com",
    "uri": _uri,
    "ipv4": lambda b, p: f"192.0.2.{1 + b.pick(p, 254)}",
    "ipv6": lambda b, p: f"2001:db8::{1 + b.pick(p, 65534):x}",
    "uuid": lambda b, p: str(
        uuid.UUID(bytes=hashlib.blake2b(p.encode(), key=b.seed, digest_size=16).digest(), version=4)
    ),
}


# --- the invalid-reply fault ------------------------------------------------------------------------------

INVALID_KINDS = ("enum", "range", "missing", "not_json")


@dataclass(frozen=True)
class Broken:
    """An answer the fault broke: ``value`` (valid JSON breaking the schema) or ``text`` (not JSON)."""

    kind: str
    value: Any = None
    text: str | None = None


def break_answer(
    value: Any, schema: Mapping[str, Any], draw: float, *, allow_not_json: bool, grounding: Grounding
) -> Broken:
    """Make ``value`` violate ``schema``: a wrong enum value, a number out of range, a missing required field
    or (for JSON asked for in the prompt, where nothing constrains the model) prose instead of JSON. ``draw``
    in [0, 1) picks the kind; a kind the schema gives no room for falls through to the next one."""
    kinds = INVALID_KINDS if allow_not_json else INVALID_KINDS[:-1]
    start = min(int(draw * len(kinds)), len(kinds) - 1)
    holder = [copy.deepcopy(value)]  # the root sits in a list so it can be broken like any member
    resolver = _Builder(schema, grounding)
    for offset in range(len(kinds)):
        kind = kinds[(start + offset) % len(kinds)]
        if kind == "not_json":
            opening = grounding.sentences[0] if grounding.sentences else "The input was empty."
            return Broken(kind, text=f"Sure! Here is what I found: {opening}")
        if _violate(kind, holder, schema, resolver):
            return Broken(kind, value=holder[0])
    # Nothing to break in place: an extra property where none is allowed, else the wrong type at the root.
    broken = holder[0]
    if isinstance(broken, dict) and schema.get("additionalProperties") is False:
        broken["unexpected_field"] = "not in the schema"
        return Broken("extra", value=broken)
    return Broken("type", value={"items": broken} if isinstance(broken, list) else [broken])


def _violate(kind: str, holder: list[Any], schema: Mapping[str, Any], resolver: _Builder) -> bool:
    """Break the first place of ``kind`` in ``holder[0]`` (walked along ``schema``); False if none."""
    places = _places(holder, schema, resolver)
    for container, key, sub in places:
        current = container[key]
        if kind == "enum" and isinstance(sub.get("enum"), list):
            enum = sub["enum"]
            container[key] = next(
                v for v in ("unknown", "other", "n/a", "none_of_these", -1) if v not in enum
            )
            return True
        if kind == "range" and isinstance(current, int | float) and not isinstance(current, bool):
            integer = sub.get("type") == "integer"
            low, high = _bounds(sub, integer)
            if high is not None:
                container[key] = int(high) + 1 if integer else high + 1
                return True
            if low is not None:
                container[key] = int(low) - 1 if integer else low - 1
                return True
        if kind == "missing" and isinstance(current, dict):
            present = [r for r in sub.get("required", []) if r in current]
            if present:
                del current[present[0]]
                return True
    if kind == "range":  # no bounded number: a number or boolean of the wrong type
        for container, key, sub in places:
            if sub.get("type") in ("integer", "number", "boolean"):
                container[key] = "n/a"
                return True
    return False


def _places(holder: list[Any], schema: Any, resolver: _Builder) -> list[tuple[Any, Any, Mapping[str, Any]]]:
    """(container, key, schema) of every value reachable through plain properties and items, root first."""
    found: list[tuple[Any, Any, Mapping[str, Any]]] = []
    queue: list[tuple[Any, Any, Any, int]] = [(holder, 0, schema, 0)]
    while queue:
        container, key, sub, level = queue.pop(0)
        sub = resolver.resolve(sub)
        if "anyOf" in sub or "oneOf" in sub or level > MAX_DEPTH + 2:
            continue  # which branch the value took is not tracked: leave it alone
        found.append((container, key, sub))
        current = container[key]
        if isinstance(current, dict):
            for name, prop in (sub.get("properties") or {}).items():
                if name in current:
                    queue.append((current, name, prop, level + 1))
        elif isinstance(current, list) and isinstance(sub.get("items"), Mapping):
            queue.extend((current, i, sub["items"], level + 1) for i in range(len(current)))
    return found
