"""Arrow → Hive type mapping of the Glue catalog registration, and validation of its configuration."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pytest

from bedrock_batch.catalog import CatalogError, check_name, glue_columns, hive_type
from bedrock_batch.config import PipelineConfig
from bedrock_batch.errors import ConfigError
from tests.call_center_table import CALL_SUMMARIES_SCHEMA, SUMMARY_COLUMNS
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("data_type", "expected"),
    [
        (pa.string(), "string"),
        (pa.large_string(), "string"),
        (pa.null(), "string"),
        (pa.bool_(), "boolean"),
        (pa.int8(), "tinyint"),
        (pa.int16(), "smallint"),
        (pa.int32(), "int"),
        (pa.int64(), "bigint"),
        (pa.uint32(), "bigint"),
        (pa.float32(), "float"),
        (pa.float64(), "double"),
        (pa.timestamp("us", tz="UTC"), "timestamp"),
        (pa.timestamp("ns"), "timestamp"),
        (pa.date32(), "date"),
        (pa.decimal128(12, 2), "decimal(12,2)"),
        (pa.binary(), "binary"),
        (pa.list_(pa.string()), "array<string>"),
        (pa.large_list(pa.int64()), "array<bigint>"),
        (pa.dictionary(pa.int32(), pa.string()), "string"),
        (pa.map_(pa.string(), pa.float64()), "map<string,double>"),
        (pa.struct([("a", pa.int32()), ("b", pa.list_(pa.string()))]), "struct<a:int,b:array<string>>"),
    ],
    ids=str,
)
def test_hive_type(data_type, expected):
    assert hive_type(data_type) == expected


def test_types_athena_cannot_read_are_refused_by_column_name():
    with pytest.raises(CatalogError, match="'talk_time'"):
        hive_type(pa.time64("us"), "talk_time")


def test_result_columns_map_without_the_partition_key():
    schema = pa.schema(
        [*CALL_SUMMARIES_SCHEMA, pa.field("agent_id", pa.string()), pa.field("duration", pa.int32())]
    )
    columns = glue_columns(schema)
    names = [c["Name"] for c in columns]
    assert names == [n for n in schema.names if n != "ds"]
    types = {c["Name"]: c["Type"] for c in columns}
    assert types["action_items"] == "array<string>"
    assert types["input_tokens"] == types["output_tokens"] == "bigint"
    assert types["retryable"] == "boolean"
    assert types["processed_at"] == "timestamp"
    assert types["duration"] == "int"
    assert {types[n] for n in SUMMARY_COLUMNS.names if n != "action_items"} == {"string"}


@pytest.mark.parametrize("name", ["analytics", "call_center_2", "a" * 255])
def test_valid_names(name):
    assert check_name(name, "glue_database") == name


@pytest.mark.parametrize("name", ["", "Analytics", "call-center", "db.table", "a" * 256, None])
def test_invalid_names(name):
    with pytest.raises(CatalogError, match="glue_table"):
        check_name(name, "glue_table")


class TestPipelineConfig:
    def write(self, tmp_path, **overrides):
        config = orjson.loads((REPO / "include" / "config" / "call_center_summarization.json").read_bytes())
        path = tmp_path / "config.json"
        path.write_bytes(orjson.dumps({**config, **overrides}))
        return path

    def test_registration_is_off_by_default(self, tmp_path):
        shipped = PipelineConfig.load(REPO / "include" / "config" / "call_center_summarization.json")
        assert shipped.glue_database is None
        assert shipped.glue_table == "call_summaries"
        assert (
            PipelineConfig.load(self.write(tmp_path, glue_database="analytics")).glue_database == "analytics"
        )

    def test_invalid_names_fail_at_load(self, tmp_path):
        with pytest.raises(ConfigError, match="glue_database 'Call-Center'"):
            PipelineConfig.load(self.write(tmp_path, glue_database="Call-Center"))
        with pytest.raises(ConfigError, match="glue_table 'call summaries'"):
            PipelineConfig.load(self.write(tmp_path, glue_database="analytics", glue_table="call summaries"))
