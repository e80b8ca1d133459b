"""Test DAG: the amazon provider's own BedrockBatchInferenceOperator, unmodified, against the emulator.

Job name and S3 locations come from the run conf; run by tests/integration/test_emulator_provider.py.
"""

from __future__ import annotations

from airflow.providers.amazon.aws.operators.bedrock import BedrockBatchInferenceOperator
from airflow.sdk import DAG

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE_ARN = "arn:aws:iam::123456789012:role/BedrockBatchServiceRole"

with DAG(
    "emulator_provider_batch_inference",
    schedule=None,
    params={"job_name": "", "input_uri": "", "output_uri": ""},
    default_args={"owner": "bedrock-batch", "retries": 0},
    doc_md="One BedrockBatchInferenceOperator task, blocking on the provider's own waiter.",
    tags=["test", "emulator"],
) as dag:
    BedrockBatchInferenceOperator(
        task_id="batch_inference",
        job_name="{{ params.job_name }}",
        role_arn=ROLE_ARN,
        model_id=MODEL_ID,
        input_uri="{{ params.input_uri }}",
        output_uri="{{ params.output_uri }}",
        deferrable=False,
        wait_for_completion=True,
        # The emulator runs at a high time scale: poll every second instead of the default minute.
        waiter_delay=1,
        waiter_max_attempts=60,
    )
