"""Collect spread over the jobs: the table a DAG publishes from per-job parts is the table one join gives.

The product-review pipeline (retry round, repair round, a reply schema) runs over three jobs with
retryable and permanent record errors and replies that break the schema; the published day is then
compared, row for row and column for column, with the table the single collect joins from the same staged
run: every output of every round joined to the whole record index at once
(:func:`bedrock_batch.results.join_outputs`) and assembled the same way.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pendulum
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bedrock_batch.models import family_for
from bedrock_batch.replies import ReplyFormat
from bedrock_batch.results import assemble_results, join_outputs, load_quarantine
from bedrock_batch.staging import job_results, run_outputs
from bedrock_batch.storage import Storage
from bedrock_batch_dev.sample_data.reviews import generate_reviews
from tests.conftest import DAGS_FOLDER, load_dag_file
from tests.integration.bedrock_shards import xcoms
from tests.published_day import read_day
from tests.stack_state import fresh_stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

BUCKETS = ("pipeline-source", "staging", "results")
DS = "2026-12-23"
NAME = "product_reviews"
PREFIX = "collect-parts"


@pytest.fixture
def stack(local_stack: Any, aws_connection: str, airflow_home: Any) -> Iterator[Any]:
    yield from fresh_stack(local_stack, BUCKETS)


def use_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three jobs of about 113 records (at most 150 a job), polled at the local stack's pace, no retries."""
    path = tmp_path / f"{NAME}.json"
    overrides = {
        "poll_interval_seconds": 0.1,
        "retries": 0,
        "quotas": {"min_records_per_job": 100, "max_records_per_job": 150, "below_minimum": "on_demand"},
    }
    path.write_text(json.dumps(overrides))
    monkeypatch.setenv(f"BEDROCK_BATCH_PIPELINE_{NAME.upper()}_CONFIG", str(path))


def put_reviews(s3: Any, count: int) -> list[dict[str, Any]]:
    """``count`` reviews in one Parquet file, one without text (quarantined)."""
    rows = [review.row() for review in generate_reviews(count, seed=23)]
    rows[17]["review_text"] = None
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    s3.put_object(Bucket="pipeline-source", Key=f"{PREFIX}/{DS}/reviews.parquet", Body=buffer.getvalue())
    return rows


def single_collect(storage: Storage, run: Any, publish: Any) -> pa.Table:
    """The day as one join of every output over the whole record index would publish it."""
    prepared = xcoms(run, "prepare", "run")[-1]
    repair = xcoms(run, "repair")[-1]
    outputs = run_outputs(
        job_results(xcoms(run, "submit").values()),
        xcoms(run, "on_demand").get(-1),
        job_results(xcoms(run, "submit_retry").values()),
        xcoms(run, "on_demand_retry").get(-1),
        repair,
    )
    reply = ReplyFormat.from_run(prepared)
    family = family_for(prepared["model_id"], invocation_type=prepared["invocation_type"])
    joined = join_outputs(storage, prepared["index_uri"], outputs, family, reply)
    return assemble_results(
        joined,
        load_quarantine(storage, prepared["quarantine_uri"]),
        reply=reply,
        key_column="review_id",
        ds=DS,
        model_id=prepared["model_id"],
        dag_run_id=run.run_id,
        processed_at=datetime.fromisoformat("2026-12-24T00:00:00+00:00"),
        passthrough=prepared["passthrough_columns"],
    )


def comparable(table: pa.Table) -> list[dict[str, Any]]:
    """The rows without the assembly time, in record order (quarantined rows by their position)."""
    rows = table.drop_columns(["processed_at"]).to_pylist()
    return sorted(rows, key=lambda row: (row["record_id"] or "", row["source_position"] or ""))


def test_per_job_collect_publishes_the_table_of_a_single_collect(stack, tmp_path, monkeypatch):
    s3 = stack.client("s3")
    reviews = put_reviews(s3, 340)
    stack.admin.set_faults(record_error_rate=0.15, record_error_codes=[429, 400], invalid_reply_rate=0.25)
    use_overrides(tmp_path, monkeypatch)
    dag = load_dag_file(DAGS_FOLDER / f"{NAME}.py", f"pipeline_dag_{NAME}_parts")
    # Prefixes of this test's own: the buckets outlive a test, and other tests count the days of theirs.
    conf = {
        "source_uri": f"s3://pipeline-source/{PREFIX}/{{ds}}/",
        "staging_uri": f"s3://staging/{PREFIX}",
        "results_uri": f"s3://results/{PREFIX}",
    }
    run = dag.test(logical_date=pendulum.parse(DS), run_conf=conf)
    assert run.state == "success"

    # Collected one job per task, the parts written and handed on in shard order.
    parts = xcoms(run, "collect_job")
    assert sorted(parts) == [0, 1, 2]
    assert [parts[i]["part"] for i in range(3)] == ["shard-00001", "shard-00002", "shard-00003"]
    assert sum(part["records"] for part in parts.values()) == len(reviews) - 1
    part_uris = xcoms(run, "collect", "parts")[-1]
    assert part_uris == [parts[i]["uri"] for i in range(3)]
    first_round = xcoms(run, "collect", "round")[-1]
    for count in ("records", "succeeded", "invalid_output", "failed", "retryable", "missing"):
        assert first_round[count] == sum(part[count] for part in parts.values()), count

    # The run went through every round the overlay has to get right.
    publish = xcoms(run, "publish")[-1]
    assert first_round["retried"] > 0
    assert publish["repaired"] > 0
    assert publish["failed"] > 0  # the 400s stay failed
    assert publish["quarantined"] == 1
    assert publish["accounted"] is True

    published = read_day(s3, "results", f"{PREFIX}/{NAME}", DS)
    assert published.num_rows == len(reviews)
    expected = single_collect(Storage(s3), run, publish)
    assert published.schema.remove_metadata() == expected.schema.remove_metadata()
    assert comparable(published) == comparable(expected)
