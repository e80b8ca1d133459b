"""The Bedrock emulator driven only through unmodified boto3 clients over HTTP, as the library will use it.

Every operation and every error shape goes over the wire; the admin handle only sets faults and reads state.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import jsonschema
import orjson
import pytest
from botocore.exceptions import ClientError

from bedrock_batch_dev.emulator import EmulatorAdmin, EmulatorAdminError, LocalStack
from bedrock_batch_dev.sample_data import generate_calls

pytestmark = pytest.mark.integration

IN = "emulator-input"
OUT = "emulator-output"
ROLE = "arn:aws:iam::123456789012:role/BedrockBatchRole"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
LLAMA = "meta.llama3-1-8b-instruct-v1:0"
TITAN = "amazon.titan-text-express-v1"
TERMINAL = {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}
PROMPT = (
    'Read the call transcript and answer with a JSON object with keys "summary", "sentiment" '
    '(positive, neutral or negative), "topic" (one of: billing, technical support, cancellation, complaint, '
    'order status), "resolution" and "action_items".\n\nTranscript:\n'
)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(s3_port=0, bedrock_port=0, time_scale=1000.0) as local:
        s3 = local.client("s3")
        s3.create_bucket(Bucket=IN)
        s3.create_bucket(Bucket=OUT)
        yield local


@pytest.fixture(autouse=True)
def fresh(stack: LocalStack) -> Iterator[None]:
    stack.admin.reset()
    yield
    stack.admin.reset()


@pytest.fixture
def bedrock(stack: LocalStack) -> Any:
    return stack.client("bedrock", retries={"total_max_attempts": 1})


@pytest.fixture
def loose_bedrock(stack: LocalStack) -> Any:
    """A client that sends what it is given, so the server's own validation is what answers."""
    return stack.client("bedrock", retries={"total_max_attempts": 1}, parameter_validation=False)


@pytest.fixture
def runtime(stack: LocalStack) -> Any:
    return stack.client("bedrock-runtime", retries={"total_max_attempts": 1})


@pytest.fixture
def s3(stack: LocalStack) -> Any:
    return stack.client("s3")


# --- helpers ---------------------------------------------------------------------------------------------


def claude_body(text: str, max_tokens: int = 600) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }


def put_records(s3: Any, key: str, count: int, *, start: int = 0, body: Any = None) -> list[str]:
    """Write ``count`` batch records to s3://IN/key; returns their record ids in file order."""
    calls = list(generate_calls(min(count, 25), seed=11))
    ids = [f"REC{start + i:08d}" for i in range(count)]
    lines = [
        orjson.dumps(
            {
                "recordId": record_id,
                "modelInput": body(i) if body else claude_body(PROMPT + calls[i % len(calls)].transcript),
            }
        )
        for i, record_id in enumerate(ids)
    ]
    s3.put_object(Bucket=IN, Key=key, Body=b"\n".join(lines) + b"\n")
    return ids


def submit(
    bedrock: Any,
    name: str,
    input_key: str,
    *,
    model: str = CLAUDE,
    input_config: dict[str, Any] | None = None,
    output_config: dict[str, Any] | None = None,
    **extra: Any,
) -> str:
    """Create a job reading s3://IN/input_key, writing to s3://OUT/name/; ``*_config`` add or override."""
    return bedrock.create_model_invocation_job(
        jobName=name,
        roleArn=ROLE,
        modelId=model,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{IN}/{input_key}", **(input_config or {})}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{OUT}/{name}/", **(output_config or {})}},
        **extra,
    )["jobArn"]


def wait_for(bedrock: Any, arn: str, statuses: set[str] = TERMINAL, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job stayed {job['status']}, expected one of {sorted(statuses)}")
        time.sleep(0.01)


def output_keys(s3: Any, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=OUT, Prefix=prefix).get("Contents", []))


def read_lines(s3: Any, key: str) -> list[dict[str, Any]]:
    body = s3.get_object(Bucket=OUT, Key=key)["Body"].read()
    return [orjson.loads(line) for line in body.splitlines() if line.strip()]


def at_wall_speed(stack: LocalStack, validating_seconds: float = 0.01, **timings: float) -> None:
    """Run jobs in real time (time scale 1) with short phases, so a test can watch one while it runs."""
    stack.admin.configure(
        time_scale=1.0,
        submitted_seconds=0.01,
        validating_seconds=validating_seconds,
        scheduled_seconds=0.01,
        **timings,
    )


def job_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    error = excinfo.value.response["Error"]
    return error["Code"], error["Message"]


# --- lifecycle and output ----------------------------------------------------------------------------------


class TestCompletedJob:
    def test_150_records_complete_with_documented_layout_and_counts(self, stack, bedrock, s3):
        ids = put_records(s3, "complete/part-0001.jsonl", 150)
        arn = submit(bedrock, "complete-150", "complete/")
        assert arn.startswith("arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/")
        assert len(job_id(arn)) == 12

        job = wait_for(bedrock, arn)

        assert job["status"] == "Completed"
        history = stack.admin.job(arn)["history"]
        assert [h["status"] for h in history] == [
            "Submitted",
            "Validating",
            "Scheduled",
            "InProgress",
            "Completed",
        ]
        assert [h["totalRecordCount"] for h in history[:2]] == [0, 0]
        prefix = f"complete-150/{job_id(arn)}/"
        assert output_keys(s3, "complete-150/") == [
            f"{prefix}manifest.json.out",
            f"{prefix}part-0001.jsonl.out",
        ]
        lines = read_lines(s3, f"{prefix}part-0001.jsonl.out")
        assert sorted(line["recordId"] for line in lines) == ids
        assert [line["recordId"] for line in lines] != ids, "output order must differ from input order"
        assert all(set(line) == {"recordId", "modelInput", "modelOutput"} for line in lines)
        reply = lines[0]["modelOutput"]
        assert reply["type"] == "message"
        assert reply["stop_reason"] == "end_turn"
        assert set(orjson.loads(reply["content"][0]["text"])) == {
            "summary",
            "sentiment",
            "topic",
            "resolution",
            "action_items",
        }
        manifest = orjson.loads(s3.get_object(Bucket=OUT, Key=f"{prefix}manifest.json.out")["Body"].read())
        assert manifest == {
            "totalRecordCount": 150,
            "processedRecordCount": 150,
            "successRecordCount": 150,
            "errorRecordCount": 0,
            "inputTokenCount": sum(line["modelOutput"]["usage"]["input_tokens"] for line in lines),
            "outputTokenCount": sum(line["modelOutput"]["usage"]["output_tokens"] for line in lines),
        }
        assert (job["totalRecordCount"], job["processedRecordCount"]) == (150, 150)
        assert (job["successRecordCount"], job["errorRecordCount"]) == (150, 0)
        assert job["submitTime"] <= job["lastModifiedTime"] == job["endTime"]
        assert job["jobExpirationTime"] - job["submitTime"] == timedelta(hours=168)
        assert job["timeoutDurationInHours"] == 168
        assert "message" not in job

    def test_counts_are_zero_while_validating_and_grow_while_in_progress(self, stack, bedrock, s3):
        at_wall_speed(stack, validating_seconds=0.4, records_per_second=150, chunk_records=10)
        put_records(s3, "progress/part-0001.jsonl", 150)
        arn = submit(bedrock, "progress-150", "progress/part-0001.jsonl")
        samples = []
        while not samples or samples[-1][0] not in TERMINAL:
            job = bedrock.get_model_invocation_job(jobIdentifier=arn)
            samples.append((job["status"], job["totalRecordCount"], job["processedRecordCount"]))
            time.sleep(0.02)

        assert ("Validating", 0, 0) in samples
        running = [
            processed for status, total, processed in samples if status == "InProgress" and total == 150
        ]
        assert len({p for p in running if 0 < p < 150}) >= 3, samples
        assert running == sorted(running)
        assert samples[-1] == ("Completed", 150, 150)

    def test_prefix_input_gets_one_output_file_per_jsonl_file(self, bedrock, s3):
        first = put_records(s3, "multi/part-0001.jsonl", 60)
        second = put_records(s3, "multi/part-0002.jsonl", 90, start=60)
        s3.put_object(Bucket=IN, Key="multi/README.txt", Body=b"not input")
        arn = submit(bedrock, "multi-files", "multi/")

        job = wait_for(bedrock, arn)

        assert job["status"] == "Completed"
        assert job["totalRecordCount"] == 150
        prefix = f"multi-files/{job_id(arn)}/"
        assert output_keys(s3, "multi-files/") == [
            f"{prefix}manifest.json.out",
            f"{prefix}part-0001.jsonl.out",
            f"{prefix}part-0002.jsonl.out",
        ]
        assert sorted(r["recordId"] for r in read_lines(s3, f"{prefix}part-0001.jsonl.out")) == first
        assert sorted(r["recordId"] for r in read_lines(s3, f"{prefix}part-0002.jsonl.out")) == second

    def test_records_without_record_id_get_one(self, bedrock, s3):
        lines = [orjson.dumps({"modelInput": claude_body(f"Agent: hello {i}")}) for i in range(100)]
        s3.put_object(Bucket=IN, Key="noid/input.jsonl", Body=b"\n".join(lines))
        arn = submit(bedrock, "no-record-ids", "noid/input.jsonl")

        assert wait_for(bedrock, arn)["status"] == "Completed"
        ids = [r["recordId"] for r in read_lines(s3, f"no-record-ids/{job_id(arn)}/input.jsonl.out")]
        assert len(set(ids)) == 100
        assert all(len(i) == 11 and i.isalnum() for i in ids)

    def test_converse_job_answers_in_converse_format(self, bedrock, s3):
        def converse_body(i: int) -> dict[str, Any]:
            return {
                "messages": [
                    {"role": "user", "content": [{"text": f"Summarize.\nCustomer: my order {i} is late"}]}
                ],
                "inferenceConfig": {"maxTokens": 200},
            }

        put_records(s3, "converse/in.jsonl", 100, body=converse_body)
        arn = submit(bedrock, "converse-job", "converse/in.jsonl", model=NOVA, modelInvocationType="Converse")

        job = wait_for(bedrock, arn)

        assert job["status"] == "Completed"
        assert job["modelInvocationType"] == "Converse"
        output = read_lines(s3, f"converse-job/{job_id(arn)}/in.jsonl.out")[0]["modelOutput"]
        assert output["output"]["message"]["role"] == "assistant"
        assert "order" in output["output"]["message"]["content"][0]["text"]
        usage = output["usage"]
        assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"] > 0

    def test_state_changes_are_logged_with_ids_and_counts_never_text(self, bedrock, s3, caplog):
        put_records(s3, "logged/in.jsonl", 100)
        with caplog.at_level(logging.INFO, logger="bedrock_batch_dev.emulator"):
            arn = submit(bedrock, "logged-job", "logged/in.jsonl")
            wait_for(bedrock, arn)
        lines = [r.getMessage() for r in caplog.records if r.name == "bedrock_batch_dev.emulator"]
        assert any(job_id(arn) in line and "Completed 100/100" in line for line in lines)
        assert not any("Customer" in line or "Agent" in line for line in lines)


class TestValidationFailures:
    def test_99_records_fail_with_the_minimum_in_the_message(self, bedrock, s3):
        put_records(s3, "small/in.jsonl", 99)
        arn = submit(bedrock, "too-small", "small/in.jsonl")

        job = wait_for(bedrock, arn)

        assert job["status"] == "Failed"
        assert "less records (99) than the required minimum of: 100" in job["message"]
        assert job["endTime"] >= job["submitTime"]
        assert output_keys(s3, "too-small/") == []

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            (b'{"recordId": "A", "modelInput": {}}\nnot json\n', "line 2: the line is not valid JSON"),
            (b'{"recordId": "A", "modelInput": {}}\n[1, 2]\n', "line 2: the line is not a JSON object"),
            (b'{"recordId": "A", "prompt": "x"}\n', "line 1: the record has no modelInput object"),
            (b'{"recordId": 7, "modelInput": {}}\n', "line 1: recordId must be a string"),
        ],
    )
    def test_malformed_lines_fail_the_job_naming_the_line(self, bedrock, s3, content, expected):
        s3.put_object(Bucket=IN, Key="bad/in.jsonl", Body=content)
        arn = submit(bedrock, "bad-lines", "bad/in.jsonl")

        job = wait_for(bedrock, arn)

        assert job["status"] == "Failed"
        assert expected in job["message"]
        assert "in.jsonl" in job["message"]

    def test_missing_input_fails(self, bedrock):
        job = wait_for(bedrock, submit(bedrock, "no-input", "nothing-here/"))
        assert job["status"] == "Failed"
        assert "No .jsonl files found" in job["message"]

    def test_input_object_that_is_not_jsonl_fails(self, bedrock, s3):
        s3.put_object(Bucket=IN, Key="json/in.json", Body=b'{"recordId": "A", "modelInput": {}}')
        job = wait_for(bedrock, submit(bedrock, "not-jsonl", "json/in.json"))
        assert job["status"] == "Failed"
        assert "is not a .jsonl file" in job["message"]

    def test_missing_output_bucket_fails(self, bedrock, s3):
        put_records(s3, "nobucket/in.jsonl", 100)
        arn = submit(
            bedrock,
            "no-output-bucket",
            "nobucket/in.jsonl",
            output_config={"s3Uri": "s3://no-such-bucket/out/"},
        )
        job = wait_for(bedrock, arn)
        assert job["status"] == "Failed"
        assert "Unable to access the output location" in job["message"]

    def test_per_file_and_per_job_record_limits_are_configurable(self, stack, bedrock, s3):
        stack.admin.configure(max_records_per_file=100, max_records_per_job=200)
        put_records(s3, "limits/big.jsonl", 120)
        job = wait_for(bedrock, submit(bedrock, "file-too-big", "limits/big.jsonl"))
        assert job["status"] == "Failed"
        assert "contains 120 records, more than the maximum of 100 records per file" in job["message"]

        put_records(s3, "limits-job/part-1.jsonl", 100)
        put_records(s3, "limits-job/part-2.jsonl", 100, start=100)
        put_records(s3, "limits-job/part-3.jsonl", 100, start=200)
        job = wait_for(bedrock, submit(bedrock, "job-too-big", "limits-job/"))
        assert job["status"] == "Failed"
        assert "contains more records (300) than the allowed maximum of: 200" in job["message"]

    def test_bucket_owner_mismatch_fails(self, bedrock, s3):
        put_records(s3, "owner/in.jsonl", 100)
        arn = submit(bedrock, "wrong-owner", "owner/in.jsonl", input_config={"s3BucketOwner": "210987654321"})
        job = wait_for(bedrock, arn)
        assert job["status"] == "Failed"
        assert "not owned by account 210987654321" in job["message"]


class TestOutputConfiguration:
    def test_kms_key_and_bucket_owner_are_recorded_and_applied(self, stack, bedrock, s3):
        key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        put_records(s3, "kms/in.jsonl", 100)
        arn = submit(
            bedrock,
            "kms-job",
            "kms/in.jsonl",
            input_config={"s3InputFormat": "JSONL"},
            output_config={"s3EncryptionKeyId": key, "s3BucketOwner": "123456789012"},
            tags=[{"key": "team", "value": "analytics"}],
        )

        assert wait_for(bedrock, arn)["status"] == "Completed"
        params = stack.admin.requests("CreateModelInvocationJob")[-1]["params"]
        assert params["outputDataConfig"]["s3OutputDataConfig"]["s3EncryptionKeyId"] == key
        assert params["outputDataConfig"]["s3OutputDataConfig"]["s3BucketOwner"] == "123456789012"
        assert stack.admin.job(arn)["tags"] == [{"key": "team", "value": "analytics"}]
        head = s3.head_object(Bucket=OUT, Key=f"kms-job/{job_id(arn)}/in.jsonl.out")
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == key


# --- stop, expiry, partial completion ----------------------------------------------------------------------


class TestStop:
    def test_stop_in_progress_job_writes_only_processed_records(self, stack, bedrock, s3):
        at_wall_speed(stack, records_per_second=100, chunk_records=5)
        put_records(s3, "stop/in.jsonl", 150)
        arn = submit(bedrock, "stop-me", "stop/in.jsonl")
        wait_for(bedrock, arn, {"InProgress"})
        while bedrock.get_model_invocation_job(jobIdentifier=arn)["processedRecordCount"] < 20:
            time.sleep(0.01)

        bedrock.stop_model_invocation_job(jobIdentifier=arn)
        assert bedrock.get_model_invocation_job(jobIdentifier=arn)["status"] in ("Stopping", "Stopped")
        job = wait_for(bedrock, arn)

        assert job["status"] == "Stopped"
        assert 20 <= job["processedRecordCount"] < 150
        assert job["totalRecordCount"] == 150
        prefix = f"stop-me/{job_id(arn)}/"
        assert len(read_lines(s3, f"{prefix}in.jsonl.out")) == job["processedRecordCount"]
        manifest = orjson.loads(s3.get_object(Bucket=OUT, Key=f"{prefix}manifest.json.out")["Body"].read())
        assert manifest["processedRecordCount"] == job["processedRecordCount"]
        assert manifest["totalRecordCount"] == 150
        assert "Stopping" in [h["status"] for h in stack.admin.job(arn)["history"]]

        with pytest.raises(bedrock.exceptions.ValidationException) as excinfo:
            bedrock.stop_model_invocation_job(jobIdentifier=arn)
        assert "State was: Stopped" in error_of(excinfo)[1]

    def test_stop_before_processing_writes_nothing(self, stack, bedrock, s3):
        stack.admin.configure(submitted_seconds=10**6)
        put_records(s3, "stop-early/in.jsonl", 100)
        arn = submit(bedrock, "stop-early", "stop-early/in.jsonl")
        bedrock.stop_model_invocation_job(jobIdentifier=arn)

        job = wait_for(bedrock, arn)

        assert job["status"] == "Stopped"
        assert job["processedRecordCount"] == 0
        assert [h["status"] for h in stack.admin.job(arn)["history"]] == ["Submitted", "Stopping", "Stopped"]
        assert output_keys(s3, "stop-early/") == []

    def test_stopping_a_completed_job_is_a_validation_error_naming_the_state(self, bedrock, s3):
        put_records(s3, "done/in.jsonl", 100)
        arn = submit(bedrock, "done-job", "done/in.jsonl")
        wait_for(bedrock, arn)

        with pytest.raises(bedrock.exceptions.ValidationException) as excinfo:
            bedrock.stop_model_invocation_job(jobIdentifier=arn)

        assert "State was: Completed" in error_of(excinfo)[1]


class TestExpiryAndPartialCompletion:
    def test_job_that_never_starts_expires_at_its_timeout(self, stack, bedrock, s3):
        stack.admin.set_faults(expire_jobs_matching="^expire-")
        stack.admin.set_time_scale(10**6)
        put_records(s3, "expire/in.jsonl", 100)
        arn = submit(bedrock, "expire-me", "expire/in.jsonl", timeoutDurationInHours=24)

        job = wait_for(bedrock, arn)

        assert job["status"] == "Expired"
        assert "24 hours" in job["message"]
        assert job["jobExpirationTime"] - job["submitTime"] == timedelta(hours=24)
        assert [h["status"] for h in stack.admin.job(arn)["history"]][-2:] == ["Scheduled", "Expired"]
        assert output_keys(s3, "expire-me/") == []

    def test_backlog_expires_and_a_job_running_past_its_timeout_partially_completes(self, stack, bedrock, s3):
        # One job runs at a time, slowly: the second waits in Scheduled past its 24 h timeout while the
        # first (120 h) runs out of time with some of its records processed. At this scale 24 h is 0.86 s
        # and 120 h is 4.3 s of wall time (about 86 records at 20 records/s), so a slow machine that takes
        # a while between the two submissions still sees the second job expire long before the first ends.
        stack.admin.configure(time_scale=10**5, max_running_jobs=1, records_per_second=0.0002)
        put_records(s3, "backlog/in.jsonl", 150)
        running = submit(bedrock, "backlog-running", "backlog/in.jsonl", timeoutDurationInHours=120)
        wait_for(bedrock, running, {"InProgress"})
        waiting = submit(bedrock, "backlog-waiting", "backlog/in.jsonl", timeoutDurationInHours=24)

        second = wait_for(bedrock, waiting)
        assert bedrock.get_model_invocation_job(jobIdentifier=running)["status"] == "InProgress"
        first = wait_for(bedrock, running)

        assert second["status"] == "Expired"
        assert second["processedRecordCount"] == 0
        assert first["status"] == "PartiallyCompleted"
        assert "timed out" in first["message"]
        assert 0 < first["processedRecordCount"] < 150
        lines = read_lines(s3, f"backlog-running/{job_id(running)}/in.jsonl.out")
        assert len(lines) == first["processedRecordCount"]

    def test_partial_fault_processes_the_configured_fraction(self, stack, bedrock, s3):
        stack.admin.set_faults(partial_jobs_matching="^partial-", partial_fraction=0.4)
        put_records(s3, "partial/in.jsonl", 150)
        arn = submit(bedrock, "partial-job", "partial/in.jsonl")

        job = wait_for(bedrock, arn)

        assert job["status"] == "PartiallyCompleted"
        assert (job["processedRecordCount"], job["totalRecordCount"]) == (60, 150)
        prefix = f"partial-job/{job_id(arn)}/"
        assert len(read_lines(s3, f"{prefix}in.jsonl.out")) == 60
        manifest = orjson.loads(s3.get_object(Bucket=OUT, Key=f"{prefix}manifest.json.out")["Body"].read())
        assert (manifest["processedRecordCount"], manifest["totalRecordCount"]) == (60, 150)

    @pytest.mark.parametrize("faults", [{"fail_jobs_matching": "^doomed"}, {"job_failure_rate": 1.0}])
    def test_job_failure_fault(self, stack, bedrock, s3, faults):
        stack.admin.set_faults(**faults)
        put_records(s3, "doomed/in.jsonl", 100)
        job = wait_for(bedrock, submit(bedrock, "doomed-job", "doomed/in.jsonl"))
        assert job["status"] == "Failed"
        assert "injected fault" in job["message"]


class TestRecordErrors:
    def test_injected_and_malformed_records_become_error_lines(self, stack, bedrock, s3):
        stack.admin.set_faults(record_error_rate=0.3, record_error_codes=[429, 500], seed=7)

        def body(i: int) -> dict[str, Any]:
            # Every tenth body lacks "messages": validation passes it, the model rejects it (400).
            return (
                {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50}
                if i % 10 == 0
                else claude_body("x")
            )

        put_records(s3, "errors/in.jsonl", 150, body=body)
        arn = submit(bedrock, "record-errors", "errors/in.jsonl")

        job = wait_for(bedrock, arn)

        assert job["status"] == "Completed", "a job whose records fail still completes"
        lines = read_lines(s3, f"record-errors/{job_id(arn)}/in.jsonl.out")
        errors = [line for line in lines if "error" in line]
        assert all("modelOutput" not in line and line["error"]["errorMessage"] for line in errors)
        codes = {line["error"]["errorCode"] for line in errors}
        assert codes == {400, 429, 500}
        malformed = [line for line in errors if line["error"]["errorCode"] == 400]
        assert all("Malformed input request" in line["error"]["errorMessage"] for line in malformed)
        assert 20 <= len(errors) - len(malformed) <= 70
        assert job["errorRecordCount"] == len(errors)
        assert job["successRecordCount"] == 150 - len(errors)


# --- quotas, idempotency, names ----------------------------------------------------------------------------


class TestQuotaAndIdempotency:
    def test_21st_concurrent_job_per_model_is_refused(self, stack, bedrock):
        stack.admin.configure(submitted_seconds=10**6)  # every job stays Submitted
        arns = [submit(bedrock, f"quota-{i}", "any/") for i in range(20)]

        with pytest.raises(bedrock.exceptions.ServiceQuotaExceededException) as excinfo:
            submit(bedrock, "quota-20", "any/")
        assert "20" in error_of(excinfo)[1]
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

        submit(bedrock, "other-model", "any/", model=NOVA)  # the quota is per model
        bedrock.stop_model_invocation_job(jobIdentifier=arns[0])  # Stopping no longer counts
        submit(bedrock, "quota-20", "any/")

    def test_quota_is_settable_at_runtime(self, stack, bedrock):
        stack.admin.set_max_concurrent_jobs(2)
        stack.admin.configure(submitted_seconds=10**6)
        submit(bedrock, "small-quota-1", "any/")
        submit(bedrock, "small-quota-2", "any/")
        with pytest.raises(bedrock.exceptions.ServiceQuotaExceededException):
            submit(bedrock, "small-quota-3", "any/")

    def test_same_client_request_token_returns_the_original_job(self, stack, bedrock):
        stack.admin.configure(submitted_seconds=10**6)
        first = submit(bedrock, "token-job", "any/", clientRequestToken="retry-token-1")
        again = submit(bedrock, "token-job", "any/", clientRequestToken="retry-token-1")
        renamed = submit(bedrock, "token-job-renamed", "any/", clientRequestToken="retry-token-1")

        assert first == again == renamed
        assert stack.admin.created_job_count() == 1
        record = stack.admin.job(first)
        assert (record["createRequests"], record["idempotentReplays"]) == (3, 2)
        assert bedrock.get_model_invocation_job(jobIdentifier=first)["clientRequestToken"] == "retry-token-1"
        assert len(bedrock.list_model_invocation_jobs()["invocationJobSummaries"]) == 1

    def test_a_used_name_with_another_token_is_refused(self, stack, bedrock):
        stack.admin.configure(submitted_seconds=10**6)
        submit(bedrock, "named-job", "any/", clientRequestToken="token-a")

        with pytest.raises(bedrock.exceptions.ValidationException) as excinfo:
            submit(bedrock, "named-job", "any/", clientRequestToken="token-b")
        assert error_of(excinfo)[1] == "The provided job name is currently in use."

        stack.admin.configure(name_in_use_error="ConflictException")
        with pytest.raises(bedrock.exceptions.ConflictException):
            submit(bedrock, "named-job", "any/", clientRequestToken="token-c")
        assert stack.admin.created_job_count() == 1


# --- request validation and lookups ------------------------------------------------------------------------


def _request(**overrides: Any) -> dict[str, Any]:
    request = {
        "jobName": "valid-name",
        "roleArn": ROLE,
        "modelId": CLAUDE,
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": f"s3://{IN}/x/"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{OUT}/x/"}},
    }
    request.update(overrides)
    return {k: v for k, v in request.items() if v is not None}


class TestRequestValidation:
    @pytest.mark.parametrize(
        ("overrides", "field"),
        [
            ({"jobName": "bad name!"}, "jobName"),
            ({"jobName": "-starts-with-dash"}, "jobName"),
            ({"jobName": "a" * 64}, "jobName"),
            ({"jobName": None}, "jobName"),
            ({"timeoutDurationInHours": 12}, "timeoutDurationInHours"),
            ({"timeoutDurationInHours": 200}, "timeoutDurationInHours"),
            ({"roleArn": "not-an-arn"}, "roleArn"),
            ({"roleArn": "arn:aws:iam::12345:role/short-account"}, "roleArn"),
            ({"modelId": "not a model id!"}, "modelId"),
            ({"clientRequestToken": "bad token"}, "clientRequestToken"),
            ({"inputDataConfig": {"s3InputDataConfig": {"s3Uri": "https://example.com/x"}}}, "s3Uri"),
            ({"inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://Upper_Case/x"}}}, "s3Uri"),
            (
                {"inputDataConfig": {"s3InputDataConfig": {"s3Uri": f"s3://{IN}/x", "s3InputFormat": "CSV"}}},
                "s3InputFormat",
            ),
            (
                {
                    "outputDataConfig": {
                        "s3OutputDataConfig": {"s3Uri": f"s3://{OUT}/x", "s3EncryptionKeyId": "no key"}
                    }
                },
                "s3EncryptionKeyId",
            ),
            (
                {
                    "outputDataConfig": {
                        "s3OutputDataConfig": {"s3Uri": f"s3://{OUT}/x", "s3BucketOwner": "12"}
                    }
                },
                "s3BucketOwner",
            ),
            ({"modelInvocationType": "Batch"}, "modelInvocationType"),
            ({"vpcConfig": {"subnetIds": [], "securityGroupIds": ["sg-1"]}}, "vpcConfig.subnetIds"),
            ({"tags": [{"key": "bad|key", "value": "v"}]}, "tags.1.member.key"),
        ],
    )
    def test_invalid_requests_are_refused_with_the_field_named(self, stack, loose_bedrock, overrides, field):
        with pytest.raises(loose_bedrock.exceptions.ValidationException) as excinfo:
            loose_bedrock.create_model_invocation_job(**_request(**overrides))
        _, message = error_of(excinfo)
        assert message.startswith("1 validation error detected:")
        assert field in message
        assert stack.admin.created_job_count() == 0

    def test_several_errors_are_reported_together(self, loose_bedrock):
        with pytest.raises(loose_bedrock.exceptions.ValidationException) as excinfo:
            loose_bedrock.create_model_invocation_job(
                **_request(jobName="bad name", timeoutDurationInHours=1)
            )
        assert error_of(excinfo)[1].startswith("2 validation errors detected:")

    def test_pathological_job_name_is_answered_quickly(self, loose_bedrock):
        started = time.monotonic()
        with pytest.raises(loose_bedrock.exceptions.ValidationException):
            loose_bedrock.create_model_invocation_job(**_request(jobName="a" + "-" * 60 + "!"))
        assert time.monotonic() - started < 5, "the name pattern must not backtrack exponentially"

    @pytest.mark.parametrize(
        "model",
        [
            "acme.unknown-model-v1",  # no such provider
            "anthropic.claude-3-haiku-20990101-v1:0",  # a known family, a version the catalogue lacks
            "us.anthropic.claude-3-haiku-20990101-v1:0",  # a profile of no known model
            "amazon.titan-embed-text-v2:0",  # known, but an embedding model
        ],
    )
    def test_a_model_the_catalogue_does_not_know_is_refused(self, stack, bedrock, model):
        with pytest.raises(bedrock.exceptions.ValidationException) as excinfo:
            bedrock.create_model_invocation_job(**_request(modelId=model))
        assert error_of(excinfo) == ("ValidationException", "The provided model identifier is invalid.")
        assert stack.admin.created_job_count() == 0

    def test_a_model_the_catalogue_does_not_know_is_refused_for_converse_jobs_too(self, bedrock):
        with pytest.raises(bedrock.exceptions.ValidationException):
            bedrock.create_model_invocation_job(
                **_request(modelId="anthropic.claude-9-20990101-v1:0", modelInvocationType="Converse")
            )

    def test_valid_names_and_model_forms_are_accepted(self, stack, bedrock):
        stack.admin.configure(submitted_seconds=10**6)
        for name, model in [
            ("a", CLAUDE),
            ("job-2025.01+x", "us.anthropic.claude-3-5-haiku-20241022-v1:0"),
            ("arn-model", f"arn:aws:bedrock:us-east-1::foundation-model/{LLAMA}"),
            ("titan", TITAN),
        ]:
            bedrock.create_model_invocation_job(
                **_request(jobName=name, modelId=model, timeoutDurationInHours=24)
            )
        assert stack.admin.created_job_count() == 4


class TestFoundationModels:
    def test_get_answers_the_details_of_a_known_model(self, bedrock):
        details = bedrock.get_foundation_model(modelIdentifier=CLAUDE)["modelDetails"]
        assert details == {
            "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{CLAUDE}",
            "modelId": CLAUDE,
            "modelName": "Claude 3 Haiku",
            "providerName": "Anthropic",
            "inputModalities": ["TEXT", "IMAGE"],
            "outputModalities": ["TEXT"],
            "responseStreamingSupported": True,
            "customizationsSupported": [],
            "inferenceTypesSupported": ["ON_DEMAND"],
            "modelLifecycle": {"status": "ACTIVE"},
        }

    def test_get_by_foundation_model_arn(self, bedrock):
        arn = f"arn:aws:bedrock:us-east-1::foundation-model/{NOVA}"
        assert bedrock.get_foundation_model(modelIdentifier=arn)["modelDetails"]["modelArn"] == arn

    def test_legacy_and_embedding_models_say_so(self, bedrock):
        legacy = bedrock.get_foundation_model(modelIdentifier="anthropic.claude-3-sonnet-20240229-v1:0")
        assert legacy["modelDetails"]["modelLifecycle"]["status"] == "LEGACY"
        embedding = bedrock.get_foundation_model(modelIdentifier="amazon.titan-embed-text-v2:0")
        assert embedding["modelDetails"]["outputModalities"] == ["EMBEDDING"]

    @pytest.mark.parametrize(
        "identifier",
        [
            "anthropic.claude-3-haiku-20990101-v1:0",
            "acme.unknown-model-v1",
            "us.anthropic.claude-3-haiku-20240307-v1:0",  # a profile id is not a foundation model id
        ],
    )
    def test_a_well_formed_unknown_id_is_a_validation_error_naming_it(self, bedrock, identifier):
        with pytest.raises(bedrock.exceptions.ValidationException) as excinfo:
            bedrock.get_foundation_model(modelIdentifier=identifier)
        assert error_of(excinfo)[1] == f"Could not find model with identifier {identifier}"

    def test_a_malformed_id_fails_the_pattern(self, loose_bedrock):
        with pytest.raises(loose_bedrock.exceptions.ValidationException) as excinfo:
            loose_bedrock.get_foundation_model(modelIdentifier="claude haiku")
        assert "at 'modelIdentifier' failed to satisfy constraint" in error_of(excinfo)[1]

    def test_list_filters_like_the_service(self, bedrock):
        every = bedrock.list_foundation_models()["modelSummaries"]
        ids = {model["modelId"] for model in every}
        assert {CLAUDE, NOVA, LLAMA, TITAN} <= ids
        meta = bedrock.list_foundation_models(byProvider="meta")["modelSummaries"]
        assert len(meta) > 1
        assert {model["providerName"] for model in meta} == {"Meta"}
        embeddings = bedrock.list_foundation_models(byOutputModality="EMBEDDING")["modelSummaries"]
        assert [model["modelId"] for model in embeddings] == ["amazon.titan-embed-text-v2:0"]
        on_demand = bedrock.list_foundation_models(byInferenceType="ON_DEMAND")["modelSummaries"]
        assert len(on_demand) == len(every)
        assert bedrock.list_foundation_models(byProvider="Acme")["modelSummaries"] == []

    def test_list_refuses_a_value_outside_the_enums(self, loose_bedrock):
        with pytest.raises(loose_bedrock.exceptions.ValidationException) as excinfo:
            loose_bedrock.list_foundation_models(byOutputModality="AUDIO")
        assert "at 'byOutputModality' failed to satisfy constraint" in error_of(excinfo)[1]

    def test_text_models_are_active_or_legacy(self, bedrock):
        text = bedrock.list_foundation_models(byOutputModality="TEXT")["modelSummaries"]
        statuses = {model["modelLifecycle"]["status"] for model in text}
        assert statuses == {"ACTIVE", "LEGACY"}

    def test_access_denied_fault(self, stack, bedrock):
        stack.admin.set_faults(access_denied_operations=["GetFoundationModel"])
        with pytest.raises(bedrock.exceptions.AccessDeniedException):
            bedrock.get_foundation_model(modelIdentifier=CLAUDE)


class TestLookups:
    def test_get_by_id_and_by_arn(self, stack, bedrock):
        stack.admin.configure(submitted_seconds=10**6)
        arn = submit(bedrock, "lookup", "any/")
        by_arn = bedrock.get_model_invocation_job(jobIdentifier=arn)
        by_id = bedrock.get_model_invocation_job(jobIdentifier=job_id(arn))
        by_arn.pop("ResponseMetadata"), by_id.pop("ResponseMetadata")
        assert by_arn == by_id
        assert by_arn["status"] == "Submitted"
        assert by_arn["jobName"] == "lookup"

    def test_tags_of_a_job(self, stack, bedrock):
        stack.admin.configure(submitted_seconds=10**6)
        arn = submit(
            bedrock, "tagged", "any/", tags=[{"key": "dag_id", "value": "d"}, {"key": "shard", "value": "0"}]
        )
        untagged = submit(bedrock, "untagged", "any/")
        assert bedrock.list_tags_for_resource(resourceARN=arn)["tags"] == [
            {"key": "dag_id", "value": "d"},
            {"key": "shard", "value": "0"},
        ]
        assert bedrock.list_tags_for_resource(resourceARN=untagged)["tags"] == []
        unknown = arn.rsplit("/", 1)[0] + "/zzzzzzzzzzzz"
        with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
            bedrock.list_tags_for_resource(resourceARN=unknown)

    @pytest.mark.parametrize(
        "identifier",
        ["abcdefghijkl", "arn:aws:bedrock:us-east-1:999999999999:model-invocation-job/abcdefghijkl"],
    )
    def test_unknown_job_is_not_found(self, bedrock, identifier):
        with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
            bedrock.get_model_invocation_job(jobIdentifier=identifier)
        with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
            bedrock.stop_model_invocation_job(jobIdentifier=identifier)

    def test_malformed_identifier_is_a_validation_error(self, bedrock):
        with pytest.raises(bedrock.exceptions.ValidationException):
            bedrock.get_model_invocation_job(jobIdentifier="NOT-AN-ID")


class TestList:
    @pytest.fixture
    def jobs(self, stack: LocalStack, bedrock: Any, s3: Any) -> list[str]:
        """Three Failed jobs then four held in Submitted, 2 ms apart so their submit times differ."""
        put_records(s3, "list/small.jsonl", 10)
        failed = []
        for i in range(3):
            failed.append(submit(bedrock, f"list-failed-{i}", "list/small.jsonl"))
            time.sleep(0.002)
        for arn in failed:
            wait_for(bedrock, arn)
        stack.admin.configure(submitted_seconds=10**6)
        held = []
        for i in range(4):
            held.append(submit(bedrock, f"list-held-{i}", "list/small.jsonl"))
            time.sleep(0.002)
        submit(bedrock, "unrelated", "list/small.jsonl")
        return failed + held

    def names(self, response: dict[str, Any]) -> list[str]:
        return [s["jobName"] for s in response["invocationJobSummaries"]]

    def test_filters(self, bedrock, jobs):
        assert len(self.names(bedrock.list_model_invocation_jobs(nameContains="list-"))) == 7
        assert self.names(
            bedrock.list_model_invocation_jobs(statusEquals="Failed", sortOrder="Ascending")
        ) == [
            "list-failed-0",
            "list-failed-1",
            "list-failed-2",
        ]
        assert len(self.names(bedrock.list_model_invocation_jobs(statusEquals="Submitted"))) == 5
        third = bedrock.get_model_invocation_job(jobIdentifier=jobs[2])["submitTime"]
        sixth = bedrock.get_model_invocation_job(jobIdentifier=jobs[5])["submitTime"]
        between = bedrock.list_model_invocation_jobs(
            submitTimeAfter=third, submitTimeBefore=sixth, sortBy="CreationTime", sortOrder="Ascending"
        )
        assert self.names(between) == ["list-held-0", "list-held-1"]

    def test_sorting(self, bedrock, jobs):
        ascending = self.names(
            bedrock.list_model_invocation_jobs(nameContains="list-", sortOrder="Ascending")
        )
        descending = self.names(
            bedrock.list_model_invocation_jobs(nameContains="list-", sortOrder="Descending")
        )
        default = self.names(bedrock.list_model_invocation_jobs(nameContains="list-"))
        assert ascending == [f"list-failed-{i}" for i in range(3)] + [f"list-held-{i}" for i in range(4)]
        assert descending == default == ascending[::-1]

    def test_pagination(self, bedrock, jobs):
        first = bedrock.list_model_invocation_jobs(nameContains="list-", maxResults=3, sortOrder="Ascending")
        assert len(first["invocationJobSummaries"]) == 3
        assert "nextToken" in first
        pages = bedrock.get_paginator("list_model_invocation_jobs").paginate(
            nameContains="list-", sortOrder="Ascending", PaginationConfig={"PageSize": 2}
        )
        sizes, names = [], []
        for page in pages:
            sizes.append(len(page["invocationJobSummaries"]))
            names += self.names(page)
        assert sizes == [2, 2, 2, 1]
        assert names == [f"list-failed-{i}" for i in range(3)] + [f"list-held-{i}" for i in range(4)]

    def test_bad_list_parameters(self, bedrock, loose_bedrock, jobs):
        with pytest.raises(bedrock.exceptions.ValidationException):
            bedrock.list_model_invocation_jobs(nextToken="garbage")
        token = bedrock.list_model_invocation_jobs(maxResults=1, nameContains="list-")["nextToken"]
        with pytest.raises(bedrock.exceptions.ValidationException):
            bedrock.list_model_invocation_jobs(maxResults=1, nameContains="held", nextToken=token)
        with pytest.raises(loose_bedrock.exceptions.ValidationException):
            loose_bedrock.list_model_invocation_jobs(maxResults=0)
        with pytest.raises(loose_bedrock.exceptions.ValidationException):
            loose_bedrock.list_model_invocation_jobs(statusEquals="Bogus")


# --- injected API errors -----------------------------------------------------------------------------------


class TestApiFaults:
    def test_throttling(self, stack, bedrock, runtime):
        stack.admin.set_faults(throttle_rate=1.0)
        with pytest.raises(bedrock.exceptions.ThrottlingException) as excinfo:
            bedrock.list_model_invocation_jobs()
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        runtime.invoke_model(modelId=CLAUDE, body=orjson.dumps(claude_body("hi")))  # the runtime is separate

        stack.admin.set_faults(throttle_rate=0.0, runtime_throttle_rate=1.0)
        bedrock.list_model_invocation_jobs()
        with pytest.raises(runtime.exceptions.ThrottlingException):
            runtime.invoke_model(modelId=CLAUDE, body=orjson.dumps(claude_body("hi")))
        with pytest.raises(runtime.exceptions.ThrottlingException):
            runtime.converse(modelId=NOVA, messages=[{"role": "user", "content": [{"text": "hi"}]}])

    def test_partial_throttling_is_retried_by_botocore(self, stack):
        stack.admin.set_faults(throttle_rate=0.5, seed=3)
        patient = stack.client("bedrock", retries={"mode": "standard", "total_max_attempts": 10})
        for _ in range(3):
            patient.list_model_invocation_jobs()
        throttled = [r for r in stack.admin.requests("ListModelInvocationJobs") if r.get("error")]
        assert throttled
        assert all(r["error"] == "ThrottlingException" for r in throttled)

    def test_internal_error(self, stack, bedrock):
        stack.admin.set_faults(internal_error_rate=1.0)
        with pytest.raises(bedrock.exceptions.InternalServerException):
            bedrock.get_model_invocation_job(jobIdentifier="abcdefghijkl")

    def test_slow_operation_is_answered_late_and_others_meanwhile(self, stack, bedrock):
        stack.admin.set_faults(slow_operations=["GetModelInvocationJob"], slow_seconds=1.5)
        errors: list[BaseException] = []

        def slow_get() -> None:
            try:
                bedrock.get_model_invocation_job(jobIdentifier="abcdefghijkl")
            except bedrock.exceptions.ResourceNotFoundException:
                pass
            except BaseException as exc:
                errors.append(exc)

        started = time.monotonic()
        getter = threading.Thread(target=slow_get)
        getter.start()
        bedrock.list_model_invocation_jobs()  # not slowed, not queued behind the slow call
        listed_after = time.monotonic() - started
        getter.join()
        assert errors == []
        assert listed_after < 1.0
        assert time.monotonic() - started >= 1.5
        with pytest.raises(EmulatorAdminError, match="slow_operations"):
            stack.admin.set_faults(slow_operations=["NoSuchOperation"])

    def test_access_denied(self, stack, bedrock):
        stack.admin.set_faults(access_denied_operations=["CreateModelInvocationJob"])
        with pytest.raises(bedrock.exceptions.AccessDeniedException) as excinfo:
            submit(bedrock, "denied", "any/")
        assert "bedrock:CreateModelInvocationJob" in error_of(excinfo)[1]
        assert stack.admin.created_job_count() == 0
        bedrock.list_model_invocation_jobs()


# --- runtime ----------------------------------------------------------------------------------------------


CALL = next(iter(generate_calls(1, seed=5)))
RUNTIME_PROMPT = PROMPT + CALL.transcript


def _text(family: str, body: dict[str, Any]) -> str:
    if family == "anthropic":
        return body["content"][0]["text"]
    if family == "nova":
        return body["output"]["message"]["content"][0]["text"]
    if family == "llama":
        return body["generation"]
    return body["results"][0]["outputText"]


def _usage(family: str, body: dict[str, Any]) -> tuple[int, int]:
    if family == "anthropic":
        return body["usage"]["input_tokens"], body["usage"]["output_tokens"]
    if family == "nova":
        return body["usage"]["inputTokens"], body["usage"]["outputTokens"]
    if family == "llama":
        return body["prompt_token_count"], body["generation_token_count"]
    return body["inputTextTokenCount"], body["results"][0]["tokenCount"]


class TestRuntime:
    @pytest.mark.parametrize(
        ("family", "model", "body"),
        [
            ("anthropic", CLAUDE, claude_body(RUNTIME_PROMPT)),
            (
                "nova",
                NOVA,
                {
                    "schemaVersion": "messages-v1",
                    "messages": [{"role": "user", "content": [{"text": RUNTIME_PROMPT}]}],
                    "inferenceConfig": {"maxTokens": 600},
                },
            ),
            ("llama", LLAMA, {"prompt": RUNTIME_PROMPT, "max_gen_len": 600}),
            ("titan", TITAN, {"inputText": RUNTIME_PROMPT, "textGenerationConfig": {"maxTokenCount": 600}}),
        ],
    )
    def test_invoke_model_answers_in_the_family_format(self, runtime, family, model, body):
        response = runtime.invoke_model(
            modelId=model, body=orjson.dumps(body), contentType="application/json"
        )

        reply = orjson.loads(response["body"].read())
        answer = orjson.loads(_text(family, reply))
        assert answer["topic"].replace(" ", "_") == CALL.scenario
        assert answer["resolution"] == CALL.outcome
        assert answer["summary"]
        assert answer["summary"].split(".")[0] in CALL.transcript
        input_tokens, output_tokens = _usage(family, reply)
        assert input_tokens == math.ceil(len(RUNTIME_PROMPT) / 4)
        assert output_tokens == math.ceil(len(_text(family, reply)) / 4)
        headers = response["ResponseMetadata"]["HTTPHeaders"]
        assert headers["x-amzn-bedrock-input-token-count"] == str(input_tokens)

    def test_converse(self, runtime):
        response = runtime.converse(
            modelId=f"arn:aws:bedrock:us-east-1::foundation-model/{NOVA}",
            system=[{"text": "You analyse calls."}],
            messages=[{"role": "user", "content": [{"text": RUNTIME_PROMPT}]}],
            inferenceConfig={"maxTokens": 600, "temperature": 0.0},
        )
        assert response["stopReason"] == "end_turn"
        assert response["metrics"]["latencyMs"] >= 1
        assert orjson.loads(response["output"]["message"]["content"][0]["text"])["sentiment"] in {
            "positive",
            "neutral",
            "negative",
        }
        usage = response["usage"]
        assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]

    def test_max_tokens_truncates_the_reply(self, runtime):
        response = runtime.converse(
            modelId=NOVA,
            messages=[{"role": "user", "content": [{"text": RUNTIME_PROMPT}]}],
            inferenceConfig={"maxTokens": 5},
        )
        assert response["stopReason"] == "max_tokens"
        assert len(response["output"]["message"]["content"][0]["text"]) <= 20

    def test_plain_prompt_gets_an_extractive_summary(self, runtime):
        body = claude_body("Summarize this call in two sentences.\n" + CALL.transcript)
        text = orjson.loads(runtime.invoke_model(modelId=CLAUDE, body=orjson.dumps(body))["body"].read())
        summary = text["content"][0]["text"]
        assert summary
        assert not summary.startswith("{")
        assert all(sentence.strip(" .") in CALL.transcript for sentence in summary.split(". ") if sentence)

    def test_malformed_body_and_unknown_model(self, runtime):
        with pytest.raises(runtime.exceptions.ValidationException) as excinfo:
            runtime.invoke_model(
                modelId=CLAUDE, body=orjson.dumps({"anthropic_version": "bedrock-2023-05-31"})
            )
        assert "Malformed input request" in error_of(excinfo)[1]
        with pytest.raises(runtime.exceptions.ValidationException):
            runtime.invoke_model(modelId="acme.unknown-v1", body=b"{}")
        with pytest.raises(runtime.exceptions.ValidationException) as excinfo:
            runtime.invoke_model(modelId="anthropic.claude-3-haiku-20990101-v1:0", body=b"{}")
        assert error_of(excinfo)[1] == "The provided model identifier is invalid."
        with pytest.raises(runtime.exceptions.ValidationException):
            runtime.converse(
                modelId="anthropic.claude-3-haiku-20990101-v1:0",
                messages=[{"role": "user", "content": [{"text": "hello"}]}],
            )
        with pytest.raises(runtime.exceptions.ValidationException):
            runtime.invoke_model(modelId=CLAUDE, body=b"not json")

    def test_runtime_calls_are_recorded_without_their_text(self, stack, runtime):
        runtime.invoke_model(modelId=CLAUDE, body=orjson.dumps(claude_body(RUNTIME_PROMPT)))
        recorded = stack.admin.requests("InvokeModel")[-1]
        assert recorded["params"] == {
            "modelId": CLAUDE,
            "bodyBytes": len(orjson.dumps(claude_body(RUNTIME_PROMPT))),
        }


# --- reply schemas: structured outputs, strict tools, JSON asked for in the prompt --------------------------

CLAUDE_45 = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU_45 = "anthropic.claude-haiku-4-5-20251001-v1:0"
MISTRAL_7B = "mistral.mistral-7b-instruct-v0:2"
MISTRAL_LARGE_2402 = "mistral.mistral-large-2402-v1:0"
MISTRAL_LARGE_2407 = "mistral.mistral-large-2407-v1:0"
MISTRAL_LARGE_3 = "mistral.mistral-large-3-675b-instruct"

# Inside the structured-output subset: every object closed, no numeric or length bounds.
TICKET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "description": "a few words"},
        "summary": {"type": "string"},
        "category": {"type": "string", "enum": ["hardware", "software", "network", "account"]},
        "priority": {"type": "integer", "enum": [1, 2, 3]},
        "needs_followup": {"type": "boolean"},
        "reported_on": {"type": "string", "format": "date"},
        "contact": {"anyOf": [{"type": "string", "format": "email"}, {"type": "null"}]},
        "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}, "minItems": 1},
        "labels": {"type": "array", "items": {"type": "string"}},
    },
    "required": [
        "title",
        "summary",
        "category",
        "priority",
        "needs_followup",
        "reported_on",
        "contact",
        "steps",
    ],
    "additionalProperties": False,
    "$defs": {
        "step": {
            "type": "object",
            "properties": {"action": {"type": "string"}, "done": {"type": "boolean"}},
            "required": ["action", "done"],
            "additionalProperties": False,
        }
    },
}
# Written in a prompt, a schema may use everything JSON Schema has: bounds, lengths, patterns, formats.
PROMPT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "ticket_id": {"type": "string", "pattern": "^TCK-[0-9]{5}$"},
        "summary": {"type": "string", "maxLength": 160},
        "headline": {"type": "string", "minLength": 10, "maxLength": 40},
        "category": {"type": "string", "enum": ["hardware", "software", "network", "account"]},
        "severity": {"type": "integer", "minimum": 1, "maximum": 5},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.05},
        "opened_at": {"type": "string", "format": "date-time"},
        "affected_users": {"type": ["integer", "null"], "exclusiveMinimum": 0},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 30}, "minItems": 2, "maxItems": 4},
        "owner": {
            "type": "object",
            "properties": {"team": {"type": "string"}, "email": {"type": "string", "format": "email"}},
            "required": ["team"],
        },
    },
    "required": [
        "ticket_id",
        "summary",
        "headline",
        "category",
        "severity",
        "confidence",
        "opened_at",
        "tags",
    ],
}
JSON_INSTRUCTIONS = (
    "You triage IT support tickets. Reply with one JSON object that conforms to this JSON Schema:\n"
    + orjson.dumps(PROMPT_SCHEMA, option=orjson.OPT_INDENT_2).decode()
    + "\nReply with the JSON object only, no prose."
)


def ticket(i: int) -> str:
    """A short, distinct support ticket."""
    device = ["laptop", "printer", "VPN client", "mailbox", "badge reader", "monitor"][i % 6]
    return (
        f"Ticket {i} was opened on 2025-0{1 + i % 9}-1{i % 10} by user{i}@example.org. "
        f"The {device} on floor {i % 7 + 1} stopped working after the update. "
        f"The user already restarted it {i % 4 + 1} times without success. "
        "Please check the logs and call back before noon."
    )


def user_text(i: int) -> str:
    return f"<ticket>\n{ticket(i)}\n</ticket>"


def validate(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(instance)


def invoke(runtime: Any, model: str, body: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(runtime.invoke_model(modelId=model, body=orjson.dumps(body))["body"].read())


def anthropic_request(text: str, **extra: Any) -> dict[str, Any]:
    return {**claude_body(text, max_tokens=2000), **extra}


def output_config_request(text: str, schema: dict[str, Any] = TICKET_SCHEMA) -> dict[str, Any]:
    """An Anthropic body asking for structured output with ``schema``."""
    return anthropic_request(text, output_config={"format": {"type": "json_schema", "schema": schema}})


def converse_output_config(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "textFormat": {
            "type": "json_schema",
            "structure": {"jsonSchema": {"schema": orjson.dumps(schema).decode(), "name": "ticket"}},
        }
    }


def converse_request(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"text": text}]}], **extra}


def tool_config(schema: dict[str, Any], *, strict: bool = False, **choice: Any) -> dict[str, Any]:
    """A Converse ``toolConfig`` with one tool, ``record_ticket``; ``choice`` is its ``toolChoice``."""
    spec: dict[str, Any] = {"name": "record_ticket", "inputSchema": {"json": schema}}
    if strict:
        spec["strict"] = True
    return {"tools": [{"toolSpec": spec}], **({"toolChoice": choice} if choice else {})}


STRICT_TOOL = {"name": "record_ticket", "description": "Record a triaged ticket.", "strict": True}


# Each mechanism with a model that has it: (model, how to call, request, where the answer is in the reply).
STRUCTURED_CASES: dict[str, tuple[str, str, dict[str, Any], Any]] = {
    "anthropic output_config": (
        CLAUDE_45,
        "invoke",
        output_config_request(user_text(1)),
        lambda r: orjson.loads(r["content"][0]["text"]),
    ),
    "converse outputConfig": (
        HAIKU_45,
        "converse",
        converse_request(user_text(1), outputConfig=converse_output_config(TICKET_SCHEMA)),
        lambda r: orjson.loads(r["output"]["message"]["content"][0]["text"]),
    ),
    "open-weight response_format": (
        MISTRAL_LARGE_3,
        "invoke",
        {
            "messages": [{"role": "user", "content": user_text(1)}],
            "max_tokens": 2000,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "ticket", "schema": TICKET_SCHEMA, "strict": True},
            },
        },
        lambda r: orjson.loads(r["choices"][0]["message"]["content"]),
    ),
    "anthropic strict tool": (
        CLAUDE_45,
        "invoke",
        anthropic_request(
            user_text(1),
            tools=[{**STRICT_TOOL, "input_schema": TICKET_SCHEMA}],
            tool_choice={"type": "tool", "name": "record_ticket"},
        ),
        lambda r: r["content"][0]["input"],
    ),
    "converse strict tool": (
        CLAUDE_45,
        "converse",
        converse_request(
            user_text(1), toolConfig=tool_config(TICKET_SCHEMA, strict=True, tool={"name": "record_ticket"})
        ),
        lambda r: r["output"]["message"]["content"][0]["toolUse"]["input"],
    ),
    "mistral strict tool": (
        MISTRAL_LARGE_3,
        "invoke",
        {
            "messages": [{"role": "user", "content": user_text(1)}],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "record_ticket", "parameters": TICKET_SCHEMA, "strict": True},
                }
            ],
            "tool_choice": "any",
        },
        lambda r: orjson.loads(r["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]),
    ),
    "nova tool (not strict)": (
        NOVA,
        "invoke",
        converse_request(
            user_text(1), schemaVersion="messages-v1", toolConfig=tool_config(TICKET_SCHEMA, any={})
        ),
        lambda r: r["output"]["message"]["content"][0]["toolUse"]["input"],
    ),
    "claude 3 tool (not strict)": (
        CLAUDE,
        "invoke",
        anthropic_request(user_text(1), tools=[{"name": "record_ticket", "input_schema": TICKET_SCHEMA}]),
        lambda r: r["content"][0]["input"],
    ),
}


def call(runtime: Any, model: str, how: str, request: dict[str, Any]) -> dict[str, Any]:
    if how == "invoke":
        return invoke(runtime, model, request)
    response = runtime.converse(modelId=model, **request)
    response.pop("ResponseMetadata")
    return response


class TestStructuredOutputs:
    @pytest.mark.parametrize("case", list(STRUCTURED_CASES))
    def test_each_mechanism_answers_valid_against_its_schema(self, runtime, case):
        model, how, request, extract = STRUCTURED_CASES[case]

        reply = call(runtime, model, how, request)

        answer = extract(reply)
        validate(answer, TICKET_SCHEMA)
        assert answer["summary"].split(". ")[0] in ticket(1), "strings are drawn from the input"
        assert answer["reported_on"] == "2025-02-11", "a date in the input answers a date field"
        assert call(runtime, model, how, request) == reply, "the same request gets the same reply"

    def test_tool_calls_have_each_familys_shape(self, runtime):
        anthropic = call(runtime, *STRUCTURED_CASES["anthropic strict tool"][:3])
        assert anthropic["stop_reason"] == "tool_use"
        assert anthropic["content"][0]["type"] == "tool_use"
        assert anthropic["content"][0]["name"] == "record_ticket"
        assert anthropic["content"][0]["id"].startswith("toolu_")
        converse = call(runtime, *STRUCTURED_CASES["converse strict tool"][:3])
        assert converse["stopReason"] == "tool_use"
        assert converse["output"]["message"]["content"][0]["toolUse"]["name"] == "record_ticket"
        mistral = call(runtime, *STRUCTURED_CASES["mistral strict tool"][:3])
        assert mistral["choices"][0]["stop_reason"] == "tool_calls"
        assert mistral["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "record_ticket"
        none = anthropic_request(
            user_text(1),
            tools=[{"name": "record_ticket", "input_schema": TICKET_SCHEMA}],
            tool_choice={"type": "none"},
        )
        assert invoke(runtime, CLAUDE, none)["content"][0]["type"] == "text"

    def test_different_inputs_get_different_answers(self, runtime):
        answers = []
        for i in range(12):
            body = output_config_request(user_text(i))
            answer = orjson.loads(invoke(runtime, CLAUDE_45, body)["content"][0]["text"])
            validate(answer, TICKET_SCHEMA)
            answers.append(answer)
        assert len({a["category"] for a in answers}) > 1
        assert len({a["priority"] for a in answers}) > 1
        assert len({a["summary"] for a in answers}) == 12

    @pytest.mark.parametrize(
        ("schema", "message"),
        [
            ({"type": "array", "items": {"type": "string"}}, 'the root schema must have "type": "object"'),
            (
                {"type": "object", "properties": {"a": {"type": "string"}}},
                "For 'object' type, 'additionalProperties' must be explicitly set to false",
            ),
            (
                {
                    "type": "object",
                    "properties": {"a": {"type": "object", "properties": {}, "additionalProperties": True}},
                    "additionalProperties": False,
                },
                "'additionalProperties: true' is not supported",
            ),
            (
                {
                    "type": "object",
                    "properties": {"n": {"type": "integer", "minimum": 1}},
                    "additionalProperties": False,
                },
                "For 'integer' type, property 'minimum' is not supported (at #/properties/n)",
            ),
            (
                {
                    "type": "object",
                    "properties": {"s": {"type": "string", "maxLength": 9}},
                    "additionalProperties": False,
                },
                "For 'string' type, property 'maxLength' is not supported",
            ),
            (
                {
                    "type": "object",
                    "properties": {"l": {"type": "array", "items": {"type": "string"}, "minItems": 2}},
                    "additionalProperties": False,
                },
                "'minItems' values other than 0 or 1 are not supported",
            ),
            (
                {
                    "type": "object",
                    "properties": {"o": {"oneOf": [{"type": "string"}]}},
                    "additionalProperties": False,
                },
                "property 'oneOf' is not supported",
            ),
            (
                {"type": "object", "properties": {"e": {"enum": [{"x": 1}]}}, "additionalProperties": False},
                "'enum' values must be strings, numbers, booleans or null",
            ),
            (
                {
                    "type": "object",
                    "properties": {"f": {"type": "string", "format": "iban"}},
                    "additionalProperties": False,
                },
                "format 'iban' is not supported",
            ),
            (
                {
                    "type": "object",
                    "properties": {"p": {"type": "string", "pattern": "^(?!x)"}},
                    "additionalProperties": False,
                },
                "pattern",
            ),
            (
                {
                    "type": "object",
                    "properties": {"r": {"$ref": "https://example.com/s.json"}},
                    "additionalProperties": False,
                },
                "only internal references",
            ),
            (
                {
                    "type": "object",
                    "properties": {"node": {"$ref": "#/$defs/node"}},
                    "additionalProperties": False,
                    "$defs": {
                        "node": {
                            "type": "object",
                            "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                            "additionalProperties": False,
                        }
                    },
                },
                "Recursive schemas are not supported",
            ),
        ],
    )
    def test_schema_outside_the_subset_is_a_400(self, runtime, schema, message):
        body = output_config_request("hi", schema)
        with pytest.raises(runtime.exceptions.ValidationException) as excinfo:
            runtime.invoke_model(modelId=CLAUDE_45, body=orjson.dumps(body))
        text = error_of(excinfo)[1]
        assert text.startswith("output_config.format.schema: ")
        assert message in text
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    OPEN_OBJECT = {"type": "object", "properties": {"a": {"type": "string"}}}

    @pytest.mark.parametrize(
        ("model", "how", "request_body", "where"),
        [
            (
                HAIKU_45,
                "converse",
                converse_request("hi", outputConfig=converse_output_config(OPEN_OBJECT)),
                "outputConfig.textFormat.structure.jsonSchema.schema",
            ),
            (
                MISTRAL_LARGE_3,
                "invoke",
                {
                    "messages": [{"role": "user", "content": "hi"}],
                    "response_format": {
                        "type": "json_schema",
                        "json_schema": {"name": "x", "schema": OPEN_OBJECT},
                    },
                },
                "response_format.json_schema.schema",
            ),
            (
                CLAUDE_45,
                "invoke",
                anthropic_request("hi", tools=[{**STRICT_TOOL, "input_schema": OPEN_OBJECT}]),
                "tools.0.input_schema",
            ),
            (
                CLAUDE_45,
                "converse",
                converse_request("hi", toolConfig=tool_config(OPEN_OBJECT, strict=True)),
                "toolConfig.tools.0.toolSpec.inputSchema.json",
            ),
        ],
    )
    def test_every_mechanism_checks_the_subset(self, runtime, model, how, request_body, where):
        with pytest.raises(runtime.exceptions.ValidationException) as excinfo:
            call(runtime, model, how, request_body)
        assert error_of(excinfo)[1] == (
            f"{where}: For 'object' type, 'additionalProperties' must be explicitly set to false (at #)"
        )

    @pytest.mark.parametrize(
        ("model", "how", "request_body", "message"),
        [
            (
                CLAUDE,
                "invoke",
                output_config_request("hi"),
                "Malformed input request: #: extraneous key [output_config] is not permitted",
            ),
            (
                "us.anthropic.claude-sonnet-4-20250514-v1:0",
                "invoke",
                anthropic_request("hi", tools=[{**STRICT_TOOL, "input_schema": TICKET_SCHEMA}]),
                "Malformed input request: #/tools/0: extraneous key [strict] is not permitted",
            ),
            (
                CLAUDE,
                "converse",
                converse_request("hi", outputConfig=converse_output_config(TICKET_SCHEMA)),
                "This model doesn't support the outputConfig.textFormat field. "
                "Remove outputConfig.textFormat and try again.",
            ),
            (
                NOVA,
                "converse",
                converse_request("hi", toolConfig=tool_config(TICKET_SCHEMA, strict=True)),
                "This model doesn't support the toolConfig.tools.0.toolSpec.strict field.",
            ),
            (
                LLAMA,
                "invoke",
                {
                    "prompt": "hi",
                    "response_format": {"type": "json_schema", "json_schema": {"schema": TICKET_SCHEMA}},
                },
                "Malformed input request: #: extraneous key [response_format] is not permitted",
            ),
            (
                MISTRAL_LARGE_2407,
                "invoke",
                {
                    "messages": [{"role": "user", "content": "hi"}],
                    "response_format": {"type": "json_schema", "json_schema": {"schema": TICKET_SCHEMA}},
                },
                "extraneous key [response_format] is not permitted",
            ),
            (
                TITAN,
                "converse",
                converse_request("hi", toolConfig=tool_config(TICKET_SCHEMA)),
                "This model doesn't support tool use.",
            ),
        ],
    )
    def test_a_model_without_the_feature_refuses_it(self, runtime, model, how, request_body, message):
        with pytest.raises(runtime.exceptions.ValidationException) as excinfo:
            call(runtime, model, how, request_body)
        assert message in error_of(excinfo)[1]

    def test_runtime_converse_takes_tools_a_converse_batch_job_refuses(self, runtime, bedrock, s3):
        tools = tool_config(TICKET_SCHEMA, any={})
        reply = runtime.converse(modelId=HAIKU_45, **converse_request(user_text(3), toolConfig=tools))
        validate(reply["output"]["message"]["content"][0]["toolUse"]["input"], TICKET_SCHEMA)

        def body(i: int) -> dict[str, Any]:
            if i % 2:
                return converse_request(user_text(i), toolConfig=tools)
            return converse_request(user_text(i), outputConfig=converse_output_config(TICKET_SCHEMA))

        put_records(s3, "converse-tools/in.jsonl", 100, body=body)
        arn = submit(
            bedrock,
            "converse-tools",
            "converse-tools/in.jsonl",
            model=HAIKU_45,
            modelInvocationType="Converse",
        )

        job = wait_for(bedrock, arn)

        assert job["status"] == "Completed"
        assert (job["successRecordCount"], job["errorRecordCount"]) == (50, 50)
        for line in read_lines(s3, f"converse-tools/{job_id(arn)}/in.jsonl.out"):
            if "toolConfig" in line["modelInput"]:
                assert line["error"]["errorCode"] == 400
                assert "toolConfig" in line["error"]["errorMessage"]
                assert "Converse invocation type" in line["error"]["errorMessage"]
            else:
                validate(
                    orjson.loads(line["modelOutput"]["output"]["message"]["content"][0]["text"]),
                    TICKET_SCHEMA,
                )

    def test_batch_job_answers_structured_records_and_refuses_bad_schemas_per_record(self, bedrock, s3):
        def body(i: int) -> dict[str, Any]:
            schema = TICKET_SCHEMA if i % 10 else {**TICKET_SCHEMA, "additionalProperties": True}
            return output_config_request(user_text(i), schema)

        put_records(s3, "structured/in.jsonl", 100, body=body)
        arn = submit(bedrock, "structured-job", "structured/in.jsonl", model=CLAUDE_45)

        job = wait_for(bedrock, arn)

        assert job["status"] == "Completed", "bad schemas fail their records, not the job"
        assert (job["successRecordCount"], job["errorRecordCount"]) == (90, 10)
        lines = read_lines(s3, f"structured-job/{job_id(arn)}/in.jsonl.out")
        for line in lines:
            if "error" in line:
                assert line["error"]["errorCode"] == 400
                assert "'additionalProperties: true' is not supported" in line["error"]["errorMessage"]
            else:
                validate(orjson.loads(line["modelOutput"]["content"][0]["text"]), TICKET_SCHEMA)

    def test_batch_job_of_a_model_without_the_feature_fails_those_records(self, bedrock, s3):
        def body(i: int) -> dict[str, Any]:
            return output_config_request(user_text(i))

        put_records(s3, "old-model/in.jsonl", 100, body=body)
        arn = submit(bedrock, "old-model", "old-model/in.jsonl", model=CLAUDE)

        job = wait_for(bedrock, arn)

        assert job["status"] == "Completed"
        assert job["errorRecordCount"] == 100
        line = read_lines(s3, f"old-model/{job_id(arn)}/in.jsonl.out")[0]
        assert line["error"] == {
            "errorCode": 400,
            "errorMessage": "Malformed input request: #: extraneous key [output_config] is not permitted, "
            "please reformat your input and try again.",
        }


# A JSON-instruction request per family: the schema in the instructions, the ticket as data.
def _llama_prompt(i: int) -> str:
    return (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        f"{JSON_INSTRUCTIONS}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{user_text(i)}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n{"
    )


PROMPTED_CASES: dict[str, tuple[str, str, Any, Any]] = {
    "anthropic + prefill": (
        CLAUDE,
        "invoke",
        lambda i: {
            **claude_body(user_text(i), max_tokens=2000),
            "system": JSON_INSTRUCTIONS,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": user_text(i)}]},
                {"role": "assistant", "content": [{"type": "text", "text": "{"}]},
            ],
        },
        lambda r: "{" + r["content"][0]["text"],
    ),
    "nova + prefill": (
        NOVA,
        "invoke",
        lambda i: {
            "schemaVersion": "messages-v1",
            "system": [{"text": JSON_INSTRUCTIONS}],
            "messages": [
                {"role": "user", "content": [{"text": user_text(i)}]},
                {"role": "assistant", "content": [{"text": "{"}]},
            ],
            "inferenceConfig": {"maxTokens": 2000},
        },
        lambda r: "{" + r["output"]["message"]["content"][0]["text"],
    ),
    "llama (prompt ends with {)": (
        LLAMA,
        "invoke",
        lambda i: {"prompt": _llama_prompt(i), "max_gen_len": 2000},
        lambda r: "{" + r["generation"],
    ),
    "titan": (
        TITAN,
        "invoke",
        lambda i: {
            "inputText": f"{JSON_INSTRUCTIONS}\n\n{user_text(i)}\n\nBot:",
            "textGenerationConfig": {"maxTokenCount": 2000},
        },
        lambda r: r["results"][0]["outputText"],
    ),
    "mistral text completion": (
        MISTRAL_7B,
        "invoke",
        lambda i: {"prompt": f"<s>[INST] {JSON_INSTRUCTIONS}\n\n{user_text(i)} [/INST]", "max_tokens": 2000},
        lambda r: r["outputs"][0]["text"],
    ),
    "mistral chat completion": (
        MISTRAL_LARGE_2407,
        "invoke",
        lambda i: {
            "messages": [
                {"role": "system", "content": JSON_INSTRUCTIONS},
                {"role": "user", "content": user_text(i)},
            ],
            "max_tokens": 2000,
        },
        lambda r: r["choices"][0]["message"]["content"],
    ),
    "converse": (
        CLAUDE,
        "converse",
        lambda i: {
            "system": [{"text": JSON_INSTRUCTIONS}],
            "messages": [{"role": "user", "content": [{"text": user_text(i)}]}],
            "inferenceConfig": {"maxTokens": 2000},
        },
        lambda r: r["output"]["message"]["content"][0]["text"],
    ),
}


class TestJsonInstructions:
    @pytest.mark.parametrize("case", list(PROMPTED_CASES))
    def test_schema_in_the_prompt_is_answered_in_each_family(self, runtime, case):
        model, how, build, extract = PROMPTED_CASES[case]
        replies = [extract(call(runtime, model, how, build(i))) for i in range(6)]

        answers = [orjson.loads(text) for text in replies]
        for i, answer in enumerate(answers):
            validate(answer, PROMPT_SCHEMA)
            assert answer["summary"].split(". ")[0] in ticket(i)
        assert len({a["severity"] for a in answers}) > 1, "records get different answers"
        assert extract(call(runtime, model, how, build(2))) == replies[2], "and the same record the same one"

    def test_prefill_is_continued_not_repeated(self, runtime):
        model, how, build, _ = PROMPTED_CASES["anthropic + prefill"]
        text = call(runtime, model, how, build(0))["content"][0]["text"]
        assert not text.startswith("{")
        assert text.startswith('"')

    def test_call_center_schema_gets_the_summarizers_answers(self, runtime):
        schema = {
            "type": "object",
            "properties": {
                "summary": {"type": "string", "maxLength": 600},
                "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
                "primary_topic": {"type": "string"},
                "resolution": {"type": "string", "enum": ["resolved", "unresolved", "escalated"]},
                "action_items": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["summary", "sentiment", "primary_topic", "resolution", "action_items"],
            "additionalProperties": False,
        }
        system = (
            "You summarize customer-service phone calls. Reply with exactly one JSON object that conforms "
            f"to this JSON Schema:\n{orjson.dumps(schema).decode()}"
        )
        for model_call in generate_calls(8, seed=5):
            body = {
                **claude_body(
                    f"Summarize this call.\n\n<transcript>\n{model_call.transcript}\n</transcript>"
                ),
                "system": system,
            }
            answer = orjson.loads(invoke(runtime, CLAUDE, body)["content"][0]["text"])
            validate(answer, schema)
            assert answer["resolution"] == model_call.outcome
            assert answer["primary_topic"].replace(" ", "_") == model_call.scenario
            assert answer["summary"].split(". ")[0] in model_call.transcript
            assert all(item in model_call.transcript for item in answer["action_items"])


class TestMistral:
    def test_text_completion_body(self, runtime):
        prompt = f"<s>[INST] {RUNTIME_PROMPT} [/INST]"
        reply = invoke(runtime, MISTRAL_7B, {"prompt": prompt, "max_tokens": 600})
        assert set(reply) == {"outputs"}
        assert reply["outputs"][0]["stop_reason"] == "stop"
        answer = orjson.loads(reply["outputs"][0]["text"])
        assert answer["topic"].replace(" ", "_") == CALL.scenario
        cut = invoke(runtime, MISTRAL_7B, {"prompt": prompt, "max_tokens": 5})
        assert cut["outputs"][0]["stop_reason"] == "length"
        assert len(cut["outputs"][0]["text"]) <= 20

    def test_chat_completion_body(self, runtime):
        body = {"messages": [{"role": "user", "content": RUNTIME_PROMPT}], "max_tokens": 600}
        reply = invoke(runtime, MISTRAL_LARGE_2407, body)
        assert set(reply) == {"choices"}
        choice = reply["choices"][0]
        assert (choice["index"], choice["message"]["role"], choice["stop_reason"]) == (0, "assistant", "stop")
        assert orjson.loads(choice["message"]["content"])["resolution"] == CALL.outcome

    def test_each_model_takes_its_own_body_kind(self, runtime):
        chat = {"messages": [{"role": "user", "content": "hello"}]}
        text = {"prompt": "<s>[INST] hello [/INST]"}
        with pytest.raises(runtime.exceptions.ValidationException) as excinfo:
            invoke(runtime, MISTRAL_7B, chat)
        assert "required key [prompt] not found" in error_of(excinfo)[1]
        with pytest.raises(runtime.exceptions.ValidationException) as excinfo:
            invoke(runtime, MISTRAL_LARGE_2407, text)
        assert "required key [messages] not found" in error_of(excinfo)[1]
        assert "choices" in invoke(runtime, MISTRAL_LARGE_2402, chat)
        assert "outputs" in invoke(runtime, MISTRAL_LARGE_2402, text)

    def test_batch_job_with_a_mistral_model(self, bedrock, s3):
        put_records(
            s3, "mistral/in.jsonl", 100, body=lambda i: {"prompt": f"<s>[INST] {RUNTIME_PROMPT} [/INST]"}
        )
        arn = submit(bedrock, "mistral-job", "mistral/in.jsonl", model=MISTRAL_7B)
        assert wait_for(bedrock, arn)["status"] == "Completed"
        line = read_lines(s3, f"mistral-job/{job_id(arn)}/in.jsonl.out")[0]
        assert line["modelOutput"]["outputs"][0]["stop_reason"] == "stop"


class TestInvalidReplies:
    @staticmethod
    def breaks(answer_text: str, schema: dict[str, Any]) -> str | None:
        """How a reply breaks the schema (the failing keyword, or "not json"), ``None`` if it is valid."""
        try:
            answer = orjson.loads(answer_text)
        except orjson.JSONDecodeError:
            return "not json"
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(answer))
        return None if error is None else str(error.validator)

    def test_runtime_share_kinds_and_determinism(self, stack, runtime):
        EmulatorAdmin.over_http(stack.bedrock_endpoint_url).set_faults(invalid_reply_rate=0.3, seed=4)
        model, how, build, extract = PROMPTED_CASES["mistral chat completion"]

        def run(count: int) -> list[str]:
            return [extract(call(runtime, model, how, build(i))) for i in range(count)]

        first = run(120)
        kinds = [self.breaks(text, PROMPT_SCHEMA) for text in first]
        broken = [k for k in kinds if k is not None]
        assert 20 <= len(broken) <= 52, len(broken)
        assert {"not json", "enum", "maximum", "required"} <= set(broken), set(broken)
        assert run(40) == first[:40], "the same request is broken the same way"

    def test_batch_structured_replies_stay_json_and_break_the_schema(self, stack, bedrock, s3):
        stack.admin.set_faults(invalid_reply_rate=0.25, seed=9)

        def body(i: int) -> dict[str, Any]:
            return output_config_request(user_text(i))

        put_records(s3, "invalid/in.jsonl", 200, body=body)
        arn = submit(bedrock, "invalid-replies", "invalid/in.jsonl", model=CLAUDE_45)

        job = wait_for(bedrock, arn)

        assert (job["status"], job["successRecordCount"]) == ("Completed", 200), (
            "an invalid reply is a success"
        )
        lines = read_lines(s3, f"invalid-replies/{job_id(arn)}/in.jsonl.out")
        kinds = [self.breaks(line["modelOutput"]["content"][0]["text"], TICKET_SCHEMA) for line in lines]
        broken = [k for k in kinds if k is not None]
        assert 25 <= len(broken) <= 75, len(broken)
        assert "not json" not in broken, "constrained decoding always yields JSON"
        assert {"enum", "type", "required"} <= set(broken), set(broken)

    def test_call_center_json_without_a_schema_is_broken_too(self, stack, runtime):
        stack.admin.set_faults(invalid_reply_rate=1.0)
        kinds = set()
        for number, model_call in enumerate(generate_calls(12, seed=5)):
            body = claude_body(PROMPT + model_call.transcript + f"\n(call {number})")
            text = invoke(runtime, CLAUDE, body)["content"][0]["text"]
            try:
                answer = orjson.loads(text)
            except orjson.JSONDecodeError:
                kinds.add("not json")
                continue
            keys = {"summary", "sentiment", "topic", "resolution", "action_items"}
            kinds.add(
                "label" if "unclear" in answer.values() else "missing" if set(answer) < keys else "valid"
            )
        assert kinds == {"not json", "label", "missing"}

    def test_rate_is_validated(self, stack):
        with pytest.raises(EmulatorAdminError, match="between 0 and 1"):
            stack.admin.set_faults(invalid_reply_rate=1.5)


# --- admin and command line -------------------------------------------------------------------------------


class TestAdmin:
    def test_http_admin_offers_the_same_view_and_controls(self, stack, bedrock, s3):
        remote = EmulatorAdmin.over_http(stack.bedrock_endpoint_url)
        put_records(s3, "admin/in.jsonl", 100)
        wait_for(bedrock, submit(bedrock, "admin-job", "admin/in.jsonl"))

        assert remote.jobs() == stack.admin.jobs()
        assert remote.created_job_count() == 1
        assert remote.set_faults(record_error_rate=0.25)["record_error_rate"] == 0.25
        assert stack.admin.faults()["record_error_rate"] == 0.25
        assert remote.set_time_scale(42.0)["time_scale"] == 42.0
        assert remote.health() == {"status": "ok"}
        with pytest.raises(EmulatorAdminError, match="unknown"):
            remote.set_faults(no_such_fault=1)
        with pytest.raises(EmulatorAdminError, match="between 0 and 1"):
            remote.set_faults(record_error_rate=2)
        with pytest.raises(EmulatorAdminError, match="unknown"):
            stack.admin.configure(no_such_setting=1)

        remote.reset()
        assert stack.admin.jobs() == []
        assert stack.admin.faults()["record_error_rate"] == 0.0
        assert stack.admin.config()["time_scale"] == 1000.0


class TestCommandLine:
    def test_runs_in_the_foreground_until_interrupted(self, monkeypatch):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env = dict(os.environ)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bedrock_batch_dev.emulator",
                "--port",
                "0",
                "--s3-port",
                "0",
                "--record-error-rate",
                "0.5",
                "--invalid-reply-rate",
                "0.25",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert process.stdout is not None
            ready = process.stdout.readline()
            assert ready.startswith("local stack ready:"), process.stderr.read() if process.stderr else ready
            endpoints = dict(part.split("=", 1) for part in ready.split(":", 1)[1].split())
            admin = EmulatorAdmin.over_http(endpoints["bedrock"])
            assert admin.faults()["record_error_rate"] == 0.5
            assert admin.faults()["invalid_reply_rate"] == 0.25

            configure = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bedrock_batch_dev.emulator",
                    "--configure",
                    endpoints["bedrock"],
                    "--throttle-rate",
                    "0.2",
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            assert configure.returncode == 0
            assert admin.faults()["throttle_rate"] == 0.2

            s3 = boto3.client("s3", endpoint_url=endpoints["s3"], region_name="us-east-1")
            s3.create_bucket(Bucket="cli-bucket")
            assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["cli-bucket"]
        finally:
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0
        assert "Traceback" not in stderr
        assert "stopping the local stack" in stderr
