"""Stage 6, first round: collect the outputs and stage the retry round."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from bedrock_batch.config import as_bool, quota_config_for
from bedrock_batch.operators._base import STORAGE_TEMPLATE_FIELDS, CollectingOperator, as_mapping
from bedrock_batch.stage_results import (
    PARTS_XCOM_KEY,
    RETRY_ON_DEMAND_XCOM_KEY,
    ROUND_XCOM_KEY,
    CollectedPartResult,
    CollectRound,
    ManifestMismatch,
    ShardDescriptor,
)
from bedrock_batch.staging import ON_DEMAND_LABEL, RetryRound, job_outputs, job_results, stage_retry_round

if TYPE_CHECKING:
    from airflow.sdk import Context

    from bedrock_batch.parts import CollectedPart
    from bedrock_batch.results import JobOutput


class BedrockBatchCollectJobOperator(CollectingOperator):
    """Collect one first-round job: its output joined to its shard's slice of the record index.

    Mapped over the first round's submit results (``.expand(job=submit.output)``), one task per job, so a
    run's collect is spread over the workers and each task's memory is the size of one job. Reads the job's
    output lines with the run's reply format, joins them to the records of its shard (the ordinals
    ``start``/``stop`` the submit result carries), writes the joined rows to
    ``<run>/collected/shard-NNNNN.parquet`` (see :mod:`bedrock_batch.parts`) and returns their counts
    (:class:`~bedrock_batch.stage_results.CollectedPartResult`). Records missing from the output are
    ``missing`` (retried by the collect task); a shard without a result here is collected by the collect task.

    :param job: the job (one submit result). (templated)
    :param prepared: the prepare stage's ``run`` XCom. (templated)
    :param kms_key_id: KMS key of every object written (SSE-KMS). (templated)
    :param expected_bucket_owner: account that must own every bucket touched; ``bucket_owners`` overrides it
        per bucket. (templated)
    """

    template_fields: Sequence[str] = aws_template_fields("job", "prepared", *STORAGE_TEMPLATE_FIELDS)
    ui_color = "#b3e5fc"

    def __init__(self, *, job: Mapping[str, Any] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job

    def execute(self, context: Context) -> CollectedPartResult | None:
        from bedrock_batch.parts import part_name

        job = dict(as_mapping(self.job) or {})
        number = int(job["shard"])
        start, stop = job.get("start"), job.get("stop")
        if start is None or stop is None:
            self.log.info(
                "Shard %d has no ordinal span (staged by an earlier version): the collect task joins it",
                number,
            )
            return None
        ranges = [(int(start), int(stop))]
        outputs = job_outputs([job], None, ON_DEMAND_LABEL)
        if not outputs:
            self.log.warning(
                "Shard %d has no job output: its records are missing and will be retried", number
            )
        result = collect_into_part(self, part_name(number), number, ranges, outputs)
        self.log.info(
            "Shard %d: %s records, %s succeeded, %s invalid_output, %s failed (%s retryable, %s missing)",
            number,
            f"{result['records']:,}",
            f"{result['succeeded']:,}",
            f"{result['invalid_output']:,}",
            f"{result['failed']:,}",
            f"{result['retryable']:,}",
            f"{result['missing']:,}",
        )
        return result


def collect_into_part(
    operator: CollectingOperator,
    name: str,
    shard: int | None,
    ranges: Sequence[tuple[int, int]],
    outputs: Sequence[JobOutput],
) -> CollectedPartResult:
    """Join ``outputs`` to the records of ``ranges`` and write them as the run's part ``name``
    (:func:`~bedrock_batch.parts.collect_part`); the part's XCom form."""
    from bedrock_batch.parts import collect_part, part_uri

    run = operator.run()
    collected = collect_part(
        operator.storage(),
        index_uri=str(run["index_uri"]),
        ranges=ranges,
        outputs=outputs,
        family=operator.family(),
        reply=operator.reply(),
        name=name,
        target_uri=part_uri(str(run["run_prefix"]), name),
    )
    return part_result(collected, shard)


def part_result(collected: CollectedPart, shard: int | None) -> CollectedPartResult:
    """The XCom form of a collected part."""
    summary = collected.summary
    return {
        "part": collected.name,
        "shard": shard,
        "uri": collected.uri,
        "records": summary.records,
        "succeeded": summary.succeeded,
        "invalid_output": summary.invalid_output,
        "failed": summary.failed,
        "retryable": summary.retryable,
        "missing": summary.missing,
        "input_tokens": summary.input_tokens,
        "output_tokens": summary.output_tokens,
        "manifest_mismatches": list(collected.manifests.mismatches),
        "manifests_missing": list(collected.manifests.missing),
        "unknown": collected.unknown,
    }


class BedrockBatchCollectOperator(CollectingOperator):
    """Collect the first round and stage the retry round.

    Joins every job's and the on-demand fallback's output to the record index, reading each reply with the
    run's reply format (a reply that does not conform to the reply schema is ``invalid_output``, never
    retried: the repair round may re-ask it), then writes the records whose errors are retryable
    (throttling, 5xx, timeouts, records missing from the output) as a new round
    (:func:`~bedrock_batch.staging.stage_retry_round`): shards of at least the service minimum go to a new
    job (the return value, a shard list like prepare's), the rest to the on-demand fallback (XCom key
    ``retry_on_demand``). Non-retryable errors are kept as they are. The round's counts go under the XCom
    key ``round`` (:class:`~bedrock_batch.stage_results.CollectRound`).

    With ``parts`` (the per-job collect tasks' results, :class:`BedrockBatchCollectJobOperator`), the jobs'
    outputs were joined there, one job per task: this task adds the on-demand fallback's part, reads only the
    parts' ids and statuses, and pushes the parts' files in order under the XCom key ``parts`` for repair
    and publish; its memory no longer grows with the run. Without ``parts`` it joins every output itself.

    :param prepared: the prepare stage's ``run`` XCom. (templated)
    :param jobs: the submit stage's results (all map indexes). (templated)
    :param parts: the per-job collect results (all map indexes); ``None``: join every output here.
        (templated)
    :param on_demand: the on-demand stage's result. (templated)
    :param quotas: quotas for planning the retry shards.
    :param retry: stage a retry round at all. (templated)
    :param kms_key_id: KMS key of every object written (SSE-KMS). (templated)
    :param expected_bucket_owner: account that must own every bucket touched; ``bucket_owners`` overrides it
        per bucket. (templated)
    """

    template_fields: Sequence[str] = aws_template_fields(
        "prepared", "jobs", "on_demand", "parts", "retry", *STORAGE_TEMPLATE_FIELDS
    )
    ui_color = "#b3e5fc"

    def __init__(
        self, *, retry: bool = True, parts: Sequence[Any] | str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.retry = retry
        self.parts = parts

    def resolve_arguments(self) -> None:
        """Coerce the rendered ``retry`` (it may arrive as a string); a ConfigError names a bad value."""
        self.retry = as_bool("retry", self.retry)

    def execute(self, context: Context) -> list[ShardDescriptor]:
        from bedrock_batch.collect import retryable_record_ids, summarize_results

        self.resolve_arguments()
        run = self.run()
        jobs = job_results(self.jobs)
        collected = self._collect_parts(run, jobs)
        if collected is None:
            joined, manifests = self.join(job_outputs(jobs, as_mapping(self.on_demand), ON_DEMAND_LABEL))
            summary = summarize_results(joined)
            counts = {name: getattr(summary, name) for name in _ROUND_COUNTS}
            mismatches: list[ManifestMismatch] = list(manifests.mismatches)
            missing = list(manifests.missing)
            retry_ids = retryable_record_ids(joined) if self.retry else []
            context["ti"].xcom_push(key=PARTS_XCOM_KEY, value=None)
        else:
            from bedrock_batch.parts import retryable_ids

            parts, uris = collected
            rows: list[dict[str, Any]] = [dict(part) for part in parts]
            counts = {name: sum(int(row.get(name) or 0) for row in rows) for name in _ROUND_COUNTS}
            mismatches = [m for part in parts for m in part["manifest_mismatches"]]
            missing = [job for part in parts for job in part["manifests_missing"]]
            retry_ids = retryable_ids(self.storage(), uris) if self.retry else []
            context["ti"].xcom_push(key=PARTS_XCOM_KEY, value=uris)
        self.log.info(
            "Round 1: %s records, %s succeeded, %s invalid_output, %s failed (%s retryable, %s missing)",
            *(f"{counts[name]:,}" for name in _ROUND_COUNTS),
        )
        retry = RetryRound(shards=[], on_demand_uris=[], records=0, on_demand_records=0)
        if retry_ids:
            quotas = quota_config_for(self.quotas, run["model_id"])
            retry = stage_retry_round(self.storage(), run, jobs, retry_ids, quotas)
            self.log.info(
                "Retry round: %s records in %d shard(s), %s for on-demand",
                f"{retry.records:,}",
                len(retry.shards),
                f"{retry.on_demand_records:,}",
            )
        context["ti"].xcom_push(key=RETRY_ON_DEMAND_XCOM_KEY, value=retry.on_demand_uris)
        round_summary: CollectRound = {
            "records": counts["records"],
            "succeeded": counts["succeeded"],
            "invalid_output": counts["invalid_output"],
            "failed": counts["failed"],
            "retryable": counts["retryable"],
            "missing": counts["missing"],
            "retried": retry.records,
            "retry_shards": len(retry.shards),
            "retry_on_demand_files": len(retry.on_demand_uris),
            "manifest_mismatches": mismatches,
            "manifests_missing": missing,
        }
        context["ti"].xcom_push(key=ROUND_XCOM_KEY, value=round_summary)
        return retry.shards

    def _collect_parts(
        self, run: Any, jobs: list[dict[str, Any]]
    ) -> tuple[list[CollectedPartResult], list[str]] | None:
        """The run's parts, in order: the per-job collect's (a shard none collected is collected here), then
        the on-demand part, collected here; ``None`` when there are no parts to work from (no ``parts``
        argument, or a run staged without shard spans)."""
        from bedrock_batch.parts import complement, part_name, shard_spans

        if self.parts is None or isinstance(self.parts, str):
            return None
        spans = shard_spans(run.get("shards") or [])
        if spans is None:
            self.log.info("The run was staged without shard spans: every output is joined here")
            return None
        by_shard: dict[int, Any] = {
            int(part["shard"]): dict(part)
            for part in self.parts
            if isinstance(part, Mapping) and part.get("shard") is not None
        }
        parts: list[CollectedPartResult] = []
        for number, (start, stop) in sorted(spans.items()):
            part: Any = by_shard.get(number)
            if part is None:
                self.log.warning("Shard %d was not collected by its own task: collecting it here", number)
                job = next((j for j in jobs if j.get("shard") == number), None)
                outputs = job_outputs([job] if job else [], None, ON_DEMAND_LABEL)
                part = collect_into_part(self, part_name(number), number, [(start, stop)], outputs)
            parts.append(part)
        gaps = complement(list(spans.values()), int(run.get("records") or 0))
        on_demand = job_outputs(None, as_mapping(self.on_demand), ON_DEMAND_LABEL)
        if gaps or on_demand:
            parts.append(collect_into_part(self, part_name(None), None, gaps, on_demand))
        return parts, [part["uri"] for part in parts]


_ROUND_COUNTS = ("records", "succeeded", "invalid_output", "failed", "retryable", "missing")
