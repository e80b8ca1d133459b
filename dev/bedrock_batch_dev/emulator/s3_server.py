"""moto's S3 server with S3's bucket-owner check, which moto accepts and ignores.

S3 answers a request whose ``x-amz-expected-bucket-owner`` (or, for a copy, ``x-amz-source-expected-bucket-
owner``) names another account than the bucket's owner with 403 AccessDenied. moto keeps every bucket in one
account (``MOTO_ACCOUNT_ID``, 123456789012 by default), so any other account in those headers is refused
here, before moto sees the request: the local stack refuses what S3 would.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

# The request headers, as WSGI names them.
OWNER_HEADERS = ("HTTP_X_AMZ_EXPECTED_BUCKET_OWNER", "HTTP_X_AMZ_SOURCE_EXPECTED_BUCKET_OWNER")
_ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
)


def moto_account_id() -> str:
    """The account that owns every bucket of moto's S3."""
    from moto.core import DEFAULT_ACCOUNT_ID

    return os.environ.get("MOTO_ACCOUNT_ID", DEFAULT_ACCOUNT_ID)


class BucketOwnerCheck:
    """WSGI middleware: 403 AccessDenied for an expected bucket owner other than ``account_id``.

    :param app: moto's WSGI application.
    :param account_id: the owner of every bucket.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], account_id: str) -> None:
        self._app = app
        self._account_id = account_id

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        for header in OWNER_HEADERS:
            expected = environ.get(header)
            if expected is not None and expected != self._account_id:
                start_response(
                    "403 Forbidden",
                    [("Content-Type", "application/xml"), ("Content-Length", str(len(_ACCESS_DENIED)))],
                )
                return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else _ACCESS_DENIED]
        return self._app(environ, start_response)


class S3Server(ThreadedMotoServer):
    """moto's threaded server, its application behind :class:`BucketOwnerCheck`."""

    def _server_entry(self) -> None:
        app = BucketOwnerCheck(DomainDispatcherApplication(create_backend_app), moto_account_id())
        self._server = make_server(
            self._ip_address, self._port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()
