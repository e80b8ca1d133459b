"""Exception types raised by the library.

Every message says what was wrong and what the data engineer can change to fix it.
"""

from __future__ import annotations


class BedrockBatchError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(BedrockBatchError):
    """A configuration value is missing, malformed or contradicts a service limit."""


class UnknownModelError(ConfigError):
    """The model id does not map to a supported model family."""


class SourceError(BedrockBatchError):
    """A source cannot be read at all (missing path, unreadable object, unsupported format).

    Problems with single rows never raise: they are quarantined with a reason code.
    """


class TemplateError(BedrockBatchError):
    """A prompt template is missing or malformed."""


class PlanError(BedrockBatchError):
    """No shard plan can satisfy the service quotas for these records."""


class BelowMinimumError(PlanError):
    """Fewer records than the service minimum per job, and the on-demand fallback is off."""


class OutputFormatError(BedrockBatchError):
    """A job's output or manifest does not have the documented layout."""


class JobFailedError(BedrockBatchError):
    """A model invocation job ended Failed (or, in strict mode, not Completed)."""


class SchemaError(ConfigError):
    """A reply schema is malformed, or uses JSON Schema that Bedrock structured outputs or the results table
    cannot take.

    :param rule: what is wrong and how to fix it.
    :param pointer: the JSON pointer of the offending part (``""`` is the root), or None when the problem is
        not at one place in the schema (an unreadable file, an invalid name).
    :param source: the file the schema was read from, if any.
    """

    def __init__(self, rule: str, pointer: str | None = None, source: str | None = None) -> None:
        where = "" if pointer is None else f"schema {pointer or '(root)'}: "
        super().__init__(f"{source + ': ' if source else ''}{where}{rule}")
        self.rule = rule
        self.pointer = pointer
        self.source = source
