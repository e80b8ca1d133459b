"""``make airflow``: the entry point starts a local Airflow UI, runs the pipeline, and Ctrl-C leaves nothing.

Runs ``python -m bedrock_batch_dev.deployment`` (what the Makefile target runs) as a subprocess on free ports,
independent of the session's deployment.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from queue import Empty, Queue
from typing import IO
from urllib.parse import urljoin

import httpx
import psutil
import pytest

from bedrock_batch_dev.deployment import AirflowClient
from bedrock_batch_dev.deployment.__main__ import READY_PREFIX
from bedrock_batch_dev.deployment.compose import REPO
from bedrock_batch_dev.deployment.local_setup import pipeline_config, write_sample_calls
from bedrock_batch_dev.deployment.processes import SessionRegistry, kill_all, session_members
from tests.deployment.checks import DAG_ID, logical_date_of, task_states

pytestmark = pytest.mark.deployment

# A day of its own: the run the scheduler starts on unpausing reads yesterday's sample calls meanwhile.
DS = "2026-02-16"
STARTUP_LIMIT = 120.0


class Output:
    """The subprocess's output lines, read on a thread (never blocks the test)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: Queue[str] = Queue()
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)
            self._queue.put(line)

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except Empty:
                break
            if line.startswith(prefix):
                return line
        raise AssertionError(
            f"no {prefix!r} line within {timeout:.0f} s; output:\n{''.join(self.lines)[-4000:]}"
        )


def fields(line: str, prefix: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line[len(prefix) :].split())


def test_make_airflow(tmp_path):
    run_dir = (tmp_path / "airflow").resolve()
    command = [sys.executable, "-m", "bedrock_batch_dev.deployment", "--api-port", "0"]
    command += ["--run-dir", str(run_dir), "--calls", "120"]
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    output = Output(process)
    registry = SessionRegistry(run_dir)
    try:
        ready = fields(output.wait_for(READY_PREFIX, STARTUP_LIMIT), READY_PREFIX)
        startup = time.monotonic() - started
        print(f"\nmake airflow ready in {startup:.1f} s (its own count: {ready['started_in']})")
        assert startup < STARTUP_LIMIT
        # PostgreSQL, Redis, the local AWS stack, API server, scheduler, DAG processor, triggerer, a worker.
        sessions = registry.sessions()
        assert len(sessions) == 8, sessions
        started_processes = registry.members()
        assert {p.name() for p in started_processes} >= {"postgres", "redis-server"}

        with AirflowClient(ready["url"], ready["user"], ready["password"]) as client:
            for dag_id in ("call_center_summarization", "call_summary_kpis"):
                assert client.dag(dag_id)["is_paused"] is False
            _run_the_pipeline(client, ready["s3"])
            _the_first_scheduled_run_succeeds(client)
        _ui_page_loads(ready["url"])

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0, "".join(output.lines)[-4000:]
        assert "Stopped; no process of the local Airflow is left." in "".join(output.lines)
        assert [
            p.pid for p in started_processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        ] == []
        assert session_members(sessions) == []
        assert not registry.path.exists()
    finally:
        # Whatever failed, leave nothing running: Ctrl-C first, as a user would, then force.
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        kill_all(registry.members())


def _run_the_pipeline(client: AirflowClient, s3_url: str) -> None:
    """A run of the call-center DAG for a date of its own → success."""
    import boto3

    config = pipeline_config()  # the configuration `make airflow` writes (no overrides)
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    write_sample_calls(s3, config, DS, 120)
    started = time.monotonic()
    run = client.trigger(DAG_ID, logical_date=logical_date_of(DS))
    run = client.wait_for_run(DAG_ID, run["dag_run_id"], timeout=240)
    print(f"{DAG_ID} run of {DS} on `make airflow`: {time.monotonic() - started:.1f} s")
    assert run["state"] == "success", task_states(client, run)


def _the_first_scheduled_run_succeeds(client: AirflowClient) -> None:
    """Unpausing started the latest daily run, and its partition had the sample calls."""
    scheduled = client.dag_runs(DAG_ID, run_type=["scheduled"])
    assert len(scheduled) == 1, scheduled
    run = client.wait_for_run(DAG_ID, scheduled[0]["dag_run_id"], timeout=240)
    assert run["state"] == "success", task_states(client, run)


def _ui_page_loads(url: str) -> None:
    """The DAG's UI page is the single-page app, and the script it loads is served."""
    page = httpx.get(f"{url}/dags/{DAG_ID}", timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<div id="root"' in page.text
    base = re.search(r'<base href="([^"]*)"', page.text)
    script = re.search(r'<script type="module"[^>]* src="([^"]+\.js)"', page.text)
    assert script is not None, page.text[:1000]
    bundle_url = urljoin(urljoin(f"{url}/dags/{DAG_ID}", base.group(1) if base else "."), script.group(1))
    bundle = httpx.get(bundle_url, timeout=30)
    assert bundle.status_code == 200, bundle_url
    assert "javascript" in bundle.headers["content-type"]
    assert len(bundle.content) > 10_000
