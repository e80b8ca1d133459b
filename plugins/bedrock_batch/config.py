"""Service quotas and their overrides: the one home of every limit the planner and the submitter respect.

Defaults are the service-quotas table for base models; every value can be overridden globally and per model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from bedrock_batch.errors import ConfigError

BelowMinimumPolicy = Literal["fail", "on_demand"]

GB = 1_000_000_000


@dataclass(frozen=True)
class QuotaConfig:
    """Limits of one model's batch inference in one account and region.

    :param min_records_per_job: records a job must have at least (service: 100, not adjustable).
    :param max_records_per_job: records a job may have at most (service: 50,000, adjustable).
    :param max_records_per_file: records one input file may have at most (service: 50,000, adjustable).
    :param max_file_bytes: size of one input file at most (service: 1 GB).
    :param max_job_bytes: size of all of a job's input files at most (service: 5 GB; Nova Pro 100 GB).
    :param max_concurrent_jobs: Submitted + Validating + Scheduled + InProgress jobs per model (service: 20).
    :param max_record_bytes: size of one JSONL record line at most; larger records are quarantined.
    :param below_minimum: what to do with records that cannot form a job of the minimum size:
        ``fail`` raises :class:`~bedrock_batch.errors.BelowMinimumError`, ``on_demand`` routes them to
        the on-demand (InvokeModel/Converse) fallback.
    """

    min_records_per_job: int = 100
    max_records_per_job: int = 50_000
    max_records_per_file: int = 50_000
    max_file_bytes: int = 1 * GB
    max_job_bytes: int = 5 * GB
    max_concurrent_jobs: int = 20
    max_record_bytes: int = 1 * GB
    below_minimum: BelowMinimumPolicy = "fail"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "below_minimum":
                if value not in ("fail", "on_demand"):
                    raise ConfigError(f"below_minimum must be 'fail' or 'on_demand', got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"quota {f.name} must be a positive integer, got {value!r}")
        if self.min_records_per_job > self.max_records_per_job:
            raise ConfigError(
                f"min_records_per_job ({self.min_records_per_job}) exceeds max_records_per_job "
                f"({self.max_records_per_job}); no job could satisfy both"
            )
        if self.max_record_bytes > self.max_file_bytes:
            raise ConfigError(
                f"max_record_bytes ({self.max_record_bytes}) exceeds max_file_bytes ({self.max_file_bytes})"
            )

    def replace(self, **overrides: Any) -> QuotaConfig:
        """Return a copy with ``overrides`` applied; unknown names raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown quota setting(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **overrides)


@dataclass(frozen=True)
class QuotaSettings:
    """Global quota defaults plus per-model overrides.

    :param default: limits used for every model without an override.
    :param per_model: model id (or inference-profile id) → overrides applied on top of ``default``.
    """

    default: QuotaConfig = field(default_factory=QuotaConfig)
    per_model: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def for_model(self, model_id: str) -> QuotaConfig:
        """Limits for ``model_id``: the default with that model's overrides applied."""
        overrides = self.per_model.get(model_id)
        return self.default.replace(**overrides) if overrides else self.default

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> QuotaSettings:
        """Build from configuration such as ``{"max_concurrent_jobs": 3, "per_model": {"id": {...}}}``."""
        raw = dict(raw or {})
        per_model = raw.pop("per_model", {}) or {}
        if not isinstance(per_model, Mapping):
            raise ConfigError("quotas.per_model must map model ids to quota overrides")
        settings = cls(default=QuotaConfig().replace(**raw), per_model=dict(per_model))
        for model_id in settings.per_model:
            settings.for_model(model_id)  # fail fast on a bad override
        return settings


QuotasArgument = QuotaConfig | QuotaSettings | Mapping[str, Any] | None


def quota_config_for(quotas: QuotasArgument, model_id: str) -> QuotaConfig:
    """The limits of ``model_id`` from what an operator's ``quotas`` argument holds.

    :param quotas: a :class:`QuotaConfig` (used as it is), a :class:`QuotaSettings`, a mapping for
        :meth:`QuotaSettings.from_mapping`, or ``None`` for the service defaults.
    :param model_id: the model whose limits apply (its per-model overrides).
    """
    if quotas is None:
        return QuotaConfig()
    if isinstance(quotas, QuotaConfig):
        return quotas
    if isinstance(quotas, QuotaSettings):
        return quotas.for_model(model_id)
    return QuotaSettings.from_mapping(quotas).for_model(model_id)


# Service Quotas names of the batch-inference quotas, without their " for <model name>" suffix, and
# the QuotaConfig field each sets (values in GB are converted to bytes).
SERVICE_QUOTA_NAMES: Mapping[str, str] = {
    "Minimum number of records per batch inference job": "min_records_per_job",
    "Records per input file per batch inference job": "max_records_per_file",
    "Records per batch inference job": "max_records_per_job",
    "Batch inference input file size (in GB)": "max_file_bytes",
    "Batch inference job size (in GB)": "max_job_bytes",
    "Sum of in-progress and submitted batch inference jobs using a base model": "max_concurrent_jobs",
}
_BYTES_FIELDS = frozenset({"max_file_bytes", "max_job_bytes"})


def quotas_from_service_quotas(
    client: Any, model_name: str, *, base: QuotaConfig | None = None
) -> QuotaConfig:
    """The limits the account actually has for one model, read from the Service Quotas API.

    Bedrock names its per-model quotas with the model's display name, e.g. ``Records per batch inference
    job for Claude 3 Haiku``; that name cannot be derived from a model id, so the caller passes it. Quotas
    the API does not list keep their value from ``base``. Needs ``servicequotas:ListServiceQuotas``.

    :param client: a boto3 ``service-quotas`` client (the hook builds it from an Airflow connection).
    :param model_name: the model's display name as it appears in quota names, e.g. ``Claude 3 Haiku``.
    :param base: limits to start from (default: the service defaults).
    :raises ConfigError: when no batch-inference quota names this model.
    """
    base = base or QuotaConfig()
    suffix = f" for {model_name}".lower()
    applied: dict[str, int] = {}
    for page in client.get_paginator("list_service_quotas").paginate(ServiceCode="bedrock"):
        for quota in page.get("Quotas", ()):
            name = str(quota.get("QuotaName", ""))
            if not name.lower().endswith(suffix) or quota.get("Value") is None:
                continue
            stem = name[: -len(suffix)].strip().lower()
            field_name = next((f for known, f in SERVICE_QUOTA_NAMES.items() if stem == known.lower()), None)
            if field_name is not None:
                value = float(quota["Value"])
                applied[field_name] = int(value * GB) if field_name in _BYTES_FIELDS else int(value)
    if not applied:
        raise ConfigError(
            f"Service Quotas lists no batch inference quota for model name {model_name!r}; use the display "
            "name from the quota names (e.g. 'Claude 3 Haiku' in 'Records per batch inference job for "
            "Claude 3 Haiku') or configure the quotas by hand"
        )
    if "max_file_bytes" in applied:
        # A record larger than a file can never be submitted: keep the record limit within the file limit.
        applied.setdefault("max_record_bytes", min(base.max_record_bytes, applied["max_file_bytes"]))
    return base.replace(**applied)


# An AWS account id, as S3's ExpectedBucketOwner and Bedrock's s3BucketOwner take it.
ACCOUNT_ID_PATTERN = re.compile(r"[0-9]{12}")
# A KMS key as CreateModelInvocationJob's s3EncryptionKeyId (and S3's SSEKMSKeyId) takes it: a key or alias
# ARN, a key id or an alias name (the last two resolve in the caller's account, so prefer an ARN).
KMS_KEY_ID_PATTERN = re.compile(
    r"(arn:aws(-[^:]+)?:kms:[a-zA-Z0-9-]*:[0-9]{12}:((key/[a-zA-Z0-9-]{36})|(alias/[a-zA-Z0-9-_/]+)))"
    r"|([a-zA-Z0-9-]{36})|(alias/[a-zA-Z0-9-_/]+)"
)


def check_account_id(value: Any, what: str) -> str | None:
    """``value`` as a 12-digit account id, or ``None`` for ``None`` or an empty string (not checked).

    :param value: the configured value.
    :param what: the setting's name, for the error message.
    :raises ConfigError: when ``value`` is not 12 digits.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not ACCOUNT_ID_PATTERN.fullmatch(value):
        raise ConfigError(
            f'{what} must be a 12-digit AWS account id such as "111122223333" (a JSON string, '
            f"leading zeros kept), got {value!r}"
        )
    return value


def check_kms_key_id(value: Any, what: str) -> str | None:
    """``value`` as a KMS key id or ARN, or ``None`` for ``None`` or an empty string (no key).

    :param value: the configured value.
    :param what: the setting's name, for the error message.
    :raises ConfigError: when ``value`` has none of the shapes Bedrock and S3 accept.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not KMS_KEY_ID_PATTERN.fullmatch(value):
        raise ConfigError(
            f"{what} must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>), an alias ARN, a key id "
            f"or alias/<name>, got {value!r}"
        )
    return value


# --- Operator arguments after template rendering ---------------------------------------------------------
#
# A templated argument arrives in ``execute`` as whatever Jinja rendered: a string ("300", "true", "None")
# unless the DAG renders native objects. These turn it into the value the argument means, or raise a
# ConfigError that names the argument and the value.

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_NONE = frozenset({"", "none", "null"})


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NONE)


def as_bool(name: str, value: Any) -> bool:
    """``value`` as a boolean: a bool, or ``true``/``false``, ``yes``/``no``, ``on``/``off``, ``1``/``0``.

    :param name: the argument's name, for the message.
    :param value: the rendered value.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _number(name: str, value: Any, kind: type[int] | type[float]) -> int | float:
    number: int | float
    try:
        if isinstance(value, bool):
            raise ValueError("a boolean is not a number")
        if isinstance(value, str):
            text = value.strip()
            number = int(text) if kind is int and text.lstrip("+-").isdigit() else float(text)
        else:
            number = value if isinstance(value, int | float) else float(value)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what}, got {value!r}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if kind is int:
        if isinstance(number, float) and not number.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(number)
    return float(number)


def _check_range(name: str, value: Any, number: float, minimum: float | None, maximum: float | None) -> None:
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        if minimum is not None and maximum is not None:
            bounds = f"between {minimum} and {maximum}"
        else:
            bounds = f"at least {minimum}" if minimum is not None else f"at most {maximum}"
        raise ConfigError(f"{name} must be {bounds}, got {value!r}")


def as_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an integer within ``[minimum, maximum]``.

    :param name: the argument's name, for the message.
    :param value: the rendered value (``300``, ``"300"``, ``300.0``).
    :param minimum: the smallest value allowed.
    :param maximum: the largest value allowed.
    """
    number = int(_number(name, value, int))
    _check_range(name, value, number, minimum, maximum)
    return number


def as_optional_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    """Like :func:`as_int`, but ``None``, ``""`` and ``"None"`` (a template of a null param) give ``None``."""
    return None if _is_none(value) else as_int(name, value, minimum=minimum, maximum=maximum)


def as_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
) -> float:
    """``value`` as a number within ``[minimum, maximum]`` (greater than 0 when ``positive``).

    :param name: the argument's name, for the message.
    :param value: the rendered value.
    :param minimum: the smallest value allowed.
    :param maximum: the largest value allowed.
    :param positive: refuse 0 and below.
    """
    number = float(_number(name, value, float))
    if positive and number <= 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    _check_range(name, value, number, minimum, maximum)
    return number


def as_optional_float(
    name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None
) -> float | None:
    """Like :func:`as_float`, but ``None``, ``""`` and ``"None"`` give ``None``."""
    return None if _is_none(value) else as_float(name, value, minimum=minimum, maximum=maximum)


def as_optional_str(value: Any) -> str | None:
    """``value`` as a string, with ``None``, ``""`` and ``"None"`` giving ``None``."""
    return None if _is_none(value) else str(value)


def as_choice(name: str, value: Any, choices: Collection[str]) -> str:
    """``value`` if it is one of ``choices``.

    :param name: the argument's name, for the message.
    :param value: the rendered value.
    :param choices: the values allowed.
    """
    if value not in choices:
        raise ConfigError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return str(value)


_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def as_column_name(name: str, value: Any) -> str:
    """``value`` as a results-table column name Athena and Glue take (letters, digits and underscores, not
    starting with a digit).

    :param name: the argument's name, for the message.
    :param value: the rendered value.
    """
    text = str(value).strip() if value is not None else ""
    if not _COLUMN_NAME.fullmatch(text):
        raise ConfigError(
            f"{name} must be a column name of letters, digits and underscores, not starting with a digit, "
            f"got {value!r}"
        )
    return text


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def as_date(name: str, value: Any) -> str:
    """``value`` as a date ``YYYY-MM-DD`` (a run's partition), e.g. what ``{{ ds }}`` renders.

    :param name: the argument's name, for the message.
    :param value: the rendered value.
    """
    text = str(value).strip() if value is not None else ""
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        date.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{name} must be a date YYYY-MM-DD (the run's partition), got {value!r}; runs without a logical "
            "date have no ds: pass a date that does not need one"
        ) from None
    return text


@dataclass(frozen=True)
class PipelineConfig:
    """Defaults of a batch pipeline DAG, read from one JSON file under ``include/config/``.

    The same file serves a local run and AWS; a run can override any value through its params.
    ``source_uri`` may contain ``{ds}``, replaced by the run's date so each day reads its own partition.
    """

    source_uri: str
    source_format: str
    staging_uri: str
    results_uri: str
    model_id: str
    role_arn: str
    schedule: str | None = "0 6 * * *"
    id_column: str = "id"
    text_column: str | None = "text"
    passthrough_columns: tuple[str, ...] = ()
    invocation_type: str = "InvokeModel"
    aws_conn_id: str = "aws_default"
    max_records: int = 0
    # Processes the prepare task uses (0: every CPU the task may run on; 1: one process, no workers).
    prepare_processes: int = 0
    prompt_name: str | None = "call_center_summary"
    prompt_version: str = "v1"
    max_tokens: int = 1024
    timeout_hours: int | None = None
    poll_interval_seconds: float = 300.0
    source_poke_interval_seconds: float = 600.0
    source_timeout_hours: float = 18.0
    on_demand_requests_per_second: float = 5.0
    pool: str | None = None
    # Stop a job that is still running this many minutes after its submit task started, and fail the task
    # (the execution_timeout of submit and submit_retry); None waits up to the job's own timeout.
    job_wait_timeout_minutes: int | None = None
    retries: int = 2
    retry_delay_seconds: float = 300.0
    quotas: Mapping[str, Any] = field(default_factory=dict)
    # Register the results table in this (existing) Glue database for Athena; None: no registration.
    glue_database: str | None = None
    glue_table: str = "call_summaries"
    # KMS key of the jobs' output (s3EncryptionKeyId) and of every object the library writes (SSE-KMS);
    # None: the buckets' default encryption.
    kms_key_id: str | None = None
    # The account that must own every bucket the pipeline touches (S3 ExpectedBucketOwner, the jobs'
    # s3BucketOwner); bucket_owners overrides it per bucket name. None / {}: not checked.
    expected_bucket_owner: str | None = None
    bucket_owners: Mapping[str, str] = field(default_factory=dict)
    # Stop a run whose estimated cost (made by prepare, before any job) is above this many US dollars; None:
    # no limit. A run may override it (param max_estimated_cost_usd).
    max_estimated_cost_usd: float | None = None
    # Above the limit, wait for a person to approve the spend (a human-in-the-loop task) instead of stopping.
    cost_approval: bool = False
    # How the estimate counts output tokens: every record's max_tokens (an upper bound) or the average of
    # earlier runs' reports (history).
    output_tokens_estimate: str = "max_tokens"
    # Alert when a run has not finished this long after it was queued ("6h", "90m", "2d"; a DAG deadline
    # alert); None: no alert.
    alert_after: str | None = None

    def bucket_owner(self, uri: str) -> str:
        """The account that must own the bucket of ``uri`` (``""`` when unchecked or not S3), for templates.

        :param uri: an ``s3://`` URI or a local path.
        """
        if not uri.startswith("s3://"):
            return ""
        bucket = uri[len("s3://") :].split("/", 1)[0]
        return self.bucket_owners.get(bucket) or self.expected_bucket_owner or ""

    def table_uri(self, table: str) -> str:
        """Where the results table ``table`` lives: ``<results_uri>/<table>`` (its Airflow asset URI)."""
        return f"{self.results_uri.rstrip('/')}/{table}"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PipelineConfig:
        """Read and validate the JSON file at ``path``."""
        try:
            with open(path, encoding="utf-8") as handle:
                raw = json.load(handle)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read pipeline configuration {path}: {exc}") from exc
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path}: the configuration must be a JSON object of settings")
        return cls.from_mapping(raw, str(path))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], source: str | Mapping[str, str]) -> PipelineConfig:
        """Validate settings read from one file, or merged from several.

        :param raw: setting name → value.
        :param source: the file the settings come from, for messages; or setting name → its file, when they
            were merged from several (a name it lacks is blamed on its ``""`` entry).
        :raises ConfigError: starting with the file (and naming the setting) of the first bad value.
        """

        def origin(name: str) -> str:
            if isinstance(source, str):
                return source
            return source.get(name) or source.get("", "configuration")

        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{origin(unknown[0])}: unknown setting(s) {unknown}; known: {sorted(known)}")
        raw = dict(raw)
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in raw
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(f"{origin('')}: {missing[0]}: required, and not set (missing: {missing})")
        for f in dataclasses.fields(cls):
            if f.name in raw and f.name not in _CHECKED_BELOW:
                _check_setting_type(f.name, str(f.type), raw[f.name], origin(f.name))
        raw["passthrough_columns"] = tuple(raw.get("passthrough_columns") or ())
        if raw.get("bucket_owners") is None:
            raw.pop("bucket_owners", None)
        try:
            config = cls(**raw)
        except TypeError as exc:
            raise ConfigError(f"{origin('')}: {exc}") from exc
        try:
            QuotaSettings.from_mapping(config.quotas)  # fail at parse time, not in the middle of a run
        except ConfigError as exc:
            raise ConfigError(f"{origin('quotas')}: quotas: {exc}") from exc
        if config.glue_database is not None:
            from bedrock_batch.catalog import check_name

            check_name(config.glue_database, f"{origin('glue_database')}: glue_database")
            check_name(config.glue_table, f"{origin('glue_table')}: glue_table")
        timeout = config.job_wait_timeout_minutes
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1):
            raise ConfigError(
                f"{origin('job_wait_timeout_minutes')}: job_wait_timeout_minutes must be a whole number of "
                f"minutes, at least 1, or null to wait up to the job's own timeout (timeout_hours), "
                f"got {timeout!r}"
            )
        if config.prepare_processes < 0:
            raise ConfigError(
                f"{origin('prepare_processes')}: prepare_processes: must be 0 (every CPU the task may use) "
                f"or a number of processes, at least 1, got {config.prepare_processes!r}"
            )
        check_kms_key_id(config.kms_key_id, f"{origin('kms_key_id')}: kms_key_id")
        check_account_id(
            config.expected_bucket_owner, f"{origin('expected_bucket_owner')}: expected_bucket_owner"
        )
        if not isinstance(config.bucket_owners, Mapping):
            raise ConfigError(
                f"{origin('bucket_owners')}: bucket_owners must map bucket names to 12-digit account ids"
            )
        for bucket, owner in config.bucket_owners.items():
            check_account_id(owner, f"{origin('bucket_owners')}: bucket_owners[{bucket!r}]")
        _check_cost_settings(config, origin)
        return config


def _check_cost_settings(config: PipelineConfig, origin: Callable[[str], str]) -> None:
    """The cost guard's and the alert's settings, each message naming the file and the setting."""
    limit = config.max_estimated_cost_usd
    if limit is not None and limit < 0:
        raise ConfigError(
            f"{origin('max_estimated_cost_usd')}: max_estimated_cost_usd: must be a number of US dollars, "
            f"at least 0, or null for no limit, got {limit!r}"
        )
    if not isinstance(config.cost_approval, bool):
        raise ConfigError(
            f"{origin('cost_approval')}: cost_approval: must be true or false, got {config.cost_approval!r}"
        )
    if config.cost_approval and limit is None:
        raise ConfigError(
            f"{origin('cost_approval')}: cost_approval: asks a person to approve a run above "
            "max_estimated_cost_usd, which is not set; set the limit or leave cost_approval out"
        )
    from bedrock_batch.estimate import OUTPUT_ESTIMATES

    if config.output_tokens_estimate not in OUTPUT_ESTIMATES:
        raise ConfigError(
            f"{origin('output_tokens_estimate')}: output_tokens_estimate: must be one of "
            f"{list(OUTPUT_ESTIMATES)}, got {config.output_tokens_estimate!r}"
        )
    if config.alert_after is not None:
        try:
            as_duration("alert_after", config.alert_after)
        except ConfigError as exc:
            raise ConfigError(
                f"{origin('alert_after')}: alert_after: {exc.args[0].split(' ', 1)[1]}"
            ) from None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def as_duration(name: str, value: Any) -> timedelta:
    """``value`` as a positive duration: a number and a unit, ``45s``, ``90m``, ``6h``, ``2d``.

    :param name: the setting's name, for the message.
    :param value: the configured text.
    """
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    duration = timedelta(**{_DURATION_UNITS[match[2]]: float(match[1])}) if match else timedelta(0)
    if duration <= timedelta(0):
        raise ConfigError(
            f"{name} must be a positive duration, a number and a unit s, m, h or d (e.g. '6h', '90m'), "
            f"got {value!r}"
        )
    return duration


# Settings with a check of their own in from_mapping, whose message says more than a type would.
_CHECKED_BELOW = frozenset(
    {"job_wait_timeout_minutes", "bucket_owners", "kms_key_id", "expected_bucket_owner", "cost_approval"}
)
# The shape each PipelineConfig annotation takes in a configuration file (JSON or YAML); None passes for the
# optional ones. Checked before construction, so a wrong type names the file and the setting.
_SETTING_TYPES: Mapping[str, tuple[tuple[type, ...], str]] = {
    "str": ((str,), "a string"),
    "int": ((int,), "a whole number"),
    "float": ((int, float), "a number"),
    "tuple[str, ...]": ((list, tuple), "a list of column names"),
    "Mapping[str, Any]": ((Mapping,), "a mapping"),
    "Mapping[str, str]": ((Mapping,), "a mapping"),
}


def _check_setting_type(name: str, annotation: str, value: Any, origin: str) -> None:
    optional = annotation.endswith(" | None")
    expected = _SETTING_TYPES.get(annotation.removesuffix(" | None"))
    if expected is None or (value is None and optional):
        return
    types, what = expected
    if value is None or isinstance(value, bool) or not isinstance(value, types):
        raise ConfigError(f"{origin}: {name}: must be {what}{' or null' if optional else ''}, got {value!r}")
    items: Any = value
    if annotation.startswith("tuple[str") and not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{origin}: {name}: must be a list of column names, got {value!r}")
