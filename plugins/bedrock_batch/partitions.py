"""A results table's date partitions, replaced as a whole whatever the number of files.

A day's rows live in a *version*: a prefix of its own under the partition,
``<table>/ds=<YYYY-MM-DD>/<version>/part-NNNNN.parquet``. The version a reader must read is named by one
small object, the partition's pointer ``<table>/ds=<YYYY-MM-DD>/_published.json``, and publishing a day is
(1) write every file of a new version, (2) replace the pointer, (3) delete what the pointer no longer names.
Replacing one object is atomic on S3 (a PUT) and locally (a rename), so a reader that resolves the pointer
(:func:`read_partition`, :func:`current_partition`) sees the old day or the new day, never half of one or
both; a publish that fails before step 2 leaves the previous version named and whole. Athena reads the same
version through the Glue partition's location, which the publish stage updates between steps 2 and 3 (one
``UpdatePartition``), so Athena never reads a deleted version.

Readers that list the partition's files themselves instead of resolving the pointer see one version at rest
only: during a publish they also see the new version's files as they are written. Days written before
versions (one ``part-00000.parquet`` directly under ``ds=``) read as a version of their own until they are
published again. One publish of a day at a time is expected (one run per day); when two overlap, the later
version wins and the other's commit fails without changing anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from bedrock_batch.errors import OutputFormatError
from bedrock_batch.storage import Storage, StorageReadError, StorageWriteError, is_s3_uri, join_uri, path_of

log = logging.getLogger(__name__)

POINTER_FILE = "_published.json"
PART_NAME = "part-{:05d}.parquet"
# Parquet row groups of the published files: large enough for Athena, small enough to read a group at a time.
ROW_GROUP_ROWS = 131_072
# A reader retries when the version it resolved was replaced (and deleted) while it read.
READ_ATTEMPTS = 3


def read_parquet(stream: IO[bytes], columns: Sequence[str] | None = None) -> pa.Table:
    """A whole Parquet file (``columns`` only, when given) from an open binary stream.

    Through ``ParquetFile.read``, not ``pq.read_table``: the latter's dataset scanner over a Python file
    object leaves a background thread that can abort the process at interpreter exit (pyarrow 26).
    """
    return pq.ParquetFile(stream).read(columns=list(columns) if columns else None)


def partition_uri(table_uri: str, ds: str) -> str:
    """The prefix of one date partition: ``<table_uri>/ds=<YYYY-MM-DD>/``."""
    return join_uri(table_uri, f"ds={ds}") + "/"


def pointer_uri(table_uri: str, ds: str) -> str:
    """The partition's pointer: ``<table_uri>/ds=<YYYY-MM-DD>/_published.json``."""
    return join_uri(partition_uri(table_uri, ds), POINTER_FILE)


def new_version(now: datetime | None = None) -> str:
    """A version name that sorts by time and never repeats: ``v<UTC time>-<8 hex>`` (no ``=``, so Hive-style
    partition discovery does not take it for a partition column)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"v{moment:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class PublishedPartition:
    """One published version of a day.

    :param ds: the day.
    :param version: the version's name; ``""`` for a day written before versions.
    :param uri: the prefix holding the version's files (ends with ``/``).
    :param files: the files' names under ``uri``, in order.
    :param rows: rows in all the files.
    :param dag_run_id: the run that published it, when known.
    :param published_at: when the pointer was written (ISO 8601, UTC), when known.
    """

    ds: str
    version: str
    uri: str
    files: tuple[str, ...]
    rows: int
    dag_run_id: str | None = None
    published_at: str | None = None

    @property
    def file_uris(self) -> list[str]:
        """The files' URIs, in order."""
        return [join_uri(self.uri, name) for name in self.files]

    def to_dict(self) -> dict[str, Any]:
        """The pointer's JSON document."""
        return {
            "ds": self.ds,
            "version": self.version,
            "uri": self.uri,
            "files": list(self.files),
            "rows": self.rows,
            "dag_run_id": self.dag_run_id,
            "published_at": self.published_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PublishedPartition:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            ds=str(data["ds"]),
            version=str(data["version"]),
            uri=str(data["uri"]),
            files=tuple(str(name) for name in data["files"]),
            rows=int(data["rows"]),
            dag_run_id=data.get("dag_run_id"),
            published_at=data.get("published_at"),
        )


@dataclass
class PartitionWriter:
    """Write a new version of one day, file by file, then make it the day's version in one step.

    Use as a context manager: leaving the block with an exception deletes the files written so far and
    leaves the previous version named and whole; :meth:`commit` makes the new one current::

        with PartitionWriter(storage, table_uri, ds, dag_run_id=run_id) as writer:
            for table in parts:
                writer.write(table)
            published = writer.commit(schema)

    :param storage: local and S3 access.
    :param table_uri: the table's root (``s3://bucket/prefix/call_summaries``).
    :param ds: the day.
    :param dag_run_id: the run publishing, recorded in the pointer.
    :param compression: Parquet compression of the files.
    """

    storage: Storage
    table_uri: str
    ds: str
    dag_run_id: str | None = None
    compression: str = "zstd"
    version: str = field(default_factory=new_version)
    _files: list[str] = field(default_factory=list)
    _rows: int = 0
    _committed: PublishedPartition | None = None

    @property
    def uri(self) -> str:
        """The prefix of the new version's files."""
        return join_uri(partition_uri(self.table_uri, self.ds), self.version) + "/"

    def write(self, table: pa.Table) -> str:
        """Write one file of the new version; return its URI.

        :param table: the file's rows (every file of a version has the same schema).
        """
        if self._committed is not None:
            raise RuntimeError("this version is published already")
        name = PART_NAME.format(len(self._files))
        target = join_uri(self.uri, name)
        with tempfile.TemporaryDirectory(prefix="bedrock-batch-publish-") as tmp:
            local = os.path.join(tmp, name)
            pq.write_table(table, local, compression=self.compression, row_group_size=ROW_GROUP_ROWS)
            self.storage.write_file(local, target)
        self._files.append(name)
        self._rows += table.num_rows
        return target

    def commit(
        self,
        schema: pa.Schema,
        on_published: Callable[[PublishedPartition], None] | None = None,
    ) -> PublishedPartition:
        """Make the written files the day's version (one write of the pointer), then delete the day's older
        files; return the version.

        :param schema: the table's schema, for the empty file a day without rows gets.
        :param on_published: called with the version once the pointer names it and before the older files
            are deleted (the Glue partition moves to the new version there, so Athena never reads a deleted
            version). When it raises, the older files stay.
        :raises StorageWriteError: when another publish of the day removed this version's files, or published
            a newer version, while this one was written: nothing is changed.
        """
        if self._committed is not None:
            return self._committed
        if not self._files:
            self.write(schema.empty_table())
        self._check_still_current()
        published = PublishedPartition(
            ds=self.ds,
            version=self.version,
            uri=self.uri,
            files=tuple(self._files),
            rows=self._rows,
            dag_run_id=self.dag_run_id,
            published_at=datetime.now(UTC).isoformat(),
        )
        _write_pointer(self.storage, pointer_uri(self.table_uri, self.ds), published)
        self._committed = published
        if on_published is not None:
            on_published(published)
        removed = remove_other_versions(self.storage, self.table_uri, self.ds, published)
        log.info(
            "published %d rows in %d file(s) as version %s of ds=%s (%d older file(s) removed)",
            published.rows,
            len(published.files),
            published.version,
            self.ds,
            removed,
        )
        return published

    def _check_still_current(self) -> None:
        """Refuse to publish over a newer version, or a version whose files another publish removed (two
        publishes of one day at once: the later one wins, the other changes nothing)."""
        current = current_partition(self.storage, self.table_uri, self.ds)
        if current is not None and current.version > self.version:
            self.abort()
            raise StorageWriteError(
                f"ds={self.ds} of {self.table_uri}: version {current.version} was published while "
                f"{self.version} was written; this one is dropped"
            )
        try:
            present = {o.name for o in self.storage.list_objects(self.uri)}
        except StorageReadError:
            present = set()
        if not present.issuperset(self._files):
            raise StorageWriteError(
                f"ds={self.ds} of {self.table_uri}: files of version {self.version} were removed while it "
                "was written (another publish of the day ran at the same time); publish again"
            )

    def abort(self) -> None:
        """Delete the files written so far (the day's current version is untouched)."""
        if self._committed is not None or not self._files:
            return
        try:
            self.storage.delete_objects([join_uri(self.uri, name) for name in self._files])
        except Exception:  # the next publish of the day removes what is left
            log.warning("could not remove the %d unpublished file(s) under %s", len(self._files), self.uri)
        self._files.clear()

    def __enter__(self) -> PartitionWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is not None:
            self.abort()


def _write_pointer(storage: Storage, uri: str, published: PublishedPartition) -> None:
    with tempfile.NamedTemporaryFile(prefix="bedrock-batch-pointer-", delete=False) as tmp:
        tmp.write(orjson.dumps(published.to_dict(), option=orjson.OPT_INDENT_2))
    try:
        storage.write_file(tmp.name, uri)
    finally:
        os.unlink(tmp.name)


def _newer(name: str, version: str) -> bool:
    """Whether a file of the day belongs to a version newer than ``version`` (a publish under way)."""
    directory, _, _ = name.partition("/")
    return bool(version) and name != directory and directory > version


def remove_other_versions(storage: Storage, table_uri: str, ds: str, keep: PublishedPartition) -> int:
    """Delete every file of the day but the pointer, ``keep``'s files and those of newer versions (a publish
    under way): older versions, files of a publish that failed, a file written before versions; return how
    many."""
    keep_uris = set(keep.file_uris) | {pointer_uri(table_uri, ds)}
    try:
        stale = [
            o.uri
            for o in storage.list_objects(partition_uri(table_uri, ds))
            if o.uri not in keep_uris and not _newer(o.name, keep.version)
        ]
    except StorageReadError:
        return 0
    if stale:
        storage.delete_objects(stale)
        _remove_empty_directories(stale, partition_uri(table_uri, ds))
    return len(stale)


def _remove_empty_directories(deleted: Sequence[str], day: str) -> None:
    """Locally, the version directories the deleted files leave empty (S3 has no directories to leave)."""
    if is_s3_uri(day):
        return
    root = os.path.normpath(path_of(day))
    for directory in sorted({os.path.dirname(path_of(uri)) for uri in deleted}, reverse=True):
        if os.path.normpath(directory) != root:
            with contextlib.suppress(OSError):  # not empty: a newer version, or a file that stayed
                os.rmdir(directory)


def current_partition(storage: Storage, table_uri: str, ds: str) -> PublishedPartition | None:
    """The day's current version: what its pointer names; for a day written before versions, its Parquet
    files directly under ``ds=``; ``None`` when the day was never published.

    :raises OutputFormatError: when the pointer exists but is not a pointer.
    """
    uri = pointer_uri(table_uri, ds)
    try:
        with storage.open_read(uri) as stream:
            data = stream.read()
    except StorageReadError:
        return _unversioned(storage, table_uri, ds)
    try:
        return PublishedPartition.from_dict(orjson.loads(data))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise OutputFormatError(f"{uri} is not a partition pointer: {exc}") from exc


def _unversioned(storage: Storage, table_uri: str, ds: str) -> PublishedPartition | None:
    prefix = partition_uri(table_uri, ds)
    try:
        names = [
            o.name for o in storage.list_objects(prefix) if "/" not in o.name and o.name.endswith(".parquet")
        ]
    except StorageReadError:
        return None
    if not names:
        return None
    rows = 0
    for name in names:
        with storage.open_seekable(join_uri(prefix, name)) as stream:
            rows += pq.ParquetFile(stream).metadata.num_rows
    return PublishedPartition(ds=ds, version="", uri=prefix, files=tuple(names), rows=rows)


def partition_files(storage: Storage, table_uri: str, ds: str) -> list[str]:
    """The URIs of the files of the day's current version; empty when the day was never published."""
    current = current_partition(storage, table_uri, ds)
    return current.file_uris if current else []


def read_partition(
    storage: Storage, table_uri: str, ds: str, columns: Sequence[str] | None = None
) -> pa.Table:
    """The rows of the day's current version, all from one version.

    A version replaced and deleted while it is read is read again from the new pointer.

    :param storage: local and S3 access.
    :param table_uri: the table's root.
    :param ds: the day.
    :param columns: the columns to read; ``None``: all.
    :raises StorageReadError: when the day was never published, or its files cannot be read.
    """
    for attempt in range(1, READ_ATTEMPTS + 1):
        current = current_partition(storage, table_uri, ds)
        if current is None:
            raise StorageReadError(f"ds={ds} of {table_uri} was never published")
        try:
            tables = []
            for uri in current.file_uris:
                with storage.open_seekable(uri) as stream:
                    tables.append(read_parquet(stream, columns))
            return pa.concat_tables(tables)
        except StorageReadError:
            if attempt == READ_ATTEMPTS or current_partition(storage, table_uri, ds) == current:
                raise
            log.info("ds=%s was republished while it was read; reading the new version", ds)
    raise AssertionError("unreachable")
