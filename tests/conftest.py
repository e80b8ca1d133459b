"""Shared test harness: an isolated Airflow home per test session, and the local AWS stack.

Environment variables are set at import time, before any test module can import Airflow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DAGS_FOLDER = REPO / "dags"
TEST_DAGS_FOLDER = REPO / "tests" / "test_dags"
PLUGINS_FOLDER = REPO / "plugins"

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="bedrock-batch-airflow-"))


def _local_bundle(name: str, path: Path) -> dict[str, Any]:
    return {
        "name": name,
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": str(path), "refresh_interval": 0},
    }


os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        # dag.test() needs every DAG it runs to live in a bundle: the product's DAGs and the test DAGs.
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
            [_local_bundle("dags-folder", DAGS_FOLDER), _local_bundle("test-dags", TEST_DAGS_FOLDER)]
        ),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(_AIRFLOW_HOME / "logs"),
        # The local stack answers in milliseconds: status checks at its pace, not the production budget of 2/s
        # per triggerer (tests of the budget set their own).
        "AIRFLOW__BEDROCK_BATCH__STATUS_CALLS_PER_SECOND": "50",
    }
)
# Keep real AWS credentials of the developer's shell away from every test.
for _var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
    os.environ.pop(_var, None)
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's Airflow home with a freshly migrated SQLite metadata database."""
    from airflow.utils import db

    db.resetdb()
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """Endpoint URL of a real moto S3 server on a free loopback port."""
    from bedrock_batch_dev.emulator.s3_server import S3Server

    port = free_port()
    server = S3Server(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def moto_client(endpoint: str, service: str) -> Any:
    """A real boto3 client of ``service`` talking HTTP to a moto server (one port serves every service)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def s3_client(moto_s3: str) -> Any:
    """A real boto3 S3 client talking HTTP to the session's moto S3 server."""
    return moto_client(moto_s3, "s3")


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """A new, empty bucket for one test."""
    import uuid

    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def local_stack() -> Iterator[Any]:
    """moto's S3 server plus the Bedrock emulator, in-process on free ports, at a high time scale."""
    from bedrock_batch_dev.emulator.stack import LocalStack

    with LocalStack(s3_port=0, bedrock_port=0, time_scale=3600.0) as stack:
        yield stack


def connection_json(stack: Any, region: str = "us-east-1") -> str:
    """An ``aws`` Airflow connection pointing every service our code uses at the local stack."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {
                "region_name": region,
                "service_config": {
                    "s3": {"endpoint_url": stack.s3_endpoint_url},
                    # moto's server answers every service on one port, the Glue Data Catalog included.
                    "glue": {"endpoint_url": stack.s3_endpoint_url},
                    "bedrock": {"endpoint_url": stack.bedrock_endpoint_url},
                    "bedrock-runtime": {"endpoint_url": stack.bedrock_runtime_endpoint_url},
                },
            },
        }
    )


@pytest.fixture
def aws_connection(local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the ``aws_default`` connection at the local stack for one test; returns its conn id."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", connection_json(local_stack))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return "aws_default"


def load_dag_file(path: Path, module_name: str) -> Any:
    """Execute a DAG file afresh (its settings are read again) and return its ``dag``."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag
