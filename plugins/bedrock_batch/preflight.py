"""The checks a run's parameters pass before any job: every location, the role, the model, the reply schema
and the buckets. A typo fails the run's first task, naming the argument and the value, instead of a job (paid
for) or a table written where nobody will find it.

Imports nothing from Airflow (:class:`~bedrock_batch.operators.check.BedrockBatchCheckOperator` and the source
sensor adapt it). The model check reads the service's catalogue through a function the caller gives (the
hook's GetFoundationModel); the bucket check takes an S3 client. Every failure is a
:class:`~bedrock_batch.errors.ParameterError`; a reply schema's failure is a
:class:`~bedrock_batch.errors.SchemaError`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from bedrock_batch.aws_errors import error_code, is_transient
from bedrock_batch.errors import ParameterError
from bedrock_batch.models import REGION_PREFIXES

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"

# --- locations --------------------------------------------------------------------------------------------

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET_CHARACTERS = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_LOOKS_LIKE_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/")
# Reserved by S3 for access points, Object Lambda, directory buckets, table buckets, documentation.
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_LOCATION_FORMS = (
    "write s3://<bucket>/<prefix>, or file:///<absolute path> (or the absolute path itself) to keep it on "
    "the worker's disk"
)


def check_location(argument: str, value: Any) -> str:
    """``value`` as a location the library reads or writes: an ``s3://bucket/prefix`` URI (returned as given)
    or an explicit local path (``file:///abs/path`` or ``/abs/path``, returned as the absolute path).

    A relative path (``results/``) or a bucket without its scheme (``my-bucket/x``) is refused: it would be
    resolved against the worker's working directory, which a container loses when it ends.

    :param argument: the argument's name, for the message.
    :param value: the rendered value.
    :raises ParameterError: naming the argument and the value.
    """
    if not isinstance(value, str) or not value.strip() or value.strip() in ("None", "null"):
        raise ParameterError(argument, value, f"a location is required; {_LOCATION_FORMS}")
    if value != value.strip():
        raise ParameterError(argument, value, "remove the leading or trailing spaces")
    if value.startswith(S3_SCHEME):
        check_bucket_name(argument, value, value[len(S3_SCHEME) :].split("/", 1)[0])
        return value
    if value.startswith(FILE_SCHEME):
        path = value[len(FILE_SCHEME) :]
        if not path.startswith("/"):
            raise ParameterError(
                argument, value, "a file:// URI needs an absolute path: file:///<path> (three slashes)"
            )
        return path
    scheme = _SCHEME.match(value)
    if scheme:
        name = scheme.group(1)
        fix = (
            "S3 URIs start with a lowercase s3://"
            if name.lower() in ("s3", "s3a", "s3n")
            else _LOCATION_FORMS
        )
        raise ParameterError(
            argument, value, f"the {name}:// scheme is not supported (s3:// and file:// are); {fix}"
        )
    if value.startswith("/"):
        return value
    hint = f" (did you mean s3://{value}?)" if _LOOKS_LIKE_BUCKET.match(value) else ""
    raise ParameterError(
        argument,
        value,
        f"neither an s3:// URI nor an explicit local path{hint}; a relative path would land in the worker's "
        f"working directory, which is lost with it; {_LOCATION_FORMS}",
    )


def check_bucket_name(argument: str, value: Any, bucket: str) -> None:
    """Refuse a bucket name S3 would refuse (the rules for general purpose buckets).

    :param argument: the argument's name, for the message.
    :param value: the whole value, for the message.
    :param bucket: the bucket name in it.
    :raises ParameterError: naming the rule the bucket breaks.
    """
    if not bucket:
        raise ParameterError(argument, value, "the S3 URI has no bucket name: s3://<bucket>/<prefix>")
    problem = None
    if not 3 <= len(bucket) <= 63:
        problem = f"is {len(bucket)} characters long (S3 bucket names have 3 to 63)"
    elif not _BUCKET_CHARACTERS.fullmatch(bucket):
        problem = (
            "may hold only lowercase letters, digits, dots and hyphens, and must start and end with a letter "
            "or a digit"
        )
    elif ".." in bucket:
        problem = "has two adjacent dots"
    elif _is_ip_address(bucket):
        problem = "is formatted as an IP address"
    elif bucket.startswith(_RESERVED_PREFIXES) or bucket.endswith(_RESERVED_SUFFIXES):
        problem = "uses a prefix or suffix S3 reserves"
    if problem:
        raise ParameterError(argument, value, f"bucket name {bucket!r} {problem}")


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def bucket_of(uri: str) -> str | None:
    """The bucket of an ``s3://`` URI, ``None`` for a local path."""
    return uri[len(S3_SCHEME) :].split("/", 1)[0] if uri.startswith(S3_SCHEME) else None


# --- the service role -------------------------------------------------------------------------------------

ROLE_ARN_PATTERN = re.compile(r"arn:aws(?:-[a-z]+)*:iam::[0-9]{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}")
_ANY_IAM_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:iam::([^:]*):([a-z-]+)/(.*)")


def check_role_arn(argument: str, value: Any) -> str:
    """``value`` as the ARN of an IAM role (``arn:aws:iam::<12-digit account>:role/<path/><name>``).

    :param argument: the argument's name, for the message.
    :param value: the rendered value.
    :raises ParameterError: naming what does not fit.
    """
    if isinstance(value, str) and ROLE_ARN_PATTERN.fullmatch(value):
        return value
    expected = "expected arn:aws:iam::<12-digit account id>:role/<role name>"
    if not isinstance(value, str) or not value.strip():
        raise ParameterError(argument, value, f"the service role's ARN is required; {expected}")
    parts = _ANY_IAM_ARN.fullmatch(value)
    if parts is None:
        hint = (
            f"; give the role's full ARN, e.g. arn:aws:iam::111122223333:role/{value}"
            if re.fullmatch(r"[\w+=,.@-]{1,64}", value)
            else ""
        )
        raise ParameterError(argument, value, f"not an IAM role ARN; {expected}{hint}")
    account, kind, _name = parts.groups()
    if kind != "role":
        raise ParameterError(argument, value, f"names an IAM {kind}, not a role; {expected}")
    if not re.fullmatch(r"[0-9]{12}", account):
        raise ParameterError(argument, value, f"the account id {account!r} is not 12 digits; {expected}")
    raise ParameterError(argument, value, f"the role name or path has characters IAM refuses; {expected}")


# --- the model --------------------------------------------------------------------------------------------

# botocore's foundation-model id (GetFoundationModelIdentifier without the ARN form).
_MODEL_ID = re.compile(r"[a-z0-9-]{1,63}[.][a-z0-9-]{1,63}(?:[.]?[a-z0-9-]{1,63})(?::[a-z0-9-]{1,63}){0,2}")
_BEDROCK_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:bedrock:([a-z0-9-]{1,20}):([0-9]{12})?:([a-z-]+)/(.+)")
# ARN kinds whose id does not name a foundation model: only the service knows what runs behind them.
OPAQUE_ARN_KINDS = frozenset(
    {"application-inference-profile", "provisioned-model", "custom-model", "imported-model"}
)
_MODEL_FORMS = (
    "expected a model id such as anthropic.claude-3-haiku-20240307-v1:0, a cross-region profile id such as "
    "us.anthropic.claude-3-haiku-20240307-v1:0, or a foundation-model, inference-profile, "
    "application-inference-profile, provisioned-model or custom-model ARN"
)


@dataclass(frozen=True)
class ModelIdentity:
    """What a model id names.

    :param model_id: the id as given.
    :param foundation_model_id: the foundation model it runs, which GetFoundationModel can describe; ``None``
        for the ARN kinds whose id does not name one (:data:`OPAQUE_ARN_KINDS`).
    """

    model_id: str
    foundation_model_id: str | None


def model_identity(argument: str, value: Any) -> ModelIdentity:
    """Check the form of a model id and find the foundation model behind it.

    :param argument: the argument's name, for the message.
    :param value: the rendered value.
    :raises ParameterError: when ``value`` has none of the forms Bedrock accepts.
    """
    if not isinstance(value, str) or not value:
        raise ParameterError(argument, value, f"a model is required; {_MODEL_FORMS}")
    if value.startswith("arn:"):
        match = _BEDROCK_ARN.fullmatch(value)
        if match is None:
            raise ParameterError(argument, value, f"not a Bedrock model ARN; {_MODEL_FORMS}")
        kind, resource = match.group(3), match.group(4)
        if kind in OPAQUE_ARN_KINDS:
            return ModelIdentity(value, None)
        if kind == "foundation-model" and _MODEL_ID.fullmatch(resource):
            return ModelIdentity(value, resource)
        if kind == "inference-profile":
            return ModelIdentity(value, _profile_model(argument, value, resource))
        raise ParameterError(argument, value, f"not a model ARN Bedrock runs jobs with; {_MODEL_FORMS}")
    if not _MODEL_ID.fullmatch(value):
        raise ParameterError(argument, value, f"not a Bedrock model id; {_MODEL_FORMS}")
    if value.partition(".")[0] in REGION_PREFIXES:
        return ModelIdentity(value, _profile_model(argument, value, value))
    return ModelIdentity(value, value)


def _profile_model(argument: str, value: str, profile_id: str) -> str:
    prefix, _, model = profile_id.partition(".")
    if prefix not in REGION_PREFIXES or not _MODEL_ID.fullmatch(model):
        raise ParameterError(
            argument,
            value,
            f"not a cross-region inference profile id (<{'|'.join(sorted(REGION_PREFIXES))}>.<model id>); "
            + _MODEL_FORMS,
        )
    return model


@dataclass(frozen=True)
class ModelCheck:
    """What the model check found.

    :param model_id: the id as given.
    :param foundation_model_id: the foundation model checked (``None``: an ARN checked for its form only).
    :param name: the model's name in the catalogue, if read.
    :param lifecycle: ``ACTIVE`` or ``LEGACY``, if read.
    :param warnings: what the run should know but that does not stop it (a LEGACY model, a catalogue not
        readable with this connection).
    """

    model_id: str
    foundation_model_id: str | None
    name: str | None = None
    lifecycle: str | None = None
    warnings: tuple[str, ...] = field(default=())


# Reads the catalogue: GetFoundationModel's modelDetails, or None when the service does not know the id.
DescribeModel = Callable[[str], Mapping[str, Any] | None]


def check_model(argument: str, value: Any, describe: DescribeModel | None) -> ModelCheck:
    """Check that the service knows the model, that it is not retired and that it answers in text.

    :param argument: the argument's name, for the message.
    :param value: the model id, profile id or ARN.
    :param describe: reads GetFoundationModel (see :data:`DescribeModel`); ``None``: check the form only.
    :raises ParameterError: an id of no form Bedrock accepts, a model the service does not know, or one that
        does not output text.
    """
    identity = model_identity(argument, value)
    base = identity.foundation_model_id
    if base is None or describe is None:
        return ModelCheck(identity.model_id, base)
    details = describe(base)
    behind = "" if base == identity.model_id else f" (the foundation model {base} behind it)"
    if details is None:
        raise ParameterError(
            argument,
            value,
            f"the service does not know this model{behind}; list the ids of the region with "
            "`aws bedrock list-foundation-models --by-output-modality TEXT`",
        )
    outputs = list(details.get("outputModalities") or [])
    if outputs and "TEXT" not in outputs:
        raise ParameterError(
            argument, value, f"the model{behind} outputs {', '.join(outputs)}, not text; choose a text model"
        )
    lifecycle = str((details.get("modelLifecycle") or {}).get("status") or "") or None
    warnings: tuple[str, ...] = ()
    if lifecycle == "LEGACY":
        warnings = (
            f"model {base} is LEGACY: the service will retire it; plan the move to an ACTIVE model "
            "(see the model lifecycle page of the Bedrock user guide)",
        )
    return ModelCheck(identity.model_id, base, details.get("modelName"), lifecycle, warnings)


# --- buckets ----------------------------------------------------------------------------------------------

_MISSING_BUCKET = frozenset({"404", "NoSuchBucket", "NotFound"})
_DENIED = frozenset({"403", "AccessDenied", "Forbidden", "AllAccessDisabled"})


def bucket_problem(bucket: str, code: str, expected_owner: str | None = None) -> str | None:
    """What an S3 error about ``bucket`` means for a run, or ``None`` when it is not about the bucket (a
    missing key, throttling): waiting or retrying cannot fix a missing bucket or a refusal.

    :param bucket: the bucket.
    :param code: the S3 error code (``NoSuchBucket``, ``404``, ``AccessDenied``, ``403``, …).
    :param expected_owner: the account the bucket must belong to, if checked.
    """
    if code in _MISSING_BUCKET:
        return f"bucket {bucket} does not exist; check the name (and the account and region)"
    if code in _DENIED:
        owner = (
            f", or the bucket is not owned by the expected account {expected_owner}" if expected_owner else ""
        )
        return (
            f"access denied to bucket {bucket}: the connection's role lacks s3:ListBucket on it{owner}; "
            "grant the access or fix the name"
        )
    if code in (
        "PermanentRedirect",
        "301",
        "AuthorizationHeaderMalformed",
        "IllegalLocationConstraintException",
    ):
        return f"bucket {bucket} is in another region than the connection's; use a bucket of the job's region"
    return None


def check_buckets(
    locations: Mapping[str, str],
    s3_client: Any,
    owner_of: Callable[[str], str | None] = lambda bucket: None,
) -> None:
    """HeadBucket every bucket the locations name, once each.

    :param locations: argument name → location (local paths are skipped).
    :param s3_client: a boto3 S3 client.
    :param owner_of: bucket → the account that must own it (sent as ``ExpectedBucketOwner``), or ``None``.
    :raises ParameterError: naming the first argument whose bucket does not exist or refuses access.
    """
    checked: set[str] = set()
    for argument, uri in locations.items():
        bucket = bucket_of(uri)
        if bucket is None or bucket in checked:
            continue
        owner = owner_of(bucket)
        try:
            s3_client.head_bucket(Bucket=bucket, **({"ExpectedBucketOwner": owner} if owner else {}))
        except ClientError as error:
            if is_transient(error):
                raise
            code = error_code(error, "Unknown")
            problem = bucket_problem(bucket, code, owner)
            raise ParameterError(argument, uri, problem or f"cannot reach bucket {bucket}: {code}") from error
        checked.add(bucket)


# --- all of it --------------------------------------------------------------------------------------------


def check_locations(locations: Mapping[str, Any]) -> dict[str, str]:
    """:func:`check_location` for each argument given (``None`` values are skipped): name → location."""
    return {name: check_location(name, value) for name, value in locations.items() if value is not None}


def check_reply_schema(argument: str, value: Any, name: str | None = None) -> None:
    """Read the reply schema a pipeline declares and check it against what structured outputs accept.

    :param argument: the argument's name, for the message.
    :param value: a mapping, JSON text, a path to a JSON file, or ``None`` (no schema: nothing to check).
    :param name: the schema's structured-output name, if given.
    :raises SchemaError: naming the file and the JSON pointer of the first problem.
    """
    from bedrock_batch.replies import load_reply_schema
    from bedrock_batch.schemas import check_supported

    schema = load_reply_schema(value, name=name, default_name=argument)
    if schema is not None:
        check_supported(schema)
