"""Stage 6 on storage: read job outputs and manifests, assemble the results table, publish a partition.

Every input row ends in the table exactly once: succeeded, invalid_output with its first violation, failed
with its code, or quarantined with a reason. The table's columns come from the run's reply schema
(:func:`result_schema`), so the library knows schemas, not calls.
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

from bedrock_batch.collect import (
    FAILED,
    NO_OUTPUT,
    NO_RECORD_ID,
    UNPARSEABLE_OUTPUT,
    UNREADABLE_LINE,
    Manifest,
    iter_output_batches,
    join_results,
    parse_manifest,
)
from bedrock_batch.errors import ConfigError, OutputFormatError
from bedrock_batch.gc_pause import CollectorPause
from bedrock_batch.models import ModelFamily
from bedrock_batch.partitions import partition_uri, read_parquet
from bedrock_batch.replies import RESULT_COLUMNS, SUCCEEDED, ReplyFormat
from bedrock_batch.schemas import to_arrow
from bedrock_batch.stage_results import ManifestMismatch
from bedrock_batch.storage import Storage, StorageReadError, join_uri

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json.out"
OUTPUT_SUFFIX = ".jsonl.out"
PARTITION_FILE = "part-00000.parquet"
QUARANTINED = "quarantined"
QUARANTINE_COLUMNS = ("source_position", "source_key", "record_id", "reason", "detail")

# Rows whose reply columns are built at once: the parsed replies of one chunk are in memory at a time.
ASSEMBLE_CHUNK_ROWS = 8192

# The types of the results table's own columns (replies.RESULT_COLUMNS), the key column's aside.
_RESULT_TYPES: Mapping[str, pa.DataType] = {
    "record_id": pa.string(),
    "ds": pa.string(),
    "model_id": pa.string(),
    "parse_error": pa.string(),
    "raw_text": pa.string(),
    "input_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "stop_reason": pa.string(),
    "status": pa.string(),
    "error_code": pa.string(),
    "error_message": pa.string(),
    "retryable": pa.bool_(),
    "job_arn": pa.string(),
    "dag_run_id": pa.string(),
    "processed_at": pa.timestamp("us", tz="UTC"),
    "source_position": pa.string(),
}
assert tuple(_RESULT_TYPES) == RESULT_COLUMNS
# Where the reply columns go: after these.
_BEFORE_REPLY = 3


def result_schema(
    reply: ReplyFormat, key_column: str = "source_key", passthrough: Sequence[pa.Field] = ()
) -> pa.Schema:
    """The results table's columns, in order: ``<key_column>``, ``record_id``, ``ds``, ``model_id``, the
    reply's columns (:attr:`~bedrock_batch.replies.ReplyFormat.columns`), ``parse_error``, ``raw_text``,
    ``input_tokens``, ``output_tokens``, ``stop_reason``, ``status``, ``error_code``, ``error_message``,
    ``retryable``, ``job_arn``, ``dag_run_id``, ``processed_at``, ``source_position``, then the passthrough
    columns.

    :param reply: the run's reply format.
    :param key_column: the name of the source key column.
    :param passthrough: the passthrough columns, with their types.
    :raises ConfigError: when the key or a passthrough column is named like another column.
    :raises SchemaError: when a reply property is named like another column.
    """
    passthrough_names = [f.name for f in passthrough]
    taken = [key_column, *RESULT_COLUMNS, *passthrough_names]
    lowered = [name.lower() for name in taken]
    clashes = sorted({name for name in taken if lowered.count(name.lower()) > 1})
    if clashes:
        raise ConfigError(
            f"results column name(s) {clashes} would appear twice; choose another key_column or rename the "
            "passthrough columns"
        )
    reply.check_columns(taken)
    own = [pa.field(name, data_type) for name, data_type in _RESULT_TYPES.items()]
    return pa.schema(
        [
            pa.field(key_column, pa.string()),
            *own[:_BEFORE_REPLY],
            *reply.columns,
            *own[_BEFORE_REPLY:],
            *passthrough,
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


@dataclass
class OutputCounts:
    """What one output (a job's, or the fallback's) held, counted as its lines were read.

    :param total: output lines.
    :param success: lines with a ``modelOutput`` (conforming or not, readable or not).
    :param error: lines with an ``error`` object.
    """

    total: int = 0
    success: int = 0
    error: int = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Count the lines of one batch of :data:`~bedrock_batch.collect.OUTPUT_SCHEMA`."""
        status, code = batch.column("status"), batch.column("error_code")
        answered = pc.or_kleene(pc.not_equal(status, FAILED), pc.equal(code, UNPARSEABLE_OUTPUT))
        self.total += batch.num_rows
        self.success += int(pc.sum(pc.fill_null(answered, False)).as_py() or 0)
        own_codes = pa.array(sorted(_OWN_ERROR_CODES))
        errored = pc.and_kleene(pc.equal(status, FAILED), pc.invert(pc.is_in(code, value_set=own_codes)))
        self.error += int(pc.sum(pc.fill_null(errored, False)).as_py() or 0)


# Failed lines that are not error lines of the service: collect's own codes for lines it could not read.
_OWN_ERROR_CODES = frozenset({UNREADABLE_LINE, NO_RECORD_ID, NO_OUTPUT, UNPARSEABLE_OUTPUT})


def read_output_batches(
    storage: Storage,
    outputs: Sequence[JobOutput],
    family: ModelFamily,
    reply: ReplyFormat | None = None,
    counts: dict[str, OutputCounts] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Record batches of every output line of ``outputs``, in the order given (oldest job first).

    A job whose output prefix has no files (the job wrote nothing, or its output was lost) contributes no
    rows: its records surface as ``missing`` in the join and are retried.

    :param storage: local and S3 access.
    :param outputs: the outputs to read.
    :param family: the model family of the jobs.
    :param reply: the run's reply format, every reply is read with; ``None``: free text.
    :param counts: filled with what each output held, by its label, as its lines are read (see
        :func:`reconcile_manifests`).
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
                for batch in iter_output_batches(stream, family, reply=reply, job_arn=output.label):
                    if counts is not None:
                        counts.setdefault(output.label, OutputCounts()).add(batch)
                    yield batch
        log.info("read %d output file(s) of %s", files, output.label)


def read_manifest(storage: Storage, output_uri: str) -> Manifest | None:
    """The job's ``manifest.json.out``, or None when it has none (failed, stopped early, fallback)."""
    try:
        with storage.open_read(join_uri(output_uri, MANIFEST_NAME)) as stream:
            return parse_manifest(stream.read())
    except StorageReadError:
        return None


@dataclass(frozen=True)
class ManifestCheck:
    """Each job's manifest against what its output held.

    :param mismatches: one :class:`~bedrock_batch.stage_results.ManifestMismatch` per job whose manifest
        counts differ from its output lines.
    :param missing: the ids of the jobs without a readable manifest (noted, not an error: a job stopped or
        failed early writes none).
    """

    mismatches: list[ManifestMismatch]
    missing: list[str]


def reconcile_manifests(
    storage: Storage, outputs: Sequence[JobOutput], counts: Mapping[str, OutputCounts]
) -> ManifestCheck:
    """Compare each job's ``manifest.json.out`` with what was read from its output.

    A job matches when its output has as many lines as the manifest's processed records (its total records
    when the manifest has no processed count), as many replies as its success count and as many error lines
    as its error count; counts the manifest lacks are not compared. The on-demand outputs have no manifest
    and are left out. Never raises for what it finds: the result is for the run report.

    :param storage: local and S3 access.
    :param outputs: the outputs that were read (jobs are those labelled with their ARN).
    :param counts: what each output held (see :func:`read_output_batches`).
    """
    mismatches: list[ManifestMismatch] = []
    missing: list[str] = []
    for output in outputs:
        if not output.label.startswith("arn:"):
            continue
        job_id = output.label.rsplit("/", 1)[-1]
        try:
            manifest = read_manifest(storage, output.uri)
        except OutputFormatError as err:
            log.warning("job %s: its manifest cannot be read (%s)", job_id, err)
            manifest = None
        if manifest is None:
            missing.append(job_id)
            continue
        read = counts.get(output.label, OutputCounts())
        lines = (
            manifest.processed_records if manifest.processed_records is not None else manifest.total_records
        )
        expected = (lines, manifest.succeeded_records, manifest.failed_records)
        found = (read.total, read.success, read.error)
        if all(want is None or want == got for want, got in zip(expected, found, strict=True)):
            continue
        log.warning(
            "job %s: its manifest says %s records processed (%s succeeded, %s failed), its output holds %s "
            "lines (%s replies, %s errors)",
            job_id,
            *expected,
            *found,
        )
        mismatches.append(
            {
                "job_id": job_id,
                "manifest": {
                    "total": manifest.total_records,
                    "processed": manifest.processed_records,
                    "success": manifest.succeeded_records,
                    "error": manifest.failed_records,
                },
                "read": {"total": read.total, "success": read.success, "error": read.error},
            }
        )
    return ManifestCheck(mismatches=mismatches, missing=missing)


def load_index(storage: Storage, uri: str) -> pa.Table:
    """The record index Parquet written by prepare."""
    with storage.open_seekable(uri) as stream:
        return read_parquet(stream)


def join_outputs(
    storage: Storage,
    index_uri: str,
    outputs: Sequence[JobOutput],
    family: ModelFamily,
    reply: ReplyFormat | None = None,
    counts: dict[str, OutputCounts] | None = None,
) -> pa.Table:
    """Every output line of ``outputs`` joined to the record index at ``index_uri`` (see
    :func:`~bedrock_batch.collect.join_results`): one row per record, ``missing`` where no output has it.

    :param storage: local and S3 access.
    :param index_uri: the record index prepare wrote.
    :param outputs: the outputs to read, oldest first (a later success replaces an earlier failure).
    :param family: the model family of the jobs.
    :param reply: the run's reply format; ``None``: free text.
    :param counts: filled with what each output held (see :func:`read_output_batches`).
    """
    batches = read_output_batches(storage, outputs, family, reply, counts)
    return join_results(load_index(storage, index_uri), batches)


def load_quarantine(storage: Storage, uri: str) -> pa.Table:
    """The quarantine JSONL as a table (``source_position``, ``source_key``, ``record_id``, ``reason``,
    ``detail``); empty when prepare quarantined nothing."""
    rows: list[dict[str, Any]] = []
    with storage.open_read(uri) as stream:
        rows.extend(orjson.loads(line) for line in stream if line.strip())
    schema = pa.schema([(name, pa.string()) for name in QUARANTINE_COLUMNS])
    return pa.Table.from_pylist(rows, schema=schema)


def assemble_results(
    joined: pa.Table,
    quarantine: pa.Table,
    *,
    reply: ReplyFormat,
    key_column: str = "source_key",
    ds: str,
    model_id: str,
    dag_run_id: str,
    processed_at: datetime,
    passthrough: Sequence[str] = (),
) -> pa.Table:
    """The results table of a run (:func:`result_schema`): the joined records, then the quarantined rows.

    A ``succeeded`` record's reply becomes the reply columns: typed columns of the reply schema
    (:func:`~bedrock_batch.schemas.to_arrow`), or the reply in ``text`` without one. Every other record has
    null reply columns; what its model returned (and was billed for) is kept in ``raw_text``: the reply that
    did not conform (``invalid_output``, with ``parse_error``), or a body the model family could not read.

    :param joined: the output of :func:`bedrock_batch.collect.join_results` over all rounds, read with
        ``reply``.
    :param quarantine: :func:`load_quarantine` output.
    :param reply: the run's reply format (:meth:`~bedrock_batch.replies.ReplyFormat.from_run`).
    :param key_column: the name of the source key column (``source_key`` in the record index).
    :param ds: the run's date partition.
    :param model_id: the model the records were sent to.
    :param dag_run_id: the Airflow run that produced the rows.
    :param processed_at: when the table was assembled (UTC).
    :param passthrough: passthrough columns present in ``joined``, appended last.
    :raises ConfigError: when the key or a passthrough column is named like another column.
    :raises SchemaError: when a reply property is named like another column.
    """
    schema = result_schema(reply, key_column, [joined.schema.field(name) for name in passthrough])
    n = joined.num_rows
    succeeded = pc.fill_null(pc.equal(joined["status"], SUCCEEDED), False)
    columns: dict[str, Any] = {
        key_column: joined["source_key"],
        "record_id": joined["record_id"],
        "ds": _repeat(ds, pa.string(), n),
        "model_id": _repeat(model_id, pa.string(), n),
        **_reply_columns(joined, succeeded, reply),
        "parse_error": joined["parse_error"],
        # Keep what the model said when it is not in the reply columns, so nothing billed is lost.
        "raw_text": pc.if_else(succeeded, pa.nulls(n, pa.string()), joined["text"]),
        **{name: joined[name] for name in ("input_tokens", "output_tokens", "stop_reason", "status")},
        **{name: joined[name] for name in ("error_code", "error_message", "retryable", "job_arn")},
        "dag_run_id": _repeat(dag_run_id, pa.string(), n),
        "processed_at": _repeat(processed_at, pa.timestamp("us", tz="UTC"), n),
        "source_position": joined["source_position"],
        **{name: joined[name] for name in passthrough},
    }
    records = pa.table({name: columns[name] for name in schema.names}, schema=schema)

    q = quarantine.num_rows
    quarantined = {name: pa.nulls(q, schema.field(name).type) for name in schema.names}
    quarantined.update(
        {
            key_column: quarantine["source_key"],
            "record_id": quarantine["record_id"],
            "ds": _repeat(ds, pa.string(), q),
            "model_id": _repeat(model_id, pa.string(), q),
            "status": pa.array([QUARANTINED] * q, pa.string()),
            "error_code": quarantine["reason"],
            "error_message": quarantine["detail"],
            "retryable": pa.array([False] * q, pa.bool_()),
            "dag_run_id": _repeat(dag_run_id, pa.string(), q),
            "processed_at": _repeat(processed_at, pa.timestamp("us", tz="UTC"), q),
            "source_position": quarantine["source_position"],
        }
    )
    quarantined_table = pa.table({name: quarantined[name] for name in schema.names}, schema=schema)
    return pa.concat_tables([records, quarantined_table])


def _repeat(value: Any, data_type: pa.DataType, count: int) -> pa.Array:
    """``count`` copies of one value, built in Arrow (a Python list of them costs more than the rest)."""
    return pa.repeat(pa.scalar(value, data_type), count)


def _reply_columns(joined: pa.Table, succeeded: pa.ChunkedArray, reply: ReplyFormat) -> dict[str, Any]:
    """The reply columns of the joined records: null unless ``succeeded``."""
    if reply.schema is None:
        return {"text": pc.if_else(succeeded, joined["text"], pa.nulls(joined.num_rows, pa.string()))}
    schema = reply.schema
    chunks: list[pa.Table] = []
    with CollectorPause() as pause:
        for start in range(0, joined.num_rows, ASSEMBLE_CHUNK_ROWS):
            pause.step()
            texts = joined["text"].slice(start, ASSEMBLE_CHUNK_ROWS).to_pylist()
            ok = succeeded.slice(start, ASSEMBLE_CHUNK_ROWS).to_pylist()
            # A succeeded record's text is its conforming value as JSON (collect wrote it so).
            values = [
                orjson.loads(text) if good and text is not None else None
                for text, good in zip(texts, ok, strict=True)
            ]
            chunks.append(to_arrow(values, schema))
    table = pa.concat_tables(chunks) if chunks else to_arrow([], schema)
    return {name: table[name] for name in table.column_names}


def write_partition(storage: Storage, table: pa.Table, table_uri: str, ds: str) -> str:
    """Replace the ``ds`` partition of the table at ``table_uri`` with ``table``; return the file's URI.

    For a small table of one file a day (the KPIs): the partition is one Parquet object, so replacing it is
    one atomic PUT (multipart uploads complete atomically): readers see the old rows or the new rows, never
    both or neither. Files left in the partition by other writers are removed afterwards. A day of many
    files is published as a version (:class:`~bedrock_batch.partitions.PartitionWriter`).

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
