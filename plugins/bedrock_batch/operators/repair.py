"""The repair round: ask each invalid_output record again, once, on demand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from bedrock_batch.operators._base import (
    ROUNDS_TEMPLATE_FIELDS,
    RUNTIME_TEMPLATE_FIELDS,
    STORAGE_TEMPLATE_FIELDS,
    InvokingOperator,
    RoundsOperator,
)
from bedrock_batch.stage_results import RepairResult

if TYPE_CHECKING:
    import pyarrow as pa
    from airflow.sdk import Context


class BedrockBatchRepairOperator(RoundsOperator, InvokingOperator):
    """Re-ask every ``invalid_output`` record once, after the retry round.

    Joins the outputs of both rounds (as publish does) and, for each record whose reply does not conform to
    the run's reply schema, sends through the on-demand runtime its original request, the reply that did not
    conform as the model's turn, and the user turn "Your reply did not conform to the JSON Schema:
    ``<path>: <reason>``. Reply again with one JSON object that conforms."
    (:func:`~bedrock_batch.repair.repair_invalid`), at most ``requests_per_second`` with ``max_attempts``
    per request, like :class:`~bedrock_batch.operators.BedrockOnDemandOperator`. The answers go to
    ``<output_uri>/part-0001.jsonl.out`` in the batch output format under the same record ids; pass this
    task's result to publish as ``repair=`` and a conforming answer replaces the invalid reply (the run
    report counts it as ``repaired``). A rerun whose output is already complete invokes nothing. No reply
    or request text reaches the log.

    Returns a :class:`~bedrock_batch.stage_results.RepairResult`: ``output_uri`` (``None`` when no record
    needed repair), ``records``, ``repaired``, ``still_invalid``.

    :param prepared: the prepare stage's ``run`` XCom (its reply schema and output format). (templated)
    :param jobs: the first round's submit results. (templated)
    :param on_demand: the first round's on-demand result. (templated)
    :param retry_jobs: the retry round's submit results. (templated)
    :param retry_on_demand: the retry round's on-demand result. (templated)
    :param output_uri: prefix for the repair output. (templated)
    :param model_id: model id or inference-profile id to invoke (the run's model). (templated)
    :param invocation_type: ``InvokeModel`` or ``Converse``, as the run's records. (templated)
    :param requests_per_second: client-side rate limit; 0: none. (templated)
    :param max_attempts: attempts per request for throttling and transient errors. (templated)
    :param kms_key_id: KMS key of every object written (SSE-KMS). (templated)
    :param expected_bucket_owner: account that must own every bucket touched; ``bucket_owners`` overrides it
        per bucket. (templated)
    """

    template_fields: Sequence[str] = aws_template_fields(
        *ROUNDS_TEMPLATE_FIELDS, "output_uri", *RUNTIME_TEMPLATE_FIELDS, *STORAGE_TEMPLATE_FIELDS
    )
    ui_color = "#ffccbc"

    def __init__(self, *, output_uri: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.output_uri = output_uri

    def execute(self, context: Context) -> RepairResult:
        from bedrock_batch.repair import repair_invalid

        self.resolve_arguments()
        run = self.run()
        joined = self._invalid_rows()
        outcome = repair_invalid(
            self.storage(),
            str(run["run_prefix"]),
            joined,
            self.output_uri,
            self.invoker(),
            family=self.family(),
            reply=self.reply(),
            requests_per_second=self.requests_per_second,
            max_attempts=self.max_attempts,
        )
        self.log.info(
            "Repair: %s invalid_output record(s) asked again, %s repaired, %s still invalid",
            f"{outcome.records:,}",
            f"{outcome.repaired:,}",
            f"{outcome.still_invalid:,}",
        )
        return {
            "output_uri": outcome.output_uri,
            "records": outcome.records,
            "repaired": outcome.repaired,
            "still_invalid": outcome.still_invalid,
        }

    def _invalid_rows(self) -> pa.Table:
        """The run's records as one join of every round gives them: all of them, or, when the first round was
        collected in parts, only the ``invalid_output`` ones (one part in memory at a time)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from bedrock_batch.parts import iter_final_parts, read_overlay
        from bedrock_batch.replies import INVALID_OUTPUT

        uris = self.part_uris()
        if uris is None:
            joined, _ = self.join(self.outputs())
            return joined
        storage = self.storage()
        overlay = read_overlay(storage, self.later_outputs(), self.family(), self.reply())
        columns = ["record_id", "status", "text", "parse_error"]
        pieces = [
            rows.filter(pc.equal(rows["status"], INVALID_OUTPUT)).select(columns)
            for rows in iter_final_parts(storage, uris, overlay)
        ]
        if not pieces:
            return pa.table({name: pa.array([], pa.string()) for name in columns})
        return pa.concat_tables(pieces)
