"""Stage 6, collect: job output lines and manifests into Arrow, error classes, join to the record index.

Streamed: output lines become record batches of :data:`OUTPUT_SCHEMA`, without the prompts they echo. Each
reply is read with the run's :class:`~bedrock_batch.replies.ReplyFormat`: parsed with the model family and
the output format, and validated against the reply schema, so a reply that does not conform is
``invalid_output`` with the path and reason of its first violation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from bedrock_batch.errors import OutputFormatError, RecordIndexError, ResponseFormatError
from bedrock_batch.gc_pause import CollectorPause
from bedrock_batch.models import ModelFamily
from bedrock_batch.replies import INVALID_OUTPUT, SUCCEEDED, ReplyFormat

log = logging.getLogger(__name__)

ErrorClass = Literal["retryable", "permanent"]

FAILED = "failed"
# How a record's outcomes rank when it has several output lines (a retry, a repair): a conforming reply,
# then a reply that does not conform (it was answered and billed), then a failure.
_RANK = {SUCCEEDED: 2, INVALID_OUTPUT: 1}

# Error codes this module assigns itself; Bedrock's own codes are HTTP statuses kept as strings ("400").
MISSING = "missing"  # the record is in the index but in no output line
UNREADABLE_LINE = "unreadable_line"  # not JSON, typically the truncated last line of a file
NO_RECORD_ID = "no_record_id"  # JSON without a usable recordId
NO_OUTPUT = "no_output"  # a recordId with neither modelOutput nor error
UNPARSEABLE_OUTPUT = "unparseable_output"  # modelOutput without the model family's reply shape

# A record that never got an answer may get one when resubmitted; a record the model or the service
# rejected (validation, content filter, too long) gets the same answer again and only costs money.
RETRYABLE_CODES = frozenset({"408", "424", "429", MISSING, UNREADABLE_LINE, NO_RECORD_ID, NO_OUTPUT})
_RETRYABLE_MESSAGE_HINTS = (
    "throttl",
    "too many requests",
    "rate exceeded",
    "timeout",
    "timed out",
    "try again",
    "service unavailable",
    "internal server error",
)

OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("parse_error", pa.string()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("stop_reason", pa.string()),
        pa.field("error_code", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("retryable", pa.bool_(), nullable=False),
        pa.field("job_arn", pa.string()),
    ]
)
"""One row per output line, never the prompt (``modelInput`` is dropped).

- ``record_id``: the line's ``recordId``; null when a line has none that can be read.
- ``status``: ``succeeded``, ``invalid_output`` (a reply that does not conform to the run's reply schema)
  or ``failed``.
- ``text``: the reply (see :class:`~bedrock_batch.replies.ReadReply`): with a reply schema and a conforming
  reply, its value as compact JSON; otherwise the text the model wrote, prefill re-attached. For
  ``unparseable_output`` the raw ``modelOutput`` JSON, so nothing the model returned (and was billed for) is
  lost; null for other failures.
- ``parse_error``: ``"<path>: <reason>"`` of the first violation of an ``invalid_output`` reply, else null;
  never quotes the reply.
- ``input_tokens``, ``output_tokens``, ``stop_reason``: as the model reported them, null if it did not.
- ``error_code``: Bedrock's ``errorCode`` as a string (``"400"``, ``"429"``) or one of this module's
  codes (``missing``, ``unreadable_line``, ``no_record_id``, ``no_output``, ``unparseable_output``,
  ``invalid_output``); null on success.
- ``error_message``: Bedrock's ``errorMessage`` or this module's explanation; null on success.
- ``retryable``: whether resubmitting the record may succeed (see :func:`classify_error`); false on success.
- ``job_arn``: the job whose output held the line (the on-demand fallback's label for its lines); null for
  records in no output.
"""

OUTPUT_COLUMNS = tuple(OUTPUT_SCHEMA.names)

INDEX_COLUMNS = ("record_id", "source_key", "source_position", "ordinal")

_RECORD_ID_IN_BYTES = re.compile(rb'"recordId"\s*:\s*"([^"\\]{1,128})"')


class OutputRecord(NamedTuple):
    """One parsed output line; the fields and their meaning are those of :data:`OUTPUT_SCHEMA`."""

    record_id: str | None
    status: str
    text: str | None
    parse_error: str | None
    input_tokens: int | None
    output_tokens: int | None
    stop_reason: str | None
    error_code: str | None
    error_message: str | None
    retryable: bool


@dataclass(frozen=True)
class Manifest:
    """A job's ``manifest.json.out``; a count the manifest does not have is ``None``.

    :param total_records: records in the job's input.
    :param processed_records: records the job got to.
    :param succeeded_records: records with a model reply.
    :param failed_records: records with an error line.
    :param input_tokens: input tokens billed.
    :param output_tokens: output tokens billed.
    """

    total_records: int | None
    processed_records: int | None
    succeeded_records: int | None
    failed_records: int | None
    input_tokens: int | None
    output_tokens: int | None


def classify_error(code: str | int | None, message: str | None = None) -> ErrorClass:
    """Whether a failed record may succeed when resubmitted.

    Retryable: throttling (429), 5xx, timeouts (408, or a message saying so), model errors (424), and
    records that got no readable answer (``missing``, ``unreadable_line``, ``no_record_id``,
    ``no_output``). Everything else - 400 validation, 403, content filters, ``unparseable_output`` - is
    permanent.

    :param code: error code as in the output line (``400``) or this module's codes; ``None`` if absent.
    :param message: the error message, searched for throttling and timeout wording.
    """
    code_text = "" if code is None else str(code)
    if code_text in RETRYABLE_CODES or (len(code_text) == 3 and code_text.startswith("5")):
        return "retryable"
    if message:
        lowered = message.lower()
        if any(hint in lowered for hint in _RETRYABLE_MESSAGE_HINTS):
            return "retryable"
    return "permanent"


def _failure(record_id: str | None, code: str, message: str, text: str | None = None) -> OutputRecord:
    retryable = classify_error(code, message) == "retryable"
    return OutputRecord(record_id, FAILED, text, None, None, None, None, code, message, retryable)


def _unreadable(line: bytes) -> OutputRecord:
    # A truncated line usually still starts with its recordId: salvage it so the record is retried
    # under its own id instead of only showing up as missing.
    match = _RECORD_ID_IN_BYTES.search(line)
    record_id = match.group(1).decode("utf-8", "replace") if match else None
    return _failure(
        record_id,
        UNREADABLE_LINE,
        f"output line of {len(line)} bytes is not valid JSON (truncated or corrupt)",
    )


_FREE_TEXT = ReplyFormat()


def parse_output_line(line: bytes, family: ModelFamily, reply: ReplyFormat | None = None) -> OutputRecord:
    """Parse one line of a ``.jsonl.out`` file; a bad line becomes a failed record, never an exception.

    :param line: the raw line, with or without its newline.
    :param family: the model family of the job, to read ``modelOutput``.
    :param reply: the run's reply format: a reply that does not conform to its schema is ``invalid_output``
        (error code ``invalid_output``, not retryable); ``None``: free text.
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return _unreadable(line)
    if not isinstance(obj, dict):
        return _failure(None, NO_RECORD_ID, f"output line holds a JSON {type(obj).__name__}, not an object")
    record_id = obj.get("recordId")
    if not isinstance(record_id, str) or not record_id:
        return _failure(None, NO_RECORD_ID, "output line has no recordId")
    error = obj.get("error")
    if error is not None:
        if isinstance(error, dict):
            code, message = error.get("errorCode"), error.get("errorMessage")
        else:
            code, message = None, error
        return _failure(
            record_id, "unknown" if code is None else str(code), "" if message is None else str(message)
        )
    model_output = obj.get("modelOutput")
    if model_output is None:
        return _failure(record_id, NO_OUTPUT, "output line has neither modelOutput nor error")
    reply = reply or _FREE_TEXT
    try:
        read = reply.read(family, model_output)
    except ResponseFormatError as exc:
        raw = orjson.dumps(model_output).decode()
        return _failure(record_id, UNPARSEABLE_OUTPUT, str(exc), text=raw)
    invalid = read.status == INVALID_OUTPUT
    return OutputRecord(
        record_id,
        read.status,
        read.text,
        read.parse_error,
        read.input_tokens,
        read.output_tokens,
        read.stop_reason,
        INVALID_OUTPUT if invalid else None,
        _invalid_message(reply) if invalid else None,
        False,
    )


def _invalid_message(reply: ReplyFormat) -> str:
    name = reply.schema.name if reply.schema is not None else "?"
    return f"the reply does not conform to the reply schema {name} (see parse_error)"


def _to_batch(rows: list[OutputRecord], job_arn: str | None) -> pa.RecordBatch:
    columns = zip(*rows, strict=True)
    arrays = [
        pa.array(column, type=field.type) for column, field in zip(columns, OUTPUT_SCHEMA, strict=False)
    ]
    arrays.append(pa.array([job_arn] * len(rows), type=pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=OUTPUT_SCHEMA)


def iter_output_batches(
    lines: Iterable[bytes],
    family: ModelFamily,
    *,
    reply: ReplyFormat | None = None,
    batch_size: int = 8192,
    job_arn: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """Parse output lines into record batches of :data:`OUTPUT_SCHEMA`, in constant memory.

    Blank lines are skipped; every other line gives exactly one row.

    :param lines: lines of one or more ``.jsonl.out`` files; a binary file object works, and one opened
        with a large buffer (``buffering=1 << 20``) reads the long lines much faster than the default.
    :param family: the model family of the job.
    :param reply: the run's reply format (see :func:`parse_output_line`).
    :param batch_size: rows per record batch.
    :param job_arn: the job the lines come from, stored in every row's ``job_arn``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rows: list[OutputRecord] = []
    with CollectorPause() as pause:
        for line in lines:
            record = parse_output_line(line, family, reply)
            # Only a line that failed to parse can be blank; checking here keeps the common path cheap.
            if record.error_code == UNREADABLE_LINE and not line.strip():
                continue
            rows.append(record)
            if len(rows) == batch_size:
                batch, rows = _to_batch(rows, job_arn), []
                with pause.resumed():
                    yield batch
    if rows:
        yield _to_batch(rows, job_arn)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_manifest(data: bytes) -> Manifest:
    """Parse ``manifest.json.out``, in either generation of field names.

    :param data: the file's bytes.
    :raises OutputFormatError: when the file is not a JSON object.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise OutputFormatError(f"manifest.json.out is not valid JSON ({len(data)} bytes): {exc}") from exc
    if not isinstance(obj, dict):
        raise OutputFormatError(f"manifest.json.out holds a JSON {type(obj).__name__}, expected an object")

    def first(*names: str) -> int | None:
        for name in names:
            value = _count(obj.get(name))
            if value is not None:
                return value
        return None

    return Manifest(
        total_records=first("totalRecordCount"),
        processed_records=first("processedRecordCount"),
        succeeded_records=first("successRecordCount"),
        failed_records=first("errorRecordCount"),
        # Older documentation names the token counts inputTextTokenCount / outputTextTokenCount.
        input_tokens=first("inputTokenCount", "inputTextTokenCount"),
        output_tokens=first("outputTokenCount", "outputTextTokenCount"),
    )


@dataclass(frozen=True)
class JoinReport:
    """The result of joining job outputs to the record index.

    :param table: one row per index row, in index order: the index columns, then the columns of
        :data:`OUTPUT_SCHEMA` other than ``record_id``. Records in no output are failed with
        ``error_code`` ``missing`` and retryable.
    :param unknown: output rows whose ``record_id`` is not in the index (or could not be read), in
        :data:`OUTPUT_SCHEMA`; they are not part of ``table``.
    :param duplicates: output rows dropped because another row for the same record won.
    """

    table: pa.Table
    unknown: pa.Table
    duplicates: int


def _check_index(index: pa.Table) -> pa.Table:
    absent = [name for name in INDEX_COLUMNS if name not in index.column_names]
    if absent:
        raise RecordIndexError(
            f"record index lacks column(s) {absent}; it needs {list(INDEX_COLUMNS)} (written by prepare)"
        )
    clashes = sorted(set(index.column_names) & set(OUTPUT_COLUMNS) - {"record_id"})
    if clashes:
        raise RecordIndexError(
            f"record index column(s) {clashes} clash with result columns; rename those passthrough columns"
        )
    if index.schema.field("record_id").type != pa.string():
        index = index.set_column(
            index.column_names.index("record_id"), "record_id", pc.cast(index["record_id"], pa.string())
        )
    return index


def join_with_report(index: pa.Table, outputs: Iterable[pa.RecordBatch]) -> JoinReport:
    """Join output rows to the record index on ``record_id``, reporting what did not fit.

    Several rows for one record (a record in a resubmitted job, a repaired reply, or repeated lines) are
    resolved deterministically: a success wins over an ``invalid_output`` reply, which wins over a failure,
    and among equals the row that comes later in ``outputs`` wins, so pass the outputs of the oldest job
    first.

    :param index: the record index written by prepare (``record_id``, ``source_key``,
        ``source_position``, ``ordinal`` and passthrough columns).
    :param outputs: record batches from :func:`iter_output_batches`.
    :raises RecordIndexError: when the index lacks a column or a passthrough column clashes with a result
        column.
    """
    index = _check_index(index)
    out = pa.Table.from_batches(list(outputs), schema=OUTPUT_SCHEMA)

    known = pc.fill_null(pc.is_in(out["record_id"], value_set=index["record_id"]), False)
    unknown = out.filter(pc.invert(known))

    # Work on row numbers and copy the output columns once, at the end. Candidates are ordered best
    # first (success, then later in the stream), so index_in finds each record's winning row.
    known_rows = pc.indices_nonzero(known)
    statuses = out["status"].take(known_rows)
    outcome = pc.add(
        pc.multiply(pc.cast(pc.equal(statuses, SUCCEEDED), pa.uint64()), _RANK[SUCCEEDED]),
        pc.multiply(pc.cast(pc.equal(statuses, INVALID_OUTPUT), pa.uint64()), _RANK[INVALID_OUTPUT]),
    )
    rank = pc.add(pc.multiply(outcome, out.num_rows), known_rows)
    candidates = known_rows.take(pc.array_sort_indices(rank, order="descending"))
    candidate_ids = out["record_id"].take(candidates)
    duplicates = len(candidates) - pc.count_distinct(candidate_ids).as_py()

    picked = out.take(candidates.take(pc.index_in(index["record_id"], value_set=candidate_ids)))
    missing = pc.is_null(picked["status"])
    filled = {
        "status": pc.if_else(missing, FAILED, picked["status"]),
        "error_code": pc.if_else(missing, MISSING, picked["error_code"]),
        "error_message": pc.if_else(missing, "record not found in any job output", picked["error_message"]),
        "retryable": pc.if_else(missing, True, picked["retryable"]),
    }
    table = index
    for name in OUTPUT_COLUMNS[1:]:
        column = filled.get(name, picked[name])
        table = table.append_column(OUTPUT_SCHEMA.field(name), column)
    return JoinReport(table=table, unknown=unknown, duplicates=duplicates)


def join_results(index: pa.Table, outputs: Iterable[pa.RecordBatch]) -> pa.Table:
    """Join output rows to the record index: one row per index row, see :func:`join_with_report`.

    Output rows for record ids not in the index are left out and counted in a warning; use
    :func:`join_with_report` to get them.

    :param index: the record index written by prepare.
    :param outputs: record batches from :func:`iter_output_batches`.
    """
    report = join_with_report(index, outputs)
    if report.unknown.num_rows or report.duplicates:
        log.warning(
            "%d output row(s) with record ids not in the index left out; %d duplicate output row(s) resolved",
            report.unknown.num_rows,
            report.duplicates,
        )
    return report.table


def retryable_record_ids(results: pa.Table) -> list[str]:
    """Ids of the failed records that may succeed when resubmitted, in table order.

    :param results: a table from :func:`join_results` (or batches of :data:`OUTPUT_SCHEMA` as a table).
    """
    mask = pc.and_(pc.equal(results["status"], FAILED), pc.fill_null(results["retryable"], False))
    ids = results.filter(mask)["record_id"].drop_null()
    return [str(record_id) for record_id in ids.to_pylist()]


@dataclass(frozen=True)
class ResultSummary:
    """Counts and token totals of a results table, for the one log line per collect.

    :param records: rows in the table.
    :param succeeded: records with a conforming reply.
    :param invalid_output: records whose reply does not conform to the reply schema.
    :param failed: records without a reply.
    :param retryable: failed records that may succeed when resubmitted.
    :param missing: failed records that were in no output line.
    :param input_tokens: input tokens reported by the model, summed.
    :param output_tokens: output tokens reported by the model, summed.
    """

    records: int
    succeeded: int
    invalid_output: int
    failed: int
    retryable: int
    missing: int
    input_tokens: int
    output_tokens: int


def summarize_results(results: pa.Table) -> ResultSummary:
    """Counts and token totals of a table from :func:`join_results`.

    :param results: the joined results.
    """

    def count(mask: pa.ChunkedArray) -> int:
        return int(pc.sum(pc.fill_null(mask, False)).as_py() or 0)

    def total(column: str) -> int:
        return int(pc.sum(results[column]).as_py() or 0)

    failed = pc.equal(results["status"], FAILED)
    return ResultSummary(
        records=results.num_rows,
        succeeded=count(pc.equal(results["status"], SUCCEEDED)),
        invalid_output=count(pc.equal(results["status"], INVALID_OUTPUT)),
        failed=count(failed),
        retryable=count(pc.and_(failed, results["retryable"])),
        missing=count(pc.equal(results["error_code"], MISSING)),
        input_tokens=total("input_tokens"),
        output_tokens=total("output_tokens"),
    )
