"""A run's cost estimated before any job: tokens counted while prepare streams, priced with the price table.

- **Input tokens.** No tokenizer ships with the library: each record's rendered prompt is estimated with
  :func:`~bedrock_batch.models.estimate_tokens` (one token per 4 characters, per UTF-8 byte for non-ASCII
  text, rounded up per piece; tokenizers of the Claude, Llama and Nova families spend about that on English
  prose), plus what the reply schema adds (:func:`~bedrock_batch.models.output_format_tokens`). Records of a
  ``bedrock`` source count their whole serialized line (JSON keys included). Both err high.
- **Output tokens.** Each record's ``max_tokens`` (an upper bound: no reply is longer), or, when the pipeline
  says ``output_tokens_estimate: history``, the average output tokens per replied record of the earlier run
  reports of the same model (``<results_uri>/reports/ds=<date>/run_report.json``, the last
  :data:`HISTORY_RUNS`), never above ``max_tokens``. Without usable history it falls back to ``max_tokens``.
- **Price.** :func:`~bedrock_batch.cost.estimate_cost`: batch records at the batch discount, records bound
  for the on-demand fallback at the full price. A model without a price gives an unknown estimate (``None``),
  never 0; a cost limit with an unknown estimate fails (:func:`check_cost_limit`).

Imports nothing from Airflow.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import orjson

from bedrock_batch.cost import PriceTable, estimate_cost
from bedrock_batch.errors import CostUnknownError, StorageReadError
from bedrock_batch.storage import join_uri

if TYPE_CHECKING:
    from bedrock_batch.stage_results import CostEstimateRecord
    from bedrock_batch.storage import Storage

log = logging.getLogger(__name__)

#: How a run's output tokens are estimated: every record's ``max_tokens``, or the average of earlier runs.
OUTPUT_ESTIMATES = ("max_tokens", "history")
#: How many earlier run reports (the most recent) the history-based average reads.
HISTORY_RUNS = 7
REPORTS_FOLDER = "reports"
REPORT_FILE = "run_report.json"

Verdict = Literal["no_limit", "within", "over"]


@dataclass(frozen=True)
class OutputHistory:
    """Output tokens per replied record in earlier runs of the same model.

    :param tokens_per_record: their output tokens over their replied (``succeeded`` + ``invalid_output``)
        records.
    :param runs: how many run reports it was taken from.
    """

    tokens_per_record: float
    runs: int


@dataclass(frozen=True)
class CostEstimate:
    """What a run is expected to cost, before any job.

    :param model_id: the model priced.
    :param records: records to send (batch and on demand).
    :param on_demand_records: those bound for the on-demand fallback (full price).
    :param input_tokens: estimated input tokens of all records.
    :param output_tokens: estimated output tokens (an upper bound with ``output_basis`` ``max_tokens``).
    :param output_basis: ``max_tokens`` or ``history``.
    :param history_runs: run reports the history average came from (0 with ``max_tokens``).
    :param estimated_cost_usd: the estimate; ``None`` when the model has no price.
    """

    model_id: str
    records: int
    on_demand_records: int
    input_tokens: int
    output_tokens: int
    output_basis: str
    history_runs: int
    estimated_cost_usd: Decimal | None

    def to_dict(self) -> CostEstimateRecord:
        """JSON-ready form (XCom, run report); the cost as a decimal string, ``None`` when unknown."""
        return {
            "model_id": self.model_id,
            "records": self.records,
            "on_demand_records": self.on_demand_records,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "output_basis": self.output_basis,
            "history_runs": self.history_runs,
            "estimated_cost_usd": None if self.estimated_cost_usd is None else str(self.estimated_cost_usd),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostEstimate:
        """Rebuild from :meth:`to_dict` output (e.g. pulled from XCom)."""
        cost = data.get("estimated_cost_usd")
        return cls(
            model_id=str(data["model_id"]),
            records=int(data["records"]),
            on_demand_records=int(data.get("on_demand_records") or 0),
            input_tokens=int(data["input_tokens"]),
            output_tokens=int(data["output_tokens"]),
            output_basis=str(data.get("output_basis") or "max_tokens"),
            history_runs=int(data.get("history_runs") or 0),
            estimated_cost_usd=None if cost is None else Decimal(str(cost)),
        )

    @property
    def cost_text(self) -> str:
        """``$1.2345`` (to the millionth of a dollar, so a small run does not read $0), or ``unknown`` for a
        model without a price."""
        cost = self.estimated_cost_usd
        return "unknown" if cost is None else usd(cost.quantize(Decimal("0.000001")))

    def describe(self) -> str:
        """One line of counts: cost, records, tokens and where the output tokens come from."""
        basis = (
            f"the average of {self.history_runs} earlier run(s)"
            if self.output_basis == "history"
            else "every record's max_tokens, an upper bound"
        )
        return (
            f"{self.cost_text} for {self.records:,} records ({self.on_demand_records:,} on demand): "
            f"~{self.input_tokens:,} input tokens, {self.output_tokens:,} output tokens from {basis}"
        )


def estimate_run_cost(
    model_id: str,
    *,
    records: int,
    input_tokens: int,
    max_output_tokens: int,
    on_demand_records: int = 0,
    history: OutputHistory | None = None,
    prices: PriceTable | None = None,
) -> CostEstimate:
    """The cost estimate of a prepared run.

    :param model_id: model id, inference-profile id or ARN.
    :param records: records to send.
    :param input_tokens: their estimated input tokens.
    :param max_output_tokens: the sum of their ``max_tokens``.
    :param on_demand_records: how many of them go to the on-demand fallback (billed at the full price; their
        tokens are taken as the run's average share).
    :param history: earlier runs' output tokens per record; ``None``: ``max_output_tokens``.
    :param prices: price table; default :func:`~bedrock_batch.cost.load_price_table`'s.
    """
    if min(records, input_tokens, max_output_tokens, on_demand_records) < 0 or on_demand_records > records:
        raise ValueError(
            f"counts must not be negative and on-demand records at most the records, got {records}, "
            f"{input_tokens}, {max_output_tokens}, {on_demand_records}"
        )
    output_tokens, basis, runs = max_output_tokens, "max_tokens", 0
    if history is not None:
        # An average, never above the bound every reply must respect.
        output_tokens = min(max_output_tokens, math.ceil(history.tokens_per_record * records))
        basis, runs = "history", history.runs
    cost: Decimal | None = Decimal(0)
    if records:
        share = on_demand_records / records
        od_in, od_out = round(input_tokens * share), round(output_tokens * share)
        batch = estimate_cost(model_id, input_tokens - od_in, output_tokens - od_out, prices=prices)
        on_demand = estimate_cost(model_id, od_in, od_out, batch=False, prices=prices)
        cost = None if batch is None or on_demand is None else batch + on_demand
    elif estimate_cost(model_id, 0, 0, prices=prices) is None:
        cost = None
    return CostEstimate(
        model_id=model_id,
        records=records,
        on_demand_records=on_demand_records,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        output_basis=basis,
        history_runs=runs,
        estimated_cost_usd=cost,
    )


def output_history(reports: Iterable[Mapping[str, Any]], model_id: str) -> OutputHistory | None:
    """Output tokens per replied record over earlier run reports of ``model_id``; ``None`` when none of them
    has a replied record.

    :param reports: decoded ``run_report.json`` documents.
    :param model_id: only reports of this model count (another model writes replies of another length).
    """
    tokens = replied = runs = 0
    for report in reports:
        if report.get("model_id") != model_id:
            continue
        count = int(report.get("succeeded") or 0) + int(report.get("invalid_output") or 0)
        if count <= 0:
            continue
        tokens += int(report.get("output_tokens") or 0)
        replied += count
        runs += 1
    return OutputHistory(tokens_per_record=tokens / replied, runs=runs) if replied else None


def read_output_history(
    storage: Storage, results_uri: str, *, model_id: str, before: str, runs: int = HISTORY_RUNS
) -> OutputHistory | None:
    """:func:`output_history` of the last ``runs`` reports of ``model_id`` dated before ``before``.

    A missing reports folder or an unreadable report is no history (logged), never an error: the estimate
    then falls back to ``max_tokens``.

    :param storage: local and S3 access.
    :param results_uri: the pipeline's results root (its ``reports/ds=<date>/run_report.json``).
    :param model_id: the run's model.
    :param before: the run's partition, ``YYYY-MM-DD``; its own report (a rerun) and later ones are left out.
    :param runs: how many of the most recent reports to read.
    """
    folder = join_uri(results_uri, REPORTS_FOLDER)
    try:
        names = [obj.name for obj in storage.list_objects(folder + "/")]
    except StorageReadError:
        return None
    dates = sorted(
        {
            name.split("/", 1)[0].removeprefix("ds=")
            for name in names
            if name.startswith("ds=") and name.endswith("/" + REPORT_FILE)
        },
        reverse=True,
    )
    reports = []
    for ds in [d for d in dates if d < before][:runs]:
        uri = join_uri(folder, f"ds={ds}", REPORT_FILE)
        try:
            with storage.open_read(uri) as stream:
                reports.append(orjson.loads(stream.read()))
        except (StorageReadError, orjson.JSONDecodeError):
            log.warning("Run report %s cannot be read; the output estimate leaves it out", uri)
    return output_history(reports, model_id)


def usd(value: Decimal | float) -> str:
    """``value`` as dollars for messages, without trailing zeros: ``$5``, ``$0.05``, ``$1,250.5``."""
    text = f"{Decimal(str(value)):,f}"
    return "$" + (text.rstrip("0").rstrip(".") if "." in text else text)


def check_cost_limit(estimate: CostEstimate, limit: Decimal | float | None) -> Verdict:
    """Compare the estimate with ``max_estimated_cost_usd``.

    :param estimate: the run's estimate.
    :param limit: the limit in USD; ``None``: no limit.
    :return: ``no_limit``, ``within`` (at or below the limit) or ``over``.
    :raises CostUnknownError: when a limit is set and the model has no price: an estimate that cannot be
        compared must not pass.
    """
    if limit is None:
        return "no_limit"
    if estimate.estimated_cost_usd is None:
        raise CostUnknownError(
            f"max_estimated_cost_usd is {usd(limit)} but the price table has no price for model "
            f"{estimate.model_id}, so the run's cost cannot be estimated; no job was created. Add the model "
            "to a price file named by BEDROCK_BATCH_PRICE_FILE, or remove the limit"
        )
    return "over" if estimate.estimated_cost_usd > Decimal(str(limit)) else "within"


def over_limit_message(estimate: CostEstimate, limit: Decimal | float) -> str:
    """Why a run stopped: the estimate, the limit and what to change."""
    return (
        f"estimated cost {estimate.cost_text} is above max_estimated_cost_usd {usd(limit)}; "
        f"no job was created. Estimate: {estimate.describe()}. Raise the limit (the run param "
        "max_estimated_cost_usd), lower max_records or max_tokens, or set cost_approval to ask a person"
    )
