"""A real, distributed Airflow on this machine, as plain processes: the compose file's Celery stack.

PostgreSQL, Redis, the local AWS stack, then ``api-server``, ``scheduler``, ``dag-processor``, ``triggerer``
and N Celery workers, each in its own process group with its log under ``<run_dir>/logs/``::

    with Deployment(DeploymentSettings(run_dir=tmp, workers=2)) as deployment:
        client = deployment.client                          # AirflowClient, logged in as the compose admin
        client.unpause("call_center_summarization")
        run = client.trigger("call_center_summarization", logical_date="2026-03-02T06:00:00+00:00")
        client.wait_for_run("call_center_summarization", run["dag_run_id"])
        deployment.admin.jobs()                             # the emulator's jobs (EmulatorAdmin over HTTP)
        deployment.kill("worker1", signal.SIGKILL); deployment.restart("worker1")

:meth:`Deployment.stop` (also at exit, and on SIGTERM/SIGHUP after :func:`install_signal_handlers`) stops
every process and checks with psutil that none is left.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import psutil

from bedrock_batch_dev.deployment import components, local_setup
from bedrock_batch_dev.deployment.client import AirflowClient
from bedrock_batch_dev.deployment.compose import COMPOSE_FILE, REPO, ComposeSettings, LocalAddress
from bedrock_batch_dev.deployment.processes import (
    DeploymentError,
    DeploymentTimeout,
    ManagedProcess,
    SessionRegistry,
    describe,
    free_port,
    kill_all,
    reap_orphans,
)
from bedrock_batch_dev.deployment.services import (
    LocalAwsService,
    PostgresService,
    RedisService,
    check_requirements,
    wait_for,
)

REGION = "us-east-1"


@dataclass(frozen=True)
class DeploymentSettings:
    """How to run a local deployment.

    :param run_dir: everything of the deployment lives here (emptied on start): the Airflow home, the
        PostgreSQL cluster, ``logs/<component>.log`` and the pipeline configuration.
    :param workers: Celery workers (``worker1`` … ``workerN``).
    :param worker_concurrency: pool processes per worker (tasks it runs at once).
    :param api_port: the API server's port on 127.0.0.1; 0 picks a free one.
    :param time_scale: the emulator's service seconds per wall second; None takes the compose file's.
    :param extra_bundles: more DAG folders, each its own local DAG bundle (e.g. ``tests/test_dags``).
    :param pipeline_overrides: changes to the local call-center configuration (``quotas`` merge).
    :param compose_variables: variables for the compose file's interpolation (default: its defaults).
    :param airflow_config: more ``AIRFLOW__SECTION__OPTION`` settings for every component, for scenarios
        that need one (e.g. a shorter ``[scheduler] task_instance_heartbeat_timeout``); applied last.
    :param startup_timeout: seconds to wait for every component to be healthy.
    """

    run_dir: Path
    workers: int = 2
    worker_concurrency: int = components.DEFAULT_WORKER_CONCURRENCY
    api_port: int = 0
    time_scale: float | None = None
    extra_bundles: Sequence[Path] = ()
    pipeline_overrides: Mapping[str, Any] = field(default_factory=dict)
    compose_file: Path = COMPOSE_FILE
    compose_variables: Mapping[str, str] = field(default_factory=dict)
    airflow_config: Mapping[str, str] = field(default_factory=dict)
    startup_timeout: float = 180.0


class Deployment:
    """The compose file's Airflow stack as local processes; see the module docstring.

    After :meth:`start`: :attr:`client` (REST API), :attr:`admin` (the emulator), :meth:`s3` (boto3),
    :attr:`api_url`, :attr:`login`, :attr:`pipeline_config` and the control methods :meth:`kill`,
    :meth:`restart`, :meth:`task_processes`.
    """

    def __init__(self, settings: DeploymentSettings) -> None:
        self.settings = settings
        self.run_dir = settings.run_dir.resolve()
        self.logs_dir = self.run_dir / "logs"
        self.home = self.run_dir / "airflow"
        self.pipeline_config_path = self.run_dir / "call_center_summarization.json"
        self.pipeline_config: dict[str, Any] = {}
        self.processes: dict[str, ManagedProcess] = {}
        self.registry = SessionRegistry(self.run_dir)
        self.compose: ComposeSettings | None = None
        self.postgres: PostgresService | None = None
        self.redis: RedisService | None = None
        self.aws: LocalAwsService | None = None
        self.ports: components.Ports | None = None
        self.timings: dict[str, float] = {}
        self._client: AirflowClient | None = None
        self._admin: Any = None
        self._lock = threading.Lock()
        self._stopped = True

    # --- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Deployment:
        """Start everything and wait until Airflow is healthy; on any failure stop what was started."""
        check_requirements()
        started = time.monotonic()
        self._stopped = False
        atexit.register(self.stop)
        try:
            self._prepare_run_dir()
            self._start_services()
            self._mark("services")
            self._start_airflow()
            self._mark("airflow healthy")
            self._set_up_pipeline()
            self._mark("pipeline set up")
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - started
        return self

    def _mark(self, step: str) -> None:
        self.timings[step] = time.monotonic() - self._t0

    def _prepare_run_dir(self) -> None:
        self._t0 = time.monotonic()
        # Deployments whose owner was killed before it could stop them (this run directory's among them).
        reap_orphans()
        kill_all(self.registry.members())
        self.registry.remove()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.logs_dir.mkdir(parents=True)
        self.home.mkdir(parents=True)
        self.pipeline_config = local_setup.pipeline_config(self.settings.pipeline_overrides)
        local_setup.write_pipeline_config(self.pipeline_config_path, self.pipeline_config)
        variables = {"CALL_CENTER_CONFIG": str(self.pipeline_config_path), **self.settings.compose_variables}
        self.compose = ComposeSettings.from_file(self.settings.compose_file, variables)

    def base_environment(self) -> dict[str, str]:
        """This process's environment without Airflow or AWS settings (the developer's credentials among
        them): the compose file and the local stack provide those."""
        return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_", "_AIRFLOW"))}

    def _start_services(self) -> None:
        assert self.compose is not None
        base = self.base_environment()
        time_scale = self.settings.time_scale or self.compose.emulator_time_scale
        logs, registry = self.logs_dir, self.registry
        self.postgres = PostgresService(
            self.run_dir / "postgres" / "data", logs / "postgres.log", base, registry
        )
        self.redis = RedisService(self.run_dir / "redis", logs / "redis.log", base, registry)
        self.aws = LocalAwsService(time_scale, logs / "local-aws.log", base, REGION, registry)
        services = (self.postgres, self.redis, self.aws)
        with ThreadPoolExecutor(len(services)) as pool:
            futures = [pool.submit(service.start) for service in services]
        for service in services:
            if service.process is not None:
                self.processes[service.process.name] = service.process
        for future in futures:
            future.result()
        database = self._database_url_parts()
        self.postgres.create_database(*database)

    def _database_url_parts(self) -> tuple[str, str, str]:
        """Database, user and password of the compose file's metadata database URL."""
        from urllib.parse import urlsplit

        assert self.compose is not None
        url = urlsplit(self.compose.environments["scheduler"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        return url.path.lstrip("/"), url.username or "airflow", url.password or ""

    def addresses(self) -> dict[str, LocalAddress]:
        """Each compose host's local address (see :data:`~.compose.COMPOSE_HOSTS`)."""
        assert self.postgres is not None
        assert self.redis is not None
        assert self.ports is not None
        return {
            "postgres": LocalAddress(socket_dir=self.postgres.socket_dir),
            "redis": LocalAddress("127.0.0.1", self.redis.port),
            "airflow-apiserver": LocalAddress("127.0.0.1", self.ports.api),
        }

    def environment(self, component: str) -> dict[str, str]:
        """The whole environment of an Airflow ``component`` (``worker`` for every worker)."""
        assert self.compose is not None
        assert self.ports is not None
        env = self.base_environment()
        env.update(self.compose.environment(component, self.addresses()))
        env.update(components.RESOURCE_OVERRIDES)
        env.update(components.local_settings(self.home, self.ports, self.settings.extra_bundles))
        env.update(self.settings.airflow_config)
        return env

    def _start_airflow(self) -> None:
        assert self.compose is not None
        workers = self.settings.workers
        self.ports = components.Ports(
            api=self.settings.api_port or free_port(),
            scheduler_health=free_port(),
            triggerer_logs=free_port(),
            worker_logs=tuple(free_port() for _ in range(max(workers, 1))),
        )
        init_env = self.environment("scheduler")
        components.run_cli(["db", "migrate"], init_env, self.logs_dir / "init.log")
        self._mark("db migrated")
        username, password = self.login
        with ThreadPoolExecutor(1) as pool:
            # The user is created while the other components start; the API server waits for it, because
            # both would create FAB's roles and permissions at once otherwise.
            user = pool.submit(
                components.run_cli,
                components.admin_user_args(username, password),
                init_env,
                self.logs_dir / "init.log",
            )
            for name in ("scheduler", "dag-processor", "triggerer"):
                self._start_component(name)
            for index in range(1, workers + 1):
                self._start_component(f"worker{index}")
            user.result()
        self._start_component("api-server")
        self.wait_healthy()

    def _component_spec(self, name: str) -> tuple[list[str], dict[str, str]]:
        assert self.compose is not None
        assert self.ports is not None
        kind = "worker" if name.startswith("worker") else name
        index = int(name.removeprefix("worker")) if kind == "worker" else 0
        command = components.component_command(
            kind,
            self.compose.commands[kind],
            ports=self.ports,
            home=self.home,
            worker=index,
            concurrency=self.settings.worker_concurrency,
        )
        env = self.environment(kind)
        if kind == "worker":
            env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(self.ports.worker_logs[index - 1])
        return command, env

    def _start_component(self, name: str) -> ManagedProcess:
        command, env = self._component_spec(name)
        # Celery finishes running tasks on SIGTERM (warm shutdown); give it a little time, not forever: a
        # killed task re-attaches to its job when it runs again.
        grace = 10.0 if name.startswith("worker") else 20.0
        log_path = self.logs_dir / f"{name}.log"
        process = ManagedProcess(
            name, command, env=env, log_path=log_path, registry=self.registry, cwd=REPO, grace=grace
        )
        self.processes[name] = process.start()
        return process

    @property
    def workers(self) -> list[str]:
        return [name for name in self.processes if name.startswith("worker")]

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Wait until the API reports every part healthy and every worker has joined the broker."""
        timeout = self.settings.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        api = self.processes["api-server"]
        wait_for("the API server to answer", self._api_answers, api, timeout)
        last: list[str] = []

        def healthy() -> bool:
            nonlocal last
            self._check_alive()
            last = components.unhealthy_parts(self.client.health())
            return not last

        try:
            wait_for("Airflow's health endpoint", healthy, None, max(1.0, deadline - time.monotonic()), 1.0)
        except DeploymentTimeout as exc:
            blamed = [components.HEALTH_COMPONENT[p] for p in last if p in components.HEALTH_COMPONENT]
            raise self._error(f"{exc}; unhealthy: {last}", blamed[0] if blamed else "api-server") from None
        for name in self.workers:
            index = int(name.removeprefix("worker"))
            process = self.processes[name]
            remaining = max(1.0, deadline - time.monotonic())
            joined = functools.partial(components.worker_ready, process, index)
            wait_for(f"{name} to join the broker", joined, process, remaining, 0.5)

    def _api_answers(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.api_url}/api/v2/version", timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if not process.running:
                raise self._error(f"{name} exited with code {process.returncode}", name)

    def _error(self, message: str, component: str) -> DeploymentError:
        process = self.processes.get(component)
        if process is None:
            return DeploymentError(message)
        return DeploymentError(f"{message}; last lines of {process.log_path}:\n{process.log_tail()}")

    def _set_up_pipeline(self) -> None:
        """The aws_default connection, the compose file's Bedrock pool, the buckets; the DAGs parsed."""
        assert self.compose is not None
        assert self.aws is not None
        self.client.put_connection(local_setup.aws_connection(self.aws.s3_url, self.aws.bedrock_url, REGION))
        pool, slots = self.compose.bedrock_pool
        self.client.put_pool(
            pool, slots, description="Bedrock batch jobs of one model", include_deferred=True
        )
        local_setup.create_buckets(self.s3(), local_setup.buckets(self.pipeline_config))
        self.wait_for_dags(local_setup.CALL_CENTER_DAGS)

    def wait_for_dags(self, dag_ids: Sequence[str], timeout: float = 120.0) -> None:
        """Wait until the DAG processor stored ``dag_ids``; an import error fails at once with its trace."""
        missing = list(dag_ids)

        def parsed() -> bool:
            nonlocal missing
            self._check_alive()
            missing = [dag_id for dag_id in missing if not self.client.has_dag(dag_id)]
            if missing:
                errors = self.client.import_errors()
                if errors:
                    traces = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
                    raise DeploymentError(f"DAG files failed to import:\n{traces}")
            return not missing

        try:
            wait_for(f"the DAGs {list(dag_ids)} to be parsed", parsed, None, timeout, 1.0)
        except DeploymentTimeout as exc:
            raise self._error(f"{exc}; not parsed: {missing}", "dag-processor") from None

    def stop(self) -> None:
        """Stop every process (Airflow first, PostgreSQL last) and make sure none of the deployment is left;
        raises :class:`DeploymentError` naming the survivors otherwise. Safe to call more than once; an
        interrupted stop is finished by the next call (or at exit)."""
        if not self._lock.acquire(blocking=False):
            return  # another thread is stopping it
        try:
            if self._stopped:
                return
            self._stop_processes()
            self._stopped = True
            atexit.unregister(self.stop)
        finally:
            self._lock.release()

    def _stop_processes(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        services = ("postgres", "redis", "local-aws")
        airflow = [p for name, p in self.processes.items() if name not in services]
        # Airflow components in parallel (each may take its grace period), then the services they use.
        for group in (airflow, [self.processes.get("local-aws")], [self.processes.get("redis")]):
            members = [p for p in group if p is not None]
            if members:
                with ThreadPoolExecutor(len(members)) as pool:
                    list(pool.map(ManagedProcess.stop, members))
        if "postgres" in self.processes:
            self.processes["postgres"].stop()
        survivors = kill_all(self.registry.members())
        if survivors:
            raise DeploymentError(f"processes of {self.run_dir} survived SIGKILL: {describe(survivors)}")
        self.registry.remove()

    def alive_processes(self) -> list[Any]:
        """Every live process of this deployment (psutil handles), found by session."""
        return self.registry.members()

    # --- addresses -------------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The API server and UI, e.g. ``http://127.0.0.1:8080``."""
        assert self.ports is not None, "the deployment is not started"
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def login(self) -> tuple[str, str]:
        """The UI/API user and password (the compose file's airflow-init user)."""
        assert self.compose is not None, "the deployment is not started"
        return self.compose.admin_login

    @property
    def client(self) -> AirflowClient:
        """The REST client of this deployment, logged in as :attr:`login`."""
        if self._client is None:
            self._client = AirflowClient(self.api_url, *self.login)
        return self._client

    @property
    def admin(self) -> Any:
        """The emulator's :class:`~bedrock_batch_dev.emulator.stack.EmulatorAdmin`, over HTTP."""
        assert self.aws is not None, "the deployment is not started"
        if self._admin is None:
            self._admin = self.aws.admin()
        return self._admin

    def s3(self, **config: Any) -> Any:
        """A boto3 S3 client of the local stack."""
        assert self.aws is not None, "the deployment is not started"
        return self.aws.client("s3", **config)

    def aws_client(self, service: str, **config: Any) -> Any:
        """A boto3 client of ``s3``, ``glue``, ``bedrock`` or ``bedrock-runtime`` on the local stack."""
        assert self.aws is not None, "the deployment is not started"
        return self.aws.client(service, **config)

    # --- control (fault scenarios) ---------------------------------------------------------------------

    def process(self, component: str) -> ManagedProcess:
        """The process of ``component``: ``api-server``, ``scheduler``, ``dag-processor``, ``triggerer``,
        ``worker1``…, ``postgres``, ``redis`` or ``local-aws``."""
        try:
            return self.processes[component]
        except KeyError:
            raise DeploymentError(f"no component {component!r}; there are {sorted(self.processes)}") from None

    def pid(self, component: str) -> int:
        pid = self.process(component).pid
        if pid is None:
            raise DeploymentError(f"{component} has not started")
        return pid

    def kill(
        self, component: str, sig: int = signal.SIGKILL, *, everything: bool = True, wait: float = 30.0
    ) -> int | None:
        """Send ``sig`` to the component and wait up to ``wait`` seconds for its main process (and, for
        SIGKILL to everything, every process) to exit; the main process's exit code (None if it runs).

        :param everything: every process of the component, task processes included, as a container runtime
            kills a container (SIGKILL: an OOM kill, a lost node); ``False``: only the main process's group,
            as ``docker stop`` signals it through dumb-init (Celery's pool and task supervisors, not the task
            processes, which Airflow puts in groups of their own). ``os.kill(deployment.pid(c), sig)`` reaches
            the main process alone.
        """
        process = self.process(component)
        if not everything:
            process.send_signal(sig)
            return process.wait(wait)
        signalled = process.signal_all(sig)
        if sig == signal.SIGKILL:
            psutil.wait_procs(signalled, timeout=wait)
        return process.wait(wait)

    def restart(self, component: str, *, wait_healthy: bool = True) -> ManagedProcess:
        """Stop ``component`` (if it runs) and start it again with the same command and environment."""
        process = self.process(component)
        process.stop()
        process.start()
        if wait_healthy:
            self.wait_healthy()
        return process

    def task_processes(self, worker: str | None = None) -> dict[str, int]:
        """The task processes the workers run now: task instance id (the API's ``id``) → pid.

        The Task SDK titles each task process ``airflow worker -- <task instance id>``.
        """
        found: dict[str, int] = {}
        names = [worker] if worker is not None else self.workers
        for name in names:
            for proc in self.process(name).members():
                with contextlib.suppress(Exception):
                    title = " ".join(proc.cmdline()).strip()
                    if title.startswith("airflow worker -- "):
                        found[title.removeprefix("airflow worker -- ").split()[0]] = proc.pid
        return found

    def log_tail(self, component: str, lines: int = 40) -> str:
        return self.process(component).log_tail(lines)


_handlers_installed = False


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit in the main thread, so ``finally`` blocks, context managers
    and atexit handlers stop the deployment (Ctrl-C already raises KeyboardInterrupt)."""
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, leave)
    _handlers_installed = True
