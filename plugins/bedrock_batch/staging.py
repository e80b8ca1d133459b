"""Where a run's files live, and what is already there: run prefix, shard descriptors, stale files, outputs.

A run stages everything under ``<staging>/<dag_id>/<ds>/``: ``input/shard-NNNN/part-NNNN.jsonl`` (and
``input/on-demand/``), ``output/shard-NNNN/``, ``record_index.parquet``, ``quarantine.jsonl``, and the same
again under ``retry-1/`` for the retry round. Imports nothing from Airflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bedrock_batch.errors import StorageReadError
from bedrock_batch.jobs import check_job_s3_uri
from bedrock_batch.storage import Storage, is_s3_uri, join_uri

if TYPE_CHECKING:
    from bedrock_batch.results import JobOutput
    from bedrock_batch.split import ShardManifest, ShardPlan
    from bedrock_batch.stage_results import OnDemandResult, ShardDescriptor

# Objects that mark a partition as present without being data (Spark/Hive/Glue conventions).
MARKER_PREFIXES = ("_", ".")
# The output label (results table ``job_arn``) of the on-demand fallback's records, per round.
ON_DEMAND_LABEL = "on-demand"
ON_DEMAND_RETRY_LABEL = "on-demand-retry"


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


def job_results(value: Iterable[Any] | None) -> list[dict[str, Any]]:
    """The submit results in a mapped task's XCom (``None`` for a map index that returned nothing)."""
    return [dict(item) for item in (value or ()) if isinstance(item, Mapping)]
