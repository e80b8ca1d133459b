"""A run's staged files: where they live, what is already there, and staging the shards of each round.

A run stages everything under ``<staging>/<dag_id>/<ds>/``: ``input/shard-NNNN/part-NNNN.jsonl`` (and
``input/on-demand/``), ``output/shard-NNNN/``, ``record_index.parquet``, ``quarantine.jsonl``, and the same
again under ``retry-1/`` for the retry round. :func:`stage_source` stages the first round (prepare, split,
upload in one streaming pass), :func:`stage_retry_round` the second. Imports nothing from Airflow.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bedrock_batch.errors import StorageReadError, TemplateError
from bedrock_batch.jobs import check_job_s3_uri
from bedrock_batch.storage import Storage, is_s3_uri, join_uri

if TYPE_CHECKING:
    from bedrock_batch.config import QuotaConfig
    from bedrock_batch.estimate import OutputHistory
    from bedrock_batch.models import InferenceParams
    from bedrock_batch.prompts import PromptTemplate
    from bedrock_batch.replies import ReplyFormat
    from bedrock_batch.results import JobOutput
    from bedrock_batch.sources import SourceSpec
    from bedrock_batch.split import ShardManifest, ShardPlan
    from bedrock_batch.stage_results import OnDemandResult, PreparedRun, ShardDescriptor
    from bedrock_batch.storage import SegmentedFile

# Objects that mark a partition as present without being data (Spark/Hive/Glue conventions).
MARKER_PREFIXES = ("_", ".")
# The output label (results table ``job_arn``) of the on-demand fallback's records, per round.
ON_DEMAND_LABEL = "on-demand"
ON_DEMAND_RETRY_LABEL = "on-demand-retry"
# The output label of the repair round's records (invoked on demand, so it starts like the fallback's).
REPAIR_LABEL = "on-demand-repair"


def run_prefix_for(staging_uri: str, dag_id: str, ds: str) -> str:
    """Where one run's staged files live: ``<staging>/<dag_id>/<ds>`` (a rerun of a date reuses it).

    Not ``ds=<ds>``: Bedrock refuses job S3 URIs with ``=`` in them.
    """
    prefix = join_uri(staging_uri, dag_id, ds)
    if is_s3_uri(prefix):
        check_job_s3_uri(prefix + "/", "staging prefix")
    return prefix


def shard_descriptors(
    manifest: ShardManifest, output_prefix: str, round_number: int = 1
) -> list[ShardDescriptor]:
    """The submit stage's input: one small dict per written shard.

    :param manifest: what :func:`~bedrock_batch.split.write_shards` wrote.
    :param output_prefix: where the jobs write; each shard gets ``<output_prefix>/shard-NNNN/``.
    :param round_number: the run's round (2 for a retry round): part of each shard's job identity.
    """
    return [
        {
            "shard": shard.number,
            "input_uri": shard.input_uri,
            "output_uri": join_uri(output_prefix, f"shard-{shard.number:04d}") + "/",
            "records": shard.span.records,
            "bytes": shard.span.length,
            "start": shard.span.start,
            "stop": shard.span.stop,
            "fingerprint": shard.fingerprint,
            "round": round_number,
        }
        for shard in manifest.shards
    ]


def remove_stale_files(storage: Storage, destination: str, plan: ShardPlan) -> int:
    """Delete files an earlier run of the same date staged under ``destination`` that ``plan`` does not
    write again; return how many.

    A rerun over changed data plans other shards, and files of the old plan left in a shard prefix would
    be read by the new job too. Files the plan writes again are overwritten in place instead (one atomic
    PUT each), so a job of an identical earlier run that is still reading them never sees them missing.

    :param storage: local and S3 access.
    :param destination: the ``write_shards`` destination.
    :param plan: the :class:`~bedrock_batch.split.ShardPlan` about to be written there.
    """
    from bedrock_batch.split import ON_DEMAND_DIR  # numpy: only where shards are planned

    keep = {
        join_uri(destination, f"shard-{shard.number:04d}", f"part-{n:04d}.jsonl")
        for shard in plan.shards
        for n in range(1, len(shard.files) + 1)
    }
    keep |= {
        join_uri(destination, ON_DEMAND_DIR, f"part-{n:04d}.jsonl") for n in range(1, len(plan.on_demand) + 1)
    }
    try:
        stale = [obj.uri for obj in storage.list_objects(destination + "/") if obj.uri not in keep]
    except StorageReadError:
        return 0
    storage.delete_objects(stale)
    return len(stale)


def is_empty_partition(storage: Storage, uri: str) -> bool:
    """True when ``uri`` holds only marker objects such as ``_SUCCESS`` (an empty day)."""
    names = [obj.name for obj in storage.list_objects(uri)]
    return all(name.rsplit("/", 1)[-1].startswith(MARKER_PREFIXES) for name in names)


def count_lines(storage: Storage, uri: str) -> int:
    """The non-blank lines of ``uri`` (records of a batch input or output file)."""
    with storage.open_read(uri) as stream:
        return sum(1 for line in stream if line.strip())


def output_complete(storage: Storage, uri: str, expected: int) -> bool:
    """Whether the output file ``uri`` exists with exactly ``expected`` lines (a rerun need not redo it)."""
    try:
        return count_lines(storage, uri) == expected
    except StorageReadError:
        return False


def on_demand_output_uri(output_uri: str, input_uri: str) -> str:
    """Where the on-demand fallback writes the output of one input file: ``<output_uri>/<file>.out``."""
    return join_uri(output_uri, input_uri.rsplit("/", 1)[-1] + ".out")


def job_outputs(
    jobs: Iterable[Mapping[str, Any]] | None, on_demand: OnDemandResult | Mapping[str, Any] | None, label: str
) -> list[JobOutput]:
    """Where a round's output lines are: each job's ``<output>/<jobId>/`` (labelled with its ARN), then the
    on-demand fallback's (labelled ``label``). Jobs without an output URI (not waited for) are left out.

    :param jobs: the round's submit results.
    :param on_demand: the round's on-demand result, if any.
    :param label: the on-demand output's label, e.g. :data:`ON_DEMAND_LABEL`.
    """
    from bedrock_batch.results import JobOutput  # pyarrow: only where outputs are read

    outputs = [
        JobOutput(label=str(job["job_arn"]), uri=str(job["output_uri"]))
        for job in (jobs or ())
        if job and job.get("output_uri")
    ]
    if on_demand and on_demand.get("output_uri"):
        outputs.append(JobOutput(label=label, uri=str(on_demand["output_uri"])))
    return outputs


def run_outputs(
    jobs: Iterable[Mapping[str, Any]] | None,
    on_demand: Mapping[str, Any] | None,
    retry_jobs: Iterable[Mapping[str, Any]] | None = None,
    retry_on_demand: Mapping[str, Any] | None = None,
    repair: Mapping[str, Any] | None = None,
) -> list[JobOutput]:
    """Every output of a run, in the order its rounds ran: first-round jobs, first-round on-demand, retry
    jobs, retry on-demand, then the repair round (labelled :data:`REPAIR_LABEL`). Later outputs win among
    equal outcomes in the join, so a retried success or a repaired reply replaces what came before.

    :param jobs: the first round's submit results.
    :param on_demand: the first round's on-demand result.
    :param retry_jobs: the retry round's submit results.
    :param retry_on_demand: the retry round's on-demand result.
    :param repair: the repair round's result (``output_uri``), if it ran.
    """
    from bedrock_batch.results import JobOutput

    outputs = job_outputs(jobs, on_demand, ON_DEMAND_LABEL)
    outputs += job_outputs(retry_jobs, retry_on_demand, ON_DEMAND_RETRY_LABEL)
    if repair and repair.get("output_uri"):
        outputs.append(JobOutput(label=REPAIR_LABEL, uri=str(repair["output_uri"])))
    return outputs


def job_results(value: Iterable[Any] | None) -> list[dict[str, Any]]:
    """The submit results in a mapped task's XCom (``None`` for a map index that returned nothing)."""
    return [dict(item) for item in (value or ()) if isinstance(item, Mapping)]


def stage_source(
    storage: Storage,
    source: SourceSpec,
    run_prefix: str,
    *,
    template: PromptTemplate | None,
    model_id: str,
    quotas: QuotaConfig,
    params: InferenceParams,
    invocation_type: str = "InvokeModel",
    family: str | None = None,
    reply: ReplyFormat | None = None,
    max_records: int = 0,
    history: OutputHistory | None = None,
    processes: int = 1,
) -> PreparedRun:
    """Stage a run's first round: source rows to batch records, planned into shards, uploaded under
    ``run_prefix`` with the record index and the quarantine list. A ``bedrock`` source's records are taken as
    they are (:func:`~bedrock_batch.prepare.prepare_records`): only split and uploaded, their ids kept.

    A source partition that holds only marker objects (``_SUCCESS``) is an empty day: zero records, no error.
    Files an earlier run of the date staged and this plan does not write again are removed. The run's cost
    is estimated from the tokens counted on the way (:func:`~bedrock_batch.estimate.estimate_run_cost`),
    before any job exists.

    :param storage: local and S3 access.
    :param source: what to read and how; its :attr:`~bedrock_batch.sources.SourceSpec.bindings` fill the
        template's placeholders.
    :param run_prefix: the run's prefix (see :func:`run_prefix_for`).
    :param template: the prompt template (``None`` for a ``bedrock`` source).
    :param model_id: model id, inference-profile id or ARN.
    :param quotas: the model's limits.
    :param params: inference parameters of every record.
    :param invocation_type: ``InvokeModel`` or ``Converse``.
    :param family: override of the model family inferred from ``model_id``.
    :param reply: the reply schema and how it reaches the model (recorded in the run for collect and
        publish); ``None``: free-text replies.
    :param max_records: read at most this many source rows (0: all).
    :param history: earlier runs' output tokens per record for the estimate; ``None``: each record's
        ``max_tokens``.
    :param processes: prepare in up to this many processes
        (:func:`~bedrock_batch.prepare_parallel.prepare_source_parallel`: the same records, ids and shards as
        one process). A ``bedrock`` source, a ``max_records`` cap or a small source is prepared in one.
    :raises TemplateError: when the source's prompt columns do not fill exactly the template's placeholders.
    :raises SchemaError: when a reply property would take the name of another results column.
    """
    from bedrock_batch.estimate import estimate_run_cost
    from bedrock_batch.prepare import PrepareSettings, prepare_records, prepare_rows
    from bedrock_batch.prepare_parallel import prepare_source_parallel
    from bedrock_batch.record_ids import RecordIdIndex
    from bedrock_batch.replies import RESULT_COLUMNS, ReplyFormat
    from bedrock_batch.sources import SourceReader
    from bedrock_batch.split import plan_shards, write_shards

    finished = source.format == "bedrock"
    if not finished:
        if template is None:
            raise TemplateError(f"a {source.format} source needs a prompt template (prompt_name)")
        if set(source.bindings) != template.fields:
            raise TemplateError(
                f"the source fills placeholders {sorted(source.bindings)} but template {template.label} has "
                f"{sorted(template.fields)}; see bedrock_batch.sources.spec_for_template"
            )
    reply = reply or ReplyFormat()
    reply.check_columns([*RESULT_COLUMNS, *source.passthrough_columns])
    reader = SourceReader(source, storage, max_object_bytes=quotas.max_record_bytes)
    empty = is_empty_partition(storage, source.uri)
    spool: SegmentedFile | None = None
    with tempfile.TemporaryDirectory(prefix="bedrock-batch-prepare-") as work:
        if finished:
            records = iter(()) if empty else reader.records()
            if max_records > 0:
                records = itertools.islice(records, max_records)
            prepared = prepare_records(records, work, quotas=quotas, default_max_tokens=params.max_tokens)
        else:
            assert template is not None
            settings = PrepareSettings(
                template=template,
                model_id=model_id,
                quotas=quotas,
                params=params,
                invocation_type=invocation_type,
                family=family,
                output=reply.output,
                instructions=reply.instructions,
                passthrough_types={} if empty else reader.passthrough_types(),
            )
            if processes > 1 and not empty and max_records <= 0:
                prepared, spool = prepare_source_parallel(
                    reader, storage.recipe(), work, settings, processes=processes
                )
            else:
                rows = iter(()) if empty else iter(reader)
                if max_records > 0:
                    rows = itertools.islice(rows, max_records)
                prepared = prepare_rows(rows, work, settings, RecordIdIndex())
        plan = plan_shards(prepared.load_sizes(), quotas)
        remove_stale_files(storage, join_uri(run_prefix, "input"), plan)
        manifest = write_shards(
            spool or prepared.spool_path, plan, join_uri(run_prefix, "input"), storage=storage
        )
        index_uri = join_uri(run_prefix, "record_index.parquet")
        quarantine_uri = join_uri(run_prefix, "quarantine.jsonl")
        storage.write_file(prepared.index_path, index_uri)
        storage.write_file(prepared.quarantine_path, quarantine_uri)
    estimate = estimate_run_cost(
        model_id,
        records=prepared.records,
        input_tokens=prepared.input_tokens,
        max_output_tokens=prepared.max_output_tokens,
        on_demand_records=int(plan.on_demand_records),
        history=history,
    )
    return {
        "run_prefix": run_prefix,
        "index_uri": index_uri,
        "quarantine_uri": quarantine_uri,
        "source_uri": source.uri,
        "model_id": model_id,
        "invocation_type": invocation_type,
        "model_family": family,
        **({} if finished else {"prompt_columns": source.bindings}),  # type: ignore[typeddict-item]
        "passthrough_columns": list(source.passthrough_columns),
        "rows": prepared.rows,
        "records": prepared.records,
        "quarantined": prepared.quarantined,
        "quarantine_counts": {k: v for k, v in prepared.quarantine_counts.items() if v},
        "bytes": prepared.total_bytes,
        "shards": shard_descriptors(manifest, join_uri(run_prefix, "output")),
        "on_demand_uris": [f.uri for f in manifest.on_demand],
        "on_demand_records": plan.on_demand_records,
        **reply.to_run(),  # type: ignore[typeddict-item]
        "cost_estimate": estimate.to_dict(),
    }


@dataclass(frozen=True)
class RetryRound:
    """The retry round a collect staged.

    :param shards: the shards of at least the job minimum (the retry submit's input).
    :param on_demand_uris: input files of the records too few for a job.
    :param records: every record staged again; ``on_demand_records`` of them in ``on_demand_uris``.
    """

    shards: list[ShardDescriptor]
    on_demand_uris: list[str]
    records: int
    on_demand_records: int


def stage_retry_round(
    storage: Storage,
    prepared: PreparedRun | Mapping[str, Any],
    jobs: Sequence[Mapping[str, Any]],
    record_ids: Sequence[str],
    quotas: QuotaConfig,
) -> RetryRound:
    """Stage ``record_ids`` again under ``<run>/retry-1/``: their first-round lines, planned into new shards
    (round 2) and on-demand files.

    :param storage: local and S3 access.
    :param prepared: the run (its prefix and first-round on-demand files).
    :param jobs: the first round's submit results (their input prefixes hold the records' lines).
    :param record_ids: the records to stage again.
    :param quotas: the model's limits; records too few for a job always go on demand.
    """
    from bedrock_batch.results import write_retry_spool
    from bedrock_batch.split import plan_shards, write_shards

    retry_prefix = join_uri(str(prepared["run_prefix"]), "retry-1")
    inputs = [str(job["input_uri"]) for job in jobs if job.get("input_uri")]
    inputs += list(prepared.get("on_demand_uris") or ())
    with tempfile.TemporaryDirectory(prefix="bedrock-batch-retry-") as work:
        spool = os.path.join(work, "retry.jsonl")
        sizes = write_retry_spool(storage, inputs, list(record_ids), spool)
        plan = plan_shards(sizes, quotas.replace(below_minimum="on_demand"))
        remove_stale_files(storage, join_uri(retry_prefix, "input"), plan)
        manifest = write_shards(spool, plan, join_uri(retry_prefix, "input"), storage=storage)
    return RetryRound(
        shards=shard_descriptors(manifest, join_uri(retry_prefix, "output"), round_number=2),
        on_demand_uris=[f.uri for f in manifest.on_demand],
        records=int(plan.records),
        on_demand_records=int(plan.on_demand_records),
    )
