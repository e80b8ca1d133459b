"""The checks made before any job: locations, role ARNs, model ids against a catalogue, reply schemas."""

from __future__ import annotations

from typing import Any

import pytest

from bedrock_batch.errors import ConfigError, ParameterError, SchemaError
from bedrock_batch.preflight import (
    bucket_problem,
    check_location,
    check_locations,
    check_model,
    check_reply_schema,
    check_role_arn,
    model_identity,
)

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
CATALOGUE: dict[str, dict[str, Any]] = {
    HAIKU: {
        "modelId": HAIKU,
        "modelName": "Claude 3 Haiku",
        "outputModalities": ["TEXT"],
        "modelLifecycle": {"status": "ACTIVE"},
    },
    "anthropic.claude-3-sonnet-20240229-v1:0": {
        "modelName": "Claude 3 Sonnet",
        "outputModalities": ["TEXT"],
        "modelLifecycle": {"status": "LEGACY"},
    },
    "amazon.titan-embed-text-v2:0": {
        "outputModalities": ["EMBEDDING"],
        "modelLifecycle": {"status": "ACTIVE"},
    },
}


class Catalogue:
    """GetFoundationModel over a dict, recording what was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, model_id: str) -> dict[str, Any] | None:
        self.asked.append(model_id)
        return CATALOGUE.get(model_id)


class TestLocations:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("s3://results-bucket/tables/", "s3://results-bucket/tables/"),
            ("s3://results-bucket", "s3://results-bucket"),
            ("s3://my.dotted-bucket.2026/x/y", "s3://my.dotted-bucket.2026/x/y"),
            ("file:///var/data/results", "/var/data/results"),
            ("/var/data/results", "/var/data/results"),
        ],
    )
    def test_s3_uris_and_explicit_local_paths_are_accepted(self, value, expected):
        assert check_location("results_uri", value) == expected

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("results/", "neither an s3:// URI nor an explicit local path"),
            ("./results", "neither an s3:// URI nor an explicit local path"),
            ("~/results", "neither an s3:// URI nor an explicit local path"),
            ("my-bucket/results", r"did you mean s3://my-bucket/results\?"),
            ("", "a location is required"),
            ("None", "a location is required"),
            (" s3://bucket/x", "remove the leading or trailing spaces"),
            ("S3://bucket/x", "S3 URIs start with a lowercase s3://"),
            ("s3a://bucket/x", "the s3a:// scheme is not supported"),
            ("gs://bucket/x", "the gs:// scheme is not supported"),
            ("file://results", r"a file:// URI needs an absolute path: file:///<path>"),
            ("s3:///results", "the S3 URI has no bucket name"),
            ("s3://ab/x", "is 2 characters long"),
            ("s3://My_Bucket/x", "may hold only lowercase letters, digits, dots and hyphens"),
            ("s3://bucket-/x", "must start and end with a letter or a digit"),
            ("s3://my..bucket/x", "has two adjacent dots"),
            ("s3://192.168.5.4/x", "is formatted as an IP address"),
            ("s3://xn--bucket/x", "uses a prefix or suffix S3 reserves"),
            ("s3://data--x-s3/x", "uses a prefix or suffix S3 reserves"),
        ],
    )
    def test_anything_else_is_refused_naming_the_argument_and_the_value(self, value, message):
        with pytest.raises(ParameterError, match=message) as excinfo:
            check_location("results_uri", value)
        assert str(excinfo.value).startswith(f"results_uri {value!r}: ")
        assert (excinfo.value.argument, excinfo.value.value) == ("results_uri", value)

    def test_a_parameter_error_is_a_config_error(self):
        with pytest.raises(ConfigError):
            check_location("staging_uri", "staging")

    def test_several_at_once_skip_the_ones_not_given(self):
        checked = check_locations(
            {"source_uri": "s3://src/calls/", "staging_uri": None, "results_uri": "file:///tmp/results"}
        )
        assert checked == {"source_uri": "s3://src/calls/", "results_uri": "/tmp/results"}
        with pytest.raises(ParameterError, match=r"^staging_uri 'staging/'"):
            check_locations({"source_uri": "s3://src/calls/", "staging_uri": "staging/"})


class TestRoleArn:
    @pytest.mark.parametrize(
        "value",
        [
            "arn:aws:iam::123456789012:role/BedrockBatchRole",
            "arn:aws:iam::123456789012:role/service-role/bedrock.batch+role@team=x,y",
            "arn:aws-us-gov:iam::123456789012:role/R",
            "arn:aws-cn:iam::123456789012:role/R",
        ],
    )
    def test_role_arns_pass(self, value):
        assert check_role_arn("role_arn", value) == value

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (
                "BedrockBatchRole",
                r"give the role's full ARN, e.g. arn:aws:iam::111122223333:role/BedrockBatchRole",
            ),
            ("arn:aws:iam::123456789012:user/alice", "names an IAM user, not a role"),
            ("arn:aws:iam::1234:role/R", "the account id '1234' is not 12 digits"),
            ("arn:aws:iam::123456789012:role/bad name", "characters IAM refuses"),
            ("arn:aws:s3:::bucket", "not an IAM role ARN"),
            ("", "the service role's ARN is required"),
            (None, "the service role's ARN is required"),
        ],
    )
    def test_anything_else_is_refused(self, value, message):
        with pytest.raises(ParameterError, match=message) as excinfo:
            check_role_arn("role_arn", value)
        assert str(excinfo.value).startswith(f"role_arn {value!r}: ")


class TestModelIdentity:
    @pytest.mark.parametrize(
        ("value", "foundation"),
        [
            (HAIKU, HAIKU),
            (f"us.{HAIKU}", HAIKU),
            (f"global.{HAIKU}", HAIKU),
            (f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}", HAIKU),
            (f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.{HAIKU}", HAIKU),
            ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6", None),
            ("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/a1b2c3d4e5f6", None),
            ("arn:aws:bedrock:us-east-1:123456789012:custom-model/anthropic.claude-v2/a1b2c3d4e5f6", None),
        ],
    )
    def test_each_form_names_its_foundation_model(self, value, foundation):
        assert model_identity("model_id", value).foundation_model_id == foundation

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("claude-3-haiku", "not a Bedrock model id"),
            ("Anthropic.Claude-3-Haiku", "not a Bedrock model id"),
            ("anthropic claude", "not a Bedrock model id"),
            ("", "a model is required"),
            ("arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefabcdef", "not a model ARN"),
            ("arn:aws:s3:::bucket/key", "not a Bedrock model ARN"),
            (f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{HAIKU}", "not a cross-region"),
        ],
    )
    def test_other_forms_are_refused(self, value, message):
        with pytest.raises(ParameterError, match=message):
            model_identity("model_id", value)


class TestModel:
    def test_a_known_active_text_model_passes_without_warnings(self):
        catalogue = Catalogue()
        check = check_model("model_id", HAIKU, catalogue)
        assert (check.name, check.lifecycle, check.warnings) == ("Claude 3 Haiku", "ACTIVE", ())
        assert catalogue.asked == [HAIKU]

    def test_a_cross_region_profile_is_checked_through_its_foundation_model(self):
        catalogue = Catalogue()
        check = check_model("model_id", f"us.{HAIKU}", catalogue)
        assert (check.model_id, check.foundation_model_id) == (f"us.{HAIKU}", HAIKU)
        assert catalogue.asked == [HAIKU]

    def test_an_unknown_model_is_refused_before_any_job(self):
        typo = "anthropic.claude-3-haiku-20240307-v1:1"
        with pytest.raises(ParameterError, match="the service does not know this model") as excinfo:
            check_model("model_id", typo, Catalogue())
        assert excinfo.value.value == typo
        with pytest.raises(ParameterError, match=f"the foundation model {typo} behind it"):
            check_model("model_id", f"us.{typo}", Catalogue())

    def test_a_legacy_model_passes_with_a_warning(self):
        check = check_model("model_id", "anthropic.claude-3-sonnet-20240229-v1:0", Catalogue())
        assert check.lifecycle == "LEGACY"
        assert len(check.warnings) == 1
        assert "is LEGACY" in check.warnings[0]

    def test_a_model_that_does_not_output_text_is_refused(self):
        with pytest.raises(ParameterError, match="outputs EMBEDDING, not text"):
            check_model("model_id", "amazon.titan-embed-text-v2:0", Catalogue())

    def test_opaque_arns_and_a_missing_catalogue_check_the_form_only(self):
        catalogue = Catalogue()
        arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
        assert check_model("model_id", arn, catalogue).foundation_model_id is None
        assert check_model("model_id", HAIKU, None).lifecycle is None
        assert catalogue.asked == []
        with pytest.raises(ParameterError, match="not a Bedrock model id"):
            check_model("model_id", "haiku", None)


class TestBucketProblems:
    @pytest.mark.parametrize("code", ["NoSuchBucket", "404", "NotFound"])
    def test_a_missing_bucket(self, code):
        assert bucket_problem("calls", code) == (
            "bucket calls does not exist; check the name (and the account and region)"
        )

    @pytest.mark.parametrize("code", ["AccessDenied", "403", "Forbidden"])
    def test_a_refusal_names_the_bucket_and_the_expected_owner(self, code):
        problem = bucket_problem("calls", code, "111122223333")
        assert problem is not None
        assert problem.startswith("access denied to bucket calls")
        assert "expected account 111122223333" in problem

    @pytest.mark.parametrize("code", ["NoSuchKey", "SlowDown", "InternalError"])
    def test_other_errors_are_not_about_the_bucket(self, code):
        assert bucket_problem("calls", code) is None


class TestReplySchema:
    def test_a_supported_schema_passes_and_none_is_nothing_to_check(self):
        schema = {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": ["good", "bad"]}},
            "required": ["label"],
            "additionalProperties": False,
        }
        check_reply_schema("reply_schema", schema)
        check_reply_schema("reply_schema", None)

    def test_a_schema_outside_the_subset_is_refused_with_its_pointer(self):
        schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
        with pytest.raises(SchemaError, match="additionalProperties"):
            check_reply_schema("reply_schema", schema)
