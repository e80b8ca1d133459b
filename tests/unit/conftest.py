"""Fixtures of the unit tests: ``s3_client`` and ``s3_bucket`` (a boto3 S3 client and a fresh bucket on the
session's moto S3 server) live in ``tests/conftest.py``, shared with the integration tests."""
