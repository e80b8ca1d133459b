"""Register the results table and its ``ds`` partitions in the AWS Glue Data Catalog, for Athena queries.

Takes a boto3 Glue client; no Airflow. The database is never created here: it is set up once, outside the
pipeline (Athena ``CREATE DATABASE``, CloudFormation, Terraform), so the Airflow role needs no
``glue:CreateDatabase`` and a misspelt name fails loudly instead of creating a stray database. The table is
created on first use and gains the columns a later schema adds; a rerun of a date updates its partition.

Every Glue call made here: GetDatabase, GetTable, CreateTable, UpdateTable, CreatePartition, UpdatePartition.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from bedrock_batch.aws_errors import error_code
from bedrock_batch.errors import CatalogError

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

PARTITION_KEY = "ds"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
TABLE_PARAMETERS = {"classification": "parquet", "EXTERNAL": "TRUE"}

# Athena names: lowercase letters, digits and underscores (Glue lowercases other names, which would then no
# longer match what we compare against); Glue allows at most 255 characters.
_NAME = re.compile(r"[a-z0-9_]{1,255}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_S3 = "s3://"


@dataclass(frozen=True)
class Registration:
    """What :func:`register_partition` did.

    :param database: the Glue database.
    :param table: the Glue table.
    :param partition: the partition, ``ds=<YYYY-MM-DD>``.
    :param location: the partition's ``s3://`` prefix.
    :param table_created: whether the table was created by this call.
    :param columns_added: columns added to an existing table, in order.
    :param partition_created: whether the partition was created (``False``: an existing one was updated).
    """

    database: str
    table: str
    partition: str
    location: str
    table_created: bool
    columns_added: tuple[str, ...]
    partition_created: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (for XCom and the task log)."""
        return {**asdict(self), "columns_added": list(self.columns_added)}


def check_name(name: str, what: str) -> str:
    """``name`` if it is a usable Glue/Athena name (``[a-z0-9_]``, 1-255 characters).

    :param name: the database or table name.
    :param what: ``glue_database`` or ``glue_table``, for the message.
    :raises CatalogError: otherwise.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise CatalogError(
            f"{what} {name!r} is not a valid Glue/Athena name: "
            "use 1-255 lowercase letters, digits and underscores"
        )
    return name


def hive_type(data_type: pa.DataType, column: str = "") -> str:
    """The Hive (Glue/Athena) type of an Arrow type, as Athena reads it from Parquet.

    :param data_type: the Arrow type.
    :param column: the column's name, for the error message.
    :raises CatalogError: for a type Athena cannot read (time of day, durations, intervals).
    """
    import pyarrow as pa

    t = pa.types
    if t.is_dictionary(data_type):
        return hive_type(data_type.value_type, column)
    if t.is_string(data_type) or t.is_large_string(data_type) or t.is_null(data_type):
        return "string"  # an all-null column has no type of its own; string reads it
    simple = [
        (t.is_boolean, "boolean"),
        (t.is_int8, "tinyint"),
        (t.is_int16, "smallint"),
        (t.is_int32, "int"),
        (t.is_int64, "bigint"),
        (t.is_uint8, "smallint"),
        (t.is_uint16, "int"),
        (t.is_uint32, "bigint"),
        (t.is_uint64, "bigint"),  # Athena has nothing wider; values above 2**63 - 1 do not fit
        (t.is_float16, "float"),
        (t.is_float32, "float"),
        (t.is_float64, "double"),
        (t.is_timestamp, "timestamp"),
        (t.is_date, "date"),
        (t.is_binary, "binary"),
        (t.is_large_binary, "binary"),
        (t.is_fixed_size_binary, "binary"),
    ]
    for test, name in simple:
        if test(data_type):
            return name
    if t.is_decimal(data_type):
        return f"decimal({data_type.precision},{data_type.scale})"
    if t.is_list(data_type) or t.is_large_list(data_type) or t.is_fixed_size_list(data_type):
        return f"array<{hive_type(data_type.value_type, column)}>"
    if t.is_map(data_type):
        return f"map<{hive_type(data_type.key_type, column)},{hive_type(data_type.item_type, column)}>"
    if t.is_struct(data_type):
        fields = ",".join(
            f"{data_type.field(i).name}:{hive_type(data_type.field(i).type, column)}"
            for i in range(data_type.num_fields)
        )
        return f"struct<{fields}>"
    raise CatalogError(f"column {column!r} has Arrow type {data_type}, which Athena cannot read from Parquet")


def glue_columns(schema: pa.Schema) -> list[dict[str, str]]:
    """Glue ``Columns`` of a results schema: every column but the partition key ``ds``, in order.

    The files keep their ``ds`` column; in the catalog the partition key provides it (Glue and Athena refuse
    a data column that repeats a partition key).

    :param schema: the Arrow schema of the written partition (passthrough columns included).
    """
    return [
        {"Name": field.name, "Type": hive_type(field.type, field.name)}
        for field in schema
        if field.name.lower() != PARTITION_KEY
    ]


def _table_location(location: str) -> str:
    if not location.startswith(_S3):
        raise CatalogError(
            f"the Glue table location must be an s3:// URI (Athena reads nothing else), got {location!r}"
        )
    return location.rstrip("/") + "/"


def _storage_descriptor(columns: list[dict[str, str]], location: str) -> dict[str, Any]:
    return {
        "Columns": columns,
        "Location": location,
        "InputFormat": PARQUET_INPUT_FORMAT,
        "OutputFormat": PARQUET_OUTPUT_FORMAT,
        "Compressed": False,
        "SerdeInfo": {"SerializationLibrary": PARQUET_SERDE, "Parameters": {"serialization.format": "1"}},
    }


def _check_database(glue: Any, database: str) -> None:
    try:
        glue.get_database(Name=database)
    except ClientError as error:
        if error_code(error) != "EntityNotFoundException":
            raise
        region = getattr(getattr(glue, "meta", None), "region_name", None) or "this Region"
        raise CatalogError(
            f"Glue database {database!r} does not exist in {region}; create it once (e.g. in Athena: "
            f"CREATE DATABASE {database}) or unset glue_database to skip the catalog"
        ) from error


def _get_table(glue: Any, database: str, table: str) -> dict[str, Any] | None:
    try:
        return dict(glue.get_table(DatabaseName=database, Name=table)["Table"])
    except ClientError as error:
        if error_code(error) != "EntityNotFoundException":
            raise
        return None


def _merge_columns(
    existing: Mapping[str, Any], columns: list[dict[str, str]], database: str, table: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """The existing table's columns plus those of ``columns`` it lacks; raises on a changed type."""
    descriptor = existing.get("StorageDescriptor") or {}
    keys = [
        (k.get("Name", "").lower(), k.get("Type", "").lower()) for k in existing.get("PartitionKeys") or []
    ]
    if keys != [(PARTITION_KEY, "string")]:
        raise CatalogError(
            f"Glue table {database}.{table} exists but is not partitioned by {PARTITION_KEY} (string) alone "
            f"(partition keys: {keys}); choose another glue_table"
        )
    merged = [dict(c) for c in descriptor.get("Columns") or []]
    known = {c["Name"].lower(): c.get("Type", "").lower() for c in merged}
    added: list[str] = []
    for column in columns:
        name = column["Name"].lower()
        if name not in known:
            merged.append(dict(column))
            added.append(column["Name"])
        elif known[name].replace(" ", "") != column["Type"].lower():
            raise CatalogError(
                f"column {column['Name']!r} of Glue table {database}.{table} is {known[name]}, the new "
                f"partition has {column['Type']}; Athena cannot read both. Keep the column's type "
                "(passthrough columns keep their source type) or register under another glue_table"
            )
    return merged, added


def _updated_table_input(
    glue: Any, existing: Mapping[str, Any], columns: list[dict[str, Any]]
) -> dict[str, Any]:
    """A ``TableInput`` that keeps everything of ``existing`` and replaces its columns."""
    allowed = set(glue.meta.service_model.shape_for("TableInput").members)
    table_input = {key: value for key, value in existing.items() if key in allowed}
    table_input["StorageDescriptor"] = {**(existing.get("StorageDescriptor") or {}), "Columns": columns}
    return table_input


def _ensure_table(
    glue: Any, database: str, table: str, location: str, columns: list[dict[str, str]]
) -> tuple[list[dict[str, Any]], bool, list[str]]:
    """Create the table or bring its columns up to date; return its columns, whether it was created, and the
    columns added."""
    existing = _get_table(glue, database, table)
    if existing is None:
        table_input = {
            "Name": table,
            "Description": "Written by bedrock_batch: one Parquet file per ds partition",
            "TableType": "EXTERNAL_TABLE",
            "Parameters": dict(TABLE_PARAMETERS),
            "PartitionKeys": [{"Name": PARTITION_KEY, "Type": "string"}],
            "StorageDescriptor": _storage_descriptor(columns, location),
        }
        try:
            glue.create_table(DatabaseName=database, TableInput=table_input)
        except ClientError as error:
            if error_code(error) != "AlreadyExistsException":
                raise
            # Another publisher created it between our read and our create: reconcile with theirs.
            existing = _get_table(glue, database, table)
            if existing is None:
                raise
        else:
            log.info("created Glue table %s.%s with %d column(s)", database, table, len(columns))
            return list(columns), True, []

    current = str((existing.get("StorageDescriptor") or {}).get("Location") or "")
    if current.rstrip("/") != location.rstrip("/"):
        raise CatalogError(
            f"Glue table {database}.{table} exists with location {current or '(none)'}, not {location}; "
            "it belongs to another dataset, so choose another glue_table"
        )
    merged, added = _merge_columns(existing, columns, database, table)
    if added:
        glue.update_table(DatabaseName=database, TableInput=_updated_table_input(glue, existing, merged))
        log.info("added %d column(s) to Glue table %s.%s", len(added), database, table)
    return merged, False, added


def register_partition(
    glue: Any,
    *,
    database: str,
    table: str,
    location: str,
    schema: pa.Schema,
    partition_value: str,
    partition_location: str | None = None,
) -> Registration:
    """Register the ``ds=<partition_value>`` partition of a results table, creating the table if needed.

    Idempotent: a rerun of the same date updates the partition (never duplicates it, never fails because it
    exists); an existing table gains the columns of ``schema`` it lacks (appended; no column is ever removed,
    so older partitions stay readable). The partition's columns are the table's, so Athena never sees a
    partition schema that disagrees with the table's.

    :param glue: a boto3 Glue client.
    :param database: an existing Glue database.
    :param table: the table's name (created if missing).
    :param location: the table's root, ``s3://bucket/prefix/call_summaries``; partitions are
        ``<location>/ds=<value>/``.
    :param schema: the Arrow schema of the written partition (its ``ds`` column becomes the partition key).
    :param partition_value: the partition's date, ``YYYY-MM-DD``.
    :param partition_location: where the partition's files are, under ``<location>/ds=<value>/`` (the
        published version, see :mod:`bedrock_batch.partitions`); ``None``: ``<location>/ds=<value>/``
        itself. Updating it is how a new version of the day reaches Athena in one step.
    :raises CatalogError: when the database does not exist, a name is invalid, the location is not
        ``s3://``, or an existing table of that name has another location, partitioning or column type.
    """
    check_name(database, "glue_database")
    check_name(table, "glue_table")
    if not _DATE.fullmatch(partition_value):
        raise CatalogError(f"partition value {partition_value!r} is not a YYYY-MM-DD date")
    table_location = _table_location(location)
    day_location = f"{table_location}{PARTITION_KEY}={partition_value}/"
    if partition_location is None:
        partition_location = day_location
    elif not (partition_location.endswith("/") and partition_location.startswith(day_location)):
        raise CatalogError(
            f"partition location {partition_location!r} is not a prefix under {day_location!r}"
        )
    columns = glue_columns(schema)

    _check_database(glue, database)
    table_columns, created, added = _ensure_table(glue, database, table, table_location, columns)

    partition_input = {
        "Values": [partition_value],
        "StorageDescriptor": _storage_descriptor(table_columns, partition_location),
    }
    try:
        glue.create_partition(DatabaseName=database, TableName=table, PartitionInput=partition_input)
        partition_created = True
    except ClientError as error:
        if error_code(error) != "AlreadyExistsException":
            raise
        glue.update_partition(
            DatabaseName=database,
            TableName=table,
            PartitionValueList=[partition_value],
            PartitionInput=partition_input,
        )
        partition_created = False
    log.info(
        "%s partition %s=%s of Glue table %s.%s",
        "created" if partition_created else "updated",
        PARTITION_KEY,
        partition_value,
        database,
        table,
    )
    return Registration(
        database=database,
        table=table,
        partition=f"{PARTITION_KEY}={partition_value}",
        location=partition_location,
        table_created=created,
        columns_added=tuple(added),
        partition_created=partition_created,
    )
