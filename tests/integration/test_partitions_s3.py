"""Versioned date partitions on S3 (moto's real server over HTTP) and their Glue partitions: a day is replaced
as a whole, a failed publish leaves the previous day current, a reader never sees two versions, and the Glue
partition follows the published version."""

from __future__ import annotations

import io
import time
from typing import Any

import pyarrow.parquet as pq
import pytest

from bedrock_batch.catalog import CatalogError, register_partition
from bedrock_batch.errors import StorageReadError, StorageWriteError
from bedrock_batch.partitions import (
    POINTER_FILE,
    PartitionWriter,
    PublishedPartition,
    current_partition,
    partition_files,
    partition_uri,
    read_partition,
)
from bedrock_batch.storage import Storage
from tests.conftest import moto_client
from tests.partition_days import (
    DS,
    SCHEMA,
    PublishFailed,
    assert_whole_versions,
    fail,
    publish,
    read_while_publishing,
    rows,
    run_publish,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def storage(s3_client: Any) -> Storage:
    return Storage(s3_client)


@pytest.fixture
def table_uri(s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/analytics/call_summaries"


def keys_under(s3_client: Any, uri: str) -> list[str]:
    """Every key under the prefix ``uri``, relative to it."""
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    paginator = s3_client.get_paginator("list_objects_v2")
    keys = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"][len(prefix) :] for item in page.get("Contents", []))
    return sorted(keys)


def day_keys(s3_client: Any, table_uri: str) -> list[str]:
    return keys_under(s3_client, partition_uri(table_uri, DS))


def version_keys(published: PublishedPartition) -> list[str]:
    return [f"{published.version}/{name}" for name in published.files]


class TestPublishOnS3:
    def test_publish_then_republish_leaves_only_the_current_version(self, s3_client, storage, table_uri):
        first = publish(storage, table_uri, "run-1", [3, 4, 5])

        assert first.uri == f"{table_uri}/ds={DS}/{first.version}/"
        assert day_keys(s3_client, table_uri) == [POINTER_FILE, *version_keys(first)]
        assert partition_files(storage, table_uri, DS) == [f"{first.uri}{name}" for name in first.files]
        table = read_partition(storage, table_uri, DS)
        assert table.column("record_id").to_pylist() == [f"run-1-{i:05d}" for i in range(12)]
        assert table.schema == SCHEMA

        second = publish(storage, table_uri, "run-2", [2, 2])

        assert current_partition(storage, table_uri, DS) == second
        assert day_keys(s3_client, table_uri) == [POINTER_FILE, *version_keys(second)]
        assert keys_under(s3_client, first.uri) == []
        assert read_partition(storage, table_uri, DS).column("dag_run_id").to_pylist() == ["run-2"] * 4

    def test_a_failed_publish_keeps_the_previous_version_whole(self, s3_client, storage, table_uri):
        first = publish(storage, table_uri, "run-1", [3, 3])
        before = read_partition(storage, table_uri, DS)

        def fail_after_two_files(writer: PartitionWriter) -> None:
            assert len(keys_under(s3_client, writer.uri)) == 2
            fail(writer)

        writer = PartitionWriter(storage, table_uri, DS, dag_run_id="run-2")
        with pytest.raises(PublishFailed):
            run_publish(writer, [2, 2], then=fail_after_two_files)

        assert current_partition(storage, table_uri, DS) == first
        assert read_partition(storage, table_uri, DS).equals(before)
        assert keys_under(s3_client, writer.uri) == []
        assert day_keys(s3_client, table_uri) == [POINTER_FILE, *version_keys(first)]

    def test_a_refused_pointer_write_keeps_the_previous_version_whole(
        self, s3_client, storage, table_uri, monkeypatch
    ):
        first = publish(storage, table_uri, "run-1", [3, 3])
        write_file = Storage.write_file

        def pointer_refused(self: Storage, local_path: str, uri: str) -> None:
            if uri.endswith(POINTER_FILE):
                raise StorageWriteError(f"cannot upload to {uri}: AccessDenied")
            write_file(self, local_path, uri)

        monkeypatch.setattr(Storage, "write_file", pointer_refused)
        writer = PartitionWriter(storage, table_uri, DS, dag_run_id="run-2")
        with pytest.raises(StorageWriteError, match="AccessDenied"):
            run_publish(writer, [4])

        assert current_partition(storage, table_uri, DS) == first
        assert read_partition(storage, table_uri, DS).column("dag_run_id").to_pylist() == ["run-1"] * 6
        assert day_keys(s3_client, table_uri) == [POINTER_FILE, *version_keys(first)]

    def test_a_day_written_before_versions_reads_until_the_first_versioned_publish(
        self, s3_client, storage, table_uri, s3_bucket
    ):
        buffer = io.BytesIO()
        pq.write_table(rows("old-run", 0, 5), buffer)
        legacy_key = f"analytics/call_summaries/ds={DS}/part-00000.parquet"
        s3_client.put_object(Bucket=s3_bucket, Key=legacy_key, Body=buffer.getvalue())

        current = current_partition(storage, table_uri, DS)
        assert current is not None
        assert (current.version, current.files, current.rows) == ("", ("part-00000.parquet",), 5)
        assert current.uri == partition_uri(table_uri, DS)
        assert partition_files(storage, table_uri, DS) == [f"s3://{s3_bucket}/{legacy_key}"]
        assert read_partition(storage, table_uri, DS).column("dag_run_id").to_pylist() == ["old-run"] * 5

        failed = PartitionWriter(storage, table_uri, DS, dag_run_id="run-0")
        with pytest.raises(PublishFailed):
            run_publish(failed, [3], then=fail)
        assert keys_under(s3_client, failed.uri) == []
        assert day_keys(s3_client, table_uri) == ["part-00000.parquet"]
        assert read_partition(storage, table_uri, DS).column("dag_run_id").to_pylist() == ["old-run"] * 5

        published = publish(storage, table_uri, "run-1", [2, 1])
        assert day_keys(s3_client, table_uri) == [POINTER_FILE, *version_keys(published)]
        assert read_partition(storage, table_uri, DS).column("dag_run_id").to_pylist() == ["run-1"] * 3

    def test_a_day_never_published(self, storage, table_uri):
        assert current_partition(storage, table_uri, DS) is None
        with pytest.raises(StorageReadError, match="never published"):
            read_partition(storage, table_uri, DS)


class TestReadersDuringAPublishOnS3:
    @pytest.mark.parametrize("when", ["before the open", "between the open and the first read"])
    def test_a_version_deleted_while_it_is_read_is_read_again(self, storage, table_uri, monkeypatch, when):
        publish(storage, table_uri, "run-1", [2, 2])
        open_seekable = Storage.open_seekable
        republished: list[PublishedPartition] = []

        def republish_once(self: Storage, uri: str):
            if when == "before the open" and not republished:
                republished.append(publish(storage, table_uri, "run-2", [3]))
            stream = open_seekable(self, uri)
            # The object exists when opened (HEAD), then is deleted before its first ranged GET.
            if when != "before the open" and not republished:
                republished.append(publish(storage, table_uri, "run-2", [3]))
            return stream

        monkeypatch.setattr(Storage, "open_seekable", republish_once)
        table = read_partition(storage, table_uri, DS)
        assert republished
        assert table.column("dag_run_id").to_pylist() == ["run-2"] * 3

    def test_a_reader_looping_during_successive_publishes_never_sees_a_mix(self, moto_s3, storage, table_uri):
        versions = 10
        started = time.monotonic()
        reader = Storage(moto_client(moto_s3, "s3"))  # a client of its own, used from the reader's thread
        reads, expected_rows = read_while_publishing(
            storage, reader, table_uri, versions, reads_between=2, settle_seconds=5
        )
        assert time.monotonic() - started < 60
        assert len(reads) >= 2 * (versions - 1)
        assert_whole_versions(reads, expected_rows)


class TestGluePartitionFollowsTheVersion:
    def register(self, glue: Any, database: str, table_uri: str, **options: Any) -> Any:
        return register_partition(
            glue,
            database=database,
            table="call_summaries",
            location=table_uri,
            schema=SCHEMA,
            partition_value=DS,
            **options,
        )

    def location(self, glue: Any, database: str) -> str:
        partition = glue.get_partition(
            DatabaseName=database, TableName="call_summaries", PartitionValues=[DS]
        )
        return str(partition["Partition"]["StorageDescriptor"]["Location"])

    def test_the_partition_points_at_each_published_version(self, glue, database, storage, table_uri):
        first = publish(storage, table_uri, "run-1", [2, 3])
        registration = self.register(glue, database, table_uri, partition_location=first.uri)
        assert registration.partition_created is True
        assert registration.location == first.uri
        assert self.location(glue, database) == f"{table_uri}/ds={DS}/{first.version}/"
        table = glue.get_table(DatabaseName=database, Name="call_summaries")["Table"]
        assert table["StorageDescriptor"]["Location"] == f"{table_uri}/"

        second = publish(storage, table_uri, "run-2", [1])
        registration = self.register(glue, database, table_uri, partition_location=second.uri)
        assert registration.partition_created is False
        assert self.location(glue, database) == second.uri
        listed = glue.get_partitions(DatabaseName=database, TableName="call_summaries")["Partitions"]
        assert [p["Values"] for p in listed] == [[DS]]

    def test_without_a_version_the_partition_is_the_day(self, glue, database, table_uri):
        self.register(glue, database, table_uri)
        assert self.location(glue, database) == f"{table_uri}/ds={DS}/"

    @pytest.mark.parametrize(
        "outside",
        [
            "{table}/ds=2026-11-19/v20261118T063000000000Z-0a1b2c3d/",
            "{table}/ds=2026-11-18",
            "{table}/ds=2026-11-18/v20261118T063000000000Z-0a1b2c3d",
            "{table}/",
            "{table}_other/ds=2026-11-18/v1/",
            "s3://another-bucket/analytics/call_summaries/ds=2026-11-18/v1/",
        ],
    )
    def test_a_location_outside_the_day_is_refused(self, glue, database, table_uri, outside):
        location = outside.format(table=table_uri)
        with pytest.raises(CatalogError, match="is not a prefix under"):
            self.register(glue, database, table_uri, partition_location=location)
        with pytest.raises(glue.exceptions.EntityNotFoundException):
            glue.get_table(DatabaseName=database, Name="call_summaries")
