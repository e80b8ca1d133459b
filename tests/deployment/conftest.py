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
    end_unfinished_runs,
    unpause_without_catch_up_run,
)


@dataclass
class LiveAirflow:
    """What a deployment test works with.

    Faults: ``deployment.kill("worker1")`` SIGKILLs every process of a worker (task processes included) as a
    lost node; ``deployment.restart("triggerer")``; ``deployment.task_processes("worker2")`` maps running task
    instance ids (the API's ``id``) to pids; ``client.clear_task_instances`` / ``set_task_instance_state``
    clear or mark failed as the UI does; ``admin.set_faults(...)`` / ``set_time_scale(...)`` for the service.
    Airflow marks the task instances of a killed worker failed only after ``[scheduler]
    task_instance_heartbeat_timeout`` (300 s); a scenario that waits for that passes a shorter one through
    ``DeploymentSettings.airflow_config``.

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
        run_dir=tmp_path_factory.mktemp("deployment"), workers=2, pipeline_overrides=DEPLOYMENT_CONFIG
    )
    with Deployment(settings) as deployment:
        for dag_id in (DAG_ID, KPI_DAG_ID):
            unpause_without_catch_up_run(deployment.client, dag_id)
        yield deployment
    assert deployment.alive_processes() == []


@pytest.fixture
def live(airflow_deployment: Deployment) -> Iterator[LiveAirflow]:
    """The session's deployment with an emulator that has forgotten every job, call and fault; runs the test
    left unfinished are marked failed afterwards."""
    admin = airflow_deployment.admin
    admin.reset()
    yield LiveAirflow(
        deployment=airflow_deployment,
        client=airflow_deployment.client,
        admin=admin,
        s3=airflow_deployment.s3(),
        config=airflow_deployment.pipeline_config,
    )
    end_unfinished_runs(airflow_deployment.client, (DAG_ID, KPI_DAG_ID))
    admin.reset()
