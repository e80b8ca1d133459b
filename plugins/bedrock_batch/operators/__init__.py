"""Airflow operators for the pipeline's stages: one module per stage, each a thin adapter over pure modules.

- ``check``: :class:`BedrockBatchCheckOperator` over :mod:`bedrock_batch.preflight` (every parameter checked
  before any job: locations, role, model, reply schema, buckets).
- ``prepare``: :class:`BedrockBatchPrepareOperator` over :func:`bedrock_batch.staging.stage_source`
  (prepare, split and upload in one pass).
- ``cost_guard``: :class:`BedrockBatchCostGuardOperator` over :mod:`bedrock_batch.estimate` (stops a run
  above its cost limit before any job, or waits for a person to approve the spend).
- ``submit``: :class:`BedrockBatchSubmitOperator` over :class:`bedrock_batch.submission.JobSubmitter`
  (find or create the job) and :class:`bedrock_batch.polling.JobWatch` (wait for it).
- ``on_demand``: :class:`BedrockOnDemandOperator` over :func:`bedrock_batch.on_demand.invoke_files`.
- ``collect``: :class:`BedrockBatchCollectJobOperator` (mapped, one job each) over
  :func:`bedrock_batch.parts.collect_part`, then :class:`BedrockBatchCollectOperator` over the parts (or
  :func:`bedrock_batch.results.join_outputs`) and :func:`bedrock_batch.staging.stage_retry_round`.
- ``repair``: :class:`BedrockBatchRepairOperator` over :func:`bedrock_batch.repair.repair_invalid` (optional:
  re-asks each ``invalid_output`` record once).
- ``publish``: :class:`BedrockBatchPublishOperator` over :mod:`bedrock_batch.results`,
  :mod:`bedrock_batch.partitions` (a day replaced as a whole) and :func:`bedrock_batch.report.run_report`.

Heavy libraries (pandas, pyarrow) are imported inside the stages that need them, never at module level.
"""

from __future__ import annotations

from bedrock_batch.errors import OutputAccountingError
from bedrock_batch.operators._base import STORAGE_TEMPLATE_FIELDS
from bedrock_batch.operators.check import BedrockBatchCheckOperator
from bedrock_batch.operators.collect import BedrockBatchCollectJobOperator, BedrockBatchCollectOperator
from bedrock_batch.operators.cost_guard import BedrockBatchCostGuardOperator
from bedrock_batch.operators.on_demand import BedrockOnDemandOperator
from bedrock_batch.operators.prepare import BedrockBatchPrepareOperator
from bedrock_batch.operators.publish import BedrockBatchPublishOperator
from bedrock_batch.operators.repair import BedrockBatchRepairOperator
from bedrock_batch.operators.submit import BedrockBatchSubmitOperator
from bedrock_batch.stage_results import (
    ON_DEMAND_XCOM_KEY,
    PARTS_XCOM_KEY,
    RETRY_ON_DEMAND_XCOM_KEY,
    ROUND_XCOM_KEY,
    RUN_XCOM_KEY,
    SUBMISSION_XCOM_KEY,
)
from bedrock_batch.staging import MARKER_PREFIXES, remove_stale_files, run_prefix_for, shard_descriptors
from bedrock_batch.submission import REQUIRED_SHARD_KEYS, TRANSIENT_RETRY_SECONDS

__all__ = [
    "MARKER_PREFIXES",
    "ON_DEMAND_XCOM_KEY",
    "PARTS_XCOM_KEY",
    "REQUIRED_SHARD_KEYS",
    "RETRY_ON_DEMAND_XCOM_KEY",
    "ROUND_XCOM_KEY",
    "RUN_XCOM_KEY",
    "STORAGE_TEMPLATE_FIELDS",
    "SUBMISSION_XCOM_KEY",
    "TRANSIENT_RETRY_SECONDS",
    "BedrockBatchCheckOperator",
    "BedrockBatchCollectJobOperator",
    "BedrockBatchCollectOperator",
    "BedrockBatchCostGuardOperator",
    "BedrockBatchPrepareOperator",
    "BedrockBatchPublishOperator",
    "BedrockBatchRepairOperator",
    "BedrockBatchSubmitOperator",
    "BedrockOnDemandOperator",
    "OutputAccountingError",
    "remove_stale_files",
    "run_prefix_for",
    "shard_descriptors",
]
