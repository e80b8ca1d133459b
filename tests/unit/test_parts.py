"""Collect in parts: each job joined to its slice of the record index, the later rounds laid over each part,
gives exactly the table of one join of every output over the whole index."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bedrock_batch.collect import join_results
from bedrock_batch.models import FAMILIES
from bedrock_batch.parts import (
    collect_part,
    complement,
    final_rows,
    index_slice,
    iter_final_parts,
    part_name,
    read_overlay,
    retryable_ids,
    shard_spans,
)
from bedrock_batch.results import JobOutput, read_output_batches
from bedrock_batch.storage import Storage

FAMILY = FAMILIES["anthropic"]
RECORDS = 500
# Three jobs with the on-demand records between and after them, as a plan with crowded-out ranges has.
SPANS = {1: (0, 120), 2: (150, 300), 3: (320, 470)}


def reply(record_id: str, text: str) -> bytes:
    return orjson.dumps(
        {
            "recordId": record_id,
            "modelInput": {"messages": [{"role": "user", "content": "never read"}]},
            "modelOutput": {
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 10, "output_tokens": len(text)},
            },
        }
    )


def error(record_id: str, code: int) -> bytes:
    return orjson.dumps({"recordId": record_id, "error": {"errorCode": code, "errorMessage": f"code {code}"}})


def lines_for(ids: list[str], rng: random.Random, tag: str) -> list[bytes]:
    """Output lines of a job over ``ids``: replies, 429s, 400s, some records with no line, some twice."""
    lines: list[bytes] = []
    for record_id in ids:
        fate = rng.random()
        if fate < 0.1:
            continue  # missing
        if fate < 0.25:
            lines.append(error(record_id, rng.choice([429, 400, 500])))
        else:
            lines.append(reply(record_id, f"{tag} answer for {record_id}"))
        if rng.random() < 0.05:
            lines.append(rng.choice([reply(record_id, f"{tag} again"), error(record_id, 429)]))
    rng.shuffle(lines)
    return lines


def write_output(directory: Path, lines: list[bytes]) -> str:
    directory.mkdir(parents=True)
    (directory / "part-0001.jsonl.out").write_bytes(b"".join(line + b"\n" for line in lines))
    return str(directory) + "/"


@pytest.fixture
def index(tmp_path: Path) -> tuple[str, pa.Table]:
    table = pa.table(
        {
            "record_id": [f"r{i:04d}" for i in range(RECORDS)],
            "source_key": [f"key-{i}" for i in range(RECORDS)],
            "source_position": [f"src.jsonl:{i + 1}" for i in range(RECORDS)],
            "ordinal": pa.array(range(RECORDS), pa.int64()),
            "region": [f"region-{i % 7}" for i in range(RECORDS)],
        }
    )
    path = tmp_path / "record_index.parquet"
    pq.write_table(table, path, row_group_size=64)  # several row groups, most outside any one job
    return str(path), table


def test_spans_and_their_complement():
    shards: list[dict[str, Any]] = [{"shard": n, "start": a, "stop": b} for n, (a, b) in SPANS.items()]
    assert shard_spans(shards) == SPANS
    assert shard_spans([{"shard": 1, "input_uri": "s3://b/x/"}]) is None  # staged by an earlier version
    assert complement(list(SPANS.values()), RECORDS) == [(120, 150), (300, 320), (470, 500)]
    assert complement([(0, 10)], 10) == []
    assert complement([], 4) == [(0, 4)]
    assert (part_name(7), part_name(None)) == ("shard-00007", "on-demand")


def test_index_slice_reads_exactly_the_ranges(index):
    uri, table = index
    ranges = [(10, 70), (130, 131), (499, 500)]
    got = index_slice(Storage(None), uri, ranges)
    expected = [*range(10, 70), 130, 499]
    assert got["ordinal"].to_pylist() == expected
    assert got.to_pylist() == table.take(expected).to_pylist()
    assert index_slice(Storage(None), uri, []).num_rows == 0
    assert index_slice(Storage(None), uri, []).schema == table.schema


@pytest.mark.parametrize("seed", range(8))
def test_parts_with_later_rounds_give_the_table_of_one_join(tmp_path, index, seed):
    rng = random.Random(seed)
    storage = Storage(None)
    uri, table = index
    ids = table["record_id"].to_pylist()

    first: list[JobOutput] = []
    for number, (start, stop) in SPANS.items():
        arn = f"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/job{number}"
        first.append(
            JobOutput(arn, write_output(tmp_path / f"job{number}", lines_for(ids[start:stop], rng, arn)))
        )
    gaps = complement(list(SPANS.values()), RECORDS)
    gap_ids = [ids[i] for a, b in gaps for i in range(a, b)]
    on_demand = JobOutput("on-demand", write_output(tmp_path / "on-demand", lines_for(gap_ids, rng, "od")))
    # The later rounds answer a random subset, across parts, and one id that is in no part.
    retried = rng.sample(ids, 120)
    retry = JobOutput("on-demand-retry", write_output(tmp_path / "retry", lines_for(retried, rng, "retry")))
    repaired = [*rng.sample(ids, 30), "not-a-record"]
    repair = JobOutput("on-demand-repair", write_output(tmp_path / "repair", lines_for(repaired, rng, "fix")))
    later = [retry, repair]

    expected = join_results(table, read_output_batches(storage, [*first, on_demand, *later], FAMILY)).sort_by(
        "ordinal"
    )

    uris = []
    for (number, span), output in zip(SPANS.items(), first, strict=True):
        target = str(tmp_path / "parts" / f"{part_name(number)}.parquet")
        part = collect_part(
            storage,
            index_uri=uri,
            ranges=[span],
            outputs=[output],
            family=FAMILY,
            reply=None,
            name=part_name(number),
            target_uri=target,
        )
        assert part.summary.records == span[1] - span[0]
        uris.append(part.uri)
    target = str(tmp_path / "parts" / "on-demand.parquet")
    part = collect_part(
        storage,
        index_uri=uri,
        ranges=gaps,
        outputs=[on_demand],
        family=FAMILY,
        reply=None,
        name="on-demand",
        target_uri=target,
    )
    uris.append(part.uri)

    overlay = read_overlay(storage, later, FAMILY, None)
    got = pa.concat_tables(iter_final_parts(storage, uris, overlay)).sort_by("ordinal")
    assert got.schema == expected.schema
    assert got.to_pylist() == expected.to_pylist()

    # The first round alone: what collect stages again is what one join calls retryable, in index order.
    single = join_results(table, read_output_batches(storage, [*first, on_demand], FAMILY))
    mask = pc.and_(pc.equal(single["status"], "failed"), pc.fill_null(single["retryable"], False))
    by_ordinal = dict(zip(single["record_id"].to_pylist(), single["ordinal"].to_pylist(), strict=True))
    want = single.filter(mask)["record_id"].to_pylist()
    assert sorted(retryable_ids(storage, uris), key=by_ordinal.__getitem__) == want
    assert len(want) > 0


def test_an_overlay_of_other_parts_changes_nothing(index):
    _, table = index
    part = join_results(table.slice(0, 50), [])
    overlay = read_overlay(Storage(None), [], FAMILY, None)
    assert final_rows(part, overlay) is part
