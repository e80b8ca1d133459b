"""Glue Data Catalog registration against moto's server, through a real boto3 Glue client over HTTP.

moto keeps one catalog per process, so every test works in a database of its own.
"""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow as pa
import pytest
from botocore.exceptions import ClientError

from bedrock_batch.catalog import (
    PARQUET_INPUT_FORMAT,
    PARQUET_OUTPUT_FORMAT,
    PARQUET_SERDE,
    CatalogError,
    register_partition,
)
from bedrock_batch.hooks import BedrockBatchHook
from tests.call_center_table import CALL_SUMMARIES_SCHEMA

pytestmark = pytest.mark.integration

ROOT = "s3://results/analytics/call_summaries"
SCHEMA = pa.schema(
    [*CALL_SUMMARIES_SCHEMA, pa.field("agent_id", pa.string()), pa.field("duration_seconds", pa.int32())]
)


def register(glue: Any, database: str, ds: str, schema: pa.Schema = SCHEMA, **options: Any) -> Any:
    return register_partition(
        glue,
        database=database,
        table=options.pop("table", "call_summaries"),
        location=options.pop("location", ROOT),
        schema=schema,
        partition_value=ds,
    )


def partitions(glue: Any, database: str, table: str = "call_summaries") -> dict[str, dict[str, Any]]:
    listed = glue.get_partitions(DatabaseName=database, TableName=table)["Partitions"]
    assert len(listed) == len({tuple(p["Values"]) for p in listed}), "no duplicate partitions"
    return {p["Values"][0]: p for p in listed}


class TestFirstRegistration:
    def test_creates_a_parquet_table_partitioned_by_ds(self, glue, database):
        registration = register(glue, database, "2026-11-18")

        table = glue.get_table(DatabaseName=database, Name="call_summaries")["Table"]
        assert table["TableType"] == "EXTERNAL_TABLE"
        assert table["Parameters"]["classification"] == "parquet"
        assert table["PartitionKeys"] == [{"Name": "ds", "Type": "string"}]
        descriptor = table["StorageDescriptor"]
        assert descriptor["Location"] == ROOT + "/"
        assert descriptor["SerdeInfo"]["SerializationLibrary"] == PARQUET_SERDE
        assert descriptor["InputFormat"] == PARQUET_INPUT_FORMAT
        assert descriptor["OutputFormat"] == PARQUET_OUTPUT_FORMAT
        columns = [(c["Name"], c["Type"]) for c in descriptor["Columns"]]
        # ds is the partition key, not a column; the passthrough columns follow the result columns.
        assert [name for name, _ in columns] == [n for n in SCHEMA.names if n != "ds"]
        types = dict(columns)
        assert types["call_id"] == "string"
        assert types["action_items"] == "array<string>"
        assert types["input_tokens"] == "bigint"
        assert types["retryable"] == "boolean"
        assert types["processed_at"] == "timestamp"
        assert (types["agent_id"], types["duration_seconds"]) == ("string", "int")

        (partition,) = partitions(glue, database).values()
        assert partition["Values"] == ["2026-11-18"]
        assert partition["StorageDescriptor"]["Location"] == f"{ROOT}/ds=2026-11-18/"
        assert partition["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == PARQUET_SERDE
        assert partition["StorageDescriptor"]["Columns"] == descriptor["Columns"]

        assert registration.to_dict() == {
            "database": database,
            "table": "call_summaries",
            "partition": "ds=2026-11-18",
            "location": f"{ROOT}/ds=2026-11-18/",
            "table_created": True,
            "columns_added": [],
            "partition_created": True,
        }

    def test_a_trailing_slash_on_the_location_changes_nothing(self, glue, database):
        register(glue, database, "2026-11-18", location=ROOT + "/")
        assert partitions(glue, database)["2026-11-18"]["StorageDescriptor"]["Location"] == (
            f"{ROOT}/ds=2026-11-18/"
        )
        assert register(glue, database, "2026-11-19").table_created is False


class TestReruns:
    def test_a_rerun_of_a_date_updates_its_partition_and_never_duplicates_it(self, glue, database):
        register(glue, database, "2026-11-18")
        # Someone pointed the partition elsewhere: the rerun puts it back (an update, not an error).
        moved = partitions(glue, database)["2026-11-18"]
        glue.update_partition(
            DatabaseName=database,
            TableName="call_summaries",
            PartitionValueList=["2026-11-18"],
            PartitionInput={
                "Values": ["2026-11-18"],
                "StorageDescriptor": {**moved["StorageDescriptor"], "Location": "s3://elsewhere/x/"},
            },
        )

        rerun = register(glue, database, "2026-11-18")
        assert (rerun.table_created, rerun.partition_created, rerun.columns_added) == (False, False, ())
        listed = partitions(glue, database)
        assert list(listed) == ["2026-11-18"]
        assert listed["2026-11-18"]["StorageDescriptor"]["Location"] == f"{ROOT}/ds=2026-11-18/"

        assert register(glue, database, "2026-11-19").partition_created is True
        assert sorted(partitions(glue, database)) == ["2026-11-18", "2026-11-19"]

    def test_a_schema_that_gained_columns_extends_the_table(self, glue, database):
        register(glue, database, "2026-11-18")
        wider = SCHEMA.append(pa.field("queue", pa.string())).append(pa.field("tags", pa.list_(pa.string())))
        registration = register(glue, database, "2026-11-19", schema=wider)
        assert registration.columns_added == ("queue", "tags")

        table = glue.get_table(DatabaseName=database, Name="call_summaries")["Table"]
        columns = table["StorageDescriptor"]["Columns"]
        assert [c["Name"] for c in columns] == [n for n in wider.names if n != "ds"]
        assert columns[-2:] == [
            {"Name": "queue", "Type": "string"},
            {"Name": "tags", "Type": "array<string>"},
        ]
        # Everything else of the table is kept.
        assert table["TableType"] == "EXTERNAL_TABLE"
        assert table["PartitionKeys"] == [{"Name": "ds", "Type": "string"}]
        assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == PARQUET_SERDE
        assert table["StorageDescriptor"]["Location"] == ROOT + "/"

        listed = partitions(glue, database)
        assert len(listed["2026-11-18"]["StorageDescriptor"]["Columns"]) == len(columns) - 2
        assert listed["2026-11-19"]["StorageDescriptor"]["Columns"] == columns

        # A later, narrower schema (a passthrough column dropped) removes nothing.
        narrower = register(glue, database, "2026-11-20")
        assert narrower.columns_added == ()
        after = glue.get_table(DatabaseName=database, Name="call_summaries")["Table"]
        assert after["StorageDescriptor"]["Columns"] == columns

    def test_a_table_created_by_a_concurrent_publisher_is_reconciled(self, glue, database):
        class RacingGlue:
            """Another publisher creates the table right after our GetTable found none."""

            def __init__(self, real: Any) -> None:
                self.real = real
                self.raced = False

            def __getattr__(self, name: str) -> Any:
                return getattr(self.real, name)

            def get_table(self, **kwargs: Any) -> Any:
                try:
                    return self.real.get_table(**kwargs)
                except ClientError:
                    if not self.raced:
                        self.raced = True
                        register(self.real, database, "2026-11-17")
                    raise

        racing = RacingGlue(glue)
        registration = register(racing, database, "2026-11-18")
        assert racing.raced
        assert (registration.table_created, registration.partition_created) == (False, True)
        assert sorted(partitions(glue, database)) == ["2026-11-17", "2026-11-18"]


class TestRefusals:
    def test_a_missing_database_is_named_and_never_created(self, glue):
        missing = f"missing_{uuid.uuid4().hex[:12]}"
        with pytest.raises(CatalogError, match=f"Glue database '{missing}' does not exist"):
            register(glue, missing, "2026-11-18")
        with pytest.raises(ClientError) as error:
            glue.get_database(Name=missing)
        assert error.value.response["Error"]["Code"] == "EntityNotFoundException"

    def test_a_changed_column_type_is_refused(self, glue, database):
        register(glue, database, "2026-11-18")
        changed = SCHEMA.set(
            SCHEMA.get_field_index("duration_seconds"), pa.field("duration_seconds", pa.string())
        )
        with pytest.raises(CatalogError, match=r"'duration_seconds'.* is int, the new partition has string"):
            register(glue, database, "2026-11-19", schema=changed)
        assert list(partitions(glue, database)) == ["2026-11-18"]

    def test_a_table_of_another_dataset_is_left_alone(self, glue, database):
        register(glue, database, "2026-11-18", location="s3://other-team/events")
        with pytest.raises(CatalogError, match="exists with location s3://other-team/events/"):
            register(glue, database, "2026-11-18")
        table = glue.get_table(DatabaseName=database, Name="call_summaries")["Table"]
        assert table["StorageDescriptor"]["Location"] == "s3://other-team/events/"

    def test_a_table_partitioned_otherwise_is_refused(self, glue, database):
        glue.create_table(
            DatabaseName=database,
            TableInput={
                "Name": "call_summaries",
                "PartitionKeys": [{"Name": "dt", "Type": "date"}],
                "StorageDescriptor": {"Columns": [], "Location": ROOT + "/"},
            },
        )
        with pytest.raises(CatalogError, match="not partitioned by ds"):
            register(glue, database, "2026-11-18")

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"location": "s3a://results/analytics/call_summaries"}, "must be an s3:// URI"),
            ({"location": "/tmp/results/call_summaries"}, "must be an s3:// URI"),
            ({"table": "Call-Summaries"}, "glue_table 'Call-Summaries'"),
        ],
    )
    def test_bad_arguments_are_refused_before_any_call(self, glue, database, options, message):
        with pytest.raises(CatalogError, match=message):
            register(glue, database, "2026-11-18", **options)
        with pytest.raises(CatalogError, match="not a YYYY-MM-DD date"):
            register(glue, database, "2026/11/18")
        assert glue.get_tables(DatabaseName=database)["TableList"] == []


def test_the_hook_builds_the_glue_client_from_the_connection(aws_connection, local_stack):
    glue = BedrockBatchHook(aws_conn_id=aws_connection).glue_client
    assert glue.meta.service_model.service_name == "glue"
    assert glue.meta.endpoint_url == local_stack.s3_endpoint_url
    database = f"analytics_{uuid.uuid4().hex[:12]}"
    glue.create_database(DatabaseInput={"Name": database})
    assert register(glue, database, "2026-11-18").partition_created is True
