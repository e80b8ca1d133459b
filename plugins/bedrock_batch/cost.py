"""Estimated cost of batch inference: token counts times the price table shipped in the package.

The table is ``bedrock_batch/pricing/bedrock_batch_prices.json``; ``$BEDROCK_BATCH_PRICE_FILE`` or
``load_price_table(path)`` reads another file. An unknown price is reported as unknown (``None``), never as
zero.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from bedrock_batch import resources
from bedrock_batch.errors import PriceTableError
from bedrock_batch.models import base_model_id

# Batch inference is billed at half the on-demand token price (Bedrock pricing page).
BATCH_DISCOUNT = Decimal("0.5")

TOKENS_PER_PRICE_UNIT = 1_000

# Package data, so it loads from a checkout, a wheel, the plugins folder and plugins.zip alike.
DEFAULT_PRICE_FILE = resources.PACKAGED_PRICE_FILE


@dataclass(frozen=True)
class ModelPrice:
    """On-demand price of one model.

    :param input_per_1k: USD per 1,000 input tokens.
    :param output_per_1k: USD per 1,000 output tokens.
    """

    input_per_1k: Decimal
    output_per_1k: Decimal


@dataclass(frozen=True)
class PriceTable:
    """On-demand prices by base model id prefix, with where and when they were taken from.

    :param models: base model id prefix (``anthropic.claude-3-haiku``) → price; the longest matching
        prefix wins.
    :param source: where the prices come from.
    :param prices_as_of: when the prices were current.
    """

    models: Mapping[str, ModelPrice]
    source: str = ""
    prices_as_of: str = ""

    def price_for(self, model_id: str) -> ModelPrice | None:
        """The price of ``model_id``, or ``None`` when the table has none.

        :param model_id: model id, cross-region inference-profile id or ARN.
        """
        model = base_model_id(model_id)
        best = max((prefix for prefix in self.models if model.startswith(prefix)), key=len, default=None)
        return None if best is None else self.models[best]


def _decimal(value: Any, where: str) -> Decimal:
    # bool is an int subclass, and a price of True is a typo, not one dollar.
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise PriceTableError(f"{where} must be a number, got {value!r}")
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise PriceTableError(f"{where} must be a number, got {value!r}") from None
    if not price.is_finite() or price < 0:
        raise PriceTableError(f"{where} must be a non-negative number, got {value!r}")
    return price


def parse_price_table(data: Mapping[str, Any], *, origin: str = "price table") -> PriceTable:
    """Validate a decoded price table (the layout of :data:`DEFAULT_PRICE_FILE`).

    :param data: the decoded JSON object.
    :param origin: where ``data`` came from, for error messages.
    :raises PriceTableError: when a price is missing, negative or not a number.
    """
    models = data.get("models")
    if not isinstance(models, Mapping):
        raise PriceTableError(f"{origin} has no 'models' object mapping model id prefixes to prices")
    parsed: dict[str, ModelPrice] = {}
    for prefix, price in models.items():
        if not isinstance(price, Mapping) or not {"input", "output"} <= price.keys():
            raise PriceTableError(
                f"{origin}: model {prefix!r} needs 'input' and 'output' prices per 1K tokens"
            )
        parsed[prefix] = ModelPrice(
            input_per_1k=_decimal(price["input"], f"{origin}: {prefix}.input"),
            output_per_1k=_decimal(price["output"], f"{origin}: {prefix}.output"),
        )
    return PriceTable(
        models=parsed, source=str(data.get("source", "")), prices_as_of=str(data.get("prices_as_of", ""))
    )


def load_price_table(path: str | os.PathLike[str] | None = None) -> PriceTable:
    """Read a price table file.

    :param path: JSON price file; default ``$BEDROCK_BATCH_PRICE_FILE`` when set, else
        :data:`DEFAULT_PRICE_FILE`, the table shipped in the package (both read once per process).
    :raises PriceTableError: when the file is missing, not JSON, or malformed.
    """
    if path is None:
        return _default_price_table(resources.price_file_override())
    return _read_price_table(Path(path))


@cache
def _default_price_table(override: Path | None) -> PriceTable:
    return _read_price_table(DEFAULT_PRICE_FILE if override is None else override)


def _read_price_table(file: Traversable) -> PriceTable:
    try:
        # Floats are read as Decimal so that 0.00025 stays exactly 0.00025.
        data = json.loads(file.read_text(encoding="utf-8"), parse_float=Decimal)
    except FileNotFoundError:
        raise PriceTableError(
            f"price table {file} does not exist; fix the path given to load_price_table() or in "
            f"${resources.PRICE_FILE_ENV}, or leave both unset to use the table shipped with bedrock_batch"
        ) from None
    except (OSError, ValueError) as exc:
        raise PriceTableError(f"price table {file} cannot be read as JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise PriceTableError(f"price table {file} must hold a JSON object")
    return parse_price_table(data, origin=f"price table {file}")


def estimate_cost(
    model_id: str,
    input_tokens: int | None,
    output_tokens: int | None,
    *,
    batch: bool = True,
    prices: PriceTable | None = None,
) -> Decimal | None:
    """Estimated USD for the tokens of one record or a whole job.

    :param model_id: model id, cross-region inference-profile id or ARN; region prefixes and ARNs are
        stripped before the lookup.
    :param input_tokens: input tokens; ``None`` (not reported) makes the cost unknown.
    :param output_tokens: output tokens; ``None`` (not reported) makes the cost unknown.
    :param batch: apply :data:`BATCH_DISCOUNT` (batch jobs); ``False`` for the on-demand fallback.
    :param prices: price table; default :func:`load_price_table`'s.
    :return: the estimate, or ``None`` when the model's price or a token count is unknown.
    :raises ValueError: when a token count is negative.
    """
    if input_tokens is None or output_tokens is None:
        return None
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError(f"token counts must not be negative, got {input_tokens} and {output_tokens}")
    price = (prices if prices is not None else load_price_table()).price_for(model_id)
    if price is None:
        return None
    cost = (input_tokens * price.input_per_1k + output_tokens * price.output_per_1k) / TOKENS_PER_PRICE_UNIT
    return cost * BATCH_DISCOUNT if batch else cost
