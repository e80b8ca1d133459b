"""Helpers of the tests of versioned partitions (tests/unit/test_partitions.py locally,
tests/integration/test_partitions_s3.py on S3): days of numbered rows published by named runs, and a reader
looping while versions are published."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pyarrow as pa

from bedrock_batch.partitions import PartitionWriter, PublishedPartition, read_partition
from bedrock_batch.storage import Storage

DS = "2026-11-18"
SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.string()),
        pa.field("ds", pa.string()),
        pa.field("dag_run_id", pa.string()),
        pa.field("position", pa.int64()),
    ]
)

Read = tuple[tuple[str, ...], int, list[str]]


class PublishFailed(RuntimeError):
    pass


def rows(run: str, start: int, count: int, ds: str = DS) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"record_id": f"{run}-{i:05d}", "ds": ds, "dag_run_id": run, "position": i}
            for i in range(start, start + count)
        ],
        schema=SCHEMA,
    )


def run_publish(
    writer: PartitionWriter, sizes: list[int], then: Callable[[PartitionWriter], object] | None = None
) -> PublishedPartition:
    """Inside the writer's ``with``: a file per size, every row carrying the writer's run, then ``then``
    (which may raise), then the commit."""
    with writer:
        start = 0
        for size in sizes:
            writer.write(rows(str(writer.dag_run_id), start, size, writer.ds))
            start += size
        if then is not None:
            then(writer)
        return writer.commit(SCHEMA)


def publish(storage: Storage, table_uri: str, run: str, sizes: list[int], ds: str = DS) -> PublishedPartition:
    """One version of the day: a file per size, every row carrying ``run``."""
    return run_publish(PartitionWriter(storage, table_uri, ds, dag_run_id=run), sizes)


def fail(writer: PartitionWriter) -> None:
    raise PublishFailed("the run failed mid-publish")


def split_rows(total: int, files: int) -> list[int]:
    return [total // files + (1 if i < total % files else 0) for i in range(files)]


def read_while_publishing(
    storage: Storage,
    reader_storage: Storage,
    table_uri: str,
    versions: int,
    *,
    reads_between: int,
    settle_seconds: float,
) -> tuple[list[Read], dict[str, int]]:
    """Publish ``versions`` versions of the day (version n: 10 + n rows in 2 to 5 files, run ``run-NN``) while
    a thread reads the day in a loop; every read (its runs, row count, record ids) and each run's rows.

    Between two publishes the reader gets ``reads_between`` reads (or ``settle_seconds``), whatever the
    thread scheduling. Fails when the reader raised.
    """
    sizes = {f"run-{n:02d}": split_rows(10 + n, 2 + n % 4) for n in range(versions)}
    expected_rows = {run: sum(parts) for run, parts in sizes.items()}
    publish(storage, table_uri, "run-00", sizes["run-00"])

    stop = threading.Event()
    reads: list[Read] = []
    failures: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                table = read_partition(reader_storage, table_uri, DS)
                runs = tuple(sorted(set(table.column("dag_run_id").to_pylist())))
                reads.append((runs, table.num_rows, table.column("record_id").to_pylist()))
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for n in range(1, versions):
            already = len(reads)
            publish(storage, table_uri, f"run-{n:02d}", sizes[f"run-{n:02d}"])
            deadline = time.monotonic() + settle_seconds
            while len(reads) < already + reads_between and time.monotonic() < deadline and thread.is_alive():
                time.sleep(0.001)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert failures == []
    return reads, expected_rows


def assert_whole_versions(reads: list[Read], expected_rows: dict[str, int]) -> None:
    """Every read saw exactly one version, whole and in order; reads saw more than half of the versions."""
    for runs, num_rows, record_ids in reads:
        assert len(runs) == 1, f"one read saw rows of {runs}"
        (run,) = runs
        assert num_rows == expected_rows[run]
        assert record_ids == [f"{run}-{i:05d}" for i in range(expected_rows[run])]
    assert len({runs[0] for runs, _, _ in reads}) > len(expected_rows) // 2
