"""Command line of the sample-data generator: ``python -m bedrock_batch_dev.sample_data --output DIR``.

Writes synthetic calls (the default), product reviews or support tickets in one or more formats to a
directory or an s3:// prefix (any S3 endpoint).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bedrock_batch_dev.sample_data.calls import MAX_BYTES, MIN_BYTES, generate_calls
from bedrock_batch_dev.sample_data.reviews import generate_reviews
from bedrock_batch_dev.sample_data.tickets import generate_tickets
from bedrock_batch_dev.sample_data.writers import (
    FORMATS,
    TABULAR_FORMATS,
    write_calls,
    write_reviews,
    write_tickets,
)

KINDS = ("calls", "reviews", "tickets")
# Each kind's format when --format is not given: the one its pipeline reads.
DEFAULT_FORMATS = {"calls": "jsonl", "reviews": "parquet", "tickets": "csv"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bedrock_batch_dev.sample_data",
        description="Write synthetic call-center transcripts (billing, technical support, cancellation, "
        "complaint, order status), product reviews or support tickets in the source formats the library "
        "reads.",
    )
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="calls",
        help="calls (default); reviews for classification; tickets for extraction (JSONL, CSV, Parquet only)",
    )
    parser.add_argument("--count", type=int, default=200, help="number of records (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same records (default 0)")
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=(*FORMATS, "all"),
        help="repeat for several; with more than one, each goes to OUTPUT/<format>/ (default jsonl for "
        "calls, parquet for reviews, csv for tickets)",
    )
    parser.add_argument("--output", required=True, help="directory or s3://bucket/prefix")
    parser.add_argument(
        "--rows-per-file", type=int, help="split JSONL/CSV/Parquet into files of this many rows"
    )
    parser.add_argument("--min-bytes", type=int, help="smallest transcript (calls only; default 1 KiB)")
    parser.add_argument("--max-bytes", type=int, help="largest transcript (calls only; default 20 KiB)")
    parser.add_argument("--endpoint-url", help="S3 endpoint, e.g. http://127.0.0.1:5000 for the local stack")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--create-bucket", action="store_true", help="create the S3 bucket if it is missing")
    return parser


def _s3_client(args: argparse.Namespace) -> object:
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.client("s3", endpoint_url=args.endpoint_url, region_name=args.region)
    if args.create_bucket:
        bucket = args.output.removeprefix("s3://").split("/", 1)[0]
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError:
            client.create_bucket(Bucket=bucket)
    return client


def _formats(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    allowed = FORMATS if args.kind == "calls" else TABULAR_FORMATS
    formats = list(dict.fromkeys(args.formats or [DEFAULT_FORMATS[args.kind]]))
    if "all" in formats:
        return list(allowed)
    if wrong := [fmt for fmt in formats if fmt not in allowed]:
        parser.error(f"--kind {args.kind} is written as {', '.join(allowed)}, not {', '.join(wrong)}")
    return formats


def _write(args: argparse.Namespace, fmt: str, destination: str, s3_client: object) -> list[str]:
    if args.kind == "reviews":
        reviews = generate_reviews(args.count, args.seed)
        return write_reviews(reviews, fmt, destination, s3_client=s3_client, rows_per_file=args.rows_per_file)
    if args.kind == "tickets":
        tickets = generate_tickets(args.count, args.seed)
        return write_tickets(tickets, fmt, destination, s3_client=s3_client, rows_per_file=args.rows_per_file)
    min_bytes = MIN_BYTES if args.min_bytes is None else args.min_bytes
    max_bytes = MAX_BYTES if args.max_bytes is None else args.max_bytes
    calls = generate_calls(args.count, args.seed, min_bytes=min_bytes, max_bytes=max_bytes)
    return write_calls(calls, fmt, destination, s3_client=s3_client, rows_per_file=args.rows_per_file)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.kind != "calls" and (args.min_bytes is not None or args.max_bytes is not None):
        parser.error("--min-bytes and --max-bytes apply to --kind calls only")
    formats = _formats(parser, args)
    s3_client = _s3_client(args) if args.output.startswith("s3://") else None
    for fmt in formats:
        destination = args.output if len(formats) == 1 else f"{args.output.rstrip('/')}/{fmt}"
        try:
            written = _write(args, fmt, destination, s3_client)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{fmt}: {args.count} {args.kind} in {len(written)} file(s) under {destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
