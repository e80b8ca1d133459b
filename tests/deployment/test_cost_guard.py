"""The cost guard on a real scheduler: a run above its cost limit creates no job and its ``cost_guard`` task
fails saying the estimate and the limit; with approval on, ``cost_guard`` waits (``awaiting_input``, Airflow
3.3's human-in-the-loop state) until a person approves through the REST API's ``hitlDetails``, then the run
goes through and every record is published once.

Both runs set the limit through the DAG's params, as an operator triggering a run would; the session's
pipeline configuration is untouched. ``dag.test()`` cannot answer a human-in-the-loop request: only a
deployment shows the wait and the resume.
"""

from __future__ import annotations

import time

import pytest

from bedrock_batch.estimate import CostEstimate
from bedrock_batch_dev.deployment.local_setup import write_sample_calls
from tests.deployment.checks import (
    DAG_ID,
    assert_every_record_published_once,
    assert_no_duplicate_jobs,
    logical_date_of,
    task_states,
)
from tests.deployment.scenarios import task_log

pytestmark = pytest.mark.deployment

# Far below any run's estimate: 120 calls of a priced model cost a few cents.
LIMIT = 0.0001
# One job of 100 records (DEPLOYMENT_CONFIG) and 20 on demand.
CALLS = 120
# Every test of the tier runs on the session's one Airflow: each uses logical dates no other test uses
# (test_faults.py takes 2026-04-01 to 2026-04-08).


def test_above_the_limit_the_run_creates_no_job_and_says_why(live):
    client = live.client
    ds = "2026-04-20"
    write_sample_calls(live.s3, live.config, ds, CALLS)

    started = time.monotonic()
    run = client.trigger(DAG_ID, logical_date=logical_date_of(ds), conf={"max_estimated_cost_usd": LIMIT})
    run = client.wait_for_run(DAG_ID, run["dag_run_id"], timeout=180)
    print(f"\nrun above its cost limit: {time.monotonic() - started:.1f} s")

    assert run["state"] == "failed"
    states = task_states(client, run)
    assert states["prepare[-1]"] == ("success", 1)
    assert states["cost_guard[-1]"] == ("failed", 1)  # no retry: it would estimate the same
    assert states["on_demand[-1]"][0] == "upstream_failed"
    assert live.admin.jobs() == []
    assert live.admin.created_job_count() == 0
    assert live.admin.requests("InvokeModel") == []
    estimate = CostEstimate.from_dict(
        client.xcom(DAG_ID, run["dag_run_id"], "prepare", key="run")["cost_estimate"]
    )
    assert estimate.records == CALLS
    log = task_log(client, run, "cost_guard", 1)
    assert (
        f"estimated cost {estimate.cost_text} is above max_estimated_cost_usd $0.0001; no job was created"
        in log
    )


def test_with_approval_the_run_waits_for_a_person_then_proceeds(live):
    client = live.client
    ds = "2026-04-21"
    call_ids = write_sample_calls(live.s3, live.config, ds, CALLS)

    started = time.monotonic()
    run = client.trigger(
        DAG_ID,
        logical_date=logical_date_of(ds),
        conf={"max_estimated_cost_usd": LIMIT, "cost_approval": True},
    )
    run_id = str(run["dag_run_id"])
    client.wait_for_task_state(DAG_ID, run_id, "cost_guard", {"awaiting_input"}, timeout=120)

    # Waiting: the request is listed for the run, unanswered, and nothing that costs money has started.
    [request] = client.hitl_details(DAG_ID, run_id)
    assert request["task_instance"]["task_id"] == "cost_guard"
    assert (request["options"], request["response_received"]) == (["Approve", "Reject"], False)
    assert request["subject"].endswith(f"for {DAG_ID}, above its limit of $0.0001")
    assert f"| records | {CALLS} (20 on demand) |" in request["body"]
    assert live.admin.created_job_count() == 0
    assert task_states(client, run)["on_demand[-1]"][0] is None  # its upstream, cost_guard, waits
    assert client.dag_run(DAG_ID, run_id)["state"] == "running"

    answer = client.respond_hitl(DAG_ID, run_id, "cost_guard", ["Approve"])
    assert answer["chosen_options"] == ["Approve"]
    assert client.hitl_detail(DAG_ID, run_id, "cost_guard")["response_received"] is True

    run = client.wait_for_run(DAG_ID, run_id, timeout=240)
    print(f"\nrun approved and published: {time.monotonic() - started:.1f} s")
    assert run["state"] == "success", task_states(client, run)
    guard = client.xcom(DAG_ID, run_id, "cost_guard")
    assert (guard["verdict"], guard["approved_by"]) == ("approved", answer["responded_by"]["name"])
    accounting = assert_every_record_published_once(live.s3, live.config, ds, call_ids, run)
    assert accounting.count("succeeded") == CALLS
    assert_no_duplicate_jobs(client, live.admin, [run], model_id=live.config["model_id"])
    assert live.admin.created_job_count() == 1
    report = client.xcom(DAG_ID, run_id, "publish")
    assert (report["cost_estimate"]["records"], report["accounted"]) == (CALLS, True)
