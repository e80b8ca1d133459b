"""The prepare operator with two processes stages exactly what it stages with one, on the local stack.

The source is read from moto's S3 by the workers (ranged reads of JSONL byte ranges, with the task's
connection rebuilt in each worker); it holds duplicate keys across parts, a line that is not JSON and an
empty text, so the merge has to correct ids and move rows to the quarantine.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from typing import Any

import orjson
import pendulum
import pyarrow.parquet as pq
import pytest

from bedrock_batch import prepare_parallel
from tests.integration.bedrock_shards import load_test_dags, xcoms
from tests.stack_state import fresh_stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DS = "2026-12-05"
BUCKETS = ("reviews", "staging")


@pytest.fixture
def stack(local_stack: Any, aws_connection: str, airflow_home: Any) -> Iterator[Any]:
    yield from fresh_stack(local_stack, BUCKETS)


def put_jsonl_reviews(s3: Any, count: int) -> None:
    rng = random.Random(5)
    lines = []
    for i in range(count):
        review = {
            "review_id": f"r{rng.randrange(count - 40)}",  # some keys repeat, across parts too
            "title": f"Review {i}",
            "review_text": " ".join(rng.choice(("good", "bad", "fine", "é", "😀")) for _ in range(30)),
            "rating": rng.randint(1, 5),
        }
        if i == 17:
            review["title"], review["review_text"] = "", "  "
        lines.append(orjson.dumps(review, option=orjson.OPT_APPEND_NEWLINE))
    lines.insert(250, b"{not json\n")
    s3.put_object(Bucket="reviews", Key=f"{DS}/reviews.jsonl", Body=b"".join(lines))


def staged(s3: Any, dag_id: str) -> dict[str, bytes]:
    prefix = f"parallel/{dag_id}/{DS}/"
    listing = s3.list_objects_v2(Bucket="staging", Prefix=prefix)
    return {
        item["Key"][len(prefix) :]: s3.get_object(Bucket="staging", Key=item["Key"])["Body"].read()
        for item in listing.get("Contents", [])
    }


def test_two_processes_stage_the_same_shards_as_one(stack, monkeypatch):
    # Parts of a few KB, so that a source of a few hundred lines is cut into many byte ranges.
    monkeypatch.setattr(prepare_parallel, "MIN_PART_BYTES", 4096)
    parts: list[int] = []
    prepare = prepare_parallel.prepare_source_parallel

    def counting_parts(*args: Any, **kwargs: Any) -> Any:
        prepared, spool = prepare(*args, **kwargs)
        parts.append(len({segment.path for segment in spool.segments}) if spool else 1)
        return prepared, spool

    monkeypatch.setattr(prepare_parallel, "prepare_source_parallel", counting_parts)
    s3 = stack.client("s3")
    put_jsonl_reviews(s3, 600)
    dags = load_test_dags("parallel_prepare")
    conf = {"source_uri": f"s3://reviews/{DS}/"}
    runs = {
        name: getattr(dags, name).test(logical_date=pendulum.parse(DS), run_conf=conf)
        for name in ("prepare_one_process", "prepare_two_processes")
    }
    assert {run.state for run in runs.values()} == {"success"}
    assert len(parts) == 1, "the one-process DAG used workers"
    assert parts[0] > 4, "the two-process DAG did not cut the source into parts"

    one, two = staged(s3, "prepare_one_process"), staged(s3, "prepare_two_processes")
    assert sorted(one) == sorted(two)
    assert sum(name.startswith("input/shard-") for name in one) > 3
    index = {
        name: pq.read_table(io.BytesIO(files["record_index.parquet"]))
        for name, files in (("1", one), ("2", two))
    }
    assert index["2"].equals(index["1"])
    for name in one:
        if name != "record_index.parquet":  # Parquet metadata may differ; its rows are compared above
            assert two[name] == one[name], name

    shards = {name: xcoms(run, "prepare")[-1] for name, run in runs.items()}
    fingerprints = {name: [shard["fingerprint"] for shard in value] for name, value in shards.items()}
    assert fingerprints["prepare_two_processes"] == fingerprints["prepare_one_process"]
    prepared = {name: xcoms(run, "prepare", "run")[-1] for name, run in runs.items()}
    counts = prepared["prepare_two_processes"]["quarantine_counts"]
    assert counts == prepared["prepare_one_process"]["quarantine_counts"]
    assert counts["duplicate_id"] > 10
    assert (counts["invalid_json"], counts["empty_text"]) == (1, 1)
