"""Airflow plugin entry point for the bedrock_batch toolkit.

Registers the operator extra links so the UI can render them for serialized DAGs.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

# links.py is import-light (no hooks, no boto3 clients): this file is loaded by every Airflow component.
from bedrock_batch.links import BedrockBatchJobLink, BedrockBatchOutputLink


class BedrockBatchPlugin(AirflowPlugin):
    """Makes the toolkit's operator extra links known to the Airflow UI."""

    name = "bedrock_batch"
    operator_extra_links = [BedrockBatchJobLink(), BedrockBatchOutputLink()]
