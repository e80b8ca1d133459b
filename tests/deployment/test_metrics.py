"""The metrics of one call-center run of the real deployment arrive on a StatsD listener with the documented
names and the values of the run report and the emulator's jobs.

Every component has ``[metrics] statsd_on`` pointed at the session's port (conftest.STATSD_PORT). The record,
token and cost counters come from the Celery workers' task processes (publish; submit for the records
submitted): each line arrives from the socket the Task SDK's own ``ti.start`` of that task's process came from
(every try and every resumption after a deferral is a process of its own). The job timers
come from the triggerer's trigger process, which owns the socket they arrive from.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import psutil
import pytest

from bedrock_batch.metrics import micro_usd, name_part
from bedrock_batch_dev.deployment.local_setup import write_sample_calls
from tests.deployment.checks import DAG_ID, logical_date_of, task_states
from tests.deployment.conftest import STATSD_PORT
from tests.statsd_listener import PREFIX, StatsdListener

pytestmark = pytest.mark.deployment

DS = "2026-03-09"
# Two jobs of 100 records (DEPLOYMENT_CONFIG) and 50 for the on-demand fallback.
CALLS = 250
METRICS = f"{PREFIX}.bedrock_batch."
COUNTERS = {
    "records.succeeded": "succeeded",
    "records.failed": "failed",
    "records.quarantined": "quarantined",
    "records.invalid_output": "invalid_output",
    "tokens.input": "input_tokens",
    "tokens.output": "output_tokens",
}


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def udp_ports(processes: Iterable[psutil.Process]) -> set[int]:
    """The local ports of the UDP sockets ``processes`` hold now."""
    ports: set[int] = set()
    for proc in processes:
        try:
            ports |= {conn.laddr.port for conn in proc.net_connections(kind="udp4") if conn.laddr}
        except psutil.Error:
            continue
    return ports


def task_process_ports(listener: StatsdListener, task_id: str) -> set[int]:
    """The sockets of ``task_id``'s task processes: where the Task SDK's ``ti.start`` of each arrived from."""
    name = f"{PREFIX}.ti.start.{DAG_ID}.{task_id}"
    return {line.source_port for line in listener.lines(name) if line.name == name}


def test_one_run_of_the_deployment_sends_its_metrics(live: Any) -> None:
    client = live.client
    with StatsdListener(STATSD_PORT) as statsd:
        write_sample_calls(live.s3, live.config, DS, CALLS)
        run = client.trigger(DAG_ID, logical_date=logical_date_of(DS))
        run = client.wait_for_run(DAG_ID, run["dag_run_id"], timeout=240)
        assert run["state"] == "success", task_states(client, run)
        report = client.xcom(DAG_ID, run["dag_run_id"], "publish")
        jobs = live.admin.jobs()
        assert len(jobs) == 2
        per_name = f".{DAG_ID}.{name_part(str(live.config['model_id']))}"
        statsd.wait_for(
            lambda listener: (
                {METRICS + "records.succeeded" + per_name, f"{PREFIX}.ti.start.{DAG_ID}.publish"}
                <= set(listener.totals())
                and len(listener.values(METRICS + "job.duration")) == len(jobs)
            ),
            timeout=30,
        )
        triggerer_ports = udp_ports(live.deployment.process("triggerer").members())

    totals = statsd.totals(METRICS)
    # The published run's counters: the run report's values, under both names.
    assert report["accounted"] is True
    assert report["succeeded"] == CALLS
    expected = {name: report[key] for name, key in COUNTERS.items()}
    expected["cost.estimated_micro_usd"] = micro_usd(Decimal(report["estimated_cost_usd"]))
    estimate = report["cost_estimate"]["estimated_cost_usd"]
    expected["cost.run_estimate_micro_usd"] = micro_usd(Decimal(estimate))
    expected["records.submitted"] = sum(job["totalRecordCount"] for job in jobs)
    assert expected["records.submitted"] == 200
    for name, value in expected.items():
        assert totals[METRICS + name] == value, name
        assert totals[METRICS + name + per_name] == value, name

    # Each job's duration, from the service's times; a queue time only for a job a wait saw running.
    durations = sorted((parse(j["endTime"]) - parse(j["submitTime"])).total_seconds() * 1000 for j in jobs)
    assert sorted(statsd.values(METRICS + "job.duration")) == pytest.approx(durations, abs=0.001)
    queue_times = {
        round((parse(h["time"]) - parse(j["submitTime"])).total_seconds() * 1000, 3)
        for j in jobs
        for h in j["history"]
        if h["status"] == "InProgress"
    }
    assert {round(v, 3) for v in statsd.values(METRICS + "job.queue_time")} <= queue_times
    assert statsd.values(METRICS + "job_slot.waits") == []
    assert statsd.values(METRICS + "throttled_calls") == []

    # Who sent them: the publish and submit task processes of the Celery workers, and the triggerer.
    publish_ports = task_process_ports(statsd, "publish")
    submit_ports = task_process_ports(statsd, "submit")
    assert len(publish_ports) == 1
    assert len(submit_ports) >= 2, "a task process per mapped submit (and per resumption)"
    for line in statsd.lines(METRICS + "records."):
        wanted = submit_ports if line.name.startswith(METRICS + "records.submitted") else publish_ports
        assert line.source_port in wanted, line
    for line in statsd.lines(METRICS + "tokens.") + statsd.lines(METRICS + "cost.estimated_"):
        assert line.source_port in publish_ports, line
    # The estimate made before any job comes from the prepare task.
    prepare_ports = task_process_ports(statsd, "prepare")
    for line in statsd.lines(METRICS + "cost.run_estimate_"):
        assert line.source_port in prepare_ports, line
    timers = statsd.lines(METRICS + "job.")
    assert {line.source_port for line in timers} <= triggerer_ports, (timers, triggerer_ports)
    assert not triggerer_ports & (publish_ports | submit_ports)
