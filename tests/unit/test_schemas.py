"""Reply schemas: the structured-outputs subset, the validator (cross-checked against jsonschema), reply
parsing, the Arrow columns of replies and the prompt instructions."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bedrock_batch.catalog import glue_columns, hive_type
from bedrock_batch.errors import ConfigError, SchemaError
from bedrock_batch.schemas import (
    MAX_OPTIONAL_PROPERTIES,
    MAX_UNION_TYPES,
    CompiledSchema,
    ParsedReply,
    ReplySchema,
    Violation,
    arrow_schema,
    check_supported,
    count_sentences,
    parse_reply,
    prompt_instructions,
    service_schema,
    to_arrow,
    validate,
)
from tests.call_center_table import SUMMARY_COLUMNS
from tests.conftest import REPO

CALL_CENTER = REPO / "include" / "pipelines" / "call_center_summarization" / "reply_schema.json"


def obj(properties: Mapping[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """An object schema; every property required unless ``required`` says otherwise."""
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
        **extra,
    }


ASPECT = obj(
    {
        "name": {"type": "string", "maxLength": 40},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "polarity": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "note": {"anyOf": [{"type": "string", "maxLength": 20}, {"type": "null"}]},
    },
    required=["name", "confidence", "polarity"],
)
ASPECTS = obj(
    {
        "aspects": {"type": "array", "items": ASPECT, "minItems": 1, "maxItems": 5},
        "overall": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}},
    },
    required=["aspects", "overall"],
)
VALID_ASPECTS = {
    "aspects": [
        {"name": "price", "confidence": 0.9, "polarity": "negative"},
        {"name": "staff", "confidence": 0.5, "polarity": "positive", "note": None},
        {"name": "wait", "confidence": 1, "polarity": "neutral", "note": "long queue"},
    ],
    "overall": 2,
}


def error_of(schema: Any) -> SchemaError:
    with pytest.raises(SchemaError) as caught:
        check_supported(schema)
    return caught.value


def schema_nodes(node: Any) -> Any:
    """Every schema node of a schema, with $defs."""
    yield node
    for key in ("properties", "$defs", "definitions"):
        for sub in node.get(key, {}).values():
            yield from schema_nodes(sub)
    if "items" in node:
        yield from schema_nodes(node["items"])
    for sub in node.get("anyOf", ()):
        yield from schema_nodes(sub)


class TestReplySchema:
    def test_the_call_center_schema_is_named_after_its_pipeline_folder(self):
        schema = ReplySchema.from_file(CALL_CENTER)
        assert schema.name == "call_center_summarization"
        assert schema.schema["properties"]["sentiment"]["enum"] == ["positive", "neutral", "negative"]

    @pytest.mark.parametrize("name", ["call center", "", "x" * 65, "summary.v1", "résumé"])
    def test_names_bedrock_refuses_are_refused(self, name):
        with pytest.raises(SchemaError, match="1-64 letters, digits, underscores or hyphens"):
            ReplySchema.from_mapping(ASPECTS, name=name)

    @pytest.mark.parametrize("name", ["a", "x" * 64, "call_summary-v2"])
    def test_names_bedrock_takes_are_taken(self, name):
        assert ReplySchema.from_mapping(ASPECTS, name=name, description="Aspects").name == name

    def test_file_errors_name_the_file_and_the_json_pointer(self, tmp_path):
        broken = orjson.loads(orjson.dumps(ASPECTS))
        del broken["properties"]["aspects"]["items"]["additionalProperties"]
        path = tmp_path / "reply_schema.json"
        path.write_bytes(orjson.dumps(broken))
        with pytest.raises(SchemaError) as caught:
            ReplySchema.from_file(path)
        assert str(caught.value) == (
            f'{path}: schema /properties/aspects/items: objects must set "additionalProperties": false'
        )
        assert caught.value.pointer == "/properties/aspects/items"
        assert caught.value.source == str(path)

    def test_a_file_that_is_not_json_names_the_file_and_the_position(self, tmp_path):
        path = tmp_path / "aspects.json"
        path.write_text('{"type": "object",\n  "properties": }')
        with pytest.raises(SchemaError, match=rf"^{path}: not valid JSON: .* at line 2 column 17$"):
            ReplySchema.from_file(path)

    def test_a_missing_file_is_named(self, tmp_path):
        with pytest.raises(SchemaError, match=rf"^{tmp_path / 'nope.json'}: cannot read the reply schema"):
            ReplySchema.from_file(tmp_path / "nope.json")

    def test_name_defaults_to_the_file_name_outside_the_pipeline_layout(self, tmp_path):
        path = tmp_path / "aspects.json"
        path.write_bytes(orjson.dumps(ASPECTS))
        assert ReplySchema.from_file(path).name == "aspects"
        assert ReplySchema.from_file(path, name="other").name == "other"

    def test_the_schema_is_a_copy(self):
        source = orjson.loads(orjson.dumps(ASPECTS))
        schema = ReplySchema.from_mapping(source, name="aspects")
        source["properties"]["overall"]["maximum"] = 100
        assert schema.compiled.validate({**VALID_ASPECTS, "overall": 50}) == Violation(
            "$.overall", "is 50, above the maximum 5"
        )

    def test_is_a_config_error_and_equal_by_value(self):
        assert issubclass(SchemaError, ConfigError)
        a = ReplySchema.from_mapping(ASPECTS, name="aspects")
        b = ReplySchema.from_mapping(ASPECTS, name="aspects")
        assert a == b
        assert hash(a) == hash(b)

    def test_column_names_athena_cannot_take_fail_at_construction(self):
        schema = obj({"Primary Topic": {"type": "string"}})
        check_supported(schema)  # the service would take it; the results table would not
        with pytest.raises(SchemaError) as caught:
            ReplySchema.from_mapping(schema, name="x")
        assert caught.value.pointer == "/properties/Primary Topic"
        assert "cannot be a column or struct field" in caught.value.rule

    def test_names_differing_only_in_case_fail(self):
        schema = obj({"inner": obj({"topic": {"type": "string"}, "Topic": {"type": "string"}})})
        with pytest.raises(
            SchemaError, match=r"schema /properties/inner/properties/Topic: .* differ only in case"
        ):
            ReplySchema.from_mapping(schema, name="x")


class TestCheckSupported:
    @pytest.mark.parametrize(
        ("schema", "pointer", "rule"),
        [
            ([], "", "must be a JSON object"),
            (
                {"type": "array", "items": {"type": "string"}},
                "",
                'root must be an object schema, "type": "object"',
            ),
            ({"type": "object", "properties": {}}, "", 'objects must set "additionalProperties": false'),
            ({**obj({}), "anyOf": [obj({})]}, "/anyOf", "the root is a plain object schema"),
            (
                obj({"a": {"type": "object", "properties": {}, "additionalProperties": True}}),
                "/properties/a",
                '"additionalProperties": false',
            ),
            (
                obj({"a": {"type": "object", "additionalProperties": {"type": "string"}}}),
                "/properties/a",
                '"additionalProperties": false',
            ),
            (
                obj({"a": {"type": "string"}}, required=["a", "b"]),
                "/required",
                'required property "b" is not in "properties"',
            ),
            (
                obj({"a": {"oneOf": [{"type": "string"}, {"type": "null"}]}}),
                "/properties/a/oneOf",
                'use "anyOf"',
            ),
            (obj({"a": {"allOf": [{"type": "string"}]}}), "/properties/a/allOf", "merge the subschemas"),
            (
                obj({"a": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}),
                "/properties/a/uniqueItems",
                '"uniqueItems" is not supported',
            ),
            (obj({"a": {"$ref": "https://example.com/a.json"}}), "/properties/a/$ref", "external $ref"),
            (obj({"a": {"$ref": "#/$defs/missing"}}), "/properties/a/$ref", "points to no definition"),
            (
                obj({"a": {"$ref": "#/properties/b"}, "b": {"type": "string"}}),
                "/properties/a/$ref",
                'refer to "#/$defs/<name>" only',
            ),
            (
                obj({"a": {"$ref": "#/$defs/s", "maxLength": 3}}, **{"$defs": {"s": {"type": "string"}}}),
                "/properties/a/maxLength",
                "a $ref stands alone",
            ),
            (
                obj({"a": {"type": "string", "enum": [{"x": 1}]}}),
                "/properties/a/enum",
                "complex types within enums",
            ),
            (obj({"a": {"const": [1, 2]}}), "/properties/a/const", "complex types within enums"),
            (
                obj({"a": {"type": "string", "enum": ["Yes", "yes"]}}),
                "/properties/a/enum",
                "differ only in capitalization",
            ),
            (obj({"a": {"enum": [1, 1.0]}}), "/properties/a/enum", "listed twice"),
            (
                obj({"a": {"type": "string", "enum": ["x", 3]}}),
                "/properties/a/enum",
                "enum value 3 is not of type string",
            ),
            (
                obj({"a": {"type": "string", "format": "regex"}}),
                "/properties/a/format",
                'format "regex" is not supported',
            ),
            (
                obj({"a": {"type": "integer", "minLength": 1}}),
                "/properties/a/minLength",
                '"minLength" applies to strings, but this schema has type integer',
            ),
            (
                obj({"a": {"type": "string", "minimum": 1}}),
                "/properties/a/minimum",
                '"minimum" applies to numbers',
            ),
            (obj({"a": {"type": "array"}}), "/properties/a", 'arrays must set "items"'),
            (obj({"a": True}), "/properties/a", "true/false schemas are not supported"),
            (obj({"a": {"description": "anything"}}), "/properties/a", "a schema must constrain its value"),
            (obj({"a": {"type": "float"}}), "/properties/a/type", '"type" must be one of'),
            (obj({"a": {"type": ["string", "string"]}}), "/properties/a/type", "a list of distinct ones"),
            (
                obj({"a": {"type": "string", "pattern": "("}}),
                "/properties/a/pattern",
                "not a valid regular expression",
            ),
            (obj({"a": {"type": "number", "minimum": 2, "maximum": 1}}), "/properties/a", "no value fits"),
            (
                obj({"a": {"type": "string", "minLength": 3, "maxLength": 2}}),
                "/properties/a",
                "no value fits",
            ),
            (
                obj({"a": {"type": "array", "items": {"type": "string"}, "minItems": -1}}),
                "/properties/a/minItems",
                "non-negative integer",
            ),
            (obj({"a": {"type": "number", "multipleOf": 0}}), "/properties/a/multipleOf", "above 0"),
            (obj({"a": {"type": "string", "title": 3}}), "/properties/a/title", "must be a string"),
            (
                obj({"a": obj({"b": {"type": "string"}}, **{"$defs": {}})}),
                "/properties/a/$defs",
                "at the root only",
            ),
            (
                {**obj({"a": {"type": "string"}}), "$schema": "http://json-schema.org/draft-07/schema#"},
                "",
                "draft 2020-12",
            ),
        ],
        ids=lambda v: v if isinstance(v, str) else None,
    )
    def test_unsupported_schemas_name_the_pointer_and_the_rule(self, schema, pointer, rule):
        error = error_of(schema)
        assert error.pointer == pointer
        assert rule in error.rule
        assert str(error) == f"schema {pointer or '(root)'}: {error.rule}"

    def test_recursion_is_refused_where_it_closes(self):
        schema = obj(
            {"root": {"$ref": "#/$defs/node"}},
            **{"$defs": {"node": obj({"child": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}})}},
        )
        error = error_of(schema)
        assert error.pointer == "/$defs/node/properties/child/anyOf/0/$ref"
        assert "recursive schemas are not supported" in error.rule

    def test_mutual_recursion_is_refused(self):
        schema = obj(
            {"a": {"$ref": "#/$defs/a"}},
            **{"$defs": {"a": obj({"b": {"$ref": "#/$defs/b"}}), "b": obj({"a": {"$ref": "#/$defs/a"}})}},
        )
        assert "recursive schemas are not supported" in error_of(schema).rule

    def test_optional_properties_up_to_the_limit(self):
        props = {f"p{i}": {"type": "string"} for i in range(MAX_OPTIONAL_PROPERTIES)}
        check_supported(obj(props, required=[]))
        props["one_more"] = {"type": "string"}
        assert "25 optional properties" in error_of(obj(props, required=[])).rule

    def test_union_types_up_to_the_limit_with_refs_counted_where_used(self):
        nullable = {"type": ["string", "null"]}
        check_supported(obj({f"p{i}": nullable for i in range(MAX_UNION_TYPES)}))
        defs = {
            "$defs": {"pair": obj({"a": nullable, "b": {"anyOf": [{"type": "integer"}, {"type": "null"}]}})}
        }
        schema = obj({f"p{i}": {"$ref": "#/$defs/pair"} for i in range(9)}, **defs)  # 9 uses x 2 unions
        assert "18 schemas with anyOf or a list of types" in error_of(schema).rule

    def test_everything_the_subset_has_is_accepted(self):
        schema = obj(
            {
                "when": {"type": "string", "format": "date-time", "description": "When", "title": "When"},
                "kind": {"const": "review"},
                "score": {"type": "integer", "enum": [1, 2, 3], "default": 2},
                "mixed": {"enum": ["a", 1, 2.5, True, None]},
                "maybe": {"type": ["number", "null"], "exclusiveMinimum": 0, "multipleOf": 0.5},
                "either": {"anyOf": [{"$ref": "#/$defs/point"}, {"type": "string", "pattern": "^[A-Z]"}]},
                "legacy": {"$ref": "#/definitions/point", "description": "a point"},
                "items": {"type": "array", "items": {"$ref": "#/$defs/point"}, "minItems": 3, "maxItems": 4},
            },
            required=["when", "kind"],
            **{
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$defs": {"point": obj({"x": {"type": "number"}, "y": {"type": "number"}})},
                "definitions": {"point": obj({"x": {"type": "number"}})},
            },
        )
        check_supported(schema)
        assert (
            ReplySchema.from_mapping(schema, name="everything").compiled.validate(
                {"when": "2026-02-04T10:00:00Z", "kind": "review", "items": [{"x": 1, "y": 2}] * 3}
            )
            is None
        )


class TestServiceSchema:
    SERVICE_KEYWORDS = {
        "type", "enum", "const", "anyOf", "$ref", "$defs", "definitions", "description", "title", "default",
        "properties", "required", "additionalProperties", "items", "minItems", "format",
    }  # fmt: skip

    def test_constraints_the_decoder_ignores_move_into_the_description(self):
        sent = service_schema(ASPECTS)
        aspect = sent["properties"]["aspects"]["items"]
        assert aspect["properties"]["confidence"] == {
            "type": "number",
            "description": "Constraints: at least 0; at most 1.",
        }
        assert aspect["properties"]["name"]["description"] == "Constraints: at most 40 characters."
        assert sent["properties"]["aspects"]["minItems"] == 1
        assert sent["properties"]["aspects"]["description"] == "Constraints: at most 5 items."
        assert sent["properties"]["tags"]["items"]["description"] == (
            "Constraints: matching the regular expression ^[a-z]+$."
        )
        assert ASPECTS["properties"]["aspects"]["maxItems"] == 5  # the reply schema itself keeps them

    def test_min_items_above_one_is_sent_as_one_and_said(self):
        schema = obj(
            {"a": {"type": "array", "items": {"type": "string"}, "minItems": 3, "description": "Tags."}}
        )
        assert service_schema(schema)["properties"]["a"] == {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "description": "Tags. Constraints: at least 3 items.",
        }

    def test_only_service_keywords_are_sent(self):
        sent = ReplySchema.from_file(CALL_CENTER).service_schema()
        assert "$schema" not in sent
        check_supported(sent)
        for name, schema in (("call center", sent), ("aspects", service_schema(ASPECTS))):
            for node in schema_nodes(schema):
                assert set(node) <= self.SERVICE_KEYWORDS, name
                assert node.get("minItems", 0) in (0, 1)


class TestMaxSentences:
    """``maxSentences``: this library's validator-only keyword, as ``maxLength`` is for the service."""

    SCHEMA = obj({"summary": {"type": "string", "maxSentences": 2, "description": "What happened."}})

    @pytest.mark.parametrize(
        ("text", "sentences"),
        [
            ("", 0),
            ("One", 1),
            ("One. Two!", 2),
            ("Paid $93.53 for v1.2 of the app.", 1),
            ("Really?! Yes... fine.", 3),
            ("Trailing text without a stop. More", 2),
        ],
    )
    def test_sentences_end_at_a_stop_before_white_space_or_the_end(self, text, sentences):
        assert count_sentences(text) == sentences

    def test_more_sentences_than_allowed_is_a_violation(self):
        assert validate(self.SCHEMA, {"summary": "One. Two."}) is None
        assert validate(self.SCHEMA, {"summary": "One. Two. Three."}) == Violation(
            "$.summary", "has 3 sentences, above the maximum 2"
        )

    def test_it_is_never_sent_to_the_service_but_said_in_the_description(self):
        assert service_schema(self.SCHEMA)["properties"]["summary"] == {
            "type": "string",
            "description": "What happened. Constraints: at most 2 sentences.",
        }

    def test_the_call_center_summary_keeps_todays_five_sentence_rule(self):
        compiled = ReplySchema.from_file(CALL_CENTER).compiled
        reply = {
            "summary": "A. B. C. D. E. F.",
            "sentiment": "neutral",
            "primary_topic": "billing",
            "resolution": "resolved",
            "action_items": [],
        }
        assert compiled.validate(reply) == Violation("$.summary", "has 6 sentences, above the maximum 5")
        assert compiled.validate({**reply, "summary": "A. B. C. D. E."}) is None

    @pytest.mark.parametrize("value", [0, -1, 1.5, True, "5"])
    def test_it_takes_a_positive_integer_only(self, value):
        error = error_of(obj({"s": {"type": "string", "maxSentences": value}}))
        assert error.pointer == "/properties/s/maxSentences"

    def test_it_applies_to_strings_only(self):
        error = error_of(obj({"n": {"type": "integer", "maxSentences": 2}}))
        assert error.pointer == "/properties/n/maxSentences"


class TestValidate:
    def test_a_valid_reply_has_no_violation(self):
        assert validate(ASPECTS, VALID_ASPECTS) is None

    @pytest.mark.parametrize(
        ("change", "path", "reason"),
        [
            (
                lambda r: r["aspects"][2].update(confidence=1.7),
                "$.aspects[2].confidence",
                "is 1.7, above the maximum 1",
            ),
            (
                lambda r: r["aspects"][0].update(confidence=-0.25),
                "$.aspects[0].confidence",
                "is -0.25, below the minimum 0",
            ),
            (lambda r: r["aspects"][1].pop("polarity"), "$.aspects[1].polarity", "is required but missing"),
            (
                lambda r: r["aspects"][1].update(polarity="furious about it"),
                "$.aspects[1].polarity",
                "is not one of the 3 allowed values",
            ),
            (
                lambda r: r["aspects"][0].update(name="x" * 45),
                "$.aspects[0].name",
                "has 45 characters, above the maximum length 40",
            ),
            (
                lambda r: r["aspects"][0].update(note="a private remark made by the caller"),
                "$.aspects[0].note",
                "has 35 characters, above the maximum length 20",
            ),
            (
                lambda r: r["aspects"][0].update(note=3),
                "$.aspects[0].note",
                "is 3, matching none of the 2 alternatives",
            ),
            (
                lambda r: r["aspects"][0].update(confidence="very high, said Jane"),
                "$.aspects[0].confidence",
                "is a string, expected a number",
            ),
            (
                lambda r: r["aspects"][0].update(confidence=True),
                "$.aspects[0].confidence",
                "is true, expected a number",
            ),
            (lambda r: r.update(overall=2.5), "$.overall", "is 2.5, expected an integer"),
            (lambda r: r.update(overall=None), "$.overall", "is null, expected an integer"),
            (
                lambda r: r.update(overall=2**63),
                "$.overall",
                "is outside the 64-bit integer range of its column",
            ),
            (lambda r: r.update(aspects=[]), "$.aspects", "has 0 items, below the minimum 1"),
            (lambda r: r.update(aspects=r["aspects"] * 2), "$.aspects", "has 6 items, above the maximum 5"),
            (lambda r: r.update(tags=["ok", "Not OK"]), "$.tags[1]", 'does not match the pattern "^[a-z]+$"'),
            (lambda r: r.update(mood="fine"), "$", 'has a property not in the schema: "mood"'),
            (lambda r: r.update({"a remark by Jane": 1}), "$", "has a property not in the schema"),
            (lambda r: r.update(aspects={"name": "price"}), "$.aspects", "is an object, expected an array"),
        ],
    )
    def test_the_first_violation_has_a_path_and_a_reason_without_content(self, change, path, reason):
        reply = orjson.loads(orjson.dumps(VALID_ASPECTS))
        change(reply)
        violation = validate(ASPECTS, reply)
        assert violation == Violation(path, reason)
        for word in ("furious", "Jane", "private", "remark", "price"):
            assert word not in violation.reason

    def test_the_first_violation_in_declaration_order_is_reported(self):
        reply = {"aspects": [{"name": "a", "confidence": 2, "polarity": "bad"}], "overall": 9, "extra": 1}
        assert str(validate(ASPECTS, reply)) == "$.aspects[0].confidence: is 2, above the maximum 1"

    def test_the_reply_must_be_an_object(self):
        assert validate(ASPECTS, ["a"]) == Violation("$", "is an array, expected an object")

    def test_integers_take_whole_floats_as_json_schema_does(self):
        assert validate(ASPECTS, {**VALID_ASPECTS, "overall": 3.0}) is None

    def test_paths_quote_property_names_that_are_not_identifiers(self):
        schema = obj({"my key": obj({"it's": {"type": "integer"}})})
        assert validate(schema, {"my key": {"it's": "x"}}) == Violation(
            "$['my key']['it\\'s']", "is a string, expected an integer"
        )

    def test_enum_and_const_misses_of_numbers_show_the_number(self):
        schema = obj({"n": {"enum": [1, 2, 3]}, "c": {"const": "fixed"}, "b": {"const": False}})
        assert (
            str(validate(schema, {"n": 7, "c": "fixed", "b": False}))
            == "$.n: is 7, not one of the 3 allowed values"
        )
        assert str(validate(schema, {"n": True, "c": "fixed", "b": False})) == (
            "$.n: is true, not one of the 3 allowed values"
        )
        assert (
            str(validate(schema, {"n": 1.0, "c": "other", "b": False})) == '$.c: is not the constant "fixed"'
        )
        assert str(validate(schema, {"n": 1, "c": "fixed", "b": 0})) == "$.b: is 0, not the constant false"

    def test_multiple_of_and_exclusive_bounds(self):
        schema = obj(
            {"x": {"type": "number", "multipleOf": 0.25, "exclusiveMinimum": 0, "exclusiveMaximum": 1}}
        )
        assert validate(schema, {"x": 0.75}) is None
        assert str(validate(schema, {"x": 0.3})) == "$.x: is 0.3, not a multiple of 0.25"
        assert str(validate(schema, {"x": 0})) == "$.x: is 0, not above the exclusive minimum 0"
        assert str(validate(schema, {"x": 1})) == "$.x: is 1, not below the exclusive maximum 1"

    @pytest.mark.parametrize(
        ("fmt", "good", "bad"),
        [
            ("date", ["2026-02-04", "2024-02-29"], ["2026-02-30", "2026-2-4", "04/02/2026", "next Tuesday"]),
            (
                "time",
                ["14:00:00Z", "23:59:60+01:00", "08:30:15.250-05:00"],
                ["14:00", "14:00:00", "25:00:00Z"],
            ),
            (
                "date-time",
                ["2026-02-04T14:00:00Z", "2026-02-04t14:00:00.5+02:00"],
                ["2026-02-04 14:00:00Z", "2026-02-04"],
            ),
            ("duration", ["P3D", "PT1H30M", "P1Y2M", "P2W"], ["P", "PT", "3 days", "P1H"]),
            (
                "email",
                ["ana.lopez@example.com", "a+b@mail.example.org"],
                ["ana", "a@b@c.com", "a b@example.com", "@x.com"],
            ),
            (
                "hostname",
                ["example.com", "a-b.example"],
                ["-a.com", "a..b", "exa mple.com", "a" * 64 + ".com"],
            ),
            (
                "uri",
                ["https://example.com/a?b=c#d", "urn:isbn:0451450523"],
                ["example.com", "http://a b", "1http://x"],
            ),
            ("ipv4", ["192.168.0.1"], ["256.1.1.1", "1.2.3", "01.2.3.4"]),
            ("ipv6", ["::1", "2001:db8::8a2e:370:7334"], ["2001:db8::g", "fe80::1%eth0", "1.2.3.4"]),
            (
                "uuid",
                ["123e4567-e89b-12d3-a456-426614174000"],
                ["123e4567e89b12d3a456426614174000", "not-a-uuid"],
            ),
        ],
    )
    def test_string_formats(self, fmt, good, bad):
        schema = CompiledSchema(obj({"v": {"type": "string", "format": fmt}}))
        for value in good:
            assert schema.validate({"v": value}) is None, value
        for value in bad:
            assert schema.validate({"v": value}) == Violation("$.v", f"is not a valid {fmt}"), value

    def test_takes_a_compiled_or_reply_schema(self):
        reply = ReplySchema.from_mapping(ASPECTS, name="aspects")
        bad = {**VALID_ASPECTS, "overall": 0}
        expected = Violation("$.overall", "is 0, below the minimum 1")
        assert validate(reply, bad) == validate(reply.compiled, bad) == validate(ASPECTS, bad) == expected


# ---------------------------------------------------------------------------------------------------------
# Cross-check with jsonschema: values around each schema, valid and not, must get the same verdict.

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | st.floats(-1e6, 1e6, allow_nan=False)
    | st.text(max_size=6)
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


def near(node: Mapping[str, Any], defs: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values around a schema: mostly of its shape and near its bounds (either side), sometimes anything."""
    shaped = shape_of(node, defs)
    return st.one_of(shaped, shaped, shaped, shaped, shaped, shaped, ANY_JSON)


def beside(value: Any) -> Any:
    """A value next to an enum value: of the same kind, or its look-alike of another kind."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    return 0


def shape_of(node: Mapping[str, Any], defs: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in node:
        return near(defs[node["$ref"]], defs)
    options: list[st.SearchStrategy[Any]] = []
    if "enum" in node or "const" in node:
        listed = st.sampled_from(node["enum"] if "enum" in node else [node["const"]])
        options.extend([listed, listed.map(beside)])
    options.extend(near(branch, defs) for branch in node.get("anyOf", ()))
    types = node.get("type", [])
    for t in [types] if isinstance(types, str) else types:
        if t == "string":
            low = max(0, node.get("minLength", 0) - 1)
            options.append(
                st.text(alphabet="abcXYZ 1_-", min_size=low, max_size=node.get("maxLength", 8) + 1)
            )
        elif t in ("integer", "number"):
            low = node.get("minimum", node.get("exclusiveMinimum", -20)) - 1
            high = node.get("maximum", node.get("exclusiveMaximum", 20)) + 1
            options.append(st.integers(int(low), int(high)))
            options.append(st.integers(int(low), int(high)).map(float))
            if t == "number":
                options.append(st.floats(low, high).map(lambda x: round(x * 4) / 4))
                options.append(st.floats(low, high))
        elif t == "boolean":
            options.append(st.booleans())
        elif t == "null":
            options.append(st.none())
        elif t == "array":
            low = max(0, node.get("minItems", 0) - 1)
            items = near(node["items"], defs)
            options.append(st.lists(items, min_size=low, max_size=node.get("maxItems", 3) + 1))
        elif t == "object":
            properties = node.get("properties", {})
            required = [k for k in properties if k in node.get("required", ())]
            whole = st.fixed_dictionaries(
                {k: near(v, defs) for k, v in properties.items() if k in required},
                optional={k: near(v, defs) for k, v in properties.items() if k not in required},
            )
            options.extend([whole, whole, whole, whole.map(lambda d: {**d, "extra": 1})])
            if required:
                dropped = st.tuples(whole, st.sampled_from(required))
                options.append(dropped.map(lambda pair: {k: v for k, v in pair[0].items() if k != pair[1]}))
    return st.one_of(options)


Child = Callable[[Mapping[str, Any], Mapping[str, Any]], st.SearchStrategy[Any]]


def valid_of(
    node: Mapping[str, Any], defs: Mapping[str, Any], child: Child | None = None
) -> st.SearchStrategy[Any]:
    """Values that conform (to the schemas below: no formats, integer bounds); ``child`` makes the values
    inside objects and arrays (by default: conforming ones)."""
    child = child or valid_of
    if "$ref" in node:
        return valid_of(defs[node["$ref"]], defs, child)
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "const" in node:
        return st.just(node["const"])
    if "anyOf" in node:
        return st.one_of([valid_of(branch, defs, child) for branch in node["anyOf"]])
    types = node["type"]
    return st.one_of(
        [typed_value(node, t, defs, child) for t in ([types] if isinstance(types, str) else types)]
    )


def typed_value(
    node: Mapping[str, Any], t: str, defs: Mapping[str, Any], child: Child
) -> st.SearchStrategy[Any]:
    if t == "string":
        low, high = node.get("minLength", 0), node.get("maxLength", 8)
        if "pattern" in node:
            return st.from_regex(node["pattern"]).filter(lambda v: low <= len(v) <= high)
        return st.text(alphabet="abcXYZ 1_-", min_size=low, max_size=high)
    if t in ("integer", "number"):
        step = node.get("multipleOf", 1 if t == "integer" else 0.25)
        low = node.get("minimum", node.get("exclusiveMinimum", -100))
        high = node.get("maximum", node.get("exclusiveMaximum", 100))
        exclusive = int("exclusiveMinimum" in node), int("exclusiveMaximum" in node)
        first, last = math.ceil(low / step) + exclusive[0], math.floor(high / step) - exclusive[1]
        return st.integers(first, last).map(lambda k: k * step)
    if t == "boolean":
        return st.booleans()
    if t == "null":
        return st.none()
    if t == "array":
        high = node.get("maxItems", 3)
        return st.lists(child(node["items"], defs), min_size=node.get("minItems", 0), max_size=high)
    properties = node.get("properties", {})
    required = node.get("required", ())
    return st.fixed_dictionaries(
        {k: child(v, defs) for k, v in properties.items() if k in required},
        optional={k: child(v, defs) for k, v in properties.items() if k not in required},
    )


def valid_or_near(node: Mapping[str, Any], defs: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Conforming values in which any place may hold a value around its schema instead."""
    return st.one_of(valid_of(node, defs, child=valid_or_near), near(node, defs))


KITCHEN_SINK = obj(
    {
        "id": {"type": "string", "minLength": 2, "maxLength": 6, "pattern": "^[a-c]"},
        "score": {"type": ["integer", "null"], "minimum": 0, "maximum": 10, "multipleOf": 2},
        "ratio": {"type": "number", "exclusiveMinimum": -1, "exclusiveMaximum": 1, "multipleOf": 0.25},
        "kind": {"enum": ["a", 1, 2.5, True, None]},
        "fixed": {"const": 0},
        "flag": {"type": "boolean"},
        "either": {
            "anyOf": [{"$ref": "#/$defs/point"}, {"type": "string", "maxLength": 3}, {"type": "integer"}]
        },
        "points": {"type": "array", "items": {"$ref": "#/definitions/point"}, "minItems": 1, "maxItems": 3},
        "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "maxItems": 2}},
        "open": obj({}),
    },
    required=["id", "kind", "points"],
    **{
        "$defs": {
            "point": obj({"x": {"type": "integer"}, "y": {"type": ["number", "string"]}}, required=["x"])
        },
        "definitions": {"point": obj({"x": {"type": "number", "minimum": 0}})},
    },
)
CROSS_CHECKED = {
    "aspects": ASPECTS,
    "call_center": orjson.loads(CALL_CENTER.read_bytes()),
    "kitchen_sink": KITCHEN_SINK,
}


def definitions_of(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {f"#/{k}/{n}": sub for k in ("$defs", "definitions") for n, sub in schema.get(k, {}).items()}


def places(node: Mapping[str, Any], pointer: str = "") -> list[tuple[str, Mapping[str, Any]]]:
    """Every subschema below the root, with its pointer."""
    found = []
    children = [(f"/properties/{k}", v) for k, v in node.get("properties", {}).items()]
    children += [(f"/anyOf/{i}", v) for i, v in enumerate(node.get("anyOf", ()))]
    children += [(f"/{k}/{n}", v) for k in ("$defs", "definitions") for n, v in node.get(k, {}).items()]
    if "items" in node:
        children.append(("/items", node["items"]))
    for where, child in children:
        found.append((pointer + where, child))
        found.extend(places(child, pointer + where))
    return found


# Each subschema alone, as the one property of a reply: the first-violation order cannot hide its mistakes
# behind those of the properties before it.
ONE_PLACE = {
    f"{name}{pointer}": (schema, node)
    for name, schema in CROSS_CHECKED.items()
    for pointer, node in places(schema)
    if "/$defs/" not in pointer and "/definitions/" not in pointer  # they are checked where they are used
}


def cross_check(schema: Mapping[str, Any], values: st.SearchStrategy[Any]) -> None:
    compiled = CompiledSchema(schema)
    reference = jsonschema.Draft202012Validator(schema)
    verdicts: dict[bool, int] = {True: 0, False: 0}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(values)
    def agree(instance: Any) -> None:
        valid = compiled.validate(instance) is None
        assert valid == reference.is_valid(instance), (instance, compiled.validate(instance))
        verdicts[valid] += 1

    agree()
    assert verdicts[True] > 0  # the cross-check saw both verdicts, so it could have caught a disagreement
    assert verdicts[False] > 0


@pytest.mark.parametrize("name", sorted(CROSS_CHECKED))
def test_the_validator_agrees_with_jsonschema_on_whole_replies(name):
    schema = CROSS_CHECKED[name]
    defs = definitions_of(schema)
    cross_check(schema, st.one_of(valid_of(schema, defs), valid_or_near(schema, defs)))


@pytest.mark.parametrize("place", sorted(ONE_PLACE))
def test_the_validator_agrees_with_jsonschema_at_every_place(place):
    schema, node = ONE_PLACE[place]
    defs = definitions_of(schema)
    wrapper = {**obj({"v": node}), **{k: schema[k] for k in ("$defs", "definitions") if k in schema}}
    cross_check(wrapper, st.one_of(valid_of(node, defs), near(node, defs)).map(lambda v: {"v": v}))


# ---------------------------------------------------------------------------------------------------------


class TestParseReply:
    compiled = ReplySchema.from_mapping(ASPECTS, name="aspects").compiled
    text = orjson.dumps(VALID_ASPECTS).decode()

    @pytest.mark.parametrize(
        "wrap",
        [
            lambda t: t,
            lambda t: f"  \n{t}\n",
            lambda t: f"Here is the analysis:\n```json\n{t}\n```\nLet me know if you need more.",
            lambda t: f"```\n{t}\n```",
            lambda t: f"Sure! {t} Hope this helps.",
            lambda t: f"Result: {t}\nNote: I ignored {{the footer}}.",
        ],
        ids=["bare", "whitespace", "json fence and prose", "bare fence", "prose", "prose with braces"],
    )
    def test_the_json_is_found(self, wrap):
        assert parse_reply(wrap(self.text), self.compiled) == ParsedReply(VALID_ASPECTS, None)

    def test_a_prefilled_reply_gets_its_brace_back(self):
        assert parse_reply(self.text[1:], self.compiled, prefilled=True).value == VALID_ASPECTS
        # A model that repeats the prefill is still understood.
        assert parse_reply(self.text, self.compiled, prefilled=True).value == VALID_ASPECTS

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            ("The caller, Jane Doe, was upset.", "reply is not JSON: unexpected character"),
            ('{"aspects": [{"name": "Jane Doe"', "reply is not JSON: unexpected end of data"),
            ("", "reply is not JSON: Input is a zero-length, empty document"),
            ('{"overall": NaN, "aspects": []}', "reply is not JSON:"),
        ],
    )
    def test_a_reply_that_is_not_json_is_a_violation_at_the_root_without_content(self, text, reason):
        parsed = parse_reply(text, self.compiled)
        assert parsed.value is None
        assert not parsed.ok
        assert parsed.violation.path == "$"
        assert parsed.violation.reason.startswith(reason)
        assert "Jane" not in parsed.violation.reason

    def test_a_reply_that_breaks_the_schema_keeps_no_value(self):
        parsed = parse_reply(self.text.replace('"overall":2', '"overall":7'), self.compiled)
        assert parsed == ParsedReply(None, Violation("$.overall", "is 7, above the maximum 5"))

    def test_enum_capitalization_takes_the_schemas_spelling(self):
        text = self.text.replace('"negative"', '"Negative"').replace('"positive"', '"POSITIVE"')
        parsed = parse_reply(text, self.compiled)
        assert parsed.ok
        assert [a["polarity"] for a in parsed.value["aspects"]] == ["negative", "positive", "neutral"]

    def test_enum_capitalization_is_a_violation_when_not_folded(self):
        text = self.text.replace('"negative"', '"Negative"')
        assert parse_reply(text, self.compiled, fold_case=False).violation == Violation(
            "$.aspects[0].polarity", "is not one of the 3 allowed values (it differs in capitalization only)"
        )


class TestArrow:
    def test_the_call_center_schema_gives_todays_summary_columns(self):
        assert arrow_schema(ReplySchema.from_file(CALL_CENTER)) == SUMMARY_COLUMNS

    def test_valid_call_center_replies_give_the_same_columns_as_today(self):
        schema = ReplySchema.from_file(CALL_CENTER)
        replies = [
            {
                "summary": "Customer was double charged. Agent issued a refund.",
                "sentiment": "Negative",
                "primary_topic": "billing dispute",
                "resolution": "resolved",
                "action_items": ["Send refund confirmation"],
            },
            {
                "summary": "Customer asked about roaming.",
                "sentiment": "neutral",
                "primary_topic": "roaming",
                "resolution": "escalated",
                "action_items": [],
            },
        ]
        texts = [orjson.dumps(r).decode() for r in replies]
        parsed = [parse_reply(t, schema.compiled) for t in texts]
        assert all(p.ok for p in parsed)
        # What the call-summary parser before reply schemas made of them: enum values lowercased.
        lowered = [{**r, "sentiment": r["sentiment"].lower()} for r in replies]
        today = pa.Table.from_pylist(lowered, SUMMARY_COLUMNS)
        assert to_arrow([p.value for p in parsed], schema).equals(today)

    @pytest.mark.parametrize(
        ("node", "arrow_type"),
        [
            ({"type": "string", "format": "date"}, pa.string()),
            ({"type": "string", "enum": ["a", "b"]}, pa.string()),
            ({"enum": ["a", None]}, pa.string()),
            ({"type": "integer"}, pa.int64()),
            ({"enum": [1, 2]}, pa.int64()),
            ({"enum": [1, 2.5]}, pa.float64()),
            ({"type": "number"}, pa.float64()),
            ({"type": "boolean"}, pa.bool_()),
            ({"const": True}, pa.bool_()),
            ({"type": "null"}, pa.string()),
            ({"type": ["integer", "null"]}, pa.int64()),
            ({"anyOf": [{"type": "number"}, {"type": "null"}]}, pa.float64()),
            (
                {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "maxLength": 3}]},
                pa.string(),
            ),
            ({"type": "array", "items": {"type": "integer"}}, pa.list_(pa.int64())),
            (
                obj({"a": {"type": "string"}, "b": {"type": "integer"}}),
                pa.struct([("a", pa.string()), ("b", pa.int64())]),
            ),
            # No single Arrow type: JSON text.
            ({"type": ["integer", "string"]}, pa.string()),
            ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, pa.string()),
            ({"enum": ["a", 1]}, pa.string()),
            (obj({}), pa.string()),
        ],
    )
    def test_json_schema_types_become_arrow_types(self, node, arrow_type):
        assert arrow_schema(obj({"v": node})) == pa.schema([("v", arrow_type)])

    def test_glue_types_come_from_the_catalogs_one_mapping(self):
        types = {f.name: hive_type(f.type) for f in arrow_schema(ASPECTS)}
        assert types == {
            "aspects": "array<struct<name:string,confidence:double,polarity:string,note:string>>",
            "overall": "bigint",
            "tags": "array<string>",
        }
        call_center = glue_columns(arrow_schema(ReplySchema.from_file(CALL_CENTER)))
        assert call_center == glue_columns(SUMMARY_COLUMNS)

    def test_rows_without_a_value_are_null(self):
        table = to_arrow([VALID_ASPECTS, None], ReplySchema.from_mapping(ASPECTS, name="aspects"))
        assert table.schema == arrow_schema(ASPECTS)
        assert table.to_pylist()[1] == {"aspects": None, "overall": None, "tags": None}
        assert table.to_pylist()[0]["aspects"][2] == {
            "name": "wait",
            "confidence": 1.0,
            "polarity": "neutral",
            "note": "long queue",
        }

    def test_values_without_one_arrow_type_are_json_text(self, tmp_path):
        schema = ReplySchema.from_mapping(
            obj(
                {
                    "any": {"anyOf": [{"type": "integer"}, obj({"a": {"type": "string"}})]},
                    "nested": obj(
                        {"mixed": {"type": ["string", "boolean", "null"]}, "n": {"type": "integer"}}
                    ),
                    "list": {"type": "array", "items": {"enum": ["x", 2]}},
                }
            ),
            name="mixed",
        )
        values = [
            {"any": {"a": "é"}, "nested": {"mixed": True, "n": 1.0}, "list": ["x", 2]},
            {"any": 3, "nested": {"mixed": None, "n": 2}, "list": []},
            None,
        ]
        assert all(schema.compiled.validate(v) is None for v in values[:2])
        table = to_arrow(values, schema)
        assert table.to_pylist() == [
            {"any": '{"a":"é"}', "nested": {"mixed": "true", "n": 1}, "list": ['"x"', "2"]},
            {"any": "3", "nested": {"mixed": None, "n": 2}, "list": []},
            {"any": None, "nested": None, "list": None},
        ]
        pq.write_table(table, tmp_path / "part.parquet")
        assert pq.read_table(tmp_path / "part.parquet").equals(table)

    def test_whole_numbers_beyond_64_bits_in_a_number_column_become_floats(self):
        schema = ReplySchema.from_mapping(obj({"n": {"type": "number"}, "i": {"type": "integer"}}), name="n")
        table = to_arrow([{"n": 2**64 - 1, "i": 1}, {"n": 0.5, "i": 2}], schema)
        assert table.column("n").to_pylist() == [float(2**64 - 1), 0.5]
        assert table.column("i").type == pa.int64()

    def test_a_reply_without_properties_has_no_columns(self):
        with pytest.raises(SchemaError, match="no properties"):
            arrow_schema(obj({}))


class TestPromptInstructions:
    def test_the_whole_schema_goes_in_compact_json(self):
        schema = ReplySchema.from_file(CALL_CENTER)
        text = prompt_instructions(schema)
        first, compact, last = text.split("\n")
        assert first == "Answer with one JSON object that conforms to this JSON Schema:"
        assert compact == orjson.dumps({k: v for k, v in schema.schema.items() if k != "$schema"}).decode()
        assert '"minLength":1' in compact  # a model without a decoder reads the constraints too
        assert last.startswith("Reply with the JSON object only")
