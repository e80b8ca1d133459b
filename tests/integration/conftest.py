"""Fixtures of the integration tests beside those of ``tests/conftest.py``: a Glue client on the session's
moto server and a fresh Glue database."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import moto_client


@pytest.fixture
def glue(moto_s3: str) -> Any:
    """A boto3 Glue client on the session's moto server (it serves every service on one port)."""
    return moto_client(moto_s3, "glue")


@pytest.fixture
def database(glue: Any) -> str:
    """A new Glue database for one test (moto keeps one catalog per process)."""
    name = f"analytics_{uuid.uuid4().hex[:12]}"
    glue.create_database(DatabaseInput={"Name": name})
    return name
