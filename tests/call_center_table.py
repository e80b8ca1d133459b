"""The ``call_summaries`` table as it was published before reply schemas: the fixed expectation that the
generic results table, built from ``include/pipelines/call_center_summarization/reply_schema.json``, must
keep column for column and type for type (readers of the table, its Glue definition and the KPIs rely on it).
"""

from __future__ import annotations

import pyarrow as pa

# The reply's columns (call_summaries.SUMMARY_FIELDS without parse_error).
SUMMARY_COLUMNS = pa.schema(
    [
        pa.field("summary", pa.string()),
        pa.field("sentiment", pa.string()),
        pa.field("primary_topic", pa.string()),
        pa.field("resolution", pa.string()),
        pa.field("action_items", pa.list_(pa.string())),
    ]
)

# results.RESULT_SCHEMA before reply schemas; configured passthrough columns follow it.
CALL_SUMMARIES_SCHEMA = pa.schema(
    [
        pa.field("call_id", pa.string()),
        pa.field("record_id", pa.string()),
        pa.field("ds", pa.string()),
        pa.field("model_id", pa.string()),
        pa.field("summary", pa.string()),
        pa.field("sentiment", pa.string()),
        pa.field("primary_topic", pa.string()),
        pa.field("resolution", pa.string()),
        pa.field("action_items", pa.list_(pa.string())),
        pa.field("parse_error", pa.string()),
        pa.field("raw_text", pa.string()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("stop_reason", pa.string()),
        pa.field("status", pa.string()),
        pa.field("error_code", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("retryable", pa.bool_()),
        pa.field("job_arn", pa.string()),
        pa.field("dag_run_id", pa.string()),
        pa.field("processed_at", pa.timestamp("us", tz="UTC")),
        pa.field("source_position", pa.string()),
    ]
)
