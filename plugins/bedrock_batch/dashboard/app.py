"""The FastAPI app behind the Bedrock batch page, mounted by the plugin at :data:`URL_PREFIX`.

A thin adapter: it reads its settings from Airflow's configuration (``[bedrock_batch]``), builds boto3 clients
from Airflow connections, asks Airflow's auth manager who the caller is and which DAGs they may read, finds
the submit task instance behind each job in Airflow's XComs, and hands the rest to
:mod:`~bedrock_batch.dashboard.gather` and :mod:`~bedrock_batch.dashboard.page`.

Airflow does not protect an app a plugin mounts (``fastapi_apps``): every route here resolves the caller
itself, the way Airflow's own API does (the UI's ``_token`` cookie, or an ``Authorization: Bearer`` JWT), and
answers 401 (no or expired token) or 403 (invalid token) otherwise.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from bedrock_batch.dashboard.gather import (
    DEFAULT_CACHE_SECONDS,
    AwsClients,
    Gatherer,
    SnapshotCache,
    sources_from_pipelines,
)
from bedrock_batch.dashboard.page import render_page
from bedrock_batch.dashboard.rows import DEFAULT_LOOKBACK_DAYS, Snapshot
from bedrock_batch.stage_results import SUBMISSION_XCOM_KEY

log = logging.getLogger(__name__)

#: Where the plugin mounts the app; the page is ``/bedrock-batch/``, its JSON ``/bedrock-batch/api/snapshot``.
URL_PREFIX = "/bedrock-batch"
SECTION = "bedrock_batch"
# The submit tasks of a pipeline (pipeline_dag, or pipeline_task_group inside a group: "<group>.submit").
_SUBMIT_TASKS = ("submit", "submit_retry")


@dataclass(frozen=True)
class DashboardSettings:
    """The page's settings, from ``[bedrock_batch]`` in Airflow's configuration (or the matching
    ``AIRFLOW__BEDROCK_BATCH__*`` environment variables).

    :param pipelines: ``ui_pipelines``: comma-separated pipeline names or folders; empty: every folder of
        ``include/pipelines/``.
    :param cache_seconds: ``ui_cache_seconds``: how long one reading of S3 and Bedrock is served.
    :param lookback_days: ``ui_lookback_days``: jobs submitted and days within this many days are shown.
    """

    pipelines: tuple[str, ...] = ()
    cache_seconds: float = DEFAULT_CACHE_SECONDS
    lookback_days: int = DEFAULT_LOOKBACK_DAYS

    @classmethod
    def from_airflow(cls) -> DashboardSettings:
        """Read ``[bedrock_batch] ui_*``."""
        from airflow.configuration import conf

        names = conf.get(SECTION, "ui_pipelines", fallback="") or ""
        return cls(
            pipelines=tuple(name.strip() for name in names.split(",") if name.strip()),
            cache_seconds=conf.getfloat(SECTION, "ui_cache_seconds", fallback=DEFAULT_CACHE_SECONDS),
            lookback_days=conf.getint(SECTION, "ui_lookback_days", fallback=DEFAULT_LOOKBACK_DAYS),
        )


def airflow_clients(conn_id: str) -> AwsClients:
    """The Bedrock and S3 clients of an Airflow AWS connection (its region, credentials and endpoints)."""
    from bedrock_batch.hooks import BedrockBatchHook

    hook = BedrockBatchHook(aws_conn_id=conn_id)
    return AwsClients(bedrock=hook.conn, s3=hook.s3_client)


def submit_task_instances(jobs: Iterable[tuple[str, str]]) -> dict[str, tuple[str, int]]:
    """Job ARN → (task id, map index) of the submit task instance that holds it in its XComs.

    :param jobs: (dag_id, run_id) pairs of the runs to look in.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    runs = set(jobs)
    if not runs:
        return {}
    found: dict[str, tuple[str, int]] = {}
    with create_session() as session:
        rows = session.execute(
            select(XComModel.task_id, XComModel.map_index, XComModel.value).where(
                XComModel.dag_id.in_({dag_id for dag_id, _ in runs}),
                XComModel.run_id.in_({run_id for _, run_id in runs}),
                XComModel.key.in_(("return_value", SUBMISSION_XCOM_KEY)),
            )
        ).all()
    for task_id, map_index, value in rows:
        if task_id.rsplit(".", 1)[-1] not in _SUBMIT_TASKS:
            continue
        if isinstance(value, str | bytes):
            try:
                value = json.loads(value)
            except ValueError:
                continue
        if isinstance(value, Mapping) and isinstance(value.get("job_arn"), str):
            found[value["job_arn"]] = (str(task_id), int(map_index))
    return found


def with_task_instances(snapshot: Snapshot) -> Snapshot:
    """``snapshot`` with each job's submit task instance, where Airflow's XComs name it."""
    try:
        where = submit_task_instances((job.dag_id, job.run_id) for job in snapshot.jobs)
    except Exception:  # the page still shows the jobs, only without a task link
        log.warning("Could not read the submit tasks' XComs", exc_info=True)
        return snapshot
    jobs = tuple(
        replace(job, task_id=where[job.job_arn][0], map_index=where[job.job_arn][1])
        if job.job_arn in where
        else job
        for job in snapshot.jobs
    )
    return replace(snapshot, jobs=jobs)


class Dashboard:
    """The cached data of the page, built on first use (not when every Airflow component loads the plugin)."""

    def __init__(self, settings: DashboardSettings | None = None) -> None:
        self._settings = settings
        self._cache: SnapshotCache | None = None
        self._lock = threading.Lock()

    @property
    def settings(self) -> DashboardSettings:
        """The settings given, else Airflow's."""
        if self._settings is None:
            self._settings = DashboardSettings.from_airflow()
        return self._settings

    def snapshot(self) -> Snapshot:
        """The current snapshot (read at most once per ``cache_seconds``)."""
        with self._lock:
            if self._cache is None:
                sources, problems = sources_from_pipelines(self.settings.pipelines)
                gatherer = Gatherer(
                    sources, airflow_clients, lookback_days=self.settings.lookback_days, problems=problems
                )
                self._cache = SnapshotCache(
                    lambda: with_task_instances(gatherer.snapshot()), self.settings.cache_seconds
                )
            cache = self._cache
        return cache.get()


async def authenticated_user(request: Request) -> Any:
    """The caller, as Airflow's own API resolves it (JWT in ``Authorization: Bearer`` or the ``_token``
    cookie); 401 or 403 otherwise."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPBearer

    credentials = await HTTPBearer(auto_error=False)(request)
    return await get_user(request, None, credentials)


User = Annotated[Any, Depends(authenticated_user)]


def readable_dag_ids(user: Any, dag_ids: set[str]) -> set[str]:
    """The DAGs among ``dag_ids`` that ``user`` may read, as Airflow's auth manager decides."""
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().filter_authorized_dag_ids(dag_ids=dag_ids, user=user, method="GET"))


def _visible(dashboard: Dashboard, user: Any) -> Snapshot:
    snapshot = dashboard.snapshot()
    return snapshot.visible_to(readable_dag_ids(user, snapshot.dag_ids))


def create_app(dashboard: Dashboard | None = None) -> FastAPI:
    """The app: ``GET /`` (the page) and ``GET /api/snapshot`` (the same data as JSON), both for logged-in
    users only, each showing only the DAGs the user may read.

    :param dashboard: the data behind it (default: from Airflow's configuration, on first request).
    """
    data = dashboard or Dashboard()
    app = FastAPI(title="Bedrock batch", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def refuse(request: Request, exc: HTTPException) -> Any:
        # A browser that is not logged in gets a way to log in, an API client the usual JSON.
        if "text/html" in request.headers.get("accept", "") and exc.status_code in (401, 403):
            login = _login_url(request)
            body = (
                "<!doctype html><title>Bedrock batch</title><p>Log in to Airflow to see this page: "
                f'<a href="{login}">log in</a>.</p>'
            )
            return HTMLResponse(body, status_code=exc.status_code)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, user: User) -> HTMLResponse:
        # Mounted under Airflow's own base path (``[api] base_url``) plus URL_PREFIX: links to the UI keep it.
        airflow_base = str(request.scope.get("root_path", "")).removesuffix(URL_PREFIX)
        snapshot = _visible(data, user)
        return HTMLResponse(
            render_page(snapshot, airflow_base=airflow_base, cache_seconds=data.settings.cache_seconds)
        )

    @app.get("/api/snapshot")
    def snapshot(user: User) -> JSONResponse:
        return JSONResponse(_visible(data, user).to_dict())

    return app


def _login_url(request: Request) -> str:
    from html import escape

    try:
        from airflow.api_fastapi.app import get_auth_manager

        url = get_auth_manager().get_url_login(next_url=str(request.url))
    except Exception:  # any auth manager: the page still says what to do
        url = "/"
    return escape(str(url), quote=True)
