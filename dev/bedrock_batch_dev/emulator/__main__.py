"""Command line of the local stack: ``python -m bedrock_batch_dev.emulator --port 5001 --s3-port 5000``.

Runs moto's S3 and the emulator in the foreground until Ctrl-C; ``--configure URL`` changes a running one.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import orjson

from bedrock_batch_dev.emulator.faults import FaultConfig
from bedrock_batch_dev.emulator.jobs import ServiceLimits
from bedrock_batch_dev.emulator.stack import EmulatorAdmin, EmulatorAdminError, LocalStack

log = logging.getLogger("bedrock_batch_dev.emulator")

# CLI flag (dest) → FaultConfig field; every fault is also settable at runtime through the admin endpoint.
FAULT_FLAGS = (
    "record_error_rate",
    "record_error_codes",
    "invalid_reply_rate",
    "job_failure_rate",
    "fail_jobs_matching",
    "partial_rate",
    "partial_jobs_matching",
    "partial_fraction",
    "expire_rate",
    "expire_jobs_matching",
    "throttle_rate",
    "runtime_throttle_rate",
    "internal_error_rate",
    "access_denied_operations",
    "slow_operations",
    "slow_seconds",
    "seed",
)
LIMIT_FLAGS = (
    "min_records_per_job",
    "max_records_per_job",
    "max_records_per_file",
    "max_running_jobs",
    "default_timeout_hours",
    "name_in_use_error",
)


def _csv(convert: Any) -> Any:
    def parse(text: str) -> list[Any]:
        return [convert(part.strip()) for part in text.split(",") if part.strip()]

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bedrock_batch_dev.emulator",
        description="Local Amazon Bedrock batch inference: moto S3 plus a wire-compatible Bedrock emulator.",
    )
    where = parser.add_argument_group("endpoints")
    where.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    where.add_argument(
        "--port", type=int, default=5001, help="Bedrock control plane + runtime port (0: any free)"
    )
    where.add_argument("--s3-port", type=int, default=5000, help="moto S3 port (0: any free)")
    where.add_argument("--s3-endpoint-url", help="use this S3 instead of starting moto")
    where.add_argument("--region", default="us-east-1")
    where.add_argument("--account-id", default="123456789012")
    where.add_argument(
        "--configure",
        metavar="URL",
        help="do not start anything: apply the flags below to the emulator running at URL and exit",
    )

    service = parser.add_argument_group("service")
    service.add_argument("--time-scale", type=float, help="service seconds per wall second (default 1)")
    service.add_argument(
        "--max-concurrent-jobs", type=int, help="per-model quota of active jobs (default 20)"
    )
    service.add_argument(
        "--max-running-jobs", type=int, help="InProgress jobs at once; others wait Scheduled"
    )
    service.add_argument("--min-records-per-job", type=int, help="default 100")
    service.add_argument("--max-records-per-job", type=int, help="default 50000")
    service.add_argument("--max-records-per-file", type=int, help="default 50000")
    service.add_argument(
        "--default-timeout-hours", type=int, help="timeout of jobs that set none (default 168)"
    )
    service.add_argument(
        "--name-in-use-error",
        choices=("ValidationException", "ConflictException"),
        help="error for a used job name",
    )

    faults = parser.add_argument_group("faults")
    faults.add_argument("--record-error-rate", type=float, help="share of records written as error lines")
    faults.add_argument("--record-error-codes", type=_csv(int), help="codes of those lines, e.g. 400,429,500")
    faults.add_argument(
        "--invalid-reply-rate",
        type=float,
        help="share of replies to a declared schema that break it (wrong enum, out of range, missing field)",
    )
    faults.add_argument("--job-failure-rate", type=float, help="share of jobs that end Failed")
    faults.add_argument("--fail-jobs-matching", metavar="REGEX", help="jobs whose name matches end Failed")
    faults.add_argument("--partial-rate", type=float, help="share of jobs that end PartiallyCompleted")
    faults.add_argument("--partial-jobs-matching", metavar="REGEX")
    faults.add_argument("--partial-fraction", type=float, help="share of records a partial job processes")
    faults.add_argument("--expire-rate", type=float, help="share of jobs that never start and end Expired")
    faults.add_argument("--expire-jobs-matching", metavar="REGEX")
    faults.add_argument("--throttle-rate", type=float, help="share of control-plane calls throttled (429)")
    faults.add_argument(
        "--runtime-throttle-rate", type=float, help="share of InvokeModel/Converse calls throttled"
    )
    faults.add_argument("--internal-error-rate", type=float, help="share of API calls answered with a 500")
    faults.add_argument(
        "--access-denied-operations", type=_csv(str), metavar="OP,OP", help="operations denied (403)"
    )
    faults.add_argument(
        "--slow-operations", type=_csv(str), metavar="OP,OP", help="operations answered after --slow-seconds"
    )
    faults.add_argument("--slow-seconds", type=float, help="how long the slow operations take (wall time)")
    faults.add_argument("--seed", type=int, help="seed of every fault decision (default 0)")

    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def _given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _configure_running(args: argparse.Namespace) -> int:
    admin = EmulatorAdmin.over_http(args.configure)
    settings = _given(args, (*LIMIT_FLAGS, "max_concurrent_jobs"))
    if args.time_scale is not None:
        settings["time_scale"] = args.time_scale
    try:
        if settings:
            admin.configure(**settings)
        faults = _given(args, FAULT_FLAGS)
        if faults:
            admin.set_faults(**faults)
        print(orjson.dumps(admin.config(), option=orjson.OPT_INDENT_2).decode())
    except (EmulatorAdminError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # moto's server logs every S3 request; keep the output to one line per job state change.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if args.configure:
        return _configure_running(args)

    try:
        faults = FaultConfig().replace(**_given(args, FAULT_FLAGS))
        limits = dataclasses.replace(ServiceLimits(), **_given(args, (*LIMIT_FLAGS, "max_concurrent_jobs")))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stack = LocalStack(
        host=args.host,
        s3_port=args.s3_port,
        bedrock_port=args.port,
        s3_endpoint_url=args.s3_endpoint_url,
        region=args.region,
        time_scale=1.0 if args.time_scale is None else args.time_scale,
        max_concurrent_jobs=limits.max_concurrent_jobs,
        faults=faults,
        limits=limits,
        account_id=args.account_id,
    )
    stopping = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        stack.start()
    except (OSError, ValueError) as exc:  # a port in use, a time scale or limit out of range
        print(f"error: cannot start the local stack: {exc}", file=sys.stderr)
        return 1
    try:
        # One parseable line so scripts (and tests) can find the endpoints when ports are chosen freely.
        print(
            f"local stack ready: s3={stack.s3_endpoint_url} bedrock={stack.bedrock_endpoint_url} "
            f"bedrock-runtime={stack.bedrock_runtime_endpoint_url} "
            f"admin={stack.bedrock_endpoint_url}/_emulator",
            flush=True,
        )
        log.info("time scale %s, press Ctrl-C to stop", stack.admin.config()["time_scale"])
        while not stopping.wait(0.5):
            pass
    finally:
        log.info("stopping the local stack")
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
