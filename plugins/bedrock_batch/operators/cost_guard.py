"""The cost guard between prepare and submit: a run above its cost limit stops before any job, or waits for a
person to approve the spend (the standard provider's human-in-the-loop approval, Airflow 3.1+)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator

from bedrock_batch.config import as_bool, as_optional_float
from bedrock_batch.errors import (
    ConfigError,
    CostLimitExceededError,
    CostRejectedError,
    CostUnknownError,
)
from bedrock_batch.estimate import CostEstimate, check_cost_limit, over_limit_message, usd
from bedrock_batch.stage_results import CostGuardResult

if TYPE_CHECKING:
    from airflow.sdk import Context


class BedrockBatchCostGuardOperator(ApprovalOperator):
    """Compare the run's estimated cost (prepare's ``cost_estimate``) with ``max_estimated_cost_usd``.

    - No limit, or the estimate at or below it: succeed at once, no one is asked.
    - Above it without ``cost_approval``: fail, without a retry, with the estimate and the limit; the submit
      and on-demand tasks downstream never run, so no job is created.
    - Above it with ``cost_approval``: ask a person (Approve / Reject, in the UI's required actions or
      through the REST API's ``hitlDetails``) and wait; Approve lets the run go on, Reject fails the task
      with the estimate, the limit and who rejected, so no job is created either.
    - A limit with a model the price table has no price for fails: an unknown cost never passes a limit.

    :param prepared: prepare's run description (its XCom ``run``), holding ``cost_estimate``. (templated)
    :param max_estimated_cost_usd: the limit in US dollars; ``None`` or ``"None"``: no limit. (templated)
    :param cost_approval: above the limit, ask for approval instead of failing. (templated)
    :param response_timeout: how long to wait for an answer; ``None``: until someone answers (a timeout
        fails the task: no default is approved).
    """

    template_fields = ("prepared", "max_estimated_cost_usd", "cost_approval", "subject", "body")
    template_fields_renderers = {"prepared": "json"}
    ui_color = "#ffe0b2"

    def __init__(
        self,
        *,
        prepared: Any,
        max_estimated_cost_usd: float | str | None = None,
        cost_approval: bool | str = False,
        response_timeout: timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("subject", "Approve the estimated cost of this Bedrock batch run")
        super().__init__(response_timeout=response_timeout, **kwargs)
        self.prepared = prepared
        self.max_estimated_cost_usd = max_estimated_cost_usd
        self.cost_approval = cost_approval

    def resolve_arguments(self) -> None:
        """Coerce the rendered limit (a null param renders ``"None"``: no limit) and approval switch; a
        :class:`~bedrock_batch.errors.ConfigError` names the argument and the value."""
        self.max_estimated_cost_usd = as_optional_float(
            "max_estimated_cost_usd", self.max_estimated_cost_usd, minimum=0
        )
        self.cost_approval = as_bool("cost_approval", self.cost_approval)

    def decide(self) -> tuple[CostEstimate, Decimal | None, str]:
        """The estimate, the limit and the verdict (``no_limit``, ``within``, ``over``).

        :raises AirflowFailException: for an argument that cannot be read or an unknown price (a retry
            would find the same).
        """
        try:
            self.resolve_arguments()
            limit = cast(float | None, self.max_estimated_cost_usd)  # resolve_arguments
            run = self.prepared if isinstance(self.prepared, Mapping) else {}
            if "cost_estimate" not in run:
                raise ConfigError("prepared holds no cost_estimate: prepare this run again with this version")
            estimate = CostEstimate.from_dict(run["cost_estimate"])
            verdict = check_cost_limit(estimate, limit)
        except (ConfigError, CostUnknownError) as error:
            raise AirflowFailException(str(error)) from error
        return estimate, None if limit is None else Decimal(str(limit)), verdict

    def execute(self, context: Context) -> CostGuardResult:
        estimate, limit, verdict = self.decide()
        if verdict != "over":
            where = "no limit" if limit is None else f"within the limit {usd(limit)}"
            self.log.info("Estimated cost %s, %s: no approval needed", estimate.describe(), where)
            return self._result(estimate, limit, verdict, None)
        assert limit is not None
        message = over_limit_message(estimate, limit)
        if not self.cost_approval:
            raise AirflowFailException(str(CostLimitExceededError(message)))
        self.subject = f"Approve {estimate.cost_text} for {self.dag_id}, above its limit of {usd(limit)}"
        self.body = approval_body(estimate, limit)
        self.log.info(
            "Estimated cost %s is above the limit %s: waiting for approval", estimate.cost_text, usd(limit)
        )
        # Waits: raises TaskAwaitingInput (Airflow 3.3+) or defers; execute_complete takes the answer.
        return cast(CostGuardResult, super().execute(context))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> CostGuardResult:
        # The provider's ApprovalOperator skips downstream on Reject, which would let collect and publish
        # (trigger rule none_failed) publish an empty run: a rejected spend fails instead.
        answer = HITLOperator.execute_complete(self, context=context, event=event)
        estimate, limit, _ = self.decide()
        assert limit is not None
        user = (answer.get("responded_by_user") or {}).get("name") or "unknown"
        if answer["chosen_options"] != [self.APPROVE]:
            rejected = CostRejectedError(
                f"{user} rejected the estimated cost {estimate.cost_text} (limit {usd(limit)}); "
                "no job was created"
            )
            raise AirflowFailException(str(rejected))
        self.log.info("%s approved the estimated cost %s (limit %s)", user, estimate.cost_text, usd(limit))
        return self._result(estimate, limit, "approved", user)

    @staticmethod
    def _result(
        estimate: CostEstimate, limit: Decimal | None, verdict: str, user: str | None
    ) -> CostGuardResult:
        cost = estimate.estimated_cost_usd
        return {
            "estimated_cost_usd": None if cost is None else str(cost),
            "limit_usd": None if limit is None else str(limit),
            "verdict": verdict,
            "approved_by": user,
        }


def approval_body(estimate: CostEstimate, limit: Decimal) -> str:
    """The approval page's Markdown: the estimate against the limit, counts only."""
    basis = (
        f"average of {estimate.history_runs} earlier run(s)"
        if estimate.output_basis == "history"
        else "every record's max_tokens (upper bound)"
    )
    return "\n".join(
        [
            f"The run's estimated cost, **{estimate.cost_text}**, is above its limit "
            f"`max_estimated_cost_usd` of **{usd(limit)}**. No job has been created yet.",
            "",
            "| | |",
            "|---|---:|",
            f"| model | `{estimate.model_id}` |",
            f"| records | {estimate.records:,} ({estimate.on_demand_records:,} on demand) |",
            f"| input tokens (estimated) | {estimate.input_tokens:,} |",
            f"| output tokens ({basis}) | {estimate.output_tokens:,} |",
            f"| estimated cost | {estimate.cost_text} |",
            f"| limit | {usd(limit)} |",
            "",
            "**Approve** submits the batch jobs; **Reject** stops the run without any job.",
        ]
    )
