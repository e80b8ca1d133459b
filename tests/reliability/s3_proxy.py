"""A recording reverse proxy in front of moto's S3 server: every request the library sends, as S3 receives it.

moto's server keeps no log of the requests it answered, so the tests that must prove what went over the wire
(``ExpectedBucketOwner``, SSE-KMS headers) point only the Airflow connection's S3 endpoint at this proxy.
Everything else (the test's own client, the Bedrock emulator acting as the service) keeps talking to moto
directly, so what the proxy records is exactly what our code sent.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# Per-connection headers a proxy must not forward (RFC 9110 section 7.6.1), plus Expect: the proxy answers
# "100 Continue" itself and sends moto the whole body at once.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)


@dataclass(frozen=True)
class RecordedRequest:
    """One forwarded request: method, path, query, headers (names lower-cased) and moto's status."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int

    @property
    def bucket(self) -> str:
        return unquote(self.path.lstrip("/").split("/", 1)[0])

    @property
    def key(self) -> str:
        parts = self.path.lstrip("/").split("/", 1)
        return unquote(parts[1]) if len(parts) > 1 else ""

    @property
    def operation(self) -> str:
        """The S3 operation of this path-style request (``Unknown:<method>?<query>`` if not recognised)."""
        return s3_operation(self.method, self.path, self.query, self.headers)


def s3_operation(method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
    """Name the S3 operation of a path-style REST request (the subset an object store client uses)."""
    bucket, _, key = path.lstrip("/").partition("/")
    copying = "x-amz-copy-source" in headers
    if not bucket:
        return "ListBuckets" if method == "GET" else f"Unknown:{method}"
    if not key:
        bucket_level = {
            ("GET", "list-type"): "ListObjectsV2",
            ("POST", "delete"): "DeleteObjects",
            ("GET", "uploads"): "ListMultipartUploads",
        }
        for (verb, marker), name in bucket_level.items():
            if method == verb and marker in query:
                return name
        if not query:
            plain = {
                "GET": "ListObjects",
                "HEAD": "HeadBucket",
                "PUT": "CreateBucket",
                "DELETE": "DeleteBucket",
            }
            if method in plain:
                return plain[method]
        return f"Unknown:{method}?{'&'.join(sorted(query))}"
    if "uploadId" in query:
        by_method = {"GET": "ListParts", "POST": "CompleteMultipartUpload", "DELETE": "AbortMultipartUpload"}
        if method == "PUT" and "partNumber" in query:
            return "UploadPartCopy" if copying else "UploadPart"
        if method in by_method:
            return by_method[method]
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if not set(query) - {"partNumber", "versionId"}:
        if method == "PUT":
            return "CopyObject" if copying else "PutObject"
        plain = {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}
        if method in plain:
            return plain[method]
    return f"Unknown:{method}?{'&'.join(sorted(query))}"


class RecordingS3Proxy:
    """Forwards HTTP requests to ``upstream`` (moto's server) and records each one; a context manager.

    :param upstream: moto's endpoint URL, e.g. ``http://127.0.0.1:5000``.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self._upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._recorded: list[RecordedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def requests(self) -> list[RecordedRequest]:
        """Everything forwarded so far, oldest first."""
        with self._lock:
            return list(self._recorded)

    def clear(self) -> None:
        with self._lock:
            self._recorded.clear()

    def __iter__(self) -> Iterator[RecordedRequest]:
        return iter(self.requests())

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._recorded.append(request)

    def start(self) -> RecordingS3Proxy:
        proxy = self

        class Handler(_ForwardingHandler):
            upstream = proxy._upstream
            record = staticmethod(proxy._record)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> RecordingS3Proxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _ForwardingHandler(BaseHTTPRequestHandler):
    # HTTP/1.1: keep-alive connections for botocore's pool, and "100 Continue" answered for Expect headers.
    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int]
    record: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailer fields, then the empty line
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self) -> None:
        body = self._body()
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        if body or self.command in ("PUT", "POST"):
            headers.append(("Content-Length", str(len(body))))
        upstream = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            # The Host header stays the client's (SigV4 signed it); moto does not check signatures.
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                upstream.putheader(name, value)
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            data = response.read()
            response_headers = response.getheaders()
        finally:
            upstream.close()
        split = urlsplit(self.path)
        self.record(
            RecordedRequest(
                method=self.command,
                path=split.path,
                query=parse_qs(split.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                status=response.status,
            )
        )
        self.send_response(response.status, response.reason)
        for name, value in response_headers:
            lowered = name.lower()
            if lowered in _HOP_BY_HOP or lowered in ("server", "date"):
                continue
            if lowered == "content-length" and self.command != "HEAD":
                continue  # set below from the bytes actually relayed
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward
