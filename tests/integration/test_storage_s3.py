"""Storage against a real S3 API (moto's server over HTTP): multipart uploads of ranges that span files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from bedrock_batch.storage import (
    MULTIPART_CHUNK_BYTES,
    MULTIPART_THRESHOLD_BYTES,
    FileSegment,
    SegmentedFile,
    Storage,
)

pytestmark = pytest.mark.integration

MIB = 1 << 20


def test_a_range_across_two_spool_pieces_uploads_in_full_parts(
    tmp_path: Path, s3_client: Any, s3_bucket: str
):
    """A spool prepared in two processes is two files; a shard crossing the boundary is one multipart upload
    whose every part but the last must be at least 5 MiB (S3 refuses the upload otherwise)."""
    assert MULTIPART_THRESHOLD_BYTES < 96 * MIB
    first, second = tmp_path / "part-1.spool", tmp_path / "part-2.spool"
    # The boundary falls 2 MiB into a part: a part cut there would be 2 MiB, under the minimum.
    first_size = 4 * MULTIPART_CHUNK_BYTES + 2 * MIB
    first.write_bytes(os.urandom(first_size))
    second.write_bytes(os.urandom(30 * MIB))
    spool = SegmentedFile((FileSegment(str(first), 0, first_size), FileSegment(str(second), 0, 30 * MIB)))
    # The shard: from 1 MiB into the first piece to 1 MiB before the end of the second.
    offset, length = MIB, first_size - MIB + 29 * MIB
    expected = (first.read_bytes() + second.read_bytes())[offset : offset + length]

    uri = f"s3://{s3_bucket}/input/shard-0001/part-0001.jsonl"
    digest = Storage(s3_client).write_range(spool, offset, length, uri)

    body = s3_client.get_object(Bucket=s3_bucket, Key="input/shard-0001/part-0001.jsonl")["Body"].read()
    assert len(body) == length
    assert body == expected
    assert digest == hashlib.sha256(expected).hexdigest()
