"""Reply schemas: the JSON a model must answer, checked when the DAG is parsed and enforced on every reply.

A pipeline declares its reply as a JSON Schema (:class:`ReplySchema`). This module

- checks the schema against the subset of JSON Schema draft 2020-12 that Bedrock structured outputs accept
  (:func:`check_supported`), so an unsupported feature fails the DAG import, not the job an hour later;
- derives the schema sent to the service (:func:`service_schema`): constraints the decoder does not take
  (``minimum``, ``maxLength``, ``pattern`` …) move into descriptions, as the Anthropic SDKs do;
- adds one keyword of its own, validator-only like ``maxLength``: ``"maxSentences": N`` on a string (at most N
  sentences, counted by :func:`count_sentences`), never sent to the service;
- validates replies against the whole schema, those constraints included (:class:`CompiledSchema`,
  :func:`validate`, :func:`parse_reply`); a reply that does not conform gets the path and reason of its first
  violation, never its content;
- turns valid replies into typed columns (:func:`arrow_schema`, :func:`to_arrow`); their Glue/Athena types
  come from :func:`bedrock_batch.catalog.hive_type`, the one Arrow → Hive mapping;
- writes the instructions that models without structured outputs get in their prompt
  (:func:`prompt_instructions`).

No Airflow here.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bedrock_batch.errors import SchemaError

if TYPE_CHECKING:
    import pyarrow as pa

# The subset, from the two documents that describe it:
#   https://docs.aws.amazon.com/bedrock/latest/userguide/structured-output.html ("Supported JSON Schema
#   features"): basic types; enum of strings, numbers, booleans or null; const, anyOf, allOf ("with
#   limitations"); local $ref/$defs/definitions; the string formats below; minItems 0 or 1. Not supported:
#   recursive schemas, external $ref, minimum/maximum/multipleOf, minLength/maxLength, additionalProperties
#   other than false. An unsupported feature is a 400 at once.
#   https://platform.claude.com/docs/en/build-with-claude/structured-outputs ("JSON Schema limitations"):
#   the same list, plus "complex types within enums" and "array constraints beyond minItems of 0 or 1" not
#   supported, a restricted regex dialect for "pattern", and per-request limits of 24 optional properties and
#   16 union-typed properties ("Schema is too complex").
# Where the documents are silent or differ we take the strict side, so a schema that passes here is one the
# service takes: allOf (limitations unspecified), pattern and maxItems (not in Bedrock's list) are not sent,
# and the Anthropic limits apply to every model.

#: Bedrock's structured-output ``name`` and tool names.
NAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: String formats the service supports, and the validator checks.
STRING_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)
#: Properties outside ``required``, over the whole schema with every ``$ref`` expanded.
MAX_OPTIONAL_PROPERTIES = 24
#: Schemas with ``anyOf`` or a list of types (``["string", "null"]`` counts), ``$ref`` expanded.
MAX_UNION_TYPES = 16
#: Keywords the decoder does not enforce: they stay in the schema the validator checks and move into the
#: description of the schema sent to the service. ``minItems`` above 1 is sent as 1 and checked in full.
#: ``maxSentences`` is this library's own (not JSON Schema): a string of at most that many sentences.
VALIDATION_ONLY = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "maxItems",
        "maxSentences",
    }
)

_JSON_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
_ANNOTATIONS = frozenset({"description", "title", "default"})
_ANY_TYPE = frozenset({"type", "enum", "const", "anyOf", "$ref"}) | _ANNOTATIONS
_NUMERIC = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
_FOR_TYPE = {
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "minItems", "maxItems"}),
    "string": frozenset({"minLength", "maxLength", "maxSentences", "pattern", "format"}),
    "number": _NUMERIC,
    "integer": _NUMERIC,
}
_ROOT_ONLY = frozenset({"$defs", "definitions", "$schema"})
_DRAFT_2020_12 = (
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2020-12/schema#",
)
_HINTS = {
    "oneOf": 'use "anyOf"',
    "allOf": "merge the subschemas into one (the service takes allOf only with limitations it does not list)",
    "not": "list what is allowed instead (enum, anyOf)",
    "if": "use anyOf of the alternatives",
    "prefixItems": 'use "items" (one schema for every element) or an object with named properties',
    "uniqueItems": "check uniqueness downstream",
    "patternProperties": "name the properties under properties",
    "minProperties": "list the properties that must be present under required",
    "maxProperties": "declare the properties explicitly",
    "$id": "keep the whole schema in one document",
    "$anchor": 'refer to definitions as "#/$defs/<name>"',
}
_ENUM_ONLY = frozenset({"type", "enum", "const"}) | _ANNOTATIONS
_LOCAL_REF = re.compile(r"#/(\$defs|definitions)/([^/]+)")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Names Athena and Glue take for columns and struct fields (Glue lowercases them, hence the case check).
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _mapping(schema: ReplySchema | CompiledSchema | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(schema, ReplySchema | CompiledSchema):
        return schema.schema
    return schema


def _definitions(root: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``#/$defs/<name>`` and ``#/definitions/<name>`` → their schema."""
    defs: dict[str, Mapping[str, Any]] = {}
    for keyword in ("$defs", "definitions"):
        section = root.get(keyword)
        if isinstance(section, Mapping):
            defs.update({f"#/{keyword}/{_escape(name)}": sub for name, sub in section.items()})
    return defs


def _types(node: Mapping[str, Any]) -> list[str] | None:
    t = node.get("type")
    if t is None:
        return None
    return [t] if isinstance(t, str) else list(t)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float)


def _of_type(value: Any, json_type: str) -> bool:
    if json_type == "null":
        return value is None
    if json_type == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if json_type == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if json_type == "number":
        return isinstance(value, int | float)
    if json_type == "string":
        return isinstance(value, str)
    if json_type == "array":
        return isinstance(value, list)
    return isinstance(value, Mapping)


def _json_type(value: Any) -> str:
    """The JSON type of a scalar (integers are numbers)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else "string"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


# ------------------------------------------------------------------------------------------------------------
# The reply schema of a pipeline


@dataclass(frozen=True)
class ReplySchema:
    """A pipeline's reply schema: a JSON Schema within the structured-outputs subset, with its name.

    Constructing one checks everything that can be checked before a job runs: the subset
    (:func:`check_supported`) and the columns the replies become (:func:`arrow_schema`).

    :param schema: the JSON Schema of one reply; the root is an object (a copy is kept).
    :param name: the structured-output ``name`` (Converse) or tool name: 1-64 of ``[a-zA-Z0-9_-]``.
    :param description: the structured-output ``description``, if any.
    :raises SchemaError: when the schema or the name is not usable.
    """

    schema: Mapping[str, Any] = field(hash=False)
    name: str
    description: str | None = None
    compiled: CompiledSchema = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise SchemaError(
                f"reply schema name {self.name!r} is not valid for Bedrock structured outputs: use 1-64 "
                "letters, digits, underscores or hyphens"
            )
        if self.description is not None and not isinstance(self.description, str):
            raise SchemaError(f"reply schema description must be a string, got {type(self.description)}")
        try:
            copy = orjson.loads(orjson.dumps(self.schema))
        except TypeError as err:
            raise SchemaError(f"the schema is not JSON ({err})") from err
        compiled = CompiledSchema(copy)
        compiled.arrow_schema  # noqa: B018  (column names are checked now, not at the first batch)
        object.__setattr__(self, "schema", copy)
        object.__setattr__(self, "compiled", compiled)

    @classmethod
    def from_mapping(
        cls, schema: Mapping[str, Any], *, name: str, description: str | None = None
    ) -> ReplySchema:
        """A reply schema from a parsed JSON Schema.

        :param schema: the JSON Schema.
        :param name: the structured-output name.
        :param description: the structured-output description.
        :raises SchemaError: naming the JSON pointer of the problem.
        """
        return cls(schema=schema, name=name, description=description)

    @classmethod
    def from_file(
        cls, path: str | Path, *, name: str | None = None, description: str | None = None
    ) -> ReplySchema:
        """A reply schema from a JSON file, e.g. ``include/pipelines/<pipeline>/reply_schema.json``.

        :param path: the file.
        :param name: the structured-output name; by default the pipeline folder's name for a file called
            ``reply_schema.json``, else the file name without ``.json``.
        :param description: the structured-output description.
        :raises SchemaError: naming the file and the JSON pointer of the problem.
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise SchemaError(f"cannot read the reply schema ({err.strerror})", source=str(path)) from err
        try:
            schema = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise SchemaError(
                f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}", source=str(path)
            ) from err
        if name is None:
            name = path.parent.name if path.name == "reply_schema.json" else path.stem
        try:
            return cls(schema=schema, name=name, description=description)
        except SchemaError as err:
            raise SchemaError(err.rule, err.pointer, source=str(path)) from None

    def service_schema(self) -> dict[str, Any]:
        """The schema to send to Bedrock (see :func:`service_schema`)."""
        return service_schema(self)


# ------------------------------------------------------------------------------------------------------------
# The subset check


def check_supported(schema: ReplySchema | CompiledSchema | Mapping[str, Any]) -> None:
    """Check that a reply schema stays within what Bedrock structured outputs and the validator support.

    The root is an object schema. Every object sets ``"additionalProperties": false`` and lists only declared
    properties under ``required``; every array sets ``items``; ``enum`` and ``const`` hold strings, numbers,
    booleans or null; ``$ref`` points to ``#/$defs/<name>`` or ``#/definitions/<name>`` and nothing refers
    back to itself; ``format`` is one of :data:`STRING_FORMATS`; keywords apply to the declared ``type``. The
    keywords of :data:`VALIDATION_ONLY` are allowed: the validator enforces them and :func:`service_schema`
    keeps them from the service. At most :data:`MAX_OPTIONAL_PROPERTIES` optional properties and
    :data:`MAX_UNION_TYPES` union types.

    :param schema: the JSON Schema (or a :class:`ReplySchema`).
    :raises SchemaError: naming the JSON pointer of the first problem and the rule it breaks.
    """
    _SubsetCheck(_mapping(schema)).run()


class _SubsetCheck:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.defs: dict[str, Mapping[str, Any]] = {}
        # "" (the root) or a definition's $ref → the $refs it holds, with the pointer of each.
        self.refs: dict[str, list[tuple[str, str]]] = {}

    def run(self) -> None:
        root = self.root
        if not isinstance(root, Mapping):
            raise SchemaError("a reply schema must be a JSON object", "")
        if root.get("type") != "object":
            raise SchemaError(
                'the root must be an object schema, "type": "object" (a reply is one object)', ""
            )
        combined = [k for k in ("anyOf", "enum", "const", "$ref") if k in root]
        if combined:
            # Refused at the top level of a tool's input schema (claude-code#10606); the documents are silent.
            raise SchemaError(
                f'the root is a plain object schema, without "{combined[0]}"', f"/{combined[0]}"
            )
        if "$schema" in root and root["$schema"] not in _DRAFT_2020_12:
            raise SchemaError(f'"$schema" must be {_DRAFT_2020_12[0]} (the service takes draft 2020-12)', "")
        for keyword in ("$defs", "definitions"):
            section = root.get(keyword, {})
            if not isinstance(section, Mapping):
                raise SchemaError(f'"{keyword}" must map names to schemas', f"/{keyword}")
        self.defs = _definitions(root)
        self.node(root, "", owner="", at_root=True)
        for ref, sub in self.defs.items():
            self.node(sub, ref[1:], owner=ref)
        self.no_cycles()
        optional, unions = self.count(root)
        if optional > MAX_OPTIONAL_PROPERTIES:
            raise SchemaError(
                f"{optional} optional properties (not in required), above the service limit of "
                f"{MAX_OPTIONAL_PROPERTIES} (each $ref counted where it is used); make properties required, "
                'nullable with "type": [..., "null"] if they may have no value',
                "",
            )
        if unions > MAX_UNION_TYPES:
            raise SchemaError(
                f"{unions} schemas with anyOf or a list of types, above the service limit of "
                f"{MAX_UNION_TYPES} (each $ref counted where it is used); use fewer nullable properties or "
                "alternatives",
                "",
            )

    def node(self, node: Any, ptr: str, *, owner: str, at_root: bool = False) -> None:
        if not isinstance(node, Mapping):
            raise SchemaError("a schema must be a JSON object (true/false schemas are not supported)", ptr)
        for keyword in ("description", "title"):
            if keyword in node and not isinstance(node[keyword], str):
                raise SchemaError(f'"{keyword}" must be a string', f"{ptr}/{keyword}")
        if "$ref" in node:
            self.ref(node, ptr, owner)
            return
        types = self.types(node, ptr)
        allowed = _ANY_TYPE.union(*(_FOR_TYPE.get(t, ()) for t in types or ()))
        if at_root:
            allowed |= _ROOT_ONLY
        for keyword in node:
            if keyword not in allowed:
                raise SchemaError(self.misplaced(keyword, types), f"{ptr}/{_escape(keyword)}")
        if types is None and not {"enum", "const", "anyOf"} & node.keys():
            raise SchemaError(
                'a schema must constrain its value: set "type", "enum", "const", "anyOf" or "$ref"', ptr
            )
        if "enum" in node:
            self.enum(node["enum"], types, f"{ptr}/enum")
        if "const" in node:
            self.enum([node["const"]], types, f"{ptr}/const")
        if "anyOf" in node:
            branches = node["anyOf"]
            if not isinstance(branches, list) or not branches:
                raise SchemaError('"anyOf" must be a non-empty list of schemas', f"{ptr}/anyOf")
            for i, branch in enumerate(branches):
                self.node(branch, f"{ptr}/anyOf/{i}", owner=owner)
        for t in types or ():
            if t == "object":
                self.object(node, ptr, owner)
            elif t == "array":
                self.array(node, ptr, owner)
            elif t == "string":
                self.string(node, ptr)
            elif t in ("number", "integer"):
                self.numeric(node, ptr)

    def ref(self, node: Mapping[str, Any], ptr: str, owner: str) -> None:
        ref = node["$ref"]
        where = f"{ptr}/$ref"
        if not isinstance(ref, str):
            raise SchemaError('"$ref" must be a string', where)
        if not ref.startswith("#"):
            raise SchemaError(
                f'external $ref "{ref}" is not supported: put the schema under "$defs" and refer to it as '
                '"#/$defs/<name>"',
                where,
            )
        if not _LOCAL_REF.fullmatch(ref):
            raise SchemaError(f'$ref "{ref}" is not supported: refer to "#/$defs/<name>" only', where)
        if ref not in self.defs:
            raise SchemaError(f'$ref "{ref}" points to no definition', where)
        extra = [k for k in node if k != "$ref" and k not in _ANNOTATIONS]
        if extra:
            raise SchemaError(
                f'a $ref stands alone (description, title and default aside): move "{extra[0]}" into the '
                "definition it refers to",
                f"{ptr}/{_escape(extra[0])}",
            )
        self.refs.setdefault(owner, []).append((ref, where))

    @staticmethod
    def types(node: Mapping[str, Any], ptr: str) -> list[str] | None:
        if "type" not in node:
            return None
        raw = node["type"]
        types = [raw] if isinstance(raw, str) else raw
        if (
            not isinstance(types, list)
            or not types
            or any(t not in _JSON_TYPES for t in types)
            or len(set(types)) != len(types)
        ):
            raise SchemaError(
                f'"type" must be one of {", ".join(_JSON_TYPES)}, or a list of distinct ones', f"{ptr}/type"
            )
        return types

    @staticmethod
    def misplaced(keyword: str, types: list[str] | None) -> str:
        owners = [t for t, keywords in _FOR_TYPE.items() if keyword in keywords]
        if owners:
            kind = " and ".join(f"{t}s" for t in owners if t != "integer") or "integers"
            declared = "no type" if types is None else f"type {', '.join(types)}"
            return f'"{keyword}" applies to {kind}, but this schema has {declared}'
        if keyword in _ROOT_ONLY:
            return f'"{keyword}" is allowed at the root only'
        hint = _HINTS.get(keyword)
        return f'keyword "{keyword}" is not supported by Bedrock structured outputs' + (
            f"; {hint}" if hint else ""
        )

    def enum(self, values: Any, types: list[str] | None, ptr: str) -> None:
        keyword = ptr.rsplit("/", 1)[1]
        if not isinstance(values, list) or not values:
            raise SchemaError('"enum" must be a non-empty list', ptr)
        seen: set[tuple[str, Any]] = set()
        folded: dict[str, str] = {}
        for value in values:
            if not _is_scalar(value):
                raise SchemaError(
                    f'"{keyword}" values must be strings, numbers, booleans or null (complex types within '
                    "enums are not supported)",
                    ptr,
                )
            if types is not None and not any(_of_type(value, t) for t in types):
                raise SchemaError(f"{keyword} value {_json(value)} is not of type {', '.join(types)}", ptr)
            # JSON equality: 1 and 1.0 are the same value, true and 1 are not.
            key = (_json_type(value), value)
            if key in seen:
                raise SchemaError(f"enum value {_json(value)} is listed twice", ptr)
            seen.add(key)
            if isinstance(value, str):
                other = folded.setdefault(value.casefold(), value)
                if other != value:
                    raise SchemaError(
                        f"enum values {_json(other)} and {_json(value)} differ only in capitalization, which "
                        "structured outputs do not guarantee; keep one",
                        ptr,
                    )

    def object(self, node: Mapping[str, Any], ptr: str, owner: str) -> None:
        if node.get("additionalProperties", None) is not False:
            raise SchemaError('objects must set "additionalProperties": false', ptr)
        properties = node.get("properties", {})
        if not isinstance(properties, Mapping):
            raise SchemaError('"properties" must map names to schemas', f"{ptr}/properties")
        for name, sub in properties.items():
            self.node(sub, f"{ptr}/properties/{_escape(name)}", owner=owner)
        required = node.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaError('"required" must be a list of property names', f"{ptr}/required")
        if len(set(required)) != len(required):
            raise SchemaError('"required" lists a property twice', f"{ptr}/required")
        for name in required:
            if name not in properties:
                raise SchemaError(f'required property "{name}" is not in "properties"', f"{ptr}/required")

    def array(self, node: Mapping[str, Any], ptr: str, owner: str) -> None:
        if "items" not in node:
            raise SchemaError('arrays must set "items" to the schema of their elements', ptr)
        self.node(node["items"], f"{ptr}/items", owner=owner)
        self.bounds(node, ptr, "minItems", "maxItems")

    def string(self, node: Mapping[str, Any], ptr: str) -> None:
        self.bounds(node, ptr, "minLength", "maxLength")
        sentences = node.get("maxSentences", 1)
        if not isinstance(sentences, int) or isinstance(sentences, bool) or sentences < 1:
            raise SchemaError('"maxSentences" must be a positive integer', f"{ptr}/maxSentences")
        if "pattern" in node:
            pattern = node["pattern"]
            if not isinstance(pattern, str):
                raise SchemaError('"pattern" must be a string', f"{ptr}/pattern")
            try:
                re.compile(pattern)
            except re.error as err:
                raise SchemaError(
                    f'"pattern" is not a valid regular expression: {err}', f"{ptr}/pattern"
                ) from err
        if "format" in node and node["format"] not in STRING_FORMATS:
            formats = ", ".join(sorted(STRING_FORMATS))
            raise SchemaError(
                f"format {_json(node['format'])} is not supported; use one of {formats}", f"{ptr}/format"
            )

    @staticmethod
    def bounds(node: Mapping[str, Any], ptr: str, low: str, high: str) -> None:
        for keyword in (low, high):
            value = node.get(keyword, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SchemaError(f'"{keyword}" must be a non-negative integer', f"{ptr}/{keyword}")
        if low in node and high in node and node[low] > node[high]:
            raise SchemaError(f'"{low}" {node[low]} is above "{high}" {node[high]}: no value fits', ptr)

    @staticmethod
    def numeric(node: Mapping[str, Any], ptr: str) -> None:
        for keyword in _NUMERIC & node.keys():
            value = node[keyword]
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise SchemaError(f'"{keyword}" must be a number', f"{ptr}/{keyword}")
        if "multipleOf" in node and node["multipleOf"] <= 0:
            raise SchemaError('"multipleOf" must be above 0', f"{ptr}/multipleOf")
        low = [node[k] for k in ("minimum", "exclusiveMinimum") if k in node]
        high = [node[k] for k in ("maximum", "exclusiveMaximum") if k in node]
        if low and high and max(low) > min(high):
            raise SchemaError(
                f"the lower bound {max(low)} is above the upper bound {min(high)}: no value fits", ptr
            )

    def no_cycles(self) -> None:
        done: set[str] = set()

        def visit(ref: str, path: list[str]) -> None:
            for target, where in self.refs.get(ref, ()):
                if target in path:
                    raise SchemaError(
                        f'recursive schemas are not supported: $ref "{target}" leads back to itself', where
                    )
                if target not in done:
                    visit(target, [*path, target])
            done.add(ref)

        for ref in ["", *self.defs]:
            if ref not in done:
                visit(ref, [ref])

    def count(self, node: Mapping[str, Any]) -> tuple[int, int]:
        """Optional properties and union types under ``node``, every ``$ref`` expanded where it is used."""
        if "$ref" in node:
            return self.count(self.defs[node["$ref"]])
        types = node.get("type")
        unions = int("anyOf" in node or (isinstance(types, list) and len(types) > 1))
        properties = node.get("properties", {})
        optional = len(set(properties) - set(node.get("required", ())))
        children = [*properties.values(), *node.get("anyOf", ())]
        if "items" in node:
            children.append(node["items"])
        for child in children:
            o, u = self.count(child)
            optional += o
            unions += u
        return optional, unions


# ------------------------------------------------------------------------------------------------------------
# The schema sent to the service


def service_schema(schema: ReplySchema | CompiledSchema | Mapping[str, Any]) -> dict[str, Any]:
    """The schema to send to Bedrock: the reply schema without what the decoder does not take.

    The keywords of :data:`VALIDATION_ONLY` are removed and said in words in the ``description`` (the model
    still reads them; the validator still enforces them), ``minItems`` above 1 becomes 1, and ``$schema`` is
    dropped. Everything else is kept as declared, in order.

    :param schema: the reply schema.
    :raises SchemaError: when the schema is not within :func:`check_supported`.
    """
    mapping = _mapping(schema)
    if not isinstance(schema, ReplySchema | CompiledSchema):
        check_supported(mapping)
    return _for_service(mapping)


def _constraint_note(keyword: str, value: Any) -> str:
    if keyword == "pattern":
        return f"matching the regular expression {value}"
    counted = {"Length": "character", "Items": "item", "Sentences": "sentence"}
    unit = next((noun for suffix, noun in counted.items() if keyword.endswith(suffix)), None)
    if unit is not None:
        amount = _plural(value, unit)
        return f"at least {amount}" if keyword.startswith("min") else f"at most {amount}"
    text = {
        "minimum": "at least {}",
        "maximum": "at most {}",
        "exclusiveMinimum": "above {}",
        "exclusiveMaximum": "below {}",
        "multipleOf": "a multiple of {}",
    }[keyword]
    return text.format(_json(value))


def _for_service(node: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    notes: list[str] = []
    for keyword, value in node.items():
        if keyword == "$schema":
            continue
        if keyword in VALIDATION_ONLY or (keyword == "minItems" and value > 1):
            notes.append(_constraint_note(keyword, value))
            if keyword == "minItems":
                out[keyword] = 1
        elif keyword in ("properties", "$defs", "definitions"):
            out[keyword] = {name: _for_service(sub) for name, sub in value.items()}
        elif keyword == "items":
            out[keyword] = _for_service(value)
        elif keyword == "anyOf":
            out[keyword] = [_for_service(sub) for sub in value]
        else:
            out[keyword] = orjson.loads(orjson.dumps(value))  # a copy: enum, required, default
    if notes:
        said = f"Constraints: {'; '.join(notes)}."
        out["description"] = f"{out['description']} {said}" if out.get("description") else said
    return out


# ------------------------------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True)
class Violation:
    """Where a reply first breaks its schema, and how, without its content.

    :param path: JSONPath-like location, ``$`` (the reply), ``$.aspects[2].confidence``.
    :param reason: a short reason that quotes no string of the reply (``is 1.7, above the maximum 1``).
    """

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class _Failure:
    """A violation on its way up: ``parts`` collects the path from the leaf, in reverse."""

    __slots__ = ("parts", "reason", "recase", "type_miss")

    def __init__(self, reason: str, *, type_miss: bool = False, recase: str | None = None) -> None:
        self.parts: list[str | int] = []
        self.reason = reason
        self.type_miss = type_miss  # the value is not of the schema's type (anyOf reports deeper ones first)
        self.recase = recase  # the enum/const string the value equals but for capitalization

    def violation(self) -> Violation:
        path = ["$"]
        for part in reversed(self.parts):
            if isinstance(part, int):
                path.append(f"[{part}]")
            elif _IDENTIFIER.fullmatch(part):
                path.append(f".{part}")
            else:
                path.append("['" + part.replace("\\", "\\\\").replace("'", "\\'") + "']")
        return Violation("".join(path), self.reason)


_Check = Callable[[Any], _Failure | None]
_MISSING = object()
_A = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}


def _number(value: float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _describe(value: Any) -> str:
    """``is …`` for a value: numbers and booleans by value, everything else by kind only."""
    if isinstance(value, bool):
        return "is true" if value else "is false"
    if isinstance(value, int | float):
        return f"is {_number(value)}"
    if value is None:
        return "is null"
    if isinstance(value, str):
        return "is a string"
    if isinstance(value, Mapping):
        return "is an object"
    if isinstance(value, list):
        return "is an array"
    return "is not a JSON value"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# The Python types orjson makes, and those of each JSON type.
_EXACT = frozenset({dict, list, str, int, float, bool, type(None)})
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int, float),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _kind(value: Any) -> type | None:
    """The JSON type of a value whose Python type is a subclass (an OrderedDict), for the slow path."""
    for kind in (bool, int, float, str, list):
        if isinstance(value, kind):
            return kind
    return dict if isinstance(value, Mapping) else None


class CompiledSchema:
    """A reply schema turned once into a tree of small checking functions, for millions of replies.

    :param schema: the reply schema; checked with :func:`check_supported` first.
    :raises SchemaError: when the schema is not within :func:`check_supported`.
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        check_supported(schema)
        self.schema = schema
        self._check = _Compiler(schema).node(schema)
        self._layout: _Layout | None = None

    def validate(self, instance: Any) -> Violation | None:
        """The first violation of ``instance`` (a parsed reply), or None when it conforms."""
        failure = self._check(instance)
        return None if failure is None else failure.violation()

    @property
    def arrow_schema(self) -> pa.Schema:
        """The typed columns of a reply (see :func:`arrow_schema`)."""
        return self.layout.schema

    @property
    def layout(self) -> _Layout:
        """The Arrow layout, built on first use."""
        if self._layout is None:
            self._layout = _Layout(self.schema)
        return self._layout


def validate(schema: CompiledSchema | ReplySchema | Mapping[str, Any], instance: Any) -> Violation | None:
    """The first violation of ``instance`` against ``schema``, or None when it conforms.

    The validator knows exactly the :func:`check_supported` subset and enforces all of it, the keywords the
    decoder does not take included, so a value out of range is caught. Properties are checked in declaration
    order, depth first; properties the schema does not declare are reported after them. ``integer`` takes
    ``1.0`` (as JSON Schema does) but nothing outside the 64-bit range of its column.

    :param schema: a :class:`CompiledSchema` (fast), a :class:`ReplySchema`, or a mapping (compiled on every
        call: for tests and one-off checks).
    :param instance: the parsed reply.
    """
    return _compiled(schema).validate(instance)


def _compiled(schema: CompiledSchema | ReplySchema | Mapping[str, Any]) -> CompiledSchema:
    if isinstance(schema, CompiledSchema):
        return schema
    if isinstance(schema, ReplySchema):
        return schema.compiled
    return CompiledSchema(schema)


def _accept(value: Any) -> _Failure | None:
    return None


def _type_failure(value: Any, expected: str) -> _Failure:
    return _Failure(f"{_describe(value)}, expected {expected}", type_miss=True)


def _not_multiple(value: float, factor: float) -> bool:
    # As jsonschema decides it, so that the two agree on floats.
    if isinstance(factor, float):
        quotient = value / factor
        try:
            return int(quotient) != quotient
        except OverflowError:
            return (Fraction(value) / Fraction(factor)).denominator != 1
    return bool(value % factor)


class _Compiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.defs = _definitions(root)
        self.refs: dict[str, _Check] = {}

    def node(self, node: Mapping[str, Any]) -> _Check:
        ref = node.get("$ref")
        if ref is not None:
            if ref not in self.refs:  # no recursion (checked), so each definition compiles once
                self.refs[ref] = self.node(self.defs[ref])
            return self.refs[ref]
        checks: list[_Check] = []
        types = _types(node)
        # An enum's values are of the declared type (checked), so with nothing else to check the enum says it.
        if types is not None and not (("enum" in node or "const" in node) and node.keys() <= _ENUM_ONLY):
            checks.append(self.typed(node, types))
        if "enum" in node:
            checks.append(_enum(node["enum"], const=False))
        if "const" in node:
            checks.append(_enum([node["const"]], const=True))
        if "anyOf" in node:
            checks.append(_any_of([(self.accepts(b), self.node(b)) for b in node["anyOf"]]))
        return _all(checks)

    def typed(self, node: Mapping[str, Any], types: list[str]) -> _Check:
        # Python type of the value → what else to check (_accept: nothing). bool is its own type, not an int.
        table: dict[type, _Check] = {}
        for t in types:
            if t == "string":
                table[str] = _string(node) or _accept
            elif t == "integer" and "number" not in types:
                table[int] = table[float] = _numeric(node, integer=True) or _accept
            elif t == "number":
                table[int] = table[float] = _numeric(node, integer=False) or _accept
            elif t == "boolean":
                table[bool] = _accept
            elif t == "null":
                table[type(None)] = _accept
            elif t == "object":
                table[dict] = self.object(node)
            elif t == "array":
                table[list] = self.array(node)
        expected = " or ".join(_A[t] for t in types)

        def other_type(value: Any) -> _Failure | None:
            kind = None if type(value) in _EXACT else _kind(value)
            sub = None if kind is None else table.get(kind)
            if sub is None:
                return _type_failure(value, expected)
            return sub(value)

        if len(table) == 1:  # the usual case, without the table lookup
            ((only, only_sub),) = table.items()
            if only_sub is _accept:
                return lambda value: None if type(value) is only else other_type(value)
            return lambda value: only_sub(value) if type(value) is only else other_type(value)

        def check(value: Any) -> _Failure | None:
            sub = table.get(type(value))
            if sub is None:
                return other_type(value)
            return None if sub is _accept else sub(value)

        return check

    def accepts(self, node: Mapping[str, Any]) -> frozenset[type] | None:
        """The Python types of the values ``node`` may accept (of those orjson makes), None if any."""
        if "$ref" in node:
            return self.accepts(self.defs[node["$ref"]])
        found: set[type] = set()
        if "type" in node:
            found.update(t for json_type in _types(node) or () for t in _PYTHON_TYPES[json_type])
        elif "enum" in node or "const" in node:
            values = node["enum"] if "enum" in node else [node["const"]]
            found.update(t for v in values for t in _PYTHON_TYPES[_json_type(v)])
        elif "anyOf" in node:
            for branch in node["anyOf"]:
                branch_types = self.accepts(branch)
                if branch_types is None:
                    return None
                found |= branch_types
        else:
            return None
        return frozenset(found)

    def object(self, node: Mapping[str, Any]) -> _Check:
        required = set(node.get("required", ()))
        properties = node.get("properties", {})
        entries = tuple((name, self.node(sub), name in required) for name, sub in properties.items())
        declared = frozenset(properties)

        def check(value: Mapping[str, Any]) -> _Failure | None:
            present = 0
            for name, sub, is_required in entries:
                item = value.get(name, _MISSING)
                if item is _MISSING:
                    if is_required:
                        missing = _Failure("is required but missing")
                        missing.parts.append(name)
                        return missing
                    continue
                present += 1
                failure = sub(item)
                if failure is not None:
                    failure.parts.append(name)
                    return failure
            if present != len(value):
                for key in value:
                    if key not in declared:
                        # A key is model output too: it is named only when it looks like an identifier.
                        shown = f': "{key}"' if isinstance(key, str) and _IDENTIFIER.fullmatch(key) else ""
                        return _Failure(f"has a property not in the schema{shown}")
            return None

        return check

    def array(self, node: Mapping[str, Any]) -> _Check:
        item_check = self.node(node["items"])
        low, high = node.get("minItems", 0), node.get("maxItems")

        def check(value: list[Any]) -> _Failure | None:
            n = len(value)
            if n < low:
                return _Failure(f"has {_plural(n, 'item')}, below the minimum {low}")
            if high is not None and n > high:
                return _Failure(f"has {_plural(n, 'item')}, above the maximum {high}")
            for i, item in enumerate(value):
                failure = item_check(item)
                if failure is not None:
                    failure.parts.append(i)
                    return failure
            return None

        return check


def _all(checks: list[_Check]) -> _Check:
    if not checks:
        return _accept
    if len(checks) == 1:
        return checks[0]

    def check(value: Any) -> _Failure | None:
        for each in checks:
            failure = each(value)
            if failure is not None:
                return failure
        return None

    return check


def _string(node: Mapping[str, Any]) -> _Check | None:
    low, high = node.get("minLength"), node.get("maxLength")
    pattern = node.get("pattern")
    fmt = node.get("format")
    sentences = node.get("maxSentences")
    if low is None and high is None and pattern is None and fmt is None and sentences is None:
        return None
    search = re.compile(pattern).search if pattern is not None else None
    conforms = _FORMATS[fmt] if fmt is not None else None

    def check(value: str) -> _Failure | None:
        if low is not None and len(value) < low:
            return _Failure(f"has {_plural(len(value), 'character')}, below the minimum length {low}")
        if high is not None and len(value) > high:
            return _Failure(f"has {_plural(len(value), 'character')}, above the maximum length {high}")
        if search is not None and search(value) is None:
            return _Failure(f"does not match the pattern {_json(pattern)}")
        if conforms is not None and not conforms(value):
            return _Failure(f"is not a valid {fmt}")
        if sentences is not None:
            count = count_sentences(value)
            if count > sentences:
                return _Failure(f"has {_plural(count, 'sentence')}, above the maximum {sentences}")
        return None

    return check


# A sentence ends at . ! or ? followed by white space or the end, so "$93.53" or "v1.2" end none.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def count_sentences(text: str) -> int:
    """The sentences of ``text``, as ``maxSentences`` counts them: runs of text ended by ``.``, ``!`` or ``?``
    before white space or the end of the text (or by the end itself); ``$93.53`` or ``v1.2`` end none.

    :param text: the text.
    """
    return sum(1 for part in _SENTENCE_END.split(text) if part.strip())


def _numeric(node: Mapping[str, Any], *, integer: bool) -> _Check | None:
    low, high = node.get("minimum"), node.get("maximum")
    above, below = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    factor = node.get("multipleOf")
    if not integer and low is None and high is None and above is None and below is None and factor is None:
        return None

    def check(value: float) -> _Failure | None:
        if integer:
            if isinstance(value, float) and not value.is_integer():
                return _type_failure(value, "an integer")
            if not _INT64_MIN <= value <= _INT64_MAX:
                return _Failure("is outside the 64-bit integer range of its column")
        if low is not None and value < low:
            return _Failure(f"is {_number(value)}, below the minimum {_number(low)}")
        if high is not None and value > high:
            return _Failure(f"is {_number(value)}, above the maximum {_number(high)}")
        if above is not None and value <= above:
            return _Failure(f"is {_number(value)}, not above the exclusive minimum {_number(above)}")
        if below is not None and value >= below:
            return _Failure(f"is {_number(value)}, not below the exclusive maximum {_number(below)}")
        if factor is not None and _not_multiple(value, factor):
            return _Failure(f"is {_number(value)}, not a multiple of {_number(factor)}")
        return None

    return check


def _enum(values: list[Any], *, const: bool) -> _Check:
    strings = frozenset(v for v in values if isinstance(v, str))
    numbers = frozenset(v for v in values if isinstance(v, int | float) and not isinstance(v, bool))
    booleans = frozenset(v for v in values if isinstance(v, bool))
    null = None in values
    folded = {v.casefold(): v for v in strings}
    if const:
        wanted = f"the constant {_json(values[0])}"
    else:
        wanted = "the allowed value" if len(values) == 1 else f"one of the {len(values)} allowed values"

    def check(value: Any) -> _Failure | None:
        kind = type(value)
        if kind is str:
            if value in strings:
                return None
            recase = folded.get(value.casefold())
            if recase is not None:
                return _Failure(f"is not {wanted} (it differs in capitalization only)", recase=recase)
            return _Failure(f"is not {wanted}")
        if kind is bool:
            if value in booleans:
                return None
        elif kind is int or kind is float:
            if value in numbers:
                return None
        elif value is None:
            if null:
                return None
        elif isinstance(value, str) and value in strings:  # a str subclass, on the slow path
            return None
        return _Failure(f"{_describe(value)}, not {wanted}")

    return check


def _any_of(branches: list[tuple[frozenset[type] | None, _Check]]) -> _Check:
    count = len(branches)

    def check(value: Any) -> _Failure | None:
        kind = type(value)
        exact = kind in _EXACT
        deep: list[_Failure] = []
        for accepts, branch in branches:
            if exact and accepts is not None and kind not in accepts:
                continue  # an alternative for other types: it could only say "is not my type"
            failure = branch(value)
            if failure is None:
                return None
            if not (failure.type_miss and not failure.parts):
                deep.append(failure)
        # The one alternative of the value's type says more than "matches none": the string that is too long,
        # not the string that is not null.
        if len(deep) == 1:
            return deep[0]
        return _Failure(f"{_describe(value)}, matching none of the {count} alternatives", type_miss=not deep)

    return check


# String formats as RFC 3339 (date, time, date-time, duration) and the RFCs behind JSON Schema's list define
# them; email, hostname and uri are checked for shape (what a column reader relies on), not deliverability.
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))", re.ASCII)
_DURATION = re.compile(
    r"P(?:\d+W|(?=\d|T\d)(?:\d+Y)?(?:\d+M)?(?:\d+D)?(?:T(?=\d)(?:\d+H)?(?:\d+M)?(?:\d+S)?)?)", re.ASCII
)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATOM}(?:\.{_ATOM})*", re.ASCII)
_URI = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*", re.ASCII
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII)


def _is_date(value: str) -> bool:
    match = _DATE.fullmatch(value)
    if match is None:
        return False
    try:
        date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    return True


def _is_time(value: str) -> bool:
    match = _TIME.fullmatch(value)
    if match is None:
        return False
    hour, minute, second = int(match[1]), int(match[2]), int(match[3])
    offset_ok = match[4] is None or (int(match[4]) <= 23 and int(match[5]) <= 59)
    return hour <= 23 and minute <= 59 and second <= 60 and offset_ok  # 60: a leap second


def _is_date_time(value: str) -> bool:
    day, separator, time = value.partition("T") if "T" in value else value.partition("t")
    return bool(separator) and _is_date(day) and _is_time(time)


def _is_hostname(value: str) -> bool:
    return len(value) <= 253 and all(_LABEL.fullmatch(label) for label in value.split("."))


def _is_email(value: str) -> bool:
    local, at, domain = value.rpartition("@")
    return bool(at) and len(local) <= 64 and bool(_LOCAL_PART.fullmatch(local)) and _is_hostname(domain)


def _is_ip(kind: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]) -> Callable[[str], bool]:
    def conforms(value: str) -> bool:
        if not value.isascii() or "%" in value:  # no non-ASCII digits, no IPv6 scope ids
            return False
        try:
            kind(value)
        except ValueError:
            return False
        return True

    return conforms


_FORMATS: dict[str, Callable[[str], bool]] = {
    "date": _is_date,
    "time": _is_time,
    "date-time": _is_date_time,
    "duration": lambda v: _DURATION.fullmatch(v) is not None,
    "email": _is_email,
    "hostname": _is_hostname,
    "uri": lambda v: _URI.fullmatch(v) is not None,
    "ipv4": _is_ip(ipaddress.IPv4Address),
    "ipv6": _is_ip(ipaddress.IPv6Address),
    "uuid": lambda v: _UUID.fullmatch(v) is not None,
}


# ------------------------------------------------------------------------------------------------------------
# Reply parsing


@dataclass(frozen=True)
class ParsedReply:
    """One reply, parsed and validated.

    :param value: the reply's JSON value when it conforms, else None.
    :param violation: why it does not conform (the row's status becomes ``invalid_output``), else None.
    """

    value: Any
    violation: Violation | None

    @property
    def ok(self) -> bool:
        """Whether the reply conforms."""
        return self.violation is None


_FENCE = re.compile(r"```[ \t]*(?:json)?[ \t]*\r?\n?(.*?)```", re.DOTALL | re.IGNORECASE)
_MAX_RECASES = 100


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# The last resort only (orjson cannot stop after the first value); NaN and Infinity are not JSON.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _json_candidates(text: str, prefilled: bool) -> Iterator[str]:
    """Where the reply's JSON may be, most likely first."""
    if prefilled:
        yield "{" + text
    yield text
    for match in _FENCE.finditer(text):
        yield match[1]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        yield text[start : end + 1]


def _loads(text: str, prefilled: bool) -> tuple[Any, str | None]:
    error: orjson.JSONDecodeError | None = None
    for candidate in _json_candidates(text, prefilled):
        try:
            return orjson.loads(candidate), None
        except orjson.JSONDecodeError as err:
            error = err
    # Prose after the object that has a "}" of its own: decode the first object, ignore the rest.
    start = text.find("{")
    if start >= 0:
        try:
            return _DECODER.raw_decode(text, start)[0], None
        except ValueError:
            pass
    assert error is not None
    # orjson's message says what it expected and where, never what it found.
    return None, f"reply is not JSON: {error.msg} at line {error.lineno} column {error.colno}"


def _set(value: Any, parts: list[str | int], new: str) -> None:
    container = value
    for part in reversed(parts[1:]):
        container = container[part]
    container[parts[0]] = new


def parse_reply(
    text: str, compiled: CompiledSchema, prefilled: bool = False, *, fold_case: bool = True
) -> ParsedReply:
    """Parse a model's reply text and validate it.

    The JSON is taken as the whole text, else from a Markdown code fence (```json … ```), else as the one
    object in surrounding prose.

    :param text: the reply text.
    :param compiled: the reply schema, compiled.
    :param prefilled: the text continues an assistant prefill of ``{`` (models without structured outputs),
        so the ``{`` is put back first.
    :param fold_case: a string equal to an ``enum``/``const`` value but for capitalization takes the schema's
        spelling. Structured outputs do not guarantee the capitalization of enum values (Anthropic's
        documentation), and the call-summary parser before this lowercased them too.
    :return: the value (None unless it conforms) and the first violation; a reply that is not JSON gets one
        at ``$``: ``reply is not JSON: <parser message>``.
    """
    value, error = _loads(text, prefilled)
    if error is not None:
        return ParsedReply(None, Violation("$", error))
    failure = compiled._check(value)
    recases = 0
    while failure is not None and fold_case and failure.recase and failure.parts and recases < _MAX_RECASES:
        _set(value, failure.parts, failure.recase)
        failure = compiled._check(value)
        recases += 1
    if failure is None:
        return ParsedReply(value, None)
    return ParsedReply(None, failure.violation())


# ------------------------------------------------------------------------------------------------------------
# Arrow columns


def arrow_schema(schema: ReplySchema | CompiledSchema | Mapping[str, Any]) -> pa.Schema:
    """The columns of a reply: one per top-level property, in declaration order.

    - ``string`` (any ``format``) and ``enum`` of strings → ``string``; an enum is not a dictionary type:
      dictionary encoding is a choice Parquet makes by itself, not something readers need;
    - ``integer`` → ``int64``, ``number`` → ``float64``, ``boolean`` → ``bool``;
    - ``array`` → ``list<item>``; ``object`` with properties → ``struct<…>`` in declaration order;
    - ``anyOf [X, null]`` and ``"type": [X, "null"]`` → X (every column and field is nullable);
    - anything without one Arrow type (``anyOf`` or a list of types mixing kinds, an ``enum`` of mixed kinds,
      an object without properties) → ``string`` holding the value as compact JSON.

    The Glue/Athena types of these columns are :func:`bedrock_batch.catalog.hive_type` of them.

    :param schema: the reply schema.
    :raises SchemaError: when the schema is not within :func:`check_supported`, or a property that becomes a
        column or struct field has a name Athena cannot take (letters, digits and underscores, not starting
        with a digit; unique regardless of case).
    """
    if isinstance(schema, ReplySchema):
        return schema.compiled.arrow_schema
    if isinstance(schema, CompiledSchema):
        return schema.arrow_schema
    check_supported(schema)
    return _Layout(schema).schema


def to_arrow(values: Sequence[Any], schema: ReplySchema | CompiledSchema | Mapping[str, Any]) -> pa.Table:
    """A table of :func:`arrow_schema` from parsed replies, one row per value.

    Works on one batch at a time. The rows go to pyarrow in one call; Python touches only the values that
    become JSON text (and, on the rare batch that needs it, the numbers of float64 columns).

    :param values: conforming reply values (:attr:`ParsedReply.value`), None for rows without one.
    :param schema: the reply schema (a :class:`ReplySchema` or :class:`CompiledSchema` keeps its layout).
    """
    import pyarrow as pa

    layout = _compiled(schema).layout
    convert = layout.convert
    if convert is None:
        rows = [_NO_VALUE if v is None else v for v in values]
    else:
        rows = [_NO_VALUE if v is None else convert(v) for v in values]
    try:
        return pa.Table.from_pylist(rows, schema=layout.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # A whole number beyond the 64-bit range in a float64 column (valid JSON, but pyarrow converts Python
        # ints as int64 first): turn every number of those columns into a float, for this batch only.
        rescue = layout.rescue
        return pa.Table.from_pylist(
            [_NO_VALUE if v is None else rescue(v) for v in values], schema=layout.schema
        )


_Convert = Callable[[Any], Any]
_NO_VALUE: Mapping[str, Any] = {}  # a row without a reply value: every column null
# What a value becomes, by structure: two alternatives of equal signature take the same conversion, which
# their Arrow types alone do not tell (a string and JSON text are both strings).
_Signature = str | tuple[Any, ...]
_JSON_TEXT = "json"


def _to_json(value: Any) -> Any:
    return None if value is None else orjson.dumps(value).decode()


def _to_float(value: Any) -> Any:
    return None if value is None else float(value)


def _list_of(convert: _Convert) -> _Convert:
    return lambda value: None if value is None else [convert(item) for item in value]


def _struct_of(converts: list[tuple[str, _Convert]]) -> _Convert:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        out = dict(value)
        for name, sub in converts:
            if name in out:
                out[name] = sub(out[name])
        return out

    return convert


def _keep(value: Any) -> Any:
    return value


class _Layout:
    """The Arrow types of a checked reply schema, and the conversions its values need on the way.

    :ivar convert: the conversion of a row before pyarrow (None: rows go as they are).
    :ivar rescue: the conversion that also turns numbers of float64 columns into floats.
    """

    def __init__(self, root: Mapping[str, Any]) -> None:
        import pyarrow as pa

        self.defs = _definitions(root)
        if not root.get("properties"):
            raise SchemaError("the reply declares no properties, so it has no columns", "")
        struct, self.convert, _ = self.node(root, "", rescue=False)
        self.schema = pa.schema(list(struct))
        self.rescue = self.node(root, "", rescue=True)[1] or _keep

    def node(
        self, node: Mapping[str, Any], ptr: str, *, rescue: bool
    ) -> tuple[pa.DataType, _Convert | None, _Signature]:
        import pyarrow as pa

        if "$ref" in node:
            return self.node(self.defs[node["$ref"]], node["$ref"][1:], rescue=rescue)
        if "anyOf" in node:
            return self.alternatives(node, ptr, rescue=rescue)
        types = _types(node) or self.enum_types(node)
        kinds = [t for t in types if t != "null"]
        if not kinds:
            return pa.string(), None, "null"  # null only: nothing to store, in a type every reader takes
        if len(kinds) > 1:
            return pa.string(), _to_json, _JSON_TEXT
        kind = kinds[0]
        if kind == "array":
            item, convert, signature = self.node(node["items"], f"{ptr}/items", rescue=rescue)
            return pa.list_(item), (None if convert is None else _list_of(convert)), ("list", signature)
        if kind == "object":
            return self.object(node, ptr, rescue=rescue)
        if kind == "number":
            return pa.float64(), (_to_float if rescue else None), kind
        return {"string": pa.string(), "integer": pa.int64(), "boolean": pa.bool_()}[kind], None, kind

    def object(
        self, node: Mapping[str, Any], ptr: str, *, rescue: bool
    ) -> tuple[pa.DataType, _Convert | None, _Signature]:
        import pyarrow as pa

        properties = node.get("properties", {})
        if not properties:
            return pa.string(), _to_json, _JSON_TEXT
        fields: list[pa.Field] = []
        converts: list[tuple[str, _Convert]] = []
        signatures: list[tuple[str, _Signature]] = []
        seen: dict[str, str] = {}
        for name, sub in properties.items():
            where = f"{ptr}/properties/{_escape(name)}"
            if not _COLUMN_NAME.fullmatch(name):
                raise SchemaError(
                    f'property name "{name}" cannot be a column or struct field: use letters, digits and '
                    "underscores, not starting with a digit (Athena and Glue names)",
                    where,
                )
            other = seen.setdefault(name.lower(), name)
            if other != name:
                raise SchemaError(
                    f'properties "{other}" and "{name}" differ only in case, and Glue lowercases names', where
                )
            data_type, convert, signature = self.node(sub, where, rescue=rescue)
            fields.append(pa.field(name, data_type))
            signatures.append((name, signature))
            if convert is not None:
                converts.append((name, convert))
        convert_struct = _struct_of(converts) if converts else None
        return pa.struct(fields), convert_struct, ("struct", tuple(signatures))

    def alternatives(
        self, node: Mapping[str, Any], ptr: str, *, rescue: bool
    ) -> tuple[pa.DataType, _Convert | None, _Signature]:
        import pyarrow as pa

        layouts = [
            self.node(branch, f"{ptr}/anyOf/{i}", rescue=rescue)
            for i, branch in enumerate(node["anyOf"])
            if not self.null_only(branch)
        ]
        if not layouts:
            return pa.string(), None, "null"
        if all(signature == layouts[0][2] for _, _, signature in layouts):
            return layouts[0]
        return pa.string(), _to_json, _JSON_TEXT

    def null_only(self, node: Mapping[str, Any]) -> bool:
        if "$ref" in node:
            return self.null_only(self.defs[node["$ref"]])
        types = _types(node)
        if types is not None:
            return types == ["null"]
        if "anyOf" in node:
            return all(self.null_only(branch) for branch in node["anyOf"])
        return self.enum_types(node) == ["null"]

    @staticmethod
    def enum_types(node: Mapping[str, Any]) -> list[str]:
        """The JSON types of an ``enum`` or ``const`` without ``type`` (integers and floats: number)."""
        values = node["enum"] if "enum" in node else [node["const"]]
        kinds: list[str] = []
        for value in values:
            if value is None:
                kind = "null"
            elif isinstance(value, bool):
                kind = "boolean"
            elif isinstance(value, int):
                kind = "integer"
            elif isinstance(value, float):
                kind = "number"
            else:
                kind = "string"
            if kind not in kinds:
                kinds.append(kind)
        if "integer" in kinds and "number" in kinds:
            kinds.remove("integer")
        return kinds


# ------------------------------------------------------------------------------------------------------------
# Prompt instructions


def prompt_instructions(schema: ReplySchema | CompiledSchema | Mapping[str, Any]) -> str:
    """The text appended to a prompt for a model without structured outputs.

    It carries the whole schema, the constraints the validator enforces included, as compact JSON. Append it
    after the template is rendered: the schema's braces are not template placeholders.

    :param schema: the reply schema.
    """
    mapping = {k: v for k, v in _mapping(schema).items() if k != "$schema"}
    return (
        "Answer with one JSON object that conforms to this JSON Schema:\n"
        f"{_json(mapping)}\n"
        "Reply with the JSON object only: no text before or after it, no Markdown code fence."
    )
