"""Structured outputs as the emulated service checks them: which models have the feature, which JSON Schemas
it accepts, and where a prompt that asks for JSON embeds its reply schema.

The accepted subset is written from the Bedrock user guide ("Get validated JSON results from models") and
Anthropic's JSON Schema limitations for structured outputs, not from the library: where the sources are silent
the emulator refuses, so a schema it accepts is one the service should accept too.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# --- which models have the feature ----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCapabilities:
    """What a model accepts beyond plain text: structured outputs (output_config / outputConfig /
    response_format / strict tools) and tool use."""

    structured_output: bool
    tool_use: bool


_ALL = ModelCapabilities(structured_output=True, tool_use=True)
_TOOLS = ModelCapabilities(structured_output=False, tool_use=True)
_TEXT = ModelCapabilities(structured_output=False, tool_use=False)

# Base model id (cross-region prefix removed) → capabilities; the first pattern matching its start wins.
# Structured outputs: Claude 4.5 and later, and the open-weight models the user guide lists (2026-02); tool
# use as the Converse API's supported-features table has it. Ids no row names: no structured outputs, tools.
MODEL_CAPABILITIES: tuple[tuple[str, ModelCapabilities], ...] = (
    (r"anthropic\.claude-(?:opus|sonnet|haiku)-(?:4-[5-9]|[5-9])(?!\d)", _ALL),  # 4.5, 4.6, …, 5
    (r"anthropic\.", _TOOLS),  # Claude 3, 3.5, 3.7, 4, 4.1
    (r"amazon\.nova-", _TOOLS),
    (r"amazon\.titan-", _TEXT),
    (r"meta\.llama3-[1-9]-|meta\.llama4-", _TOOLS),
    (r"meta\.", _TEXT),  # Llama 2, Llama 3 (3.0)
    (r"mistral\.(?:mistral-large-3|ministral-3|magistral|devstral|voxtral)", _ALL),
    (r"mistral\.(?:mistral-7b|mixtral-8x7b)", _TEXT),
    (r"mistral\.", _TOOLS),  # Mistral Large 2402 / 2407, Small 2402, Pixtral
    (
        r"(?:deepseek\.v3|qwen\.qwen3|google\.gemma-3|nvidia\.nemotron|openai\.gpt-oss|minimax\.|moonshot)",
        _ALL,
    ),
)
_DEFAULT_CAPABILITIES = _TOOLS
_CAPABILITY_PATTERNS = tuple((re.compile(pattern), caps) for pattern, caps in MODEL_CAPABILITIES)


def capabilities(base_model_id: str | None) -> ModelCapabilities:
    """Capabilities of a base model id; ``None`` (a custom model or application profile: the id does not name
    the model) is given every capability, since only the service knows what lies behind it."""
    if base_model_id is None:
        return _ALL
    for pattern, caps in _CAPABILITY_PATTERNS:
        if pattern.match(base_model_id):
            return caps
    return _DEFAULT_CAPABILITIES


# --- the JSON Schema subset -------------------------------------------------------------------------------

BASIC_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
STRING_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)
# Keywords with a meaning the grammar enforces, and annotations it ignores; anything else is refused.
_STRUCTURAL = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "allOf",
        "$ref",
        "$defs",
        "definitions",
        "format",
        "pattern",
        "minItems",
    }
)
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "$schema"})
# Regular-expression features the docs exclude from `pattern`: backreferences, lookaround, word boundaries.
_COMPLEX_REGEX = re.compile(r"\\[1-9]|\\k<|\(\?<?[=!]|\\[bB]")


def check_schema(schema: Any, where: str) -> str | None:
    """Why the service would refuse ``schema`` (``where`` names the request field), or ``None`` if it fits."""
    if not isinstance(schema, Mapping):
        return f"{where}: the schema must be a JSON object"
    if schema.get("type") != "object":
        return f'{where}: the root schema must have "type": "object"'
    return next(_problems(schema, schema, "#", where, ()), None)


def _problems(
    root: Mapping[str, Any], schema: Any, at: str, where: str, refs: tuple[str, ...]
) -> Iterator[str]:
    if not isinstance(schema, Mapping):
        yield f"{where}: a schema must be a JSON object (at {at})"
        return
    types = _types(schema)
    kind = types[0] if len(types) == 1 else "schema"
    for key in schema:
        if key not in _STRUCTURAL and key not in _ANNOTATIONS:
            yield f"{where}: For '{kind}' type, property '{key}' is not supported (at {at})"
    unknown = [t for t in types if t not in BASIC_TYPES]
    if unknown:
        yield f"{where}: type '{unknown[0]}' is not supported (at {at})"
    if "object" in types or "properties" in schema:
        extra = schema.get("additionalProperties")
        if "additionalProperties" not in schema:
            yield (
                f"{where}: For 'object' type, 'additionalProperties' must be explicitly set to false "
                f"(at {at})"
            )
        elif extra is not False:
            yield (
                f"{where}: For 'object' type, 'additionalProperties: {json.dumps(extra)}' is not supported. "
                f"Please set 'additionalProperties' to false (at {at})"
            )
        properties = schema.get("properties", {})
        if not isinstance(properties, Mapping):
            yield f"{where}: 'properties' must be an object (at {at})"
        else:
            for name, sub in properties.items():
                yield from _problems(root, sub, f"{at}/properties/{name}", where, refs)
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            yield f"{where}: 'required' must be an array of property names (at {at})"
    if "items" in schema:
        yield from _problems(root, schema["items"], f"{at}/items", where, refs)
    if "minItems" in schema and schema["minItems"] not in (0, 1):
        yield f"{where}: For 'array' type, 'minItems' values other than 0 or 1 are not supported (at {at})"
    if "enum" in schema:
        enum = schema["enum"]
        if not isinstance(enum, list) or not enum or not all(_is_scalar(v) for v in enum):
            yield f"{where}: 'enum' values must be strings, numbers, booleans or null (at {at})"
    if "const" in schema and not _is_scalar(schema["const"]):
        yield f"{where}: 'const' must be a string, number, boolean or null (at {at})"
    if "format" in schema and schema["format"] not in STRING_FORMATS:
        yield f"{where}: For 'string' type, format '{schema['format']}' is not supported (at {at})"
    pattern = schema.get("pattern")
    if pattern is not None and (
        not isinstance(pattern, str) or _COMPLEX_REGEX.search(pattern) or not _compiles(pattern)
    ):
        yield (
            f"{where}: For 'string' type, pattern {json.dumps(pattern)} is not supported: backreferences, "
            f"lookaround and word boundaries are not (at {at})"
        )
    for key in ("anyOf", "allOf"):
        if key in schema:
            branches = schema[key]
            if not isinstance(branches, list) or not branches:
                yield f"{where}: '{key}' must be a non-empty array of schemas (at {at})"
                continue
            for i, sub in enumerate(branches):
                yield from _problems(root, sub, f"{at}/{key}/{i}", where, refs)
    for key in ("$defs", "definitions"):
        defs = schema.get(key)
        if defs is not None and not isinstance(defs, Mapping):
            yield f"{where}: '{key}' must be an object (at {at})"
        elif defs is not None and at == "#":  # checked once, from the root; deeper ones via their $refs
            for name, sub in defs.items():
                yield from _problems(root, sub, f"#/{key}/{name}", where, refs)
    if "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            yield f"{where}: only internal references ('#/…') are supported, got {json.dumps(ref)} (at {at})"
        elif ref in refs:
            yield f"{where}: Recursive schemas are not supported ({ref} refers back to itself) (at {at})"
        else:
            target = resolve_pointer(root, ref)
            if target is None:
                yield f"{where}: reference {ref} does not resolve within the schema (at {at})"
            else:
                yield from _problems(root, target, ref, where, (*refs, ref))


def _types(schema: Mapping[str, Any]) -> list[str]:
    declared = schema.get("type")
    if isinstance(declared, list):
        return [str(t) for t in declared]
    return [str(declared)] if declared is not None else []


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def resolve_pointer(root: Any, ref: str) -> Any:
    """The subschema a local ``$ref`` (``#/$defs/Item``) points at, or ``None``."""
    node = root
    for raw in ref.lstrip("#").split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


# --- a reply schema embedded in a prompt ------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddedSchema:
    """A JSON Schema found in prompt text, and where it sits in that text."""

    schema: Mapping[str, Any]
    start: int
    end: int


def _looks_like_schema(value: Any) -> bool:
    if not isinstance(value, Mapping):
        return False
    if isinstance(value.get("properties"), Mapping) or "$schema" in value:
        return True
    return value.get("type") in BASIC_TYPES and any(k in value for k in ("items", "enum", "anyOf", "oneOf"))


def find_schema(text: str, *, cache: bool = True) -> EmbeddedSchema | None:
    """The first JSON Schema object written in ``text`` (e.g. after "conforms to this JSON Schema:").

    ``cache`` suits prompt templates, which repeat for every record; per-record text is searched afresh.
    """
    return _find_in_template(text) if cache and len(text) <= 20_000 else _find(text)


@functools.lru_cache(maxsize=256)  # system prompts repeat for every record of a job
def _find_in_template(text: str) -> EmbeddedSchema | None:
    return _find(text)


_DECODER = json.JSONDecoder()


def _find(text: str) -> EmbeddedSchema | None:
    at = text.find("{")
    while at >= 0:
        try:
            value, end = _DECODER.raw_decode(text, at)
        except ValueError:
            at = text.find("{", at + 1)
            continue
        if _looks_like_schema(value):
            return EmbeddedSchema(value, at, end)
        at = text.find("{", end)
    return None
