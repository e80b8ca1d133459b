"""The call-center DAG end to end through dag.test(), against moto's S3 server and the Bedrock emulator.

Each test checks the published table row by row against the input: every call exactly once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from collections.abc import Iterator
from typing import Any

import orjson
import pendulum
import pyarrow.parquet as pq
import pytest

from bedrock_batch_dev.sample_data.calls import generate_calls
from bedrock_batch_dev.sample_data.writers import write_calls
from tests.conftest import DAGS_FOLDER, REPO
from tests.published_day import day_uri, read_day
from tests.stack_state import fresh_stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
BUCKETS = ("calls", "staging", "results")


def load_dag(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"dag_{name}", DAGS_FOLDER / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


@pytest.fixture
def stack(local_stack: Any, aws_connection: str, airflow_home: Any) -> Iterator[Any]:
    yield from fresh_stack(local_stack, BUCKETS)


def run_dag(ds: str, source_format: str, **conf: Any) -> Any:
    dag = load_dag("call_center_summarization")
    run_conf = {
        "source_uri": "s3://calls/{ds}/" + source_format + "/",
        "source_format": source_format,
        "staging_uri": "s3://staging/batch",
        "results_uri": "s3://results/analytics",
        "model_id": MODEL_ID,
        **conf,
    }
    return dag.test(logical_date=pendulum.parse(ds), run_conf=run_conf)


def read_partition(s3: Any, ds: str) -> list[dict[str, Any]]:
    return read_day(s3, "results", "analytics/call_summaries", ds).to_pylist()


def read_report(s3: Any, ds: str) -> dict[str, Any]:
    body = s3.get_object(Bucket="results", Key=f"analytics/reports/ds={ds}/run_report.json")["Body"].read()
    return orjson.loads(body)


def use_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> None:
    """Run the DAG with the shipped configuration plus ``overrides`` (through CALL_CENTER_CONFIG)."""
    config = orjson.loads((REPO / "include" / "config" / "call_center_summarization.json").read_bytes())
    path = tmp_path / "call_center_summarization.json"
    path.write_bytes(orjson.dumps({**config, **overrides}))
    monkeypatch.setenv("CALL_CENTER_CONFIG", str(path))


def put(s3: Any, key: str, data: bytes) -> None:
    s3.put_object(Bucket="calls", Key=key, Body=data)


class TestTextSourceWithBadRows:
    DS = "2026-11-18"

    def test_every_call_once_and_rerun_creates_no_jobs(self, stack):
        s3 = stack.client("s3")
        prefix = f"{self.DS}/text/"
        calls = list(generate_calls(230, seed=7))
        write_calls(calls, "text", f"s3://calls/{prefix}", s3_client=s3)
        put(s3, prefix + "empty-call.txt", b"  \n")
        put(s3, prefix + "binary-call.txt", b"\xff\xfe\x00garbage\x81")
        put(s3, prefix + "dup/" + calls[0].call_id + ".txt", b"Agent: hello again\nCustomer: hi\n")

        first = run_dag(self.DS, "text")
        assert first.state == "success"
        rows = read_partition(s3, self.DS)

        by_call: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_call.setdefault(row["call_id"], []).append(row)
        expected_ids = {c.call_id for c in calls} | {"empty-call", "binary-call"}
        assert set(by_call) == expected_ids
        # The duplicate file is quarantined; its key's first occurrence succeeded.
        assert len(rows) == len(calls) + 3
        duplicate = [r for r in by_call[calls[0].call_id] if r["status"] == "quarantined"]
        assert [r["error_code"] for r in duplicate] == ["duplicate_id"]
        assert by_call["empty-call"][0]["status"] == "quarantined"
        assert by_call["empty-call"][0]["error_code"] == "empty_text"
        assert by_call["binary-call"][0]["status"] == "quarantined"
        assert by_call["binary-call"][0]["error_code"] == "bad_utf8"

        succeeded = [r for r in rows if r["status"] == "succeeded"]
        assert len(succeeded) == len(calls)
        for row in succeeded:
            assert len(row["record_id"]) == 11
            assert row["ds"] == self.DS
            assert row["model_id"] == MODEL_ID
            assert row["parse_error"] is None, row["parse_error"]
            assert row["sentiment"] in ("positive", "neutral", "negative")
            assert row["resolution"] in ("resolved", "unresolved", "escalated")
            assert row["summary"]
            assert row["input_tokens"] > 0
            assert row["job_arn"].startswith("arn:aws:bedrock:")

        report = read_report(s3, self.DS)
        assert report["input_records"] == len(calls) + 3
        assert (report["succeeded"], report["failed"], report["quarantined"]) == (len(calls), 0, 3)
        assert report["accounted"] is True
        assert report["estimated_cost_usd"] is not None
        assert stack.admin.created_job_count() == len(report["jobs"]) == 1

        # A second run of the same date over the same data reattaches: no new job, one copy of each row.
        second = run_dag(self.DS, "text")
        assert second.state == "success"
        assert stack.admin.created_job_count() == 1
        rerun_rows = read_partition(s3, self.DS)
        assert len(rerun_rows) == len(rows)
        assert {r["record_id"] for r in rerun_rows} == {r["record_id"] for r in rows}
        assert {r["dag_run_id"] for r in rerun_rows} == {second.run_id}


class TestJsonlSourceAcrossShardsWithErrors:
    DS = "2026-11-19"

    def test_partial_failures_are_retried_and_every_row_is_accounted(self, stack, tmp_path, monkeypatch):
        s3 = stack.client("s3")
        calls = list(generate_calls(260, seed=11))
        lines = [orjson.dumps(c.row()) for c in calls]
        lines.insert(5, b'{"call_id": "broken", "transcript": ')
        lines.insert(9, orjson.dumps({"call_id": "no-text"}))
        put(s3, f"{self.DS}/jsonl/calls.jsonl", b"\n".join(lines) + b"\n")
        # 2 shards (max 150 per job) and per-record 500s and 400s in the job outputs.
        stack.admin.set_faults(record_error_rate=0.1, record_error_codes=[500, 400])

        use_config(tmp_path, monkeypatch, quotas={"max_records_per_job": 150, "below_minimum": "on_demand"})
        run = run_dag(self.DS, "jsonl")
        assert run.state == "success"
        rows = read_partition(s3, self.DS)
        assert len(rows) == len(calls) + 2
        assert len({(r["call_id"], r["status"]) for r in rows}) == len(rows)
        quarantined = {
            r["source_position"].rsplit(":", 1)[-1]: r["error_code"]
            for r in rows
            if r["status"] == "quarantined"
        }
        assert sorted(quarantined.values()) == ["invalid_json", "missing_text"]
        failed = [r for r in rows if r["status"] == "failed"]
        # 500s were retried (the retry round has no faults left to hit only if the rate allows; every
        # remaining failure must carry its code), 400s are reported as they are.
        assert all(r["error_code"] for r in failed)
        assert all(r["error_code"] == "400" or r["retryable"] for r in failed)
        report = read_report(s3, self.DS)
        assert report["accounted"] is True
        assert report["retried"] > 0
        assert report["succeeded"] + report["failed"] + report["quarantined"] == len(calls) + 2


class TestSmallAndEmptyDays:
    def test_day_below_the_service_minimum_goes_on_demand(self, stack):
        ds = "2026-11-16"
        s3 = stack.client("s3")
        calls = list(generate_calls(40, seed=3))
        write_calls(calls, "text", f"s3://calls/{ds}/text/", s3_client=s3)
        assert run_dag(ds, "text").state == "success"
        assert stack.admin.created_job_count() == 0
        runtime_calls = stack.admin.requests("InvokeModel")
        assert len(runtime_calls) == len(calls)
        rows = read_partition(s3, ds)
        assert sorted(r["call_id"] for r in rows) == sorted(c.call_id for c in calls)
        assert {r["status"] for r in rows} == {"succeeded"}
        assert {r["job_arn"] for r in rows} == {"on-demand"}
        assert read_report(s3, ds)["jobs"] == []

    def test_empty_day_ends_cleanly_with_a_zero_report(self, stack):
        ds = "2026-11-15"
        s3 = stack.client("s3")
        put(s3, f"{ds}/text/_SUCCESS", b"")
        assert run_dag(ds, "text").state == "success"
        assert read_partition(s3, ds) == []
        report = read_report(s3, ds)
        assert (report["input_records"], report["succeeded"], report["failed"]) == (0, 0, 0)
        assert report["accounted"] is True
        assert stack.admin.created_job_count() == 0

    def test_wrong_format_is_an_error_not_an_empty_day(self, stack, tmp_path, monkeypatch):
        use_config(tmp_path, monkeypatch, retries=0)
        ds = "2026-11-14"
        s3 = stack.client("s3")
        write_calls(generate_calls(3, seed=5), "text", f"s3://calls/{ds}/jsonl/", s3_client=s3)
        assert run_dag(ds, "jsonl").state == "failed"


class TestKpisOnTheAsset:
    def test_publish_emits_the_asset_and_kpis_follow(self, stack):
        from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
        from airflow.utils.session import create_session

        ds = "2026-11-13"
        s3 = stack.client("s3")
        write_calls(generate_calls(120, seed=9), "text", f"s3://calls/{ds}/text/", s3_client=s3)
        assert run_dag(ds, "text").state == "success"

        with create_session() as session:
            asset = session.query(AssetModel).filter(AssetModel.name == "call_summaries").one()
            events = list(session.query(AssetEvent).filter(AssetEvent.asset_id == asset.id))
            extras = [e.extra for e in events if e.extra.get("ds") == ds]
            queued = session.query(AssetDagRunQueue).filter(
                AssetDagRunQueue.target_dag_id == "call_summary_kpis"
            )
            assert queued.count() >= 1, "the scheduler would now run call_summary_kpis"
        assert extras == [
            {
                "ds": ds,
                "partition_uri": day_uri(s3, "results", "analytics/call_summaries", ds),
                "results_uri": "s3://results/analytics",
                "rows": 120,
            }
        ]

        kpis = load_dag("call_summary_kpis")
        run = kpis.test(run_conf={"ds": ds, "results_uri": "s3://results/analytics"})
        assert run.state == "success"
        body = s3.get_object(Bucket="results", Key=f"analytics/call_summary_kpis/ds={ds}/part-00000.parquet")
        row = pq.read_table(io.BytesIO(body["Body"].read())).to_pylist()[0]
        rows = read_partition(s3, ds)
        assert row["calls"] == len(rows) == 120
        assert row["succeeded"] == sum(r["status"] == "succeeded" for r in rows)
        shares = [row["sentiment_positive"], row["sentiment_neutral"], row["sentiment_negative"]]
        assert sum(shares) == pytest.approx(1.0)
        assert row["top_topics"]
        assert row["avg_cost_usd"] > 0

    def test_a_manual_run_without_a_day_fails_saying_which_param(self, stack, caplog, capsys):
        # Airflow 3 lets a manual run have no logical date: then nothing but the "ds" param names the day.
        kpis = load_dag("call_summary_kpis")
        run = kpis.test(logical_date=None, run_conf={"results_uri": "s3://results/analytics"})
        assert run.state == "failed"
        assert run.logical_date is None
        captured = capsys.readouterr()
        said = caplog.text + captured.out + captured.err
        assert "no day to compute: this run has no call_summaries event and no logical date" in said
        assert "KeyError" not in said


class TestGlueCatalogRegistration:
    def test_publish_registers_the_partition_for_athena(self, stack, tmp_path, monkeypatch):
        import boto3

        from tests.integration.bedrock_shards import xcoms

        ds = "2026-11-11"
        # moto serves Glue on the S3 endpoint; it keeps one catalog per process, so a database of our own.
        database = f"analytics_{ds.replace('-', '')}"
        glue = boto3.client("glue", endpoint_url=stack.s3_endpoint_url, region_name="us-east-1")
        with contextlib.suppress(glue.exceptions.AlreadyExistsException):
            glue.create_database(DatabaseInput={"Name": database})
        use_config(tmp_path, monkeypatch, glue_database=database, passthrough_columns=["agent_id", "queue"])
        s3 = stack.client("s3")
        calls = list(generate_calls(40, seed=13))
        write_calls(calls, "jsonl", f"s3://calls/{ds}/jsonl/", s3_client=s3)

        run = run_dag(ds, "jsonl")
        assert run.state == "success"
        rows = read_partition(s3, ds)
        assert sorted(r["agent_id"] for r in rows) == sorted(c.agent_id for c in calls)

        table = glue.get_table(DatabaseName=database, Name="call_summaries")["Table"]
        assert table["StorageDescriptor"]["Location"] == "s3://results/analytics/call_summaries/"
        assert table["PartitionKeys"] == [{"Name": "ds", "Type": "string"}]
        columns = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
        assert set(columns) == set(rows[0]) - {"ds"}
        assert (columns["agent_id"], columns["queue"], columns["action_items"]) == (
            "string",
            "string",
            "array<string>",
        )
        partitions = glue.get_partitions(DatabaseName=database, TableName="call_summaries")["Partitions"]
        assert [(p["Values"], p["StorageDescriptor"]["Location"]) for p in partitions] == [
            ([ds], day_uri(s3, "results", "analytics/call_summaries", ds))
        ]
        assert xcoms(run, "publish")[-1]["catalog"] == {
            "database": database,
            "table": "call_summaries",
            "partition": f"ds={ds}",
            "location": day_uri(s3, "results", "analytics/call_summaries", ds),
            "table_created": True,
            "columns_added": [],
            "partition_created": True,
        }


class TestRerunOverChangedData:
    def test_new_data_for_a_date_replaces_the_old_plan_and_its_rows(self, stack, tmp_path, monkeypatch):
        use_config(tmp_path, monkeypatch, quotas={"max_records_per_job": 150, "below_minimum": "on_demand"})
        ds = "2026-11-12"
        s3 = stack.client("s3")
        first_calls = list(generate_calls(260, seed=21))
        write_calls(first_calls, "jsonl", f"s3://calls/{ds}/jsonl/", s3_client=s3)
        assert run_dag(ds, "jsonl").state == "success"
        assert stack.admin.created_job_count() == 2

        # Late corrections: the day's file is replaced by fewer calls, which plan as one shard.
        second_calls = list(generate_calls(120, seed=22))
        write_calls(second_calls, "jsonl", f"s3://calls/{ds}/jsonl/", s3_client=s3)
        assert run_dag(ds, "jsonl").state == "success"
        assert stack.admin.created_job_count() == 3

        rows = read_partition(s3, ds)
        assert sorted(r["call_id"] for r in rows) == sorted(c.call_id for c in second_calls)
        staged = s3.list_objects_v2(Bucket="staging", Prefix=f"batch/call_center_summarization/{ds}/input/")
        assert [o["Key"].split("/input/")[1] for o in staged["Contents"]] == ["shard-0001/part-0001.jsonl"]


class TestRunWithoutLogicalDate:
    def test_an_api_triggered_run_with_a_null_logical_date_processes_the_previous_day(
        self, stack, tmp_path, monkeypatch
    ):
        # Triggered with logical_date: null (as the API, an asset or the UI may): no ds in the context. The
        # source sensor, prepare and publish all take the day before the run's run_after.
        use_config(tmp_path, monkeypatch, retries=0)
        s3 = stack.client("s3")
        calls = list(generate_calls(120, seed=12))
        write_calls(calls, "jsonl", "s3://calls/2026-11-24/jsonl/", s3_client=s3)
        dag = load_dag("call_center_summarization")
        run_conf = {
            "source_uri": "s3://calls/{ds}/jsonl/",
            "source_format": "jsonl",
            "staging_uri": "s3://staging/batch",
            "results_uri": "s3://results/analytics",
            "model_id": MODEL_ID,
        }
        run = dag.test(
            logical_date=None, run_after=pendulum.parse("2026-11-25T06:00:00+00:00"), run_conf=run_conf
        )
        assert run.logical_date is None
        assert run.state == "success"
        rows = read_partition(s3, "2026-11-24")
        assert sorted(row["call_id"] for row in rows) == sorted(call.call_id for call in calls)
        assert {row["status"] for row in rows} == {"succeeded"}
        assert read_report(s3, "2026-11-24")["accounted"] is True
