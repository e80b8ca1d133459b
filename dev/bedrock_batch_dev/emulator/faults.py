"""Fault injection for the Bedrock emulator: which records fail, which jobs fail, expire or end partially.

Decisions are deterministic (a hash of the seed and the job or record) so a failing test run can be replayed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

JobFate = Literal["fail", "expire", "partial"]

# Control-plane and runtime operations a fault can target by name.
OPERATIONS = frozenset(
    {
        "CreateModelInvocationJob",
        "GetModelInvocationJob",
        "ListModelInvocationJobs",
        "StopModelInvocationJob",
        "GetFoundationModel",
        "ListFoundationModels",
        "InvokeModel",
        "Converse",
    }
)
RUNTIME_OPERATIONS = frozenset({"InvokeModel", "Converse"})

# What the service writes for a record it could not process; errorCode → errorMessage.
RECORD_ERROR_MESSAGES: Mapping[int, str] = {
    400: "Malformed input request: the model rejected the request body, please reformat your input.",
    408: "Model has timed out in processing the request. Try your request again.",
    424: "The model returned an error while processing the request.",
    429: "Too many requests, please wait before trying again.",
    500: "The system encountered an unexpected error during processing. Try your request again.",
    503: "The model is currently unavailable. Try your request again.",
}


class FaultConfigError(ValueError):
    """A fault setting is out of range or unknown."""


@dataclass(frozen=True)
class FaultConfig:
    """Faults the emulator injects; the default injects none.

    :param record_error_rate: share of records (0-1) written as error lines instead of model output.
    :param record_error_codes: error codes drawn for those lines (each must be in ``RECORD_ERROR_MESSAGES``).
    :param invalid_reply_rate: share of answered records (and runtime calls) whose reply to a declared reply
        schema is valid JSON that breaks the schema (a wrong enum value, a number out of range, a missing
        required field) or, when the schema is only written in the prompt, sometimes not JSON at all.
    :param job_failure_rate: share of jobs that end Failed after validation.
    :param fail_jobs_matching: regular expression; jobs whose name matches it end Failed.
    :param partial_rate: share of jobs that run out of time and end PartiallyCompleted.
    :param partial_jobs_matching: regular expression; jobs whose name matches it end PartiallyCompleted.
    :param partial_fraction: share of a partially completed job's records that are processed (0-1).
    :param expire_rate: share of jobs that never leave Scheduled and end Expired at their expiration time.
    :param expire_jobs_matching: regular expression; jobs whose name matches it expire.
    :param throttle_rate: share of control-plane API calls answered with ThrottlingException (429).
    :param runtime_throttle_rate: share of InvokeModel/Converse calls answered with ThrottlingException.
    :param internal_error_rate: share of API calls (both planes) answered with InternalServerException.
    :param access_denied_operations: operations answered with AccessDeniedException (403), e.g.
        ``("StopModelInvocationJob",)``.
    :param slow_operations: operations the service takes ``slow_seconds`` (wall time) to answer, e.g. to hold
        a task in its worker right after it created a job.
    :param slow_seconds: how long those operations take.
    :param seed: makes every decision above reproducible.
    """

    record_error_rate: float = 0.0
    record_error_codes: tuple[int, ...] = (400, 429, 500)
    invalid_reply_rate: float = 0.0
    job_failure_rate: float = 0.0
    fail_jobs_matching: str | None = None
    partial_rate: float = 0.0
    partial_jobs_matching: str | None = None
    partial_fraction: float = 0.5
    expire_rate: float = 0.0
    expire_jobs_matching: str | None = None
    throttle_rate: float = 0.0
    runtime_throttle_rate: float = 0.0
    internal_error_rate: float = 0.0
    access_denied_operations: tuple[str, ...] = ()
    slow_operations: tuple[str, ...] = ()
    slow_seconds: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_rate") or f.name == "partial_fraction":
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                    raise FaultConfigError(f"{f.name} must be a number between 0 and 1, got {value!r}")
            elif f.name.endswith("_matching") and value is not None:
                try:
                    re.compile(value)
                except (re.error, TypeError) as exc:
                    raise FaultConfigError(f"{f.name} is not a valid regular expression: {exc}") from exc
        if not self.record_error_codes:
            raise FaultConfigError("record_error_codes must name at least one code")
        unknown_codes = sorted(set(self.record_error_codes) - set(RECORD_ERROR_MESSAGES))
        if unknown_codes:
            raise FaultConfigError(
                f"record_error_codes {unknown_codes} are not codes the service writes; "
                f"use some of {sorted(RECORD_ERROR_MESSAGES)}"
            )
        for name in ("access_denied_operations", "slow_operations"):
            unknown_ops = sorted(set(getattr(self, name)) - OPERATIONS)
            if unknown_ops:
                raise FaultConfigError(f"{name} {unknown_ops} unknown; known: {sorted(OPERATIONS)}")
        if isinstance(self.slow_seconds, bool) or not isinstance(self.slow_seconds, int | float):
            raise FaultConfigError(f"slow_seconds must be a number of seconds, got {self.slow_seconds!r}")
        if not 0 <= self.slow_seconds <= 600:
            raise FaultConfigError(f"slow_seconds must be between 0 and 600, got {self.slow_seconds!r}")

    def replace(self, **changes: Any) -> FaultConfig:
        """A copy with ``changes`` applied; lists become tuples so the result stays hashable and frozen."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise FaultConfigError(f"unknown fault setting(s) {unknown}; known: {sorted(known)}")
        normalized = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
        return dataclasses.replace(self, **normalized)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as the admin endpoint returns it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _unit(*parts: str) -> float:
    """A stable pseudo-random number in [0, 1) for ``parts`` (Python's hash() is salted per process)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class FaultInjector:
    """Thread-safe decisions drawn from the current :class:`FaultConfig`; the config can change at runtime."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config or FaultConfig()
        self._rng = random.Random(self._config.seed)

    @property
    def config(self) -> FaultConfig:
        return self._config

    def set(self, config: FaultConfig) -> None:
        with self._lock:
            self._config = config
            self._rng = random.Random(config.seed)

    def api_fault(self, operation: str) -> str | None:
        """The error code to answer ``operation`` with instead of serving it, or ``None``."""
        config = self._config
        if operation in config.access_denied_operations:
            return "AccessDeniedException"
        throttle = config.runtime_throttle_rate if operation in RUNTIME_OPERATIONS else config.throttle_rate
        if not throttle and not config.internal_error_rate:
            return None
        with self._lock:
            draw = self._rng.random()
        if draw < throttle:
            return "ThrottlingException"
        if draw < throttle + config.internal_error_rate:
            return "InternalServerException"
        return None

    def delay(self, operation: str) -> float:
        """Seconds to wait before answering ``operation`` (0 unless it is one of the slow operations)."""
        config = self._config
        return float(config.slow_seconds) if operation in config.slow_operations else 0.0

    def job_fate(self, job_name: str) -> JobFate | None:
        """A new job's fate: fail after validation, expire while scheduled, end partially, or ``None``."""
        config = self._config
        seed = str(config.seed)
        checks: tuple[tuple[JobFate, float, str | None], ...] = (
            ("fail", config.job_failure_rate, config.fail_jobs_matching),
            ("expire", config.expire_rate, config.expire_jobs_matching),
            ("partial", config.partial_rate, config.partial_jobs_matching),
        )
        for fate, rate, pattern in checks:
            if pattern is not None and re.search(pattern, job_name):
                return fate
            if rate and _unit(seed, fate, job_name) < rate:
                return fate
        return None

    def record_error(self, job_id: str, record_id: str) -> int | None:
        """The error code for this record, or ``None`` when the model should answer it."""
        config = self._config
        if not config.record_error_rate:
            return None
        draw = _unit(str(config.seed), job_id, record_id)
        if draw >= config.record_error_rate:
            return None
        # Reuse the draw, rescaled to [0, 1), to pick the code: one hash per record keeps 50k records fast.
        codes = config.record_error_codes
        return codes[min(int(draw / config.record_error_rate * len(codes)), len(codes) - 1)]

    def invalid_reply(self, *key: str) -> float | None:
        """For the request identified by ``key`` (job and record id, or a runtime body's digest): ``None`` to
        answer correctly, else a draw in [0, 1) that picks how the reply breaks its schema."""
        config = self._config
        if not config.invalid_reply_rate:
            return None
        draw = _unit(str(config.seed), "invalid-reply", *key)
        return draw / config.invalid_reply_rate if draw < config.invalid_reply_rate else None
