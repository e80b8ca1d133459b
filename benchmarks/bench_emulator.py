"""Benchmark of the Bedrock emulator: how fast one 50,000-record job of call transcripts is processed.

Prints records/s for the InProgress phase (the worker) and end to end (submit to Completed, incl. validation).
"""

from __future__ import annotations

import argparse
import logging
import time
from datetime import datetime

import orjson

from bedrock_batch_dev.emulator import LocalStack
from bedrock_batch_dev.sample_data import generate_calls

PROMPT = (
    'Read the call transcript and answer with a JSON object with keys "summary", "sentiment", "topic", '
    '"resolution" and "action_items".\n\nTranscript:\n'
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=5, help="input files the records are split into")
    parser.add_argument(
        "--distinct-calls", type=int, default=2_000, help="transcripts generated, then reused"
    )
    parser.add_argument("--max-bytes", type=int, default=20_480, help="largest transcript")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    calls = [c.transcript for c in generate_calls(args.distinct_calls, seed=1, max_bytes=args.max_bytes)]
    per_file = -(-args.records // args.files)
    with LocalStack(time_scale=10**6) as stack:
        s3, bedrock = stack.client("s3"), stack.client("bedrock")
        s3.create_bucket(Bucket="bench-in")
        s3.create_bucket(Bucket="bench-out")
        input_bytes = 0
        for part in range(args.files):
            lines = []
            for i in range(part * per_file, min((part + 1) * per_file, args.records)):
                body = {
                    "anthropic_version": "bedrock-2023-05-31",
                    "max_tokens": 1000,
                    "messages": [
                        {
                            "role": "user",
                            "content": [{"type": "text", "text": PROMPT + calls[i % len(calls)]}],
                        }
                    ],
                }
                lines.append(orjson.dumps({"recordId": f"R{i:010d}", "modelInput": body}))
            data = b"\n".join(lines) + b"\n"
            input_bytes += len(data)
            s3.put_object(Bucket="bench-in", Key=f"job/part-{part + 1:04d}.jsonl", Body=data)

        started = time.perf_counter()
        arn = bedrock.create_model_invocation_job(
            jobName="bench-50k",
            roleArn="arn:aws:iam::123456789012:role/BedrockBatchRole",
            modelId="anthropic.claude-3-haiku-20240307-v1:0",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://bench-in/job/"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bench-out/out/"}},
        )["jobArn"]
        while (job := bedrock.get_model_invocation_job(jobIdentifier=arn))["status"] not in (
            "Completed",
            "PartiallyCompleted",
            "Failed",
        ):
            time.sleep(0.25)
        end_to_end = time.perf_counter() - started

        history = {h["status"]: datetime.fromisoformat(h["time"]) for h in stack.admin.job(arn)["history"]}
        processing = (history[job["status"]] - history["InProgress"]).total_seconds()
        validating = (history["Scheduled"] - history["Validating"]).total_seconds()
        print(
            f"job {job['status']}: {job['processedRecordCount']:,} records, {input_bytes / 1e6:,.0f} MB input"
        )
        print(f"validation   {validating:6.2f} s")
        print(f"processing   {processing:6.2f} s  {job['processedRecordCount'] / processing:8,.0f} records/s")
        print(f"end to end   {end_to_end:6.2f} s  {job['processedRecordCount'] / end_to_end:8,.0f} records/s")


if __name__ == "__main__":
    main()
