"""Fixtures of the unit tests: a boto3 S3 client and a fresh bucket on the session's moto S3 server."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest


@pytest.fixture
def s3_client(moto_s3: str) -> Any:
    """A real boto3 S3 client talking HTTP to the moto server of ``tests/conftest.py``."""
    return boto3.client(
        "s3",
        endpoint_url=moto_s3,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """A new, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name
