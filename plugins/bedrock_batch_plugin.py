"""Airflow plugin entry point for the bedrock_batch toolkit.

Registers the operator extra links so the UI can render them for serialized DAGs, and the "Bedrock batch"
page: a FastAPI app mounted on the API server at ``/bedrock-batch`` and an entry in the UI's navigation that
shows it (docs/ui.md).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

# dashboard.app imports no Airflow module at import time, and builds nothing until its first request: this
# file is loaded by every Airflow component.
from bedrock_batch.dashboard.app import URL_PREFIX, create_app

# links.py is import-light (no hooks, no boto3 clients).
from bedrock_batch.links import BedrockBatchJobLink, BedrockBatchOutputLink


class BedrockBatchPlugin(AirflowPlugin):
    """Makes the toolkit's operator extra links and its Bedrock batch page known to Airflow."""

    name = "bedrock_batch"
    operator_extra_links = [BedrockBatchJobLink(), BedrockBatchOutputLink()]
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Bedrock batch"}]
    # An entry of the UI's Browse menu that opens the page by itself. Not a url_route (the page framed inside
    # the UI): the UI frames plugin views in a sandbox that may neither navigate the window nor open a tab, so
    # the page's links to DAG runs, task logs and the Bedrock console would be dead there.
    external_views = [
        {"name": "Bedrock batch", "href": f"{URL_PREFIX}/", "destination": "nav", "category": "browse"}
    ]
