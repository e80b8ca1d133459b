"""The on-demand fallback: records too few for a batch job, invoked one by one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from bedrock_batch import metrics
from bedrock_batch.operators._base import RUNTIME_TEMPLATE_FIELDS, STORAGE_TEMPLATE_FIELDS, InvokingOperator
from bedrock_batch.stage_results import OnDemandResult

if TYPE_CHECKING:
    from airflow.sdk import Context


class BedrockOnDemandOperator(InvokingOperator):
    """Invoke the model record by record for input files too small for a batch job.

    Writes ``<output_uri>/<file>.out`` in the batch output line format, so collection treats these records
    like any job's. An input file whose output already exists with one line per record is not invoked
    again (a rerun does not pay twice). See :func:`~bedrock_batch.on_demand.invoke_files`.

    :param input_uris: batch input files (``{"recordId", "modelInput"}`` lines). (templated)
    :param output_uri: prefix for the output files. (templated)
    :param model_id: model id or inference-profile id. (templated)
    :param invocation_type: ``InvokeModel`` or ``Converse``. (templated)
    :param requests_per_second: client-side rate limit; 0: none. (templated)
    :param max_attempts: attempts per record for throttling and transient errors. (templated)
    :param kms_key_id: KMS key of every object written (SSE-KMS). (templated)
    :param expected_bucket_owner: account that must own every bucket touched; ``bucket_owners`` overrides it
        per bucket. (templated)
    """

    template_fields: Sequence[str] = aws_template_fields(
        "input_uris", "output_uri", *RUNTIME_TEMPLATE_FIELDS, *STORAGE_TEMPLATE_FIELDS
    )
    ui_color = "#ffe0b2"

    def __init__(
        self,
        *,
        input_uris: Sequence[str] | str,
        output_uri: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_uris = input_uris
        self.output_uri = output_uri

    def execute(self, context: Context) -> OnDemandResult:
        from bedrock_batch.on_demand import invoke_files

        self.resolve_arguments()
        uris = [self.input_uris] if isinstance(self.input_uris, str) else list(self.input_uris or ())
        stats = invoke_files(
            self.storage(),
            uris,
            self.output_uri,
            self.invoker(),
            requests_per_second=self.requests_per_second,
            max_attempts=self.max_attempts,
        )
        self.log.info(
            "On-demand: %d file(s), %s records invoked (%s succeeded, %s failed, %s retries), %s reused",
            len(uris),
            f"{stats.records:,}",
            f"{stats.succeeded:,}",
            f"{stats.failed:,}",
            f"{stats.retries:,}",
            f"{stats.reused:,}",
        )
        if stats.throttled:
            metrics.count("throttled_calls", stats.throttled, dag_id=self.dag_id, model_id=str(self.model_id))
        return {
            "output_uri": self.output_uri if uris else None,
            "records": stats.records + stats.reused,
            "succeeded": stats.succeeded,
            "failed": stats.failed,
            "reused": stats.reused,
        }
