"""Stage 2, split: plan quota-abiding shards (one job each) over the spool, then write their input files.

Shards and their files are contiguous ordinal ranges; what cannot form a valid job goes on demand or fails.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bedrock_batch.config import QuotaConfig
from bedrock_batch.errors import BelowMinimumError, PlanError
from bedrock_batch.storage import SegmentedFile, Storage, StorageReadError, join_uri

log = logging.getLogger(__name__)

ON_DEMAND_DIR = "on-demand"

Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class RecordRange:
    """A contiguous run of spool records.

    :param start: first ordinal.
    :param stop: one past the last ordinal.
    :param offset: byte offset of the first record in the spool.
    :param length: bytes of all the records.
    """

    start: int
    stop: int
    offset: int
    length: int

    @property
    def records(self) -> int:
        """Number of records."""
        return self.stop - self.start

    def to_dict(self) -> dict[str, int]:
        """A JSON-serializable copy, with the record count spelled out."""
        return {
            "start": self.start,
            "stop": self.stop,
            "records": self.records,
            "offset": self.offset,
            "length": self.length,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordRange:
        """Rebuild from :meth:`to_dict` output.

        :param data: the dict.
        """
        return cls(start=data["start"], stop=data["stop"], offset=data["offset"], length=data["length"])


@dataclass(frozen=True)
class Shard:
    """One planned job: a record range and the input files it is cut into.

    :param number: 1-based shard number; names the shard's prefix ``shard-0001/``.
    :param span: all of the shard's records.
    :param files: the input files, in order; together exactly ``span``.
    """

    number: int
    span: RecordRange
    files: tuple[RecordRange, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy; the number is under ``shard``, as in the submit stage's descriptors."""
        return {"shard": self.number, **self.span.to_dict(), "files": [f.to_dict() for f in self.files]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Shard:
        """Rebuild from :meth:`to_dict` output.

        :param data: the dict.
        """
        files = tuple(RecordRange.from_dict(f) for f in data["files"])
        return cls(number=data["shard"], span=RecordRange.from_dict(data), files=files)


@dataclass(frozen=True)
class ShardPlan:
    """Every spool record placed exactly once: in a shard, or in the on-demand fallback.

    :param shards: the jobs to submit, in ordinal order.
    :param on_demand: records that cannot form a valid job, for the on-demand (InvokeModel/Converse) path.
    :param records: records in the spool.
    :param total_bytes: bytes in the spool.
    """

    shards: tuple[Shard, ...]
    on_demand: tuple[RecordRange, ...]
    records: int
    total_bytes: int

    @property
    def on_demand_records(self) -> int:
        """Records routed to the on-demand fallback."""
        return sum(r.records for r in self.on_demand)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy (a few hundred bytes per shard)."""
        return {
            "records": self.records,
            "total_bytes": self.total_bytes,
            "shards": [shard.to_dict() for shard in self.shards],
            "on_demand": [r.to_dict() for r in self.on_demand],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardPlan:
        """Rebuild from :meth:`to_dict` output.

        :param data: the dict, e.g. pulled from XCom.
        """
        return cls(
            shards=tuple(Shard.from_dict(s) for s in data["shards"]),
            on_demand=tuple(RecordRange.from_dict(r) for r in data["on_demand"]),
            records=data["records"],
            total_bytes=data["total_bytes"],
        )


def plan_shards(sizes: Sequence[int] | Int64Array, quotas: QuotaConfig) -> ShardPlan:
    """Cut the spool into as few jobs as the quotas allow, with record counts as even as they allow.

    Every shard has between ``min_records_per_job`` and ``max_records_per_job`` records and at most
    ``max_job_bytes``; every file at most ``max_records_per_file`` records and ``max_file_bytes``. Records
    that fit no such job (fewer than the minimum in total, a remainder the limits cannot absorb, records
    too large for the minimum number to share a job) go to the on-demand fallback when
    ``quotas.below_minimum`` is ``"on_demand"``.

    :param sizes: byte size of each spool line, by ordinal (:meth:`PrepareResult.load_sizes`).
    :param quotas: the model's limits.
    :raises BelowMinimumError: when some records fit no job and ``quotas.below_minimum`` is ``"fail"``.
    :raises PlanError: when a size is not positive, or one record exceeds the file or job byte limit.
    """
    sizes_array = np.asarray(sizes, dtype=np.int64)
    if sizes_array.ndim != 1:
        raise PlanError(f"sizes must be a flat sequence of record sizes, got shape {sizes_array.shape}")
    _check_sizes(sizes_array, quotas)
    count = len(sizes_array)
    prefix = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(sizes_array, out=prefix[1:])

    job_ranges: list[tuple[int, int]] = []
    leftovers: list[tuple[int, int]] = []
    crowded_out = 0
    for start, stop, jobbable in _job_regions(prefix, quotas):
        if not jobbable:
            leftovers.append((start, stop))
            crowded_out += stop - start
            continue
        jobs, rest = _partition(
            prefix, start, stop, quotas.min_records_per_job, quotas.max_records_per_job, quotas.max_job_bytes
        )
        job_ranges += jobs
        leftovers += rest
    on_demand = tuple(
        _record_range(prefix, start, stop) for start, stop in _merge_adjacent(sorted(leftovers))
    )
    if on_demand and quotas.below_minimum == "fail":
        raise BelowMinimumError(_below_minimum_message(on_demand, count, crowded_out, quotas))

    shards = []
    for number, (start, stop) in enumerate(job_ranges, 1):
        files, rest = _partition(
            prefix,
            start,
            stop,
            1,
            quotas.max_records_per_file,
            min(quotas.max_file_bytes, quotas.max_job_bytes),
        )
        assert not rest, "with a minimum of one record, every record fits a file"
        shards.append(
            Shard(
                number=number,
                span=_record_range(prefix, start, stop),
                files=tuple(_record_range(prefix, a, b) for a, b in files),
            )
        )
    plan = ShardPlan(shards=tuple(shards), on_demand=on_demand, records=count, total_bytes=int(prefix[-1]))
    log.info(
        "planned %d shards for %s records (%s bytes); %s records on demand",
        len(shards),
        f"{count:,}",
        f"{plan.total_bytes:,}",
        f"{plan.on_demand_records:,}",
    )
    return plan


def _check_sizes(sizes: Int64Array, quotas: QuotaConfig) -> None:
    if not len(sizes):
        return
    if int(sizes.min()) <= 0:
        ordinal = int(np.argmax(sizes <= 0))
        raise PlanError(
            f"record {ordinal} has size {int(sizes[ordinal])}; every record line has at least 1 byte"
        )
    limit = min(quotas.max_file_bytes, quotas.max_job_bytes)
    largest = int(np.argmax(sizes))
    if int(sizes[largest]) > limit:
        raise PlanError(
            f"record {largest} is {int(sizes[largest]):,} bytes, more than one input file may hold "
            f"({limit:,}); prepare quarantines such records when max_record_bytes is at most max_file_bytes"
        )


def _job_regions(prefix: Int64Array, quotas: QuotaConfig) -> list[tuple[int, int, bool]]:
    """Split ordinals into regions that can hold jobs and regions that cannot.

    A record can be in a job only if some ``min_records_per_job`` consecutive records around it fit in
    ``max_job_bytes``; only huge records (or fewer records than the minimum) fail that.
    """
    count = len(prefix) - 1
    minimum = quotas.min_records_per_job
    if count < minimum:
        return [(0, count, False)] if count else []
    window_fits = (prefix[minimum:] - prefix[:-minimum]) <= quotas.max_job_bytes
    if window_fits.all():
        return [(0, count, True)]
    starts = np.flatnonzero(window_fits)
    # Coverage counts, per record, the fitting windows that contain it.
    coverage = np.cumsum(
        np.bincount(starts, minlength=count + 1) - np.bincount(starts + minimum, minlength=count + 1)
    )[:count]
    covered = coverage > 0
    edges = np.flatnonzero(np.diff(covered.astype(np.int8))) + 1
    bounds = [0, *edges.tolist(), count]
    return [(a, b, bool(covered[a])) for a, b in itertools.pairwise(bounds)]


def _partition(
    prefix: Int64Array, start: int, stop: int, min_count: int, max_count: int, max_bytes: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Cut ``[start, stop)`` into ranges of ``min_count..max_count`` records and at most ``max_bytes``.

    Uses the fewest ranges the upper limits allow, with counts as even as the limits allow. Returns the
    ranges and the leftovers no valid range could take (never any when ``min_count`` is 1).
    """

    def furthest_stop(at: int) -> int:
        by_bytes = int(np.searchsorted(prefix, prefix[at] + max_bytes, side="right")) - 1
        return min(at + max_count, stop, by_bytes)

    def earliest_start(end: int) -> int:
        by_bytes = int(np.searchsorted(prefix, prefix[end] - max_bytes, side="left"))
        return max(end - max_count, start, by_bytes)

    # reach[j] is the leftmost ordinal from which j ranges cover everything up to `stop` (greedy from the
    # right is optimal for upper limits), so "how many ranges does the rest need" is one lookup.
    reach = [stop]
    while reach[-1] > start:
        reach.append(earliest_start(reach[-1]))

    ranges: list[tuple[int, int]] = []
    leftovers: list[tuple[int, int]] = []
    at = start
    needed = len(reach) - 1
    while at < stop:
        while needed > 1 and reach[needed - 1] <= at:
            needed -= 1
        remaining = stop - at
        if remaining < min_count:
            leftovers.append((at, stop))
            break
        furthest = furthest_stop(at)
        # The cut must leave a rest that `needed - 1` ranges can cover, each with at least min_count records.
        low = max(at + min_count, reach[needed - 1])
        high = min(furthest, stop - (needed - 1) * min_count)
        if low <= high:
            end = min(max(at + math.ceil(remaining / needed), low), high)
        elif furthest - at >= min_count:
            # The rest cannot be split into valid ranges: fill this one, a remainder will stay.
            end = furthest
        else:
            leftovers.append((at, at + 1))  # too heavy to start a valid range here
            at += 1
            continue
        ranges.append((at, end))
        at = end
    return ranges, leftovers


def _merge_adjacent(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, stop in ranges:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return merged


def _record_range(prefix: Int64Array, start: int, stop: int) -> RecordRange:
    offset = int(prefix[start])
    return RecordRange(start=start, stop=stop, offset=offset, length=int(prefix[stop]) - offset)


def _below_minimum_message(
    on_demand: tuple[RecordRange, ...], count: int, crowded_out: int, quotas: QuotaConfig
) -> str:
    left = sum(r.records for r in on_demand)
    minimum = quotas.min_records_per_job
    fix = "set below_minimum='on_demand' to send them through on-demand InvokeModel/Converse"
    if count < minimum:
        return (
            f"only {count:,} records to submit, below the service minimum of {minimum:,} per batch job "
            f"(min_records_per_job); {fix}, or add records to the run"
        )
    first = on_demand[0]
    message = (
        f"{left:,} of {count:,} records fit no valid batch job "
        f"(first: ordinals {first.start:,}-{first.stop - 1:,}); a job needs {minimum:,} to "
        f"{quotas.max_records_per_job:,} records and at most {quotas.max_job_bytes:,} bytes. "
    )
    if crowded_out:
        return message + (
            f"{crowded_out:,} of them sit among records so large that no {minimum:,} in a row fit in "
            "max_job_bytes; "
            f"lower max_record_bytes so prepare quarantines them, or {fix}"
        )
    return message + f"Raise max_records_per_job so the remainder can join a job, or {fix}"


@dataclass(frozen=True)
class WrittenFile:
    """One input file as written.

    :param uri: where it was written (``.../shard-0001/part-0001.jsonl``).
    :param span: the records it holds.
    :param sha256: hex digest of its content.
    """

    uri: str
    span: RecordRange
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy."""
        return {"uri": self.uri, **self.span.to_dict(), "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WrittenFile:
        """Rebuild from :meth:`to_dict` output.

        :param data: the dict.
        """
        return cls(uri=data["uri"], span=RecordRange.from_dict(data), sha256=data["sha256"])


@dataclass(frozen=True)
class WrittenShard:
    """One shard as written: the job's input prefix and the fingerprint its job name derives from.

    :param number: 1-based shard number.
    :param input_uri: the prefix holding exactly this shard's files (the job's ``s3InputDataConfig.s3Uri``).
    :param span: all of the shard's records.
    :param files: its input files.
    :param fingerprint: sha256 over the file names and their digests: the same records in the same files
        give the same fingerprint, whatever the destination.
    """

    number: int
    input_uri: str
    span: RecordRange
    files: tuple[WrittenFile, ...]
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy; the number is under ``shard``, as in the submit stage's descriptors."""
        return {
            "shard": self.number,
            "input_uri": self.input_uri,
            **self.span.to_dict(),
            "files": [f.to_dict() for f in self.files],
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WrittenShard:
        """Rebuild from :meth:`to_dict` output.

        :param data: the dict.
        """
        return cls(
            number=data["shard"],
            input_uri=data["input_uri"],
            span=RecordRange.from_dict(data),
            files=tuple(WrittenFile.from_dict(f) for f in data["files"]),
            fingerprint=data["fingerprint"],
        )


@dataclass(frozen=True)
class ShardManifest:
    """Everything :func:`write_shards` wrote, as plain metadata fit for XCom.

    :param shards: the written shards, one job each.
    :param on_demand: files holding the on-demand fallback records (same line format), outside every shard.
    :param records: records in the spool.
    :param total_bytes: bytes in the spool.
    """

    shards: tuple[WrittenShard, ...]
    on_demand: tuple[WrittenFile, ...]
    records: int
    total_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy."""
        return {
            "records": self.records,
            "total_bytes": self.total_bytes,
            "shards": [s.to_dict() for s in self.shards],
            "on_demand": [f.to_dict() for f in self.on_demand],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardManifest:
        """Rebuild from :meth:`to_dict` output.

        :param data: the dict, e.g. pulled from XCom.
        """
        return cls(
            shards=tuple(WrittenShard.from_dict(s) for s in data["shards"]),
            on_demand=tuple(WrittenFile.from_dict(f) for f in data["on_demand"]),
            records=data["records"],
            total_bytes=data["total_bytes"],
        )


def shard_fingerprint(files: Sequence[tuple[str, str]]) -> str:
    """Fingerprint of a shard from its ``(file name, sha256)`` pairs, in order.

    :param files: each input file's name (``part-0001.jsonl``) and content digest.
    """
    digest = hashlib.sha256()
    for name, sha256 in files:
        digest.update(f"{name}\t{sha256}\n".encode())
    return digest.hexdigest()


def write_shards(
    spool_path: str | os.PathLike[str] | SegmentedFile,
    plan: ShardPlan,
    destination: str,
    *,
    storage: Storage | None = None,
) -> ShardManifest:
    """Copy each planned file's byte range of the spool to ``<destination>/shard-NNNN/part-NNNN.jsonl``.

    On-demand records go to ``<destination>/on-demand/part-NNNN.jsonl``, outside every job's prefix. Each
    file streams through in chunks and is hashed on the way. Writing the same plan again writes the same
    files; a shard prefix that holds files this plan does not write is refused, because the job would
    read them too.

    :param spool_path: the spool written by prepare (a :class:`~bedrock_batch.storage.SegmentedFile` when
        it was prepared in parts).
    :param plan: the plan from :func:`plan_shards` for this spool.
    :param destination: local directory or ``s3://bucket/prefix``.
    :param storage: local and S3 access (S3 destinations need one with an S3 client).
    :raises PlanError: when the spool's size differs from the plan's, or a prefix holds foreign files.
    """
    storage = storage or Storage()
    actual = spool_path.size if isinstance(spool_path, SegmentedFile) else os.path.getsize(spool_path)
    if actual != plan.total_bytes:
        raise PlanError(
            f"spool {spool_path} has {actual:,} bytes but the plan covers {plan.total_bytes:,}; "
            "plan again from this spool's record sizes"
        )
    shards = []
    for shard in plan.shards:
        prefix = join_uri(destination, f"shard-{shard.number:04d}")
        files = _write_files(storage, spool_path, prefix, shard.files)
        fingerprint = shard_fingerprint([(f.uri.rsplit("/", 1)[-1], f.sha256) for f in files])
        shards.append(
            WrittenShard(
                number=shard.number,
                input_uri=prefix + "/",
                span=shard.span,
                files=files,
                fingerprint=fingerprint,
            )
        )
        log.info(
            "wrote shard %d: %s records, %s bytes in %d file(s), fingerprint %s",
            shard.number,
            f"{shard.span.records:,}",
            f"{shard.span.length:,}",
            len(files),
            fingerprint[:12],
        )
    on_demand = _write_files(storage, spool_path, join_uri(destination, ON_DEMAND_DIR), plan.on_demand)
    return ShardManifest(
        shards=tuple(shards), on_demand=on_demand, records=plan.records, total_bytes=plan.total_bytes
    )


def _write_files(
    storage: Storage,
    spool_path: str | os.PathLike[str] | SegmentedFile,
    prefix: str,
    ranges: Sequence[RecordRange],
) -> tuple[WrittenFile, ...]:
    if not ranges:
        return ()
    names = [f"part-{i:04d}.jsonl" for i in range(1, len(ranges) + 1)]
    _refuse_foreign_files(storage, prefix, set(names))
    return tuple(
        WrittenFile(uri=uri, span=span, sha256=storage.write_range(spool_path, span.offset, span.length, uri))
        for span, uri in ((span, join_uri(prefix, name)) for span, name in zip(ranges, names, strict=True))
    )


def _refuse_foreign_files(storage: Storage, prefix: str, expected: set[str]) -> None:
    try:
        names = (obj.name for obj in storage.list_objects(prefix + "/"))
        # *.partial files are local writes cut short; the retry replaces them.
        foreign = sorted(name for name in names if name not in expected and not name.endswith(".partial"))
    except StorageReadError:
        return  # nothing there yet
    if foreign:
        raise PlanError(
            f"{prefix}/ already holds {foreign[:3]}{'...' if len(foreign) > 3 else ''}, which this plan does "
            "not write and a job would read too; write each run to a fresh destination or empty this prefix"
        )
