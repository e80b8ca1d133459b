"""Prepare on every core: the source cut into parts, each part prepared in a worker process into its own
spool, the parts merged into exactly what one process would have prepared.

A worker cannot know what the parts before its own hold, so it gives every row the record id its key hashes
to and never calls a key a duplicate; it keeps each keyed row's digests and what became of the row. The
merge assigns the ids again from those digests, in source order, through one
:class:`~bedrock_batch.record_ids.RecordIdIndex`, and corrects the rows it decides otherwise: a duplicate of
a key seen in an earlier part leaves the spool for the quarantine, a colliding key gets its derived id in
place (ids all have 11 characters, so no size or offset moves). Ordinals, line numbers of JSONL ranges and
the record index are renumbered on the way. The spool is not copied: the parts' spools, minus the lines
taken out, are one :class:`~bedrock_batch.storage.SegmentedFile`.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bedrock_batch.prepare import (
    INDEX_COLUMNS,
    INDEX_FILE,
    INDEX_ROW_GROUP_ROWS,
    QUARANTINE_FILE,
    QUARANTINE_REASONS,
    SIZES_FILE,
    SPOOL_FILE,
    KeyedRowTrace,
    PrepareResult,
    PrepareSettings,
    index_schema,
    prepare_rows,
)
from bedrock_batch.record_ids import ID_SPACE, IdAssignment, RecordIdIndex, encode_ids, key_digests
from bedrock_batch.sources import SourcePiece, SourceReader, SourceSpec
from bedrock_batch.storage import FileSegment, SegmentedFile, StorageRecipe

log = logging.getLogger(__name__)

# Parts per process: parts finish at different times, so the merge of early parts overlaps later ones and
# a slow part does not leave a core idle for long.
PARTS_PER_PROCESS = 4
# Below this many source bytes per part, starting a process (an interpreter, numpy, pyarrow) costs more
# than the part's work; smaller sources are prepared in this process.
MIN_PART_BYTES = 32 << 20

_KEYS_FILE = "keys.bin"
_TRACE_FILE = "trace.npz"
_DUPLICATE_DETAIL = "an earlier row has the same key"
_RECORD_ID_PREFIX = b'{"recordId":"'


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class _PartTask:
    """What one worker prepares: everything picklable (a spawned process shares nothing)."""

    number: int
    pieces: tuple[SourcePiece, ...]
    work_dir: str
    spec: SourceSpec
    storage: StorageRecipe
    max_object_bytes: int | None
    settings: PrepareSettings
    id_space: int


@dataclass(frozen=True)
class _PartResult:
    number: int
    prepared: PrepareResult
    line_counts: list[int]


class _FirstChoiceIds:
    """A worker's record ids: every key gets the id it hashes to; digests and keys are kept for the merge."""

    def __init__(self, keys_path: Path, id_space: int) -> None:
        self._keys = open(keys_path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed by close()
        self._id_space = np.uint64(id_space) if id_space != ID_SPACE else None
        self.values = array("Q")
        self.fingerprints = array("Q")
        self.key_ends = array("q")
        self._written = 0

    def assign_batch(self, keys: Sequence[str]) -> IdAssignment:
        values, fingerprints = key_digests(keys)
        self.values.frombytes(values.tobytes())
        self.fingerprints.frombytes(fingerprints.tobytes())
        for key in keys:
            data = key.encode("utf-8", "surrogateescape")
            self._keys.write(data)
            self._written += len(data)
            self.key_ends.append(self._written)
        first = values if self._id_space is None else values % self._id_space
        return IdAssignment(encode_ids(first), [False] * len(keys))

    def close(self) -> None:
        self._keys.close()


def _prepare_part(task: _PartTask) -> _PartResult:
    """Worker: prepare one part into ``task.work_dir``."""
    reader = SourceReader(
        task.spec,
        task.storage.build(),
        max_object_bytes=task.max_object_bytes,
        passthrough_types=task.settings.passthrough_types,
    )
    directory = Path(task.work_dir)
    directory.mkdir(parents=True, exist_ok=True)
    ids = _FirstChoiceIds(directory / _KEYS_FILE, task.id_space)
    trace = KeyedRowTrace()
    line_counts: list[int] = []
    try:
        prepared = prepare_rows(
            reader.read_part(task.pieces, line_counts),
            directory,
            task.settings,
            ids,
            trace=trace,
            index_format="arrow",
        )
    finally:
        ids.close()
    np.savez(
        directory / _TRACE_FILE,
        values=np.frombuffer(ids.values, dtype=np.uint64),
        fingerprints=np.frombuffer(ids.fingerprints, dtype=np.uint64),
        key_ends=np.frombuffer(ids.key_ends, dtype=np.int64),
        ordinals=np.frombuffer(trace.ordinals, dtype=np.int64),
        quarantine_at=np.frombuffer(trace.quarantine_at, dtype=np.int64),
        input_tokens=np.frombuffer(trace.input_tokens, dtype=np.int64),
    )
    return _PartResult(task.number, prepared, line_counts)


def prepare_source_parallel(
    reader: SourceReader,
    storage: StorageRecipe,
    work_dir: str | os.PathLike[str],
    settings: PrepareSettings,
    *,
    processes: int,
    min_part_bytes: int | None = None,
    id_space: int = ID_SPACE,
) -> tuple[PrepareResult, SegmentedFile | None]:
    """Prepare every row of ``reader``'s source in up to ``processes`` worker processes; the result is the
    one :func:`~bedrock_batch.prepare.prepare` gives for the same rows: the same record ids, spool bytes,
    line sizes, record index rows and quarantine entries, in the same order.

    A source too small for two parts of ``min_part_bytes`` (or a single process) is prepared here.
    Workers are spawned, never forked: an Airflow task process runs threads, and a fork copies their locks.

    :param reader: the source, read whole (its passthrough types are those of the whole source).
    :param storage: how a worker reaches the source (its S3 client is rebuilt from this).
    :param work_dir: local directory for the outputs and the parts' files (created if missing).
    :param settings: how rows become records.
    :param processes: worker processes at most.
    :param min_part_bytes: no part is smaller than this (default :data:`MIN_PART_BYTES`).
    :param id_space: record id space (tests shrink it to make collisions happen).
    :return: the prepared result, whose ``spool_path`` is only the first part's spool when the spool is
        in parts, and the spool as a :class:`~bedrock_batch.storage.SegmentedFile` (``None``: one file).
    """
    directory = Path(work_dir)
    directory.mkdir(parents=True, exist_ok=True)
    if min_part_bytes is None:
        min_part_bytes = MIN_PART_BYTES
    parts = reader.plan_parts(processes * PARTS_PER_PROCESS, min_part_bytes) if processes > 1 else []
    if len(parts) < 2:
        ids = RecordIdIndex(id_space=id_space)
        return prepare_rows(reader, directory, settings, ids), None
    settings = dataclasses.replace(settings, passthrough_types=reader.passthrough_types())
    tasks = [
        _PartTask(
            number=number,
            pieces=pieces,
            work_dir=str(directory / f"part-{number:04d}"),
            spec=reader.spec,
            storage=storage,
            max_object_bytes=reader.max_object_bytes,
            settings=settings,
            id_space=id_space,
        )
        for number, pieces in enumerate(parts)
    ]
    workers = min(processes, len(tasks))
    log.info("preparing %d parts of the source in %d processes", len(tasks), workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_prepare_part, task) for task in tasks]
        try:
            return _merge(directory, tasks, futures, settings, id_space)
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _merge(
    directory: Path,
    tasks: Sequence[_PartTask],
    futures: Sequence[Future[_PartResult]],
    settings: PrepareSettings,
    id_space: int,
) -> tuple[PrepareResult, SegmentedFile]:
    """Merge the parts in source order, each as soon as it and the ones before it are done."""
    ids = RecordIdIndex(id_space=id_space)
    segments: list[FileSegment] = []
    sizes: list[npt.NDArray[np.int64]] = []
    counts: Counter[str] = Counter()
    rows = records = total_bytes = input_tokens = 0
    lines_before: dict[str, int] = {}
    index_writer = _IndexMerger(directory / INDEX_FILE, settings.passthrough_types)
    with open(directory / QUARANTINE_FILE, "wb", buffering=1 << 20) as quarantine, index_writer:
        for task, future in zip(tasks, futures, strict=True):
            part = future.result()
            line_base = _line_base(task.pieces, part.line_counts, lines_before)
            fixed = _fix_part(task, part, ids, line_base, records, index_writer, quarantine)
            segments += fixed.segments
            sizes.append(fixed.sizes)
            counts.update(fixed.counts)
            rows += part.prepared.rows
            records += len(fixed.sizes)
            total_bytes += int(fixed.sizes.sum())
            input_tokens += fixed.input_tokens
    all_sizes = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
    np.save(directory / SIZES_FILE, all_sizes)
    reason_counts = {reason: counts.get(reason, 0) for reason in QUARANTINE_REASONS}
    result = PrepareResult(
        spool_path=segments[0].path if segments else str(directory / SPOOL_FILE),
        sizes_path=str(directory / SIZES_FILE),
        index_path=str(directory / INDEX_FILE),
        quarantine_path=str(directory / QUARANTINE_FILE),
        rows=rows,
        records=records,
        quarantined=sum(reason_counts.values()),
        quarantine_counts=reason_counts,
        total_bytes=total_bytes,
        input_tokens=input_tokens,
        max_output_tokens=settings.params.max_tokens * records,
    )
    if not segments:
        Path(result.spool_path).touch()
    reasons = ", ".join(f"{reason}={count:,}" for reason, count in reason_counts.items() if count) or "none"
    log.info(
        "prepared %s records (%s bytes) from %s rows in %d parts; quarantined %s (%s)",
        f"{records:,}",
        f"{total_bytes:,}",
        f"{rows:,}",
        len(tasks),
        f"{result.quarantined:,}",
        reasons,
    )
    return result, SegmentedFile(tuple(segments))


def _line_base(
    pieces: Sequence[SourcePiece], line_counts: Sequence[int], lines_before: dict[str, int]
) -> int:
    """Lines of the file before a part that is a JSONL range (0 for any other part); remembers this part's."""
    if len(pieces) != 1 or not line_counts:
        return 0
    uri = pieces[0].stored.uri
    base = lines_before.get(uri, 0) if pieces[0].start else 0
    lines_before[uri] = base + line_counts[0]
    return base


@dataclass(frozen=True)
class _FixedPart:
    segments: list[FileSegment]
    sizes: npt.NDArray[np.int64]
    counts: Counter[str]
    input_tokens: int


def _fix_part(
    task: _PartTask,
    part: _PartResult,
    ids: RecordIdIndex,
    line_base: int,
    ordinal_base: int,
    index_writer: _IndexMerger,
    quarantine: Any,
) -> _FixedPart:
    """Assign the part's record ids in source order and correct what the worker could not know."""
    directory = Path(task.work_dir)
    prepared = part.prepared
    trace = np.load(directory / _TRACE_FILE)
    values, fingerprints = trace["values"], trace["fingerprints"]
    ordinals, quarantine_at, key_ends = trace["ordinals"], trace["quarantine_at"], trace["key_ends"]
    with open(directory / _KEYS_FILE, "rb") as keys:

        def key_at(offset: int) -> Any:
            def key(i: int) -> str:
                j = offset + i
                start = int(key_ends[j - 1]) if j else 0
                keys.seek(start)
                return keys.read(int(key_ends[j]) - start).decode("utf-8", "surrogateescape")

            return key

        resolved = np.empty(len(values), dtype=np.uint64)
        duplicates = np.empty(len(values), dtype=np.bool_)
        for start in range(0, len(values), 1 << 16):
            stop = start + (1 << 16)
            resolved[start:stop], duplicates[start:stop] = ids.assign_digests(
                values[start:stop], fingerprints[start:stop], key_at(start)
            )
    first = values if ids.id_space == ID_SPACE else values % np.uint64(ids.id_space)
    changed = np.flatnonzero(duplicates | (resolved != first))
    part_sizes: npt.NDArray[np.int64] = np.load(prepared.sizes_path)
    removed: list[int] = []  # ordinals of the part that leave the spool
    new_ids: dict[int, str] = {}  # ordinal -> its record id, where it differs
    entries: dict[int, tuple[str, str, str]] = {}  # quarantine entry -> (new id, reason, detail)
    inserted: dict[int, list[int]] = {}  # quarantine entry -> removed ordinals quarantined before it
    changed_ids = encode_ids(resolved[changed]) if len(changed) else []
    prefix = np.zeros(len(part_sizes) + 1, dtype=np.int64)
    np.cumsum(part_sizes, out=prefix[1:])
    with open(prepared.spool_path, "r+b") as spool:
        for row, record_id in zip(changed.tolist(), changed_ids, strict=True):
            ordinal = int(ordinals[row])
            if ordinal >= 0 and duplicates[row]:
                removed.append(ordinal)
                new_ids[ordinal] = record_id
                inserted.setdefault(int(quarantine_at[row]), []).append(ordinal)
            elif ordinal >= 0:
                new_ids[ordinal] = record_id
                _patch_record_id(spool, int(prefix[ordinal]), record_id)
            elif duplicates[row]:
                entries[int(quarantine_at[row])] = (record_id, "duplicate_id", _DUPLICATE_DETAIL)
            else:
                entries[int(quarantine_at[row])] = (record_id, "", "")
    keep = np.ones(len(part_sizes), dtype=np.bool_)
    keep[removed] = False
    file_name = task.pieces[0].stored.name
    removed_rows = index_writer.add_part(
        prepared.index_path, ordinal_base, keep, new_ids, line_base, file_name
    )
    counts = _merge_quarantine(
        Path(prepared.quarantine_path), quarantine, entries, inserted, removed_rows, line_base
    )
    segments = _spool_segments(prepared.spool_path, prefix, sorted(removed))
    input_tokens = prepared.input_tokens - int(trace["input_tokens"][removed].sum())
    return _FixedPart(segments, part_sizes[keep], counts, input_tokens)


def _patch_record_id(spool: Any, offset: int, record_id: str) -> None:
    """Write ``record_id`` over the id of the line at ``offset`` (same length: nothing moves)."""
    spool.seek(offset)
    head = spool.read(len(_RECORD_ID_PREFIX))
    if head != _RECORD_ID_PREFIX:
        raise AssertionError(f"spool line at byte {offset:,} does not start with its record id")
    spool.write(record_id.encode("ascii"))


def _spool_segments(path: str, prefix: npt.NDArray[np.int64], removed: Sequence[int]) -> list[FileSegment]:
    """The part's spool as byte ranges, the removed lines cut out."""
    segments = []
    start = 0
    for ordinal in [*removed, len(prefix) - 1]:
        offset, end = int(prefix[start]), int(prefix[ordinal])
        if end > offset:
            segments.append(FileSegment(path, offset, end - offset))
        start = ordinal + 1
    return segments


def _merge_quarantine(
    path: Path,
    out: Any,
    entries: Mapping[int, tuple[str, str, str]],
    inserted: Mapping[int, list[int]],
    removed_rows: Mapping[int, tuple[str, str, str]],
    line_base: int,
) -> Counter[str]:
    """Copy a part's quarantine into the merged one: corrected entries, and an entry for each row taken
    out of the spool where the single pass would have written it. Returns the count per reason."""
    counts: Counter[str] = Counter()

    def write(entry: dict[str, Any]) -> None:
        if line_base and entry["source_position"].rpartition(":")[2].isdigit():
            entry["source_position"] = _shift_position(entry["source_position"], line_base)
        counts[entry["reason"]] += 1
        out.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))

    def write_removed(at: int) -> None:
        for ordinal in inserted.get(at, ()):
            position, key, record_id = removed_rows[ordinal]
            entry = {"source_position": position, "source_key": key, "record_id": record_id}
            write({**entry, "reason": "duplicate_id", "detail": _DUPLICATE_DETAIL})

    written = 0
    with open(path, "rb") as stream:
        for number, line in enumerate(stream):
            write_removed(number)
            entry = orjson.loads(line)
            fix = entries.get(number)
            if fix is not None:
                entry["record_id"], reason, detail = fix
                if reason:
                    entry["reason"], entry["detail"] = reason, detail
            write(entry)
            written = number + 1
    # Rows taken out after the part's last quarantine entry.
    write_removed(written)
    return counts


def _shift_position(position: str, lines: int) -> str:
    """``name:N`` → ``name:N+lines``: a JSONL range's line numbers counted from the file's start."""
    name, _, line = position.rpartition(":")
    return f"{name}:{int(line) + lines}"


class _IndexMerger:
    """Writes the merged record index: the parts' rows renumbered, in row groups of the single pass's size."""

    def __init__(self, path: Path, passthrough: Mapping[str, pa.DataType]) -> None:
        self._schema = index_schema(passthrough)
        self._writer = pq.ParquetWriter(path, self._schema, compression="zstd")
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def add_part(
        self,
        path: str,
        ordinal_base: int,
        keep: npt.NDArray[np.bool_],
        new_ids: Mapping[int, str],
        line_base: int,
        file_name: str,
    ) -> dict[int, tuple[str, str, str]]:
        """Append a part's index; return ``(position, key, record id)`` of each row taken out, by its
        ordinal in the part (positions as the worker wrote them)."""
        with pa.memory_map(path) as source:
            table = pa.ipc.open_file(source).read_all()
        if new_ids:
            record_ids = table.column("record_id").to_pylist()
            for ordinal, record_id in new_ids.items():
                record_ids[ordinal] = record_id
            table = table.set_column(0, self._schema.field(0), pa.array(record_ids, pa.string()))
        removed: dict[int, tuple[str, str, str]] = {}
        if not keep.all():
            gone = np.flatnonzero(~keep)
            columns = [table.column(name).take(gone).to_pylist() for name in INDEX_COLUMNS[:3]]
            for ordinal, record_id, key, position in zip(gone.tolist(), *columns, strict=True):
                removed[ordinal] = (position, key, record_id)
            table = table.filter(pa.array(keep))
        if line_base:
            # A range part holds one file's lines: every position is "<file name>:<line>".
            prefix = f"{file_name}:"
            lines = pc.cast(pc.utf8_slice_codeunits(table.column("source_position"), len(prefix)), pa.int64())
            shifted = pc.binary_join_element_wise(
                pa.scalar(prefix), pc.cast(pc.add(lines, line_base), pa.string()), ""
            )
            table = table.set_column(2, self._schema.field(2), shifted)
        # From a buffer: pa.array() of a numpy array would import pandas (about a second) to check its type.
        ordinals = np.arange(ordinal_base, ordinal_base + table.num_rows, dtype=np.int64)
        column = pa.Array.from_buffers(pa.int64(), len(ordinals), [None, pa.py_buffer(ordinals)])
        table = table.set_column(3, self._schema.field(3), column).cast(self._schema)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= INDEX_ROW_GROUP_ROWS:
            self._flush(INDEX_ROW_GROUP_ROWS)
        return removed

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self._pending)
        self._writer.write_table(table.slice(0, rows), row_group_size=rows)
        rest = table.slice(rows)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def __enter__(self) -> _IndexMerger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None and self._pending_rows:
            self._flush(self._pending_rows)
        self._writer.close()
