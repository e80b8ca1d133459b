"""Collect a run one part at a time: each job's output joined to its slice of the record index.

A run's records are cut into *parts*: one per first-round shard (its ordinals ``[start, stop)`` in the record
index) and one for the on-demand fallback (every ordinal in no shard). :func:`collect_part` joins a part's
outputs to its slice of the index and writes the joined rows (the index columns, then those of
:data:`~bedrock_batch.collect.OUTPUT_SCHEMA` but ``record_id``) to ``<run>/collected/<part>.parquet``; its
memory is the size of one job, whatever the size of the run. The later rounds (retry, repair) answer few
records; their output lines are read once (:func:`read_overlay`) and laid over each part
(:func:`final_rows`) with the rule of a single join: a success wins over an ``invalid_output`` reply, which
wins over a failure, and among equals the later round wins. The result is the table one join of every output
over the whole index gives, part by part.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bedrock_batch.collect import (
    FAILED,
    OUTPUT_SCHEMA,
    ResultSummary,
    join_with_report,
    summarize_results,
)
from bedrock_batch.models import ModelFamily
from bedrock_batch.partitions import read_parquet
from bedrock_batch.replies import ReplyFormat
from bedrock_batch.results import (
    JobOutput,
    ManifestCheck,
    OutputCounts,
    load_index,
    read_output_batches,
    reconcile_manifests,
)
from bedrock_batch.storage import Storage, join_uri

log = logging.getLogger(__name__)

PARTS_DIR = "collected"
ON_DEMAND_PART = "on-demand"

Ranges = Sequence[tuple[int, int]]


def part_name(shard: int | None) -> str:
    """A part's name: ``shard-NNNNN`` for a first-round shard, ``on-demand`` for the fallback's records."""
    return ON_DEMAND_PART if shard is None else f"shard-{shard:05d}"


def part_uri(run_prefix: str, name: str) -> str:
    """Where a part's joined rows are written: ``<run_prefix>/collected/<name>.parquet``."""
    return join_uri(run_prefix, PARTS_DIR, f"{name}.parquet")


def shard_spans(shards: Sequence[Mapping[str, object]]) -> dict[int, tuple[int, int]] | None:
    """Each first-round shard's ordinals ``[start, stop)``, by shard number; ``None`` when the shard list
    does not carry them (a run staged by an earlier version)."""
    spans: dict[int, tuple[int, int]] = {}
    for shard in shards:
        start, stop = shard.get("start"), shard.get("stop")
        if not isinstance(start, int) or not isinstance(stop, int):
            return None
        spans[int(str(shard["shard"]))] = (start, stop)
    return spans


def complement(spans: Ranges, records: int) -> list[tuple[int, int]]:
    """The ordinals of ``[0, records)`` in none of ``spans``, as ranges: the on-demand part's."""
    gaps: list[tuple[int, int]] = []
    at = 0
    for start, stop in sorted(spans):
        if start > at:
            gaps.append((at, start))
        at = max(at, stop)
    if at < records:
        gaps.append((at, records))
    return gaps


def _in_ranges(ordinals: pa.Array | pa.ChunkedArray, ranges: Ranges) -> pa.Array:
    mask = pa.array([False] * len(ordinals))
    for start, stop in ranges:
        inside = pc.and_(pc.greater_equal(ordinals, start), pc.less(ordinals, stop))
        mask = pc.or_(mask, inside)
    return mask


def index_slice(storage: Storage, index_uri: str, ranges: Ranges) -> pa.Table:
    """The rows of the record index whose ordinal is in ``ranges``, in index order.

    Reads only the row groups whose ``ordinal`` statistics meet a range, one at a time.
    """
    with storage.open_seekable(index_uri) as stream:
        parquet = pq.ParquetFile(stream)
        column = parquet.schema_arrow.get_field_index("ordinal")
        pieces: list[pa.Table] = []
        for group in range(parquet.num_row_groups):
            stats = parquet.metadata.row_group(group).column(column).statistics
            if stats is not None and stats.has_min_max:
                low, high = int(stats.min), int(stats.max)
                if not any(start <= high and low < stop for start, stop in ranges):
                    continue
            table = parquet.read_row_group(group)
            pieces.append(table.filter(_in_ranges(table["ordinal"], ranges)))
        return pa.concat_tables(pieces) if pieces else parquet.schema_arrow.empty_table()


@dataclass(frozen=True)
class CollectedPart:
    """What :func:`collect_part` wrote.

    :param name: the part's name (:func:`part_name`).
    :param uri: the Parquet file of its joined rows.
    :param summary: its counts and tokens.
    :param manifests: its jobs' manifests against their output.
    :param unknown: output lines whose record id is not in the part's slice of the index (left out).
    """

    name: str
    uri: str
    summary: ResultSummary
    manifests: ManifestCheck
    unknown: int


def collect_part(
    storage: Storage,
    *,
    index_uri: str,
    ranges: Ranges | None,
    outputs: Sequence[JobOutput],
    family: ModelFamily,
    reply: ReplyFormat | None,
    name: str,
    target_uri: str,
) -> CollectedPart:
    """Join one part's outputs to its slice of the record index and write the joined rows to ``target_uri``.

    :param storage: local and S3 access.
    :param index_uri: the run's record index.
    :param ranges: the part's ordinals; ``None``: the whole index (a run without shard spans).
    :param outputs: the part's outputs (its job's, or the on-demand fallback's).
    :param family: the model family of the run.
    :param reply: the run's reply format.
    :param name: the part's name.
    :param target_uri: where to write the joined rows.
    """
    index = load_index(storage, index_uri) if ranges is None else index_slice(storage, index_uri, ranges)
    counts: dict[str, OutputCounts] = {}
    joined = join_with_report(index, read_output_batches(storage, outputs, family, reply, counts))
    if joined.unknown.num_rows or joined.duplicates:
        log.warning(
            "part %s: %d output line(s) with record ids not in the part left out; %d duplicate(s) resolved",
            name,
            joined.unknown.num_rows,
            joined.duplicates,
        )
    write_table(storage, joined.table, target_uri)
    return CollectedPart(
        name=name,
        uri=target_uri,
        summary=summarize_results(joined.table),
        manifests=reconcile_manifests(storage, outputs, counts),
        unknown=joined.unknown.num_rows,
    )


def write_table(storage: Storage, table: pa.Table, uri: str) -> None:
    """Write ``table`` as one Parquet file at ``uri`` (through a local temporary file)."""
    with tempfile.TemporaryDirectory(prefix="bedrock-batch-part-") as tmp:
        local = os.path.join(tmp, "part.parquet")
        pq.write_table(table, local, compression="zstd")
        storage.write_file(local, uri)


def read_part(storage: Storage, uri: str, columns: Sequence[str] | None = None) -> pa.Table:
    """A part's joined rows (``columns`` only, when given)."""
    with storage.open_seekable(uri) as stream:
        return read_parquet(stream, columns)


def read_overlay(
    storage: Storage,
    outputs: Sequence[JobOutput],
    family: ModelFamily,
    reply: ReplyFormat | None,
    counts: dict[str, OutputCounts] | None = None,
) -> pa.Table:
    """Every output line of the later rounds (retry, repair), oldest first, as :data:`OUTPUT_SCHEMA` rows;
    ``counts`` is filled with what each output held (see :func:`~bedrock_batch.results.reconcile_manifests`).
    """
    batches = list(read_output_batches(storage, outputs, family, reply, counts))
    return pa.Table.from_batches(batches, schema=OUTPUT_SCHEMA)


def final_rows(part: pa.Table, overlay: pa.Table) -> pa.Table:
    """A part's rows with the later rounds' answers laid over them, as one join of every output would give.

    :param part: the part's joined rows (:func:`collect_part`).
    :param overlay: the later rounds' output lines (:func:`read_overlay`), possibly of other parts too.
    """
    return _lay_over(part, _lines_of(part, overlay))


def _lines_of(part: pa.Table, overlay: pa.Table) -> pa.Table:
    """The overlay's lines for records of ``part``."""
    if not overlay.num_rows:
        return overlay
    return overlay.filter(pc.fill_null(pc.is_in(overlay["record_id"], value_set=part["record_id"]), False))


def _lay_over(part: pa.Table, mine: pa.Table) -> pa.Table:
    if not mine.num_rows:
        return part
    output_names = list(OUTPUT_SCHEMA.names)
    index = part.drop_columns(output_names[1:])
    first = pa.table({name: part[name] for name in output_names}, schema=OUTPUT_SCHEMA)
    # The part's own rows go first: among equal outcomes a later round's line wins, as in one join.
    joined = join_with_report(index, [*first.to_batches(), *mine.to_batches()]).table
    return joined.select(part.column_names)


def iter_final_parts(storage: Storage, uris: Sequence[str], overlay: pa.Table) -> Iterator[pa.Table]:
    """Each part's final rows, one part in memory at a time, in the order given; warns about later-round
    lines that belong to no part."""
    matched = 0
    for uri in uris:
        part = read_part(storage, uri)
        mine = _lines_of(part, overlay)
        matched += mine.num_rows
        yield _lay_over(part, mine)
    unmatched = overlay.num_rows - matched
    if unmatched:
        log.warning("%d later-round output line(s) with record ids in no part left out", unmatched)


def retryable_ids(storage: Storage, uris: Sequence[str]) -> list[str]:
    """Ids of the failed, retryable records of the parts, in part order (one part's three columns in memory at
    a time)."""
    ids: list[str] = []
    for uri in uris:
        rows = read_part(storage, uri, ["record_id", "status", "retryable"])
        mask = pc.and_(pc.equal(rows["status"], FAILED), pc.fill_null(rows["retryable"], False))
        ids.extend(str(v) for v in rows.filter(mask)["record_id"].drop_null().to_pylist())
    return ids
