"""The local stack's state between tests: the emulator reset and the test buckets present.

Kept apart from ``tests/conftest.py``, whose import sets up a fresh Airflow home: a child process that
imports the test helpers (a DAG run in its own process) must keep its parent's home and database.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def reset_stack(local_stack: Any, buckets: tuple[str, ...]) -> Any:
    """The local stack, its emulator reset (no jobs, calls, faults; time scale 3600), ``buckets`` present."""
    local_stack.admin.reset()
    local_stack.admin.set_time_scale(3600.0)
    s3 = local_stack.client("s3")
    for bucket in buckets:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
    return local_stack


def fresh_stack(local_stack: Any, buckets: tuple[str, ...]) -> Iterator[Any]:
    """For a fixture: :func:`reset_stack`, and the emulator reset again afterwards."""
    yield reset_stack(local_stack, buckets)
    local_stack.admin.reset()
