"""Exception types raised by the library: the one home of every one of them.

Every message says what was wrong and what the data engineer can change to fix it. Imports nothing (the AWS
SDK's errors are read through :mod:`bedrock_batch.aws_errors`), so every module can raise these.
"""

from __future__ import annotations


class BedrockBatchError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(BedrockBatchError):
    """A configuration value is missing, malformed or contradicts a service limit."""


class ParameterError(ConfigError):
    """A run's parameter fails the checks made before any job (:mod:`bedrock_batch.preflight`): a location
    without a scheme, a bucket that does not exist, a role that is not a role ARN, a model the service does
    not know.

    :param argument: the argument's name (``results_uri``, ``model_id``, …).
    :param value: the value given.
    :param problem: what is wrong with it and how to fix it.
    """

    def __init__(self, argument: str, value: object, problem: str) -> None:
        super().__init__(f"{argument} {value!r}: {problem}")
        self.argument = argument
        self.value = value
        self.problem = problem


class PipelineError(ConfigError):
    """A pipeline folder (``include/pipelines/<name>/``) cannot be used; the message starts with the file and
    the field, e.g. ``include/pipelines/reviews/pipeline.yaml: model_id: ...``."""


class UnknownModelError(ConfigError):
    """The model id does not map to a supported model family."""


class RecordIdSpaceError(ConfigError):
    """No free record id was found for a key within :data:`~bedrock_batch.record_ids.MAX_ATTEMPTS`
    derivations."""


class PriceTableError(ConfigError):
    """The price table file is missing or malformed."""


class CatalogError(ConfigError):
    """The Glue Data Catalog cannot take the table as configured (no such database, a conflicting table)."""


class SourceError(BedrockBatchError):
    """A source cannot be read at all (missing path, unreadable object, unsupported format).

    Problems with single rows never raise: they are quarantined with a reason code.
    """


class StorageReadError(SourceError):
    """An object or prefix cannot be listed or read (missing, access denied, no such bucket)."""


class StorageWriteError(BedrockBatchError):
    """An object cannot be written (access denied, no such bucket, local disk full)."""


class TranscriptLayoutError(ValueError):
    """The JSON document is not Transcribe output; the message names what is missing."""


class TemplateError(BedrockBatchError):
    """A prompt template is missing or malformed."""


class TemplateRenderError(TemplateError):
    """One row lacks a value the template needs; prepare quarantines that row.

    :param template: the template's name.
    :param missing: the placeholder names without a value.
    """

    def __init__(self, template: str, missing: list[str]) -> None:
        super().__init__(f"template {template} needs {', '.join(missing)}, which this row does not have")
        self.missing = missing


class PlanError(BedrockBatchError):
    """No shard plan can satisfy the service quotas for these records."""


class BelowMinimumError(PlanError):
    """Fewer records than the service minimum per job, and the on-demand fallback is off."""


class OutputFormatError(BedrockBatchError):
    """A job's output or manifest does not have the documented layout."""


class ResponseFormatError(OutputFormatError):
    """A model reply does not have the body shape of the model family it was parsed as."""


class RecordIndexError(BedrockBatchError):
    """The record index given to :func:`~bedrock_batch.collect.join_results` lacks a required column or
    clashes with results."""


class JobFailedError(BedrockBatchError):
    """A model invocation job ended Failed (or, in strict mode, not Completed)."""


class OutputAccountingError(JobFailedError):
    """The published rows do not add up to the input rows: a record was lost or counted twice."""


class JobWaitTimeoutError(BedrockBatchError):
    """A job did not end before the wait deadline (its own expiration plus a margin, or the timeout given)."""


class JobStatusError(BedrockBatchError):
    """A job's status cannot be read at all (access denied, job not found): waiting longer will not help."""


class InvocationError(Exception):
    """An on-demand runtime call failed; ``name`` is the service's error name (e.g. ``ThrottlingException``).

    Not a :class:`BedrockBatchError`: the fallback turns it into an error line of the output, never raises it.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


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


class CostLimitError(BedrockBatchError):
    """A run stopped before any job because of its estimated cost (:mod:`bedrock_batch.estimate`)."""


class CostLimitExceededError(CostLimitError):
    """The run's estimated cost is above ``max_estimated_cost_usd`` and no approval was asked for."""


class CostUnknownError(CostLimitError):
    """A cost limit is set but the model has no price in the price table, so the estimate cannot be
    compared with it."""


class CostRejectedError(CostLimitError):
    """A person rejected the run's estimated spend in the approval task."""
