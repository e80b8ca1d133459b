"""Parallel prepare: over many shapes of source, the merged parts are exactly what one process prepares.

Each case prepares the same source once in this process and once in spawned workers over parts of a few
hundred bytes, then compares everything a later stage reads: spool bytes, line sizes, record index rows
(ids, positions, ordinals, passthrough), quarantine entries (reasons, details, ids), shard plan and the
shards' fingerprints.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bedrock_batch.config import QuotaConfig
from bedrock_batch.prepare import PrepareResult, PrepareSettings, prepare_rows
from bedrock_batch.prepare_parallel import prepare_source_parallel
from bedrock_batch.prompts import load_template
from bedrock_batch.record_ids import ID_SPACE, RecordIdIndex
from bedrock_batch.sources import SourceReader, SourceSpec
from bedrock_batch.split import plan_shards, write_shards
from bedrock_batch.storage import SegmentedFile, Storage

CLAUDE = "us.anthropic.claude-3-haiku-20240307-v1:0"
# Small jobs, so that a few hundred records make several shards and files.
QUOTAS = QuotaConfig(
    min_records_per_job=5, max_records_per_job=40, max_records_per_file=15, max_record_bytes=6000
)


def transcript(rng: random.Random) -> str:
    return "\n".join(f'Agent: line {rng.randint(0, 99)} é 😀 "q"' for _ in range(rng.randint(1, 6)))


def jsonl_rows(rng: random.Random, count: int, keys: int) -> list[bytes]:
    """Lines with duplicate keys, bad JSON, blank lines, missing ids, empty and oversized texts."""
    lines = []
    for i in range(count):
        roll = rng.random()
        row: dict[str, Any] = {"id": f"k{rng.randrange(keys)}", "transcript": transcript(rng), "queue": i % 3}
        if roll < 0.03:
            lines.append(b"{not json\n")
            continue
        if roll < 0.05:
            lines.append(b"\n")
            continue
        if roll < 0.07:
            del row["id"]
        elif roll < 0.09:
            row["transcript"] = "   "
        elif roll < 0.10:
            row["transcript"] = "x" * 7000
        lines.append(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
    return lines


def many_small_files(root: Path, rng: random.Random) -> SourceSpec:
    for n in range(12):
        lines = [] if n in (3, 7) else jsonl_rows(rng, rng.randint(1, 30), keys=150)
        (root / f"day-{n:02d}.jsonl").write_bytes(b"".join(lines))
    return SourceSpec(str(root), "jsonl", text_column="transcript", passthrough_columns=("queue",))


def one_big_file(root: Path, rng: random.Random) -> SourceSpec:
    (root / "day.jsonl").write_bytes(b"".join(jsonl_rows(rng, 400, keys=300)))
    return SourceSpec(str(root), "jsonl", text_column="transcript", passthrough_columns=("queue",))


def csv_files(root: Path, rng: random.Random) -> SourceSpec:
    for n in range(5):
        with (root / f"day-{n}.csv").open("w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(["id", "transcript", "queue"])
            for i in range(rng.randint(0, 40)):
                key = "" if rng.random() < 0.05 else f"k{rng.randrange(80)}"
                writer.writerow([key, transcript(rng), f"q{i % 4}"])
    return SourceSpec(str(root), "csv", text_column="transcript", passthrough_columns=("queue",))


def parquet_row_groups(root: Path, rng: random.Random) -> SourceSpec:
    for n in range(2):
        rows = [
            {
                "id": f"k{rng.randrange(200)}" if rng.random() > 0.03 else None,
                "transcript": transcript(rng) if rng.random() > 0.05 else None,
                "queue": rng.randint(0, 9),
            }
            for _ in range(250)
        ]
        pq.write_table(pa.Table.from_pylist(rows), root / f"day-{n}.parquet", row_group_size=30)
    pq.write_table(  # a file whose rows all lack the prompt column
        pa.Table.from_pylist([{"id": "k1", "queue": 1}] * 40), root / "day-2.parquet", row_group_size=10
    )
    return SourceSpec(str(root), "parquet", text_column="transcript", passthrough_columns=("queue",))


def text_files(root: Path, rng: random.Random) -> SourceSpec:
    for n in range(30):
        (root / f"call-{n:03d}.txt").write_text(transcript(rng) if n % 9 else "", encoding="utf-8")
    return SourceSpec(str(root), "text", text_column="transcript")


CASES: dict[str, tuple[Callable[[Path, random.Random], SourceSpec], int]] = {
    "many_small_jsonl_files": (many_small_files, ID_SPACE),
    "one_big_jsonl_file": (one_big_file, ID_SPACE),
    "one_big_jsonl_file_with_collisions": (one_big_file, 700),
    "csv_files": (csv_files, ID_SPACE),
    "parquet_row_groups": (parquet_row_groups, ID_SPACE),
    "text_files": (text_files, ID_SPACE),
}


def settings_for(reader: SourceReader) -> PrepareSettings:
    return PrepareSettings(
        template=load_template("call_center_summary", "v1"),
        model_id=CLAUDE,
        quotas=QUOTAS,
        passthrough_types=reader.passthrough_types(),
    )


def spool_bytes(result: PrepareResult, spool: SegmentedFile | None) -> bytes:
    if spool is None:
        return Path(result.spool_path).read_bytes()
    data = b""
    for segment in spool.segments:
        with open(segment.path, "rb") as stream:
            stream.seek(segment.offset)
            data += stream.read(segment.length)
    return data


@pytest.mark.parametrize("case", sorted(CASES))
def test_parallel_prepare_equals_one_process(tmp_path, case):
    make_source, id_space = CASES[case]
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    spec = make_source(source_dir, random.Random(case))
    reader = SourceReader(spec, max_object_bytes=QUOTAS.max_record_bytes)
    settings = settings_for(reader)
    single = prepare_rows(reader, tmp_path / "single", settings, RecordIdIndex(id_space=id_space))
    parallel, spool = prepare_source_parallel(
        reader,
        Storage().recipe(),
        tmp_path / "parallel",
        settings,
        processes=2,
        min_part_bytes=1,
        id_space=id_space,
    )
    assert spool is not None, "the source was prepared in one process"
    assert len({segment.path for segment in spool.segments}) > 2, "the source was not cut into parts"

    assert spool_bytes(parallel, spool) == spool_bytes(single, None)
    np.testing.assert_array_equal(parallel.load_sizes(), single.load_sizes())
    assert pq.read_table(parallel.index_path).equals(pq.read_table(single.index_path))
    assert Path(parallel.quarantine_path).read_bytes() == Path(single.quarantine_path).read_bytes()
    for name in (
        "rows",
        "records",
        "quarantined",
        "quarantine_counts",
        "total_bytes",
        "input_tokens",
        "max_output_tokens",
    ):
        assert getattr(parallel, name) == getattr(single, name), name
    assert single.quarantined, "the case quarantines nothing"
    assert single.records > 20, "the case exercises too few records"

    plan = plan_shards(single.load_sizes(), QUOTAS)
    assert plan_shards(parallel.load_sizes(), QUOTAS) == plan
    one = write_shards(single.spool_path, plan, str(tmp_path / "shards-1"))
    two = write_shards(spool, plan, str(tmp_path / "shards-2"))
    assert [s.fingerprint for s in two.shards] == [s.fingerprint for s in one.shards]
    assert [f.sha256 for f in two.on_demand] == [f.sha256 for f in one.on_demand]


def test_duplicates_and_collisions_are_what_the_cases_test(tmp_path):
    """The shared inputs hold what the merge must correct: keys repeated across parts, and collisions."""
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    spec = one_big_file(source_dir, random.Random("one_big_jsonl_file_with_collisions"))
    reader = SourceReader(spec, max_object_bytes=QUOTAS.max_record_bytes)
    settings = settings_for(reader)
    ids = RecordIdIndex(id_space=700)
    result = prepare_rows(reader, tmp_path / "single", settings, ids)
    assert result.quarantine_counts["duplicate_id"] > 20
    assert ids.collisions > 10


def test_small_source_is_prepared_in_this_process(tmp_path):
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    spec = many_small_files(source_dir, random.Random(1))
    reader = SourceReader(spec)
    settings = settings_for(reader)
    result, spool = prepare_source_parallel(
        reader, Storage().recipe(), tmp_path / "out", settings, processes=2
    )
    assert spool is None
    assert result.records > 0


@pytest.mark.parametrize("parts", [2, 3, 4, 8])
def test_one_big_jsonl_file_is_cut_into_the_parts_asked_for(tmp_path, parts):
    # A part more than asked leaves one worker a part of its own at the end: with 2 workers and 9 equal
    # parts, the prepare takes 5/9 of the one-process time instead of 4/8.
    spec = one_big_file(tmp_path, random.Random(parts))
    reader = SourceReader(spec)
    planned = reader.plan_parts(parts)
    assert len(planned) == parts
    sizes = [piece.stop - piece.start for (piece,) in planned]
    assert max(sizes) - min(sizes) <= 1
    rows = [row for part in planned for row in reader.read_part(part)]
    assert [row.key for row in rows] == [row.key for row in reader.rows()]
