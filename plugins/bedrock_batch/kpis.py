"""Daily call-summary KPIs for analysts, computed from one partition of the results table.

Calls, outcome counts, sentiment mix, resolution rate, top topics, average tokens and cost per call. This
module is the call-center pipeline's own: it reads the columns of its reply schema
(``include/pipelines/call_center_summarization/reply_schema.json``).
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from bedrock_batch.cost import PriceTable, estimate_cost
from bedrock_batch.storage import Storage

TOP_TOPICS = 5

KPI_SCHEMA = pa.schema(
    [
        pa.field("ds", pa.string()),
        pa.field("calls", pa.int64()),
        pa.field("succeeded", pa.int64()),
        pa.field("failed", pa.int64()),
        pa.field("quarantined", pa.int64()),
        pa.field("invalid_output", pa.int64()),
        pa.field("sentiment_positive", pa.float64()),
        pa.field("sentiment_neutral", pa.float64()),
        pa.field("sentiment_negative", pa.float64()),
        pa.field("resolution_rate", pa.float64()),
        pa.field("escalation_rate", pa.float64()),
        pa.field(
            "top_topics", pa.list_(pa.struct([pa.field("topic", pa.string()), pa.field("calls", pa.int64())]))
        ),
        pa.field("avg_input_tokens", pa.float64()),
        pa.field("avg_output_tokens", pa.float64()),
        pa.field("avg_cost_usd", pa.float64()),
    ]
)


def _share(counts: Counter[str], key: str, total: int) -> float | None:
    return counts[key] / total if total else None


def daily_kpis(results: pa.Table, ds: str, prices: PriceTable | None = None) -> pa.Table:
    """One KPI row for the day ``ds`` from its results rows.

    ``calls`` is every row: ``succeeded`` + ``failed`` + ``quarantined`` + ``invalid_output`` (a summary that
    does not conform to the reply schema; its columns are empty). Shares are over calls with a valid value
    for that field. Average tokens and cost are over the calls the model answered, ``succeeded`` and
    ``invalid_output`` alike: both were billed. The cost is None (unknown) when any model in the partition
    has no price, never 0.

    :param results: the day's rows of the ``call_summaries`` table.
    :param ds: the day, ``YYYY-MM-DD``.
    :param prices: price table; :func:`~bedrock_batch.cost.load_price_table`'s when None.
    """
    status = Counter(results.column("status").to_pylist())
    ok = results.filter(pc.equal(results.column("status"), "succeeded"))
    succeeded = ok.num_rows
    answered = results.filter(pc.is_in(results.column("status"), pa.array(["succeeded", "invalid_output"])))

    sentiments = Counter(s for s in ok.column("sentiment").to_pylist() if s)
    rated = sum(sentiments.values())
    resolutions = Counter(r for r in ok.column("resolution").to_pylist() if r)
    resolved_total = sum(resolutions.values())
    topics = Counter(t.strip().lower() for t in ok.column("primary_topic").to_pylist() if t)

    input_tokens = pc.sum(answered.column("input_tokens")).as_py() or 0
    output_tokens = pc.sum(answered.column("output_tokens")).as_py() or 0
    cost: Decimal | None = Decimal(0)
    grouped = answered.group_by("model_id").aggregate([("input_tokens", "sum"), ("output_tokens", "sum")])
    for model_id, model_in, model_out in zip(
        grouped.column("model_id").to_pylist(),
        grouped.column("input_tokens_sum").to_pylist(),
        grouped.column("output_tokens_sum").to_pylist(),
        strict=True,
    ):
        model_cost = estimate_cost(model_id, model_in, model_out, prices=prices)
        cost = None if model_cost is None or cost is None else cost + model_cost

    row = {
        "ds": ds,
        "calls": results.num_rows,
        "succeeded": succeeded,
        "failed": status["failed"],
        "quarantined": status["quarantined"],
        "invalid_output": status["invalid_output"],
        "sentiment_positive": _share(sentiments, "positive", rated),
        "sentiment_neutral": _share(sentiments, "neutral", rated),
        "sentiment_negative": _share(sentiments, "negative", rated),
        "resolution_rate": _share(resolutions, "resolved", resolved_total),
        "escalation_rate": _share(resolutions, "escalated", resolved_total),
        "top_topics": [{"topic": t, "calls": n} for t, n in topics.most_common(TOP_TOPICS)],
        "avg_input_tokens": input_tokens / answered.num_rows if answered.num_rows else None,
        "avg_output_tokens": output_tokens / answered.num_rows if answered.num_rows else None,
        "avg_cost_usd": float(cost / answered.num_rows) if cost is not None and answered.num_rows else None,
    }
    return pa.Table.from_pylist([row], schema=KPI_SCHEMA)


def publish_daily_kpis(storage: Storage, table_uri: str, kpi_table_uri: str, ds: str) -> str:
    """Compute the KPIs of one day of the results table and replace that day's KPI partition; return its URI.

    The day is read as published (:func:`~bedrock_batch.partitions.read_partition`: the current version,
    whole), only the columns the KPIs use.

    :param storage: local and S3 access.
    :param table_uri: root of the ``call_summaries`` table (``<results_uri>/call_summaries``).
    :param kpi_table_uri: root of the KPI table (``<results_uri>/call_summary_kpis``).
    :param ds: the day.
    """
    from bedrock_batch.partitions import current_partition, read_partition
    from bedrock_batch.results import write_partition

    if current_partition(storage, table_uri, ds) is None:
        results = RESULT_COLUMNS_FOR_KPIS.empty_table()
    else:
        results = read_partition(storage, table_uri, ds, columns=RESULT_COLUMNS_FOR_KPIS.names)
    return write_partition(storage, daily_kpis(results, ds), kpi_table_uri, ds)


# The results columns the KPIs read, for a day with no partition file at all.
RESULT_COLUMNS_FOR_KPIS = pa.schema(
    [
        ("model_id", pa.string()),
        ("status", pa.string()),
        ("sentiment", pa.string()),
        ("resolution", pa.string()),
        ("primary_topic", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
    ]
)
