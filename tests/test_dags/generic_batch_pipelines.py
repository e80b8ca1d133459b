"""Test DAGs for tasks other than call summaries: the stage operators wired by hand, as a DAG factory would.

- ``review_classification``: Parquet reviews, two prompt columns, a reply schema with an enum, a number range,
  an array of objects and a nested object; the structured-output mode and the model come from the params.
- ``review_classification_repaired``: the same with the repair round before publish.
- ``bedrock_records``: records already in Bedrock's format, only split, submitted and validated.

The prompt template and the reply schema live beside this file, under ``include/``. Run by
tests/e2e/test_generic_pipelines.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import DAG

from bedrock_batch.operators import (
    BedrockBatchCollectOperator,
    BedrockBatchPrepareOperator,
    BedrockBatchPublishOperator,
    BedrockBatchRepairOperator,
    BedrockBatchSubmitOperator,
    BedrockOnDemandOperator,
)

INCLUDE = Path(__file__).resolve().parent / "include"
REVIEW_SCHEMA = str(INCLUDE / "pipelines" / "review_classification" / "reply_schema.json")
ROLE_ARN = "arn:aws:iam::123456789012:role/BedrockBatchServiceRole"
RUN_PREFIX = "{{ params.staging_uri.rstrip('/') }}/{{ dag.dag_id }}/{{ ds }}"


def pipeline(dag_id: str, *, repair: bool = False, **prepare_options: Any) -> DAG:
    """prepare → submit (mapped), on_demand → collect → submit_retry, on_demand_retry → [repair] → publish."""
    with DAG(
        dag_id,
        schedule=None,
        params={
            "source_uri": "s3://reviews/",
            "staging_uri": "s3://staging/generic",
            "results_uri": "s3://results/generic",
            "model_id": "anthropic.claude-3-haiku-20240307-v1:0",
            "structured_output": "auto",
            "table": dag_id,
            "key_column": "source_key",
        },
        default_args={"retries": 0},
        tags=["test", "bedrock_batch"],
        doc_md=__doc__,
    ) as dag:
        prepare = BedrockBatchPrepareOperator(
            task_id="prepare",
            source_uri="{{ params.source_uri }}",
            staging_uri="{{ params.staging_uri }}",
            model_id="{{ params.model_id }}",
            structured_output="{{ params.structured_output }}",
            prompts_root=str(INCLUDE / "prompts"),
            max_tokens=512,
            **prepare_options,
        )
        job_settings: dict[str, Any] = {
            "model_id": "{{ params.model_id }}",
            "role_arn": ROLE_ARN,
            "poll_interval": 0.1,
        }
        on_demand_settings: dict[str, Any] = {"model_id": "{{ params.model_id }}", "requests_per_second": 0}
        submit = BedrockBatchSubmitOperator.partial(task_id="submit", **job_settings).expand(
            shard=prepare.output
        )
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
        rounds: dict[str, Any] = {
            "prepared": prepare.output["run"],
            "jobs": submit.output,
            "on_demand": on_demand.output,
            "retry_jobs": submit_retry.output,
            "retry_on_demand": on_demand_retry.output,
        }
        repaired = None
        if repair:
            repaired = BedrockBatchRepairOperator(
                task_id="repair",
                output_uri=f"{RUN_PREFIX}/repair-output/",
                requests_per_second=0,
                model_id="{{ params.model_id }}",
                trigger_rule="none_failed",
                **rounds,
            )
        BedrockBatchPublishOperator(
            task_id="publish",
            collected=collect.output["round"],
            repair=repaired.output if repaired is not None else None,
            results_uri="{{ params.results_uri }}",
            table_name="{{ params.table }}",
            key_column="{{ params.key_column }}",
            trigger_rule="none_failed",
            **rounds,
        )
    return dag


REVIEWS: dict[str, Any] = {
    "source_format": "parquet",
    "prompt_name": "review_classification",
    "id_column": "review_id",
    "prompt_columns": {"title": "title", "review": "review_text"},
    "passthrough_columns": ["rating", "product_category"],
    "reply_schema": REVIEW_SCHEMA,
}

review_classification = pipeline("review_classification", **REVIEWS)
review_classification_repaired = pipeline("review_classification_repaired", repair=True, **REVIEWS)
bedrock_records = pipeline("bedrock_records", source_format="bedrock", reply_schema=REVIEW_SCHEMA)
