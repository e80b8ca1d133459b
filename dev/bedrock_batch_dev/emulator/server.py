"""The emulator's HTTP face: Bedrock's REST-JSON control plane, the runtime's InvokeModel/Converse, and admin.

Request shapes are checked against the constraints of botocore's service models, errors use its shapes.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import re
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from bedrock_batch_dev.emulator import catalogue, responders
from bedrock_batch_dev.emulator.faults import FaultConfig, FaultInjector
from bedrock_batch_dev.emulator.jobs import (
    STATUSES,
    ApiError,
    BatchJobService,
    ServiceClock,
    ServiceLimits,
    ServiceTimings,
    iso,
)

log = logging.getLogger("bedrock_batch_dev.emulator")

ADMIN_PREFIX = "/_emulator"

# Admin operation → (HTTP method, path under ADMIN_PREFIX). The in-process handle and the HTTP endpoint
# both go through BedrockEmulator.admin, so they offer exactly the same operations.
ADMIN_ROUTES: Mapping[str, tuple[str, str]] = {
    "health": ("GET", "/health"),
    "jobs": ("GET", "/jobs"),
    "created_job_count": ("GET", "/created-job-count"),
    "requests": ("GET", "/requests"),
    "faults": ("GET", "/faults"),
    "set_faults": ("POST", "/faults"),
    "config": ("GET", "/config"),
    "configure": ("POST", "/config"),
    "reset": ("POST", "/reset"),
}

# --- request constraints (from botocore's bedrock 2023-04-20 model) ---------------------------------------

# The model's jobName and token patterns nest quantifiers ("(-*[…-…]){0,63}") and backtrack exponentially
# on inputs like "a-----…!"; within the length limits these patterns accept exactly the same strings.
JOB_NAME_PATTERN = r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}"
_JOB_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9+.\-]*")
TOKEN_PATTERN = r"[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}"  # noqa: S105 - a regex, not a secret
_TOKEN = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?")
ROLE_ARN_PATTERN = r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+"
MODEL_ID_PATTERN = (
    r"(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:(([0-9]{12}:custom-model/[a-z0-9-]{1,63}[.]{1}[a-z0-9-:]{1,63}"
    r"/[a-z0-9]{12}$)|(:foundation-model/([a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}([.]?[a-z0-9-]{1,63})"
    r"([:][a-z0-9-]{1,63}){0,2})|(([0-9a-zA-Z][_-]?)+)$)|([0-9]{12}:(inference-profile|"
    r"application-inference-profile)/[a-zA-Z0-9-:.]+$)))|([a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}"
    r"([.]?[a-z0-9-]{1,63})([:][a-z0-9-]{1,63}){0,2})|(([0-9a-zA-Z][_-]?)+)"
)
S3_URI_PATTERN = (
    r"s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?"
)
ACCOUNT_ID_PATTERN = r"[0-9]{12}"
KMS_KEY_PATTERN = (
    r"(arn:aws(-[^:]+)?:kms:[a-zA-Z0-9-]*:[0-9]{12}:((key/[a-zA-Z0-9-]{36})|(alias/[a-zA-Z0-9-_/]+)))"
    r"|([a-zA-Z0-9-]{36})|(alias/[a-zA-Z0-9-_/]+)"
)
VPC_ID_PATTERN = r"[-0-9a-zA-Z]+"
TAG_PATTERN = r"[a-zA-Z0-9\s._:/=+@-]*"
FOUNDATION_MODEL_IDENTIFIER_PATTERN = (
    r"(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}::foundation-model/[a-z0-9-]{1,63}[.]{1}([a-z0-9-]{1,63}[.]){0,2}"
    r"[a-z0-9-]{1,63}([:][a-z0-9-]{1,63}){0,2})|([a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}([.]?[a-z0-9-]{1,63})"
    r"([:][a-z0-9-]{1,63}){0,2})"
)
PROVIDER_PATTERN = r"[A-Za-z0-9- ]{1,63}"
JOB_IDENTIFIER_PATTERN = (
    r"((arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:model-invocation-job/)?[a-z0-9]{12})"
)

_COMPILED: dict[str, re.Pattern[str]] = {JOB_NAME_PATTERN: _JOB_NAME, TOKEN_PATTERN: _TOKEN}


def _matches(pattern: str, value: str) -> bool:
    compiled = _COMPILED.get(pattern)
    if compiled is None:
        compiled = _COMPILED[pattern] = re.compile(pattern)
    return compiled.fullmatch(value) is not None


class _Checks:
    """Collects constraint violations and reports them like AWS ("2 validation errors detected: …")."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def _fail(self, value: Any, path: str, constraint: str) -> None:
        shown = "null" if value is None else f"'{value}'"
        self.errors.append(
            f"Value {shown} at '{path}' failed to satisfy constraint: Member must {constraint}"
        )

    def string(
        self,
        value: Any,
        path: str,
        *,
        required: bool = False,
        min_len: int | None = None,
        max_len: int | None = None,
        pattern: str | None = None,
        enum: tuple[str, ...] | None = None,
    ) -> None:
        if value is None:
            if required:
                self._fail(None, path, "not be null")
            return
        if not isinstance(value, str):
            self._fail(value, path, "be a string")
            return
        if (min_len is not None and len(value) < min_len) or (max_len is not None and len(value) > max_len):
            self._fail(value, path, f"have length between {min_len or 0} and {max_len}")
        elif pattern is not None and not _matches(pattern, value):
            self._fail(value, path, f"satisfy regular expression pattern: {pattern}")
        if enum is not None and value not in enum:
            self._fail(value, path, f"satisfy enum value set: [{', '.join(enum)}]")

    def integer(self, value: Any, path: str, low: int, high: int) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            self._fail(value, path, "be an integer")
        elif not low <= value <= high:
            constraint = (
                f"have value greater than or equal to {low}"
                if value < low
                else f"have value less than or equal to {high}"
            )
            self._fail(value, path, constraint)

    def structure(self, value: Any, path: str, *, required: bool = False) -> Mapping[str, Any] | None:
        if value is None:
            if required:
                self._fail(None, path, "not be null")
            return None
        if not isinstance(value, Mapping):
            self._fail(value, path, "be a structure")
            return None
        return value

    def string_list(self, value: Any, path: str, low: int, high: int, pattern: str, max_len: int) -> None:
        if value is None:
            self._fail(None, path, "not be null")
            return
        if not isinstance(value, list) or not low <= len(value) <= high:
            self._fail(value, path, f"have length between {low} and {high}")
            return
        for i, item in enumerate(value):
            self.string(item, f"{path}.{i + 1}.member", max_len=max_len, pattern=pattern)

    def raise_if_any(self) -> None:
        if self.errors:
            count = len(self.errors)
            raise ApiError(
                "ValidationException",
                f"{count} validation error{'s' if count > 1 else ''} detected: {'; '.join(self.errors)}",
            )


def validate_create_request(body: Mapping[str, Any]) -> None:
    """Check a CreateModelInvocationJob body against the service model's constraints."""
    c = _Checks()
    c.string(body.get("jobName"), "jobName", required=True, min_len=1, max_len=63, pattern=JOB_NAME_PATTERN)
    c.string(body.get("roleArn"), "roleArn", required=True, max_len=2048, pattern=ROLE_ARN_PATTERN)
    c.string(
        body.get("clientRequestToken"), "clientRequestToken", min_len=1, max_len=256, pattern=TOKEN_PATTERN
    )
    c.string(body.get("modelId"), "modelId", required=True, min_len=1, max_len=2048, pattern=MODEL_ID_PATTERN)
    for union, member in (
        ("inputDataConfig", "s3InputDataConfig"),
        ("outputDataConfig", "s3OutputDataConfig"),
    ):
        outer = c.structure(body.get(union), union, required=True)
        path = f"{union}.{member}"
        location = c.structure(outer.get(member), path, required=True) if outer is not None else None
        if location is None:
            continue
        c.string(
            location.get("s3Uri"),
            f"{path}.s3Uri",
            required=True,
            min_len=1,
            max_len=1024,
            pattern=S3_URI_PATTERN,
        )
        c.string(location.get("s3BucketOwner"), f"{path}.s3BucketOwner", pattern=ACCOUNT_ID_PATTERN)
        if member == "s3InputDataConfig":
            c.string(location.get("s3InputFormat"), f"{path}.s3InputFormat", enum=("JSONL",))
        else:
            key_id = location.get("s3EncryptionKeyId")
            c.string(key_id, f"{path}.s3EncryptionKeyId", min_len=1, max_len=2048, pattern=KMS_KEY_PATTERN)
    vpc = c.structure(body.get("vpcConfig"), "vpcConfig")
    if vpc is not None:
        c.string_list(vpc.get("subnetIds"), "vpcConfig.subnetIds", 1, 16, VPC_ID_PATTERN, 32)
        c.string_list(vpc.get("securityGroupIds"), "vpcConfig.securityGroupIds", 1, 5, VPC_ID_PATTERN, 32)
    c.integer(body.get("timeoutDurationInHours"), "timeoutDurationInHours", 24, 168)
    c.string(body.get("modelInvocationType"), "modelInvocationType", enum=("InvokeModel", "Converse"))
    tags = body.get("tags")
    if tags is not None:
        if not isinstance(tags, list) or len(tags) > 200:
            c._fail(tags, "tags", "have length less than or equal to 200")
        else:
            for i, tag in enumerate(tags):
                item = c.structure(tag, f"tags.{i + 1}.member", required=True)
                if item is not None:
                    c.string(
                        item.get("key"),
                        f"tags.{i + 1}.member.key",
                        required=True,
                        min_len=1,
                        max_len=128,
                        pattern=TAG_PATTERN,
                    )
                    c.string(
                        item.get("value"),
                        f"tags.{i + 1}.member.value",
                        required=True,
                        max_len=256,
                        pattern=TAG_PATTERN,
                    )
    c.raise_if_any()


def _validate_identifier(identifier: str) -> None:
    c = _Checks()
    c.string(identifier, "jobIdentifier", max_len=1011, pattern=JOB_IDENTIFIER_PATTERN)
    c.raise_if_any()


def _parse_timestamp(value: str, name: str) -> datetime:
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", value):
            return datetime.fromtimestamp(float(value), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError as exc:
        raise ApiError(
            "ValidationException", f"Value '{value}' at '{name}' is not a valid timestamp."
        ) from exc


# --- the emulator ------------------------------------------------------------------------------------------


@dataclass
class HttpResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> HttpResponse:
    return HttpResponse(
        status, orjson.dumps(payload), {"Content-Type": "application/json", **(headers or {})}
    )


def _error(exc: ApiError) -> HttpResponse:
    # botocore's rest-json parser reads the error code from x-amzn-ErrorType and the text from "message".
    return _json(exc.status, {"message": exc.message}, {"x-amzn-ErrorType": exc.code})


_Route = tuple[str, re.Pattern[str], str]
ROUTES: tuple[_Route, ...] = (
    ("POST", re.compile(r"/model-invocation-job"), "CreateModelInvocationJob"),
    ("GET", re.compile(r"/model-invocation-jobs"), "ListModelInvocationJobs"),
    ("GET", re.compile(r"/model-invocation-job/([^/]+)"), "GetModelInvocationJob"),
    ("POST", re.compile(r"/model-invocation-job/([^/]+)/stop"), "StopModelInvocationJob"),
    ("GET", re.compile(r"/foundation-models"), "ListFoundationModels"),
    ("GET", re.compile(r"/foundation-models/([^/]+)"), "GetFoundationModel"),
    ("POST", re.compile(r"/model/([^/]+)/invoke"), "InvokeModel"),
    ("POST", re.compile(r"/model/([^/]+)/converse"), "Converse"),
    ("POST", re.compile(r"/listTagsForResource"), "ListTagsForResource"),
)


class BedrockEmulator:
    """The emulated service behind the HTTP server: API operations, fault injection and admin operations."""

    def __init__(
        self,
        s3_client: Any,
        *,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        time_scale: float = 1.0,
        limits: ServiceLimits | None = None,
        timings: ServiceTimings | None = None,
        faults: FaultConfig | None = None,
        max_recorded_requests: int = 10_000,
    ) -> None:
        self._initial = (
            faults or FaultConfig(),
            limits or ServiceLimits(),
            timings or ServiceTimings(),
            time_scale,
        )
        self.faults = FaultInjector(self._initial[0])
        self.clock = ServiceClock(time_scale)
        self.service = BatchJobService(
            s3_client,
            region=region,
            account_id=account_id,
            limits=self._initial[1],
            timings=self._initial[2],
            faults=self.faults,
            clock=self.clock,
        )
        self._requests: deque[dict[str, Any]] = deque(maxlen=max_recorded_requests)
        self._requests_lock = threading.Lock()
        self._operations: Mapping[
            str, Callable[[str | None, Mapping[str, list[str]], bytes], HttpResponse]
        ] = {
            "CreateModelInvocationJob": self._create,
            "GetModelInvocationJob": self._get,
            "ListModelInvocationJobs": self._list,
            "StopModelInvocationJob": self._stop,
            "GetFoundationModel": self._get_model,
            "ListFoundationModels": self._list_models,
            "InvokeModel": self._invoke,
            "Converse": self._converse,
            "ListTagsForResource": self._list_tags,
        }

    def start(self) -> None:
        self.service.start()

    def close(self) -> None:
        self.service.close()

    # --- HTTP dispatch ---------------------------------------------------------------------------------

    def handle(self, method: str, target: str, body: bytes) -> HttpResponse:
        """Answer one HTTP request (``target`` is the raw request path with its query string)."""
        split = urlsplit(target)
        path = split.path.rstrip("/") or "/"
        if path.startswith(ADMIN_PREFIX):
            return self._handle_admin(method, path[len(ADMIN_PREFIX) :], body)
        query = parse_qs(split.query, keep_blank_values=True)
        for route_method, pattern, operation in ROUTES:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                # Path labels arrive percent-encoded (ARNs carry ':' and '/').
                label = unquote(match.group(1)) if match.groups() else None
                return self._call(operation, label, query, body)
        return _error(ApiError("UnknownOperationException", f"No operation matches {method} {path}"))

    def _call(
        self, operation: str, label: str | None, query: Mapping[str, list[str]], body: bytes
    ) -> HttpResponse:
        record: dict[str, Any] = {"operation": operation, "time": iso(datetime.now(UTC))}
        try:
            params = self._params(operation, label, query, body)
            record["params"] = params
            if delay := self.faults.delay(operation):
                time.sleep(delay)  # a request thread of its own: other calls are answered meanwhile
            fault = self.faults.api_fault(operation)
            if fault:
                raise ApiError(fault, _fault_message(fault, operation))
            response = self._operations[operation](label, query, body)
        except ApiError as exc:
            record.update(status=exc.status, error=exc.code)
            response = _error(exc)
        else:
            record["status"] = response.status
        record.setdefault("params", {})
        with self._requests_lock:
            self._requests.append(record)
        return response

    @staticmethod
    def _params(
        operation: str, label: str | None, query: Mapping[str, list[str]], body: bytes
    ) -> dict[str, Any]:
        """What the admin ``requests`` view keeps; runtime bodies hold call text, so only their size."""
        if operation in ("InvokeModel", "Converse"):
            return {"modelId": label, "bodyBytes": len(body)}
        params: dict[str, Any] = {k: v[-1] for k, v in query.items()}
        if label is not None:
            params["modelIdentifier" if operation == "GetFoundationModel" else "jobIdentifier"] = label
        if body:
            parsed = _load_body(body)
            if isinstance(parsed, dict):
                params.update(parsed)
        return params

    # --- control plane ---------------------------------------------------------------------------------

    def _create(self, label: str | None, query: Mapping[str, list[str]], body: bytes) -> HttpResponse:
        request = _load_body(body)
        if not isinstance(request, dict):
            raise ApiError("ValidationException", "The request body must be a JSON object.")
        validate_create_request(request)
        arn, _created = self.service.create_job(request)
        return _json(200, {"jobArn": arn})

    def _get(self, label: str | None, query: Mapping[str, list[str]], body: bytes) -> HttpResponse:
        assert label is not None
        _validate_identifier(label)
        return _json(200, self.service.get_job(label))

    def _stop(self, label: str | None, query: Mapping[str, list[str]], body: bytes) -> HttpResponse:
        assert label is not None
        _validate_identifier(label)
        self.service.stop_job(label)
        return _json(200, {})

    def _list(self, label: str | None, query: Mapping[str, list[str]], body: bytes) -> HttpResponse:
        q = {k: v[-1] for k, v in query.items()}
        c = _Checks()
        c.string(q.get("statusEquals"), "statusEquals", enum=STATUSES)
        c.string(q.get("nameContains"), "nameContains", min_len=1, max_len=63, pattern=JOB_NAME_PATTERN)
        c.string(q.get("sortBy"), "sortBy", enum=("CreationTime",))
        c.string(q.get("sortOrder"), "sortOrder", enum=("Ascending", "Descending"))
        max_results = 1000
        if "maxResults" in q:
            try:
                max_results = int(q["maxResults"])
            except ValueError:
                c._fail(q["maxResults"], "maxResults", "be an integer")
            else:
                c.integer(max_results, "maxResults", 1, 1000)
        c.raise_if_any()
        after = _parse_timestamp(q["submitTimeAfter"], "submitTimeAfter") if "submitTimeAfter" in q else None
        before = (
            _parse_timestamp(q["submitTimeBefore"], "submitTimeBefore") if "submitTimeBefore" in q else None
        )
        summaries = self.service.list_jobs(
            submit_time_after=after,
            submit_time_before=before,
            status=q.get("statusEquals"),
            name_contains=q.get("nameContains"),
            descending=q.get("sortOrder", "Descending") == "Descending",
        )
        # The token names the filters it was issued for, so it cannot be replayed against another listing.
        fingerprint = "|".join(f"{k}={q[k]}" for k in sorted(q) if k not in ("nextToken", "maxResults"))
        offset = 0
        if "nextToken" in q:
            offset = _decode_token(q["nextToken"], fingerprint)
        page = summaries[offset : offset + max_results]
        response: dict[str, Any] = {"invocationJobSummaries": page}
        if offset + max_results < len(summaries):
            response["nextToken"] = _encode_token(offset + max_results, fingerprint)
        return _json(200, response)

    def _list_tags(self, label: str | None, query: Mapping[str, list[str]], body: bytes) -> HttpResponse:
        request = _load_body(body)
        arn = request.get("resourceARN") if isinstance(request, dict) else None
        if not isinstance(arn, str) or not arn.startswith("arn:"):
            raise ApiError("ValidationException", "1 validation error detected: resourceARN must be an ARN.")
        return _json(200, {"tags": self.service.job_tags(arn)})

    # --- model catalogue -------------------------------------------------------------------------------

    def _get_model(self, label: str | None, query: Mapping[str, list[str]], body: bytes) -> HttpResponse:
        assert label is not None
        c = _Checks()
        pattern = FOUNDATION_MODEL_IDENTIFIER_PATTERN
        c.string(label, "modelIdentifier", min_len=1, max_len=2048, pattern=pattern)
        c.raise_if_any()
        model = catalogue.foundation_model(label)
        if model is None:
            # A well-formed id of no foundation model (a typo, a cross-region profile id): the service answers
            # 400, not the 404 its error list suggests.
            raise ApiError("ValidationException", f"Could not find model with identifier {label}")
        return _json(200, {"modelDetails": model.details(self.service.region)})

    def _list_models(self, label: str | None, query: Mapping[str, list[str]], body: bytes) -> HttpResponse:
        q = {k: v[-1] for k, v in query.items()}
        c = _Checks()
        c.string(q.get("byProvider"), "byProvider", pattern=PROVIDER_PATTERN)
        c.string(q.get("byOutputModality"), "byOutputModality", enum=catalogue.MODALITIES)
        c.string(q.get("byInferenceType"), "byInferenceType", enum=catalogue.INFERENCE_TYPES)
        c.string(q.get("byCustomizationType"), "byCustomizationType", enum=catalogue.CUSTOMIZATIONS)
        c.raise_if_any()
        models = catalogue.list_models(
            provider=q.get("byProvider"),
            output_modality=q.get("byOutputModality"),
            inference_type=q.get("byInferenceType"),
            customization=q.get("byCustomizationType"),
        )
        return _json(200, {"modelSummaries": [model.details(self.service.region) for model in models]})

    # --- runtime ---------------------------------------------------------------------------------------

    def _invoke(self, label: str | None, query: Mapping[str, list[str]], body: bytes) -> HttpResponse:
        assert label is not None
        started = time.perf_counter()
        try:
            family = responders.refuse_unknown_model(label)
            reply = responders.respond(family, _load_body(body), self._invocation("InvokeModel", label, body))
        except responders.ModelInputError as exc:
            raise ApiError("ValidationException", str(exc)) from exc
        latency = max(1, round((time.perf_counter() - started) * 1000))
        return _json(
            200,
            reply.body,
            {
                "X-Amzn-Bedrock-Input-Token-Count": str(reply.input_tokens),
                "X-Amzn-Bedrock-Output-Token-Count": str(reply.output_tokens),
                "X-Amzn-Bedrock-Invocation-Latency": str(latency),
            },
        )

    def _converse(self, label: str | None, query: Mapping[str, list[str]], body: bytes) -> HttpResponse:
        assert label is not None
        started = time.perf_counter()
        request = _load_body(body)
        if not isinstance(request, Mapping):
            raise ApiError("ValidationException", "The request body must be a JSON object.")
        try:
            responders.refuse_unknown_model(label, "Converse")
            reply = responders.respond_converse(
                request,
                latency_ms=max(1, round((time.perf_counter() - started) * 1000)),
                invocation=self._invocation("Converse", label, body),
            )
        except responders.ModelInputError as exc:
            raise ApiError("ValidationException", str(exc)) from exc
        return _json(200, reply.body)

    def _invocation(self, operation: str, model_id: str, body: bytes) -> responders.Invocation:
        # A runtime call has no record id: the invalid-reply fault keys on the request itself.
        if not self.faults.config.invalid_reply_rate:
            return responders.Invocation(model_id=model_id)
        digest = hashlib.blake2b(body, digest_size=12).hexdigest()
        draw = self.faults.invalid_reply(operation, model_id, digest)
        return responders.Invocation(model_id=model_id, invalid_draw=draw)

    # --- admin -----------------------------------------------------------------------------------------

    def _handle_admin(self, method: str, path: str, body: bytes) -> HttpResponse:
        operation = next((op for op, route in ADMIN_ROUTES.items() if route == (method, path)), None)
        if operation is None:
            return _json(
                404,
                {"message": f"No admin operation {method} {ADMIN_PREFIX}{path}; see {sorted(ADMIN_ROUTES)}"},
            )
        payload = _load_body(body) if body else {}
        if not isinstance(payload, dict):
            return _json(400, {"message": "The admin request body must be a JSON object."})
        try:
            return _json(200, self.admin(operation, payload))
        except (ValueError, TypeError) as exc:
            return _json(400, {"message": str(exc)})

    def admin(self, operation: str, payload: Mapping[str, Any] | None = None) -> Any:
        """Run one admin operation; results are JSON-ready so in-process and HTTP callers see the same."""
        payload = dict(payload or {})
        if operation == "health":
            return {"status": "ok"}
        if operation == "jobs":
            return self.service.admin_jobs()
        if operation == "created_job_count":
            return self.service.created_job_count()
        if operation == "requests":
            with self._requests_lock:
                return [dict(r) for r in self._requests]
        if operation == "faults":
            return self.faults.config.to_dict()
        if operation == "set_faults":
            self.faults.set(self.faults.config.replace(**payload))
            return self.faults.config.to_dict()
        if operation == "config":
            return self._config()
        if operation == "configure":
            self._configure(payload)
            return self._config()
        if operation == "reset":
            faults, limits, timings, time_scale = self._initial
            self.service.reset()
            self.faults.set(faults)
            self.service.configure(limits=limits, timings=timings, time_scale=time_scale)
            with self._requests_lock:
                self._requests.clear()
            return self._config()
        raise ValueError(f"unknown admin operation {operation!r}; known: {sorted(ADMIN_ROUTES)}")

    def _config(self) -> dict[str, Any]:
        return {
            "time_scale": self.clock.scale,
            "limits": dataclasses.asdict(self.service.limits),
            "timings": dataclasses.asdict(self.service.timings),
            "faults": self.faults.config.to_dict(),
            "region": self.service.region,
            "account_id": self.service.account_id,
        }

    def _configure(self, payload: Mapping[str, Any]) -> None:
        """Apply ``time_scale`` and any ServiceLimits / ServiceTimings field given by name."""
        payload = dict(payload)
        time_scale = payload.pop("time_scale", None)
        limit_names = {f.name for f in dataclasses.fields(ServiceLimits)}
        timing_names = {f.name for f in dataclasses.fields(ServiceTimings)}
        unknown = sorted(set(payload) - limit_names - timing_names)
        if unknown:
            raise ValueError(
                f"unknown setting(s) {unknown}; known: time_scale, {sorted(limit_names | timing_names)}"
            )
        limits = dataclasses.replace(
            self.service.limits, **{k: v for k, v in payload.items() if k in limit_names}
        )
        timings = dataclasses.replace(
            self.service.timings, **{k: v for k, v in payload.items() if k in timing_names}
        )
        self.service.configure(limits=limits, timings=timings, time_scale=time_scale)


def _fault_message(code: str, operation: str) -> str:
    if code == "AccessDeniedException":
        return f"User is not authorized to perform: bedrock:{operation} (injected fault)"
    return ApiError(code).message


def _load_body(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else {}
    except orjson.JSONDecodeError as exc:
        raise ApiError("ValidationException", f"The request body is not valid JSON: {exc}") from exc


def _encode_token(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"o": offset, "f": fingerprint})).decode()


def _decode_token(token: str, fingerprint: str) -> int:
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        offset = int(payload["o"])
        matches = payload["f"] == fingerprint
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        matches, offset = False, -1
    if not matches or offset < 0:
        raise ApiError(
            "ValidationException", "The nextToken is invalid or was issued for a different request."
        )
    return offset


# --- HTTP server -------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: botocore pools connections
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the client's delayed
    # ACK (~40 ms per call on Linux).
    disable_nagle_algorithm = True
    emulator: BedrockEmulator

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            response = self.emulator.handle(self.command, self.path, body)
        except Exception:
            log.exception("unhandled error answering %s %s", self.command, urlsplit(self.path).path)
            response = _error(ApiError("InternalServerException"))
        self.send_response(response.status)
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients drop idle keep-alive connections whenever they like; that is not an emulator error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("client %s closed the connection", client_address)
        else:
            log.exception("error serving %s", client_address)


class EmulatorServer:
    """A threaded HTTP server for one :class:`BedrockEmulator` on its own thread."""

    def __init__(self, emulator: BedrockEmulator, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("EmulatorHandler", (_Handler,), {"emulator": emulator})
        self._httpd = _QuietServer((host, port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="emulator-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> EmulatorServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
