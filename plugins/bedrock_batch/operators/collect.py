"""Stage 6, first round: collect the outputs and stage the retry round."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from bedrock_batch.config import as_bool, quota_config_for
from bedrock_batch.operators._base import STORAGE_TEMPLATE_FIELDS, CollectingOperator, as_mapping
from bedrock_batch.stage_results import (
    RETRY_ON_DEMAND_XCOM_KEY,
    ROUND_XCOM_KEY,
    CollectRound,
    ShardDescriptor,
)
from bedrock_batch.staging import ON_DEMAND_LABEL, RetryRound, job_outputs, job_results, stage_retry_round

if TYPE_CHECKING:
    from airflow.sdk import Context


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

    :param prepared: the prepare stage's ``run`` XCom. (templated)
    :param jobs: the submit stage's results (all map indexes). (templated)
    :param on_demand: the on-demand stage's result. (templated)
    :param quotas: quotas for planning the retry shards.
    :param retry: stage a retry round at all. (templated)
    :param kms_key_id: KMS key of every object written (SSE-KMS). (templated)
    :param expected_bucket_owner: account that must own every bucket touched; ``bucket_owners`` overrides it
        per bucket. (templated)
    """

    template_fields: Sequence[str] = aws_template_fields(
        "prepared", "jobs", "on_demand", "retry", *STORAGE_TEMPLATE_FIELDS
    )
    ui_color = "#b3e5fc"

    def __init__(self, *, retry: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retry = retry

    def resolve_arguments(self) -> None:
        """Coerce the rendered ``retry`` (it may arrive as a string); a ConfigError names a bad value."""
        self.retry = as_bool("retry", self.retry)

    def execute(self, context: Context) -> list[ShardDescriptor]:
        from bedrock_batch.collect import retryable_record_ids, summarize_results

        self.resolve_arguments()
        run = self.run()
        jobs = job_results(self.jobs)
        joined, manifests = self.join(job_outputs(jobs, as_mapping(self.on_demand), ON_DEMAND_LABEL))
        summary = summarize_results(joined)
        self.log.info(
            "Round 1: %s records, %s succeeded, %s invalid_output, %s failed (%s retryable, %s missing)",
            f"{summary.records:,}",
            f"{summary.succeeded:,}",
            f"{summary.invalid_output:,}",
            f"{summary.failed:,}",
            f"{summary.retryable:,}",
            f"{summary.missing:,}",
        )
        retry_ids = retryable_record_ids(joined) if self.retry else []
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
            "records": summary.records,
            "succeeded": summary.succeeded,
            "invalid_output": summary.invalid_output,
            "failed": summary.failed,
            "retryable": summary.retryable,
            "missing": summary.missing,
            "retried": retry.records,
            "retry_shards": len(retry.shards),
            "retry_on_demand_files": len(retry.on_demand_uris),
            "manifest_mismatches": manifests.mismatches,
        }
        context["ti"].xcom_push(key=ROUND_XCOM_KEY, value=round_summary)
        return retry.shards
