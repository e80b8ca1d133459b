"""Security checks of a whole run: log hygiene, S3 keys from hostile ids, KMS key and bucket owners, secrets.

One run of the call-center DAG, every log record captured at DEBUG, serves the log, key and secret checks.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pendulum
import pytest

from tests.conftest import connection_json
from tests.reliability.harness import (
    REPO,
    RESULTS_BUCKET,
    SOURCE_BUCKET,
    STAGING_BUCKET,
    all_xcoms,
    assert_every_record_once,
    assert_no_duplicate_jobs,
    call_rows,
    load_test_dag_module,
    prepare_stack,
    put_jsonl,
    read_partition,
    read_report,
    run_dag,
    transcript,
    use_config,
    xcoms,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DS = "2026-08-01"
SALT = "S"
# Source ids an upstream system (or an attacker) could put in the id column.
HOSTILE_IDS = (
    "../../../etc/passwd",
    "/etc/shadow",
    "..",
    "a/../../b",
    "nul\x00byte",
    "new\nline",
    "tab\tand\rreturn",
    "\u202eright-to-left",
    "C:\\Windows\\system32",
    "%2e%2e%2fescape",
    "s3://another-bucket/key",
    "?query=1#fragment",
    "x" * 1500,
)
# Made-up credentials in the AWS formats, assembled at run time so this file holds no key pattern itself.
ACCESS_KEY_ID = "AKIA" + "RELIABILITY2TEST"
SECRET_ACCESS_KEY = "Zq9" + "reliabilitySecretKey/ExampleOnly+0123456"
AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b")
AWS_SECRET = re.compile(r"(?i)aws.{0,20}(?:secret|session).{0,20}['\"=:\s]+[A-Za-z0-9/+=]{40}\b")
PRIVATE_KEY = re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----")
MARKER = re.compile(rf"QX{SALT}\d{{5}}ZEBRAQUOKKA")


def prompt_sentences() -> list[str]:
    """Distinctive sentences of the shipped prompt (system and user parts) that no log line may hold."""
    root = REPO / "include" / "prompts" / "call_center_summary" / "v1"
    text = (root / "system.txt").read_text() + "\n" + (root / "user.txt").read_text()
    sentences = re.split(r"(?<=[.:])\s+", text)
    return [s.strip() for s in sentences if len(s.strip()) >= 20 and not re.search(r"[\"{}<>]", s)]


@dataclass
class CapturedRun:
    """Everything one DAG run left behind that a secret or a transcript could leak into."""

    dag_run: Any
    inputs: list[dict[str, Any]]
    task_output: str
    records: list[logging.LogRecord]
    partition: list[dict[str, Any]]
    report: dict[str, Any]
    report_markdown: str
    xcoms: list[tuple[str, str, int, Any]]
    keys: list[str]
    jobs: list[dict[str, Any]]

    def lines(self, *, min_level: int = logging.DEBUG, exclude: tuple[str, ...] = ()) -> Iterator[str]:
        """The task output's lines, then every captured record at ``min_level`` or above, formatted."""
        formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
        yield from self.task_output.splitlines()
        for record in self.records:
            if record.levelno >= min_level and not record.name.startswith(exclude):
                yield formatter.format(record)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def every_log_record_at_debug() -> Iterator[_Collect]:
    """Collect every record of every logger at DEBUG (loggers that set their own level included)."""
    handler = _Collect()
    root = logging.getLogger()
    loggers = [root, *(v for v in logging.root.manager.loggerDict.values() if isinstance(v, logging.Logger))]
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        if logger.level != logging.NOTSET:
            logger.setLevel(logging.DEBUG)
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger, level in levels.items():
            logger.setLevel(level)


@pytest.fixture(scope="module")
def captured_run(
    local_stack: Any, airflow_home: Any, tmp_path_factory: pytest.TempPathFactory
) -> CapturedRun:
    """One run over marked transcripts and hostile ids, with made-up credentials, every log captured."""
    stack = prepare_stack(local_stack)
    with pytest.MonkeyPatch.context() as monkeypatch:
        connection = orjson.loads(connection_json(stack))
        connection.update(login=ACCESS_KEY_ID, password=SECRET_ACCESS_KEY)
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", orjson.dumps(connection).decode())
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        use_config(tmp_path_factory.mktemp("config"), monkeypatch, quotas={"max_records_per_job": 100})
        s3 = stack.client("s3")
        # 100 records for a batch job, the rest (hostile ids included) through the on-demand fallback.
        inputs = call_rows(120, salt=SALT)
        inputs += [
            {"call_id": hostile, "transcript": transcript(500 + i, SALT)}
            for i, hostile in enumerate(HOSTILE_IDS)
        ]
        put_jsonl(s3, DS, inputs)

        stdout, stderr = io.StringIO(), io.StringIO()
        with (
            every_log_record_at_debug() as collected,
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            dag_run = run_dag(DS)
        assert dag_run.state == "success", stdout.getvalue()[-3000:]
        assert_no_duplicate_jobs(stack, [dag_run])
        keys = [
            item["Key"]
            for bucket in (STAGING_BUCKET, RESULTS_BUCKET)
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])
        ]
        report_md = s3.get_object(Bucket=RESULTS_BUCKET, Key=f"analytics/reports/ds={DS}/run_report.md")
        return CapturedRun(
            dag_run=dag_run,
            inputs=inputs,
            task_output=stdout.getvalue() + stderr.getvalue(),
            records=collected.records,
            partition=read_partition(s3, DS),
            report=read_report(s3, DS),
            report_markdown=report_md["Body"].read().decode(),
            xcoms=all_xcoms(dag_run),
            keys=keys,
            jobs=stack.admin.jobs(),
        )


# --- logs ------------------------------------------------------------------------------------------------


def leaks(lines: Iterator[str], needles: list[str]) -> list[str]:
    """The lines that hold a transcript marker or one of ``needles`` (cut short for the message)."""
    found = []
    for line in lines:
        if MARKER.search(line) or any(needle in line for needle in needles):
            found.append(line[:300])
    return found


class PromptInSdkDebugLog(AssertionError):
    """A DEBUG line of the AWS SDK holds prompt or transcript text."""


class TestLogHygiene:
    def needles(self, run: CapturedRun) -> list[str]:
        outputs = {r["summary"] for r in run.partition if r["summary"]}
        assert outputs, "no model output was published: nothing to look for"
        return [*prompt_sentences(), "shows a double charge for last month", *outputs]

    def test_the_capture_sees_task_logs_and_debug_records(self, captured_run):
        # The checks below prove something only if the run's logs were really captured.
        assert "Run report for" in captured_run.task_output
        assert "Shard 1: submitted job" in captured_run.task_output
        assert any(r.levelno == logging.DEBUG for r in captured_run.records)
        assert any(r.name.startswith("bedrock_batch.") for r in captured_run.records)
        assert len(prompt_sentences()) >= 5
        assert all(MARKER.search(r["summary"]) for r in captured_run.partition if r["status"] == "succeeded")

    def test_no_transcript_prompt_or_model_output_in_any_log_line(self, captured_run):
        needles = self.needles(captured_run)
        # Task logs, every record at INFO and above, and every DEBUG record except the AWS SDK's own wire
        # logging (the next test).
        assert leaks(captured_run.lines(min_level=logging.INFO), needles) == []
        assert leaks(captured_run.lines(exclude=("botocore.", "aiobotocore.")), needles) == []

    def test_no_prompt_in_the_aws_sdk_debug_lines(self, captured_run):
        sdk = [r for r in captured_run.records if r.name.startswith(("botocore.", "aiobotocore."))]
        assert sdk, "no AWS SDK record was captured"
        found = {r.name for r in sdk if leaks(iter([r.getMessage()]), self.needles(captured_run))}
        if found:
            raise PromptInSdkDebugLog(f"prompt text in DEBUG records of {sorted(found)}")


# --- S3 keys ---------------------------------------------------------------------------------------------

UNSAFE_KEY = re.compile(r"(^/)|(^|/)\.\.?(/|$)|//|[\x00-\x1f\x7f\\]|[^\x20-\x7e]")


class TestKeysFromHostileIds:
    def test_hostile_ids_are_published_as_data_never_as_keys(self, captured_run, local_stack):
        assert len(captured_run.keys) > 5
        unsafe = [key for key in captured_run.keys if UNSAFE_KEY.search(key)]
        assert unsafe == []
        for hostile in HOSTILE_IDS:
            fragments = [f for f in re.split(r"[/\\.]+", hostile) if len(f) >= 4]
            assert not [k for k in captured_run.keys if any(f in k for f in fragments)], hostile
        # Each hostile id is one row of the table, unchanged, and processed like any other.
        s3 = local_stack.client("s3")
        result = assert_every_record_once(s3, DS, [r["call_id"] for r in captured_run.inputs])
        rows = {r["call_id"]: r for r in result.rows}
        assert {rows[h]["status"] for h in HOSTILE_IDS} == {"succeeded"}
        assert all(re.fullmatch(r"[0-9A-Za-z]{11}", rows[h]["record_id"]) for h in HOSTILE_IDS)

    def test_job_names_and_tags_stay_within_the_service_patterns(self, captured_run):
        from bedrock_batch.jobs import JOB_NAME_PATTERN

        assert captured_run.jobs
        for job in captured_run.jobs:
            assert JOB_NAME_PATTERN.fullmatch(job["jobName"])
            for tag in job["tags"]:
                assert re.fullmatch(r"[a-zA-Z0-9\s._:/=+@-]*", tag["value"]), tag


# --- credentials -----------------------------------------------------------------------------------------


def secrets_in(text: str) -> list[str]:
    found = [m.group(0) for m in AWS_KEY_ID.finditer(text)]
    found += [m.group(0)[:60] for m in AWS_SECRET.finditer(text)]
    found += [m.group(0) for m in PRIVATE_KEY.finditer(text)]
    found += [s for s in (ACCESS_KEY_ID, SECRET_ACCESS_KEY) if s in text]
    return found


class TestNoCredentials:
    def test_the_patterns_find_the_run_credentials(self):
        assert secrets_in(f"key {ACCESS_KEY_ID} secret {SECRET_ACCESS_KEY}")
        assert secrets_in(f'aws_secret_access_key = "{"A" * 40}"')

    def test_not_in_the_xcoms_of_the_run(self, captured_run):
        assert {task for task, *_ in captured_run.xcoms} >= {"prepare", "submit", "collect", "publish"}
        serialized = orjson.dumps([list(x) for x in captured_run.xcoms], default=str).decode()
        assert secrets_in(serialized) == []

    def test_not_in_the_run_report(self, captured_run):
        assert captured_run.report["accounted"] is True
        assert secrets_in(orjson.dumps(captured_run.report).decode()) == []
        assert secrets_in(captured_run.report_markdown) == []

    def test_not_in_the_logs(self, captured_run):
        # The secret key never: SigV4 signs with it but never sends it.
        assert SECRET_ACCESS_KEY not in "\n".join(captured_run.lines())
        # The access key id is not secret, but is kept out of every line except botocore's own DEBUG dump
        # of the signed request (its Authorization header names the key id in the credential scope).
        assert secrets_in("\n".join(captured_run.lines(min_level=logging.INFO))) == []
        assert secrets_in("\n".join(captured_run.lines(exclude=("botocore.endpoint",)))) == []

    def test_not_in_the_repository(self):
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
        files = [REPO / name.decode() for name in listed if name]
        assert len(files) > 50
        found = {}
        for path in files:
            if not path.is_file() or path.stat().st_size > 5_000_000:
                continue
            text = path.read_bytes().decode("utf-8", "replace")
            if hits := secrets_in(text):
                found[str(path.relative_to(REPO))] = hits
        assert found == {}


# --- KMS key and bucket owners ---------------------------------------------------------------------------


class TestKmsKeyAndBucketOwners:
    def test_passed_to_every_create_call_and_applied_to_the_output(
        self, local_stack, aws_connection, airflow_home
    ):
        stack = prepare_stack(local_stack)
        config = load_test_dag_module("reliability_encrypted_submit")
        s3 = stack.client("s3")
        shards = []
        for number in (1, 2):
            lines = b"".join(
                orjson.dumps(
                    {
                        "recordId": f"K{number}{n:09d}",
                        "modelInput": {
                            "anthropic_version": "bedrock-2023-05-31",
                            "max_tokens": 64,
                            "messages": [
                                {"role": "user", "content": [{"type": "text", "text": transcript(n)}]}
                            ],
                        },
                    }
                )
                + b"\n"
                for n in range(100)
            )
            s3.put_object(Bucket=STAGING_BUCKET, Key=f"kms/shard-{number:04d}/part-0001.jsonl", Body=lines)
            shards.append(
                {
                    "shard": number,
                    "input_uri": f"s3://{STAGING_BUCKET}/kms/shard-{number:04d}/",
                    "output_uri": f"s3://{STAGING_BUCKET}/kms/output/",
                    "records": 100,
                    "fingerprint": f"{number:064x}",
                }
            )
        # Throttled and retried creates must carry the settings too.
        stack.admin.set_faults(throttle_rate=0.3, seed=11)

        dag_run = config.dag.test(logical_date=pendulum.parse("2026-08-02"), run_conf={"shards": shards})

        assert dag_run.state == "success"
        creates = stack.admin.requests("CreateModelInvocationJob")
        assert len(creates) >= 2
        for call in creates:
            params = call["params"]
            output = params["outputDataConfig"]["s3OutputDataConfig"]
            assert output["s3EncryptionKeyId"] == config.OUTPUT_KMS_KEY_ID
            assert output["s3BucketOwner"] == config.ACCOUNT_ID
            assert params["inputDataConfig"]["s3InputDataConfig"]["s3BucketOwner"] == config.ACCOUNT_ID
        # moto's side: every object the jobs wrote is encrypted with that key.
        written = []
        for result in xcoms(dag_run, "submit").values():
            bucket, _, prefix = result["output_uri"].removeprefix("s3://").partition("/")
            for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
                head = s3.head_object(Bucket=bucket, Key=item["Key"])
                written.append((head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")))
        assert len(written) == 4  # one .out file and one manifest per job
        assert set(written) == {("aws:kms", config.OUTPUT_KMS_KEY_ID)}


# --- ... through a whole run of the call-center DAG, on the wire -----------------------------------------

OWNED_DS = "2026-08-03"
# moto's account: it owns every bucket it creates (S3 refuses a request whose expected owner differs).
BUCKET_OWNER = "123456789012"
KMS_KEY_ID = f"arn:aws:kms:us-east-1:{BUCKET_OWNER}:key/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
OWNER_HEADER = "x-amz-expected-bucket-owner"
SOURCE_OWNER_HEADER = "x-amz-source-expected-bucket-owner"
SSE_HEADER = "x-amz-server-side-encryption"
SSE_KEY_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"
# The S3 operations whose input has no ExpectedBucketOwner in botocore's service model (asserted below). The
# library calls none of them, so every request it sends must carry the header.
WITHOUT_EXPECTED_OWNER = frozenset(
    {
        "CreateBucket",
        "CreateSession",
        "ListBuckets",
        "ListDirectoryBuckets",
        "RenameObject",
        "WriteGetObjectResponse",
    }
)
# The requests that create an object: they must ask for SSE-KMS with the configured key.
OBJECT_WRITES = frozenset({"PutObject", "CreateMultipartUpload", "CopyObject"})
# Job slot objects (bedrock_batch.slots) are read and written by the submit operator's JobSlots.
SLOTS_FOLDER = "/_job_slots/"


def s3_operations_accepting_the_owner() -> set[str]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("s3")
    return {
        name
        for name in model.operation_names
        if model.operation_model(name).input_shape is not None
        and "ExpectedBucketOwner" in model.operation_model(name).input_shape.members
    }


def owner_and_key_problems(requests: list[Any]) -> list[str]:
    """Every way ``requests`` (recorded by the proxy) fall short of the owner and key settings."""
    accepting = s3_operations_accepting_the_owner()
    problems = []
    for request in requests:
        where = f"{request.operation} {request.method} {request.path}"
        if request.operation.startswith("Unknown"):
            problems.append(f"{where}: not an operation this test knows")
        if request.bucket not in (SOURCE_BUCKET, STAGING_BUCKET, RESULTS_BUCKET):
            problems.append(f"{where}: a bucket outside the run's three")
        if request.operation in accepting and request.headers.get(OWNER_HEADER) != BUCKET_OWNER:
            problems.append(f"{where}: {OWNER_HEADER} is {request.headers.get(OWNER_HEADER)!r}")
        if request.operation in OBJECT_WRITES:
            sse = (request.headers.get(SSE_HEADER), request.headers.get(SSE_KEY_HEADER))
            if sse != ("aws:kms", KMS_KEY_ID):
                problems.append(f"{where}: server-side encryption {sse}")
        if request.operation == "CopyObject" and request.headers.get(SOURCE_OWNER_HEADER) != BUCKET_OWNER:
            problems.append(f"{where}: {SOURCE_OWNER_HEADER} is {request.headers.get(SOURCE_OWNER_HEADER)!r}")
    return problems


@dataclass
class OwnedRun:
    """A run of the call-center DAG with a KMS key and an expected bucket owner, and what it sent to S3."""

    dag_run: Any
    rows: list[dict[str, Any]]
    requests: list[Any]  # every S3 request of the Airflow connection, recorded by the proxy
    creates: list[dict[str, Any]]  # CreateModelInvocationJob calls recorded by the emulator
    stale_key: str

    def library(self) -> list[Any]:
        """The requests of Storage (every task), without the submit tasks' job slots."""
        return [r for r in self.requests if SLOTS_FOLDER not in r.path]

    def slots(self) -> list[Any]:
        return [r for r in self.requests if SLOTS_FOLDER in r.path]


@pytest.fixture(scope="module")
def owned_run(local_stack: Any, airflow_home: Any, tmp_path_factory: pytest.TempPathFactory) -> OwnedRun:
    """One run with ``kms_key_id`` and ``expected_bucket_owner`` set.

    Only the Airflow connection's S3 endpoint goes through the recording proxy, so every recorded request is
    one our code sent (the emulator reads and writes S3 as the Bedrock service, straight to moto).
    """
    from bedrock_batch import storage as storage_module
    from tests.reliability.s3_proxy import RecordingS3Proxy

    stack = prepare_stack(local_stack)
    s3 = stack.client("s3")
    with RecordingS3Proxy(stack.s3_endpoint_url) as proxy, pytest.MonkeyPatch.context() as monkeypatch:
        connection = orjson.loads(connection_json(stack))
        connection["extra"]["service_config"]["s3"]["endpoint_url"] = proxy.url
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", orjson.dumps(connection).decode())
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        use_config(
            tmp_path_factory.mktemp("owned-config"),
            monkeypatch,
            kms_key_id=KMS_KEY_ID,
            expected_bucket_owner=BUCKET_OWNER,
            quotas={"max_records_per_job": 100},
        )
        # Files over 8 KiB (the shards) go up as multipart uploads, smaller ones (reports) as one PUT.
        monkeypatch.setattr(storage_module, "MULTIPART_THRESHOLD_BYTES", 8 << 10)
        # 100 records for a batch job, 20 through the on-demand fallback.
        rows = call_rows(120, prefix="owned")
        put_jsonl(s3, OWNED_DS, rows)
        # A file of an earlier plan in the run's input folder: prepare deletes it (DeleteObjects).
        stale_key = f"batch/call_center_summarization/{OWNED_DS}/input/shard-0099/part-0001.jsonl"
        s3.put_object(Bucket=STAGING_BUCKET, Key=stale_key, Body=b"{}\n")

        dag_run = run_dag(OWNED_DS)
        return OwnedRun(
            dag_run=dag_run,
            rows=rows,
            requests=proxy.requests(),
            creates=stack.admin.requests("CreateModelInvocationJob"),
            stale_key=stale_key,
        )


class TestKmsKeyAndBucketOwnersInADagRun:
    def test_the_list_of_operations_without_an_owner_matches_the_service_model(self):
        import botocore.session

        names = set(botocore.session.get_session().get_service_model("s3").operation_names)
        assert names - s3_operations_accepting_the_owner() == WITHOUT_EXPECTED_OWNER

    def test_the_run_succeeded_and_went_through_the_proxy(self, owned_run, local_stack):
        assert owned_run.dag_run.state == "success"
        assert_every_record_once(local_stack.client("s3"), OWNED_DS, [r["call_id"] for r in owned_run.rows])
        operations = {r.operation for r in owned_run.library()}
        # Every kind of S3 request the library makes, each seen at least once.
        assert operations >= {
            "ListObjectsV2",
            "HeadObject",
            "GetObject",
            "PutObject",
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
            "DeleteObjects",
        }, operations
        assert {r.bucket for r in owned_run.library()} == {SOURCE_BUCKET, STAGING_BUCKET, RESULTS_BUCKET}
        assert not {r.operation for r in owned_run.requests} & WITHOUT_EXPECTED_OWNER
        assert {r.status for r in owned_run.library()} <= {200, 204, 206, 404}

    def test_every_request_names_the_owner_and_every_write_the_key(self, owned_run):
        assert owner_and_key_problems(owned_run.library()) == []

    def test_the_job_slot_requests_too(self, owned_run):
        # The submit tasks' job slots (bedrock_batch.slots) live in the staging bucket, under the same rules.
        assert {r.operation for r in owned_run.slots()} >= {"GetObject", "PutObject"}
        assert owner_and_key_problems(owned_run.slots()) == []

    def test_every_object_the_library_wrote_is_encrypted_with_the_key(self, owned_run, local_stack):
        s3 = local_stack.client("s3")
        written = {
            (r.bucket, r.key)
            for r in owned_run.requests  # job slots included
            if r.operation in ("PutObject", "CompleteMultipartUpload") and r.status == 200
        }
        assert {bucket for bucket, _ in written} == {STAGING_BUCKET, RESULTS_BUCKET}
        assert len(written) >= 6  # shards, on-demand input and output, index, quarantine, table, reports
        for bucket, key in sorted(written):
            head = s3.head_object(Bucket=bucket, Key=key)
            assert (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) == ("aws:kms", KMS_KEY_ID), key
        # The stale file was deleted through the library, with the owner named.
        with pytest.raises(s3.exceptions.ClientError):
            s3.head_object(Bucket=STAGING_BUCKET, Key=owned_run.stale_key)

    def test_the_jobs_get_the_key_and_the_staging_owner(self, owned_run, local_stack):
        assert owned_run.creates
        for call in owned_run.creates:
            output = call["params"]["outputDataConfig"]["s3OutputDataConfig"]
            assert output["s3EncryptionKeyId"] == KMS_KEY_ID
            assert output["s3BucketOwner"] == BUCKET_OWNER
            assert call["params"]["inputDataConfig"]["s3InputDataConfig"]["s3BucketOwner"] == BUCKET_OWNER
        s3 = local_stack.client("s3")
        for result in xcoms(owned_run.dag_run, "submit").values():
            bucket, _, prefix = result["output_uri"].removeprefix("s3://").partition("/")
            for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
                head = s3.head_object(Bucket=bucket, Key=item["Key"])
                assert (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) == ("aws:kms", KMS_KEY_ID)

    def test_a_bucket_of_another_account_fails_the_library_call(self, local_stack):
        from bedrock_batch.storage import Storage, StorageReadError

        s3 = prepare_stack(local_stack).client("s3")
        s3.put_object(Bucket=SOURCE_BUCKET, Key="owner-probe/a.txt", Body=b"x")
        try:
            s3.head_object(Bucket=SOURCE_BUCKET, Key="owner-probe/a.txt", ExpectedBucketOwner="210987654321")
            refused = False
        except s3.exceptions.ClientError as exc:
            refused = exc.response["Error"]["Code"] in ("403", "AccessDenied", "Forbidden")
        # The local stack refuses a wrong owner as S3 does (403 AccessDenied; moto alone would ignore it).
        assert refused
        with pytest.raises(StorageReadError, match="not owned by the expected account 210987654321"):
            list(
                Storage(s3, expected_bucket_owner="210987654321").list_objects(
                    f"s3://{SOURCE_BUCKET}/owner-probe/"
                )
            )
