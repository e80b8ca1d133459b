"""The Airflow side of a local deployment: each component's environment and command, the one-shot CLI steps
(``db migrate``, the admin user) and the readiness checks.

Settings come from docker-compose.yaml (:mod:`.compose`); this module adds only what the containers get from
their layout (folders, ports that are fixed inside a container but must be free on a shared machine) and the
named resource overrides of :data:`RESOURCE_OVERRIDES`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bedrock_batch_dev.deployment.compose import REPO
from bedrock_batch_dev.deployment.processes import DeploymentError, ManagedProcess, tail

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAGS_FOLDER = REPO / "dags"
PLUGINS_FOLDER = REPO / "plugins"
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"

# Resource-only overrides for a small development box (2 cores); nothing that changes behaviour.
RESOURCE_OVERRIDES: Mapping[str, str] = {
    # Uvicorn workers of the API server; Airflow's default is sized for a server's cores.
    "AIRFLOW__API__WORKERS": "1",
    # Parallel DAG file parsers (default 2); two DAG files do not need more.
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
}
# Celery pool processes per worker (`--concurrency`); Airflow's default of 16 is per server, too.
DEFAULT_WORKER_CONCURRENCY = 4

# The admin user airflow-init creates: the official image's entrypoint defaults for what compose leaves unset.
ADMIN_PROFILE: Mapping[str, str] = {
    "--firstname": "Airflow",
    "--lastname": "Admin",
    "--email": "airflowadmin@example.com",
    "--role": "Admin",
}


def bundle_config(extra_bundles: Sequence[Path]) -> str:
    """``[dag_processor] dag_bundle_config_list``: the repository's dags/ plus each extra folder."""
    bundles = [{"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(DAGS_FOLDER)}}]
    for folder in extra_bundles:
        name = re.sub(r"[^A-Za-z0-9_-]+", "-", folder.name)
        kwargs = {"path": str(folder), "refresh_interval": 0}
        bundles.append({"name": name, "classpath": LOCAL_BUNDLE, "kwargs": kwargs})
    return json.dumps(bundles)


@dataclass(frozen=True)
class Ports:
    """Ports that are fixed inside a container and must be free here (several deployments may run at once)."""

    api: int
    scheduler_health: int
    triggerer_logs: int
    worker_logs: tuple[int, ...]


def local_settings(home: Path, ports: Ports, extra_bundles: Sequence[Path]) -> dict[str, str]:
    """What the containers get from their layout: folders and the process addresses."""
    settings = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(ports.scheduler_health),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports.triggerer_logs),
        # The API server asks a running task's worker for its log on this port; every worker shares the
        # log folder here, so the others' logs are read from the files.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports.worker_logs[0]),
        # Job status checks at the local stack's pace (the production default is 2 per second per triggerer).
        "AIRFLOW__BEDROCK_BATCH__STATUS_CALLS_PER_SECOND": "50",
        # The Bedrock batch page shows the pipelines configured on the local stack (CALL_CENTER_CONFIG); the
        # other shipped pipelines name example buckets that do not exist here.
        "AIRFLOW__BEDROCK_BATCH__UI_PIPELINES": "call_center_summarization",
        "PYTHONUNBUFFERED": "1",
    }
    if extra_bundles:
        settings["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = bundle_config(extra_bundles)
    return settings


def component_command(
    component: str,
    compose_command: Sequence[str],
    *,
    ports: Ports,
    home: Path,
    worker: int = 0,
    concurrency: int,
) -> list[str]:
    """``airflow <compose command>`` plus the local arguments of the component."""
    command = [AIRFLOW, *compose_command]
    if component == "api-server":
        command += ["--host", "127.0.0.1", "--port", str(ports.api)]
    elif component == "worker":
        # Distinct Celery node names and pid files: several workers share one host and one AIRFLOW_HOME.
        command += ["--celery-hostname", f"worker{worker}@%h", "--concurrency", str(concurrency)]
        command += ["--pid", str(home / f"worker{worker}.pid")]
    return command


def run_cli(args: Sequence[str], env: Mapping[str, str], log_path: Path, *, timeout: float = 300.0) -> None:
    """Run ``airflow <args>`` to completion, output appended to ``log_path``; a clear error if it fails."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"--- airflow {' '.join(args[:2])}\n".encode())
        log.flush()
        try:
            result = subprocess.run(
                [AIRFLOW, *args],
                env=dict(env),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DeploymentError(
                f"`airflow {' '.join(args[:2])}` did not finish within {timeout:.0f} s; "
                f"last lines of {log_path}:\n{tail(log_path)}"
            ) from exc
    if result.returncode != 0:
        raise DeploymentError(
            f"`airflow {' '.join(args[:2])}` failed with exit code {result.returncode}; "
            f"last lines of {log_path}:\n{tail(log_path)}"
        )


def admin_user_args(username: str, password: str) -> list[str]:
    args = ["users", "create", "--username", username, "--password", password]
    for flag, value in ADMIN_PROFILE.items():
        args += [flag, value]
    return args


HEALTHY_PARTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def unhealthy_parts(health: Mapping[str, object]) -> list[str]:
    """The parts of ``/api/v2/monitor/health`` that are not ``healthy``."""
    bad = []
    for part in HEALTHY_PARTS:
        status = health.get(part)
        if not isinstance(status, Mapping) or status.get("status") != "healthy":
            bad.append(part)
    return bad


# Airflow component → the compose service whose health check covers it in the API's health answer.
HEALTH_COMPONENT = {"scheduler": "scheduler", "triggerer": "triggerer", "dag_processor": "dag-processor"}


def worker_ready(process: ManagedProcess, worker: int) -> bool:
    """Whether the worker's log has Celery's ``worker<n>@<host> ready.`` line (it joined the broker)."""
    return re.search(rf"\bworker{worker}@\S+ ready\.", process.log_text()) is not None
