"""Fixtures of the deployment tier: one real, distributed Airflow for the whole session.

``airflow_deployment`` starts the compose file's Celery stack as local processes (API server, scheduler, DAG
processor, triggerer, two Celery workers, PostgreSQL, Redis, the local AWS stack) once, with the call-center
DAGs unpaused and no run; ``live`` hands a test that deployment with a clean emulator (no jobs, calls or
faults from an earlier test).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bedrock_batch_dev.deployment import (
    AirflowClient,
    Deployment,
    DeploymentSettings,
    install_signal_handlers,
)
from tests.deployment.checks import (
    DAG_ID,
    DEPLOYMENT_CONFIG,
    KPI_DAG_ID,
    clear_job_slots,
    end_unfinished_runs,
    unpause_without_catch_up_run,
)
from tests.statsd_listener import free_udp_port, statsd_config

# Airflow settings of the session deployment that shorten how long Airflow takes to notice a fault, so the
# fault scenarios (test_faults.py) take seconds instead of minutes; nothing a clean run depends on.
SCENARIO_AIRFLOW_CONFIG = {
    # A task whose worker was SIGKILLed stays "running" until its heartbeat (sent every 5 s, [workers]
    # min_heartbeat_interval) is this old (default 300 s); then the scheduler fails it into its retry.
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",  # default 10 s
    # How often the scheduler fails deferred tasks whose deferral timed out (execution_timeout; default 15 s).
    "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
    # A triggerer that heartbeat (every 5 s) longer ago than this counts as dead and its triggers are taken
    # over (default 30 s): a SIGKILLed triggerer's waits resume on the new one after this.
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
}
# Every component sends Airflow's metrics, and the toolkit's, as StatsD to this UDP port of 127.0.0.1, chosen
# once per session; test_metrics.py listens on it while its run goes through. Nothing listens otherwise:
# a StatsD client sends and forgets, so the other scenarios are unaffected.
STATSD_PORT = free_udp_port()
SCENARIO_AIRFLOW_CONFIG.update(statsd_config(STATSD_PORT))


@dataclass
class LiveAirflow:
    """What a deployment test works with.

    Faults: ``deployment.kill("worker1")`` SIGKILLs every process of a worker (task processes included) as a
    lost node; ``deployment.restart("triggerer")``; ``deployment.task_processes("worker2")`` maps running task
    instance ids (the API's ``id``) to pids; ``client.clear_task_instances`` / ``set_task_instance_state``
    clear or mark failed as the UI does; ``admin.set_faults(...)`` / ``set_time_scale(...)`` for the service.
    Airflow marks the task instances of a killed worker failed only after ``[scheduler]
    task_instance_heartbeat_timeout`` (300 s by default): the session's deployment shortens it and the other
    waits a fault scenario meets (:data:`SCENARIO_AIRFLOW_CONFIG`).

    :param deployment: the processes: ``kill``, ``restart``, ``task_processes``, ``log_tail``, ``api_url``.
    :param client: the REST API v2, logged in as the compose file's admin.
    :param admin: the emulator's admin (``jobs()``, ``set_faults()``, ``set_time_scale()``, ``reset()``).
    :param s3: a boto3 S3 client of the local stack.
    :param config: the call-center configuration the DAGs run with (buckets, quotas, local pace).
    """

    deployment: Deployment
    client: AirflowClient
    admin: Any
    s3: Any
    config: dict[str, Any]


@pytest.fixture(scope="session")
def airflow_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One deployment with two Celery workers for the session; stopped (nothing left running) at its end."""
    install_signal_handlers()
    settings = DeploymentSettings(
        run_dir=tmp_path_factory.mktemp("deployment"),
        workers=2,
        pipeline_overrides=DEPLOYMENT_CONFIG,
        airflow_config=SCENARIO_AIRFLOW_CONFIG,
    )
    with Deployment(settings) as deployment:
        for dag_id in (DAG_ID, KPI_DAG_ID):
            unpause_without_catch_up_run(deployment.client, dag_id)
        yield deployment
    assert deployment.alive_processes() == []


@pytest.fixture
def live(airflow_deployment: Deployment) -> Iterator[LiveAirflow]:
    """The session's deployment with an emulator that has forgotten every job, call and fault (and no job
    slot naming one of those jobs); afterwards, runs the test left unfinished are marked failed and a
    component it killed is started again."""
    admin = airflow_deployment.admin
    s3 = airflow_deployment.s3()
    admin.reset()
    clear_job_slots(s3, airflow_deployment.pipeline_config)
    yield LiveAirflow(
        deployment=airflow_deployment,
        client=airflow_deployment.client,
        admin=admin,
        s3=s3,
        config=airflow_deployment.pipeline_config,
    )
    services = ("postgres", "redis", "local-aws")  # a test kills Airflow components only
    stopped = [
        name
        for name, process in airflow_deployment.processes.items()
        if name not in services and not process.running
    ]
    for name in stopped:
        airflow_deployment.restart(name, wait_healthy=False)
    if stopped:
        airflow_deployment.wait_healthy()
    end_unfinished_runs(airflow_deployment.client, (DAG_ID, KPI_DAG_ID))
    admin.reset()
