"""Test DAGs of the prepare stage alone, in one process and in two: the same JSONL source, staged under each
DAG's own prefix. Run by tests/e2e/test_parallel_prepare.py, which compares what the two staged.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG

from bedrock_batch.operators import BedrockBatchPrepareOperator

INCLUDE = Path(__file__).resolve().parent / "include"


def prepare_only(dag_id: str, processes: int) -> DAG:
    """One prepare task over ``params.source_uri`` (JSONL reviews) with ``processes`` processes."""
    with DAG(
        dag_id,
        schedule=None,
        params={"source_uri": "s3://reviews/", "staging_uri": "s3://staging/parallel"},
        default_args={"retries": 0},
        tags=["test", "bedrock_batch"],
        doc_md=__doc__,
    ) as dag:
        BedrockBatchPrepareOperator(
            task_id="prepare",
            source_uri="{{ params.source_uri }}",
            source_format="jsonl",
            staging_uri="{{ params.staging_uri }}",
            model_id="anthropic.claude-3-haiku-20240307-v1:0",
            prompt_name="review_classification",
            prompts_root=str(INCLUDE / "prompts"),
            id_column="review_id",
            prompt_columns={"title": "title", "review": "review_text"},
            passthrough_columns=["rating"],
            prepare_processes=processes,
            quotas={"min_records_per_job": 10, "max_records_per_job": 120, "max_records_per_file": 50},
        )
    return dag


prepare_one_process = prepare_only("prepare_one_process", 1)
prepare_two_processes = prepare_only("prepare_two_processes", 2)
