"""Airflow hook for Bedrock batch inference: the four model invocation job operations, sync and async, and
the foundation-model catalogue.

Also hands out S3, Glue and bedrock-runtime clients built from the same connection (per-service endpoints
included), and one async client per connection shared by all the triggers of a triggerer.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import cached_property
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from botocore.exceptions import ClientError

# The error helpers live in aws_errors; imported from here too by earlier callers.
from bedrock_batch.aws_errors import EXPIRED_CREDENTIAL_ERRORS as EXPIRED_CREDENTIAL_ERRORS
from bedrock_batch.aws_errors import TRANSIENT_ERRORS as TRANSIENT_ERRORS
from bedrock_batch.aws_errors import describe_error as describe_error
from bedrock_batch.aws_errors import error_code
from bedrock_batch.aws_errors import is_transient as is_transient
from bedrock_batch.jobs import ACTIVE_STATUSES, TERMINAL_STATUSES, model_matches
from bedrock_batch.log_redaction import install_sdk_log_redaction


def _without_metadata(response: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in response.items() if key != "ResponseMetadata"}


class BedrockBatchHook(AwsBaseHook):
    """Interact with Amazon Bedrock model invocation (batch inference) jobs.

    Thin wrapper around :external+boto3:py:class:`boto3.client("bedrock") <Bedrock.Client>`. Endpoints
    come from the connection: ``{"service_config": {"bedrock": {"endpoint_url": ...}, "s3": {...}}}``
    applies to the sync client, the async (aiobotocore) client and the S3 / Glue / runtime clients alike.

    Additional arguments (such as ``aws_conn_id``, ``region_name``, ``verify``, ``config``) are passed
    down to :class:`~airflow.providers.amazon.aws.hooks.base_aws.AwsBaseHook`.
    """

    client_type = "bedrock"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["client_type"] = self.client_type
        super().__init__(*args, **kwargs)
        # Every client this hook builds (sync, async, S3, runtime) logs through botocore's loggers: keep
        # request and response bodies (prompts, transcripts, replies) out of their DEBUG records.
        install_sdk_log_redaction()

    # --- clients of other services from the same connection -------------------------------------------

    def client_for(self, service_name: str) -> Any:
        """A boto3 client of ``service_name`` with this connection's credentials, region and endpoint.

        ``AwsBaseHook.get_client_type`` always builds the hook's own service (its first argument is the
        region), so other services are built here the same way it builds its own.

        :param service_name: a boto3 service name such as ``s3`` or ``bedrock-runtime``.
        """
        session = self.get_session(region_name=self.region_name)
        return session.client(
            service_name=service_name,
            endpoint_url=self.conn_config.get_service_endpoint_url(service_name=service_name),
            config=self._get_config(),
            verify=self.verify,
        )

    @cached_property
    def s3_client(self) -> Any:
        """boto3 S3 client of this connection (honors ``service_config.s3.endpoint_url``)."""
        return self.client_for("s3")

    @cached_property
    def glue_client(self) -> Any:
        """boto3 Glue client of this connection (honors ``service_config.glue.endpoint_url``)."""
        return self.client_for("glue")

    @cached_property
    def runtime_client(self) -> Any:
        """boto3 bedrock-runtime client (``service_config["bedrock-runtime"]``) for on-demand calls."""
        return self.client_for("bedrock-runtime")

    # --- job operations -------------------------------------------------------------------------------

    def create_job(
        self,
        *,
        job_name: str,
        role_arn: str,
        model_id: str,
        input_s3_uri: str,
        output_s3_uri: str,
        client_request_token: str,
        invocation_type: str | None = None,
        timeout_hours: int | None = None,
        tags: Mapping[str, str] | None = None,
        vpc_config: Mapping[str, Sequence[str]] | None = None,
        output_kms_key_id: str | None = None,
        input_bucket_owner: str | None = None,
        output_bucket_owner: str | None = None,
    ) -> str:
        """Create a model invocation job (CreateModelInvocationJob) and return its ARN.

        The token is required: a repeated call with the same token returns the same job instead of a
        duplicate, which is what makes retries of a submit task free.

        :param job_name: the job's name (see :func:`bedrock_batch.jobs.job_name_for`).
        :param role_arn: service role Bedrock assumes to read the input and write the output.
        :param model_id: model id, inference-profile id or ARN.
        :param input_s3_uri: a ``.jsonl`` object or a prefix of them.
        :param output_s3_uri: prefix the job writes ``<jobId>/...`` under.
        :param client_request_token: idempotency token (see :func:`bedrock_batch.jobs.client_token_for`).
        :param invocation_type: ``InvokeModel`` or ``Converse``; ``None`` keeps the service default.
        :param timeout_hours: ``timeoutDurationInHours`` (24-168); ``None`` keeps the service default.
        :param tags: tag key → value.
        :param vpc_config: ``{"subnetIds": [...], "securityGroupIds": [...]}``.
        :param output_kms_key_id: KMS key that encrypts the output.
        :param input_bucket_owner: account id that must own the input bucket.
        :param output_bucket_owner: account id that must own the output bucket.
        """
        s3_input: dict[str, Any] = {"s3Uri": input_s3_uri, "s3InputFormat": "JSONL"}
        if input_bucket_owner:
            s3_input["s3BucketOwner"] = input_bucket_owner
        s3_output: dict[str, Any] = {"s3Uri": output_s3_uri}
        if output_kms_key_id:
            s3_output["s3EncryptionKeyId"] = output_kms_key_id
        if output_bucket_owner:
            s3_output["s3BucketOwner"] = output_bucket_owner
        request: dict[str, Any] = {
            "jobName": job_name,
            "roleArn": role_arn,
            "modelId": model_id,
            "clientRequestToken": client_request_token,
            "inputDataConfig": {"s3InputDataConfig": s3_input},
            "outputDataConfig": {"s3OutputDataConfig": s3_output},
        }
        if invocation_type:
            request["modelInvocationType"] = invocation_type
        if timeout_hours is not None:
            request["timeoutDurationInHours"] = timeout_hours
        if tags:
            request["tags"] = [{"key": key, "value": value} for key, value in tags.items()]
        if vpc_config:
            request["vpcConfig"] = {
                "subnetIds": list(vpc_config["subnetIds"]),
                "securityGroupIds": list(vpc_config["securityGroupIds"]),
            }
        return str(self.conn.create_model_invocation_job(**request)["jobArn"])

    def get_job(self, job_identifier: str) -> dict[str, Any]:
        """Describe a job (GetModelInvocationJob) by ARN or 12-character id.

        :param job_identifier: the job's ARN or id.
        """
        return _without_metadata(self.conn.get_model_invocation_job(jobIdentifier=job_identifier))

    def _list_jobs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        paginator = self.conn.get_paginator("list_model_invocation_jobs")
        for page in paginator.paginate(**filters, PaginationConfig={"PageSize": 1000}):
            yield from page.get("invocationJobSummaries", [])

    def find_jobs_by_name(self, prefix: str) -> list[dict[str, Any]]:
        """Every job whose name starts with ``prefix``, in any status, newest first.

        :param prefix: the start of the job names to find (e.g. a shard's job name prefix).
        """
        # nameContains matches anywhere in the name; only a true prefix identifies our shard's jobs.
        listed = self._list_jobs(nameContains=prefix, sortBy="CreationTime", sortOrder="Descending")
        return [job for job in listed if job["jobName"].startswith(prefix)]

    def active_jobs(self, model_id: str) -> list[dict[str, Any]]:
        """The jobs of ``model_id`` that count against the concurrent-jobs quota right now.

        Submitted, Validating, Scheduled and InProgress jobs of the whole account and region, including
        jobs created outside Airflow; a job that stores the model as an ARN matches its id.

        :param model_id: model id, inference-profile id or ARN.
        """
        return [
            job
            for status in sorted(ACTIVE_STATUSES)
            for job in self._list_jobs(statusEquals=status)
            if model_matches(str(job.get("modelId", "")), model_id)
        ]

    def count_active_jobs(self, model_id: str) -> int:
        """How many jobs of ``model_id`` count against the concurrent-jobs quota (see :meth:`active_jobs`).

        :param model_id: model id, inference-profile id or ARN.
        """
        return len(self.active_jobs(model_id))

    def stop_job(self, job_identifier: str) -> bool:
        """Ask the service to stop a job; stopping a job that already ended is not an error.

        :param job_identifier: the job's ARN or id.
        :return: ``True`` if a stop was requested, ``False`` if the job had already ended.
        """
        try:
            self.conn.stop_model_invocation_job(jobIdentifier=job_identifier)
        except ClientError as error:
            # The service answers ValidationException ("State was: Completed") for an ended job; check
            # the status rather than the message so any other validation problem still surfaces.
            if error_code(error) != "ValidationException":
                raise
            status = self.get_job(job_identifier).get("status")
            if status not in TERMINAL_STATUSES and status != "Stopping":
                raise
            self.log.info("Job %s already %s; nothing to stop", job_identifier, status)
            return False
        return True

    def describe_foundation_model(self, model_identifier: str) -> dict[str, Any] | None:
        """Describe a foundation model (GetFoundationModel), or ``None`` when the service does not know it.

        The service answers an unknown, well-formed id with ValidationException ("Could not find model with
        identifier …"), although its error list also has ResourceNotFoundException: both mean "no such
        model". Other errors (access denied, throttling) are raised.

        :param model_identifier: a foundation-model id or ARN (not a profile id: see
            :func:`bedrock_batch.preflight.model_identity`).
        """
        try:
            response = self.conn.get_foundation_model(modelIdentifier=model_identifier)
        except ClientError as error:
            if error_code(error) in ("ValidationException", "ResourceNotFoundException"):
                return None
            raise
        return dict(response.get("modelDetails") or {})

    async def get_job_async(self, job_identifier: str, client: Any | None = None) -> dict[str, Any]:
        """Describe a job through the async (aiobotocore) client, for triggers.

        :param job_identifier: the job's ARN or id.
        :param client: an open client from :meth:`get_async_conn` to reuse; a new one is opened if omitted.
        """
        if client is not None:
            return _without_metadata(await client.get_model_invocation_job(jobIdentifier=job_identifier))
        async with await self.get_async_conn() as new_client:
            return _without_metadata(await new_client.get_model_invocation_job(jobIdentifier=job_identifier))

    async def stop_job_async(self, job_identifier: str) -> bool:
        """Async :meth:`stop_job`, for a trigger's ``on_kill``.

        :param job_identifier: the job's ARN or id.
        :return: ``True`` if a stop was requested, ``False`` if the job had already ended.
        """
        async with await self.get_async_conn() as client:
            try:
                await client.stop_model_invocation_job(jobIdentifier=job_identifier)
            except ClientError as error:
                if error_code(error) != "ValidationException":
                    raise
                job = await client.get_model_invocation_job(jobIdentifier=job_identifier)
                if job.get("status") not in TERMINAL_STATUSES and job.get("status") != "Stopping":
                    raise
                return False
        return True


# --- one async client per connection, shared by the triggers of an event loop ------------------------------


class _SharedClient:
    """The aiobotocore client of one set of connection parameters in one event loop, and its users.

    A reconnect opens a new client (a *generation*) for every later call; the old one is closed once the calls
    still running on it have returned, so no user sees its client closed under it.
    """

    def __init__(self, make_hook: Callable[[], BedrockBatchHook]) -> None:
        self._make_hook = make_hook
        self._lock = asyncio.Lock()
        self._client: Any = None
        self._generation = 0
        self._open_clients: dict[int, AsyncExitStack] = {}
        self._calls: Counter[int] = Counter()
        self.users = 0

    async def _current(self) -> tuple[Any, int]:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    await self._open()
        return self._client, self._generation

    async def _open(self) -> None:
        # A new hook reads the connection again: rotated credentials in it or its secrets backend count.
        stack = AsyncExitStack()
        client = await stack.enter_async_context(await self._make_hook().get_async_conn())
        self._generation += 1
        self._open_clients[self._generation] = stack
        self._client = client

    @asynccontextmanager
    async def borrow(self) -> AsyncIterator[tuple[Any, int]]:
        """The current client and its generation, kept open until the caller's call has returned."""
        client, generation = await self._current()
        self._calls[generation] += 1
        try:
            yield client, generation
        finally:
            self._calls[generation] -= 1
            if not self._calls[generation]:
                del self._calls[generation]
                if generation != self._generation:
                    await self._close(generation)

    async def reconnect(self, failed_generation: int) -> None:
        """Replace the client of ``failed_generation``, unless another user already has."""
        async with self._lock:
            if failed_generation != self._generation or self._client is None:
                return
            self._client = None
            await self._open()
        if not self._calls[failed_generation]:
            await self._close(failed_generation)

    async def _close(self, generation: int) -> None:
        stack = self._open_clients.pop(generation, None)
        if stack is not None:
            await stack.aclose()

    async def close(self) -> None:
        self._client = None
        for generation in list(self._open_clients):
            await self._close(generation)


class SharedAsyncClient:
    """One user's handle on a shared async client (see :func:`shared_async_client`)."""

    def __init__(self, shared: _SharedClient) -> None:
        self._shared = shared
        self._generation = 0

    async def get_job(self, job_identifier: str) -> dict[str, Any]:
        """Describe a job (GetModelInvocationJob) by ARN or 12-character id.

        :param job_identifier: the job's ARN or id.
        """
        async with self._shared.borrow() as (client, self._generation):
            return _without_metadata(await client.get_model_invocation_job(jobIdentifier=job_identifier))

    async def reconnect(self) -> None:
        """Open a new client for every user after this one's last call failed on expired credentials.

        Many users that hit the expiry together cause one reconnect, not one each.
        """
        await self._shared.reconnect(self._generation)


_SharedClients = dict[tuple[Any, ...], _SharedClient]
_SHARED_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SharedClients] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def shared_async_client(
    *,
    aws_conn_id: str | None,
    region_name: str | None = None,
    verify: bool | str | None = None,
    config: Mapping[str, Any] | None = None,
) -> AsyncIterator[SharedAsyncClient]:
    """Use the event loop's one bedrock client for these connection parameters, opening it for the first user.

    A thousand triggers waiting in one triggerer share one client (one connection pool, one credential
    lookup) instead of opening a thousand; it is closed when its last user leaves. aiobotocore clients belong
    to the loop that opened them, so each event loop has its own.

    :param aws_conn_id: the Airflow connection used for AWS credentials and endpoints.
    :param region_name: AWS region name; ``None`` uses the connection's.
    :param verify: whether or not to verify SSL certificates.
    :param config: botocore client configuration (key-values).
    """
    clients = _SHARED_CLIENTS.setdefault(asyncio.get_running_loop(), {})
    key = (aws_conn_id, region_name, verify, json.dumps(config, sort_keys=True, default=repr))
    shared = clients.get(key)
    if shared is None:
        hook_config = dict(config) if config is not None else None
        shared = clients[key] = _SharedClient(
            lambda: BedrockBatchHook(
                aws_conn_id=aws_conn_id, region_name=region_name, verify=verify, config=hook_config
            )
        )
    shared.users += 1
    try:
        yield SharedAsyncClient(shared)
    finally:
        shared.users -= 1
        if not shared.users:
            # Out of the registry before the first await: a user arriving meanwhile opens a fresh client.
            if clients.get(key) is shared:
                del clients[key]
            await shared.close()
