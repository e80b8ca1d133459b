"""Runs a shipped pipeline's DAG end to end on the embedded local stack, then prints what it produced.

Starts moto's S3 and the Bedrock emulator, writes sample records (call transcripts, product reviews or
support tickets, as the pipeline reads them), runs ``airflow dags test``, stops all. The call-center pipeline
is the default; ``--pipeline product_reviews`` or ``support_tickets`` runs another folder of
``include/pipelines/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "call_center_summarization"
CALLS_BUCKET, STAGING_BUCKET, RESULTS_BUCKET = (
    "demo-call-center-raw",
    "demo-bedrock-staging",
    "demo-analytics",
)
# The other shipped pipelines: the sample-data kind each reads, in its source format.
SAMPLES = {"product_reviews": ("reviews", "parquet"), "support_tickets": ("tickets", "csv")}
PIPELINES = (DAG_ID, *SAMPLES)
SOURCE_BUCKET = "demo-source"
MODEL_ID = "us.anthropic.claude-3-haiku-20240307-v1:0"
REGION = "us-east-1"
READY_PREFIX = "local stack ready:"


# The shipped configuration polls at a production pace (a job's status every 5 minutes); the local stack
# finishes a job in about a second, so a local run polls at the stack's pace instead.
LOCAL_PACE = {
    "poll_interval_seconds": 1,
    "source_poke_interval_seconds": 1,
    "on_demand_requests_per_second": 50,
    "retry_delay_seconds": 5,
}


def local_config(home: Path) -> Path:
    """The shipped pipeline configuration with the demo's buckets and local-pace polling, in ``home``."""
    from bedrock_batch.resources import include_path

    config = json.loads(include_path("config", f"{DAG_ID}.json").read_text())
    config.update(
        {
            "source_uri": f"s3://{CALLS_BUCKET}/transcripts/{{ds}}/",
            "source_format": "text",
            "staging_uri": f"s3://{STAGING_BUCKET}/call-center",
            "results_uri": f"s3://{RESULTS_BUCKET}",
            "model_id": MODEL_ID,
            **LOCAL_PACE,
        }
    )
    path = home / f"{DAG_ID}.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def local_override(home: Path, pipeline: str) -> tuple[str, Path]:
    """The environment variable and the file that point ``pipeline`` at the demo's buckets, at local pace:
    ``CALL_CENTER_CONFIG`` for the call-center pipeline, ``BEDROCK_BATCH_PIPELINE_<NAME>_CONFIG`` for the
    others (docs/pipelines.md)."""
    from bedrock_batch.pipelines import config_env_name

    if pipeline == DAG_ID:
        return "CALL_CENTER_CONFIG", local_config(home)
    settings = {
        "source_uri": f"s3://{SOURCE_BUCKET}/{pipeline}/{{ds}}/",
        "staging_uri": f"s3://{STAGING_BUCKET}/{pipeline}",
        "results_uri": f"s3://{RESULTS_BUCKET}/{pipeline}",
        **LOCAL_PACE,
    }
    path = home / f"{pipeline}.json"
    path.write_text(json.dumps(settings, indent=2))
    return config_env_name(pipeline), path


def airflow_environment(home: Path, s3_url: str, bedrock_url: str, pipeline: str = DAG_ID) -> dict[str, str]:
    """Environment for the Airflow CLI: a private home and SQLite DB, our dags/ and plugins/, the stack, and
    the demo's settings of the pipeline (:func:`local_override`)."""
    connection = {
        "conn_type": "aws",
        "login": "demo",
        "password": "demo",
        "extra": {
            "region_name": REGION,
            "service_config": {
                "s3": {"endpoint_url": s3_url},
                "bedrock": {"endpoint_url": bedrock_url},
                "bedrock-runtime": {"endpoint_url": bedrock_url},
            },
        },
    }
    override_env, override_file = local_override(home, pipeline)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
            "AWS_DEFAULT_REGION": REGION,
            override_env: str(override_file),
            # Status checks at the local stack's pace (the production default is 2 per second per triggerer).
            "AIRFLOW__BEDROCK_BATCH__STATUS_CALLS_PER_SECOND": "50",
        }
    )
    return env


@contextmanager
def start_local_stack(
    time_scale: float, *extra_args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """Run ``python -m bedrock_batch_dev.emulator`` on free ports with ``extra_args``; yield (its process,
    s3 URL, bedrock URL); stop it."""
    command = [sys.executable, "-m", "bedrock_batch_dev.emulator", "--port", "0", "--s3-port", "0"]
    command += ["--time-scale", str(time_scale), "--log-level", "WARNING", *extra_args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(READY_PREFIX):
            raise RuntimeError(f"the local stack did not start (said {line.strip()!r})")
        urls = dict(part.split("=", 1) for part in line[len(READY_PREFIX) :].split())
        yield process, urls["s3"], urls["bedrock"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def local_stack(time_scale: float) -> Iterator[tuple[str, str]]:
    """:func:`start_local_stack` with the defaults; yield (s3 URL, bedrock URL)."""
    with start_local_stack(time_scale) as (_, s3_url, bedrock_url):
        yield s3_url, bedrock_url


def write_sample_calls(s3: Any, count: int, ds: str) -> str:
    """Write ``count`` synthetic transcripts as text files under the day's partition; return its URI."""
    from bedrock_batch_dev.sample_data.calls import generate_calls
    from bedrock_batch_dev.sample_data.writers import write_calls

    for bucket in (CALLS_BUCKET, STAGING_BUCKET, RESULTS_BUCKET):
        s3.create_bucket(Bucket=bucket)
    prefix = f"s3://{CALLS_BUCKET}/transcripts/{ds}/"
    write_calls(generate_calls(count, seed=2026), "text", prefix, s3_client=s3)
    return prefix


def run_airflow(env: dict[str, str], *args: str, quiet: bool = False) -> None:
    airflow = str(Path(sys.executable).with_name("airflow"))
    result = subprocess.run(
        [airflow, *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE if quiet else None,
        stderr=subprocess.STDOUT if quiet else None,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        if quiet and result.stdout:
            print(result.stdout[-4000:])
        raise SystemExit(f"`airflow {' '.join(args[:2])}` failed with exit code {result.returncode}")


def write_sample_records(s3: Any, pipeline: str, count: int, ds: str) -> str:
    """Write ``count`` sample records of another pipeline under the day's partition; return its URI."""
    from bedrock_batch_dev.sample_data.reviews import generate_reviews
    from bedrock_batch_dev.sample_data.tickets import generate_tickets
    from bedrock_batch_dev.sample_data.writers import write_reviews, write_tickets

    for bucket in (SOURCE_BUCKET, STAGING_BUCKET, RESULTS_BUCKET):
        s3.create_bucket(Bucket=bucket)
    prefix = f"s3://{SOURCE_BUCKET}/{pipeline}/{ds}/"
    kind, fmt = SAMPLES[pipeline]
    if kind == "reviews":
        write_reviews(generate_reviews(count, seed=2026), fmt, prefix, s3_client=s3)
    else:
        write_tickets(generate_tickets(count, seed=2026), fmt, prefix, s3_client=s3)
    return prefix


def show_results(s3: Any, ds: str, pipeline: str = DAG_ID) -> None:
    """Print where the results are, the run report and three result rows."""
    from bedrock_batch.partitions import read_partition
    from bedrock_batch.pipelines import load_pipeline
    from bedrock_batch.storage import Storage

    loaded = load_pipeline(pipeline, environ={})
    root = "" if pipeline == DAG_ID else f"{pipeline}/"
    report_key = f"{root}reports/ds={ds}/run_report.md"
    report = s3.get_object(Bucket=RESULTS_BUCKET, Key=report_key)["Body"].read().decode()
    # The day as published: the files of the version its pointer names.
    storage = Storage(s3)
    table = read_partition(storage, f"s3://{RESULTS_BUCKET}/{root}{loaded.table}", ds)
    print("\n" + report)
    print(f"Results table: s3://{RESULTS_BUCKET}/{root}{loaded.table}/ds={ds}/ ({table.num_rows:,} rows)")
    print(f"Run report:    s3://{RESULTS_BUCKET}/{root}reports/ds={ds}/run_report.json\n")
    if pipeline == DAG_ID:
        columns = ["call_id", "status", "sentiment", "primary_topic", "resolution", "summary"]
    else:
        assert loaded.reply_schema is not None
        reply = json.loads(loaded.reply_schema.read_text())["properties"]
        columns = [loaded.key_column, "status", *reply]
    for row in table.select(columns).slice(0, 3).to_pylist():
        print(json.dumps(row, indent=2, default=str))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bedrock_batch_dev.demo", description=__doc__)
    parser.add_argument("--pipeline", choices=PIPELINES, default=DAG_ID, help="the shipped pipeline to run")
    parser.add_argument(
        "--records", "--calls", dest="records", type=int, default=1200, help="sample records to generate"
    )
    parser.add_argument("--time-scale", type=float, default=3600.0, help="emulated seconds per real second")
    parser.add_argument("--home", default=str(REPO / ".local" / "demo"), help="scratch Airflow home")
    args = parser.parse_args(argv)

    import boto3

    ds = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    home = Path(args.home)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    started = time.monotonic()
    with local_stack(args.time_scale) as (s3_url, bedrock_url):
        print(f"Local stack up: S3 {s3_url}, Bedrock {bedrock_url}")
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_url,
            region_name=REGION,
            aws_access_key_id="demo",
            aws_secret_access_key="demo",  # noqa: S106 - the local stack accepts any credentials
        )
        if args.pipeline == DAG_ID:
            source = write_sample_calls(s3, args.records, ds)
            print(f"Wrote {args.records:,} sample transcripts to {source}")
        else:
            source = write_sample_records(s3, args.pipeline, args.records, ds)
            print(f"Wrote {args.records:,} sample {SAMPLES[args.pipeline][0]} to {source}")
        env = airflow_environment(home, s3_url, bedrock_url, args.pipeline)
        run_airflow(env, "db", "migrate", quiet=True)
        print(f"Running `airflow dags test {args.pipeline} {ds}` against the local stack ...")
        run_started = time.monotonic()
        run_airflow(env, "dags", "test", args.pipeline, ds, quiet=True)
        print(f"The DAG run took {time.monotonic() - run_started:,.0f} s")
        show_results(s3, ds, args.pipeline)
    print(f"\nDone in {time.monotonic() - started:,.0f} s; the local stack is stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
