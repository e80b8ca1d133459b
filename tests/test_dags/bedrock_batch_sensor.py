"""Test DAGs for BedrockBatchJobSensor: one sensor task watching the job ARN given in the run conf.

Variants differ only in the sensor's mode and options; run by tests/integration/test_sensors.py.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG

from bedrock_batch.sensors import BedrockBatchJobSensor


def sensor_dag(dag_id: str, **sensor_options: Any) -> DAG:
    """A DAG whose ``wait`` task senses ``params.job_arn`` (set with ``run_conf``)."""
    with DAG(
        dag_id,
        schedule=None,
        params={"job_arn": ""},
        doc_md=f"Runs BedrockBatchJobSensor on the run conf's job with {sorted(sensor_options)}.",
        tags=["test", "bedrock_batch"],
    ) as dag:
        BedrockBatchJobSensor(
            task_id="wait", job_arn="{{ params.job_arn }}", poke_interval=0.1, retries=0, **sensor_options
        )
    return dag


poke = sensor_dag("bb_sensor_poke", mode="poke", deferrable=False)
reschedule = sensor_dag("bb_sensor_reschedule", mode="reschedule", deferrable=False)
deferrable = sensor_dag("bb_sensor_deferrable", deferrable=True)
strict = sensor_dag("bb_sensor_strict", deferrable=True, strict=True)
no_client_retries = sensor_dag(
    "bb_sensor_no_client_retries", mode="poke", botocore_config={"retries": {"total_max_attempts": 1}}
)
short_timeout = sensor_dag("bb_sensor_short_timeout", deferrable=True, timeout=1)
