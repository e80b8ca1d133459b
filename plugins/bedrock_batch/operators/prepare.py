"""Stages 1-3: prepare, split and upload a run's records in one streaming pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from bedrock_batch.config import (
    QuotasArgument,
    as_choice,
    as_int,
    as_optional_float,
    as_optional_str,
    quota_config_for,
)
from bedrock_batch.models import INVOCATION_TYPES
from bedrock_batch.operators._base import STORAGE_TEMPLATE_FIELDS, StagingOperator
from bedrock_batch.stage_results import ON_DEMAND_XCOM_KEY, RUN_XCOM_KEY, ShardDescriptor
from bedrock_batch.staging import run_prefix_for, stage_source

if TYPE_CHECKING:
    from airflow.sdk import Context


class BedrockBatchPrepareOperator(StagingOperator):
    """Turn source rows into quota-respecting batch input shards in S3, in one streaming pass.

    Reads the source (text files, JSONL, CSV, Parquet or Amazon Transcribe JSON, from S3 or a local path),
    renders the prompt template, builds each model request body, quarantines rows that cannot become a
    record, plans shards within every service quota and uploads them with the record index and the
    quarantine list (:func:`~bedrock_batch.staging.stage_source`). Only metadata goes to XCom: the return
    value is the submit stage's shard list (``.expand(shard=prepare.output)``), the XCom key ``run``
    describes the run (:class:`~bedrock_batch.stage_results.PreparedRun`: counts, URIs; what the collect and
    publish stages take) and ``on_demand_uris`` lists the on-demand fallback's input files.

    A partition that exists but holds only marker objects (``_SUCCESS``) is an empty day: zero records,
    no error. A partition with files of another format is an error, never silently empty.

    :param source_uri: ``s3://bucket/prefix/``, an S3 object, a local directory or file. (templated)
    :param source_format: ``text``, ``jsonl``, ``csv``, ``parquet`` or ``transcribe``. (templated)
    :param staging_uri: S3 prefix (or local directory) for shards, outputs and run files. (templated)
    :param model_id: model id, inference-profile id or ARN. (templated)
    :param prompt_name: prompt template name under ``include/prompts/``. (templated)
    :param prompt_version: prompt template version. (templated)
    :param id_column: source column with the row key (tabular formats). (templated)
    :param text_column: source column with the transcript (tabular formats). (templated)
    :param passthrough_columns: source columns carried to the results table. (templated)
    :param invocation_type: ``InvokeModel`` or ``Converse``. (templated)
    :param model_family: override of the model family inferred from ``model_id``. (templated)
    :param max_tokens: the model's ``max_tokens`` per record. (templated)
    :param temperature: sampling temperature, or None for the model's default. (templated)
    :param max_records: read at most this many source rows (0: all), e.g. for a trial run. (templated)
    :param quotas: :class:`~bedrock_batch.config.QuotaConfig`, :class:`~bedrock_batch.config.QuotaSettings`
        or a mapping of overrides.
    :param prompts_root: directory of prompt templates; default ``include/prompts``. (templated)
    :param kms_key_id: KMS key of every object written (SSE-KMS). (templated)
    :param expected_bucket_owner: account that must own every bucket touched; ``bucket_owners`` overrides it
        per bucket. (templated)
    """

    template_fields: Sequence[str] = aws_template_fields(
        "source_uri",
        "source_format",
        "staging_uri",
        "model_id",
        "prompt_name",
        "prompt_version",
        "id_column",
        "text_column",
        "passthrough_columns",
        "invocation_type",
        "model_family",
        "max_tokens",
        "temperature",
        "max_records",
        "prompts_root",
        *STORAGE_TEMPLATE_FIELDS,
    )
    ui_color = "#c8e6c9"

    def __init__(
        self,
        *,
        source_uri: str,
        source_format: str,
        staging_uri: str,
        model_id: str,
        prompt_name: str,
        prompt_version: str = "v1",
        id_column: str = "id",
        text_column: str = "text",
        passthrough_columns: Sequence[str] = (),
        invocation_type: str = "InvokeModel",
        model_family: str | None = None,
        max_tokens: int = 1024,
        temperature: float | None = None,
        max_records: int | str = 0,
        quotas: QuotasArgument = None,
        prompts_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_uri = source_uri
        self.source_format = source_format
        self.staging_uri = staging_uri
        self.model_id = model_id
        self.prompt_name = prompt_name
        self.prompt_version = prompt_version
        self.id_column = id_column
        self.text_column = text_column
        self.passthrough_columns = passthrough_columns
        self.invocation_type = invocation_type
        self.model_family = model_family
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.max_records = max_records
        self.quotas = quotas
        self.prompts_root = prompts_root

    def resolve_arguments(self) -> None:
        """Coerce and check the scalar arguments once templates are rendered (they may arrive as strings);
        a :class:`~bedrock_batch.errors.ConfigError` names the argument and the value."""
        self.invocation_type = as_choice("invocation_type", self.invocation_type, INVOCATION_TYPES)
        self.model_family = as_optional_str(self.model_family)
        self.max_tokens = as_int("max_tokens", self.max_tokens, minimum=1)
        self.temperature = as_optional_float("temperature", self.temperature, minimum=0)
        self.max_records = as_int("max_records", self.max_records or 0, minimum=0)
        self.prompts_root = as_optional_str(self.prompts_root)

    def execute(self, context: Context) -> list[ShardDescriptor]:
        from bedrock_batch.models import InferenceParams
        from bedrock_batch.prompts import load_template
        from bedrock_batch.sources import SourceSpec

        self.resolve_arguments()
        run = stage_source(
            self.storage(),
            SourceSpec(
                uri=self.source_uri,
                format=self.source_format,  # type: ignore[arg-type]
                id_column=self.id_column,
                text_column=self.text_column,
                passthrough_columns=tuple(self.passthrough_columns or ()),
            ),
            run_prefix_for(self.staging_uri, self.dag_id, context["ds"]),
            template=load_template(self.prompt_name, self.prompt_version, root=self.prompts_root),
            model_id=self.model_id,
            quotas=quota_config_for(self.quotas, self.model_id),
            params=InferenceParams(max_tokens=self.max_tokens, temperature=self.temperature),
            invocation_type=self.invocation_type,
            family=self.model_family,
            max_records=int(self.max_records),
        )
        self.log.info(
            "Prepared %s rows: %s records in %d shard(s), %s for on-demand, %s quarantined %s",
            f"{run['rows']:,}",
            f"{run['records']:,}",
            len(run["shards"]),
            f"{run['on_demand_records']:,}",
            f"{run['quarantined']:,}",
            run["quarantine_counts"] or "",
        )
        context["ti"].xcom_push(key=ON_DEMAND_XCOM_KEY, value=run["on_demand_uris"])
        context["ti"].xcom_push(key=RUN_XCOM_KEY, value=run)
        return run["shards"]
