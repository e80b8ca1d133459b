"""The airflow DAG of include/pipelines/support_tickets/ (docs/pipelines.md describes the folder)."""

from bedrock_batch.factory import pipeline_dag

dag = pipeline_dag("support_tickets")
