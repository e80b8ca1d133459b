"""A small client of Airflow's public REST API v2 for tests and tools: the calls a run and a fault need.

Authentication is the FAB auth manager's: ``POST /auth/token`` with the username and password returns a JWT,
sent as a bearer token and fetched again shortly before it expires (or after a 401).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

FINISHED = frozenset({"success", "failed"})
TI_FINISHED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


class AirflowApiError(RuntimeError):
    """The API answered an error status; ``status`` and ``detail`` say which and why."""

    def __init__(self, method: str, path: str, status: int, detail: Any) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def _segment(value: str) -> str:
    return quote(value, safe="")


def _iso(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _jwt_expiry(token: str) -> float:
    """The ``exp`` claim of a JWT (not verified: the server does that), or one minute from now."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, ValueError):
        return time.time() + 60


class AirflowClient:
    """Airflow's public API v2 at ``base_url`` (``http://127.0.0.1:8080``) as ``username``.

    Every method returns the API's JSON as plain dicts and lists (field names as in Airflow's OpenAPI
    spec, e.g. a task instance's ``task_id``, ``map_index``, ``state``, ``try_number``, ``id``).

    :param refresh_margin: fetch a new token this many seconds before the current one expires.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: float = 30.0,
        refresh_margin: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._refresh_margin = refresh_margin
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._token: str | None = None
        self._expires_at = 0.0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport -------------------------------------------------------------------------------------

    def token(self) -> str:
        """A valid access token: the current one, or a new one when it expires within the margin."""
        if self._token is None or time.time() > self._expires_at - self._refresh_margin:
            response = self._http.post(
                "/auth/token", json={"username": self._username, "password": self._password}
            )
            if response.status_code >= 400:
                raise AirflowApiError("POST", "/auth/token", response.status_code, response.text[:500])
            self._token = str(response.json()["access_token"])
            self._expires_at = _jwt_expiry(self._token)
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An authenticated request to ``path`` (``/api/v2/...``); :class:`AirflowApiError` on 4xx/5xx."""
        extra_headers = kwargs.pop("headers", {})
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.token()}", **extra_headers}
            response = self._http.request(method, path, headers=headers, **kwargs)
            if response.status_code == 401 and attempt == 1:
                self._token = None  # expired or signed with another secret: log in again once
                continue
            break
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text[:500]
            raise AirflowApiError(method, path, response.status_code, detail)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def _pages(self, path: str, key: str, params: Mapping[str, Any], page: int = 100) -> list[dict[str, Any]]:
        """Every item of a paginated list endpoint (``limit``/``offset``)."""
        items: list[dict[str, Any]] = []
        while True:
            body = self.get(path, **params, limit=page, offset=len(items))
            batch = body[key]
            items += batch
            if not batch or len(items) >= body.get("total_entries", len(items)):
                return items

    # --- health, DAGs ----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``/api/v2/monitor/health``: metadatabase, scheduler, triggerer and dag_processor status."""
        return dict(self._http.get("/api/v2/monitor/health").json())

    def dag(self, dag_id: str) -> dict[str, Any]:
        return dict(self.get(f"/api/v2/dags/{_segment(dag_id)}"))

    def has_dag(self, dag_id: str) -> bool:
        """Whether the DAG processor has parsed and stored ``dag_id``."""
        try:
            self.dag(dag_id)
        except AirflowApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def import_errors(self) -> list[dict[str, Any]]:
        """DAG files that failed to import (``filename``, ``stack_trace``)."""
        return self._pages("/api/v2/importErrors", "import_errors", {})

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        path = f"/api/v2/dags/{_segment(dag_id)}"
        return dict(self.request("PATCH", path, json={"is_paused": paused}).json())

    def unpause(self, dag_id: str) -> dict[str, Any]:
        return self.set_paused(dag_id, False)

    def pause(self, dag_id: str) -> dict[str, Any]:
        return self.set_paused(dag_id, True)

    # --- DAG runs --------------------------------------------------------------------------------------

    def trigger(
        self,
        dag_id: str,
        *,
        logical_date: datetime | str | None,
        conf: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Create a run of ``dag_id``. ``logical_date`` is required by the API: ``None`` makes a run without
        one (its tasks see no ``ds``), a date makes the run of that date."""
        body: dict[str, Any] = {"logical_date": _iso(logical_date), "conf": dict(conf or {})}
        if run_id is not None:
            body["dag_run_id"] = run_id
        return dict(self.request("POST", f"/api/v2/dags/{_segment(dag_id)}/dagRuns", json=body).json())

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}"))

    def dag_runs(self, dag_id: str, **filters: Any) -> list[dict[str, Any]]:
        """The runs of ``dag_id``, oldest first; ``filters`` are the endpoint's query parameters
        (``state``, ``run_type``, ``logical_date_gte``, ...)."""
        params = {"order_by": "id", **filters}
        return self._pages(f"/api/v2/dags/{_segment(dag_id)}/dagRuns", "dag_runs", params)

    def set_dag_run_state(self, dag_id: str, run_id: str, state: str) -> dict[str, Any]:
        """Mark a run ``success``, ``failed`` or ``queued`` (the UI's Mark run as)."""
        path = f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}"
        return dict(self.request("PATCH", path, json={"state": state}).json())

    def delete_dag_run(self, dag_id: str, run_id: str) -> None:
        """Delete a run and its task instances."""
        self.request("DELETE", f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}")

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        *,
        states: Collection[str] = FINISHED,
        timeout: float = 180.0,
        interval: float = 1.0,
    ) -> dict[str, Any]:
        """Poll the run until its state is one of ``states``; on timeout, the error lists its task states."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.dag_run(dag_id, run_id)
            if run["state"] in states:
                return run
            if time.monotonic() > deadline:
                tasks = {
                    f"{t['task_id']}[{t['map_index']}]": t["state"]
                    for t in self.task_instances(dag_id, run_id)
                }
                raise TimeoutError(
                    f"{dag_id} run {run_id} is {run['state']} after {timeout:.0f} s, not {sorted(states)}; "
                    f"tasks: {tasks}"
                )
            time.sleep(interval)

    def wait_for_new_run(
        self, dag_id: str, *, after: Iterable[str] = (), timeout: float = 120.0, interval: float = 1.0
    ) -> dict[str, Any]:
        """The first run of ``dag_id`` whose id is not in ``after`` (e.g. an asset-triggered run)."""
        seen = set(after)
        deadline = time.monotonic() + timeout
        while True:
            new = [run for run in self.dag_runs(dag_id) if run["dag_run_id"] not in seen]
            if new:
                return new[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new run of {dag_id} within {timeout:.0f} s")
            time.sleep(interval)

    # --- task instances --------------------------------------------------------------------------------

    def task_instances(self, dag_id: str, run_id: str, task_id: str | None = None) -> list[dict[str, Any]]:
        """The run's task instances, every map index of mapped tasks included."""
        path = f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}/taskInstances"
        return self._pages(path, "task_instances", {"task_id": task_id, "order_by": "map_index"})

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}/taskInstances/{_segment(task_id)}"
        return dict(self.get(path if map_index < 0 else f"{path}/{map_index}"))

    def wait_for_task_state(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: Collection[str],
        *,
        map_index: int = -1,
        timeout: float = 120.0,
        interval: float = 0.5,
    ) -> dict[str, Any]:
        """Poll one task instance until its state is one of ``states`` (e.g. ``deferred``, ``running``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ti = self.task_instance(dag_id, run_id, task_id, map_index)
            except AirflowApiError as exc:  # a mapped instance exists only once its upstream expanded
                if exc.status != 404:
                    raise
                ti = {"state": None}
            if ti["state"] in states:
                return ti
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{dag_id} {run_id} {task_id}[{map_index}] is {ti['state']} after {timeout:.0f} s, "
                    f"not {sorted(states)}"
                )
            time.sleep(interval)

    def clear_task_instances(
        self,
        dag_id: str,
        run_id: str,
        task_ids: Iterable[str | tuple[str, int]],
        *,
        only_failed: bool = False,
        include_downstream: bool = False,
        dry_run: bool = False,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """Clear task instances of one run (``task_id`` or ``(task_id, map_index)``), as the UI's Clear does:
        their state is reset so the scheduler runs them again; a deferred one's trigger is cancelled.
        Returns the task instances that were (or, with ``dry_run``, would be) cleared."""
        body = {
            "dag_run_id": run_id,
            "task_ids": [list(t) if isinstance(t, tuple) else t for t in task_ids],
            "only_failed": only_failed,
            "include_downstream": include_downstream,
            "dry_run": dry_run,
            **options,
        }
        path = f"/api/v2/dags/{_segment(dag_id)}/clearTaskInstances"
        return list(self.request("POST", path, json=body).json()["task_instances"])

    def set_task_instance_state(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        state: str,
        *,
        map_index: int = -1,
        note: str | None = None,
    ) -> list[dict[str, Any]]:
        """Mark one task instance ``success`` or ``failed`` (the UI's Mark as); the changed instances."""
        path = f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}/taskInstances/{_segment(task_id)}"
        if map_index >= 0:
            path += f"/{map_index}"
        body: dict[str, Any] = {"new_state": state}
        if note is not None:
            body["note"] = note
        result = self.request("PATCH", path, json=body).json()
        return list(result["task_instances"]) if "task_instances" in result else [result]

    # --- XComs, logs, assets ---------------------------------------------------------------------------

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", *, map_index: int = -1
    ) -> Any:
        """One XCom value as stored (JSON: dicts, lists, strings, numbers)."""
        path = (
            f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}/taskInstances/{_segment(task_id)}"
            f"/xcomEntries/{_segment(key)}"
        )
        value = self.get(path, map_index=map_index)["value"]
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, *, map_index: int = -1
    ) -> str:
        """The whole log of one try, one line per event (``event`` text, as the UI shows it)."""
        path = (
            f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}/taskInstances/{_segment(task_id)}"
            f"/logs/{try_number}"
        )
        response = self.request(
            "GET",
            path,
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )
        content = response.json()["content"]
        if isinstance(content, str):
            return content
        return "\n".join(
            str(entry.get("event", "")) if isinstance(entry, dict) else str(entry) for entry in content
        )

    def asset_events(self, **filters: Any) -> list[dict[str, Any]]:
        """Asset events, oldest first; ``filters``: ``source_dag_id``, ``source_run_id``, ``asset_id``, ...
        Each has ``uri``, ``name``, ``extra``, ``source_dag_id``, ``source_run_id``, ``created_dagruns``."""
        return self._pages("/api/v2/assets/events", "asset_events", {"order_by": "timestamp", **filters})

    def delete_queued_asset_events(self, dag_id: str) -> bool:
        """Drop the asset events queued for ``dag_id`` that no run of it has consumed; whether there were."""
        try:
            self.request("DELETE", f"/api/v2/dags/{_segment(dag_id)}/assets/queuedEvents")
        except AirflowApiError as error:
            if error.status == 404:  # none queued
                return False
            raise
        return True

    # --- human-in-the-loop ------------------------------------------------------------------------------

    def hitl_details(self, dag_id: str, run_id: str, **filters: Any) -> list[dict[str, Any]]:
        """The run's human-in-the-loop requests (the UI's required actions), oldest first; ``filters``:
        ``task_id``, ``response_received``, ``ti_state``, ... Each has ``options``, ``subject``, ``body``,
        ``response_received``, ``chosen_options``, ``responded_by_user`` and its ``task_instance``."""
        path = f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}/hitlDetails"
        return self._pages(path, "hitl_details", {"order_by": "created_at", **filters})

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        """One task instance's human-in-the-loop request (404 while the task has not asked yet)."""
        return dict(self.get(self._hitl_path(dag_id, run_id, task_id, map_index)))

    def respond_hitl(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        chosen_options: Sequence[str],
        *,
        params_input: Mapping[str, Any] | None = None,
        map_index: int = -1,
    ) -> dict[str, Any]:
        """Answer a human-in-the-loop request as the logged-in user (e.g. ``["Approve"]``); a task waiting for
        it resumes. Returns ``chosen_options``, ``params_input``, ``responded_by`` and ``responded_at``; 409
        when it was answered already."""
        body = {"chosen_options": list(chosen_options), "params_input": dict(params_input or {})}
        path = self._hitl_path(dag_id, run_id, task_id, map_index)
        return dict(self.request("PATCH", path, json=body).json())

    @staticmethod
    def _hitl_path(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
        return (
            f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}/taskInstances/{_segment(task_id)}"
            f"/{map_index}/hitlDetails"
        )

    # --- configuration objects -------------------------------------------------------------------------

    def put_connection(self, connection: Mapping[str, Any]) -> dict[str, Any]:
        """Create the connection, or replace it when it exists (body as ``POST /api/v2/connections``)."""
        try:
            return dict(self.request("POST", "/api/v2/connections", json=dict(connection)).json())
        except AirflowApiError as exc:
            if exc.status != 409:
                raise
        path = f"/api/v2/connections/{_segment(str(connection['connection_id']))}"
        return dict(self.request("PATCH", path, json=dict(connection)).json())

    def put_pool(
        self, name: str, slots: int, *, description: str = "", include_deferred: bool = False
    ) -> dict[str, Any]:
        """Create the pool, or update it when it exists."""
        body = {
            "name": name,
            "slots": slots,
            "description": description,
            "include_deferred": include_deferred,
        }
        try:
            return dict(self.request("POST", "/api/v2/pools", json=body).json())
        except AirflowApiError as exc:
            if exc.status != 409:
                raise
        return dict(self.request("PATCH", f"/api/v2/pools/{_segment(name)}", json=body).json())
