"""The airflow DAG of include/pipelines/product_reviews/ (docs/pipelines.md describes the folder)."""

from bedrock_batch.factory import pipeline_dag

dag = pipeline_dag("product_reviews")
