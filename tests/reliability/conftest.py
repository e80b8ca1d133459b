"""Fixtures of the reliability tests: a clean emulator, the test buckets and the Airflow metadata DB."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.reliability.harness import BUCKETS
from tests.stack_state import fresh_stack


@pytest.fixture
def stack(local_stack: Any, aws_connection: str, airflow_home: Any) -> Iterator[Any]:
    """The session's local stack with no jobs, calls or faults, and the calls/staging/results buckets."""
    yield from fresh_stack(local_stack, BUCKETS)
