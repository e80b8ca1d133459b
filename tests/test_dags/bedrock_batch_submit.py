"""Test DAGs for BedrockBatchSubmitOperator: one submit task mapped over shard descriptors from the run conf.

Variants differ only in the operator options a test needs; run by tests/integration/test_submit_operator.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, task

from bedrock_batch.operators import BedrockBatchSubmitOperator

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE_ARN = "arn:aws:iam::123456789012:role/BedrockBatchServiceRole"


def submit_dag(dag_id: str, **submit_options: Any) -> DAG:
    """A DAG whose ``submit`` task is mapped over ``params.shards`` (set with ``run_conf``)."""
    with DAG(
        dag_id,
        schedule=None,
        params={"shards": []},
        doc_md=f"Maps BedrockBatchSubmitOperator over the run conf's shards with {sorted(submit_options)}.",
        tags=["test", "bedrock_batch"],
    ) as dag:

        @task
        def shards(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
            return list((params or {})["shards"])

        BedrockBatchSubmitOperator.partial(
            task_id="submit",
            model_id=MODEL_ID,
            role_arn=ROLE_ARN,
            poll_interval=0.1,
            **{"retries": 0, **submit_options},
        ).expand(shard=shards())
    return dag


deferrable = submit_dag("bb_submit_deferrable", deferrable=True, quotas={"max_concurrent_jobs": 2})
blocking = submit_dag("bb_submit_blocking", deferrable=False)
no_client_retries = submit_dag(
    "bb_submit_no_client_retries", deferrable=True, botocore_config={"retries": {"total_max_attempts": 1}}
)
strict = submit_dag("bb_submit_strict", deferrable=True, strict=True)
# Retries on purpose: a timeout that stopped the job must not be retried (a retry pays for the shard again).
short_timeout = submit_dag(
    "bb_submit_short_timeout",
    deferrable=False,
    timeout_hours=24,
    execution_timeout=timedelta(seconds=3),
    retries=2,
    retry_delay=timedelta(seconds=0),
)
expiring = submit_dag("bb_submit_expiring", deferrable=True, timeout_hours=24)
