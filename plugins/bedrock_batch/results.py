"""Stage 6 on storage: read job outputs and manifests, assemble the results table, publish a partition.

Every input row ends in the table exactly once: succeeded, failed with its code, or quarantined with a reason.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bedrock_batch.call_summaries import SUMMARY_FIELDS, summary_columns
from bedrock_batch.collect import Manifest, iter_output_batches, join_results, parse_manifest
from bedrock_batch.models import ModelFamily
from bedrock_batch.storage import Storage, StorageReadError, join_uri

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json.out"
OUTPUT_SUFFIX = ".jsonl.out"
PARTITION_FILE = "part-00000.parquet"
QUARANTINED = "quarantined"
QUARANTINE_COLUMNS = ("source_position", "source_key", "record_id", "reason", "detail")

# Columns of the published table, in order; configured passthrough columns follow them.
RESULT_SCHEMA = pa.schema(
    [
        pa.field("call_id", pa.string()),
        pa.field("record_id", pa.string()),
        pa.field("ds", pa.string()),
        pa.field("model_id", pa.string()),
        *SUMMARY_FIELDS,
        pa.field("raw_text", pa.string()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("stop_reason", pa.string()),
        pa.field("status", pa.string()),
        pa.field("error_code", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("retryable", pa.bool_()),
        pa.field("job_arn", pa.string()),
        pa.field("dag_run_id", pa.string()),
        pa.field("processed_at", pa.timestamp("us", tz="UTC")),
        pa.field("source_position", pa.string()),
    ]
)


@dataclass(frozen=True)
class JobOutput:
    """Where one job's (or the on-demand fallback's) output lines are.

    :param label: the job ARN, or a label such as ``on-demand`` for fallback output.
    :param uri: the prefix holding the ``.jsonl.out`` files (``<outputS3Uri>/<jobId>/``) or one file.
    """

    label: str
    uri: str


def read_output_batches(
    storage: Storage, outputs: Sequence[JobOutput], family: ModelFamily
) -> Iterator[pa.RecordBatch]:
    """Record batches of every output line of ``outputs``, in the order given (oldest job first).

    A job whose output prefix has no files (the job wrote nothing, or its output was lost) contributes no
    rows: its records surface as ``missing`` in the join and are retried.

    :param storage: local and S3 access.
    :param outputs: the outputs to read.
    :param family: the model family of the jobs.
    """
    for output in outputs:
        files = 0
        try:
            objects = [o for o in storage.list_objects(output.uri) if o.name.endswith(OUTPUT_SUFFIX)]
        except StorageReadError:
            objects = []
        for obj in objects:
            if obj.name.endswith(MANIFEST_NAME):
                continue
            files += 1
            with storage.open_read(obj.uri) as stream:
                yield from iter_output_batches(stream, family, job_arn=output.label)
        log.info("read %d output file(s) of %s", files, output.label)


def read_manifest(storage: Storage, output_uri: str) -> Manifest | None:
    """The job's ``manifest.json.out``, or None when it has none (failed, stopped early, fallback)."""
    try:
        with storage.open_read(join_uri(output_uri, MANIFEST_NAME)) as stream:
            return parse_manifest(stream.read())
    except StorageReadError:
        return None


def load_index(storage: Storage, uri: str) -> pa.Table:
    """The record index Parquet written by prepare."""
    with storage.open_seekable(uri) as stream:
        return pq.read_table(stream)


def join_outputs(
    storage: Storage, index_uri: str, outputs: Sequence[JobOutput], family: ModelFamily
) -> pa.Table:
    """Every output line of ``outputs`` joined to the record index at ``index_uri`` (see
    :func:`~bedrock_batch.collect.join_results`): one row per record, ``missing`` where no output has it.

    :param storage: local and S3 access.
    :param index_uri: the record index prepare wrote.
    :param outputs: the outputs to read, oldest first (a later success replaces an earlier failure).
    :param family: the model family of the jobs.
    """
    return join_results(load_index(storage, index_uri), read_output_batches(storage, outputs, family))


def load_quarantine(storage: Storage, uri: str) -> pa.Table:
    """The quarantine JSONL as a table (``source_position``, ``source_key``, ``record_id``, ``reason``,
    ``detail``); empty when prepare quarantined nothing."""
    rows: list[dict[str, Any]] = []
    with storage.open_read(uri) as stream:
        rows.extend(orjson.loads(line) for line in stream if line.strip())
    schema = pa.schema([(name, pa.string()) for name in QUARANTINE_COLUMNS])
    return pa.Table.from_pylist(rows, schema=schema)


def assemble_call_summaries(
    joined: pa.Table,
    quarantine: pa.Table,
    *,
    ds: str,
    model_id: str,
    dag_run_id: str,
    processed_at: datetime,
    passthrough: Sequence[str] = (),
) -> pa.Table:
    """The ``call_summaries`` table: joined records with their parsed summaries, then the quarantined rows.

    :param joined: the output of :func:`bedrock_batch.collect.join_results` over all rounds.
    :param quarantine: :func:`load_quarantine` output.
    :param ds: the run's date partition.
    :param model_id: the model the records were sent to.
    :param dag_run_id: the Airflow run that produced the rows.
    :param processed_at: when the table was assembled (UTC).
    :param passthrough: passthrough columns present in ``joined``, appended after :data:`RESULT_SCHEMA`.
    """
    summaries = summary_columns(joined["text"].to_pylist())
    n = joined.num_rows
    columns: dict[str, Any] = {
        "call_id": joined["source_key"],
        "record_id": joined["record_id"],
        "ds": pa.array([ds] * n, pa.string()),
        "model_id": pa.array([model_id] * n, pa.string()),
        **{name: summaries[name] for name in SUMMARY_FIELDS.names},
        # Keep what the model said when it could not be parsed, so nothing billed is lost.
        "raw_text": pc.if_else(
            pc.is_valid(summaries["parse_error"]), joined["text"], pa.nulls(n, pa.string())
        ),
        **{name: joined[name] for name in ("input_tokens", "output_tokens", "stop_reason", "status")},
        **{name: joined[name] for name in ("error_code", "error_message", "retryable", "job_arn")},
        "dag_run_id": pa.array([dag_run_id] * n, pa.string()),
        "processed_at": pa.array([processed_at] * n, pa.timestamp("us", tz="UTC")),
        "source_position": joined["source_position"],
    }
    extra = [joined.schema.field(name) for name in passthrough]
    schema = pa.schema([*RESULT_SCHEMA, *extra])
    records = pa.table({**columns, **{f.name: joined[f.name] for f in extra}}, schema=schema)

    q = quarantine.num_rows
    quarantined = {
        name: pa.nulls(q, schema.field(name).type)
        for name in schema.names
        if name not in ("call_id", "record_id", "ds", "model_id", "status", "error_code", "error_message")
    }
    quarantined.update(
        {
            "call_id": quarantine["source_key"],
            "record_id": quarantine["record_id"],
            "ds": pa.array([ds] * q, pa.string()),
            "model_id": pa.array([model_id] * q, pa.string()),
            "status": pa.array([QUARANTINED] * q, pa.string()),
            "error_code": quarantine["reason"],
            "error_message": quarantine["detail"],
            "retryable": pa.array([False] * q, pa.bool_()),
            "dag_run_id": pa.array([dag_run_id] * q, pa.string()),
            "processed_at": pa.array([processed_at] * q, pa.timestamp("us", tz="UTC")),
            "source_position": quarantine["source_position"],
        }
    )
    quarantined_table = pa.table({name: quarantined[name] for name in schema.names}, schema=schema)
    return pa.concat_tables([records, quarantined_table])


def partition_uri(table_uri: str, ds: str) -> str:
    """The prefix of one date partition: ``<table_uri>/ds=<YYYY-MM-DD>/``."""
    return join_uri(table_uri, f"ds={ds}") + "/"


def write_partition(storage: Storage, table: pa.Table, table_uri: str, ds: str) -> str:
    """Replace the ``ds`` partition of the table at ``table_uri`` with ``table``; return the file's URI.

    The partition is one Parquet object, so replacing it is one atomic PUT (multipart uploads complete
    atomically): readers see the old rows or the new rows, never both or neither. Files left in the
    partition by other writers are removed afterwards.

    :param storage: local and S3 access.
    :param table: the partition's rows.
    :param table_uri: the table's root (``s3://bucket/prefix/call_summaries``).
    :param ds: the partition's date.
    """
    target = join_uri(partition_uri(table_uri, ds), PARTITION_FILE)
    with tempfile.TemporaryDirectory(prefix="bedrock-batch-results-") as tmp:
        local = os.path.join(tmp, PARTITION_FILE)
        pq.write_table(table, local, compression="zstd")
        storage.write_file(local, target)
    try:
        stale = [o.uri for o in storage.list_objects(partition_uri(table_uri, ds)) if o.uri != target]
    except StorageReadError:
        stale = []
    if stale:
        storage.delete_objects(stale)
    log.info("published %d rows to %s (%d stale file(s) removed)", table.num_rows, target, len(stale))
    return target


def write_json(storage: Storage, data: Mapping[str, Any] | Iterable[Any], uri: str) -> None:
    """Write a small JSON document (reports, manifests) to ``uri``."""
    write_bytes(storage, orjson.dumps(data, option=orjson.OPT_INDENT_2), uri)


def write_bytes(storage: Storage, data: bytes, uri: str) -> None:
    """Write a small document to ``uri`` through a temporary local file."""
    with tempfile.NamedTemporaryFile(prefix="bedrock-batch-", delete=False) as tmp:
        tmp.write(data)
    try:
        storage.write_file(tmp.name, uri)
    finally:
        os.unlink(tmp.name)


_RECORD_ID = re.compile(rb'"recordId"\s*:\s*"([^"\\]+)"')


def write_retry_spool(
    storage: Storage, input_uris: Iterable[str], record_ids: Iterable[str], spool_path: str
) -> npt.NDArray[np.int64]:
    """Copy the input lines of ``record_ids`` from the round's input files into a new local spool.

    The retry round resubmits the very lines that were sent before (same record ids, same bodies), so the
    join later lets a retried success replace the earlier failure.

    :param storage: local and S3 access.
    :param input_uris: the round's input: shard prefixes and on-demand files.
    :param record_ids: the records to resubmit.
    :param spool_path: the local spool to write.
    :return: the byte size of each spool line, the input of :func:`bedrock_batch.split.plan_shards`.
    """
    wanted = set(record_ids)
    sizes: list[int] = []
    with open(spool_path, "wb") as spool:
        for uri in input_uris:
            for obj in storage.list_objects(uri):
                if not obj.name.endswith(".jsonl"):
                    continue
                with storage.open_read(obj.uri) as stream:
                    for line in stream:
                        match = _RECORD_ID.search(line)
                        if match and match.group(1).decode() in wanted:
                            wanted.discard(match.group(1).decode())
                            if not line.endswith(b"\n"):
                                line += b"\n"
                            spool.write(line)
                            sizes.append(len(line))
    if wanted:
        log.warning("%d record(s) to retry were not found in the round's input files", len(wanted))
    return np.asarray(sizes, dtype=np.int64)
