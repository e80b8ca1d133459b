"""Test DAGs for SourcePartitionSensor: one sensor task waiting for the run conf's source URI.

Run by tests/integration/test_source_sensor.py.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG

from bedrock_batch.sensors import SourcePartitionSensor


def sensor_dag(dag_id: str, **options: Any) -> DAG:
    """A DAG whose ``wait`` task waits for ``params.source_uri`` (set with ``run_conf``)."""
    with DAG(
        dag_id,
        schedule=None,
        params={"source_uri": ""},
        doc_md=f"Runs SourcePartitionSensor on the run conf's URI with {sorted(options)}.",
        tags=["test", "bedrock_batch"],
    ) as dag:
        SourcePartitionSensor(task_id="wait", source_uri="{{ params.source_uri }}", retries=0, **options)
    return dag


deferrable = sensor_dag("bb_source_deferrable", deferrable=True, poke_interval=0.5, timeout=60)
deferrable_timeout = sensor_dag("bb_source_deferrable_timeout", deferrable=True, poke_interval=0.5, timeout=2)
reschedule = sensor_dag("bb_source_reschedule", mode="reschedule", poke_interval=0.5, timeout=60)
# Hours of patience: a location that can never hold the partition must fail long before this.
patient = sensor_dag("bb_source_patient", deferrable=True, poke_interval=0.5, timeout=6 * 3600)
patient_reschedule = sensor_dag(
    "bb_source_patient_reschedule", mode="reschedule", poke_interval=0.5, timeout=6 * 3600
)
