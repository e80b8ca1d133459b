"""What each stage of a run returns or pushes to XCom: the contracts between its tasks, typed.

At run time these are plain, JSON-compatible dicts (XCom stores JSON, and runs of earlier versions are read
back with the same keys); the ``TypedDict`` classes only name and type their keys for readers and for mypy.
A stage's *return value* is what ``.output`` hands the next task (Airflow maps only over return values); the
other results are pushed under the XCom keys below. None of them carries a transcript, a prompt or a reply.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

# XCom keys of the results that are not a stage's return value.
RUN_XCOM_KEY = "run"  # prepare: PreparedRun
ON_DEMAND_XCOM_KEY = "on_demand_uris"  # prepare: the on-demand fallback's input files (list[str])
ROUND_XCOM_KEY = "round"  # collect: CollectRound
RETRY_ON_DEMAND_XCOM_KEY = "retry_on_demand"  # collect: the retry round's on-demand input files (list[str])
PARTS_XCOM_KEY = "parts"  # collect: the run's collected parts, in order (list[str] of Parquet URIs)
# submit: the job a deferred try waits for (SubmissionState); survives the deferral, resume kwargs do not.
SUBMISSION_XCOM_KEY = "bedrock_batch_submission"

Outcome = Literal["success", "salvage", "failed"]


class ShardDescriptor(TypedDict):
    """One shard of a run, the input of one submit task (prepare's and collect's return value).

    - ``shard``: the shard's number within its round, from 1.
    - ``input_uri``: the prefix of its input files (``<run>/input/shard-NNNN/part-NNNN.jsonl``).
    - ``output_uri``: where its job writes (``<run>/output/shard-NNNN/``; the job adds ``<jobId>/``).
    - ``fingerprint``: sha256 of the shard's files; with the run and the model, the job's identity.
    - ``records``: how many records its files hold.
    - ``bytes``: their total size.
    - ``round``: 1 for the run's first jobs, 2 for its retry round (absent: 1).
    - ``start``, ``stop``: its records' ordinals in the round's spool, ``[start, stop)``; in the first round
      the ordinals of the record index (absent in runs of earlier versions).
    """

    shard: int
    input_uri: str
    output_uri: str
    fingerprint: str
    records: NotRequired[int]
    bytes: NotRequired[int]
    round: NotRequired[int]
    start: NotRequired[int]
    stop: NotRequired[int]


class PreparedRun(TypedDict):
    """What prepare staged for a run (XCom key ``run``): the collect and publish stages read it.

    - ``run_prefix``: ``<staging>/<dag_id>/<ds>``, under which every file of the run lives.
    - ``index_uri``: the record index (Parquet) that joins outputs back to source rows.
    - ``quarantine_uri``: the quarantine list (JSONL: position, key, record id, reason; never the text).
    - ``source_uri``: what was read.
    - ``model_id``, ``invocation_type``, ``model_family``: how the records were built (the family is
      ``None`` when inferred from the model id).
    - ``prompt_columns``: placeholder → the source column that filled it (absent for ``bedrock`` sources).
    - ``passthrough_columns``: source columns carried to the results table.
    - ``rows``: source rows read; ``records``: batch records made of them; ``quarantined``: rows that could
      not become a record, and ``quarantine_counts`` by reason code; ``bytes``: the records' total size.
    - ``shards``: the shard list (also prepare's return value).
    - ``on_demand_uris``, ``on_demand_records``: the input files and records too few for a job.
    - ``output_format``: how the reply schema reached the model (:class:`OutputFormatRecord`), ``None``
      when it did not (free text, or records built elsewhere).
    - ``reply_schema``: the reply schema every reply is validated against (:class:`ReplySchemaRecord`), the
      very one prepare used; ``None`` for free-text replies. Runs of earlier versions have neither key.
    - ``cost_estimate``: the run's cost estimated before any job (:class:`CostEstimateRecord`); absent in
      runs of earlier versions.
    """

    run_prefix: str
    index_uri: str
    quarantine_uri: str
    source_uri: str
    model_id: str
    invocation_type: str
    model_family: str | None
    passthrough_columns: list[str]
    rows: int
    records: int
    quarantined: int
    quarantine_counts: dict[str, int]
    bytes: int
    shards: list[ShardDescriptor]
    on_demand_uris: list[str]
    on_demand_records: int
    prompt_columns: NotRequired[dict[str, str]]
    output_format: NotRequired[OutputFormatRecord | None]
    reply_schema: NotRequired[ReplySchemaRecord | None]
    cost_estimate: NotRequired[CostEstimateRecord]


class CostEstimateRecord(TypedDict):
    """A run's cost estimated before any job (see :class:`bedrock_batch.estimate.CostEstimate`).

    - ``model_id``: the model priced; ``records``: records to send, ``on_demand_records`` of them on demand.
    - ``input_tokens``, ``output_tokens``: the estimated tokens; ``output_basis``: ``max_tokens`` (an upper
      bound) or ``history`` (the average of ``history_runs`` earlier runs).
    - ``estimated_cost_usd``: a decimal string, ``None`` when the model has no price.
    """

    model_id: str
    records: int
    on_demand_records: int
    input_tokens: int
    output_tokens: int
    output_basis: str
    history_runs: int
    estimated_cost_usd: str | None


class CostGuardResult(TypedDict):
    """The cost guard's decision (its return value).

    - ``estimated_cost_usd``: the estimate (decimal string, ``None`` unknown); ``limit_usd``: the limit
      (``None``: no limit); ``verdict``: ``no_limit``, ``within`` or ``approved``.
    - ``approved_by``: the user who approved the spend above the limit, else ``None``.
    """

    estimated_cost_usd: str | None
    limit_usd: str | None
    verdict: str
    approved_by: str | None


class OutputFormatRecord(TypedDict):
    """How a run's reply schema reached the model (see :class:`bedrock_batch.models.OutputFormat`).

    - ``mode``: ``native``, ``tool`` or ``prompt``; ``name``, ``description``: the schema's name and what the
      reply is; ``strict``: tool mode's ``strict`` flag; ``prefill``: prompt mode ends requests with the
      assistant turn ``{`` where the model family allows one.
    """

    mode: str
    name: str
    description: str
    strict: bool
    prefill: bool


class ReplySchemaRecord(TypedDict):
    """A run's reply schema: ``name``, ``description`` and the JSON Schema (``schema``), validator-only
    keywords included."""

    name: str
    description: str | None
    schema: dict[str, Any]


class JobEvent(TypedDict):
    """The event of a job's wait (:class:`~bedrock_batch.triggers.BedrockBatchJobTrigger`, and the blocking
    wait's result).

    - ``status``: ``success`` or ``error``; ``reason``: ``ended``, ``running`` (not waited for), ``timeout``
      (the wait deadline passed) or ``api_error`` (the status could not be read).
    - ``job_arn``, ``job_id``, ``job_name``, ``model_id``: the job.
    - ``job_status``: its service status (``None`` when it was never read); ``outcome``: ``success``,
      ``salvage`` or ``failed`` for an ended job, else ``None``; ``message``: the service's or the error's.
    - ``input_s3_uri``, ``output_s3_uri``: its input and output locations as given to the service.
    - ``total_records``, ``processed_records``, ``success_records``, ``error_records``: its counts.
    """

    status: Literal["success", "error"]
    reason: str
    job_arn: str | None
    job_id: str
    job_name: NotRequired[str | None]
    job_status: str | None
    outcome: Outcome | None
    message: str
    model_id: NotRequired[str | None]
    input_s3_uri: NotRequired[str | None]
    output_s3_uri: NotRequired[str | None]
    total_records: NotRequired[int]
    processed_records: NotRequired[int]
    success_records: NotRequired[int]
    error_records: NotRequired[int]


class JobResult(TypedDict):
    """A job that ended usably, or was not waited for (the job sensor's return value).

    - ``job_arn``, ``job_id``, ``job_name``, ``model_id``: the job.
    - ``status``: its service status; ``outcome``: ``success`` (Completed), ``salvage`` (PartiallyCompleted,
      Stopped, Expired: collect what exists, retry the rest) or ``None`` when it was not waited for.
    - ``input_uri``: its input; ``output_uri``: where its output is, ``<output>/<jobId>/``.
    - ``total_records``, ``processed_records``, ``success_records``, ``error_records``: its counts.
    """

    job_arn: str
    job_id: str
    job_name: str | None
    status: str | None
    outcome: Outcome | None
    model_id: str | None
    input_uri: str | None
    output_uri: str | None
    total_records: int
    processed_records: int
    success_records: int
    error_records: int


class SubmitResult(JobResult):
    """One shard's job (the submit task's return value): a :class:`JobResult` and

    - ``shard``: the shard's number; ``records``: its record count (``None`` when the descriptor had none);
      ``start``, ``stop``: its ordinals, when the descriptor had them (what the per-job collect joins).
    - ``reused``: the job existed already (a retry, a clear or a rerun reattached to it or reused its output).
    """

    shard: int | None
    records: int | None
    start: NotRequired[int]
    stop: NotRequired[int]
    reused: bool


class SubmissionState(TypedDict):
    """What a deferred submit try waits for (XCom key ``bedrock_batch_submission``)."""

    job_arn: str
    reused: bool


class OnDemandResult(TypedDict):
    """The on-demand fallback's work (its return value).

    - ``output_uri``: the prefix of its ``.out`` files (``None`` when it had no input files).
    - ``records``: the records it covers; ``succeeded``, ``failed``: those invoked now, by outcome;
      ``reused``: those whose output an earlier try had already written completely.
    """

    output_uri: str | None
    records: int
    succeeded: int
    failed: int
    reused: int


class RepairResult(TypedDict):
    """The repair round's work (its return value).

    - ``output_uri``: the prefix of its ``.out`` files (``None`` when no record needed repair).
    - ``records``: the ``invalid_output`` records asked again; ``repaired``: those whose new reply conforms;
      ``still_invalid``: those whose new reply does not (or whose request failed): they keep their first
      reply and stay ``invalid_output``.
    """

    output_uri: str | None
    records: int
    repaired: int
    still_invalid: int


class CollectRound(TypedDict):
    """The first round's outcome and the retry round it staged (collect, XCom key ``round``).

    - ``records``, ``succeeded``, ``invalid_output``, ``failed``: the round's records, by outcome
      (``invalid_output``: a reply that does not conform to the reply schema; absent in runs of earlier
      versions); ``retryable``: the failed ones worth trying again (throttling, 5xx, timeouts, missing), of
      which ``missing`` were in no output at all.
    - ``retried``: the records staged for the retry round, in ``retry_shards`` new shards (collect's return
      value) and ``retry_on_demand_files`` on-demand input files (XCom key ``retry_on_demand``).
    - ``manifest_mismatches``: the round's jobs whose manifest does not match their output (absent in runs
      of earlier versions); ``manifests_missing``: the ids of its jobs without a readable manifest.
    """

    records: int
    succeeded: int
    invalid_output: NotRequired[int]
    failed: int
    retryable: int
    missing: int
    retried: int
    retry_shards: int
    retry_on_demand_files: int
    manifest_mismatches: NotRequired[list[ManifestMismatch]]
    manifests_missing: NotRequired[list[str]]


class CollectedPartResult(TypedDict):
    """One part of a run collected (the per-job collect's return value, see :mod:`bedrock_batch.parts`).

    - ``part``: its name (``shard-NNNNN`` or ``on-demand``); ``shard``: the shard's number (``None`` for the
      on-demand part); ``uri``: the Parquet file of its records joined to their outputs.
    - ``records``, ``succeeded``, ``invalid_output``, ``failed``, ``retryable``, ``missing``,
      ``input_tokens``, ``output_tokens``: its counts, as in :class:`CollectRound`.
    - ``manifest_mismatches``, ``manifests_missing``: its job's manifest against its output.
    - ``unknown``: output lines whose record id is not the part's (left out).
    """

    part: str
    shard: int | None
    uri: str
    records: int
    succeeded: int
    invalid_output: int
    failed: int
    retryable: int
    missing: int
    input_tokens: int
    output_tokens: int
    manifest_mismatches: list[ManifestMismatch]
    manifests_missing: list[str]
    unknown: int


class ManifestCounts(TypedDict):
    """A job's counts as its ``manifest.json.out`` states them (``None``: the manifest lacks the count)."""

    total: int | None
    processed: int | None
    success: int | None
    error: int | None


class OutputLineCounts(TypedDict):
    """What a job's output held: ``total`` lines, ``success`` lines with a reply, ``error`` lines."""

    total: int
    success: int
    error: int


class ManifestMismatch(TypedDict):
    """A job whose manifest does not match its output (a warning of the run report, never an error).

    - ``job_id``: the job; ``manifest``: its manifest's counts; ``read``: what its output held.
    """

    job_id: str
    manifest: ManifestCounts
    read: OutputLineCounts


class ReportJob(TypedDict):
    """One job of the run report: ``name``, ``arn``, ``status``, ``records`` and ``duration_seconds``."""

    name: str
    arn: str | None
    status: str
    records: int
    duration_seconds: float | None


class CatalogRegistration(TypedDict):
    """What was registered in the Glue Data Catalog (see :class:`bedrock_batch.catalog.Registration`)."""

    database: str
    table: str
    partition: str
    location: str
    table_created: bool
    columns_added: list[str]
    partition_created: bool


class PublishResult(TypedDict):
    """The run report and where the run was published (publish's return value).

    - ``ds``, ``dag_run_id``, ``model_id``: the run.
    - ``input_records``: source rows; each is ``quarantined``, ``succeeded``, ``invalid_output`` (a reply
      that does not conform to the reply schema) or ``failed``, and ``accounted`` says the four add up;
      ``retried``: records that went through the retry round; ``repaired``: succeeded records whose
      conforming reply came from the repair round.
    - ``input_tokens``, ``output_tokens``: the tokens billed; ``estimated_cost_usd``: their estimated price as
      a decimal string (``None`` for a model without a price).
    - ``cost_estimate``: the estimate prepare made before any job (:class:`CostEstimateRecord`), ``None`` in
      runs of earlier versions; ``cost_guard``: the cost guard's limit and verdict (:class:`CostGuardResult`),
      ``None`` when not recorded.
    - ``jobs``: every job of both rounds.
    - ``manifest_mismatches``: jobs whose ``manifest.json.out`` counts differ from their output
      (:class:`ManifestMismatch`); ``manifests_missing``: ids of the jobs that have no manifest.
    - ``reasons``: for ``failed``, ``quarantined`` and ``invalid_output``, reason code → records, most
      frequent first (:func:`bedrock_batch.report.reason_counts`).
    - ``results_uri``: the partition written; ``report_uri``: the prefix of ``run_report.json`` and
      ``run_report.md``; ``catalog``: the Glue registration, or ``None``.
    """

    ds: str
    dag_run_id: str
    model_id: str
    input_records: int
    quarantined: int
    succeeded: int
    invalid_output: int
    failed: int
    retried: int
    repaired: int
    input_tokens: int
    output_tokens: int
    estimated_cost_usd: str | None
    cost_estimate: CostEstimateRecord | None
    jobs: list[ReportJob]
    manifest_mismatches: list[ManifestMismatch]
    manifests_missing: list[str]
    reasons: dict[str, dict[str, int]]
    cost_guard: CostGuardResult | None
    accounted: bool
    results_uri: str
    report_uri: str
    catalog: CatalogRegistration | None
