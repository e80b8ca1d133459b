"""
### Call-summary KPIs

Runs whenever the `call_summaries` table gets a new partition (the `call_summaries` asset, emitted by the
`call_center_summarization` DAG's `publish` task) and writes that day's KPIs for analysts to
`<results_uri>/call_summary_kpis/ds=<ds>/`: calls, outcome counts, sentiment mix, resolution and escalation
rates, top topics, average tokens and estimated cost per call.

The partition comes from the asset event; a manual run reads the `ds` and `results_uri` params instead
(`ds` defaults to the run's logical date; a run without one needs `ds`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, Param, task

from bedrock_batch.pipelines import load_pipeline

# The call-center pipeline's settings, as its DAG reads them (include/pipelines/call_center_summarization/:
# include/config/call_center_summarization.json, or the file CALL_CENTER_CONFIG names).
CONFIG = load_pipeline("call_center_summarization").config
CALL_SUMMARIES = Asset(name="call_summaries", uri=CONFIG.table_uri("call_summaries"))
CALL_SUMMARY_KPIS = Asset(name="call_summary_kpis", uri=CONFIG.table_uri("call_summary_kpis"))

with DAG(
    dag_id="call_summary_kpis",
    description="Daily KPIs of the call summaries, for analysts",
    schedule=[CALL_SUMMARIES],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"owner": "analytics", "retries": 2, "retry_delay": timedelta(minutes=2)},
    params={
        "ds": Param(None, type=["null", "string"], description="day to compute on a manual run"),
        "results_uri": Param(CONFIG.results_uri, type="string"),
        "aws_conn_id": Param(CONFIG.aws_conn_id, type="string"),
    },
    tags=["analytics", "call-center"],
    doc_md=__doc__,
) as dag:

    @task(outlets=[CALL_SUMMARY_KPIS])
    def compute_kpis(**context: Any) -> dict[str, Any]:
        """Read the changed partition, compute its KPIs, replace that day's KPI partition."""
        from airflow.sdk.exceptions import AirflowFailException

        from bedrock_batch.hooks import BedrockBatchHook
        from bedrock_batch.kpis import publish_daily_kpis
        from bedrock_batch.storage import Storage, join_uri

        params = context["params"]
        events = context["triggering_asset_events"].get(CALL_SUMMARIES) or []
        # The day is read as published now (its current version), whatever version the event announced.
        if events:
            extra = events[-1].extra
            ds, results_uri = extra["ds"], extra["results_uri"]
        else:
            # A manual run may have no logical date (Airflow 3): then only the param names the day.
            ds, results_uri = params["ds"] or context.get("ds"), params["results_uri"]
            if not ds:
                raise AirflowFailException(
                    "no day to compute: this run has no call_summaries event and no logical date; "
                    'trigger it with the "ds" param, e.g. {"ds": "2026-11-30"}'
                )
        storage = Storage(
            BedrockBatchHook(aws_conn_id=params["aws_conn_id"]).s3_client,
            expected_bucket_owner=CONFIG.expected_bucket_owner,
            bucket_owners=CONFIG.bucket_owners,
            kms_key_id=CONFIG.kms_key_id,
        )
        written = publish_daily_kpis(
            storage, join_uri(results_uri, "call_summaries"), join_uri(results_uri, "call_summary_kpis"), ds
        )
        return {"ds": ds, "kpi_uri": written}

    compute_kpis()
