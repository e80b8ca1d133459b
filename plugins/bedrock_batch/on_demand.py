"""On-demand fallback: invoke the model record by record for sets too small for a batch job.

Writes the same line format as a batch job's ``.jsonl.out`` so collection treats both alike
(:func:`invoke_files` for staged input files, :func:`invoke_records` for their lines).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from botocore.exceptions import ClientError

from bedrock_batch.aws_errors import error_code
from bedrock_batch.errors import InvocationError
from bedrock_batch.log_redaction import install_sdk_log_redaction
from bedrock_batch.staging import count_lines, on_demand_output_uri, output_complete
from bedrock_batch.storage import Storage

log = logging.getLogger(__name__)

# Runtime API error names -> the HTTP status a batch output line would carry for the same failure.
ERROR_CODES: Mapping[str, int] = {
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ModelNotReadyException": 429,
    "ThrottlingException": 429,
    "ServiceQuotaExceededException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}
RETRIED_ERRORS = frozenset(
    {
        "ThrottlingException",
        "ModelNotReadyException",
        "ServiceUnavailableException",
        "InternalServerException",
    }
)

Invoke = Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclass
class OnDemandStats:
    """Counts of one fallback pass, for logs and the run report.

    ``reused`` counts the records of input files whose output an earlier try had written completely: they
    are not invoked again, and not in the other counts. ``throttled`` counts the calls the service refused
    with ThrottlingException (retried or not).
    """

    records: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    reused: int = 0
    throttled: int = 0


class RateLimiter:
    """Spaces calls at least ``1 / per_second`` apart (one caller, no bursts)."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._clock = clock
        self._next = 0.0

    def wait(self) -> None:
        now = self._clock()
        if now < self._next:
            time.sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


def invoke_records(
    lines: Iterable[bytes],
    invoke: Invoke,
    *,
    requests_per_second: float = 5.0,
    max_attempts: int = 5,
    backoff_seconds: float = 1.0,
    stats: OnDemandStats | None = None,
) -> Iterator[bytes]:
    """Invoke the model for each batch record line and yield batch-output-format lines.

    :param lines: batch input lines ``{"recordId", "modelInput"}``.
    :param invoke: calls the runtime with a ``modelInput`` body and returns the model's response body;
        raises :class:`InvocationError` on a service error.
    :param requests_per_second: client-side rate limit, to stay under the account's on-demand quota.
    :param max_attempts: attempts per record for throttling and transient server errors.
    :param backoff_seconds: first retry delay; doubles per attempt.
    :param stats: filled in with counts as records are processed.
    """
    stats = stats if stats is not None else OnDemandStats()
    limiter = RateLimiter(requests_per_second)
    for line in lines:
        if not line.strip():
            continue
        record = orjson.loads(line)
        stats.records += 1
        out: dict[str, Any] = {"recordId": record.get("recordId"), "modelInput": record.get("modelInput")}
        for attempt in range(1, max_attempts + 1):
            limiter.wait()
            try:
                out["modelOutput"] = dict(invoke(record["modelInput"]))
                stats.succeeded += 1
                break
            except InvocationError as err:
                if err.name == "ThrottlingException":
                    stats.throttled += 1
                if err.name in RETRIED_ERRORS and attempt < max_attempts:
                    stats.retries += 1
                    time.sleep(backoff_seconds * 2 ** (attempt - 1))
                    continue
                out["error"] = {"errorCode": ERROR_CODES.get(err.name, 500), "errorMessage": err.message}
                stats.failed += 1
                break
        yield orjson.dumps(out) + b"\n"
    log.info(
        "on-demand fallback: %d records, %d succeeded, %d failed, %d retries",
        stats.records,
        stats.succeeded,
        stats.failed,
        stats.retries,
    )


def invoke_files(
    storage: Storage,
    input_uris: Sequence[str],
    output_uri: str,
    invoke: Invoke,
    *,
    requests_per_second: float = 5.0,
    max_attempts: int = 5,
) -> OnDemandStats:
    """Invoke the model for every record of the staged ``input_uris``; write ``<output_uri>/<file>.out`` each.

    An input file whose output already holds one line per record is not invoked again (a rerun does not
    pay twice). Each output file is written whole once its records are done.

    :param storage: local and S3 access.
    :param input_uris: batch input files (``{"recordId", "modelInput"}`` lines).
    :param output_uri: prefix of the output files.
    :param invoke: see :func:`invoke_records`.
    :param requests_per_second: client-side rate limit.
    :param max_attempts: attempts per record for throttling and transient errors.
    """
    stats = OnDemandStats()
    for uri in input_uris:
        target = on_demand_output_uri(output_uri, uri)
        expected = count_lines(storage, uri)
        if output_complete(storage, target, expected):
            stats.reused += expected
            continue
        with (
            tempfile.NamedTemporaryFile(prefix="bedrock-batch-on-demand-", delete=False) as out,
            storage.open_read(uri) as lines,
        ):
            for line in invoke_records(
                lines, invoke, requests_per_second=requests_per_second, max_attempts=max_attempts, stats=stats
            ):
                out.write(line)
        try:
            storage.write_file(out.name, target)
        finally:
            os.unlink(out.name)
    return stats


def runtime_invoker(client: Any, model_id: str, invocation_type: str = "InvokeModel") -> Invoke:
    """Adapt a boto3 ``bedrock-runtime`` client to :data:`Invoke` for ``model_id``.

    :param client: a ``bedrock-runtime`` client.
    :param model_id: the model or inference-profile id the batch job would have used.
    :param invocation_type: ``InvokeModel`` (model-native body) or ``Converse``.
    """
    # The request bodies are prompts: keep them out of botocore's DEBUG records, whoever built the client.
    install_sdk_log_redaction()

    def call(body: Mapping[str, Any]) -> Mapping[str, Any]:
        try:
            if invocation_type == "Converse":
                response = client.converse(modelId=model_id, **body)
                return {k: v for k, v in response.items() if k not in ("ResponseMetadata", "metrics")}
            response = client.invoke_model(
                modelId=model_id,
                body=orjson.dumps(body),
                contentType="application/json",
                accept="application/json",
            )
            parsed: Mapping[str, Any] = orjson.loads(response["body"].read())
            return parsed
        except ClientError as err:
            message = str(err.response.get("Error", {}).get("Message", ""))
            raise InvocationError(error_code(err, "InternalServerException"), message) from err

    return call
