"""BedrockBatchCheckOperator against the local stack: the emulator's model catalogue through the hook's boto3
client, moto's S3 for the buckets. Every bad value fails the task without retry and names the value."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from bedrock_batch.operators import BedrockBatchCheckOperator
from tests.conftest import connection_json
from tests.integration.denying_s3 import DenyingS3

pytestmark = pytest.mark.integration

SOURCE, STAGING, RESULTS = "check-source", "check-staging", "check-results"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE = "arn:aws:iam::123456789012:role/BedrockBatchRole"
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["positive", "negative"]}},
    "required": ["label"],
    "additionalProperties": False,
}


@pytest.fixture
def stack(local_stack: Any, aws_connection: str) -> Any:
    s3 = local_stack.client("s3")
    for bucket in (SOURCE, STAGING, RESULTS):
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
    local_stack.admin.reset()
    yield local_stack
    local_stack.admin.reset()


def check(**arguments: Any) -> Any:
    defaults: dict[str, Any] = {
        "model_id": HAIKU,
        "role_arn": ROLE,
        "source_uri": f"s3://{SOURCE}/calls/",
        "staging_uri": f"s3://{STAGING}/runs/",
        "results_uri": f"s3://{RESULTS}/tables/",
    }
    operator = BedrockBatchCheckOperator(task_id="check", **{**defaults, **arguments})
    return operator.execute({})  # type: ignore[arg-type]


def refused(message: str, **arguments: Any) -> str:
    with pytest.raises(AirflowFailException, match=message) as excinfo:
        check(**arguments)
    return str(excinfo.value)


class TestGoodParameters:
    def test_pass_and_report_what_was_checked(self, stack):
        result = check(reply_schema=SCHEMA, results_uri="file:///var/tmp/results")
        assert result == {
            "model_id": HAIKU,
            "foundation_model_id": HAIKU,
            "model_name": "Claude 3 Haiku",
            "model_lifecycle": "ACTIVE",
            "locations": {
                "source_uri": f"s3://{SOURCE}/calls/",
                "staging_uri": f"s3://{STAGING}/runs/",
                "results_uri": "/var/tmp/results",
            },
            "warnings": [],
        }
        asked = [r for r in stack.admin.requests() if r["operation"] == "GetFoundationModel"]
        assert [r["params"]["modelIdentifier"] for r in asked] == [HAIKU]

    def test_a_cross_region_profile_is_checked_through_its_model(self, stack):
        result = check(model_id=f"us.{HAIKU}")
        assert (result["model_id"], result["foundation_model_id"]) == (f"us.{HAIKU}", HAIKU)

    def test_a_legacy_model_passes_with_a_warning_in_the_log(self, stack, capsys):
        result = check(model_id="anthropic.claude-3-sonnet-20240229-v1:0")
        assert result["model_lifecycle"] == "LEGACY"
        assert "is LEGACY" in result["warnings"][0]
        logged = [line for line in capsys.readouterr().out.splitlines() if "is LEGACY" in line]
        assert len(logged) == 1
        assert "warning" in logged[0]

    def test_without_access_to_the_catalogue_the_model_is_checked_for_its_form(self, stack):
        stack.admin.set_faults(access_denied_operations=["GetFoundationModel"])
        result = check()
        assert result["model_lifecycle"] is None
        assert "bedrock:GetFoundationModel" in result["warnings"][0]
        refused("not a Bedrock model id", model_id="claude-3-haiku")


class TestBadParametersFailBeforeAnyJob:
    def test_an_unknown_model(self, stack):
        typo = "anthropic.claude-3-haiku-20240307-v1:1"
        message = refused("the service does not know this model", model_id=typo)
        assert message.startswith(f"model_id {typo!r}: ")
        refused(f"the foundation model {typo} behind it", model_id=f"us.{typo}")

    def test_a_model_without_text_output(self, stack):
        refused("outputs EMBEDDING, not text", model_id="amazon.titan-embed-text-v2:0")

    def test_a_model_without_a_family_for_the_invocation_type(self, stack):
        refused(
            "cannot tell the model family of 'openai.gpt-oss-120b-1:0'", model_id="openai.gpt-oss-120b-1:0"
        )

    def test_a_results_uri_without_a_scheme(self, stack):
        message = refused("neither an s3:// URI nor an explicit local path", results_uri="results/")
        assert message.startswith("results_uri 'results/': ")

    def test_a_bucket_without_its_scheme(self, stack):
        refused(rf"did you mean s3://{STAGING}/runs/\?", staging_uri=f"{STAGING}/runs/")

    def test_a_role_name_instead_of_its_arn(self, stack):
        refused("role_arn 'BedrockBatchRole': not an IAM role ARN", role_arn="BedrockBatchRole")

    def test_a_missing_bucket(self, stack):
        refused(
            "staging_uri 's3://no-such-staging-bucket/runs/': bucket no-such-staging-bucket does not exist",
            staging_uri="s3://no-such-staging-bucket/runs/",
        )

    def test_a_refused_bucket(self, stack, monkeypatch):
        with DenyingS3() as denying:
            connection = json.loads(connection_json(stack))
            connection["extra"]["service_config"]["s3"]["endpoint_url"] = denying.url
            monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
            refused(f"source_uri 's3://{SOURCE}/calls/': access denied to bucket {SOURCE}")

    def test_a_schema_outside_what_structured_outputs_accept(self, stack):
        schema = {**SCHEMA, "additionalProperties": True}
        refused("additionalProperties", reply_schema=schema)

    def test_a_bad_kms_key_and_owner(self, stack):
        refused("kms_key_id must be a KMS key ARN", kms_key_id="my-key")
        refused("expected_bucket_owner must be a 12-digit AWS account id", expected_bucket_owner="1234")

    def test_no_job_was_created(self, stack):
        with contextlib.suppress(AirflowFailException):
            check(model_id="anthropic.claude-3-haiku-20240307-v1:1")
        assert stack.admin.created_job_count() == 0
