"""What a local deployment sets up for the pipeline: the ``aws_default`` connection on the local AWS stack,
the buckets, a pipeline configuration at a local pace, and sample transcripts.

The same steps as the compose file's ``local-setup`` service and ``make demo``, for processes on this machine.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bedrock_batch_dev.deployment.compose import REPO

SHIPPED_CONFIG = REPO / "include" / "config" / "call_center_summarization.json"
CALL_CENTER_DAGS = ("call_center_summarization", "call_summary_kpis")
# The shipped configuration's example buckets, renamed for the local stack; every key prefix stays as shipped.
BUCKET_PREFIX = ("example-", "local-")
# A local pace: the emulator finishes a job in seconds, so the production cadence (5-minute job polls,
# 10-minute source pokes, 5-minute retry delay) would only add sleep, and it has no on-demand rate to respect.
LOCAL_PACE: Mapping[str, Any] = {
    "poll_interval_seconds": 2,
    "source_poke_interval_seconds": 5,
    "retry_delay_seconds": 5,
    "on_demand_requests_per_second": 50,
}


def bucket_of(uri: str) -> str:
    return uri.removeprefix("s3://").split("/", 1)[0]


def local_uri(uri: str) -> str:
    """``uri`` with its bucket renamed for the local stack (``s3://example-x/...`` → ``s3://local-x/...``)."""
    bucket = bucket_of(uri)
    old, new = BUCKET_PREFIX
    return uri.replace(f"s3://{bucket}", f"s3://{new}{bucket.removeprefix(old)}", 1)


def pipeline_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The shipped call-center configuration on the local buckets at :data:`LOCAL_PACE`, then
    ``overrides`` (``quotas`` are merged key by key)."""
    config: dict[str, Any] = json.loads(SHIPPED_CONFIG.read_text())
    for key in ("source_uri", "staging_uri", "results_uri"):
        config[key] = local_uri(config[key])
    changes = dict(overrides or {})
    quotas = {**config["quotas"], **changes.pop("quotas", {})}
    return {**config, **LOCAL_PACE, **changes, "quotas": quotas}


def write_pipeline_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def buckets(config: Mapping[str, Any]) -> list[str]:
    """The buckets the configuration names (source, staging, results), once each."""
    return list(dict.fromkeys(bucket_of(config[key]) for key in ("source_uri", "staging_uri", "results_uri")))


def create_buckets(s3: Any, names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)


def aws_connection(s3_url: str, bedrock_url: str, region: str) -> dict[str, Any]:
    """The ``aws_default`` connection (API body) with every service the code uses on the local stack."""
    extra = {
        "region_name": region,
        "service_config": {
            "s3": {"endpoint_url": s3_url},
            # moto's server answers every AWS service on its port, the Glue Data Catalog included.
            "glue": {"endpoint_url": s3_url},
            "bedrock": {"endpoint_url": bedrock_url},
            "bedrock-runtime": {"endpoint_url": bedrock_url},
        },
    }
    return {
        "connection_id": "aws_default",
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": json.dumps(extra),
    }


def source_prefix(config: Mapping[str, Any], ds: str) -> str:
    """The source partition of ``ds`` (``source_uri`` with ``{ds}`` replaced)."""
    return str(config["source_uri"]).replace("{ds}", ds)


def write_sample_calls(s3: Any, config: Mapping[str, Any], ds: str, count: int) -> list[str]:
    """Write ``count`` synthetic calls for ``ds`` in the configured source format; their call ids."""
    from bedrock_batch_dev.sample_data.calls import generate_calls
    from bedrock_batch_dev.sample_data.writers import write_calls

    calls = list(generate_calls(count, seed=date.fromisoformat(ds).toordinal()))
    write_calls(calls, str(config["source_format"]), source_prefix(config, ds), s3_client=s3)
    return [call.call_id for call in calls]


def yesterday(now: datetime | None = None) -> str:
    """Yesterday's date in UTC, the partition a daily run on today processes."""
    return ((now or datetime.now(UTC)) - timedelta(days=1)).date().isoformat()


def latest_scheduled_ds(schedule: str, now: datetime | None = None) -> str:
    """The ``ds`` of the run the scheduler creates on unpausing (catchup off): the start of the latest
    complete interval of the cron ``schedule``, which is the day before yesterday before the day's tick."""
    from croniter import croniter

    current = now or datetime.now(UTC)
    ticks = croniter(schedule, current)
    ticks.get_prev(datetime)
    return str(ticks.get_prev(datetime).date().isoformat())
