"""Stages 1-3: prepare, split and upload a run's records in one streaming pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from bedrock_batch import metrics
from bedrock_batch.config import (
    QuotasArgument,
    as_choice,
    as_date,
    as_int,
    as_optional_float,
    as_optional_str,
    quota_config_for,
)
from bedrock_batch.errors import ConfigError
from bedrock_batch.estimate import OUTPUT_ESTIMATES, CostEstimate, read_output_history
from bedrock_batch.models import INVOCATION_TYPES, STRUCTURED_OUTPUT_CHOICES
from bedrock_batch.operators._base import STORAGE_TEMPLATE_FIELDS, StagingOperator
from bedrock_batch.stage_results import ON_DEMAND_XCOM_KEY, RUN_XCOM_KEY, ShardDescriptor
from bedrock_batch.staging import run_prefix_for, stage_source

if TYPE_CHECKING:
    from airflow.sdk import Context


class BedrockBatchPrepareOperator(StagingOperator):
    """Turn source rows into quota-respecting batch input shards in S3, in one streaming pass.

    Reads the source (text files, JSONL, CSV, Parquet or Amazon Transcribe JSON, from S3 or a local path),
    renders the prompt template with each row's prompt columns, builds each model request body with the
    reply schema where the model takes one, quarantines rows that cannot become a record, plans shards
    within every service quota and uploads them with the record index and the quarantine list
    (:func:`~bedrock_batch.staging.stage_source`). Only metadata goes to XCom: the return value is the submit
    stage's shard list (``.expand(shard=prepare.output)``), the XCom key ``run`` describes the run
    (:class:`~bedrock_batch.stage_results.PreparedRun`: counts, URIs, the ``output_format`` and the
    ``reply_schema`` itself, so collect and publish validate replies against the very schema sent) and
    ``on_demand_uris`` lists the on-demand fallback's input files.

    **Cost estimate.** While it streams, prepare counts each record's estimated input tokens and output
    bound and prices them (:mod:`bedrock_batch.estimate`), before any job: the ``cost_estimate`` of the XCom
    ``run``, one log line, and the ``bedrock_batch.cost.run_estimate_micro_usd`` metric. With
    ``output_tokens_estimate="history"`` the output tokens are the average of the earlier run reports under
    ``results_uri`` instead of every record's ``max_tokens``.

    A partition that exists but holds only marker objects (``_SUCCESS``) is an empty day: zero records,
    no error. A partition with files of another format is an error, never silently empty.

    **Records already in Bedrock's format.** ``source_format="bedrock"`` reads JSONL lines
    ``{"recordId", "modelInput"}`` built elsewhere and only splits and uploads them: each record keeps its id
    (11 letters and digits, also its source key), the record index is written so that collect and publish
    work as for any run, and a line without a usable ``recordId`` or ``modelInput``, a repeated id or an
    oversized line is quarantined with its reason. No template is rendered (``prompt_name`` is not needed);
    a ``reply_schema`` only validates the replies (their bodies carry whatever the records asked for).

    **Prompt columns.** Every placeholder of the template is filled from one source column: by default the
    column of the same name (JSONL, CSV, Parquet); ``prompt_columns`` maps placeholders to other columns. A
    ``text_column`` that is not a placeholder fills the template's only placeholder. For ``text`` and
    ``transcribe`` sources the file's text fills the placeholder named ``text_column`` (default: the
    template's only one). A row whose bound column is missing, null or not a string is quarantined
    (``missing_text``, ``missing_column``, the detail naming the column, never the value).

    **Reply schema.** With ``reply_schema``, the schema reaches the model as ``structured_output`` says:
    ``native`` (the body's structured-output field), ``tool`` (one forced, strict tool) or ``prompt`` (the
    whole schema appended to the system prompt, and an assistant prefill ``{`` where the model allows one);
    ``auto`` takes the model's best (:func:`~bedrock_batch.models.structured_output_mode`). The schema sent
    is :meth:`~bedrock_batch.schemas.ReplySchema.service_schema` (validator-only keywords such as
    ``maxLength`` or ``maxSentences`` said in descriptions); its tokens count in the context-window check. A
    schema outside the supported subset, or with a property named like a results column, fails the task
    with a :class:`~bedrock_batch.errors.SchemaError` naming the file and the JSON pointer.

    :param source_uri: ``s3://bucket/prefix/``, an S3 object, a local directory or file. (templated)
    :param source_format: ``text``, ``jsonl``, ``csv``, ``parquet``, ``transcribe`` or ``bedrock``.
        (templated)
    :param staging_uri: S3 prefix (or local directory) for shards, outputs and run files. (templated)
    :param model_id: model id, inference-profile id or ARN. (templated)
    :param prompt_name: prompt template name under ``include/prompts/``; required unless the source is
        ``bedrock``. (templated)
    :param prompt_version: prompt template version. (templated)
    :param id_column: source column with the row key (tabular formats). (templated)
    :param text_column: see **Prompt columns**; ``None``: the template's placeholders name the columns.
        (templated)
    :param prompt_columns: placeholder → source column (JSONL, CSV, Parquet); ``None``: every placeholder is
        a column of the same name. (templated)
    :param passthrough_columns: source columns carried to the results table. (templated)
    :param reply_schema: the reply's JSON Schema: a mapping, a path to a JSON file (relative paths are also
        looked for in the project's ``include/``, e.g. ``pipelines/<name>/reply_schema.json``), or ``None``
        for free-text replies. (templated)
    :param reply_schema_name: the schema's name (structured-output name, tool name); default the schema
        file's folder name, or the prompt name for a mapping. (templated)
    :param structured_output: ``auto``, ``native``, ``tool`` or ``prompt``. (templated)
    :param partition: the run's date partition, ``YYYY-MM-DD``: its files are staged under
        ``<staging_uri>/<dag_id>/<partition>/``. The default ``{{ ds }}`` needs a logical date, which runs
        triggered without one (API with ``logical_date: null``, asset-triggered) do not have: pass a
        template that gives the date another way. Checked when the task runs. (templated)
    :param invocation_type: ``InvokeModel`` or ``Converse``. (templated)
    :param model_family: override of the model family inferred from ``model_id``. (templated)
    :param max_tokens: the model's ``max_tokens`` per record. (templated)
    :param temperature: sampling temperature, or None for the model's default. (templated)
    :param max_records: read at most this many source rows (0: all), e.g. for a trial run. (templated)
    :param prepare_processes: processes that prepare the source's parts (0: every CPU the task may run on;
        1: this process only). The records, ids, shards and fingerprints do not depend on it; a ``bedrock``
        source, a ``max_records`` cap and a source under 64 MiB are prepared in one process. (templated)
    :param quotas: :class:`~bedrock_batch.config.QuotaConfig`, :class:`~bedrock_batch.config.QuotaSettings`
        or a mapping of overrides.
    :param prompts_root: directory of prompt templates; default ``include/prompts``. (templated)
    :param output_tokens_estimate: ``max_tokens`` (each record's limit, an upper bound) or ``history``
        (earlier runs' average, read from the run reports under ``results_uri``). (templated)
    :param results_uri: the pipeline's results root, where the earlier run reports are; only read for
        ``history``. (templated)
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
        "prompt_columns",
        "passthrough_columns",
        "reply_schema",
        "reply_schema_name",
        "structured_output",
        "partition",
        "invocation_type",
        "model_family",
        "max_tokens",
        "temperature",
        "max_records",
        "prepare_processes",
        "prompts_root",
        "output_tokens_estimate",
        "results_uri",
        *STORAGE_TEMPLATE_FIELDS,
    )
    template_fields_renderers = {"prompt_columns": "json", "reply_schema": "json"}
    ui_color = "#c8e6c9"

    def __init__(
        self,
        *,
        source_uri: str,
        source_format: str,
        staging_uri: str,
        model_id: str,
        prompt_name: str | None = None,
        prompt_version: str = "v1",
        id_column: str = "id",
        text_column: str | None = None,
        prompt_columns: Mapping[str, str] | None = None,
        passthrough_columns: Sequence[str] = (),
        reply_schema: Mapping[str, Any] | str | None = None,
        reply_schema_name: str | None = None,
        structured_output: str = "auto",
        partition: str = "{{ ds }}",
        invocation_type: str = "InvokeModel",
        model_family: str | None = None,
        max_tokens: int = 1024,
        temperature: float | None = None,
        max_records: int | str = 0,
        prepare_processes: int | str = 0,
        quotas: QuotasArgument = None,
        prompts_root: str | None = None,
        output_tokens_estimate: str = "max_tokens",
        results_uri: str | None = None,
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
        self.prompt_columns = prompt_columns
        self.passthrough_columns = passthrough_columns
        self.reply_schema = reply_schema
        self.reply_schema_name = reply_schema_name
        self.structured_output = structured_output
        self.partition = partition
        self.invocation_type = invocation_type
        self.model_family = model_family
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.max_records = max_records
        self.prepare_processes = prepare_processes
        self.quotas = quotas
        self.prompts_root = prompts_root
        self.output_tokens_estimate = output_tokens_estimate
        self.results_uri = results_uri

    def resolve_arguments(self) -> None:
        """Coerce and check the scalar arguments once templates are rendered (they may arrive as strings);
        a :class:`~bedrock_batch.errors.ConfigError` names the argument and the value."""
        self.invocation_type = as_choice("invocation_type", self.invocation_type, INVOCATION_TYPES)
        self.model_family = as_optional_str(self.model_family)
        self.prompt_name = as_optional_str(self.prompt_name)
        if self.prompt_name is None and self.source_format != "bedrock":
            raise ConfigError(f"prompt_name is required for a {self.source_format!r} source")
        self.text_column = as_optional_str(self.text_column)
        self.partition = as_date("partition", self.partition)
        self.reply_schema_name = as_optional_str(self.reply_schema_name)
        self.structured_output = as_choice(
            "structured_output", str(self.structured_output).strip(), STRUCTURED_OUTPUT_CHOICES
        )
        self.max_tokens = as_int("max_tokens", self.max_tokens, minimum=1)
        self.temperature = as_optional_float("temperature", self.temperature, minimum=0)
        self.max_records = as_int("max_records", self.max_records or 0, minimum=0)
        self.prepare_processes = as_int("prepare_processes", self.prepare_processes or 0, minimum=0)
        self.prompts_root = as_optional_str(self.prompts_root)
        self.output_tokens_estimate = as_choice(
            "output_tokens_estimate", str(self.output_tokens_estimate).strip(), OUTPUT_ESTIMATES
        )
        self.results_uri = as_optional_str(self.results_uri)

    def execute(self, context: Context) -> list[ShardDescriptor]:
        from bedrock_batch.models import InferenceParams, family_for
        from bedrock_batch.prepare_parallel import available_cpus
        from bedrock_batch.prompts import PromptTemplate, load_template
        from bedrock_batch.replies import ReplyFormat
        from bedrock_batch.sources import SourceSpec, spec_for_template

        self.resolve_arguments()
        family = family_for(self.model_id, invocation_type=self.invocation_type, override=self.model_family)
        template: PromptTemplate | None = None
        if self.source_format == "bedrock":  # finished records: no template
            if self.prompt_name is not None:
                self.log.info("A bedrock source's records are sent as they are: prompt_name is not used")
            source = SourceSpec(
                uri=self.source_uri,
                format="bedrock",
                prompt_columns=self.prompt_columns or None,
                passthrough_columns=tuple(self.passthrough_columns or ()),
            )
        else:
            assert self.prompt_name is not None  # resolve_arguments
            template = load_template(self.prompt_name, self.prompt_version, root=self.prompts_root)
            source = spec_for_template(
                template.fields,
                uri=self.source_uri,
                source_format=self.source_format,
                id_column=self.id_column,
                text_column=self.text_column,
                prompt_columns=self.prompt_columns or None,
                passthrough_columns=tuple(self.passthrough_columns or ()),
            )
        reply = ReplyFormat.declare(
            self.reply_schema,
            model_id=self.model_id,
            # Records built elsewhere carry whatever they asked for: the schema only validates the replies.
            family=None if source.format == "bedrock" else family,
            invocation_type=self.invocation_type,
            structured_output=self.structured_output,
            name=self.reply_schema_name,
            default_name=self.prompt_name or "reply",
        )
        storage = self.storage()
        history = None
        if self.output_tokens_estimate == "history":
            if self.results_uri:
                history = read_output_history(
                    storage, self.results_uri, model_id=self.model_id, before=self.partition
                )
            if history is None:
                self.log.info(
                    "No earlier run report of %s: output tokens estimated at max_tokens", self.model_id
                )
        run = stage_source(
            storage,
            source,
            run_prefix_for(self.staging_uri, self.dag_id, self.partition),
            template=template,
            model_id=self.model_id,
            quotas=quota_config_for(self.quotas, self.model_id),
            params=InferenceParams(max_tokens=self.max_tokens, temperature=self.temperature),
            invocation_type=self.invocation_type,
            family=self.model_family,
            reply=reply,
            max_records=int(self.max_records),
            history=history,
            processes=int(self.prepare_processes) or available_cpus(),
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
        estimate = CostEstimate.from_dict(run["cost_estimate"])
        self.log.info("Estimated cost before any job: %s", estimate.describe())
        metrics.emit(metrics.estimate_metrics(estimate), dag_id=self.dag_id, model_id=self.model_id)
        context["ti"].xcom_push(key=ON_DEMAND_XCOM_KEY, value=run["on_demand_uris"])
        context["ti"].xcom_push(key=RUN_XCOM_KEY, value=run)
        return run["shards"]
