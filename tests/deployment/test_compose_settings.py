"""The local deployment runs the compose file's Airflow settings: only host addresses differ.

Fast: builds each component's environment without starting anything.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bedrock_batch_dev.deployment import components
from bedrock_batch_dev.deployment.compose import (
    COMPONENT_SERVICES,
    COMPOSE_HOSTS,
    ComposeSettings,
    LocalAddress,
    load_compose,
    localize_url,
)

pytestmark = pytest.mark.deployment

ADDRESSES = {
    "postgres": LocalAddress(socket_dir=Path("/run/pg")),
    "redis": LocalAddress("127.0.0.1", 16379),
    "airflow-apiserver": LocalAddress("127.0.0.1", 18080),
}
PORTS = components.Ports(api=18080, scheduler_health=18974, triggerer_logs=18794, worker_logs=(18793, 18795))


@pytest.fixture(scope="module")
def compose() -> ComposeSettings:
    return ComposeSettings.from_file(variables={"CALL_CENTER_CONFIG": "/run/config.json"})


def test_every_airflow_setting_of_the_compose_file_is_kept(compose):
    services = load_compose(variables={"CALL_CENTER_CONFIG": "/run/config.json"})["services"]
    for component, service in COMPONENT_SERVICES.items():
        declared = {k: str(v) for k, v in services[service]["environment"].items() if v is not None}
        local = compose.environment(component, ADDRESSES)
        assert set(local) == set(declared), component
        changed = {key for key in declared if local[key] != declared[key]}
        # Only URLs naming a compose host change, and only in their host part.
        for key in changed:
            before, after = urlsplit(declared[key]), urlsplit(local[key])
            assert before.hostname in COMPOSE_HOSTS, key
            assert (before.scheme, before.username, before.password, before.path) == (
                after.scheme,
                after.username,
                after.password,
                after.path,
            ), key
        assert local["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert local["CALL_CENTER_CONFIG"] == "/run/config.json"
        assert "AWS_ACCESS_KEY_ID" not in local, "credentials are never passed to the local processes"


def test_compose_hosts_map_to_the_local_processes(compose):
    env = compose.environment("scheduler", ADDRESSES)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        "postgresql+psycopg2://airflow:airflow@/airflow?host=%2Frun%2Fpg"
    )
    assert (
        env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql://airflow:airflow@/airflow?host=%2Frun%2Fpg"
    )
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:@127.0.0.1:16379/0"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"


def test_a_compose_host_without_a_local_address_is_an_error():
    with pytest.raises(KeyError, match="redis"):
        localize_url("redis://:@redis:6379/0", {})
    assert (
        localize_url("https://bedrock.us-east-1.amazonaws.com", {})
        == "https://bedrock.us-east-1.amazonaws.com"
    )


def test_local_settings_and_resource_overrides_never_replace_a_compose_setting(compose):
    declared = set().union(*(compose.environments[c] for c in COMPONENT_SERVICES))
    local = components.local_settings(Path("/run/home"), PORTS, [Path("/repo/tests/test_dags")])
    assert declared.isdisjoint(local)
    assert declared.isdisjoint(components.RESOURCE_OVERRIDES)


def test_components_run_the_compose_commands(compose):
    assert compose.commands == {
        "api-server": ("api-server",),
        "scheduler": ("scheduler",),
        "dag-processor": ("dag-processor",),
        "triggerer": ("triggerer",),
        "worker": ("celery", "worker"),
    }
    assert compose.admin_login == ("airflow", "airflow")
    assert compose.bedrock_pool == ("bedrock_batch_claude_3_haiku", 20)
    assert compose.emulator_time_scale == 60.0
