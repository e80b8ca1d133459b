"""Reading AWS SDK errors: code, transient or not, expired credentials, the short name logged."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from bedrock_batch import aws_errors
from bedrock_batch.aws_errors import describe_error, error_code, is_expired_credentials, is_transient


def client_error(code: str | None, operation: str = "GetModelInvocationJob") -> ClientError:
    error = {"Message": "something"} if code is None else {"Code": code, "Message": "something"}
    return ClientError({"Error": error}, operation)


class TestErrorCode:
    def test_reads_the_code(self):
        assert error_code(client_error("ConflictException")) == "ConflictException"

    def test_a_response_without_a_code_gives_the_default(self):
        assert error_code(client_error(None)) == ""
        assert error_code(client_error(None), "Unknown") == "Unknown"


class TestIsTransient:
    @pytest.mark.parametrize(
        "code", ["ThrottlingException", "InternalServerException", "ServiceUnavailableException"]
    )
    def test_throttling_and_server_errors_are_transient(self, code):
        assert is_transient(client_error(code))

    @pytest.mark.parametrize(
        "code", ["ValidationException", "AccessDeniedException", "ConflictException", "ExpiredTokenException"]
    )
    def test_errors_a_retry_cannot_fix_are_not(self, code):
        assert not is_transient(client_error(code))

    def test_dropped_connections_are_transient(self):
        assert is_transient(EndpointConnectionError(endpoint_url="https://bedrock.us-east-1.amazonaws.com"))
        assert is_transient(ReadTimeoutError(endpoint_url="https://bedrock.us-east-1.amazonaws.com"))

    def test_other_exceptions_are_not(self):
        assert not is_transient(ValueError("bad"))


def test_expired_credentials():
    assert is_expired_credentials(client_error("ExpiredTokenException"))
    assert is_expired_credentials(client_error("RequestExpired"))
    assert not is_expired_credentials(client_error("ThrottlingException"))
    assert not is_expired_credentials(RuntimeError("ExpiredToken"))


def test_describe_error_names_the_code_or_the_class():
    assert describe_error(client_error("ThrottlingException")) == "ThrottlingException"
    assert describe_error(EndpointConnectionError(endpoint_url="https://x")) == "EndpointConnectionError"


def test_the_hook_module_still_offers_the_helpers():
    # DAGs and plugins written against earlier versions import them from bedrock_batch.hooks.
    from bedrock_batch import hooks

    assert hooks.is_transient is aws_errors.is_transient
    assert hooks.error_code is aws_errors.error_code
    assert hooks.describe_error is aws_errors.describe_error
    assert hooks.TRANSIENT_ERRORS is aws_errors.TRANSIENT_ERRORS
    assert hooks.EXPIRED_CREDENTIAL_ERRORS is aws_errors.EXPIRED_CREDENTIAL_ERRORS
