"""Command line of the sample-data generator: ``python -m bedrock_batch_dev.sample_data --output DIR``.

Writes synthetic calls in one or more formats to a directory or an s3:// prefix (any S3 endpoint).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bedrock_batch_dev.sample_data.calls import MAX_BYTES, MIN_BYTES, generate_calls
from bedrock_batch_dev.sample_data.writers import FORMATS, write_calls


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bedrock_batch_dev.sample_data",
        description="Write synthetic call-center transcripts (billing, technical support, cancellation, "
        "complaint, order status) in the source formats the library reads.",
    )
    parser.add_argument("--count", type=int, default=200, help="number of calls (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same calls (default 0)")
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=(*FORMATS, "all"),
        help="repeat for several; with more than one, each goes to OUTPUT/<format>/ (default jsonl)",
    )
    parser.add_argument("--output", required=True, help="directory or s3://bucket/prefix")
    parser.add_argument(
        "--rows-per-file", type=int, help="split JSONL/CSV/Parquet into files of this many rows"
    )
    parser.add_argument(
        "--min-bytes", type=int, default=MIN_BYTES, help="smallest transcript (default 1 KiB)"
    )
    parser.add_argument(
        "--max-bytes", type=int, default=MAX_BYTES, help="largest transcript (default 20 KiB)"
    )
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    formats = list(dict.fromkeys(args.formats or ["jsonl"]))
    if "all" in formats:
        formats = list(FORMATS)
    s3_client = _s3_client(args) if args.output.startswith("s3://") else None
    for fmt in formats:
        destination = args.output if len(formats) == 1 else f"{args.output.rstrip('/')}/{fmt}"
        calls = generate_calls(args.count, args.seed, min_bytes=args.min_bytes, max_bytes=args.max_bytes)
        try:
            written = write_calls(
                calls, fmt, destination, s3_client=s3_client, rows_per_file=args.rows_per_file
            )
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{fmt}: {args.count} calls in {len(written)} file(s) under {destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
