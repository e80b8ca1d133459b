"""Read a published day of a results table from S3 the way an analyst's reader must: through its pointer.

Also checks the day's layout at rest: the pointer, and exactly the files of the version it names (no file of
an older version, of a failed publish, or written before versions).
"""

from __future__ import annotations

import io
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

POINTER = "_published.json"


def read_day(s3: Any, bucket: str, table_prefix: str, ds: str) -> pa.Table:
    """The rows of ``s3://<bucket>/<table_prefix>/ds=<ds>/`` as published (every file of its version).

    :param s3: a boto3 S3 client.
    :param bucket: the results bucket.
    :param table_prefix: the table's key prefix, e.g. ``analytics/call_summaries``.
    :param ds: the day.
    """
    day = f"{table_prefix.strip('/')}/ds={ds}/"
    pointer = orjson.loads(s3.get_object(Bucket=bucket, Key=day + POINTER)["Body"].read())
    version = f"{day}{pointer['version']}/"
    assert pointer["uri"] == f"s3://{bucket}/{version}", pointer["uri"]
    expected = [version + name for name in pointer["files"]]
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=day)
    keys = sorted(item["Key"] for item in listing.get("Contents", []))
    assert keys == sorted([day + POINTER, *expected]), f"the day holds other files: {keys}"
    tables = [
        pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) for key in expected
    ]
    table = pa.concat_tables(tables)
    assert table.num_rows == pointer["rows"], (table.num_rows, pointer["rows"])
    return table


def day_uri(s3: Any, bucket: str, table_prefix: str, ds: str) -> str:
    """The prefix of the day's published version (the partition's location in the catalog)."""
    day = f"{table_prefix.strip('/')}/ds={ds}/"
    pointer = orjson.loads(s3.get_object(Bucket=bucket, Key=day + POINTER)["Body"].read())
    return str(pointer["uri"])
