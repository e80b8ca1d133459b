"""Batch tasks other than call summaries, end to end through dag.test() on moto's S3 and the Bedrock emulator.

The DAGs (tests/test_dags/generic_batch_pipelines.py) wire the stage operators by hand: Parquet reviews with
two prompt columns and a reply schema, through native structured output and through the prompt with a repair
round, and records already in Bedrock's format. Each test checks the published table against the input:
every row exactly once, typed reply columns, and the violation of each reply that did not conform.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pendulum
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bedrock_batch.models import FAMILIES, InferenceParams
from bedrock_batch.replies import ReplyFormat
from bedrock_batch.schemas import ReplySchema, prompt_instructions
from bedrock_batch_dev.sample_data.reviews import ASPECT_SENTIMENTS, ASPECTS, REVIEW_LABELS, generate_reviews
from bedrock_batch_dev.sample_data.writers import REVIEW_SCHEMA
from tests.integration.bedrock_shards import load_test_dags, xcoms
from tests.published_day import read_day
from tests.stack_state import fresh_stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CLAUDE_3 = "anthropic.claude-3-haiku-20240307-v1:0"
CLAUDE_45 = "anthropic.claude-haiku-4-5-20251001-v1:0"
BUCKETS = ("reviews", "staging", "results")
DAGS = "generic_batch_pipelines"
REPLY_COLUMNS = ("label", "confidence", "aspects", "verdict")


@pytest.fixture
def stack(local_stack: Any, aws_connection: str, airflow_home: Any) -> Iterator[Any]:
    yield from fresh_stack(local_stack, BUCKETS)


@pytest.fixture(scope="module")
def dags() -> Any:
    return load_test_dags(DAGS)


@pytest.fixture(scope="module")
def review_schema(dags: Any) -> ReplySchema:
    return ReplySchema.from_file(dags.REVIEW_SCHEMA)


def put_reviews(
    s3: Any, ds: str, count: int, seed: int, *, null_text: int | None = None
) -> list[dict[str, Any]]:
    """``count`` reviews as one Parquet file under ``s3://reviews/<ds>/``; one without text if asked."""
    rows = [review.row() for review in generate_reviews(count, seed=seed)]
    if null_text is not None:
        rows[null_text]["review_text"] = None
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=REVIEW_SCHEMA), buffer)
    s3.put_object(Bucket="reviews", Key=f"{ds}/reviews.parquet", Body=buffer.getvalue())
    return rows


def run_pipeline(dags: Any, dag_id: str, ds: str, **conf: Any) -> Any:
    dag = getattr(dags, dag_id)
    return dag.test(logical_date=pendulum.parse(ds), run_conf={"source_uri": f"s3://reviews/{ds}/", **conf})


def read_table(s3: Any, table: str, ds: str) -> pa.Table:
    return read_day(s3, "results", f"generic/{table}", ds)


def read_report(s3: Any, ds: str) -> dict[str, Any]:
    return orjson.loads(
        s3.get_object(Bucket="results", Key=f"generic/reports/ds={ds}/run_report.json")["Body"].read()
    )


def staged_requests(s3: Any, dag_id: str, ds: str) -> list[dict[str, Any]]:
    listing = s3.list_objects_v2(Bucket="staging", Prefix=f"generic/{dag_id}/{ds}/input/")
    lines: list[dict[str, Any]] = []
    for item in listing.get("Contents", []):
        body = s3.get_object(Bucket="staging", Key=item["Key"])["Body"].read()
        lines += [orjson.loads(line) for line in body.splitlines() if line.strip()]
    return lines


def assert_conforms(row: dict[str, Any]) -> None:
    """A succeeded row's typed reply columns, each within the reply schema."""
    assert row["label"] in REVIEW_LABELS
    assert 0 <= row["confidence"] <= 1
    assert all(a["aspect"] in ASPECTS and a["sentiment"] in ASPECT_SENTIMENTS for a in row["aspects"])
    assert isinstance(row["verdict"]["would_recommend"], bool)
    assert 1 <= row["verdict"]["stars"] <= 10
    assert (row["parse_error"], row["raw_text"], row["error_code"]) == (None, None, None)


class TestNativeStructuredOutput:
    DS = "2026-12-01"

    def test_two_prompt_columns_and_a_reply_schema_become_typed_columns(self, stack, dags, review_schema):
        s3 = stack.client("s3")
        rows = put_reviews(s3, self.DS, 150, seed=31, null_text=7)
        run = run_pipeline(dags, "review_classification", self.DS, model_id=CLAUDE_45, key_column="review_id")
        assert run.state == "success"

        table = read_table(s3, "review_classification", self.DS)
        types = {field.name: field.type for field in table.schema}
        assert table.schema.names[:8] == ["review_id", "record_id", "ds", "model_id", *REPLY_COLUMNS]
        assert table.schema.names[-2:] == ["rating", "product_category"]
        assert types["confidence"] == pa.float64()
        assert types["aspects"] == pa.list_(pa.struct([("aspect", pa.string()), ("sentiment", pa.string())]))
        assert types["verdict"] == pa.struct([("would_recommend", pa.bool_()), ("stars", pa.int64())])
        assert types["rating"] == pa.int64()

        published = {row["review_id"]: row for row in table.to_pylist()}
        assert len(published) == table.num_rows == len(rows)  # every review exactly once
        quarantined = published.pop(rows[7]["review_id"])
        assert (quarantined["status"], quarantined["error_code"]) == ("quarantined", "missing_text")
        assert "'review_text'" in quarantined["error_message"]
        assert {row["status"] for row in published.values()} == {"succeeded"}
        for source in rows[:7] + rows[8:]:
            row = published[source["review_id"]]
            assert_conforms(row)
            assert (row["rating"], row["product_category"]) == (source["rating"], source["product_category"])

        # Native mode: the schema as the service takes it rides in every request, no prefill, no schema text.
        requests = staged_requests(s3, "review_classification", self.DS)
        assert len(requests) == 149
        body = requests[0]["modelInput"]
        assert body["output_config"]["format"]["schema"] == review_schema.service_schema()
        assert "minimum" not in orjson.dumps(body["output_config"]).decode()
        assert body["messages"][-1]["role"] == "user"
        assert "JSON Schema" not in body["system"]
        prompt = body["messages"][0]["content"][0]["text"]
        assert "<title>" in prompt
        assert "<review>" in prompt

        report = read_report(s3, self.DS)
        assert (report["succeeded"], report["invalid_output"], report["failed"], report["quarantined"]) == (
            149,
            0,
            0,
            1,
        )
        assert report["accounted"] is True
        assert report["manifest_mismatches"] == []
        assert report["manifests_missing"] == []
        run_xcom = xcoms(run, "prepare", "run")[-1]
        assert run_xcom["prompt_columns"] == {"title": "title", "review": "review_text"}
        assert run_xcom["output_format"]["mode"] == "native"
        assert run_xcom["reply_schema"]["schema"] == review_schema.schema


class TestPromptModeWithInvalidReplies:
    DS = "2026-12-02"
    VIOLATION = re.compile(r"^\$[^:]*: .+")

    def test_invalid_replies_are_invalid_output_then_repaired(self, stack, dags, review_schema):
        s3 = stack.client("s3")
        rows = put_reviews(s3, self.DS, 150, seed=32)
        stack.admin.set_faults(invalid_reply_rate=0.3)
        conf = {"model_id": CLAUDE_3, "key_column": "review_id"}

        run = run_pipeline(dags, "review_classification", self.DS, **conf)
        assert run.state == "success"
        table = read_table(s3, "review_classification", self.DS).to_pylist()
        assert sorted(row["review_id"] for row in table) == sorted(row["review_id"] for row in rows)
        invalid = [row for row in table if row["status"] == "invalid_output"]
        assert 10 < len(invalid) < 80
        for row in invalid:
            assert self.VIOLATION.match(row["parse_error"]), row["parse_error"]
            assert row["raw_text"]
            assert (row["error_code"], row["retryable"]) == ("invalid_output", False)
            assert all(row[column] is None for column in REPLY_COLUMNS)
            assert row["input_tokens"] > 0
        for row in table:
            if row["status"] == "succeeded":
                assert_conforms(row)
        report = read_report(s3, self.DS)
        assert (report["invalid_output"], report["succeeded"]) == (len(invalid), len(table) - len(invalid))
        assert (report["repaired"], report["accounted"]) == (0, True)

        # Prompt mode: the whole schema is appended to the system prompt and the reply is prefilled.
        body = staged_requests(s3, "review_classification", self.DS)[0]["modelInput"]
        assert body["system"].endswith(prompt_instructions(review_schema))
        assert body["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "{"}]}
        assert "output_config" not in body

        repaired_run = run_pipeline(dags, "review_classification_repaired", self.DS, **conf)
        assert repaired_run.state == "success"
        repair = xcoms(repaired_run, "repair")[-1]
        repaired_table = read_table(s3, "review_classification_repaired", self.DS).to_pylist()
        assert len({row["record_id"] for row in repaired_table}) == len(repaired_table) == len(rows)
        still_invalid = [row for row in repaired_table if row["status"] == "invalid_output"]
        by_repair = [row for row in repaired_table if row["job_arn"] == "on-demand-repair"]
        assert repair["records"] == repair["repaired"] + repair["still_invalid"] > 0
        assert repair["repaired"] > 0
        assert len(still_invalid) == repair["still_invalid"]
        assert sum(row["status"] == "succeeded" for row in by_repair) == repair["repaired"]
        for row in by_repair:
            if row["status"] == "succeeded":
                assert_conforms(row)
        report = read_report(s3, self.DS)
        assert (report["repaired"], report["invalid_output"]) == (repair["repaired"], repair["still_invalid"])
        assert report["accounted"] is True
        assert len(stack.admin.requests("InvokeModel")) == repair["records"]


class TestRecordsInBedrocksFormat:
    DS = "2026-12-03"

    def test_records_are_split_submitted_and_their_replies_validated(self, stack, dags, review_schema):
        s3 = stack.client("s3")
        anthropic = FAMILIES["anthropic"]
        # Built elsewhere: the reply schema in the prompt, prefilled, as the library itself would build them.
        reply = ReplyFormat.declare(dags.REVIEW_SCHEMA, model_id=CLAUDE_3, family=anthropic)
        lines = []
        for n, review in enumerate(generate_reviews(120, seed=33)):
            body = anthropic.build_request(
                reply.instructions,
                f"<review>\n{review.review_text}\n</review>",
                InferenceParams(512),
                reply.output,
            )
            lines.append(orjson.dumps({"recordId": f"REV{n:08d}", "modelInput": body}))
        lines += [b'{"recordId": "not-an-id", "modelInput": {}}', lines[5]]
        s3.put_object(Bucket="reviews", Key=f"{self.DS}/records.jsonl", Body=b"\n".join(lines) + b"\n")

        run = run_pipeline(dags, "bedrock_records", self.DS, model_id=CLAUDE_3)
        assert run.state == "success"
        table = read_table(s3, "bedrock_records", self.DS).to_pylist()
        assert len(table) == 122
        succeeded = [row for row in table if row["status"] == "succeeded"]
        assert sorted(row["source_key"] for row in succeeded) == [f"REV{n:08d}" for n in range(120)]
        assert all(row["source_key"] == row["record_id"] for row in succeeded)
        for row in succeeded:
            assert_conforms(row)
        quarantined = sorted(
            (row["error_code"], row["source_position"]) for row in table if row["status"] == "quarantined"
        )
        assert quarantined == [
            ("duplicate_id", "records.jsonl:122"),
            ("invalid_record_id", "records.jsonl:121"),
        ]
        staged = staged_requests(s3, "bedrock_records", self.DS)
        assert {r["recordId"]: r["modelInput"] for r in staged} == {
            orjson.loads(line)["recordId"]: orjson.loads(line)["modelInput"] for line in lines[:120]
        }
        run_xcom = xcoms(run, "prepare", "run")[-1]
        assert (run_xcom["output_format"], run_xcom["reply_schema"]["name"]) == (
            None,
            "review_classification",
        )
