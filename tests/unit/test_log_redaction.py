"""The AWS SDK's DEBUG records carry no request or response body once the redaction filter is installed."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import botocore.session
import orjson
import pytest
from botocore.config import Config

from bedrock_batch.log_redaction import (
    SDK_LOGGERS,
    Redacted,
    SdkBodyRedactor,
    install_sdk_log_redaction,
)

PROMPT = "PROMPT-SENTINEL the customer says the invoice shows a double charge"
REPLY = "REPLY-SENTINEL the agent refunded the second charge"
SIZE = re.compile(r"<redacted \d+ bytes>")
USER_AGENT = "Boto3/1.43.117 md/Botocore#1.43.117 ua/2.1 os/linux lang/python#3.11.7 Botocore/1.43.117"


def record(name: str, msg: str, *args: Any, exc_info: Any = None) -> logging.LogRecord:
    """A record as ``logging.getLogger(name).debug(msg, *args)`` creates it (a lone mapping is unwrapped)."""
    return logging.LogRecord(name, logging.DEBUG, f"{name}.py", 1, msg, args, exc_info)


def redacted(rec: logging.LogRecord) -> str:
    assert SdkBodyRedactor().filter(rec) is True
    return rec.getMessage()


def operation(service: str, name: str) -> Any:
    """botocore's own OperationModel (its repr is ``OperationModel(name=...)``)."""
    return botocore.session.get_session().get_service_model(service).operation_model(name)


def invoke_model_request(body: Any) -> dict[str, Any]:
    """The request dict botocore 1.43's endpoint logs for bedrock-runtime InvokeModel."""
    return {
        "url_path": "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke",
        "query_string": {},
        "method": "POST",
        "headers": {
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
        "body": body,
        "url": "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke",
        "context": {
            "client_region": "us-east-1",
            "client_config": Config(),
            "has_streaming_input": True,
            "auth_type": None,
            "unsigned_payload": None,
            "auth_options": ["aws.auth#sigv4", "smithy.api#httpBearerAuth"],
            "retries": {"attempt": 2, "invocation-id": "8ab1d3e5-ea8b-4f9d-ad64-6aa0b71457e1", "max": 5},
        },
    }


def anthropic_body(text: str) -> bytes:
    return orjson.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 512,
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        }
    )


class TestBotocoreMessages:
    """Records shaped exactly as botocore 1.43 and aiobotocore 3 log them."""

    @pytest.mark.parametrize(
        ("module", "template"),
        [
            ("botocore.endpoint", "Making request for %s with params: %s"),
            ("botocore.parsers", "Response body:\\n%r"),
            ("botocore.parsers", "Response headers: %r"),
            ("botocore.handlers", "Error found for response with 200 status code: %s."),
            ("botocore.awsrequest", "Rewinding stream: %s"),
            ("aiobotocore.parsers", "Response body:\\n%s"),
        ],
    )
    def test_the_templates_are_the_installed_sdk_s(self, module, template):
        # If an SDK upgrade rewords one, the tests below no longer describe what the SDK logs.
        source = inspect.getsource(__import__(module, fromlist=["_"]))
        assert template in source

    def test_invoke_model_request_keeps_operation_url_headers_and_size(self):
        body = anthropic_body(PROMPT)
        rec = record(
            "botocore.endpoint",
            "Making request for %s with params: %s",
            operation("bedrock-runtime", "InvokeModel"),
            invoke_model_request(body),
        )
        message = redacted(rec)
        assert PROMPT not in message
        assert "PROMPT-SENTINEL" not in message
        assert message.startswith("Making request for OperationModel(name=InvokeModel) with params: {")
        assert f"'body': <redacted {len(body)} bytes>" in message
        assert "'url': 'https://bedrock-runtime.us-east-1.amazonaws.com/model/" in message
        assert "'method': 'POST'" in message
        assert f"'User-Agent': '{USER_AGENT}'" in message
        assert "'retries': {'attempt': 2" in message
        assert "client_config" not in message
        assert "auth_options" not in message

    def test_converse_request_with_a_str_body_counts_utf8_bytes(self):
        body = orjson.dumps({"messages": [{"role": "user", "content": [{"text": PROMPT + " é"}]}]}).decode()
        request = invoke_model_request(body)
        request["url_path"] = "/model/amazon.nova-lite-v1%3A0/converse"
        rec = record(
            "botocore.endpoint",
            "Making request for %s with params: %s",
            operation("bedrock-runtime", "Converse"),
            request,
        )
        message = redacted(rec)
        assert "PROMPT-SENTINEL" not in message
        assert "OperationModel(name=Converse)" in message
        assert f"<redacted {len(body.encode())} bytes>" in message
        assert len(body.encode()) == len(body) + 1  # the é: bytes, not characters

    def test_the_s3_context_s_copy_of_the_parameters_is_dropped(self):
        # botocore's S3 handlers copy the call's parameters into the context (s3_redirect.params).
        tagging_xml = f"<Tagging><TagSet><Tag><Key>t</Key><Value>{PROMPT}</Value></Tag></TagSet></Tagging>"
        request = {
            "url_path": "/k?tagging",
            "query_string": {},
            "method": "PUT",
            "headers": {"User-Agent": USER_AGENT, "x-amz-checksum-crc32": "z/3P7g=="},
            "body": tagging_xml.encode(),
            "auth_path": "/bucket/k",
            "url": "http://127.0.0.1:5000/bucket/k?tagging",
            "context": {
                "client_region": "us-east-1",
                "s3_redirect": {
                    "redirected": False,
                    "bucket": "bucket",
                    "params": {"Bucket": "bucket", "Key": "k", "Tagging": {"TagSet": [{"Value": PROMPT}]}},
                },
                "input_params": {"Bucket": "bucket", "Key": "k"},
            },
            "some_future_key": {"nested": PROMPT},
        }
        message = redacted(
            record(
                "botocore.endpoint",
                "Making request for %s with params: %s",
                operation("s3", "PutObjectTagging"),
                request,
            )
        )
        assert "PROMPT-SENTINEL" not in message
        assert f"'body': <redacted {len(tagging_xml.encode())} bytes>" in message
        assert "'url': 'http://127.0.0.1:5000/bucket/k?tagging'" in message
        assert "'some_future_key': <redacted dict>" in message

    def test_a_query_protocol_body_is_a_dict_of_fields(self):
        request = invoke_model_request({"Action": "SendMessage", "MessageBody": PROMPT})
        message = redacted(
            record("botocore.endpoint", "Making request for %s with params: %s", "op", request)
        )
        assert "PROMPT-SENTINEL" not in message
        assert "'body': <redacted 2 fields>" in message

    def test_a_stream_body_keeps_only_its_type(self):
        import io

        request = invoke_model_request(io.BytesIO(PROMPT.encode()))
        message = redacted(
            record("botocore.endpoint", "Making request for %s with params: %s", "op", request)
        )
        assert "'body': <redacted BytesIO>" in message

    @pytest.mark.parametrize(
        ("name", "template"),
        [("botocore.parsers", "Response body:\n%r"), ("botocore.parsers", "Response body:\n%s")],
    )
    def test_response_body_bytes_become_their_size(self, name, template):
        body = orjson.dumps({"output": {"message": {"content": [{"text": REPLY}]}}, "stopReason": "end_turn"})
        message = redacted(record(name, template, body))
        assert message == f"Response body:\n<redacted {len(body)} bytes>"

    def test_response_body_str_and_stream(self):
        assert redacted(record("botocore.parsers", "Response body:\n%r", REPLY)) == (
            f"Response body:\n<redacted {len(REPLY)} bytes>"
        )

        class StreamingBody:
            def __repr__(self) -> str:
                return f"<StreamingBody {REPLY}>"

        assert redacted(record("botocore.parsers", "Response body:\n%r", StreamingBody())) == (
            "Response body:\n<redacted StreamingBody>"
        )

    def test_response_headers_are_kept(self):
        headers = {"x-amzn-requestid": "4e0c-11", "x-amzn-bedrock-input-token-count": "812"}
        rec = record("botocore.parsers", "Response headers: %r", headers)
        assert isinstance(rec.args, Mapping)  # logging unwrapped the lone mapping
        assert redacted(rec) == f"Response headers: {headers!r}"

    def test_s3_200_error_body(self):
        body = f"<Error><Code>InternalError</Code><Message>{PROMPT}</Message></Error>".encode()
        message = redacted(
            record("botocore.handlers", "Error found for response with 200 status code: %s.", body)
        )
        assert message == f"Error found for response with 200 status code: <redacted {len(body)} bytes>."

    def test_messages_without_a_body_are_unchanged(self):
        rec = record("botocore.endpoint", "Response received to retry, sleeping for %s seconds", 0.5)
        assert redacted(rec) == "Response received to retry, sleeping for 0.5 seconds"
        rec = record("botocore.endpoint", "Sending http request: %s", "<AWSPreparedRequest method=POST>")
        assert redacted(rec) == "Sending http request: <AWSPreparedRequest method=POST>"
        assert redacted(record("botocore.endpoint", "no arguments at all")) == "no arguments at all"

    def test_an_exception_quoting_the_body_is_reduced_to_its_name(self):
        from botocore.parsers import ResponseParserError

        try:
            raise ResponseParserError(f"Unable to parse response, invalid XML received:\n{REPLY}")
        except ResponseParserError:
            rec = record(
                "botocore.parsers",
                "Exception caught when parsing error response body:",
                exc_info=sys.exc_info(),
            )
        assert SdkBodyRedactor().filter(rec) is True
        formatted = logging.Formatter().format(rec)
        assert "REPLY-SENTINEL" not in formatted
        assert "ResponseParserError" in formatted
        assert formatted.startswith("Exception caught when parsing error response body:")

    def test_a_record_it_cannot_rewrite_is_replaced_never_raised(self):
        class Hostile(Mapping[str, Any]):
            def __getitem__(self, key: str) -> Any:
                return PROMPT

            def __iter__(self) -> Iterator[str]:
                raise RuntimeError("cannot iterate")

            def __len__(self) -> int:
                return 1

            def __contains__(self, key: object) -> bool:
                return True

        rec = record("botocore.endpoint", "Making request for %s with params: %s", "op", Hostile())
        assert SdkBodyRedactor().filter(rec) is True
        assert rec.getMessage() == "<botocore.endpoint record redacted>"

    def test_redacted_prints_alike_with_s_and_r(self):
        marker = Redacted("<redacted 3 bytes>")
        assert f"{marker}" == f"{marker!r}" == "<redacted 3 bytes>"
        assert repr({"body": marker}) == "{'body': <redacted 3 bytes>}"


# --- installation ------------------------------------------------------------------------------------


@pytest.fixture
def sdk_loggers_without_redaction() -> Iterator[None]:
    """The SDK loggers without filters for one test (other tests may have installed them); restored after."""
    saved = {name: logging.getLogger(name).filters[:] for name in SDK_LOGGERS}
    for name in SDK_LOGGERS:
        logging.getLogger(name).filters.clear()
    try:
        yield
    finally:
        for name, filters in saved.items():
            logging.getLogger(name).filters[:] = filters


def redactors(name: str) -> list[logging.Filter]:
    return [f for f in logging.getLogger(name).filters if isinstance(f, SdkBodyRedactor)]


@pytest.mark.usefixtures("sdk_loggers_without_redaction")
class TestInstall:
    def test_idempotent_one_filter_per_sdk_logger(self):
        install_sdk_log_redaction()
        install_sdk_log_redaction()
        assert {name: len(redactors(name)) for name in SDK_LOGGERS} == dict.fromkeys(SDK_LOGGERS, 1)

    def test_the_runtime_invoker_installs_it(self):
        from bedrock_batch.on_demand import runtime_invoker

        assert redactors("botocore.endpoint") == []
        runtime_invoker(object(), "model")
        assert len(redactors("botocore.endpoint")) == 1

    def test_the_filter_does_no_work_above_debug(self, monkeypatch):
        install_sdk_log_redaction()
        calls: list[logging.LogRecord] = []
        monkeypatch.setattr(SdkBodyRedactor, "_redact", lambda self, rec: calls.append(rec))
        logger = logging.getLogger("botocore.endpoint")
        level = logger.level
        try:
            logger.setLevel(logging.INFO)
            logger.debug("Making request for %s with params: %s", "op", {"body": b"x"})
            assert calls == []
            logger.setLevel(logging.DEBUG)
            logger.debug("Making request for %s with params: %s", "op", {"body": b"x"})
            assert len(calls) == 1
        finally:
            logger.setLevel(level)

    def test_importing_installs_nothing_building_a_hook_does(self):
        # A fresh interpreter: Airflow imports these modules when it scans plugins and DAGs.
        code = (
            "import logging\n"
            "import bedrock_batch.log_redaction, bedrock_batch.on_demand, bedrock_batch.hooks\n"
            "import bedrock_batch.triggers, bedrock_batch.operators\n"
            "from bedrock_batch.log_redaction import SDK_LOGGERS\n"
            "count = lambda: sum(len(logging.getLogger(n).filters) for n in SDK_LOGGERS)\n"
            "print('filters after import:', count())\n"
            "bedrock_batch.hooks.BedrockBatchHook(aws_conn_id=None, region_name='us-east-1')\n"
            "print('filters after a hook:', count())\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        counts = re.findall(r"^filters after (.+): (\d+)$", out.stdout, re.MULTILINE)
        assert counts == [("import", "0"), ("a hook", str(len(SDK_LOGGERS)))], out.stdout[-2000:]


# --- real clients ------------------------------------------------------------------------------------


def sdk_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(("botocore.", "aiobotocore."))]


def s3_calls_with_the_sentinel(client: Any, bucket: str, sentinel: str) -> None:
    """S3 calls whose request body (tagging XML) and response body (the same tags read back) hold it."""
    client.put_object(Bucket=bucket, Key="calls/0001.txt", Body=sentinel.encode())
    client.put_object_tagging(
        Bucket=bucket, Key="calls/0001.txt", Tagging={"TagSet": [{"Key": "note", "Value": sentinel}]}
    )
    tags = client.get_object_tagging(Bucket=bucket, Key="calls/0001.txt")["TagSet"]
    assert tags == [{"Key": "note", "Value": sentinel}]
    assert client.get_object(Bucket=bucket, Key="calls/0001.txt")["Body"].read() == sentinel.encode()


@pytest.mark.integration
@pytest.mark.usefixtures("sdk_loggers_without_redaction")
class TestRealClients:
    def test_boto3_s3_against_moto(self, s3_client, s3_bucket, caplog):
        caplog.set_level(logging.DEBUG)
        caplog.set_level(logging.DEBUG, logger="botocore")
        sentinel = f"SENTINEL{uuid.uuid4().hex}"

        # Without the filter, botocore's DEBUG records hold the bodies: the check below can fail.
        s3_calls_with_the_sentinel(s3_client, s3_bucket, sentinel)
        assert [m for m in sdk_messages(caplog) if sentinel in m]
        caplog.clear()

        install_sdk_log_redaction()
        s3_calls_with_the_sentinel(s3_client, s3_bucket, sentinel)
        messages = sdk_messages(caplog)
        assert not [m[:200] for m in messages if sentinel in m]
        assert not [r.name for r in caplog.records if sentinel in r.getMessage()]
        # What stays: the operation, the URL, the sizes, the status line.
        tagging = [
            m for m in messages if m.startswith("Making request for OperationModel(name=PutObjectTagging)")
        ]
        assert tagging
        assert SIZE.search(tagging[0])
        assert f"/{s3_bucket}/calls/0001.txt?tagging" in tagging[0]
        assert any(m.startswith("Response body:\n<redacted ") for m in messages)
        assert any(m.startswith("Response headers: ") and "'content-type'" in m.lower() for m in messages)

    def test_bedrock_runtime_through_the_runtime_invoker(self, local_stack, caplog):
        from bedrock_batch.on_demand import runtime_invoker

        caplog.set_level(logging.DEBUG)
        caplog.set_level(logging.DEBUG, logger="botocore")
        sentinel = f"SENTINEL{uuid.uuid4().hex}"
        client = local_stack.client("bedrock-runtime")
        body = orjson.loads(anthropic_body(sentinel))

        invoke = runtime_invoker(client, "anthropic.claude-3-haiku-20240307-v1:0")
        reply = invoke(body)
        converse = runtime_invoker(client, "amazon.nova-lite-v1:0", "Converse")
        converse_reply = converse({"messages": [{"role": "user", "content": [{"text": sentinel}]}]})

        # The emulator echoes the prompt, so the replies (and the response bodies) hold the sentinel too.
        assert sentinel in orjson.dumps(reply).decode()
        assert sentinel in orjson.dumps(converse_reply).decode()
        messages = sdk_messages(caplog)
        assert not [m[:200] for m in messages if sentinel in m]
        for name in ("InvokeModel", "Converse"):
            made = [m for m in messages if m.startswith(f"Making request for OperationModel(name={name})")]
            assert made, name
            assert SIZE.search(made[0]), made[0]
        assert "Response body:\n<redacted StreamingBody>" in messages  # InvokeModel's reply streams
        assert any(SIZE.fullmatch(m.removeprefix("Response body:\n")) for m in messages)  # Converse's

    def test_aiobotocore_s3_against_moto(self, moto_s3, s3_bucket, caplog):
        from aiobotocore.session import get_session

        caplog.set_level(logging.DEBUG)
        caplog.set_level(logging.DEBUG, logger="botocore")
        caplog.set_level(logging.DEBUG, logger="aiobotocore")
        sentinel = f"SENTINEL{uuid.uuid4().hex}"

        async def calls() -> None:
            async with get_session().create_client(
                "s3",
                endpoint_url=moto_s3,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            ) as client:
                await client.put_object_tagging(
                    Bucket=s3_bucket, Key="k", Tagging={"TagSet": [{"Key": "note", "Value": sentinel}]}
                )
                got = await client.get_object_tagging(Bucket=s3_bucket, Key="k")
                assert got["TagSet"] == [{"Key": "note", "Value": sentinel}]

        boto3.client(
            "s3",
            endpoint_url=moto_s3,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).put_object(Bucket=s3_bucket, Key="k", Body=b"x")
        asyncio.run(calls())
        assert [m for m in sdk_messages(caplog) if sentinel in m]  # the capture sees the bodies
        caplog.clear()

        install_sdk_log_redaction()
        asyncio.run(calls())
        messages = sdk_messages(caplog)
        assert not [m[:200] for m in messages if sentinel in m]
        assert any(m.startswith("Making request for OperationModel(name=PutObjectTagging)") for m in messages)
        assert any(m.startswith("Response body:\n<redacted ") for m in messages)
