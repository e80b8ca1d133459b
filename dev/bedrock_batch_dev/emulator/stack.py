"""The embedded local stack: moto's S3 server and the Bedrock emulator, in-process, each on its own thread.

Tests, the demo and the CLI start the same stack; EmulatorAdmin drives the emulator in-process or over HTTP.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import boto3
import orjson
from botocore.config import Config

from bedrock_batch_dev.emulator.faults import FaultConfig
from bedrock_batch_dev.emulator.jobs import ServiceLimits, ServiceTimings
from bedrock_batch_dev.emulator.server import ADMIN_PREFIX, ADMIN_ROUTES, BedrockEmulator, EmulatorServer

AdminCall = Callable[[str, Mapping[str, Any] | None], Any]


def local_client(
    service: str, endpoint_url: str, region: str, credentials: tuple[str, str], **config: Any
) -> Any:
    """A boto3 client of ``service`` at ``endpoint_url`` (path-style S3, a pool for parallel tests).

    ``config`` goes to botocore's ``Config`` (e.g. ``retries={"total_max_attempts": 1}``).
    """
    settings: dict[str, Any] = {"max_pool_connections": 32, **config}
    if service == "s3":
        settings.setdefault("s3", {"addressing_style": "path"})
    access_key, secret_key = credentials
    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(**settings),
    )


class EmulatorAdminError(RuntimeError):
    """The admin endpoint refused an operation (unknown setting, value out of range)."""


class EmulatorAdmin:
    """Test and operator controls of a running emulator: faults, limits, time scale, recorded jobs and calls.

    Build it with :meth:`in_process` (same process as the emulator) or :meth:`over_http` (any process);
    both run the same operations.
    """

    def __init__(self, call: AdminCall) -> None:
        self._call = call

    @classmethod
    def in_process(cls, emulator: BedrockEmulator) -> EmulatorAdmin:
        def call(operation: str, payload: Mapping[str, Any] | None) -> Any:
            try:
                return emulator.admin(operation, payload)
            except (ValueError, TypeError) as exc:
                raise EmulatorAdminError(str(exc)) from exc

        return cls(call)

    @classmethod
    def over_http(cls, endpoint_url: str, timeout: float = 10.0) -> EmulatorAdmin:
        """Admin of the emulator at ``endpoint_url`` (its Bedrock endpoint, e.g. ``http://127.0.0.1:5001``)."""
        base = endpoint_url.rstrip("/") + ADMIN_PREFIX

        def call(operation: str, payload: Mapping[str, Any] | None) -> Any:
            method, path = ADMIN_ROUTES[operation]
            data = orjson.dumps(dict(payload or {})) if method == "POST" else None
            request = urllib.request.Request(  # noqa: S310 - the URL is the emulator the caller named
                base + path, data=data, method=method, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                    return orjson.loads(response.read())
            except urllib.error.HTTPError as exc:
                detail = orjson.loads(exc.read() or b"{}").get("message", exc.reason)
                raise EmulatorAdminError(f"{operation}: {detail}") from exc

        return cls(call)

    def health(self) -> dict[str, Any]:
        return dict(self._call("health", None))

    def jobs(self) -> list[dict[str, Any]]:
        """Every job created since the last reset, with its status history and ``createRequests``: how
        many CreateModelInvocationJob calls returned it (1 = created, more = idempotent replays)."""
        return list(self._call("jobs", None))

    def job(self, identifier: str) -> dict[str, Any]:
        """One job of :meth:`jobs` by id or ARN."""
        job_id = identifier.rsplit("/", 1)[-1]
        for job in self.jobs():
            if job["jobId"] == job_id:
                return job
        raise KeyError(f"the emulator has no job {identifier}")

    def created_job_count(self) -> int:
        """CreateModelInvocationJob calls that created a new job (idempotent replays not counted)."""
        return int(self._call("created_job_count", None))

    def requests(self, operation: str | None = None) -> list[dict[str, Any]]:
        """Recorded API calls (``operation``, ``params``, ``time``, ``status``, ``error``), oldest first."""
        recorded = list(self._call("requests", None))
        return [r for r in recorded if operation is None or r["operation"] == operation]

    def faults(self) -> dict[str, Any]:
        return dict(self._call("faults", None))

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Change fault settings (fields of :class:`FaultConfig`); unnamed settings keep their value."""
        return dict(self._call("set_faults", changes))

    def config(self) -> dict[str, Any]:
        return dict(self._call("config", None))

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change ``time_scale`` or any :class:`ServiceLimits` / :class:`ServiceTimings` field by name."""
        return dict(self._call("configure", settings))

    def set_time_scale(self, time_scale: float) -> dict[str, Any]:
        return self.configure(time_scale=time_scale)

    def set_max_concurrent_jobs(self, max_concurrent_jobs: int) -> dict[str, Any]:
        return self.configure(max_concurrent_jobs=max_concurrent_jobs)

    def reset(self) -> dict[str, Any]:
        """Forget all jobs and recorded calls; faults, limits and time scale return to their start values."""
        return dict(self._call("reset", None))


class LocalStack:
    """moto's S3 server (unless ``s3_endpoint_url`` is given) plus the Bedrock emulator, as a context manager.

    :param host: interface both servers bind to.
    :param s3_port: port of moto's S3 server; 0 picks a free one.
    :param bedrock_port: port of the emulator (control plane, runtime and admin); 0 picks a free one.
    :param s3_endpoint_url: use this S3 instead of starting moto.
    :param region: region in job ARNs.
    :param time_scale: service seconds per wall second (3600: an hour passes in a second).
    :param max_concurrent_jobs: the per-model quota of submitted and in-progress jobs.
    :param faults: faults to inject from the start.
    :param limits: other service quotas (``max_concurrent_jobs`` above wins over ``limits``).
    :param timings: phase durations in service seconds.
    :param account_id: account in job ARNs, and the owner ``s3BucketOwner`` must name.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        s3_port: int = 0,
        bedrock_port: int = 0,
        s3_endpoint_url: str | None = None,
        region: str = "us-east-1",
        time_scale: float = 1.0,
        max_concurrent_jobs: int = 20,
        faults: FaultConfig | None = None,
        limits: ServiceLimits | None = None,
        timings: ServiceTimings | None = None,
        account_id: str = "123456789012",
    ) -> None:
        self.host = host
        self.region = region
        self.account_id = account_id
        self._s3_port = s3_port
        self._bedrock_port = bedrock_port
        self._external_s3 = s3_endpoint_url
        self._time_scale = time_scale
        self._limits = dataclasses.replace(limits or ServiceLimits(), max_concurrent_jobs=max_concurrent_jobs)
        self._timings = timings
        self._faults = faults
        self._moto: Any = None
        self._server: EmulatorServer | None = None
        self.emulator: BedrockEmulator | None = None
        self.s3_endpoint_url = s3_endpoint_url or ""
        self.bedrock_endpoint_url = ""
        self.bedrock_runtime_endpoint_url = ""
        self._admin: EmulatorAdmin | None = None

    @property
    def admin(self) -> EmulatorAdmin:
        if self._admin is None:
            raise RuntimeError("LocalStack is not started; call start() or use it as a context manager")
        return self._admin

    def _url(self, port: int) -> str:
        # A wildcard bind is reachable on loopback; clients cannot connect to 0.0.0.0 everywhere.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104
        return f"http://{host}:{port}"

    def start(self) -> LocalStack:
        if self._external_s3 is None:
            from bedrock_batch_dev.emulator.s3_server import S3Server

            self._moto = S3Server(ip_address=self.host, port=self._s3_port, verbose=False)
            self._moto.start()
            self.s3_endpoint_url = self._url(self._moto.get_host_and_port()[1])
        try:
            self.emulator = BedrockEmulator(
                self.client("s3"),
                region=self.region,
                account_id=self.account_id,
                time_scale=self._time_scale,
                limits=self._limits,
                timings=self._timings,
                faults=self._faults,
            )
            self.emulator.start()
            self._server = EmulatorServer(self.emulator, self.host, self._bedrock_port).start()
        except BaseException:
            self.stop()
            raise
        self.bedrock_endpoint_url = self._url(self._server.port)
        self.bedrock_runtime_endpoint_url = self.bedrock_endpoint_url
        self._admin = EmulatorAdmin.in_process(self.emulator)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.emulator is not None:
            self.emulator.close()
            self.emulator = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        self._admin = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def client(self, service: str, **config: Any) -> Any:
        """A boto3 client for ``s3``, ``bedrock`` or ``bedrock-runtime`` pointed at this stack.

        ``config`` goes to botocore's ``Config`` (e.g. ``retries={"total_max_attempts": 1}``).
        """
        endpoints = {
            "s3": self.s3_endpoint_url,
            "bedrock": self.bedrock_endpoint_url,
            "bedrock-runtime": self.bedrock_runtime_endpoint_url,
        }
        # moto accepts any key; an external S3 may want the caller's real ones.
        credentials = (
            os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        )
        return local_client(service, endpoints[service], self.region, credentials, **config)
