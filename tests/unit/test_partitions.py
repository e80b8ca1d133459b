"""Versioned date partitions on the local file system: a day is replaced as a whole, whatever its number of
files, and a reader that resolves the pointer sees the old day or the new day, never a mix."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from bedrock_batch import partitions as partitions_module
from bedrock_batch.errors import OutputFormatError, StorageReadError, StorageWriteError
from bedrock_batch.partitions import (
    POINTER_FILE,
    PartitionWriter,
    PublishedPartition,
    current_partition,
    new_version,
    partition_files,
    partition_uri,
    pointer_uri,
    read_partition,
)
from bedrock_batch.storage import Storage
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


def files_under(directory: str) -> list[str]:
    """Every file under ``directory``, relative, sorted (directories themselves are not listed)."""
    found = []
    for parent, _, names in os.walk(directory):
        found.extend(os.path.relpath(os.path.join(parent, name), directory) for name in names)
    return sorted(found)


def write_legacy_day(table_uri: str, table: pa.Table, ds: str = DS) -> str:
    """A day as it was written before versions: one Parquet file directly under ``ds=``."""
    path = Path(partition_uri(table_uri, ds)) / "part-00000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return str(path)


@pytest.fixture
def storage() -> Storage:
    return Storage()


@pytest.fixture
def table_uri(tmp_path: Path) -> str:
    return str(tmp_path / "call_summaries")


class TestPublish:
    def test_the_pointer_names_the_written_files_and_nothing_else_is_left(self, storage, table_uri):
        published = publish(storage, table_uri, "run-1", [3, 5, 2])

        assert published.files == ("part-00000.parquet", "part-00001.parquet", "part-00002.parquet")
        assert published.rows == 10
        assert published.dag_run_id == "run-1"
        assert published.uri == str(Path(table_uri, f"ds={DS}", published.version)) + "/"
        assert published.published_at is not None

        pointer = orjson.loads(Path(pointer_uri(table_uri, DS)).read_bytes())
        assert pointer == published.to_dict()
        assert current_partition(storage, table_uri, DS) == published

        table = read_partition(storage, table_uri, DS)
        assert table.schema == SCHEMA
        assert table.column("record_id").to_pylist() == [f"run-1-{i:05d}" for i in range(10)]
        assert table.column("position").to_pylist() == list(range(10))
        assert set(table.column("dag_run_id").to_pylist()) == {"run-1"}

        assert partition_files(storage, table_uri, DS) == [
            str(Path(published.uri, name)) for name in published.files
        ]
        assert files_under(partition_uri(table_uri, DS)) == [
            POINTER_FILE,
            *(f"{published.version}/{name}" for name in published.files),
        ]

    def test_read_partition_reads_only_the_columns_asked_for(self, storage, table_uri):
        publish(storage, table_uri, "run-1", [2, 2])
        table = read_partition(storage, table_uri, DS, columns=["record_id", "position"])
        assert table.column_names == ["record_id", "position"]
        assert table.column("position").to_pylist() == [0, 1, 2, 3]

    def test_a_republish_leaves_only_the_new_version(self, storage, table_uri):
        first = publish(storage, table_uri, "run-1", [4, 4, 4])
        second = publish(storage, table_uri, "run-2", [1, 6])

        assert second.version != first.version
        assert current_partition(storage, table_uri, DS) == second
        table = read_partition(storage, table_uri, DS)
        assert table.column("record_id").to_pylist() == [f"run-2-{i:05d}" for i in range(7)]
        assert files_under(partition_uri(table_uri, DS)) == [
            POINTER_FILE,
            f"{second.version}/part-00000.parquet",
            f"{second.version}/part-00001.parquet",
        ]
        # The old version's directory goes with its files.
        assert not os.path.exists(first.uri)
        assert sorted(os.listdir(partition_uri(table_uri, DS))) == [POINTER_FILE, second.version]

    def test_days_are_independent(self, storage, table_uri):
        publish(storage, table_uri, "run-a", [2], ds="2026-11-17")
        publish(storage, table_uri, "run-b", [3])
        publish(storage, table_uri, "run-c", [4])
        assert (
            read_partition(storage, table_uri, "2026-11-17").column("dag_run_id").to_pylist() == ["run-a"] * 2
        )
        assert read_partition(storage, table_uri, DS).column("dag_run_id").to_pylist() == ["run-c"] * 4

    def test_commit_twice_returns_the_same_version_and_a_committed_writer_takes_no_file(
        self, storage, table_uri
    ):
        with PartitionWriter(storage, table_uri, DS, dag_run_id="run-1") as writer:
            writer.write(rows("run-1", 0, 2))
            published = writer.commit(SCHEMA)
            assert writer.commit(SCHEMA) is published
            with pytest.raises(RuntimeError, match="published already"):
                writer.write(rows("run-1", 2, 2))
        assert read_partition(storage, table_uri, DS).num_rows == 2

    def test_an_exception_after_commit_keeps_the_published_version(self, storage, table_uri):
        committed: list[PublishedPartition] = []

        def commit_then_fail(writer: PartitionWriter) -> None:
            committed.append(writer.commit(SCHEMA))
            raise PublishFailed("after the commit")

        with pytest.raises(PublishFailed):
            run_publish(
                PartitionWriter(storage, table_uri, DS, dag_run_id="run-1"), [3], then=commit_then_fail
            )
        assert current_partition(storage, table_uri, DS) == committed[0]
        assert read_partition(storage, table_uri, DS).num_rows == 3


class TestLegacyDay:
    def test_a_day_written_before_versions_reads_as_version_empty_until_published_again(
        self, storage, table_uri
    ):
        legacy = write_legacy_day(table_uri, rows("old-run", 0, 5))

        current = current_partition(storage, table_uri, DS)
        assert current is not None
        assert current.version == ""
        assert current.uri == partition_uri(table_uri, DS)
        assert current.files == ("part-00000.parquet",)
        assert current.rows == 5
        assert current.dag_run_id is None
        assert partition_files(storage, table_uri, DS) == [legacy]
        assert read_partition(storage, table_uri, DS).column("dag_run_id").to_pylist() == ["old-run"] * 5

        published = publish(storage, table_uri, "run-1", [2, 2])

        assert not os.path.exists(legacy)
        assert current_partition(storage, table_uri, DS) == published
        assert read_partition(storage, table_uri, DS).column("dag_run_id").to_pylist() == ["run-1"] * 4
        assert files_under(partition_uri(table_uri, DS)) == [
            POINTER_FILE,
            f"{published.version}/part-00000.parquet",
            f"{published.version}/part-00001.parquet",
        ]

    def test_a_failed_first_versioned_publish_keeps_the_legacy_file(self, storage, table_uri):
        legacy = write_legacy_day(table_uri, rows("old-run", 0, 5))
        writer = PartitionWriter(storage, table_uri, DS, dag_run_id="run-1")
        with pytest.raises(PublishFailed):
            run_publish(writer, [3], then=fail)
        assert files_under(partition_uri(table_uri, DS)) == ["part-00000.parquet"]
        assert os.path.exists(legacy)
        current = current_partition(storage, table_uri, DS)
        assert current is not None
        assert current.version == ""
        assert read_partition(storage, table_uri, DS).column("dag_run_id").to_pylist() == ["old-run"] * 5


class TestFailedPublish:
    def test_an_exception_while_writing_keeps_the_previous_version_whole(self, storage, table_uri):
        first = publish(storage, table_uri, "run-1", [3, 4, 5])
        before = read_partition(storage, table_uri, DS)

        def fail_after_two_files(writer: PartitionWriter) -> None:
            assert len(files_under(writer.uri)) == 2
            fail(writer)

        writer = PartitionWriter(storage, table_uri, DS, dag_run_id="run-2")
        with pytest.raises(PublishFailed):
            run_publish(writer, [2, 2], then=fail_after_two_files)

        assert current_partition(storage, table_uri, DS) == first
        after = read_partition(storage, table_uri, DS)
        assert after.equals(before)
        assert set(after.column("dag_run_id").to_pylist()) == {"run-1"}
        assert after.num_rows == 12
        assert files_under(writer.uri) == []
        assert files_under(partition_uri(table_uri, DS)) == [
            POINTER_FILE,
            *(f"{first.version}/{name}" for name in first.files),
        ]

    def test_a_failed_pointer_write_keeps_the_previous_version_whole(self, storage, table_uri, monkeypatch):
        first = publish(storage, table_uri, "run-1", [3, 4])
        before = read_partition(storage, table_uri, DS)
        write_file = Storage.write_file

        def pointer_refused(self: Storage, local_path: str, uri: str) -> None:
            if uri.endswith(POINTER_FILE):
                raise StorageWriteError(f"cannot write {uri}: refused")
            write_file(self, local_path, uri)

        monkeypatch.setattr(Storage, "write_file", pointer_refused)
        writer = PartitionWriter(storage, table_uri, DS, dag_run_id="run-2")
        with pytest.raises(StorageWriteError, match="refused"):
            run_publish(writer, [5, 5])

        assert current_partition(storage, table_uri, DS) == first
        assert read_partition(storage, table_uri, DS).equals(before)
        assert files_under(writer.uri) == []
        assert files_under(partition_uri(table_uri, DS)) == [
            POINTER_FILE,
            *(f"{first.version}/{name}" for name in first.files),
        ]

    def test_files_a_failed_publish_could_not_remove_go_with_the_next_publish(
        self, storage, table_uri, monkeypatch
    ):
        publish(storage, table_uri, "run-1", [2])
        delete_objects = Storage.delete_objects

        def refused(self: Storage, uris: list[str]) -> None:
            raise StorageWriteError("delete refused")

        monkeypatch.setattr(Storage, "delete_objects", refused)
        failed = PartitionWriter(storage, table_uri, DS, dag_run_id="run-2")
        with pytest.raises(PublishFailed):
            run_publish(failed, [3], then=fail)
        assert files_under(failed.uri) == ["part-00000.parquet"]
        assert read_partition(storage, table_uri, DS).column("dag_run_id").to_pylist() == ["run-1"] * 2

        monkeypatch.setattr(Storage, "delete_objects", delete_objects)
        third = publish(storage, table_uri, "run-3", [1])
        assert files_under(partition_uri(table_uri, DS)) == [
            POINTER_FILE,
            f"{third.version}/part-00000.parquet",
        ]

    def test_a_failed_clean_up_leaves_the_new_version_published(self, storage, table_uri, monkeypatch):
        first = publish(storage, table_uri, "run-1", [2, 2])
        delete_objects = Storage.delete_objects

        def refused(self: Storage, uris: list[str]) -> None:
            raise StorageWriteError("delete refused")

        monkeypatch.setattr(Storage, "delete_objects", refused)
        writer = PartitionWriter(storage, table_uri, DS, dag_run_id="run-2")
        with pytest.raises(StorageWriteError, match="delete refused"):
            run_publish(writer, [3])
        current = current_partition(storage, table_uri, DS)
        assert current is not None
        assert current.version == writer.version
        assert read_partition(storage, table_uri, DS).column("dag_run_id").to_pylist() == ["run-2"] * 3
        assert files_under(first.uri) == ["part-00000.parquet", "part-00001.parquet"]

        monkeypatch.setattr(Storage, "delete_objects", delete_objects)
        third = publish(storage, table_uri, "run-3", [1])
        assert files_under(partition_uri(table_uri, DS)) == [
            POINTER_FILE,
            f"{third.version}/part-00000.parquet",
        ]


class TestReadersDuringAPublish:
    def test_before_the_pointer_the_old_day_after_it_the_new_day(self, storage, table_uri, monkeypatch):
        """Stopped between the steps of a publish: a reader that resolves the pointer sees one whole version
        at every point; a reader that lists the day's files sees the new version's files as soon as they are
        written and the old ones until the clean-up, which is why readers must resolve the pointer."""
        publish(storage, table_uri, "run-1", [3, 3])
        seen: dict[str, Any] = {}
        write_pointer = partitions_module._write_pointer
        remove_other_versions = partitions_module.remove_other_versions

        def listing_reader() -> list[str]:
            table = pads.dataset(partition_uri(table_uri, DS), format="parquet").to_table()
            return sorted(set(table.column("dag_run_id").to_pylist()))

        def at_pointer(*args: object) -> None:
            seen["before pointer"] = read_partition(storage, table_uri, DS).column("dag_run_id").unique()
            seen["listed before pointer"] = listing_reader()
            write_pointer(*args)

        def at_clean_up(*args: object) -> int:
            seen["before clean-up"] = read_partition(storage, table_uri, DS).column("dag_run_id").unique()
            seen["listed before clean-up"] = listing_reader()
            return remove_other_versions(*args)

        monkeypatch.setattr(partitions_module, "_write_pointer", at_pointer)
        monkeypatch.setattr(partitions_module, "remove_other_versions", at_clean_up)
        publish(storage, table_uri, "run-2", [2, 2, 2])

        assert seen["before pointer"].to_pylist() == ["run-1"]
        assert seen["before clean-up"].to_pylist() == ["run-2"]
        # The new version's files exist before the pointer names them, and the old ones until the clean-up.
        assert seen["listed before pointer"] == ["run-1", "run-2"]
        assert seen["listed before clean-up"] == ["run-1", "run-2"]
        assert listing_reader() == ["run-2"]

    def test_a_version_deleted_while_it_is_read_is_read_again_from_the_new_pointer(
        self, storage, table_uri, monkeypatch
    ):
        publish(storage, table_uri, "run-1", [2, 2, 2])
        open_seekable = Storage.open_seekable
        republished: list[PublishedPartition] = []

        def republish_once(self: Storage, uri: str):
            # The reader has resolved run-1's pointer and opens its first file: run-2 replaces the day first.
            if not republished:
                republished.append(publish(storage, table_uri, "run-2", [5]))
            return open_seekable(self, uri)

        monkeypatch.setattr(Storage, "open_seekable", republish_once)
        table = read_partition(storage, table_uri, DS)
        assert republished
        assert table.column("dag_run_id").to_pylist() == ["run-2"] * 5

    def test_a_reader_looping_during_successive_publishes_never_sees_a_mix(self, storage, table_uri):
        versions = 30
        started = time.monotonic()
        reads, expected_rows = read_while_publishing(
            storage, Storage(), table_uri, versions, reads_between=3, settle_seconds=2
        )
        assert time.monotonic() - started < 20
        assert len(set(expected_rows.values())) == versions
        assert len(reads) >= 3 * (versions - 1)
        assert_whole_versions(reads, expected_rows)
        assert read_partition(storage, table_uri, DS).column("dag_run_id").unique().to_pylist() == [
            f"run-{versions - 1:02d}"
        ]


class TestEmptyAndMissingDays:
    def test_a_day_without_rows_is_one_empty_file_with_the_schema(self, storage, table_uri):
        publish(storage, table_uri, "run-1", [4])
        with PartitionWriter(storage, table_uri, DS, dag_run_id="run-2") as writer:
            published = writer.commit(SCHEMA)

        assert published.files == ("part-00000.parquet",)
        assert published.rows == 0
        assert pq.read_schema(published.file_uris[0]) == SCHEMA
        table = read_partition(storage, table_uri, DS)
        assert table.num_rows == 0
        assert table.schema == SCHEMA
        assert files_under(partition_uri(table_uri, DS)) == [
            POINTER_FILE,
            f"{published.version}/part-00000.parquet",
        ]

    @pytest.mark.parametrize(
        "content", [b"{not json", b"[]", b"null", b'{"ds": "2026-11-18"}', b'{"version": "v1", "files": 3}']
    )
    def test_a_corrupted_pointer_is_an_error_naming_it(self, storage, table_uri, content):
        publish(storage, table_uri, "run-1", [2])
        pointer = pointer_uri(table_uri, DS)
        Path(pointer).write_bytes(content)
        with pytest.raises(OutputFormatError, match=re.escape(pointer)):
            current_partition(storage, table_uri, DS)
        with pytest.raises(OutputFormatError, match="is not a partition pointer"):
            read_partition(storage, table_uri, DS)

    def test_a_day_never_published(self, storage, table_uri):
        assert current_partition(storage, table_uri, DS) is None
        assert partition_files(storage, table_uri, DS) == []
        with pytest.raises(StorageReadError, match=f"ds={DS} .*never published"):
            read_partition(storage, table_uri, DS)

    def test_a_day_with_only_a_failed_publish_is_never_published(self, storage, table_uri, monkeypatch):
        monkeypatch.setattr(Storage, "delete_objects", lambda self, uris: None)
        writer = PartitionWriter(storage, table_uri, DS, dag_run_id="run-1")
        with pytest.raises(PublishFailed):
            run_publish(writer, [2], then=fail)
        # Its files are left (the delete did nothing) but no pointer names them.
        assert files_under(writer.uri) == ["part-00000.parquet"]
        assert current_partition(storage, table_uri, DS) is None
        with pytest.raises(StorageReadError, match="never published"):
            read_partition(storage, table_uri, DS)


class TestVersionNames:
    def test_versions_sort_by_time_and_never_take_a_hive_column_name(self):
        base = datetime(2026, 11, 18, 6, 30, tzinfo=UTC)
        moments = [
            base,
            base + timedelta(microseconds=1),
            base + timedelta(seconds=1),
            base + timedelta(hours=20),
            base + timedelta(days=45),
            datetime(2027, 3, 1, 0, 0, tzinfo=UTC),
        ]
        names = [new_version(moment) for moment in moments]
        assert sorted(names) == names
        for name in names:
            assert re.fullmatch(r"v\d{8}T\d{12}Z-[0-9a-f]{8}", name), name
            assert "=" not in name
            assert "/" not in name
        assert len({new_version(base) for _ in range(50)}) == 50

    def test_a_time_in_another_zone_is_named_in_utc(self):
        local = datetime(2026, 11, 18, 8, 30, tzinfo=timezone(timedelta(hours=2)))
        assert new_version(local).startswith("v20261118T063000000000Z-")
        assert new_version(local) < new_version(datetime(2026, 11, 18, 6, 30, 0, 1, tzinfo=UTC))

    def test_a_writer_without_a_version_names_one_now(self, storage, table_uri):
        before = new_version()
        writer = PartitionWriter(storage, table_uri, DS)
        after = new_version()
        # The time part: v<YYYYMMDD>T<HHMMSSffffff>Z (the random suffix does not sort by time).
        assert before[:23] <= writer.version[:23] <= after[:23]

    def test_hive_discovery_of_a_published_table_finds_ds_and_no_version_column(
        self, storage, table_uri, monkeypatch
    ):
        publish(storage, table_uri, "run-a", [2, 3], ds="2026-11-17")
        publish(storage, table_uri, "run-b", [4], ds="2026-11-17")
        publish(storage, table_uri, "run-c", [1, 1, 1])
        # A failed publish whose files stayed: a listing reader reads them (the pointer would not).
        monkeypatch.setattr(Storage, "delete_objects", lambda self, uris: None)
        writer = PartitionWriter(storage, table_uri, DS, dag_run_id="run-x")
        with pytest.raises(PublishFailed):
            run_publish(writer, [2], then=fail)
        monkeypatch.undo()

        dataset = pads.dataset(table_uri, format="parquet", partitioning="hive")
        assert dataset.schema.names == SCHEMA.names
        assert dataset.schema.field("ds").type == pa.string()
        assert dataset.partitioning.schema.names == ["ds"]
        table = dataset.to_table()
        by_run = {
            run: sorted(set(table.filter(pads.field("dag_run_id") == run).column("ds").to_pylist()))
            for run in table.column("dag_run_id").unique().to_pylist()
        }
        assert by_run == {"run-b": ["2026-11-17"], "run-c": [DS], "run-x": [DS]}
        assert table.num_rows == 4 + 3 + 2

        # A table whose files have no ds column gets it from the directory names alone.
        bare = pa.schema([f for f in SCHEMA if f.name != "ds"])
        with PartitionWriter(storage, table_uri + "_bare", DS, dag_run_id="run-1") as bare_writer:
            bare_writer.write(rows("run-1", 0, 3).drop_columns(["ds"]))
            bare_writer.commit(bare)
        bare_table = pads.dataset(table_uri + "_bare", format="parquet", partitioning="hive").to_table()
        assert bare_table.column_names == [*bare.names, "ds"]
        assert bare_table.column("ds").to_pylist() == [DS] * 3
