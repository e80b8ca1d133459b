"""The metrics of one call-center run, received by a real StatsD server (a UDP socket on 127.0.0.1), checked
against the run report and the emulator's record of the job.

The run goes through ``dag.test()`` with Airflow's ``[metrics] statsd_on`` pointed at the listener: the
publish and submit tasks and the deferred wait (the trigger, run in-process) send through Airflow's Stats.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

import pytest

from bedrock_batch.metrics import micro_usd
from bedrock_batch_dev.sample_data.calls import generate_calls
from bedrock_batch_dev.sample_data.writers import write_calls
from tests.e2e.test_call_center_dag import put, read_report, run_dag, stack, use_config
from tests.statsd_listener import PREFIX, StatsdListener, stats_of_a_new_process, statsd_config

__all__ = ["stack"]  # the fixture, imported so pytest finds it here

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DS = "2026-11-23"
CALLS = 150
METRICS = f"{PREFIX}.bedrock_batch."
# Plain StatsD drops tags: each metric also arrives with the DAG and the model (MODEL_ID) in its name.
PER_DAG_AND_MODEL = ".call_center_summarization.anthropic__claude-3-haiku-20240307-v1_0"


@pytest.fixture
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[StatsdListener]:
    with StatsdListener() as listener, stats_of_a_new_process(monkeypatch, statsd_config(listener.port)):
        yield listener


def ms(start: str, end: str) -> float:
    return (parse(end) - parse(start)).total_seconds() * 1000


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_one_run_sends_the_documented_metrics_with_the_reported_values(stack, statsd, tmp_path, monkeypatch):
    s3 = stack.client("s3")
    write_calls(list(generate_calls(CALLS, seed=5)), "text", f"s3://calls/{DS}/text/", s3_client=s3)
    put(s3, f"{DS}/text/empty-call.txt", b"  \n")
    # Some records fail for good (400s are not retried); the job stays InProgress about 3 s of wall time
    # (time scale 3600), long enough for the wait, checking every second, to see it running.
    stack.admin.set_faults(record_error_rate=0.1, record_error_codes=[400], seed=5)
    stack.admin.configure(records_per_second=CALLS / (3 * 3600))
    use_config(tmp_path, monkeypatch, poll_interval_seconds=1)

    run = run_dag(DS, "text")
    assert run.state == "success"

    report = read_report(s3, DS)
    (job,) = stack.admin.jobs()
    (started,) = [h["time"] for h in job["history"] if h["status"] == "InProgress"]
    assert report["failed"] > 0
    assert report["quarantined"] == 1
    expected: dict[str, float] = {
        "records.submitted": job["totalRecordCount"],
        "records.succeeded": report["succeeded"],
        "records.failed": report["failed"],
        "records.quarantined": report["quarantined"],
        "records.invalid_output": report["invalid_output"],
        "tokens.input": report["input_tokens"],
        "tokens.output": report["output_tokens"],
        "cost.estimated_micro_usd": micro_usd(Decimal(report["estimated_cost_usd"])),
        # What prepare estimated before any job, as the report holds it.
        "cost.run_estimate_micro_usd": micro_usd(Decimal(report["cost_estimate"]["estimated_cost_usd"])),
        "job.duration": ms(job["submitTime"], job["endTime"]),
        "job.queue_time": ms(job["submitTime"], started),
    }
    assert expected["records.submitted"] == CALLS
    assert expected["job.queue_time"] > 0
    names = {METRICS + name for name in expected} | {METRICS + name + PER_DAG_AND_MODEL for name in expected}
    statsd.wait_for(lambda listener: names <= set(listener.totals(METRICS)))

    received = statsd.totals(METRICS)
    # Exactly these names (no slot waited for, no call throttled), each sent once with its value.
    assert set(received) == names
    for name, value in expected.items():
        assert statsd.values(METRICS + name) == [pytest.approx(value, abs=0.001)], name
        assert statsd.values(METRICS + name + PER_DAG_AND_MODEL) == [pytest.approx(value, abs=0.001)], name
    kinds = {
        line.name.removeprefix(METRICS).removesuffix(PER_DAG_AND_MODEL): line.kind
        for line in statsd.lines(METRICS)
    }
    assert kinds == {name: "ms" if name.startswith("job.") else "c" for name in expected}
