"""Airflow plugin entry point for the bedrock_batch toolkit.

Registers the operator extra links so the UI can render them for serialized DAGs.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class BedrockBatchPlugin(AirflowPlugin):
    """Makes the toolkit's operator extra links known to the Airflow UI."""

    name = "bedrock_batch"
