"""
### Call-center summarization with Amazon Bedrock batch inference

Every day, summarize the previous day's (the run's `ds`) call-center transcripts with a Bedrock model in batch mode (half
the on-demand price) and publish one row per call to the `call_summaries` table.

| task | stage | what it does |
|---|---|---|
| `wait_for_source` | arrival | waits (deferred) until the day's source partition exists |
| `prepare` | prepare, split, upload | streams the transcripts into batch records with the reply schema (`include/pipelines/call_center_summarization/reply_schema.json`) the way the model takes it, quarantines bad rows, plans shards within every service quota, uploads them |
| `submit` | submit, wait | one job per shard (mapped), idempotent, never more than the model's concurrency quota; waits deferred |
| `on_demand` | fallback | records too few for a job (under the service minimum) go through InvokeModel |
| `collect` | collect | joins outputs to the source rows, validating every summary against the reply schema; stages retryable failures (throttling, 5xx, missing) as a retry round |
| `submit_retry`, `on_demand_retry` | retry | the retry round, as a job or on demand depending on its size |
| `publish` | publish | writes `call_summaries/ds=<ds>/` atomically and the run report (and registers the partition in Glue when `glue_database` is set); emits the `call_summaries` asset |

Defaults come from `include/config/call_center_summarization.json`; every value can be overridden per run
through the params. `source_uri` may contain `{ds}`, replaced by the run's date. Every input row ends in the
table exactly once: `succeeded`, `invalid_output` (a summary that breaks the reply schema: `parse_error` says
where, `raw_text` keeps it), `failed` with its error code, or `quarantined` with a reason.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param

from bedrock_batch.config import PipelineConfig
from bedrock_batch.operators import (
    BedrockBatchCollectOperator,
    BedrockBatchPrepareOperator,
    BedrockBatchPublishOperator,
    BedrockBatchSubmitOperator,
    BedrockOnDemandOperator,
)
from bedrock_batch.resources import include_path
from bedrock_batch.sensors import SourcePartitionSensor

# One file configures both environments; CALL_CENTER_CONFIG points a deployment (or a test) at another one.
# include_path finds the project's include/ beside or inside the DAGs folder (bedrock_batch.resources).
CONFIG = PipelineConfig.load(
    os.environ.get("CALL_CENTER_CONFIG") or include_path("config", "call_center_summarization.json")
)
CALL_SUMMARIES = Asset(name="call_summaries", uri=CONFIG.table_uri("call_summaries"))

CONN = "{{ params.aws_conn_id }}"
RUN_PREFIX = "{{ params.staging_uri.rstrip('/') }}/call_center_summarization/{{ ds }}"
# Found in the project's include/ when the task runs (bedrock_batch.resources).
REPLY_SCHEMA = "pipelines/call_center_summarization/reply_schema.json"
# Every task that touches S3 checks the owner of each bucket (ExpectedBucketOwner) and encrypts what it writes
# with the configured key; the jobs get the same key for their output and the staging bucket's owner.
BUCKET_OWNERS: dict[str, Any] = {
    "expected_bucket_owner": CONFIG.expected_bucket_owner,
    "bucket_owners": dict(CONFIG.bucket_owners),
}
STORAGE_SETTINGS: dict[str, Any] = {"kms_key_id": CONFIG.kms_key_id, **BUCKET_OWNERS}
STAGING_OWNER = (
    "{{ bucket_owner(params.staging_uri) }}" if CONFIG.expected_bucket_owner or CONFIG.bucket_owners else None
)

with DAG(
    dag_id="call_center_summarization",
    description="Summarize yesterday's call transcripts with Bedrock batch inference",
    # A data-interval timetable: the 06:00 run on day D covers D-1 06:00 to D 06:00, so its ds is D-1 and it
    # reads and publishes the previous day's partition.
    schedule=CronDataIntervalTimetable(CONFIG.schedule, timezone="UTC") if CONFIG.schedule else None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=3,
    user_defined_macros={"bucket_owner": CONFIG.bucket_owner},
    default_args={
        "owner": "data-platform",
        "retries": CONFIG.retries,
        "retry_delay": timedelta(seconds=CONFIG.retry_delay_seconds),
    },
    params={
        "source_uri": Param(
            CONFIG.source_uri, type="string", description="S3 prefix or local path; {ds} is the date"
        ),
        "source_format": Param(CONFIG.source_format, enum=["text", "jsonl", "csv", "parquet", "transcribe"]),
        "staging_uri": Param(CONFIG.staging_uri, type="string"),
        "results_uri": Param(CONFIG.results_uri, type="string"),
        "model_id": Param(CONFIG.model_id, type="string"),
        "role_arn": Param(CONFIG.role_arn, type="string"),
        "aws_conn_id": Param(CONFIG.aws_conn_id, type="string"),
        "max_records": Param(CONFIG.max_records, type="integer", minimum=0, description="0 reads every row"),
        "prompt_version": Param(CONFIG.prompt_version, type="string"),
    },
    tags=["bedrock", "batch-inference", "call-center"],
    doc_md=__doc__,
) as dag:
    wait_for_source = SourcePartitionSensor(
        task_id="wait_for_source",
        source_uri="{{ params.source_uri | replace('{ds}', ds) }}",
        aws_conn_id=CONN,
        **BUCKET_OWNERS,
        deferrable=True,
        poke_interval=CONFIG.source_poke_interval_seconds,
        timeout=CONFIG.source_timeout_hours * 3600,
    )
    prepare = BedrockBatchPrepareOperator(
        task_id="prepare",
        source_uri="{{ params.source_uri | replace('{ds}', ds) }}",
        source_format="{{ params.source_format }}",
        staging_uri="{{ params.staging_uri }}",
        model_id="{{ params.model_id }}",
        prompt_name=CONFIG.prompt_name,
        prompt_version="{{ params.prompt_version }}",
        id_column=CONFIG.id_column,
        text_column=CONFIG.text_column,
        passthrough_columns=CONFIG.passthrough_columns,
        reply_schema=REPLY_SCHEMA,
        invocation_type=CONFIG.invocation_type,
        max_tokens=CONFIG.max_tokens,
        max_records="{{ params.max_records }}",
        quotas=CONFIG.quotas,
        aws_conn_id=CONN,
        **STORAGE_SETTINGS,
    )
    job_settings = {
        "model_id": "{{ params.model_id }}",
        "role_arn": "{{ params.role_arn }}",
        "invocation_type": CONFIG.invocation_type,
        "timeout_hours": CONFIG.timeout_hours,
        "poll_interval": CONFIG.poll_interval_seconds,
        "quotas": CONFIG.quotas,
        # One slot folder per staging location: every run of every DAG staging there shares the model's
        # max_concurrent_jobs exactly, even when many submit tasks start at the same moment.
        "job_slots_uri": "{{ params.staging_uri.rstrip('/') }}/_job_slots/",
        "deferrable": True,
        "aws_conn_id": CONN,
        "output_kms_key_id": CONFIG.kms_key_id,
        "input_bucket_owner": STAGING_OWNER,
        "output_bucket_owner": STAGING_OWNER,
        **({"pool": CONFIG.pool} if CONFIG.pool else {}),
        # Past it the job is stopped and the task fails without a retry (a retry would pay for the shard again).
        "execution_timeout": timedelta(minutes=CONFIG.job_wait_timeout_minutes)
        if CONFIG.job_wait_timeout_minutes
        else None,
    }
    on_demand_settings = {
        "model_id": "{{ params.model_id }}",
        "invocation_type": CONFIG.invocation_type,
        "requests_per_second": CONFIG.on_demand_requests_per_second,
        "aws_conn_id": CONN,
        **STORAGE_SETTINGS,
    }
    submit = BedrockBatchSubmitOperator.partial(task_id="submit", **job_settings).expand(shard=prepare.output)
    on_demand = BedrockOnDemandOperator(
        task_id="on_demand",
        input_uris=prepare.output["on_demand_uris"],
        output_uri=f"{RUN_PREFIX}/on-demand-output/",
        **on_demand_settings,
    )
    collect = BedrockBatchCollectOperator(
        task_id="collect",
        prepared=prepare.output["run"],
        jobs=submit.output,
        on_demand=on_demand.output,
        quotas=CONFIG.quotas,
        aws_conn_id=CONN,
        **STORAGE_SETTINGS,
        trigger_rule="none_failed",
    )
    submit_retry = BedrockBatchSubmitOperator.partial(task_id="submit_retry", **job_settings).expand(
        shard=collect.output
    )
    on_demand_retry = BedrockOnDemandOperator(
        task_id="on_demand_retry",
        input_uris=collect.output["retry_on_demand"],
        output_uri=f"{RUN_PREFIX}/retry-1/on-demand-output/",
        **on_demand_settings,
    )
    publish = BedrockBatchPublishOperator(
        task_id="publish",
        prepared=prepare.output["run"],
        jobs=submit.output,
        on_demand=on_demand.output,
        retry_jobs=submit_retry.output,
        retry_on_demand=on_demand_retry.output,
        collected=collect.output["round"],
        results_uri="{{ params.results_uri }}",
        table_name="call_summaries",
        key_column="call_id",
        glue_database=CONFIG.glue_database,
        glue_table=CONFIG.glue_table,
        aws_conn_id=CONN,
        **STORAGE_SETTINGS,
        outlets=[CALL_SUMMARIES],
        trigger_rule="none_failed",
    )
    wait_for_source >> prepare
