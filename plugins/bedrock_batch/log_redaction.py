"""Keep request and response bodies out of the AWS SDK's DEBUG log records.

At DEBUG, botocore (and aiobotocore, which logs through botocore's loggers) writes every request's
parameters, body included, and every non-streaming response body: the on-demand fallback's prompts and
transcripts, the model's replies, S3 XML documents. :class:`SdkBodyRedactor` rewrites those records in
place so that only the operation, URL, headers, status and sizes remain, e.g.
``'body': <redacted 1834 bytes>``.

It is a filter on the emitting loggers themselves (not on handlers), so it applies whatever handlers Airflow
configures; a logger's filters only see records created on that logger, hence one per name in
:data:`SDK_LOGGERS`. Importing this module changes nothing: :func:`install_sdk_log_redaction` attaches the
filter, idempotently, and the hook calls it when it is built.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

# The SDK loggers that log bodies (aiobotocore reuses botocore's endpoint and parsers loggers; its own
# names are listed in case a version logs under them).
SDK_LOGGERS: tuple[str, ...] = (
    "botocore.endpoint",  # "Making request for OperationModel(name=...) with params: {... 'body': ...}"
    "botocore.parsers",  # "Response body:\n b'...'", and errors quoting an unparsable body
    "botocore.handlers",  # "Error found for response with 200 status code: <body>."
    "botocore.awsrequest",  # "Rewinding stream: <body>"
    "aiobotocore.endpoint",
    "aiobotocore.parsers",
    "aiobotocore.handlers",  # "Error found for response with 200 status code, errors: <parsed>"
)
# Keys of botocore's request dict kept as they are: where the request goes and its headers.
_KEPT_REQUEST_KEYS = frozenset({"url_path", "query_string", "method", "headers", "url", "auth_path"})
# Exceptions whose text quotes the response body.
_BODY_QUOTING_ERRORS = frozenset({"ResponseParserError"})
_SCALARS = (str, int, float, bool, type(None))
_MARK = "_bedrock_batch_sdk_body_redactor"
_install_lock = threading.Lock()


class Redacted:
    """Stands in for a body: prints (``%s`` and ``%r`` alike) as ``<redacted N bytes>``."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Redacted) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def redact_body(body: Any) -> Any:
    """A :class:`Redacted` placeholder giving ``body``'s size (bytes, characters' UTF-8 bytes or fields)."""
    if body is None or isinstance(body, Redacted):
        return body
    if isinstance(body, bytes | bytearray):
        return Redacted(f"<redacted {len(body)} bytes>")
    if isinstance(body, memoryview):
        return Redacted(f"<redacted {body.nbytes} bytes>")
    if isinstance(body, str):
        return Redacted(f"<redacted {len(body.encode('utf-8', 'replace'))} bytes>")
    if isinstance(body, Mapping):
        return Redacted(f"<redacted {len(body)} fields>")
    # A stream (file, BytesIO, urllib3/aiohttp response): no size without reading it.
    return Redacted(f"<redacted {type(body).__name__}>")


def redact_request_dict(request: Mapping[str, Any]) -> dict[str, Any]:
    """botocore's request dict with its body replaced by its size and its context cut to plain settings.

    The context's nested entries (``s3_redirect``, ``input_params``, ...) repeat the call's parameters, so
    only its scalar entries and the retry counters are kept; unknown nested keys keep only their type.
    """
    out: dict[str, Any] = {}
    for key, value in request.items():
        if key == "body":
            out[key] = redact_body(value)
        elif key == "context" and isinstance(value, Mapping):
            out[key] = {
                k: v
                for k, v in value.items()
                if isinstance(v, _SCALARS) or (k == "retries" and isinstance(v, Mapping))
            }
        elif key in _KEPT_REQUEST_KEYS or isinstance(value, _SCALARS):
            out[key] = value
        else:
            out[key] = Redacted(f"<redacted {type(value).__name__}>")
    return out


def _redact_arg(value: Any, *, body_message: bool) -> Any:
    if isinstance(value, Mapping) and "body" in value:
        return redact_request_dict(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return redact_body(value)
    if body_message and value is not None and not isinstance(value, int | float | Redacted):
        # The message is about a body (e.g. "Response body:\n%r"): its text arguments are the body.
        return redact_body(value)
    return value


class SdkBodyRedactor(logging.Filter):
    """Rewrites AWS SDK log records in place so they carry no request or response body; never drops one.

    Works on ``record.args`` (tuple or single mapping): a request dict's ``body`` becomes its size, bytes
    arguments become their size, and every non-numeric argument of a message about a body ("Response
    body: ...") too. An exception whose text quotes a body (``ResponseParserError``) is reduced to its
    class name. Never raises: a record it cannot rewrite is replaced by a fixed message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._redact(record)
        except Exception:
            record.msg = f"<{record.name} record redacted>"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True

    def _redact(self, record: logging.LogRecord) -> None:
        if record.exc_info and type(record.exc_info[1]).__name__ in _BODY_QUOTING_ERRORS:
            name = type(record.exc_info[1]).__name__
            record.msg = f"{record.msg} [{name}: details redacted, they quote the response body]"
            record.exc_info = None
            record.exc_text = None
        args = record.args
        if not args:
            return
        body_message = isinstance(record.msg, str) and "body" in record.msg.lower()
        if isinstance(args, Mapping):
            # logging unwraps a single mapping argument: ``LOG.debug("Response headers: %r", headers)``.
            if "body" in args or body_message:
                record.args = _redact_arg(args, body_message=body_message)
            return
        record.args = tuple(_redact_arg(arg, body_message=body_message) for arg in args)


def install_sdk_log_redaction(logger_names: tuple[str, ...] = SDK_LOGGERS) -> None:
    """Attach one :class:`SdkBodyRedactor` to each logger of ``logger_names``; calling it again adds none."""
    with _install_lock:
        for name in logger_names:
            logger = logging.getLogger(name)
            if not any(getattr(f, _MARK, False) for f in logger.filters):
                redactor = SdkBodyRedactor()
                setattr(redactor, _MARK, True)
                logger.addFilter(redactor)
