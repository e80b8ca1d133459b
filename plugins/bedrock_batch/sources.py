"""Streaming readers of the rows to process: text files, JSONL, CSV, Parquet and Amazon Transcribe JSON, and
of records already in Bedrock's batch format (``bedrock``: JSONL lines ``{"recordId", "modelInput"}``).

Each yields :class:`SourceRow` objects in constant memory; a bad row carries a problem code, not an error.
A row carries the values of its *prompt columns*: one per placeholder of the prompt template
(:func:`bind_prompt_columns` decides which column fills which placeholder). A CSV or Parquet file whose
columns do not fit the configuration (a configured column missing, or a Parquet column of an unusable type)
does not stop the source either: each of its rows becomes a problem row.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import re
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import IO, Any, Literal, NamedTuple

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from bedrock_batch.errors import ConfigError, SourceError, TemplateError, TranscriptLayoutError
from bedrock_batch.storage import Storage, StoredObject

log = logging.getLogger(__name__)

SourceFormat = Literal["text", "jsonl", "csv", "parquet", "transcribe", "bedrock"]

# Formats with one record per file: the file's text is the only prompt value.
ONE_PER_FILE = frozenset({"text", "transcribe"})

SUFFIXES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "text": (".txt",),
        "jsonl": (".jsonl", ".ndjson"),
        "csv": (".csv",),
        "parquet": (".parquet", ".pq"),
        "transcribe": (".json",),
        "bedrock": (".jsonl",),
    }
)
# A record id of Bedrock's batch format: 11 letters and digits.
RECORD_ID_PATTERN = re.compile(r"[A-Za-z0-9]{11}")

# Problems a reader can find in one row; prepare adds its own and quarantines them all.
ROW_PROBLEMS: Mapping[str, str] = MappingProxyType(
    {
        "invalid_json": "the JSONL line or JSON file is not valid JSON, or not a JSON object",
        "invalid_csv": "the CSV row cannot be parsed",
        "invalid_transcript": "the JSON file has neither the Transcribe nor the Call Analytics layout",
        "bad_utf8": "the row's bytes are not valid UTF-8",
        "missing_id": "the id is absent, empty, or neither a string nor an integer",
        "missing_text": "a prompt column's value is absent, null or not a string (the detail names it)",
        "file_too_large": "a one-call file is larger than the record size limit and was not read",
        "missing_column": (
            "the row's CSV or Parquet file lacks a configured id, prompt or passthrough column, so none of "
            "its rows is read (a file without data rows gives one entry for the file)"
        ),
        "invalid_record_id": "a bedrock-format line's recordId is not 11 letters and digits",
        "missing_model_input": "a bedrock-format line has no modelInput object",
        "wrong_column_type": (
            "a Parquet column's type cannot hold the value: the id column is not a string or integer column, "
            "a prompt column not a string or binary column (every row of the file), or a passthrough value "
            "does not convert to the column's type in the first file that has it (that row)"
        ),
    }
)

# Plain Transcribe labels speakers spk_0, spk_1 (or channels ch_0, ch_1); Call Analytics names roles.
DEFAULT_SPEAKER_ROLES: Mapping[str, str] = MappingProxyType(
    {
        "spk_0": "Agent",
        "spk_1": "Customer",
        "ch_0": "Agent",
        "ch_1": "Customer",
        "AGENT": "Agent",
        "CUSTOMER": "Customer",
    }
)

# Rows per Parquet batch: a few MB of transcripts at a time.
PARQUET_BATCH_ROWS = 1024

# Python's csv module refuses fields over 128 KiB by default; long transcripts are larger than that.
_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


class SourcePiece(NamedTuple):
    """One object of a source, or a range of it, as :meth:`SourceReader.plan_parts` cuts the source.

    :param stored: the object.
    :param start: JSONL: the first byte (a line belongs to the piece its first byte is in); Parquet: the
        first row group; otherwise 0.
    :param stop: JSONL: one past the last byte; Parquet: one past the last row group; ``None``: the
        whole object.
    :param rows_before: Parquet: rows of the file before ``start``.
    """

    stored: StoredObject
    start: int = 0
    stop: int | None = None
    rows_before: int = 0


class SourceRow(NamedTuple):
    """One row read from a source.

    :param key: the row's key (id column value, or file name without extension); ``None`` if unknown.
    :param prompt_values: placeholder → the row's value for it (see :attr:`SourceSpec.bindings`); ``None``
        when the row has a problem that left no values.
    :param position: where the row came from: ``calls/0001.txt`` or ``day.jsonl:17`` (1-based line).
    :param passthrough: values of the configured passthrough columns, in their configured order.
    :param problem: a :data:`ROW_PROBLEMS` code when the row cannot be used, else ``None``.
    :param detail: what exactly is wrong (never the row's text), when ``problem`` is set.
    """

    key: str | None
    prompt_values: Mapping[str, str] | None
    position: str
    passthrough: tuple[Any, ...] = ()
    problem: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class SourceSpec:
    """Where the rows are and how to read them.

    :param uri: ``s3://bucket/prefix/``, ``s3://bucket/key.jsonl``, a local directory or a local file.
    :param format: ``text`` (one record per file), ``jsonl``, ``csv``, ``parquet`` or ``transcribe``
        (Amazon Transcribe or Transcribe Call Analytics output JSON, one call per file).
    :param id_column: column holding the row key (JSONL, CSV, Parquet); one-record-per-file formats use the
        file name without extension.
    :param text_column: without ``prompt_columns``, the one prompt column: ``{text_column: text_column}``
        (JSONL, CSV, Parquet); for one-record-per-file formats, the placeholder the file's text fills.
    :param prompt_columns: placeholder → source column, the columns each record's prompt is made of
        (JSONL, CSV, Parquet); see :func:`bind_prompt_columns`. Not for one-record-per-file formats.
    :param passthrough_columns: columns copied to the record index and the results table (for
        ``transcribe``: top-level fields of the JSON document).
    :param speaker_roles: speaker label (``spk_0``, ``ch_1``, ``AGENT``) → name printed before each turn.
    :param suffixes: file name endings to read under a prefix; default per format (:data:`SUFFIXES`).
    :param csv_delimiter: CSV field delimiter.
    """

    uri: str
    format: SourceFormat
    id_column: str = "id"
    text_column: str = "text"
    prompt_columns: Mapping[str, str] | None = None
    passthrough_columns: tuple[str, ...] = ()
    speaker_roles: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SPEAKER_ROLES))
    suffixes: tuple[str, ...] | None = None
    csv_delimiter: str = ","

    def __post_init__(self) -> None:
        if self.format not in SUFFIXES:
            raise ConfigError(f"source format must be one of {sorted(SUFFIXES)}, got {self.format!r}")
        if self.format == "bedrock" and (self.passthrough_columns or self.prompt_columns is not None):
            raise ConfigError(
                "a bedrock source holds finished records ({recordId, modelInput}): it has no prompt or "
                "passthrough columns; remove prompt_columns and passthrough_columns"
            )
        if isinstance(self.passthrough_columns, str):
            raise ConfigError("passthrough_columns must be a tuple of column names, got a single string")
        if self.format == "text" and self.passthrough_columns:
            raise ConfigError("a text source has no columns to pass through; remove passthrough_columns")
        if len(set(self.passthrough_columns)) != len(self.passthrough_columns):
            raise ConfigError(f"passthrough_columns lists a column twice: {list(self.passthrough_columns)}")
        if self.prompt_columns is not None:
            if self.format in ONE_PER_FILE:
                raise ConfigError(
                    f"a {self.format} source holds one text per file, not columns: remove prompt_columns and "
                    "name the placeholder the text fills with text_column"
                )
            _check_prompt_columns(self.prompt_columns)
            object.__setattr__(self, "prompt_columns", dict(self.prompt_columns))

    @property
    def bindings(self) -> dict[str, str]:
        """Placeholder → source column: ``prompt_columns``, else ``{text_column: text_column}``."""
        if self.prompt_columns is None:
            return {self.text_column: self.text_column}
        return dict(self.prompt_columns)

    @property
    def prompt_source_columns(self) -> tuple[str, ...]:
        """The distinct source columns the prompt values come from, in binding order."""
        return tuple(dict.fromkeys(self.bindings.values()))


class SourceReader:
    """Reads the rows of one :class:`SourceSpec`, object after object in key order.

    :param spec: what to read.
    :param storage: local and S3 access; S3 sources need one built with an S3 client.
    :param max_object_bytes: one-call-per-file objects larger than this are reported as ``file_too_large``
        rows instead of being read into memory (prepare passes ``QuotaConfig.max_record_bytes``).
    :param passthrough_types: the :meth:`passthrough_types` another reader of the same source found (a
        worker reading one part of the source must type the columns as the whole source does).
    """

    def __init__(
        self,
        spec: SourceSpec,
        storage: Storage | None = None,
        *,
        max_object_bytes: int | None = None,
        passthrough_types: Mapping[str, pa.DataType] | None = None,
    ) -> None:
        self.spec = spec
        self._storage = storage or Storage()
        self._max_object_bytes = max_object_bytes
        self._passthrough_types = None if passthrough_types is None else dict(passthrough_types)

    def __iter__(self) -> Iterator[SourceRow]:
        return self.rows()

    @property
    def max_object_bytes(self) -> int | None:
        """The size above which a one-record-per-file object is not read."""
        return self._max_object_bytes

    @property
    def passthrough_columns(self) -> tuple[str, ...]:
        """The passthrough column names, in the order of :attr:`SourceRow.passthrough`."""
        return self.spec.passthrough_columns

    def passthrough_types(self) -> dict[str, pa.DataType]:
        """Arrow type of each passthrough column: Parquet keeps its own types, other formats give strings.

        Non-string JSON values (numbers, objects) are passed through as their JSON text, so that one odd
        row can never break the record index's schema. A Parquet column takes its type from the first file
        (in key order) that has it with a non-null type; files are opened (footer only) until every column
        is found. A column no file has is typed ``string``: every row is then ``missing_column`` anyway.
        """
        if self._passthrough_types is None:
            columns = self.spec.passthrough_columns
            if self.spec.format == "parquet" and columns:
                self._passthrough_types = self._parquet_passthrough_types(columns)
            else:
                self._passthrough_types = {name: pa.string() for name in columns}
        return dict(self._passthrough_types)

    def _parquet_passthrough_types(self, columns: Sequence[str]) -> dict[str, pa.DataType]:
        found: dict[str, pa.DataType] = {}
        for stored in self.objects():
            with self._storage.open_seekable(stored.uri) as stream:
                schema = _parquet_file(stream, stored.uri).schema_arrow
            for name in columns:
                at = schema.get_field_index(name)
                if at >= 0 and (name not in found or pa.types.is_null(found[name])):
                    found[name] = schema.field(at).type
            if len(found) == len(columns) and not any(pa.types.is_null(t) for t in found.values()):
                break
        return {name: found.get(name, pa.string()) for name in columns}

    def objects(self) -> Iterator[StoredObject]:
        """The objects this source reads, in key order.

        :raises SourceError: when the URI holds no object with one of the expected suffixes.
        """
        suffixes = tuple(s.lower() for s in (self.spec.suffixes or SUFFIXES[self.spec.format]))
        seen = 0
        matched = 0
        for stored in self._storage.list_objects(self.spec.uri):
            seen += 1
            if stored.name.lower().endswith(suffixes):
                matched += 1
                yield stored
        if not matched:
            raise SourceError(
                f"no {'/'.join(suffixes)} files in {self.spec.uri} ({seen} other objects); check the URI, "
                f"the source format {self.spec.format!r} or set suffixes="
            )

    def records(self) -> Iterator[BatchRecord]:
        """Every line of a ``bedrock`` source, in key order and then line order (blank lines skipped).

        :raises ConfigError: when the source is not of the ``bedrock`` format.
        """
        if self.spec.format != "bedrock":
            raise ConfigError(f"records() reads bedrock sources, not {self.spec.format!r}: use rows()")
        for stored in self.objects():
            with self._storage.open_read(stored.uri) as stream:
                for line_number, line in enumerate(stream, 1):
                    if not line.isspace():
                        yield batch_record(line, f"{stored.name}:{line_number}")

    def rows(self) -> Iterator[SourceRow]:
        """Every row of every object, in key order and then file order.

        A CSV or Parquet file that lacks a configured column (id, prompt or passthrough) gives one
        ``missing_column`` row per data row, with the row's key when the id column is there and readable; a
        Parquet file whose id or prompt columns have an unusable type gives ``wrong_column_type`` rows the
        same way. A missing passthrough column counts like any other: the results table expects every
        configured column, so accepting the rows would publish them without it. A file that has a header or
        schema but no data rows gives one such row for the file itself (position: the file name, no key), so
        the misconfiguration is never silent; a CSV file without even a header holds no record. The detail
        names the file and the columns, never the header's other fields, which may be row text in a file
        without a header. The other files are read normally.

        :raises SourceError: when an object cannot be read at all (e.g. not a Parquet file).
        """
        if self.spec.format == "bedrock":
            raise ConfigError("a bedrock source holds finished records: read it with records()")
        for stored in self.objects():
            yield from self.rows_of(stored)

    def plan_parts(self, parts: int, min_part_bytes: int = 0) -> list[tuple[SourcePiece, ...]]:
        """Cut the source into about ``parts`` parts of similar size, to be read one part per worker.

        Reading the parts one after the other gives exactly the rows of :meth:`rows`, in the same order.
        Small files are grouped; a JSONL file larger than a part is cut into byte ranges at line starts, a
        Parquet file into runs of row groups; other files are never cut (a CSV field may hold a newline).
        A piece that is a range of a file is a part of its own.

        :param parts: the number of parts wanted (e.g. a few per worker).
        :param min_part_bytes: no part is cut smaller than this.
        :raises SourceError: see :meth:`objects`.
        """
        objects = list(self.objects())
        # Rounded up: a file of the whole size is then cut into ``parts`` ranges, not ``parts + 1`` (with
        # two workers, 9 parts for 8 leave one worker a part alone at the end).
        target = max(-(-sum(stored.size for stored in objects) // max(parts, 1)), min_part_bytes, 1)
        planned: list[tuple[SourcePiece, ...]] = []
        group: list[SourcePiece] = []
        group_bytes = 0
        for stored in objects:
            ranges = self._ranges(stored, target) if stored.size > target else None
            if ranges is None:
                group.append(SourcePiece(stored))
                group_bytes += stored.size
                if group_bytes >= target:
                    planned.append(tuple(group))
                    group, group_bytes = [], 0
                continue
            if group:
                planned.append(tuple(group))
                group, group_bytes = [], 0
            planned += [(piece,) for piece in ranges]
        if group:
            planned.append(tuple(group))
        return planned

    def _ranges(self, stored: StoredObject, target: int) -> list[SourcePiece] | None:
        """Pieces of about ``target`` bytes of one file, or ``None`` when it is read whole."""
        if self.spec.format == "jsonl":
            count = -(-stored.size // target)
            bounds = [stored.size * k // count for k in range(count + 1)]
            return [SourcePiece(stored, a, b) for a, b in itertools.pairwise(bounds)]
        if self.spec.format != "parquet":
            return None
        with self._storage.open_seekable(stored.uri) as stream:
            metadata = _parquet_file(stream, stored.uri).metadata
        groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
        if len(groups) < 2:
            return None
        pieces = []
        first = rows_before = piece_bytes = 0
        for i, group in enumerate(groups):
            piece_bytes += group.total_byte_size
            if piece_bytes >= target or i == len(groups) - 1:
                pieces.append(SourcePiece(stored, first, i + 1, rows_before))
                rows_before += sum(groups[g].num_rows for g in range(first, i + 1))
                first, piece_bytes = i + 1, 0
        return pieces if len(pieces) > 1 else None

    def read_part(
        self, part: Sequence[SourcePiece], line_counts: list[int] | None = None
    ) -> Iterator[SourceRow]:
        """The rows of one part of :meth:`plan_parts`, in source order.

        A JSONL piece that starts inside its file numbers its lines from 1 at its own start (the reader
        cannot know how many lines come before): the caller adds the lines of the file's earlier pieces.

        :param part: the part's pieces.
        :param line_counts: receives the number of lines of each JSONL range piece once it is read.
        """
        for piece in part:
            if self.spec.format == "jsonl" and (piece.start or piece.stop is not None):
                counted = line_counts if line_counts is not None else []
                yield from self._read_jsonl(piece.stored, piece.start, piece.stop, counted)
            elif self.spec.format == "parquet" and piece.stop is not None:
                yield from self._read_parquet(piece.stored, range(piece.start, piece.stop), piece.rows_before)
            else:
                yield from self.rows_of(piece.stored)

    def rows_of(self, stored: StoredObject) -> Iterator[SourceRow]:
        """Every row of one object of the source.

        :param stored: an object :meth:`objects` lists.
        """
        read = {
            "text": self._read_text,
            "jsonl": self._read_jsonl,
            "csv": self._read_csv,
            "parquet": self._read_parquet,
            "transcribe": self._read_transcribe,
        }[self.spec.format]
        return read(stored)

    # -- one row per line / record -----------------------------------------------------------------------

    def _read_jsonl(
        self, stored: StoredObject, start: int = 0, stop: int | None = None, counted: list[int] | None = None
    ) -> Iterator[SourceRow]:
        name = stored.name
        id_column = self.spec.id_column
        bindings = tuple(self.spec.bindings.items())
        columns = self.spec.passthrough_columns
        # A line belongs to the range its first byte is in: start reading one byte early and drop the
        # rest of the line that byte ends, unless the range starts the file.
        with self._storage.open_read(stored.uri, max(start - 1, 0)) as stream:
            lines: Iterable[bytes] = stream
            if start or stop is not None:
                lines = _lines_from(stream, start, stop, counted if counted is not None else [])
            for line_number, line in enumerate(lines, 1):
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    if line.isspace():
                        continue  # blank lines separate nothing and are not records
                    yield _unparsable(line, f"{name}:{line_number}", f"invalid JSON: {exc}")
                    continue
                if type(record) is not dict:
                    yield SourceRow(
                        None,
                        None,
                        f"{name}:{line_number}",
                        (),
                        "invalid_json",
                        f"line holds a JSON {type(record).__name__}, expected an object",
                    )
                    continue
                key = record.get(id_column)
                values = {placeholder: record.get(column) for placeholder, column in bindings}
                if (
                    type(key) is str
                    and key
                    and not key.isspace()
                    and all(type(value) is str for value in values.values())
                ):
                    # The common case, kept short: this loop runs once per row.
                    passthrough = tuple(map(_json_scalar, map(record.get, columns))) if columns else ()
                    yield SourceRow(key, values, f"{name}:{line_number}", passthrough)  # type: ignore[arg-type]
                else:
                    yield self._row_from_record(record, f"{name}:{line_number}")

    def _row_from_record(self, record: Mapping[str, Any], position: str) -> SourceRow:
        spec = self.spec
        passthrough = tuple(_json_scalar(record.get(name)) for name in spec.passthrough_columns)
        key = _key_from(record.get(spec.id_column))
        if key is None:
            return SourceRow(
                None, None, position, passthrough, "missing_id", _key_problem(spec.id_column, record)
            )
        values = {}
        for placeholder, column in spec.bindings.items():
            value = record.get(column)
            if type(value) is not str:
                return SourceRow(
                    key, None, position, passthrough, "missing_text", _text_problem(column, value, record)
                )
            values[placeholder] = value
        return SourceRow(key, values, position, passthrough)

    def _read_csv(self, stored: StoredObject) -> Iterator[SourceRow]:
        spec = self.spec
        csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
        binary = self._storage.open_read(stored.uri)
        # surrogateescape reads on past bad bytes; _has_bad_utf8 then finds them per field.
        with io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="") as stream:
            # strict: a malformed row (text after a closing quote) is an invalid_csv row, not mangled text.
            reader = csv.reader(stream, delimiter=spec.csv_delimiter, strict=True)
            header = next(reader, None)
            if header is None:
                return
            prompt_columns = spec.prompt_source_columns
            columns = (spec.id_column, *prompt_columns, *spec.passthrough_columns)
            missing = list(dict.fromkeys(name for name in columns if name not in header))
            if missing:
                key_at = header.index(spec.id_column) if spec.id_column in header else None
                yield from self._csv_file_problem(stored, reader, key_at, missing)
                return
            id_at = header.index(spec.id_column)
            value_at = [(placeholder, header.index(column)) for placeholder, column in spec.bindings.items()]
            passthrough_at = [header.index(name) for name in spec.passthrough_columns]
            checked = [(name, header.index(name)) for name in dict.fromkeys(columns)]
            width = max(at for _, at in checked)
            while True:
                position = f"{stored.name}:{reader.line_num + 1}"
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield SourceRow(None, None, position, (), "invalid_csv", f"unparsable CSV row: {exc}")
                    continue
                if not row:
                    continue
                if len(row) <= width:
                    row += [""] * (width + 1 - len(row))
                passthrough = tuple(row[i] or None for i in passthrough_at)
                key = row[id_at]
                bad_column = next((name for name, at in checked if row[at] and _has_bad_utf8(row[at])), None)
                if bad_column is not None:
                    yield SourceRow(
                        None, None, position, (), "bad_utf8", f"invalid UTF-8 in column {bad_column!r}"
                    )
                elif not key.strip():
                    yield SourceRow(
                        None, None, position, passthrough, "missing_id", f"empty {spec.id_column!r}"
                    )
                else:
                    yield SourceRow(key, {name: row[at] for name, at in value_at}, position, passthrough)

    def _csv_file_problem(
        self, stored: StoredObject, reader: Any, id_at: int | None, missing: Sequence[str]
    ) -> Iterator[SourceRow]:
        """One ``missing_column`` row per data row of a CSV file (one for the file when it has none)."""
        detail = _missing_detail(stored.name, missing)
        log.warning("%s; its rows are quarantined as missing_column", detail)
        no_values = (None,) * len(self.spec.passthrough_columns)
        rows = 0
        while True:
            position = f"{stored.name}:{reader.line_num + 1}"
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error:
                row = None  # unparsable, so no key; still one row of this file
            if row == []:
                continue
            rows += 1
            value = row[id_at] if row is not None and id_at is not None and id_at < len(row) else ""
            key = value if value.strip() and not _has_bad_utf8(value) else None
            yield SourceRow(key, None, position, no_values, "missing_column", detail)
        if not rows:
            yield SourceRow(None, None, stored.name, no_values, "missing_column", f"{detail}; it has no rows")

    def _read_parquet(
        self, stored: StoredObject, row_groups: range | None = None, rows_before: int = 0
    ) -> Iterator[SourceRow]:
        spec = self.spec
        expected = self.passthrough_types()
        # dict.fromkeys: a column may be the id, a prompt and a passthrough column at once, but is read once.
        prompt_columns = spec.prompt_source_columns
        columns = list(dict.fromkeys([spec.id_column, *prompt_columns, *spec.passthrough_columns]))
        bindings = tuple(spec.bindings.items())
        with self._storage.open_seekable(stored.uri) as stream:
            parquet = _parquet_file(stream, stored.uri)
            schema = parquet.schema_arrow
            problem = self._parquet_schema_problem(stored.name, schema, columns)
            if problem is not None:
                yield from self._parquet_file_problem(stored, parquet, *problem, row_groups, rows_before)
                return
            row_number = rows_before
            for batch in parquet.iter_batches(
                batch_size=PARQUET_BATCH_ROWS, row_groups=row_groups, columns=columns
            ):
                keys = batch.column(spec.id_column).to_pylist()
                texts = {column: _texts(batch.column(column)) for column in prompt_columns}
                passthrough = []
                # Row in the batch -> the first passthrough column whose value does not convert.
                unconvertible: dict[int, str] = {}
                for name in spec.passthrough_columns:
                    converted, failed = _cast_values(batch.column(name), expected[name])
                    passthrough.append(converted)
                    for i in failed:
                        unconvertible.setdefault(i, name)
                for i, raw_key in enumerate(keys):
                    row_number += 1
                    position = f"{stored.name}:{row_number}"
                    values = tuple(column[i] for column in passthrough)
                    key = _key_from(raw_key)
                    if key is None:
                        yield SourceRow(
                            None, None, position, values, "missing_id", f"empty {spec.id_column!r}"
                        )
                    elif unconvertible and i in unconvertible:
                        name = unconvertible[i]
                        detail = (
                            f"{stored.name}: the {name!r} value does not convert from "
                            f"{schema.field(name).type} to {expected[name]}, its type in the first file "
                            "that has it"
                        )
                        yield SourceRow(key, None, position, values, "wrong_column_type", detail)
                    else:
                        prompt = {placeholder: texts[column][i] for placeholder, column in bindings}
                        unusable = next(
                            (column for column in prompt_columns if type(texts[column][i]) is not str), None
                        )
                        if unusable is None:
                            yield SourceRow(key, prompt, position, values)
                        elif type(texts[unusable][i]) is bytes:
                            detail = f"invalid UTF-8 in {unusable!r}"
                            yield SourceRow(key, None, position, values, "bad_utf8", detail)
                        else:
                            detail = _text_problem(unusable, texts[unusable][i])
                            yield SourceRow(key, None, position, values, "missing_text", detail)

    def _parquet_schema_problem(
        self, name: str, schema: pa.Schema, columns: Sequence[str]
    ) -> tuple[str, str] | None:
        """``(problem code, detail)`` when no row of a Parquet file can be read, else ``None``."""
        spec = self.spec
        missing = [column for column in columns if schema.get_field_index(column) < 0]
        if missing:
            return "missing_column", _missing_detail(name, missing)
        wrong = []
        id_type = schema.field(spec.id_column).type
        if not _is_id_type(id_type):
            wrong.append(f"{spec.id_column!r} is {id_type}, expected a string or integer column")
        for column in spec.prompt_source_columns:
            text_type = schema.field(column).type
            if not _is_text_type(text_type):
                wrong.append(f"{column!r} is {text_type}, expected a string or binary column")
        if wrong:
            return "wrong_column_type", f"{name}: {'; '.join(wrong)}"
        return None

    def _parquet_file_problem(
        self,
        stored: StoredObject,
        parquet: pq.ParquetFile,
        problem: str,
        detail: str,
        row_groups: range | None = None,
        rows_before: int = 0,
    ) -> Iterator[SourceRow]:
        """One ``problem`` row per row of a Parquet file, or of its ``row_groups`` (one for the file when it
        has none).

        Only the id column is read, and only when it is there with a usable type, so that rows keep their
        keys; otherwise rows are counted from the file's metadata without reading any data.
        """
        metadata = parquet.metadata
        groups = row_groups if row_groups is not None else range(metadata.num_row_groups)
        total = (
            metadata.num_rows if row_groups is None else sum(metadata.row_group(g).num_rows for g in groups)
        )
        log.warning("%s; its %s rows are quarantined as %s", detail, f"{total:,}", problem)
        no_values = (None,) * len(self.spec.passthrough_columns)
        if not total:
            yield SourceRow(None, None, stored.name, no_values, problem, f"{detail}; it has no rows")
            return
        id_column = self.spec.id_column
        schema = parquet.schema_arrow
        at = schema.get_field_index(id_column)
        if at < 0 or not _is_id_type(schema.field(at).type):
            for row_number in range(rows_before + 1, rows_before + total + 1):
                yield SourceRow(None, None, f"{stored.name}:{row_number}", no_values, problem, detail)
            return
        row_number = rows_before
        for batch in parquet.iter_batches(
            batch_size=PARQUET_BATCH_ROWS, row_groups=row_groups, columns=[id_column]
        ):
            for raw_key in batch.column(0).to_pylist():
                row_number += 1
                key = _key_from(raw_key)
                yield SourceRow(key, None, f"{stored.name}:{row_number}", no_values, problem, detail)

    # -- one row per file --------------------------------------------------------------------------------

    def _read_whole(self, stored: StoredObject) -> bytes | SourceRow:
        """The object's bytes, or a ``file_too_large`` row when it must not be read into memory."""
        if self._max_object_bytes is not None and stored.size > self._max_object_bytes:
            return SourceRow(
                _stem(stored.name),
                None,
                stored.name,
                (None,) * len(self.spec.passthrough_columns),
                "file_too_large",
                f"{stored.size:,} bytes; the limit is {self._max_object_bytes:,}",
            )
        with self._storage.open_read(stored.uri) as stream:
            return stream.read()

    def _read_text(self, stored: StoredObject) -> Iterator[SourceRow]:
        data = self._read_whole(stored)
        if isinstance(data, SourceRow):
            yield data
            return
        key = _stem(stored.name)
        try:
            yield SourceRow(key, {self.spec.text_column: data.decode("utf-8-sig")}, stored.name)
        except UnicodeDecodeError as exc:
            yield SourceRow(key, None, stored.name, (), "bad_utf8", f"invalid UTF-8 at byte {exc.start}")

    def _read_transcribe(self, stored: StoredObject) -> Iterator[SourceRow]:
        data = self._read_whole(stored)
        if isinstance(data, SourceRow):
            yield data
            return
        key = _stem(stored.name)
        no_values = (None,) * len(self.spec.passthrough_columns)
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            yield _unparsable(data, stored.name, f"invalid JSON: {exc}")._replace(
                key=key, passthrough=no_values
            )
            return
        if type(document) is not dict:
            yield SourceRow(key, None, stored.name, no_values, "invalid_json", "expected a JSON object")
            return
        passthrough = tuple(_json_scalar(document.get(name)) for name in self.spec.passthrough_columns)
        try:
            text = render_transcribe(document, self.spec.speaker_roles)
        except TranscriptLayoutError as exc:
            yield SourceRow(key, None, stored.name, passthrough, "invalid_transcript", str(exc))
            return
        yield SourceRow(key, {self.spec.text_column: text}, stored.name, passthrough)


class BatchRecord(NamedTuple):
    """One line of a ``bedrock`` source: a record built elsewhere.

    :param record_id: its ``recordId`` (the source key as well); ``None`` when the line has none.
    :param model_input: its ``modelInput`` object; ``None`` when the line has a problem.
    :param position: ``file.jsonl:17`` (1-based line).
    :param problem: a :data:`ROW_PROBLEMS` code when the line cannot be used, else ``None``.
    :param detail: what exactly is wrong (never the line's content), when ``problem`` is set.
    """

    record_id: str | None
    model_input: dict[str, Any] | None
    position: str
    problem: str | None = None
    detail: str | None = None


def batch_record(line: bytes, position: str) -> BatchRecord:
    """Read one line of Bedrock's batch input format; a bad line carries a problem code.

    :param line: the line.
    :param position: where it is, for the quarantine.
    """
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        row = _unparsable(line, position, f"invalid JSON: {exc}")
        return BatchRecord(None, None, position, row.problem, row.detail)
    if type(record) is not dict:
        detail = f"line holds a JSON {type(record).__name__}, expected an object"
        return BatchRecord(None, None, position, "invalid_json", detail)
    record_id = record.get("recordId")
    if record_id is None:
        return BatchRecord(None, None, position, "missing_id", "no 'recordId' field")
    if type(record_id) is not str or not RECORD_ID_PATTERN.fullmatch(record_id):
        detail = "'recordId' must be 11 letters and digits (it is the join key of the output)"
        # Kept as the row's key when short and printable, so the entry can be found; never its content.
        printable = type(record_id) is str and len(record_id) <= 64 and record_id.isprintable()
        key = record_id if printable else None
        return BatchRecord(key, None, position, "invalid_record_id", detail)
    model_input = record.get("modelInput")
    if type(model_input) is not dict:
        kind = "absent" if model_input is None else f"a {type(model_input).__name__}"
        return BatchRecord(record_id, None, position, "missing_model_input", f"'modelInput' is {kind}")
    return BatchRecord(record_id, model_input, position)


def bind_prompt_columns(
    placeholders: Collection[str],
    source_format: str,
    *,
    prompt_columns: Mapping[str, str] | None = None,
    text_column: str | None = None,
) -> dict[str, str]:
    """Which source column fills each placeholder of a prompt template.

    - ``prompt_columns`` given (JSONL, CSV, Parquet): used as it is; it must bind every placeholder and
      nothing else.
    - One-record-per-file formats (``text``, ``transcribe``): the file's text fills the placeholder named
      ``text_column``, by default the template's only placeholder; the template has no other.
    - Otherwise every placeholder is a column of the same name. A ``text_column`` that is not a placeholder
      fills the template's only placeholder (how a single text column was bound before prompt columns).

    :param placeholders: the template's placeholder names.
    :param source_format: the source's format.
    :param prompt_columns: placeholder → source column.
    :param text_column: see above.
    :return: placeholder → source column (for one-record-per-file formats, the placeholder → itself).
    :raises TemplateError: when a placeholder would have no value or a binding names no placeholder.
    :raises ConfigError: for ``prompt_columns`` with a one-record-per-file format.
    """
    names = sorted(placeholders)
    if prompt_columns is not None:
        if source_format in ONE_PER_FILE:
            raise ConfigError(
                f"a {source_format} source holds one text per file, not columns: remove prompt_columns and "
                "name the placeholder the text fills with text_column"
            )
        _check_prompt_columns(prompt_columns)
        unbound = [name for name in names if name not in prompt_columns]
        unknown = sorted(set(prompt_columns) - set(names))
        if unbound or unknown:
            problems = []
            if unbound:
                problems.append(f"placeholder(s) {unbound} have no column")
            if unknown:
                problems.append(f"{unknown} are not placeholders of the template")
            raise TemplateError(
                f"prompt_columns {dict(prompt_columns)} do not fit the template's placeholders {names}: "
                f"{'; '.join(problems)}"
            )
        return dict(prompt_columns)
    if source_format == "bedrock":
        raise ConfigError("a bedrock source holds finished records: it fills no template")
    if source_format in ONE_PER_FILE:
        if text_column is None:
            if len(names) != 1:
                raise TemplateError(
                    f"the template has placeholders {names}; a {source_format} source fills one with the "
                    "file's text: set text_column to its name"
                )
            text_column = names[0]
        if names != [text_column]:
            raise TemplateError(
                f"a {source_format} source fills only {{{text_column}}} (text_column) with the file's text, "
                f"but the template's placeholders are {names}"
            )
        return {text_column: text_column}
    if text_column is not None and text_column not in names:
        if len(names) != 1:
            raise TemplateError(
                f"text_column {text_column!r} is not a placeholder of the template {names}; bind each "
                "placeholder to its column with prompt_columns"
            )
        return {names[0]: text_column}
    return {name: name for name in names}


def spec_for_template(
    placeholders: Collection[str],
    *,
    uri: str,
    source_format: str,
    id_column: str = "id",
    text_column: str | None = None,
    prompt_columns: Mapping[str, str] | None = None,
    passthrough_columns: Sequence[str] = (),
) -> SourceSpec:
    """The :class:`SourceSpec` that reads, for each row, a value for every placeholder of a template (see
    :func:`bind_prompt_columns` for which column fills which placeholder).

    :param placeholders: the template's placeholder names.
    :param uri: where the rows are.
    :param source_format: ``text``, ``jsonl``, ``csv``, ``parquet`` or ``transcribe``.
    :param id_column: the key column (tabular formats).
    :param text_column: see :func:`bind_prompt_columns`.
    :param prompt_columns: placeholder → source column.
    :param passthrough_columns: columns carried to the results table.
    :raises TemplateError: when the columns and the placeholders do not fit.
    :raises ConfigError: for a bad format or column list.
    """
    bindings = bind_prompt_columns(
        placeholders, source_format, prompt_columns=prompt_columns, text_column=text_column
    )
    one_per_file = source_format in ONE_PER_FILE
    return SourceSpec(
        uri=uri,
        format=source_format,  # type: ignore[arg-type]
        id_column=id_column,
        text_column=next(iter(bindings)) if one_per_file else (text_column or "text"),
        prompt_columns=None if one_per_file else bindings,
        passthrough_columns=tuple(passthrough_columns),
    )


def _check_prompt_columns(prompt_columns: Any) -> None:
    if not isinstance(prompt_columns, Mapping) or not prompt_columns:
        raise ConfigError(
            f"prompt_columns must map each placeholder to a source column, got {prompt_columns!r}"
        )
    for placeholder, column in prompt_columns.items():
        if not isinstance(placeholder, str) or not _PLACEHOLDER_NAME.fullmatch(placeholder):
            raise ConfigError(f"prompt_columns: {placeholder!r} is not a placeholder name")
        if not isinstance(column, str) or not column:
            raise ConfigError(
                f"prompt_columns: the column of {{{placeholder}}} must be a name, got {column!r}"
            )


# The placeholder names of prompt templates (bedrock_batch.prompts).
_PLACEHOLDER_NAME = re.compile(r"[A-Za-z_]\w*")


def render_transcribe(
    document: Mapping[str, Any], speaker_roles: Mapping[str, str] = DEFAULT_SPEAKER_ROLES
) -> str:
    """The transcript of one Transcribe output document, one ``Role: words`` line per speaker turn.

    Call Analytics output (a ``Transcript`` list with ``ParticipantRole``) and plain Transcribe output
    (``results.items`` with speaker or channel labels) become turns; plain output without labels gives
    ``results.transcripts`` as is.

    :param document: the decoded output JSON.
    :param speaker_roles: label → role name; unmapped labels are printed as they are.
    :raises TranscriptLayoutError: when the document has neither layout.
    """
    segments = document.get("Transcript")
    if isinstance(segments, list):
        turns = [
            (segment.get("ParticipantRole"), " " + segment["Content"])
            for segment in segments
            if isinstance(segment, Mapping) and isinstance(segment.get("Content"), str)
        ]
        return _render_turns(turns, speaker_roles)
    results = document.get("results")
    if not isinstance(results, Mapping):
        raise TranscriptLayoutError(
            "no 'results' object (Transcribe) and no 'Transcript' list (Call Analytics)"
        )
    items = results.get("items")
    if isinstance(items, list) and items:
        labelled = _labelled_words(results, items)
        if labelled is not None:
            return _render_turns(labelled, speaker_roles)
    transcripts = results.get("transcripts")
    if not isinstance(transcripts, list):
        raise TranscriptLayoutError("'results' has no 'transcripts' list")
    return "\n".join(
        entry["transcript"]
        for entry in transcripts
        if isinstance(entry, Mapping) and isinstance(entry.get("transcript"), str)
    )


def _labelled_words(results: Mapping[str, Any], items: list[Any]) -> list[tuple[str | None, str]] | None:
    """``(speaker label, word or punctuation)`` per item, or ``None`` when the output has no labels."""
    # Older output labels only the segments' items (by start time); newer output labels each item.
    label_at: dict[str, str] = {}
    for section, items_of, label_name in (
        ("speaker_labels", "segments", "speaker_label"),
        ("channel_labels", "channels", "channel_label"),
    ):
        block = results.get(section)
        groups = block.get(items_of) if isinstance(block, Mapping) else None
        for group in groups if isinstance(groups, list) else ():
            group_label = group.get(label_name) if isinstance(group, Mapping) else None
            for item in group.get("items", ()) if isinstance(group, Mapping) else ():
                label = item.get(label_name, group_label) if isinstance(item, Mapping) else None
                if isinstance(label, str) and isinstance(item.get("start_time"), str):
                    label_at[item["start_time"]] = label
    words: list[tuple[str | None, str]] = []
    any_label = False
    previous: str | None = None
    for item in items:
        if not isinstance(item, Mapping):
            continue
        alternatives = item.get("alternatives")
        content = alternatives[0].get("content") if isinstance(alternatives, list) and alternatives else None
        if not isinstance(content, str):
            continue
        start = item.get("start_time")
        label = (
            item.get("speaker_label")
            or item.get("channel_label")
            or (label_at.get(start) if isinstance(start, str) else None)
        )
        if item.get("type") == "punctuation":
            # Punctuation has no start time: it belongs to whoever spoke the word before it.
            words.append((previous, content))
            continue
        if label is not None:
            any_label = True
        previous = label if label is not None else previous
        words.append((previous, " " + content))
    return words if any_label else None


def _render_turns(pieces: list[tuple[str | None, str]], roles: Mapping[str, str]) -> str:
    """One ``Role: text`` line per run of pieces with the same label; each piece carries its own spacing."""
    lines: list[str] = []
    current: str | None = None
    turn: list[str] = []
    for label, text in pieces:
        if label != current and turn:
            lines.append(_turn_line(current, turn, roles))
            turn = []
        current = label
        turn.append(text)
    if turn:
        lines.append(_turn_line(current, turn, roles))
    return "\n".join(lines)


def _turn_line(label: str | None, pieces: list[str], roles: Mapping[str, str]) -> str:
    text = "".join(pieces).strip()
    if label is None:
        return text
    return f"{roles.get(label, label)}: {text}"


# -- small helpers -----------------------------------------------------------------------------------------


def _lines_from(stream: IO[bytes], start: int, stop: int | None, counted: list[int]) -> Iterator[bytes]:
    """The lines of ``stream`` (opened one byte before ``start``, or at 0) that start in ``[start, stop)``;
    appends how many there were to ``counted`` once they are read."""
    position = 0
    if start:
        position = start - 1 + len(stream.readline())
    lines = 0
    for line in stream:
        if stop is not None and position >= stop:
            break
        position += len(line)
        lines += 1
        yield line
    counted.append(lines)


def _stem(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    stem, dot, _ = base.rpartition(".")
    return stem if dot and stem else base


def _key_from(value: Any) -> str | None:
    """A usable key: a non-blank string, or an integer rendered in decimal."""
    if type(value) is str:
        return value if value.strip() else None
    if type(value) is int:
        return str(value)
    return None


def _key_problem(column: str, record: Mapping[str, Any]) -> str:
    if column not in record:
        return f"no {column!r} field"
    value = record[column]
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"empty {column!r}"
    return f"{column!r} is a {type(value).__name__}, expected a string or an integer"


def _text_problem(column: str, value: Any, record: Mapping[str, Any] | None = None) -> str:
    if value is None:
        if record is not None and column in record:
            return f"{column!r} is null"
        return f"no {column!r} field, or it is null" if record is None else f"no {column!r} field"
    return f"{column!r} is a {type(value).__name__}, expected a string"


def _json_scalar(value: Any) -> Any:
    # Strings stay strings; anything else becomes its JSON text, so a passthrough column always has one type.
    if value is None or type(value) is str:
        return value
    return orjson.dumps(value).decode()


def _unparsable(data: bytes, position: str, detail: str) -> SourceRow:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return SourceRow(None, None, position, (), "bad_utf8", f"invalid UTF-8 at byte {exc.start}")
    return SourceRow(None, None, position, (), "invalid_json", detail)


def _has_bad_utf8(value: str) -> bool:
    # Undecodable bytes arrive as lone surrogates (surrogateescape); ASCII text cannot hold any.
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _missing_detail(name: str, missing: Sequence[str]) -> str:
    # Only the configured names: the file's own header may be a row of text when the file has no header.
    return (
        f"{name} has no column(s) {list(missing)} (check id_column, prompt_columns or text_column, and "
        "passthrough_columns)"
    )


def _is_id_type(data_type: pa.DataType) -> bool:
    """Whether a Parquet column of this type can hold keys (null: every row is then ``missing_id``)."""
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    return (
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_string_view(data_type)
        or pa.types.is_integer(data_type)
        or pa.types.is_null(data_type)
    )


def _is_text_type(data_type: pa.DataType) -> bool:
    """Whether a Parquet column of this type can hold text (null: every row is then ``missing_text``)."""
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    return (
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_string_view(data_type)
        or pa.types.is_binary(data_type)
        or pa.types.is_large_binary(data_type)
        or pa.types.is_binary_view(data_type)
        or pa.types.is_null(data_type)
    )


def _parquet_file(stream: Any, uri: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(stream)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{uri} is not a readable Parquet file: {exc}") from exc


def _texts(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    """Text values; undecodable values stay ``bytes`` so the caller can report them as ``bad_utf8``."""
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        values = column.to_pylist()
    else:
        try:
            return column.to_pylist()
        except UnicodeDecodeError:
            values = column.cast(pa.binary()).to_pylist()
    decoded: list[Any] = []
    for value in values:
        try:
            decoded.append(value.decode("utf-8") if value is not None else None)
        except UnicodeDecodeError:
            decoded.append(value)
    return decoded


_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def _cast_values(column: pa.Array, expected: pa.DataType) -> tuple[list[Any], list[int]]:
    """The column's values as ``expected``, and the indexes of the values that do not convert (``None``)."""
    if column.type == expected:
        return column.to_pylist(), []
    try:
        return column.cast(expected).to_pylist(), []
    except pa.ArrowNotImplementedError:
        # No conversion between these types at all: every value is unusable.
        return [None] * len(column), list(range(len(column)))
    except _CAST_ERRORS:
        pass
    # Some values do not convert (e.g. "north" to int64): find them one by one, keep the others.
    values: list[Any] = []
    failed: list[int] = []
    for i in range(len(column)):
        try:
            values.append(column.slice(i, 1).cast(expected)[0].as_py())
        except _CAST_ERRORS:
            values.append(None)
            failed.append(i)
    return values, failed
