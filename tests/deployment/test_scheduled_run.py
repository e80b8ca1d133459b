"""The call-center pipeline on a real scheduler: a run of a fixed date through the REST API, its asset event
and the KPI DAG that event triggers, then the fault matrix's two checks.

``dag.test()`` runs tasks one at a time in one process; here the Celery executor spreads the mapped submit
tasks over two workers, the waits defer to the triggerer, and the asset-triggered run is created by the
scheduler — the path ``dag.test()`` never takes.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from bedrock_batch_dev.deployment.local_setup import write_sample_calls
from tests.deployment.checks import (
    DAG_ID,
    KPI_DAG_ID,
    assert_every_record_published_once,
    assert_no_duplicate_jobs,
    assert_no_task_retried,
    logical_date_of,
    parse_time,
    planned_shards,
    read_kpis,
    task_states,
)

pytestmark = pytest.mark.deployment

DS = "2026-03-02"
# Two jobs of 100 records (DEPLOYMENT_CONFIG) and 50 for the on-demand fallback.
CALLS = 250


def test_scheduled_run(live):
    client = live.client
    call_ids = write_sample_calls(live.s3, live.config, DS, CALLS)
    kpi_runs_before = [run["dag_run_id"] for run in client.dag_runs(KPI_DAG_ID)]

    started = time.monotonic()
    run = client.trigger(DAG_ID, logical_date=logical_date_of(DS))
    run = client.wait_for_run(DAG_ID, run["dag_run_id"], timeout=240)
    elapsed = time.monotonic() - started
    assert run["state"] == "success", task_states(client, run)
    print(f"\n{DAG_ID} run of {DS}: {elapsed:.1f} s")
    # The daily timetable's interval: the 06:00 run of D+1 covers D.
    assert (run["data_interval_start"], run["data_interval_end"]) == (
        "2026-03-01T06:00:00Z",
        "2026-03-02T06:00:00Z",
    )
    assert_no_task_retried(client, run)
    submits = client.task_instances(DAG_ID, run["dag_run_id"], "submit")
    assert sorted(ti["map_index"] for ti in submits) == [0, 1]

    # Results: every call once, all succeeded, the run report accounted.
    accounting = assert_every_record_published_once(live.s3, live.config, DS, call_ids, run)
    assert accounting.count("succeeded") == CALLS
    report = client.xcom(DAG_ID, run["dag_run_id"], "publish")
    assert report["accounted"] is True
    assert (report["input_records"], report["succeeded"]) == (CALLS, CALLS)

    # The asset event publish emitted, and the KPI run the scheduler created from it.
    events = client.asset_events(source_dag_id=DAG_ID, source_run_id=run["dag_run_id"])
    assert [event["name"] for event in events] == ["call_summaries"]
    assert events[0]["extra"]["ds"] == DS
    assert events[0]["extra"]["rows"] == CALLS
    kpi_run = client.wait_for_new_run(KPI_DAG_ID, after=kpi_runs_before, timeout=60)
    assert kpi_run["run_type"] == "asset_triggered"
    kpi_run = client.wait_for_run(KPI_DAG_ID, kpi_run["dag_run_id"], timeout=120)
    assert kpi_run["state"] == "success", task_states(client, kpi_run)
    upstream = client.get(f"/api/v2/dags/{KPI_DAG_ID}/dagRuns/{kpi_run['dag_run_id']}/upstreamAssetEvents")
    assert [event["id"] for event in upstream["asset_events"]] == [events[0]["id"]]
    written = client.xcom(KPI_DAG_ID, kpi_run["dag_run_id"], "compute_kpis")
    assert written["ds"] == DS
    assert written["kpi_uri"].startswith(f"{live.config['results_uri']}/call_summary_kpis/ds={DS}/")
    kpis = read_kpis(live.s3, written["kpi_uri"])
    assert [(row["ds"], row["calls"], row["succeeded"]) for row in kpis] == [(DS, CALLS, CALLS)]

    # The fault matrix's checks: no duplicate job, every record once (above).
    shards = planned_shards(client, run)
    assert [shard["records"] for shard in shards] == [100, 100]
    assert_no_duplicate_jobs(client, live.admin, [run], model_id=live.config["model_id"])
    assert len(live.admin.jobs()) == len(shards)


def test_run_without_a_logical_date_processes_the_previous_day(live):
    # Triggered as the UI's "Trigger" button or an API client without a date does: no logical date, so no
    # ds; the pipeline states which partition such a run processes (the day before the run, UTC).
    client = live.client
    run = client.trigger(DAG_ID, logical_date=None)
    assert run["logical_date"] is None
    ds = (parse_time(run["run_after"]) - timedelta(days=1)).date().isoformat()
    call_ids = write_sample_calls(live.s3, live.config, ds, 120)  # one job and 20 on demand

    run = client.wait_for_run(DAG_ID, run["dag_run_id"], timeout=240)
    assert run["state"] == "success", task_states(client, run)
    assert_no_task_retried(client, run)
    events = client.asset_events(source_dag_id=DAG_ID, source_run_id=run["dag_run_id"])
    assert [(event["extra"]["ds"], event["extra"]["rows"]) for event in events] == [(ds, len(call_ids))]
    accounting = assert_every_record_published_once(live.s3, live.config, ds, call_ids, run)
    assert accounting.count("succeeded") == len(call_ids)
    assert_no_duplicate_jobs(client, live.admin, [run], model_id=live.config["model_id"])
