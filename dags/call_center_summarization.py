"""Call-center summarization: the airflow DAG of include/pipelines/call_center_summarization/ (its README.md is
the DAG's documentation; docs/pipelines.md describes the folder)."""

from bedrock_batch.factory import pipeline_dag

dag = pipeline_dag("call_center_summarization")
