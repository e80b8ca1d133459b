"""Stage 1, prepare: source rows -> batch records in a local spool, a record index and a quarantine file.

Streams in constant memory apart from two compact per-record arrays (record sizes and the record-id index).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from bedrock_batch.config import QuotaConfig
from bedrock_batch.errors import ConfigError
from bedrock_batch.gc_pause import CollectorPause
from bedrock_batch.models import (
    CHARS_PER_TOKEN,
    PREFILL,
    InferenceParams,
    ModelFamily,
    OutputFormat,
    context_window_tokens,
    estimate_tokens,
    family_for,
    output_format_tokens,
    requested_max_tokens,
)
from bedrock_batch.prompts import Placeholder, PromptTemplate
from bedrock_batch.record_ids import IdAssignment, RecordIdIndex
from bedrock_batch.sources import ROW_PROBLEMS, BatchRecord, SourceRow

log = logging.getLogger(__name__)

QUARANTINE_REASONS: Mapping[str, str] = MappingProxyType(
    {
        **ROW_PROBLEMS,
        "empty_text": "every prompt value is empty or only whitespace",
        "duplicate_id": "the row's key appeared earlier in the source; the first occurrence is kept",
        "template_error": "the prompt template needs a value this row does not have",
        "context_window_exceeded": "estimated prompt tokens plus max_tokens exceed the context window",
        "record_too_large": "the batch record line is larger than max_record_bytes",
    }
)

SPOOL_FILE = "records.jsonl"
SIZES_FILE = "record_sizes.npy"
INDEX_FILE = "record_index.parquet"
QUARANTINE_FILE = "quarantine.jsonl"

INDEX_COLUMNS = ("record_id", "source_key", "source_position", "ordinal")

# Rows handled together: record ids are hashed and checked per batch, not per row.
BATCH_ROWS = 1024
# Rows per record-index row group: the index columns of this many rows are held in memory at most.
INDEX_ROW_GROUP_ROWS = 65_536

_WRITE_BUFFER_BYTES = 1 << 20


@dataclass(frozen=True)
class PrepareResult:
    """What prepare wrote, as plain metadata fit for XCom.

    :param spool_path: local JSONL spool of the accepted records, in source order.
    :param sizes_path: ``.npy`` int64 array: the byte size of each spool line, by ordinal.
    :param index_path: record index Parquet (``record_id``, ``source_key``, ``source_position``,
        ``ordinal``, passthrough columns).
    :param quarantine_path: JSONL of the rows that were not accepted.
    :param rows: rows read from the source.
    :param records: records accepted into the spool.
    :param quarantined: rows quarantined.
    :param quarantine_counts: rows quarantined per reason code (every code of :data:`QUARANTINE_REASONS`).
    :param total_bytes: size of the spool in bytes.
    :param input_tokens: estimated input tokens of the accepted records (the cost estimate's input).
    :param max_output_tokens: the sum of the accepted records' ``max_tokens`` (the most they can generate).
    """

    spool_path: str
    sizes_path: str
    index_path: str
    quarantine_path: str
    rows: int
    records: int
    quarantined: int
    quarantine_counts: dict[str, int]
    total_bytes: int
    input_tokens: int = 0
    max_output_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrepareResult:
        """Rebuild from :meth:`to_dict` output.

        :param data: the dict, e.g. pulled from XCom.
        """
        return cls(**data)

    def load_sizes(self) -> npt.NDArray[np.int64]:
        """Byte size of each spool line by ordinal; the input of :func:`bedrock_batch.split.plan_shards`."""
        sizes: npt.NDArray[np.int64] = np.load(self.sizes_path)
        return sizes


class RecordEncoder:
    """Builds batch record lines ``{"recordId": ..., "modelInput": {...}}`` for one template and model.

    ``modelInput`` is the model family's ``build_request(system, user, params, output)``, the system prompt
    followed by ``instructions`` when there are any. Only the row values change from record to record, so the
    rest of the line is serialized once and each record is the fixed bytes with the row's JSON-escaped values
    spliced in. The splice is checked at construction against serializing the body normally, on values full
    of characters JSON must escape; the encoder falls back to normal serialization when they differ, or when
    the system part has placeholders.

    :param template: the prompt template.
    :param family: the model family whose bodies to build.
    :param params: inference parameters.
    :param output: the reply schema and how it reaches the model (``None``: free text).
    :param instructions: text appended to the rendered system prompt (after a blank line), e.g. the reply
        schema in prompt mode; never parsed for placeholders.
    """

    _SLOT = "Zq9SlotBedrockBatch{}Zq9"

    def __init__(
        self,
        template: PromptTemplate,
        family: ModelFamily,
        params: InferenceParams,
        output: OutputFormat | None = None,
        instructions: str = "",
    ) -> None:
        self.template = template
        self.family = family
        self.params = params
        self.output = output
        self.instructions = instructions
        pieces = (*template.system, *template.user, instructions)
        # Literal text is estimated once; each row adds the estimate of its values.
        self._literal_tokens = sum(estimate_tokens(piece) for piece in pieces if isinstance(piece, str))
        self._token_fields = tuple(
            Counter(piece.name for piece in pieces if isinstance(piece, Placeholder)).items()
        )
        self._layout = self._splice_layout()

    @property
    def spliced(self) -> bool:
        """Whether records are built by splicing (``False``: every body is serialized in full)."""
        return self._layout is not None

    def prompt_tokens(self, values: Mapping[str, str]) -> int:
        """Estimated tokens of the system and user prompt (slightly high: each piece is rounded up).

        :param values: placeholder name → value prepared by :meth:`PromptTemplate.field_value`.
        """
        tokens = self._literal_tokens
        for name, uses in self._token_fields:
            tokens += estimate_tokens(values[name]) * uses
        return tokens

    def encode(self, record_id: str, values: Mapping[str, str]) -> bytes:
        """One record line, newline included.

        :param record_id: the record's id.
        :param values: placeholder name → value prepared by :meth:`PromptTemplate.field_value`.
        :raises orjson.JSONEncodeError: when a value is not valid Unicode (lone surrogates).
        """
        if self._layout is None:
            return self._encode_in_full(record_id, values)
        return self._layout.fill(record_id, values)

    def _system(self, rendered: str) -> str:
        if not self.instructions:
            return rendered
        return f"{rendered}\n\n{self.instructions}" if rendered else self.instructions

    def _encode_in_full(self, record_id: str, values: Mapping[str, str]) -> bytes:
        system, user = self.template.render(values)
        body = self.family.build_request(self._system(system), user, self.params, self.output)
        return orjson.dumps({"recordId": record_id, "modelInput": body}, option=orjson.OPT_APPEND_NEWLINE)

    def _splice_layout(self) -> _LineLayout | None:
        template = self.template
        if any(isinstance(piece, Placeholder) for piece in template.system):
            return None
        system = self._system("".join(piece for piece in template.system if isinstance(piece, str)))
        record_slot, user_slot = self._SLOT.format("R"), self._SLOT.format("U")
        skeleton = orjson.dumps(
            {
                "recordId": record_slot,
                "modelInput": self.family.build_request(system, user_slot, self.params, self.output),
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        user_pieces: list[bytes | Placeholder] = [
            piece if isinstance(piece, Placeholder) else orjson.dumps(piece)[1:-1] for piece in template.user
        ]
        pieces: list[bytes | Placeholder | None] = []
        for chunk in re.split(f"({re.escape(record_slot)}|{re.escape(user_slot)})".encode(), skeleton):
            if chunk == record_slot.encode():
                pieces.append(None)
            elif chunk == user_slot.encode():
                pieces.extend(user_pieces)
            else:
                pieces.append(chunk)
        layout = _LineLayout.from_pieces(pieces)
        probe = {name: template.field_value(name, _PROBE_TEXT) for name in template.fields}
        if layout.fill("Probe000000", probe) != self._encode_in_full("Probe000000", probe):
            log.warning(
                "model family %s builds bodies that cannot be spliced; serializing each in full",
                self.family.name,
            )
            return None
        return layout


# Every character class JSON escapes or a naive splice could mangle.
_PROBE_TEXT = 'probe "quoted" \\ backslash\nnew line\ttab \x01 control é ü 😀 </transcript> {braces}'


@dataclass(frozen=True)
class _LineLayout:
    """A record line as literal bytes with empty slots for the record id and the row's values."""

    parts: tuple[bytes, ...]
    record_id_slots: tuple[int, ...]
    field_slots: tuple[tuple[int, str], ...]

    @classmethod
    def from_pieces(cls, pieces: list[bytes | Placeholder | None]) -> _LineLayout:
        """Build from literal bytes, placeholders and ``None`` (the record id); adjacent literals merge."""
        parts: list[bytes] = []
        record_id_slots: list[int] = []
        field_slots: list[tuple[int, str]] = []
        after_literal = False
        for piece in pieces:
            if isinstance(piece, bytes):
                if after_literal:
                    parts[-1] += piece
                else:
                    parts.append(piece)
                after_literal = True
                continue
            if piece is None:
                record_id_slots.append(len(parts))
            else:
                field_slots.append((len(parts), piece.name))
            parts.append(b"")
            after_literal = False
        return cls(tuple(parts), tuple(record_id_slots), tuple(field_slots))

    def fill(self, record_id: str, values: Mapping[str, str]) -> bytes:
        """The line for one record.

        :param record_id: the record's id.
        :param values: placeholder name → value.
        """
        # JSON string escaping works character by character, so escaping each value alone and splicing it
        # between pre-escaped literals gives the same bytes as escaping the whole string.
        line = list(self.parts)
        encoded_id = record_id.encode("ascii")
        for at in self.record_id_slots:
            line[at] = encoded_id
        for at, name in self.field_slots:
            line[at] = orjson.dumps(values[name])[1:-1]
        return b"".join(line)


def index_schema(passthrough: Mapping[str, pa.DataType]) -> pa.Schema:
    """The record index's schema: :data:`INDEX_COLUMNS`, then the passthrough columns.

    :param passthrough: passthrough column name → Arrow type.
    """
    fields = [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("source_key", pa.string(), nullable=False),
        pa.field("source_position", pa.string(), nullable=False),
        pa.field("ordinal", pa.int64(), nullable=False),
    ]
    fields += [pa.field(name, data_type) for name, data_type in passthrough.items()]
    return pa.schema(fields)


class _IndexWriter:
    """Writes the record index Parquet one row group at a time."""

    def __init__(
        self, path: Path, passthrough: Mapping[str, pa.DataType], file_format: str = "parquet"
    ) -> None:
        self._schema = index_schema(passthrough)
        self._writer: pq.ParquetWriter | pa.ipc.RecordBatchFileWriter
        if file_format == "arrow":
            self._writer = pa.ipc.new_file(str(path), self._schema)
        else:
            self._writer = pq.ParquetWriter(path, self._schema, compression="zstd")
        self._columns: list[list[Any]] = [[] for _ in self._schema]

    def add(
        self, record_id: str, key: str, position: str, ordinal: int, passthrough: tuple[Any, ...]
    ) -> None:
        columns = self._columns
        columns[0].append(record_id)
        columns[1].append(key)
        columns[2].append(position)
        columns[3].append(ordinal)
        for column, value in zip(columns[4:], passthrough, strict=True):
            column.append(value)
        if len(columns[0]) >= INDEX_ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._columns[0]:
            table = pa.Table.from_arrays(
                [_to_arrow(values, f.type) for values, f in zip(self._columns, self._schema, strict=True)],
                schema=self._schema,
            )
            self._writer.write_table(table)
            self._columns = [[] for _ in self._schema]

    def __enter__(self) -> _IndexWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # On an error the row group in hand is dropped, but the file is still closed.
        if exc_info[0] is None:
            self._flush()
        self._writer.close()


def _to_arrow(values: list[Any], data_type: pa.DataType) -> pa.Array:
    if pa.types.is_string(data_type):
        # Inferring the type of a list of str is ~100x faster than converting it to a given string type.
        array = pa.array(values)
        return array if array.type == data_type else array.cast(data_type)
    return pa.array(values, type=data_type)


class KeyedRowTrace:
    """What became of each row with a key, in source order: its ordinal in the spool, or which quarantine
    entry it is. A parallel prepare's merge needs it to correct the rows whose record id the whole source
    decides otherwise (a duplicate key in an earlier part, a collision)."""

    def __init__(self) -> None:
        self.ordinals = array("q")  # -1: quarantined
        self.quarantine_at = array("q")  # quarantine entries written before the row
        # Estimated input tokens of each spooled record: the merge takes out those of the records it removes.
        self.input_tokens = array("q")


class _Quarantine:
    """Appends quarantine entries (never the row's text) and counts them per reason."""

    def __init__(self, stream: IO[bytes], trace: KeyedRowTrace | None = None) -> None:
        self._stream = stream
        self._trace = trace
        self.written = 0
        self.counts: Counter[str] = Counter()

    def add(self, row: SourceRow, record_id: str | None, reason: str, detail: str | None) -> None:
        self.add_entry(row.position, row.key, record_id, reason, detail)

    def add_entry(
        self, position: str, key: str | None, record_id: str | None, reason: str, detail: str | None
    ) -> None:
        if self._trace is not None and record_id is not None:
            self._trace.ordinals.append(-1)
            self._trace.quarantine_at.append(self.written)
        self.written += 1
        self.counts[reason] += 1
        entry = {
            "source_position": position,
            "source_key": key,
            "record_id": record_id,
            "reason": reason,
            "detail": detail,
        }
        self._stream.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))


def _batches(rows: Iterable[SourceRow], size: int) -> Iterator[list[SourceRow]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def prepare(
    rows: Iterable[SourceRow],
    work_dir: str | os.PathLike[str],
    *,
    template: PromptTemplate,
    model_id: str,
    quotas: QuotaConfig,
    params: InferenceParams | None = None,
    invocation_type: str = "InvokeModel",
    family: str | None = None,
    output: OutputFormat | None = None,
    instructions: str = "",
    passthrough_types: Mapping[str, pa.DataType] | None = None,
    id_index: RecordIdIndex | None = None,
) -> PrepareResult:
    """Turn source rows into batch records; quarantine the rows that cannot become one.

    Writes into ``work_dir``: the spool (:data:`SPOOL_FILE`), the line sizes (:data:`SIZES_FILE`), the record
    index (:data:`INDEX_FILE`) and the quarantine (:data:`QUARANTINE_FILE`). A quarantined row never stops
    the run; its entry names the position, key, record id and reason, never the text.

    Each row's :attr:`~bedrock_batch.sources.SourceRow.prompt_values` fill the template's placeholders; a
    row whose values are all empty is ``empty_text``, a row without a value for a placeholder
    ``template_error``. The context-window check counts the rendered prompt, ``instructions``, ``max_tokens``
    and what the reply schema adds in native and tool mode
    (:func:`~bedrock_batch.models.output_format_tokens`) or the assistant prefill in prompt mode; the same
    count, summed over the accepted records, is the result's ``input_tokens`` (the cost estimate's).

    :param rows: source rows in source order, e.g. a :class:`~bedrock_batch.sources.SourceReader`.
    :param work_dir: local directory for the output files (created if missing).
    :param template: the prompt template.
    :param model_id: model id, inference-profile id or ARN; selects the body format and context window.
    :param quotas: limits; ``max_record_bytes`` caps one record line.
    :param params: inference parameters; ``max_tokens`` counts against the context window.
    :param invocation_type: ``InvokeModel`` (the model's native body) or ``Converse``.
    :param family: model family name overriding the one inferred from ``model_id``.
    :param output: the reply schema as sent to the service and its mode (``None``: free-text replies).
    :param instructions: appended to every rendered system prompt, e.g.
        :func:`~bedrock_batch.schemas.prompt_instructions` in prompt mode.
    :param passthrough_types: passthrough column name → Arrow type, in the order of
        :attr:`SourceRow.passthrough`; see :meth:`~bedrock_batch.sources.SourceReader.passthrough_types`.
    :param id_index: record-id index to use (tests pass one with a small id space).
    :raises ConfigError: when a passthrough column clashes with an index column, ``max_tokens`` leaves no
        room for a prompt in the model's context window, or the family cannot carry ``output``.
    """
    settings = PrepareSettings(
        template=template,
        model_id=model_id,
        quotas=quotas,
        params=params or InferenceParams(),
        invocation_type=invocation_type,
        family=family,
        output=output,
        instructions=instructions,
        passthrough_types=dict(passthrough_types or {}),
    )
    return prepare_rows(rows, work_dir, settings, id_index if id_index is not None else RecordIdIndex())


@dataclass(frozen=True)
class PrepareSettings:
    """How rows become records: the arguments of :func:`prepare` other than the rows and where to write,
    in one picklable object (a parallel prepare sends it to every worker).

    :param template: the prompt template.
    :param model_id: model id, inference-profile id or ARN.
    :param quotas: limits; ``max_record_bytes`` caps one record line.
    :param params: inference parameters.
    :param invocation_type: ``InvokeModel`` or ``Converse``.
    :param family: model family name overriding the one inferred from ``model_id``.
    :param output: the reply schema as sent to the service and its mode (``None``: free-text replies).
    :param instructions: appended to every rendered system prompt.
    :param passthrough_types: passthrough column name → Arrow type.
    """

    template: PromptTemplate
    model_id: str
    quotas: QuotaConfig
    params: InferenceParams = field(default_factory=InferenceParams)
    invocation_type: str = "InvokeModel"
    family: str | None = None
    output: OutputFormat | None = None
    instructions: str = ""
    passthrough_types: Mapping[str, pa.DataType] = field(default_factory=dict)


class AssignsIds(Protocol):
    """Gives source rows their record ids, batch by batch (a
    :class:`~bedrock_batch.record_ids.RecordIdIndex`)."""

    def assign_batch(self, keys: Sequence[str]) -> IdAssignment:
        """Record ids and duplicate flags of ``keys``, in order."""


def prepare_rows(
    rows: Iterable[SourceRow],
    work_dir: str | os.PathLike[str],
    settings: PrepareSettings,
    ids: AssignsIds,
    *,
    trace: KeyedRowTrace | None = None,
    index_format: str = "parquet",
) -> PrepareResult:
    """:func:`prepare` with its settings in one object and the record ids from ``ids``.

    :param rows: source rows in source order.
    :param work_dir: local directory for the output files (created if missing).
    :param settings: how rows become records.
    :param ids: assigns the record ids.
    :param trace: records what became of each keyed row (a parallel prepare's worker passes one).
    :param index_format: ``parquet`` (zstd), or ``arrow`` (an Arrow IPC file: a worker's part index, read
        once by the merge, memory-mapped).
    :raises ConfigError: see :func:`prepare`.
    """
    params, output = settings.params, settings.output
    model_id, template = settings.model_id, settings.template
    model_family = family_for(model_id, invocation_type=settings.invocation_type, override=settings.family)
    passthrough = dict(settings.passthrough_types)
    _check_setup(passthrough)
    window = context_window_tokens(model_id)
    reply_tokens = _reply_format_tokens(output, model_family)
    token_budget = window - params.max_tokens - reply_tokens
    if token_budget <= 0:
        raise ConfigError(
            f"max_tokens {params.max_tokens:,} leaves no room for a prompt in the {window:,}-token context "
            f"window of {model_id}; lower max_tokens"
        )
    encoder = RecordEncoder(template, model_family, params, output, settings.instructions)
    fields = sorted(template.fields)
    max_record_bytes = settings.quotas.max_record_bytes
    # Bound once: the loop below runs once per row.
    field_value, prompt_tokens, encode = template.field_value, encoder.prompt_tokens, encoder.encode

    directory = Path(work_dir)
    directory.mkdir(parents=True, exist_ok=True)
    spool_path, index_path = directory / SPOOL_FILE, directory / INDEX_FILE
    quarantine_path = directory / QUARANTINE_FILE
    sizes = array("q")
    row_count = 0
    total_bytes = 0
    prompt_token_total = 0
    with (
        open(spool_path, "wb", buffering=_WRITE_BUFFER_BYTES) as spool,
        open(quarantine_path, "wb", buffering=_WRITE_BUFFER_BYTES) as quarantine_stream,
        _IndexWriter(index_path, passthrough, index_format) as index,
    ):
        quarantine = _Quarantine(quarantine_stream, trace)
        spool_write, sizes_append = spool.write, sizes.append
        index_add: Callable[[str, str, str, int, tuple[Any, ...]], None] = index.add
        if trace is not None:
            index_add = _traced(index.add, trace, quarantine)
        with CollectorPause() as pause:
            for batch in _batches(rows, BATCH_ROWS):
                pause.step()
                row_count += len(batch)
                assignment = ids.assign_batch([row.key for row in batch if row.key is not None])
                keyed = 0
                for row in batch:
                    key = row.key
                    if key is None:
                        quarantine.add(row, None, row.problem or "missing_id", row.detail)
                        continue
                    # Every keyed row claims its key, quarantined or not: the first occurrence owns it.
                    record_id = assignment.record_ids[keyed]
                    duplicate = assignment.duplicates[keyed]
                    keyed += 1
                    if duplicate:
                        quarantine.add(row, record_id, "duplicate_id", "an earlier row has the same key")
                        continue
                    if row.problem is not None:
                        quarantine.add(row, record_id, row.problem, row.detail)
                        continue
                    raw = row.prompt_values or {}
                    if all(not value or value.isspace() for value in raw.values()):
                        quarantine.add(row, record_id, "empty_text", None)
                        continue
                    missing = [name for name in fields if raw.get(name) is None]
                    if missing:
                        quarantine.add(row, record_id, "template_error", f"no value for {', '.join(missing)}")
                        continue
                    values = {name: field_value(name, raw[name]) for name in fields}
                    tokens = prompt_tokens(values)
                    if tokens > token_budget:
                        detail = f"~{tokens:,} prompt tokens + {params.max_tokens:,} max_tokens > {window:,}"
                        quarantine.add(row, record_id, "context_window_exceeded", detail)
                        continue
                    try:
                        line = encode(record_id, values)
                    except orjson.JSONEncodeError:
                        quarantine.add(
                            row, record_id, "bad_utf8", "text holds lone surrogates (invalid Unicode)"
                        )
                        continue
                    size = len(line)
                    if size > max_record_bytes:
                        detail = f"{size:,} bytes > max_record_bytes {max_record_bytes:,}"
                        quarantine.add(row, record_id, "record_too_large", detail)
                        continue
                    index_add(record_id, key, row.position, len(sizes), row.passthrough)
                    spool_write(line)
                    sizes_append(size)
                    total_bytes += size
                    prompt_token_total += tokens
                    if trace is not None:
                        trace.input_tokens.append(tokens + reply_tokens)
    records = len(sizes)
    return _finish(
        directory,
        sizes,
        quarantine.counts,
        row_count,
        total_bytes,
        input_tokens=prompt_token_total + reply_tokens * records,
        max_output_tokens=params.max_tokens * records,
    )


def _traced(
    index_add: Callable[[str, str, str, int, tuple[Any, ...]], None],
    trace: KeyedRowTrace,
    quarantine: _Quarantine,
) -> Callable[[str, str, str, int, tuple[Any, ...]], None]:
    ordinals, quarantine_at = trace.ordinals, trace.quarantine_at

    def add(record_id: str, key: str, position: str, ordinal: int, passthrough: tuple[Any, ...]) -> None:
        ordinals.append(ordinal)
        quarantine_at.append(quarantine.written)
        index_add(record_id, key, position, ordinal, passthrough)

    return add


def prepare_records(
    records: Iterable[BatchRecord],
    work_dir: str | os.PathLike[str],
    *,
    quotas: QuotaConfig,
    default_max_tokens: int = InferenceParams.max_tokens,
) -> PrepareResult:
    """Take records already in Bedrock's batch format (a ``bedrock`` source) as they are: the same outputs
    as :func:`prepare`, with each record's own id as its record id and source key.

    A line without a usable ``recordId`` or ``modelInput`` (see
    :func:`~bedrock_batch.sources.batch_record`), a record id seen before (``duplicate_id``) or a line above
    ``max_record_bytes`` is quarantined. The spool holds each record as ``{"recordId", "modelInput"}``,
    other keys of the line dropped. Besides the line sizes, the set of record ids seen is held in memory
    (about 80 bytes a record). For the cost estimate each record's input tokens are estimated from its whole
    line (JSON keys included, so high), and its output bound is the limit its body asks for
    (:func:`~bedrock_batch.models.requested_max_tokens`), else ``default_max_tokens``.

    :param records: the source's records in source order
        (:meth:`~bedrock_batch.sources.SourceReader.records`).
    :param work_dir: local directory for the output files (created if missing).
    :param quotas: limits; ``max_record_bytes`` caps one record line.
    :param default_max_tokens: the output bound of a record whose body names no token limit.
    """
    directory = Path(work_dir)
    directory.mkdir(parents=True, exist_ok=True)
    sizes = array("q")
    seen: set[str] = set()
    row_count = total_bytes = input_tokens = max_output_tokens = 0
    max_record_bytes = quotas.max_record_bytes
    with (
        open(directory / SPOOL_FILE, "wb", buffering=_WRITE_BUFFER_BYTES) as spool,
        open(directory / QUARANTINE_FILE, "wb", buffering=_WRITE_BUFFER_BYTES) as quarantine_stream,
        _IndexWriter(directory / INDEX_FILE, {}) as index,
    ):
        quarantine = _Quarantine(quarantine_stream)
        for record in records:
            row_count += 1
            record_id, position = record.record_id, record.position
            if record.problem is not None or record_id is None or record.model_input is None:
                valid_id = record.problem not in ("invalid_record_id", "missing_id")
                reason = record.problem or "missing_model_input"
                quarantine.add_entry(
                    position, record_id, record_id if valid_id else None, reason, record.detail
                )
                continue
            if record_id in seen:
                quarantine.add_entry(
                    position, record_id, record_id, "duplicate_id", "an earlier line has the same recordId"
                )
                continue
            seen.add(record_id)
            line = orjson.dumps(
                {"recordId": record_id, "modelInput": record.model_input}, option=orjson.OPT_APPEND_NEWLINE
            )
            if len(line) > max_record_bytes:
                detail = f"{len(line):,} bytes > max_record_bytes {max_record_bytes:,}"
                quarantine.add_entry(position, record_id, record_id, "record_too_large", detail)
                continue
            index.add(record_id, record_id, position, len(sizes), ())
            spool.write(line)
            sizes.append(len(line))
            total_bytes += len(line)
            # Bytes over CHARS_PER_TOKEN is estimate_tokens' rule for non-ASCII text; without decoding it.
            input_tokens += -(-len(line) // CHARS_PER_TOKEN)
            max_output_tokens += requested_max_tokens(record.model_input) or default_max_tokens
    return _finish(
        directory,
        sizes,
        quarantine.counts,
        row_count,
        total_bytes,
        input_tokens=input_tokens,
        max_output_tokens=max_output_tokens,
    )


def _finish(
    directory: Path,
    sizes: array[int],
    counted: Mapping[str, int],
    row_count: int,
    total_bytes: int,
    *,
    input_tokens: int,
    max_output_tokens: int,
) -> PrepareResult:
    """Write the sizes file, log the one summary line, and describe what was prepared."""
    sizes_path = directory / SIZES_FILE
    np.save(sizes_path, np.frombuffer(sizes, dtype=np.int64) if sizes else np.zeros(0, dtype=np.int64))
    counts = {reason: counted.get(reason, 0) for reason in QUARANTINE_REASONS}
    result = PrepareResult(
        spool_path=str(directory / SPOOL_FILE),
        sizes_path=str(sizes_path),
        index_path=str(directory / INDEX_FILE),
        quarantine_path=str(directory / QUARANTINE_FILE),
        rows=row_count,
        records=len(sizes),
        quarantined=sum(counts.values()),
        quarantine_counts=counts,
        total_bytes=total_bytes,
        input_tokens=input_tokens,
        max_output_tokens=max_output_tokens,
    )
    reasons = ", ".join(f"{reason}={count:,}" for reason, count in counts.items() if count) or "none"
    log.info(
        "prepared %s records (%s bytes) from %s rows; quarantined %s (%s)",
        f"{result.records:,}",
        f"{total_bytes:,}",
        f"{row_count:,}",
        f"{result.quarantined:,}",
        reasons,
    )
    return result


def _check_setup(passthrough: Mapping[str, pa.DataType]) -> None:
    clashes = sorted(set(passthrough) & set(INDEX_COLUMNS))
    if clashes:
        raise ConfigError(
            f"passthrough column(s) {clashes} clash with the record index's own columns; rename them"
        )


def _reply_format_tokens(output: OutputFormat | None, family: ModelFamily) -> int:
    """Input tokens the reply schema adds to every record beyond the prompt text the encoder counts: the
    schema in native and tool mode, the assistant prefill in prompt mode (the instructions that carry the
    schema there are prompt text)."""
    if output is None:
        return 0
    if output.mode == "prompt":
        return estimate_tokens(PREFILL) if family.prefills(output) else 0
    return output_format_tokens(output)
