"""Benchmark of one whole day through a pipeline's DAG on the local stack: N small records end to end.

Starts moto's S3 server and the Bedrock emulator (``python -m bedrock_batch_dev.emulator``, its own process,
no faults), writes N call transcripts of about 300 bytes as JSONL files of ``--records-per-file`` lines, and
runs one of two pipelines over them with ``dag.test()``:

- ``--pipeline call-center`` (the default): ``dags/call_center_summarization.py``, pointed at the source
  through ``CALL_CENTER_CONFIG``. Its 1.4 KB system prompt and reply schema go into every record (~3.4 KB
  staged).
- ``--pipeline small``: a pipeline folder this script writes under ``--dir`` at run time (``pipeline.yaml``, a
  one-line prompt, no reply schema: free-text replies of at most ``--max-tokens`` tokens) and a DAG file of
  one ``pipeline_dag(<folder>)`` call in a DAG bundle of its own, as a deployment keeps a folder outside the
  repository; its buckets, quotas and pace come from the override file named by
  ``BEDROCK_BATCH_PIPELINE_SHORT_CALLS_CONFIG``. A staged record is about 0.5 KB.

Both take jobs of ``--job-records`` records, a quota of ``--concurrent-jobs`` jobs, polling every second and
``--prepare-processes``. The script prints the wall time of each stage from its task instances (mapped tasks:
first start to last end), the jobs the emulator created, the published row count (the day's pointer), the run
report's counts, one staged record and the bytes a record takes staged and in the jobs' output, the peak
memory of this process and of the stack, and the disk the run used (moto keeps objects over ~5 MB in
temporary files, here under ``--dir``).

A guard stops the run, reports it as far as it went and exits with status 3 when the file system of
``--dir`` has less than ``--min-free-gb`` free, or after ``--max-minutes`` of DAG run.

Usage: python benchmarks/bench_day.py --records 10000000 [--pipeline call-center|small] [--max-tokens 48]
       [--job-records 50000] [--concurrent-jobs 20] [--prepare-processes 2] [--time-scale 3600]
       [--dir /tmp/bench-day] [--json FILE] [--max-minutes 0] [--min-free-gb 8]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import shutil
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODEL_ID = "us.anthropic.claude-3-haiku-20240307-v1:0"
ROLE_ARN = "arn:aws:iam::123456789012:role/BedrockBatchInferenceRole"
REGION = "us-east-1"
CALLS, STAGING, RESULTS = "bench-calls", "bench-staging", "bench-results"

# Five short calls (billing, technical support, cancellation, complaint, order status), each about 300 bytes
# once its numbers are filled in: what the emulator's summarizer reads (Agent / Customer turns).
TEMPLATES = (
    "Agent: Thank you for calling Northwind Mobile, how can I help?\n"
    "Customer: I was charged twice for my plan this month, account %(n)s.\n"
    "Agent: I see the duplicate charge of %(a)s dollars. I have applied a credit, you will receive it on "
    "your next bill.\nCustomer: Great, thank you.",
    "Agent: Northwind Mobile support, what seems to be the problem?\n"
    "Customer: My internet drops every evening since last week, account %(n)s.\n"
    "Agent: I have opened ticket INC%(n)s for our network team; they will call you back within 48 hours.\n"
    "Customer: Okay, thanks.",
    "Agent: Thank you for calling Northwind Mobile, how can I help you today?\n"
    "Customer: I want to cancel my contract %(n)s, the price went up by %(a)s dollars.\n"
    "Agent: I understand. I have escalated this to our retention team, they will call you tomorrow.\n"
    "Customer: Fine.",
    "Agent: Northwind Mobile, this is Dana speaking.\n"
    "Customer: This is the third time I am calling about order %(n)s, nobody helps me.\n"
    "Agent: I am sorry about that. I have filed a complaint and a supervisor will contact you by Friday.\n"
    "Customer: I hope so.",
    "Agent: Thank you for calling Northwind Mobile, how can I help?\n"
    "Customer: Where is my order %(n)s? It was due on Monday.\n"
    "Agent: It left our warehouse today; you will receive a tracking e-mail within %(a)s hours.\n"
    "Customer: Perfect, that is all, have a nice day.",
)


def line_templates() -> list[str]:
    """Each call as a JSONL line with %-placeholders: the call number, an account or order number, an amount
    (the texts hold no other ``%``, and digits need no JSON escaping)."""
    lines = []
    for text in TEMPLATES:
        assert text.count("%") == text.count("%(")
        row = json.dumps({"call_id": "call-%(i)s", "transcript": text}) + "\n"
        lines.append(row.replace("%(i)s", "%(i)010d").replace("%(n)s", "%(n)08d").replace("%(a)s", "%(a)d"))
    return lines


@dataclass(frozen=True)
class BenchPipeline:
    """The pipeline a run goes through: its DAG file, the DAG bundle that holds it, and its settings file."""

    dag_id: str
    table: str
    staging: str  # the key prefix of its staging_uri in the staging bucket
    dag_file: Path
    config_env: str
    config_path: Path


CALL_CENTER_DAG_ID = "call_center_summarization"
CALL_CENTER_STAGING = "call-center"
# The small pipeline: a folder outside the repository, named short_calls (so its override variable is
# BEDROCK_BATCH_PIPELINE_SHORT_CALLS_CONFIG), one line of instructions, the transcript, a free-text reply.
SMALL_NAME = "short_calls"
SMALL_TABLE = "call_notes"
SMALL_STAGING = "short-calls"
SMALL_SYSTEM = "Summarize the customer's call in one sentence."
SMALL_USER = "<call>\n{transcript}\n</call>"


def call_center_pipeline(work: Path, args: argparse.Namespace) -> BenchPipeline:
    """The shipped call-center DAG; its configuration (``CALL_CENTER_CONFIG``) is the shipped one with the
    benchmark's buckets, quotas and local-pace polling."""
    config = json.loads((REPO / "include" / "config" / f"{CALL_CENTER_DAG_ID}.json").read_text())
    config.update(
        {
            "source_uri": f"s3://{CALLS}/transcripts/{{ds}}/",
            "source_format": "jsonl",
            "staging_uri": f"s3://{STAGING}/{CALL_CENTER_STAGING}",
            "results_uri": f"s3://{RESULTS}/analytics",
            "model_id": MODEL_ID,
            **local_pace(args),
            "quotas": {**config["quotas"], **bench_quotas(args)},
        }
    )
    path = work / f"{CALL_CENTER_DAG_ID}.json"
    path.write_text(json.dumps(config, indent=2))
    return BenchPipeline(
        dag_id=CALL_CENTER_DAG_ID,
        table="call_summaries",
        staging=CALL_CENTER_STAGING,
        dag_file=REPO / "dags" / f"{CALL_CENTER_DAG_ID}.py",
        config_env="CALL_CENTER_CONFIG",
        config_path=path,
    )


def small_pipeline(work: Path, args: argparse.Namespace) -> BenchPipeline:
    """Write the small pipeline's folder, its DAG file (in a folder of its own: a DAG bundle) and its
    deployment's override file under ``work``."""
    folder = work / "pipelines" / SMALL_NAME
    (folder / "prompts" / "v1").mkdir(parents=True)
    (folder / "pipeline.yaml").write_text(
        "\n".join(
            [
                "# Short call transcripts, one free-text sentence each (written by benchmarks/bench_day.py).",
                "# No reply_schema.json: the replies are free text, the table's text column.",
                "description: One-sentence notes on the day's short calls",
                "tags: [bedrock, batch-inference, benchmark]",
                'schedule: "0 6 * * *"',
                "source_format: jsonl",
                "key_column: call_id",
                f"model_id: {MODEL_ID}",
                f"max_tokens: {args.max_tokens}",
                f"table: {SMALL_TABLE}",
                "",
            ]
        )
    )
    (folder / "prompts" / "v1" / "system.txt").write_text(SMALL_SYSTEM + "\n")
    (folder / "prompts" / "v1" / "user.txt").write_text(SMALL_USER + "\n")
    dags = work / "dags"
    dags.mkdir()
    dag_file = dags / f"{SMALL_NAME}.py"
    dag_file.write_text(
        f'"""The airflow DAG of the pipeline folder {folder}."""\n\n'
        "from bedrock_batch.factory import pipeline_dag\n\n"
        f"dag = pipeline_dag({str(folder)!r})\n"
    )
    settings = {
        "source_uri": f"s3://{CALLS}/transcripts/{{ds}}/",
        "staging_uri": f"s3://{STAGING}/{SMALL_STAGING}",
        "results_uri": f"s3://{RESULTS}/analytics",
        "role_arn": ROLE_ARN,
        **local_pace(args),
        "quotas": {"min_records_per_job": 100, "below_minimum": "on_demand", **bench_quotas(args)},
    }
    path = work / f"{SMALL_NAME}.json"
    path.write_text(json.dumps(settings, indent=2))
    from bedrock_batch.pipelines import config_env_name

    return BenchPipeline(
        dag_id=SMALL_NAME,
        table=SMALL_TABLE,
        staging=SMALL_STAGING,
        dag_file=dag_file,
        config_env=config_env_name(SMALL_NAME),
        config_path=path,
    )


def local_pace(args: argparse.Namespace) -> dict[str, Any]:
    """Settings for the local stack's pace: polling every second, no retries, the prepare processes."""
    return {
        "poll_interval_seconds": 1,
        "source_poke_interval_seconds": 1,
        "on_demand_requests_per_second": 50,
        "retry_delay_seconds": 5,
        "retries": 0,
        "prepare_processes": args.prepare_processes,
    }


def bench_quotas(args: argparse.Namespace) -> dict[str, int]:
    return {
        "max_records_per_job": args.job_records,
        "max_records_per_file": args.job_records,
        "max_concurrent_jobs": args.concurrent_jobs,
    }


def write_source(s3: Any, ds: str, records: int, per_file: int, work: Path) -> tuple[int, int]:
    """Write ``records`` transcripts as ``calls-NNNNN.jsonl`` of ``per_file`` lines under the day's prefix
    (each built locally, uploaded with ``upload_file``, then deleted); return (files, bytes)."""
    from boto3.s3.transfer import TransferConfig

    transfer = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=4)
    templates = line_templates()
    total = 0
    files = 0
    for start in range(0, records, per_file):
        path = work / f"calls-{files:05d}.jsonl"
        with path.open("w", buffering=1 << 22) as out:
            for chunk in range(start, min(start + per_file, records), 10_000):
                stop = min(chunk + 10_000, start + per_file, records)
                out.write(
                    "".join(
                        templates[i % 5] % {"i": i, "n": (i * 7919) % 10**8, "a": 5 + i % 170}
                        for i in range(chunk, stop)
                    )
                )
        total += path.stat().st_size
        s3.upload_file(str(path), CALLS, f"transcripts/{ds}/{path.name}", Config=transfer)
        path.unlink()
        files += 1
    return files, total


def _files_bytes(root: Path) -> int:
    """Bytes of the files under ``root`` (this process's temporary files: prepare's spool and parts)."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            with suppress(OSError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total


def _open_files_bytes(pid: int, root: Path) -> int:
    """Bytes of the files under ``root`` that process ``pid`` holds open, deleted ones included: moto's
    objects of more than ~5 MB live in unlinked temporary files there."""
    total = 0
    prefix = str(root)
    with suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                    total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
    return total


DEPTH = 5
SHARD = re.compile(r"shard-\d+")
SERIES = ("self", "stack", "workers", "stack_files", "local_tmp", "fs_used")


@dataclass
class Sampler:
    """Samples, every ``interval`` seconds: the RSS of this process, of the stack's process and of the other
    children (prepare's workers) together; the bytes of the stack's temporary files (moto's large objects)
    and of this process's temporary directory; the space used on the file system."""

    stack_pid: int
    stack_tmp: Path
    local_tmp: Path
    interval: float = 1.0
    guard: Any = None
    finished: threading.Event = field(default_factory=threading.Event)
    samples: list[tuple[float, ...]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        stack = psutil.Process(self.stack_pid)
        while not self._stop.is_set():
            try:
                own = me.memory_info().rss
                stack_rss = stack.memory_info().rss
                workers = 0
                for child in me.children(recursive=True):
                    if child.pid != self.stack_pid:
                        with suppress(psutil.Error):
                            workers += child.memory_info().rss
                self.samples.append(
                    (
                        time.time(),
                        own,
                        stack_rss,
                        workers,
                        _open_files_bytes(self.stack_pid, self.stack_tmp),
                        _files_bytes(self.local_tmp),
                        shutil.disk_usage(self.local_tmp).used,
                    )
                )
            except psutil.Error:
                pass
            if self.guard is not None:
                self.guard()
            self._stop.wait(self.interval)

    def peaks(self, start: float = 0.0, end: float = float("inf")) -> dict[str, float]:
        """Peak of each series in [start, end] (epoch seconds): memory in MB, files in GB; the file system's
        use as the increase over the first sample."""
        window = [s for s in self.samples if start <= s[0] <= end]
        if not window:
            return {}
        peak = {name: max(s[i + 1] for s in window) for i, name in enumerate(SERIES)}
        return {
            "self_mb": peak["self"] / 2**20,
            "stack_mb": peak["stack"] / 2**20,
            "workers_mb": peak["workers"] / 2**20,
            "stack_files_gb": peak["stack_files"] / 1e9,
            "local_tmp_gb": peak["local_tmp"] / 1e9,
            "fs_gb": (peak["fs_used"] - self.samples[0][6]) / 1e9,
        }


def s3_inventory(s3: Any) -> dict[str, dict[str, float]]:
    """Objects and GB in each bucket's folders (down to ``DEPTH`` levels, the shards' folders together as
    ``shard-*``), at the end of the run."""
    sizes: dict[str, dict[str, float]] = {}
    paginator = s3.get_paginator("list_objects_v2")
    for bucket in (CALLS, STAGING, RESULTS):
        for page in paginator.paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                folders = item["Key"].split("/")[:-1]
                where = SHARD.sub("shard-*", "/".join([bucket, *folders[:DEPTH]]))
                entry = sizes.setdefault(where, {"objects": 0, "gb": 0.0})
                entry["objects"] += 1
                entry["gb"] += item["Size"] / 1e9
    return sizes


def first_line(s3: Any, pipeline: BenchPipeline, ds: str, folder: str, suffix: str) -> str | None:
    """The first line of the first object ending with ``suffix`` under the day's staging ``folder``."""
    prefix = f"{pipeline.staging}/{pipeline.dag_id}/{ds}/{folder}/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=STAGING, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith(suffix):
                head = s3.get_object(Bucket=STAGING, Key=item["Key"], Range="bytes=0-16383")["Body"].read()
                return head.split(b"\n", 1)[0].decode("utf-8", "replace")
    return None


def sample_record(s3: Any, pipeline: BenchPipeline, ds: str) -> dict[str, Any]:
    """One record as the jobs read it (a line of the first input shard) and the reply to the first record of
    the first job's output."""
    staged = first_line(s3, pipeline, ds, "input", ".jsonl")
    output = first_line(s3, pipeline, ds, "output", ".jsonl.out")
    reply = None
    if output:
        with suppress(ValueError, KeyError, IndexError, TypeError):
            reply = json.loads(output)["modelOutput"]["content"][0]["text"]
    return {"staged": staged, "reply": reply}


def bytes_per_record(sizes: dict[str, dict[str, float]], records: int) -> dict[str, float]:
    """Bytes a record takes in the staged input shards and in the jobs' output, from the inventory."""
    totals = {"input": 0.0, "output": 0.0}
    for where, entry in sizes.items():
        for kind in totals:
            if where.startswith(STAGING + "/") and f"/{kind}/" in where + "/":
                totals[kind] += entry["gb"] * 1e9
    return {kind: total / records for kind, total in totals.items()} if records else {}


def airflow_environment(home: Path, s3_url: str, bedrock_url: str, pipeline: BenchPipeline) -> dict[str, str]:
    """Airflow settings for an in-process ``dag.test()``: a private home and SQLite DB, the folder of the
    pipeline's DAG file as the only DAG bundle (dag.test() runs DAGs of a bundle), the repository's plugins,
    the ``aws_default`` connection aimed at the stack, and the pipeline's settings file."""
    from bedrock_batch_dev.deployment.local_setup import aws_connection

    connection = {
        k: v for k, v in aws_connection(s3_url, bedrock_url, REGION).items() if k != "connection_id"
    }
    dags = pipeline.dag_file.parent
    bundle = {
        "name": "dags-folder" if dags == REPO / "dags" else "bench-day",
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": str(dags), "refresh_interval": 0},
    }
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([bundle]),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
        "AIRFLOW__BEDROCK_BATCH__STATUS_CALLS_PER_SECOND": "50",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        pipeline.config_env: str(pipeline.config_path),
    }


def load_dag(pipeline: BenchPipeline) -> Any:
    spec = importlib.util.spec_from_file_location(f"dag_{pipeline.dag_id}", pipeline.dag_file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def stage_times(dag_id: str, task_ids: list[str]) -> list[dict[str, Any]]:
    """Per task of the DAG's latest run, in the DAG's order (mapped ones over all their map indexes): first
    start, last end, wall seconds, map indexes and their states."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        latest = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).first()
        run_id = latest.run_id if latest else ""
        rows = [
            (ti.task_id, ti.map_index, ti.state, ti.start_date, ti.end_date)
            for ti in session.query(TaskInstance).filter(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
            )
        ]
    stages = []
    for task_id in task_ids:
        tis = [r for r in rows if r[0] == task_id]
        starts = [r[3] for r in tis if r[3] is not None]
        ends = [r[4] for r in tis if r[4] is not None]
        states: dict[str, int] = {}
        for r in tis:
            states[str(r[2])] = states.get(str(r[2]), 0) + 1
        running = sum(1 for r in tis if r[3] is not None and r[4] is None)
        if running:  # a run stopped by this benchmark's guard: its running task ends now
            ends.append(datetime.now(UTC))
        first, last = (min(starts), max(ends)) if starts and ends else (None, None)
        per_ti = [(r[4] - r[3]).total_seconds() for r in tis if r[3] is not None and r[4] is not None]
        stages.append(
            {
                "task": task_id,
                "count": len(tis),
                "states": states,
                "start": first.timestamp() if first else None,
                "end": last.timestamp() if last else None,
                "seconds": (last - first).total_seconds() if first and last else None,
                "sum_seconds": sum(per_ti),
                "max_seconds": max(per_ti, default=0.0),
                "running": running,
            }
        )
    return stages


def job_summary(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of the emulator's jobs by status, and their wall times (submit → end) and records."""
    statuses: dict[str, int] = {}
    durations = []
    for job in jobs:
        statuses[job["status"]] = statuses.get(job["status"], 0) + 1
        history = job.get("history") or []
        if len(history) >= 2:
            first = datetime.fromisoformat(history[0]["time"])
            last = datetime.fromisoformat(history[-1]["time"])
            durations.append((last - first).total_seconds())
    return {
        "jobs": len(jobs),
        "statuses": statuses,
        "records": sum(int(job.get("totalRecordCount") or 0) for job in jobs),
        "mean_job_seconds": sum(durations) / len(durations) if durations else None,
        "max_job_seconds": max(durations, default=None),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument(
        "--pipeline",
        choices=("call-center", "small"),
        default="call-center",
        help="the shipped call-center DAG, or a small pipeline folder written at run time",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=48, help="the small pipeline's max_tokens (its replies' limit)"
    )
    parser.add_argument("--job-records", type=int, default=50_000, help="max_records_per_job")
    parser.add_argument("--concurrent-jobs", type=int, default=20, help="max_concurrent_jobs")
    parser.add_argument("--prepare-processes", type=int, default=2)
    parser.add_argument("--records-per-file", type=int, default=1_000_000, help="lines per source file")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=3600.0,
        help="emulated seconds per wall second (3600: a job's "
        "own phases take milliseconds; the emulator's work on its records takes seconds)",
    )
    parser.add_argument("--ds", default="2026-11-29")
    parser.add_argument("--dir", default="/tmp/bench-day", help="work directory (emptied first)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument(
        "--max-minutes", type=float, default=0, help="stop the DAG run after this long (0: never)"
    )
    parser.add_argument(
        "--min-free-gb",
        type=float,
        default=8.0,
        help="stop the run when the work directory's file system has less free space than this",
    )
    args = parser.parse_args()

    work = Path(args.dir)
    shutil.rmtree(work, ignore_errors=True)
    (work / "tmp").mkdir(parents=True)
    (work / "stack-tmp").mkdir()
    (work / "source").mkdir()
    os.environ["TMPDIR"] = str(work / "tmp")  # prepare's spool and parts, the workers' files
    make = small_pipeline if args.pipeline == "small" else call_center_pipeline
    pipeline = make(work, args)
    results: dict[str, Any] = {"args": vars(args), "began": time.time()}

    # The stack's temporary files (moto's large objects among them) under work/, not /tmp.
    from bedrock_batch_dev.demo import start_local_stack

    stack_env = {**os.environ, "TMPDIR": str(work / "stack-tmp")}
    stack_args = ("--max-concurrent-jobs", str(args.concurrent_jobs))
    with start_local_stack(args.time_scale, *stack_args, env=stack_env) as (process, s3_url, bedrock):
        os.environ.update(airflow_environment(work / "airflow", s3_url, bedrock, pipeline))
        from bedrock_batch_dev.emulator.stack import EmulatorAdmin, local_client

        s3 = local_client("s3", s3_url, REGION, ("testing", "testing"))
        admin = EmulatorAdmin.over_http(bedrock, timeout=120)
        sampler = Sampler(process.pid, work / "stack-tmp", work / "tmp")
        sampler.guard = lambda: check_limits(args, results, sampler, s3, admin, process, work, pipeline)
        sampler.start()
        print(f"local stack up (pid {process.pid}): S3 {s3_url}, Bedrock {bedrock}", flush=True)

        started = time.time()
        for bucket in (CALLS, STAGING, RESULTS):
            s3.create_bucket(Bucket=bucket)
        files, size = write_source(s3, args.ds, args.records, args.records_per_file, work / "source")
        results["source"] = {
            "files": files,
            "bytes": size,
            "seconds": time.time() - started,
            "start": started,
            "end": time.time(),
        }
        print(
            f"source: {args.records:,} records in {files} files, {size / 1e9:.2f} GB "
            f"({size / args.records:.0f} B a line), written in {results['source']['seconds']:.1f} s",
            flush=True,
        )

        import pendulum
        from airflow.utils import db

        started = time.time()
        db.resetdb()
        dag = load_dag(pipeline)
        results["task_ids"] = list(dag.task_ids)
        results["airflow_setup_seconds"] = time.time() - started
        print(f"Airflow DB and DAG ready in {results['airflow_setup_seconds']:.1f} s", flush=True)

        results["run"] = {"state": "running", "start": time.time()}
        run = dag.test(logical_date=pendulum.parse(args.ds))
        if results.get("stopped"):  # the guard stopped the stack under the run: it reports, then exits
            sampler.finished.wait()
            os._exit(3)
        results["run"].update(state=str(run.state), seconds=time.time() - results["run"]["start"])
        print(f"DAG run {run.state} in {results['run']['seconds']:.1f} s", flush=True)
        sampler.guard = None
        gather(results, s3, admin, args, pipeline)
        sampler.stop()
    finish(results, sampler, args, work)
    ok = results["run"]["state"] == "success" and (results["published"] or {}).get("rows") == args.records
    return 0 if ok else 1


def gather(
    results: dict[str, Any], s3: Any, admin: Any, args: argparse.Namespace, pipeline: BenchPipeline
) -> None:
    """The run's stage times, the emulator's jobs, the published day, the run report, what S3 holds, one
    staged record and the bytes a record takes staged and in the jobs' output."""
    ds = args.ds
    results["stages"] = stage_times(pipeline.dag_id, results.get("task_ids", []))
    results["emulator"] = {"created_jobs": admin.created_job_count(), **job_summary(admin.jobs())}

    from bedrock_batch.partitions import current_partition
    from bedrock_batch.storage import Storage

    published = current_partition(Storage(s3), f"s3://{RESULTS}/analytics/{pipeline.table}", ds)
    results["published"] = (
        {"rows": published.rows, "files": len(published.files), "version": published.version}
        if published
        else None
    )
    try:
        key = f"analytics/reports/ds={ds}/run_report.json"
        report = json.loads(s3.get_object(Bucket=RESULTS, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        report = {}
    names = (
        "input_records",
        "succeeded",
        "failed",
        "quarantined",
        "retried",
        "accounted",
        "estimated_cost_usd",
    )
    results["report"] = {name: report.get(name) for name in names}
    results["report"]["jobs"] = len(report.get("jobs") or [])
    results["s3"] = s3_inventory(s3)
    results["sample"] = sample_record(s3, pipeline, ds)
    results["bytes_per_record"] = bytes_per_record(results["s3"], args.records)


def finish(results: dict[str, Any], sampler: Sampler, args: argparse.Namespace, work: Path) -> None:
    """Add the peaks, print everything, write the JSON, empty the work directory."""
    results["total_seconds"] = time.time() - results["began"]
    results["peak_rss_mb"] = {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # The largest child waited for: the stack's process or one of prepare's workers.
        "largest_child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    results["sampled_peaks"] = sampler.peaks()
    for stage in results["stages"]:
        if stage["start"] is not None:
            stage["peaks"] = sampler.peaks(stage["start"] - 1, stage["end"] + 1)
    results["source"]["peaks"] = sampler.peaks(results["source"]["start"], results["source"]["end"])
    print_results(results)
    if args.json:
        results["samples"] = [dict(zip(("time", *SERIES), sample, strict=True)) for sample in sampler.samples]
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    shutil.rmtree(work, ignore_errors=True)


def check_limits(
    args: argparse.Namespace,
    results: dict[str, Any],
    sampler: Sampler,
    s3: Any,
    admin: Any,
    process: Any,
    work: Path,
    pipeline: BenchPipeline,
) -> None:
    """In the sampler's thread: past ``--max-minutes`` of DAG run, or below ``--min-free-gb`` of free disk,
    report the run as far as it went, stop the stack (which frees moto's files) and exit with status 3."""
    run = results.get("run")
    free_gb = shutil.disk_usage(work).free / 1e9
    if run is not None and args.max_minutes and time.time() - run["start"] > args.max_minutes * 60:
        why = f"the DAG run passed --max-minutes {args.max_minutes:g}"
    elif free_gb < args.min_free_gb:
        why = f"{free_gb:.1f} GB free on the file system, under --min-free-gb {args.min_free_gb:g}"
    else:
        return
    print(f"\nSTOPPED: {why}", flush=True)
    results["stopped"] = why
    if run is not None:
        run.update(state="stopped", seconds=time.time() - run["start"])
    else:
        results["run"] = {"state": "stopped", "seconds": 0.0}
    results.setdefault("source", {"files": 0, "seconds": 0.0, "start": 0.0, "end": 0.0})
    sampler.guard = None
    try:
        gather(results, s3, admin, args, pipeline)
    except Exception as exc:  # what is missing is reported as missing
        print(f"gathering the partial results failed: {exc!r}", flush=True)
        results.setdefault("stages", [])
        results.setdefault("emulator", {"created_jobs": None, **job_summary([])})
        results.setdefault("published", None)
        results.setdefault("report", {})
        results.setdefault("s3", {})
        results.setdefault("sample", {})
        results.setdefault("bytes_per_record", {})
    try:
        process.terminate()
        process.wait(timeout=60)
        finish(results, sampler, args, work)
    finally:
        sampler.finished.set()
        os._exit(3)


def print_results(results: dict[str, Any]) -> None:
    args = results["args"]
    if results.get("stopped"):
        print(f"\nRUN STOPPED by the benchmark: {results['stopped']} (a running task ends at the stop)")
    print(
        f"\n{args['pipeline']} pipeline: {args['records']:,} records, jobs of {args['job_records']:,}, "
        f"quota {args['concurrent_jobs']}, "
        f"{args['prepare_processes']} prepare processes, time scale {args['time_scale']:g}\n"
    )
    print(f"{'stage':<17}{'tasks':>6}{'wall s':>10}{'sum s':>10}{'max s':>9}  states")
    source = results["source"]
    print(f"{'(write source)':<17}{source['files']:>6}{source['seconds']:>10.1f}")
    for stage in results["stages"]:
        seconds = f"{stage['seconds']:.1f}" if stage["seconds"] is not None else "-"
        states = ", ".join(f"{k} {v}" for k, v in sorted(stage["states"].items()))
        print(
            f"{stage['task']:<17}{stage['count']:>6}{seconds:>10}{stage['sum_seconds']:>10.1f}"
            f"{stage['max_seconds']:>9.1f}  {states}"
        )
    print(f"{'DAG run (dag.test)':<23}{results['run']['seconds']:>10.1f}  {results['run']['state']}")
    print(f"{'total':<23}{results['total_seconds']:>10.1f}  (stack start to stop)")
    emulator = results["emulator"]
    print(
        f"\njobs created: {emulator['created_jobs']} ({emulator['statuses']}), "
        f"{emulator['records']:,} records, mean "
        f"{emulator['mean_job_seconds'] or 0:.1f} s a job (submit to end), longest "
        f"{emulator['max_job_seconds'] or 0:.1f} s"
    )
    published = results["published"]
    print(
        f"published rows: {published['rows']:,} in {published['files']} files"
        if published
        else "not published"
    )
    print(f"run report: {results['report']}")
    sample = results.get("sample") or {}
    if sample.get("staged"):
        print(
            f"a staged record ({len(sample['staged'].encode()) + 1} B with its newline): {sample['staged']}"
        )
    if sample.get("reply"):
        print(f"the reply to a record (free text unless the pipeline has a reply schema): {sample['reply']}")
    per_record = results.get("bytes_per_record") or {}
    if per_record:
        print(
            f"bytes a record takes: staged input {per_record['input']:,.0f} B, "
            f"jobs' output {per_record['output']:,.0f} B"
        )
    peak = results["peak_rss_mb"]
    sampled = results["sampled_peaks"]
    print(
        f"\npeak RSS: this process {peak['self']:,.0f} MB (getrusage); largest waited-for child "
        f"{peak['largest_child']:,.0f} MB; sampled every second: stack process (moto + emulator) "
        f"{sampled.get('stack_mb', 0):,.0f} MB, prepare's workers together "
        f"{sampled.get('workers_mb', 0):,.0f} MB; moto's object files "
        f"{sampled.get('stack_files_gb', 0):.1f} GB, this process's temporary files "
        f"{sampled.get('local_tmp_gb', 0):.1f} GB, file system use +{sampled.get('fs_gb', 0):.1f} GB"
    )
    print("sampled peaks while each stage ran (RSS MB; GB of moto's object files, local temporary files):")
    for stage in [{"task": "(write source)", "peaks": results["source"]["peaks"]}, *results["stages"]]:
        if stage.get("peaks"):
            p = stage["peaks"]
            print(
                f"  {stage['task']:<17} self {p['self_mb']:>7,.0f}  stack {p['stack_mb']:>7,.0f}  "
                f"workers {p['workers_mb']:>6,.0f}  moto files {p['stack_files_gb']:>6.2f}  "
                f"local tmp {p['local_tmp_gb']:>6.2f}"
            )
    print("S3 at the end (objects, GB):")
    for where, entry in sorted(results["s3"].items()):
        print(f"  {where:<60}{entry['objects']:>8}{entry['gb']:>9.2f}")
    print(
        "\nNote: dag.test() runs every task in this one process, one after another (a deferred task's "
        "trigger runs inline until it fires, so the jobs run one at a time, never 20 at once): this "
        "process's peak is the largest of all tasks plus Airflow, not a task's own figure "
        "(bench_collect.py and bench_prepare.py measure those)."
    )


if __name__ == "__main__":
    sys.exit(main())
