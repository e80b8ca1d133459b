"""Helpers for the submit/wait tests: shard files written straight to the local S3, fixtures, DAG runs.

Independent of the prepare/split/upload stages so these tests pin down submit and wait alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE_ARN = "arn:aws:iam::123456789012:role/BedrockBatchServiceRole"
BUCKET = "bedrock-batch-submit-tests"


def anthropic_line(record_id: str, text: str) -> bytes:
    """One batch record line with an Anthropic Messages body."""
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }
    return json.dumps({"recordId": record_id, "modelInput": body}).encode() + b"\n"


def write_shard(s3: Any, index: int = 1, records: int = 150, run: str | None = None) -> dict[str, Any]:
    """Write one shard of ``records`` lines to S3 and return its descriptor, as the split stage would."""
    run = run or uuid.uuid4().hex[:12]
    data = b"".join(
        anthropic_line(f"R{index:03d}{n:07d}", f"Summarize call {run}-{index}-{n}.") for n in range(records)
    )
    prefix = f"runs/{run}/shards/shard-{index:04d}/"
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}part-0001.jsonl", Body=data)
    return {
        "shard": index,
        "input_uri": f"s3://{BUCKET}/{prefix}",
        "output_uri": f"s3://{BUCKET}/runs/{run}/output/",
        "records": records,
        "bytes": len(data),
        "fingerprint": hashlib.sha256(data).hexdigest(),
    }


@pytest.fixture
def stack(local_stack: Any, aws_connection: str) -> Iterator[Any]:
    """The local stack with a clean emulator (no jobs, faults or limit changes) and the test bucket."""
    local_stack.admin.reset()
    s3 = local_stack.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    yield local_stack
    local_stack.admin.reset()


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def load_test_dags(module_name: str) -> Any:
    """Import a DAG file of tests/test_dags (the ``test-dags`` bundle, which dag.test() requires)."""
    from tests.conftest import TEST_DAGS_FOLDER

    spec = importlib.util.spec_from_file_location(module_name, TEST_DAGS_FOLDER / f"{module_name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def xcoms(dag_run: Any, task_id: str, key: str = "return_value") -> dict[int, Any]:
    """A task's XCom values in ``dag_run`` by map index (-1 for an unmapped task)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
            )
        ).all()
        return {row.map_index: XComModel.deserialize_value(row) for row in rows}


def task_states(dag_run: Any, task_id: str) -> dict[int, str]:
    """A task's states in ``dag_run`` by map index."""
    return {ti.map_index: ti.state for ti in dag_run.get_task_instances() if ti.task_id == task_id}


def speed_up_when(
    stack: Any, seen: Callable[[list[dict[str, Any]]], Any], time_scale: float = 3600.0
) -> threading.Thread:
    """Raise the emulator's time scale, in a background thread, once ``seen(recorded requests)`` holds.

    Start jobs at a crawl (time scale 0.01) and release them when the code under test has observed
    them: the scenario then no longer depends on how long Airflow takes to start a task.
    """

    def release() -> None:
        wait_until(lambda: seen(stack.admin.requests()), timeout=120)
        stack.admin.set_time_scale(time_scale)

    thread = threading.Thread(target=release, name="speed-up-emulator", daemon=True)
    thread.start()
    return thread
