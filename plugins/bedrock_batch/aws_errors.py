"""What an AWS SDK error means: its code, whether trying again can help, a short name for a log line.

The one place every module reads botocore errors through (the exception types the library raises itself live
in :mod:`bedrock_batch.errors`, which imports nothing from the SDK).
"""

from __future__ import annotations

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

# Errors that say "try again later", not "this will never work". Repeating a create after them is safe
# too: it carries a deterministic clientRequestToken.
TRANSIENT_ERRORS = frozenset(
    {
        "ThrottlingException",
        "TooManyRequestsException",
        "InternalServerException",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# The service refused the call for its rate: counted as throttled calls (see bedrock_batch.metrics).
THROTTLING_ERRORS = frozenset({"ThrottlingException", "TooManyRequestsException"})
# Temporary credentials ran out during a long wait: a new client picks up fresh ones.
EXPIRED_CREDENTIAL_ERRORS = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})


def error_code(error: ClientError, default: str = "") -> str:
    """The AWS error code of a botocore ``ClientError``, e.g. ``ThrottlingException``, ``NoSuchKey``, ``404``.

    :param error: the error.
    :param default: what to return when the response carries no code.
    """
    return str(error.response.get("Error", {}).get("Code", default))


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` means "try again later": throttling, a server error, a dropped connection."""
    if isinstance(error, ClientError):
        return error_code(error) in TRANSIENT_ERRORS
    return isinstance(error, BotoConnectionError | HTTPClientError)


def is_throttling(error: BaseException) -> bool:
    """Whether ``error`` is the service refusing a call for its rate (it is also transient)."""
    return isinstance(error, ClientError) and error_code(error) in THROTTLING_ERRORS


def is_expired_credentials(error: BaseException) -> bool:
    """Whether ``error`` says the client's temporary credentials ran out (a new client gets fresh ones)."""
    return isinstance(error, ClientError) and error_code(error) in EXPIRED_CREDENTIAL_ERRORS


def describe_error(error: BaseException) -> str:
    """A short name for an error, for one log line (the error code, or the exception class)."""
    return error_code(error) if isinstance(error, ClientError) else type(error).__name__
