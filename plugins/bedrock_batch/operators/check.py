"""Stage 0: check a run's parameters before any job, over :mod:`bedrock_batch.preflight`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowFailException
from botocore.exceptions import ClientError

from bedrock_batch.aws_errors import error_code
from bedrock_batch.config import as_choice, as_optional_str, check_account_id, check_kms_key_id
from bedrock_batch.errors import ConfigError
from bedrock_batch.models import INVOCATION_TYPES, family_for
from bedrock_batch.operators._base import STORAGE_TEMPLATE_FIELDS, StagingOperator
from bedrock_batch.preflight import (
    ModelCheck,
    check_buckets,
    check_locations,
    check_model,
    check_reply_schema,
    check_role_arn,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class CheckResult(TypedDict):
    """What :class:`BedrockBatchCheckOperator` returns (XCom)."""

    model_id: str
    foundation_model_id: str | None
    model_name: str | None
    model_lifecycle: str | None
    locations: dict[str, str]
    warnings: list[str]


class BedrockBatchCheckOperator(StagingOperator):
    """Check a run's parameters before any job; the first task of a pipeline.

    Checks, in order, and fails at the first bad value (without retry, naming the argument and the value):
    every location given is an ``s3://`` URI with a valid bucket name or an explicit local path
    (``file:///…`` or absolute; a relative path would land in the worker's working directory); ``role_arn``
    is an IAM role ARN; ``kms_key_id`` and the bucket owners have the shapes S3 takes; the model id has a form
    Bedrock accepts and GetFoundationModel knows the foundation model behind it (a cross-region profile is
    checked through its model; application-profile, provisioned and custom-model ARNs for their form only),
    outputs text, and has a model family for ``invocation_type``; a LEGACY model passes with a warning; the
    reply schema stays within what structured outputs accept; every bucket named exists and answers
    HeadBucket with this connection (404: does not exist, 403: access denied). The source partition itself
    may not exist yet: :class:`~bedrock_batch.sensors.SourcePartitionSensor` waits for it.

    Transient errors (throttling, 5xx) are raised as they are, so the task's retries apply. When the
    connection may not call GetFoundationModel (403), the model is checked for its form only, with a warning.
    Returns a :class:`CheckResult`.

    :param model_id: model id, cross-region profile id or ARN. (templated)
    :param role_arn: the service role the jobs run with; ``None``: not checked (no batch job). (templated)
    :param source_uri: where the source partitions are read. (templated)
    :param staging_uri: where the run's files are staged. (templated)
    :param results_uri: root of the results tables and reports. (templated)
    :param reply_schema: the reply schema (mapping, JSON text or a file path), or ``None``. (templated)
    :param reply_schema_name: the structured-output name of the schema. (templated)
    :param invocation_type: ``InvokeModel`` or ``Converse``. (templated)
    :param model_family: the family of an ARN that does not name its model. (templated)
    :param kms_key_id: KMS key the run writes with (checked for its shape). (templated)
    :param expected_bucket_owner: account that must own every bucket (sent with HeadBucket);
        ``bucket_owners`` overrides it per bucket. (templated)
    """

    template_fields: Sequence[str] = aws_template_fields(
        "model_id",
        "role_arn",
        "source_uri",
        "staging_uri",
        "results_uri",
        "reply_schema",
        "reply_schema_name",
        "invocation_type",
        "model_family",
        *STORAGE_TEMPLATE_FIELDS,
    )
    ui_color = "#ffe0b2"

    def __init__(
        self,
        *,
        model_id: str,
        role_arn: str | None = None,
        source_uri: str | None = None,
        staging_uri: str | None = None,
        results_uri: str | None = None,
        reply_schema: Mapping[str, Any] | str | None = None,
        reply_schema_name: str | None = None,
        invocation_type: str = "InvokeModel",
        model_family: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_id = model_id
        self.role_arn = role_arn
        self.source_uri = source_uri
        self.staging_uri = staging_uri
        self.results_uri = results_uri
        self.reply_schema = reply_schema
        self.reply_schema_name = reply_schema_name
        self.invocation_type = invocation_type
        self.model_family = model_family

    def execute(self, context: Context) -> CheckResult:
        try:
            result = self.check()
        except ConfigError as error:
            raise AirflowFailException(str(error)) from error
        for warning in result["warnings"]:
            self.log.warning(warning)
        self.log.info(
            "Parameters checked: model %s (%s), %d location(s), every bucket reachable",
            result["model_id"],
            result["model_lifecycle"] or "form only",
            len(result["locations"]),
        )
        return result

    def check(self) -> CheckResult:
        """Every check in order; a :class:`~bedrock_batch.errors.ConfigError` at the first bad value."""
        invocation_type = as_choice("invocation_type", self.invocation_type, INVOCATION_TYPES)
        locations = check_locations(
            {
                "source_uri": as_optional_str(self.source_uri),
                "staging_uri": as_optional_str(self.staging_uri),
                "results_uri": as_optional_str(self.results_uri),
            }
        )
        role_arn = as_optional_str(self.role_arn)
        if role_arn is not None:
            check_role_arn("role_arn", role_arn)
        check_kms_key_id(as_optional_str(self.kms_key_id), "kms_key_id")
        check_account_id(as_optional_str(self.expected_bucket_owner), "expected_bucket_owner")
        for bucket, owner in (self.bucket_owners or {}).items():
            check_account_id(owner, f"bucket_owners[{bucket!r}]")
        warnings: list[str] = []
        model = self._check_model(warnings)
        family_for(
            self.model_id, invocation_type=invocation_type, override=as_optional_str(self.model_family)
        )
        check_reply_schema("reply_schema", self.reply_schema, as_optional_str(self.reply_schema_name))
        check_buckets(locations, self.hook.s3_client, self.storage().expected_owner)
        return {
            "model_id": model.model_id,
            "foundation_model_id": model.foundation_model_id,
            "model_name": model.name,
            "model_lifecycle": model.lifecycle,
            "locations": locations,
            "warnings": [*warnings, *model.warnings],
        }

    def _check_model(self, warnings: list[str]) -> ModelCheck:
        try:
            return check_model("model_id", self.model_id, self.hook.describe_foundation_model)
        except ClientError as error:
            if error_code(error) != "AccessDeniedException":
                raise
        warnings.append(
            "the connection may not call bedrock:GetFoundationModel: model_id is checked for its form only"
        )
        return check_model("model_id", self.model_id, None)
