"""Benchmark of prepare + plan + write shards, in one process and in parallel processes, against the I/O
floor, a raw byte copy and a naive pandas version.

Usage: python benchmarks/bench_prepare.py [--records 100000] [--repeat 3] [--dir DIR] [--pandas-max 200000]
       [--processes N]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

MODEL_ID = "us.anthropic.claude-3-haiku-20240307-v1:0"
COPY_CHUNK = 1 << 20

AGENT_LINES = (
    "Thank you for calling Northwind Mobile, my name is {name}. How can I help you today?",
    "I'm sorry to hear that. Let me pull up your account, could you confirm the billing address?",
    'I can see the charge of {amount} dollars on the {day} statement, that was the "premium roaming" add-on.',
    "I've opened ticket {ticket} for our network team and they'll call you back within 48 hours.",
    "Let me place you on a brief hold while I check with the billing department.",
    "I've applied a one-time credit of {amount} dollars; it will show on your next bill.",
    "Is there anything else I can help you with today?",
    "For security, can you verify the last four digits of the card on file?",
    "I understand your frustration, and I'll make sure this gets resolved.",
    "Your router will restart now; the lights should turn solid green in about two minutes.",
)
CUSTOMER_LINES = (
    "Hi, I was charged twice for my plan this month and I'd like that fixed.",
    "Sure, it's {number} Elm Street, apartment {apt}.",
    "I never asked for that add-on, nobody told me about it.",
    "The internet keeps dropping every evening around {hour} o'clock, it's been a week now.",
    "Okay, that's fine, I can wait.",
    "Honestly this is the third time I'm calling about the same thing.",
    "That works, thank you for your help.",
    "No, that's everything. Have a good day.",
    "Can you tell me why the bill went up by {amount} dollars?",
    "I'd like to cancel if this isn't fixed by {day}, to be honest.",
)
NAMES = ("Priya", "José", "Dana", "Mehmet", "Aoife", "Chen", "Lukas", "Amélie")
DAYS = ("Monday", "March", "April", "Friday", "June")


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        name=rng.choice(NAMES),
        amount=rng.randint(5, 180),
        day=rng.choice(DAYS),
        ticket=f"INC{rng.randint(100000, 999999)}",
        number=rng.randint(1, 999),
        apt=rng.randint(1, 40),
        hour=rng.randint(5, 11),
    )


def generate_input(path: Path, records: int, seed: int = 42) -> None:
    """Write ``records`` synthetic call-center transcripts (about 3.5 KB each) as JSONL."""
    rng = random.Random(seed)
    # A pool of filled-in turns keeps generation fast; transcripts still differ in length and order.
    agent_pool = [_fill(rng.choice(AGENT_LINES), rng) for _ in range(500)]
    customer_pool = [_fill(rng.choice(CUSTOMER_LINES), rng) for _ in range(500)]
    partial = path.with_suffix(".partial")
    with partial.open("wb", buffering=COPY_CHUNK) as out:
        for i in range(records):
            turns = rng.randint(20, 52)
            agent = rng.choices(agent_pool, k=turns // 2 + 1)
            customer = rng.choices(customer_pool, k=turns // 2 + 1)
            lines = [
                f"Agent: {agent[t // 2]}" if t % 2 == 0 else f"Customer: {customer[t // 2]}"
                for t in range(turns)
            ]
            row = {
                "call_id": f"call-{i:09d}",
                "agent_id": f"agent-{rng.randint(1, 400):03d}",
                "queue": rng.choice(("billing", "tech-support", "retention")),
                "transcript": "\n".join(lines),
            }
            out.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
    partial.replace(path)


# -- variants, each run in its own process so that peak RSS is its own ------------------------------------


def variant_copy(source: Path, work: Path) -> dict[str, Any]:
    with source.open("rb") as src, (work / "copy.jsonl").open("wb") as dst:
        shutil.copyfileobj(src, dst, COPY_CHUNK)
    return {}


def variant_io_floor(source: Path, work: Path) -> dict[str, Any]:
    """The pipeline's unavoidable I/O without any per-record work: read the input, write a spool of the
    pipeline's size (records repeat the system prompt, so it is larger than the input), copy and hash it."""
    from bedrock_batch.storage import Storage

    spool_bytes = int(os.environ["BENCH_SPOOL_BYTES"])
    spool = work / "spool.jsonl"
    written = 0
    with spool.open("wb") as out:
        while written < spool_bytes:
            with source.open("rb") as src:
                while written < spool_bytes and (chunk := src.read(min(COPY_CHUNK, spool_bytes - written))):
                    out.write(chunk)
                    written += len(chunk)
    Storage().write_range(spool, 0, spool_bytes, str(work / "shard-0001" / "part-0001.jsonl"))
    return {}


def _prepare_plan_write(source: Path, work: Path, prepare_step: Callable[..., Any]) -> dict[str, Any]:
    """Prepare (``prepare_step(reader, settings, directory)`` gives the result and spool), plan, write;
    each timed."""
    from bedrock_batch.config import QuotaConfig
    from bedrock_batch.prepare import PrepareSettings
    from bedrock_batch.prompts import load_template
    from bedrock_batch.sources import SourceReader, SourceSpec
    from bedrock_batch.split import plan_shards, write_shards

    quotas = QuotaConfig()
    spec = SourceSpec(
        str(source),
        "jsonl",
        id_column="call_id",
        text_column="transcript",
        passthrough_columns=("agent_id", "queue"),
    )
    reader = SourceReader(spec, max_object_bytes=quotas.max_record_bytes)
    settings = PrepareSettings(
        # Loaded before the clock: finding include/ imports Airflow, seconds on a busy machine.
        template=load_template("call_center_summary", "v1"),
        model_id=MODEL_ID,
        quotas=quotas,
        passthrough_types=reader.passthrough_types(),
    )
    stages = {}
    started = time.perf_counter()
    result, spool = prepare_step(reader, settings, work / "prepare")
    stages["prepare_s"] = time.perf_counter() - started
    started = time.perf_counter()
    plan = plan_shards(result.load_sizes(), quotas)
    stages["plan_s"] = time.perf_counter() - started
    started = time.perf_counter()
    manifest = write_shards(spool or result.spool_path, plan, str(work / "shards"))
    stages["write_s"] = time.perf_counter() - started
    return {
        **stages,
        "records": result.records,
        "spool_bytes": result.total_bytes,
        "shards": len(manifest.shards),
        "fingerprints": [shard.fingerprint for shard in manifest.shards],
    }


def variant_pipeline(source: Path, work: Path) -> dict[str, Any]:
    from bedrock_batch.prepare import prepare

    def one_process(reader: Any, settings: Any, directory: Path) -> tuple[Any, None]:
        result = prepare(
            reader,
            directory,
            template=settings.template,
            model_id=settings.model_id,
            quotas=settings.quotas,
            passthrough_types=settings.passthrough_types,
        )
        return result, None

    return _prepare_plan_write(source, work, one_process)


def variant_parallel(source: Path, work: Path) -> dict[str, Any]:
    """The pipeline variant with prepare in ``BENCH_PROCESSES`` worker processes (merged, identical plan)."""
    from bedrock_batch.prepare_parallel import prepare_source_parallel
    from bedrock_batch.storage import Storage

    def parallel(reader: Any, settings: Any, directory: Path) -> Any:
        processes = int(os.environ["BENCH_PROCESSES"])
        return prepare_source_parallel(reader, Storage().recipe(), directory, settings, processes=processes)

    return _prepare_plan_write(source, work, parallel)


def variant_pandas(source: Path, work: Path) -> dict[str, Any]:
    import pandas as pd

    from bedrock_batch.models import InferenceParams, family_for
    from bedrock_batch.prompts import load_template
    from bedrock_batch.record_ids import record_id_for

    template = load_template("call_center_summary", "v1")
    family = family_for(MODEL_ID)
    params = InferenceParams()
    frame = pd.read_json(source, lines=True, dtype=False)
    frame["recordId"] = frame["call_id"].map(record_id_for)
    frame["modelInput"] = frame["transcript"].map(
        lambda text: family.build_request(*template.render({"transcript": text}), params)
    )
    frame[["recordId", "modelInput"]].to_json(work / "pandas.jsonl", orient="records", lines=True)
    return {}


VARIANTS = {
    "copy": variant_copy,
    "pipeline": variant_pipeline,
    "parallel": variant_parallel,
    "io_floor": variant_io_floor,
    "pandas": variant_pandas,
}


# Imported before the clock starts: the variants time work, not interpreter start-up.
VARIANT_MODULES = {
    "copy": (),
    "pipeline": ("bedrock_batch.prepare", "bedrock_batch.split", "bedrock_batch.sources"),
    "parallel": ("bedrock_batch.prepare_parallel", "bedrock_batch.split", "bedrock_batch.sources"),
    "io_floor": ("bedrock_batch.storage",),
    "pandas": ("pandas", "bedrock_batch.models", "bedrock_batch.prompts", "bedrock_batch.record_ids"),
}


def run_variant(name: str, source: Path, work: Path) -> None:
    """Child process: run one variant, print its timing and peak RSS as JSON."""
    for module in VARIANT_MODULES[name]:
        importlib.import_module(module)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    extra = VARIANTS[name](source, work)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    # The largest worker process of the parallel variant (the others start no process of their own).
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {"variant": name, "seconds": seconds, "peak_rss_mb": peak_mb, "worker_rss_mb": worker_mb, **extra}
        )
    )


def measure(
    name: str, source: Path, work: Path, repeat: int, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Best time of ``repeat`` fresh processes (the machine is shared); peak RSS is the largest seen."""
    runs = []
    for _ in range(repeat):
        shutil.rmtree(work, ignore_errors=True)
        os.sync()  # earlier runs' dirty pages must not be written back on this one's time
        output = subprocess.run(
            [sys.executable, __file__, "--variant", name, "--input", str(source), "--work", str(work)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
        ).stdout
        runs.append(json.loads(output.strip().splitlines()[-1]))
    shutil.rmtree(work, ignore_errors=True)
    best = min(runs, key=lambda run: run["seconds"])
    return {
        **best,
        "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
        "worker_rss_mb": max(run["worker_rss_mb"] for run in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant; the best time counts")
    parser.add_argument("--dir", type=Path, default=Path(".local/bench-prepare"))
    parser.add_argument(
        "--pandas-max",
        type=int,
        default=200_000,
        help="skip the pandas variant above this many records (it holds everything in memory)",
    )
    parser.add_argument(
        "--processes", type=int, default=0, help="processes of the parallel variant (0: the CPUs available)"
    )
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        run_variant(args.variant, args.input, args.work)
        return

    args.dir.mkdir(parents=True, exist_ok=True)
    source = args.dir / f"calls-{args.records}.jsonl"
    if not source.exists():
        print(f"generating {args.records:,} transcripts into {source} ...", flush=True)
        generate_input(source, args.records)
    size_mb = source.stat().st_size / 1e6
    print(
        f"input: {args.records:,} records, {size_mb:,.0f} MB ({size_mb * 1e6 / args.records:,.0f} B/record)"
    )

    from bedrock_batch.prepare_parallel import available_cpus

    processes = args.processes or available_cpus()
    results = {
        name: measure(name, source, args.dir / f"work-{name}", args.repeat) for name in ("copy", "pipeline")
    }
    processes_env = {"BENCH_PROCESSES": str(processes)}
    results["parallel"] = measure("parallel", source, args.dir / "work-parallel", args.repeat, processes_env)
    spool_bytes = {"BENCH_SPOOL_BYTES": str(results["pipeline"]["spool_bytes"])}
    results["io_floor"] = measure("io_floor", source, args.dir / "work-io_floor", args.repeat, spool_bytes)
    if args.records <= args.pandas_max:
        results["pandas"] = measure("pandas", source, args.dir / "work-pandas", 1)
    print(f"{'variant':<10}{'seconds':>9}{'records/s':>12}{'MB/s':>9}{'peak RSS MB':>13}{'per worker':>12}")
    for name, r in results.items():
        worker = f"{r['worker_rss_mb']:>12,.0f}" if name == "parallel" else f"{'':>12}"
        print(
            f"{name:<10}{r['seconds']:>9.2f}{args.records / r['seconds']:>12,.0f}"
            f"{size_mb / r['seconds']:>9,.0f}{r['peak_rss_mb']:>13,.0f}{worker}"
        )
    pipeline, parallel = results["pipeline"], results["parallel"]
    for name, r in (("pipeline", pipeline), ("parallel", parallel)):
        print(
            f"{name} stages: prepare {r['prepare_s']:.2f} s, plan {r['plan_s']:.2f} s, "
            f"write {r['write_s']:.2f} s; {r['shards']} shards, {r['spool_bytes'] / 1e6:,.0f} MB of records"
        )
    if parallel["fingerprints"] != pipeline["fingerprints"]:
        raise SystemExit("the parallel prepare planned other shards than one process: a defect")
    print(f"parallel: {processes} processes (of {os.cpu_count()} CPUs); same shards and fingerprints: yes")
    floor_s = results["io_floor"]["seconds"]
    one = pipeline["prepare_s"] + pipeline["plan_s"]
    many = parallel["prepare_s"] + parallel["plan_s"]
    print(
        f"prepare+plan vs I/O floor: one process {floor_s / one:.2f}x, "
        f"parallel {floor_s / many:.2f}x (target >= 0.5x)"
    )
    print(f"prepare+plan, parallel vs one process: {one / many:.2f}x (target >= 1.6x)")
    print(
        f"prepare+plan+write vs I/O floor: one process {floor_s / pipeline['seconds']:.2f}x, "
        f"parallel {floor_s / parallel['seconds']:.2f}x; parallel vs one process "
        f"{pipeline['seconds'] / parallel['seconds']:.2f}x"
    )
    copy_s = results["copy"]["seconds"]
    print(f"prepare+plan+write vs raw copy: {copy_s / pipeline['seconds']:.2f}x (target >= 0.5x)")
    print(f"prepare+plan vs raw copy: {copy_s / one:.2f}x")
    print(f"I/O floor vs raw copy: {copy_s / floor_s:.2f}x (the best any code could do)")
    if "pandas" in results:
        speedup = results["pandas"]["seconds"] / pipeline["seconds"]
        print(f"prepare+plan+write vs pandas: {speedup:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
