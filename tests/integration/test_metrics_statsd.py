"""Metrics of the submit stage through Airflow's Stats to a real StatsD server (a UDP socket on 127.0.0.1):
throttled calls and job-slot waits counted exactly as the emulator recorded them, job timers from the
service's times, and a broken metrics path that fails no task.

The runs go through ``dag.test()`` of the test DAGs in tests/test_dags/bedrock_batch_submit.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.integration.bedrock_shards import ROLE_ARN, load_test_dags, speed_up_when, stack, write_shard
from tests.integration.test_submit_operator import count_calls, logical_date
from tests.statsd_listener import (
    PREFIX,
    FailingStatsClient,
    StatsdListener,
    stats_of_a_new_process,
    statsd_config,
)

__all__ = ["stack"]  # the fixture, imported so pytest finds it here

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DAGS = load_test_dags("bedrock_batch_submit")
METRICS = f"{PREFIX}.bedrock_batch."
# The active-job count of one look at the quota lists each of the four active statuses.
LISTS_PER_LOOK = 4


@pytest.fixture
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[StatsdListener]:
    with StatsdListener() as listener, stats_of_a_new_process(monkeypatch, statsd_config(listener.port)):
        yield listener


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_every_throttled_call_is_counted(airflow_home, stack, statsd):
    s3 = stack.client("s3")
    shards = [write_shard(s3, index=i) for i in (1, 2, 3)]
    stack.admin.set_faults(throttle_rate=0.3, seed=3)
    stack.admin.set_time_scale(30)

    dag_run = DAGS.no_client_retries.test(logical_date=logical_date(20), run_conf={"shards": shards})

    assert dag_run.state == "success"
    # Without the SDK's own retries, each throttled answer reached the submitter's or the wait's retry.
    throttled = [r for r in stack.admin.requests() if r.get("error") == "ThrottlingException"]
    assert {r["operation"] for r in throttled} >= {"GetModelInvocationJob", "ListModelInvocationJobs"}
    name = METRICS + "throttled_calls"
    statsd.wait_for(lambda listener: sum(listener.values(name)) >= len(throttled))
    assert sum(statsd.values(name)) == len(throttled)
    assert sum(
        statsd.values(f"{name}.bb_submit_no_client_retries.anthropic__claude-3-haiku-20240307-v1_0")
    ) == (len(throttled))


def test_each_look_at_a_full_quota_is_a_slot_wait_and_each_job_is_timed(airflow_home, stack, statsd):
    stack.admin.set_max_concurrent_jobs(2)
    stack.admin.set_time_scale(0.01)
    s3 = stack.client("s3")
    for n in (1, 2):  # two jobs started outside Airflow fill the quota
        blocker = write_shard(s3, index=90 + n)
        stack.client("bedrock").create_model_invocation_job(
            jobName=f"console-job-{n}",
            roleArn=ROLE_ARN,
            modelId="anthropic.claude-3-haiku-20240307-v1:0",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": blocker["input_uri"]}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": blocker["output_uri"]}},
        )
    shards = [write_shard(s3, index=i) for i in range(1, 4)]
    release = speed_up_when(stack, lambda calls: len(count_calls(calls)) >= 4 * LISTS_PER_LOOK, time_scale=60)

    dag_run = DAGS.deferrable.test(logical_date=logical_date(21), run_conf={"shards": shards})
    release.join(timeout=5)

    assert dag_run.state == "success"
    ours = [j for j in stack.admin.jobs() if j["jobName"].startswith("bb-submit")]
    assert len(ours) == len(shards)
    looks = len(count_calls(stack.admin.requests())) / LISTS_PER_LOOK
    waits = looks - len(ours)  # every look that created no job waited
    assert waits >= 3
    statsd.wait_for(lambda listener: len(listener.values(METRICS + "job.duration")) == len(ours))
    assert sum(statsd.values(METRICS + "job_slot.waits")) == waits
    assert sum(statsd.values(METRICS + "records.submitted")) == sum(s["records"] for s in shards)
    # The console jobs were not waited for by any task: only ours are timed, from the service's times.
    durations = sorted((parse(j["endTime"]) - parse(j["submitTime"])).total_seconds() * 1000 for j in ours)
    assert sorted(statsd.values(METRICS + "job.duration")) == pytest.approx(durations, abs=0.001)


def test_a_broken_metrics_path_fails_no_task(airflow_home, stack, monkeypatch):
    settings = {
        **statsd_config(9),  # never reached: the client raises first
        "AIRFLOW__METRICS__STATSD_CUSTOM_CLIENT_PATH": "tests.statsd_listener.FailingStatsClient",
    }
    FailingStatsClient.attempted.clear()
    shards = [write_shard(stack.client("s3"), index=1)]
    stack.admin.set_time_scale(3600)

    with stats_of_a_new_process(monkeypatch, settings):
        dag_run = DAGS.blocking.test(logical_date=logical_date(22), run_conf={"shards": shards})

    assert dag_run.state == "success"
    attempted = {line.split(":")[0] for line in FailingStatsClient.attempted}
    assert {f"{METRICS}records.submitted", f"{METRICS}job.duration"} <= attempted
