"""The repair round: each record whose reply did not conform to the reply schema is asked again, once.

After the retry round, a record that is ``invalid_output`` gets one more request through the on-demand
runtime: its original request, the reply that did not conform as the model's turn, and a user turn naming the
first violation (:data:`REPAIR_MESSAGE`). The answers are written in the batch output line format under the
same record ids, so publish reads them as the run's last round and a conforming answer replaces the invalid
reply. The replies and the requests built from them live in S3 only, never in a log line. No Airflow here.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from bedrock_batch.collect import parse_output_line
from bedrock_batch.models import ModelFamily
from bedrock_batch.on_demand import Invoke, invoke_files
from bedrock_batch.replies import INVALID_OUTPUT, SUCCEEDED, ReplyFormat
from bedrock_batch.staging import on_demand_output_uri
from bedrock_batch.storage import Storage, join_uri

log = logging.getLogger(__name__)

#: The user turn of a repair request; ``{violation}`` is the reply's ``parse_error`` (``<path>: <reason>``).
REPAIR_MESSAGE = (
    "Your reply did not conform to the JSON Schema: {violation}. "
    "Reply again with one JSON object that conforms."
)
#: Where under the run prefix the repair requests are staged.
REPAIR_INPUT_DIR = "repair"
REPAIR_INPUT_FILE = "part-0001.jsonl"


@dataclass(frozen=True)
class InvalidReply:
    """A record to repair: the reply it got (prefill re-attached) and its first violation."""

    text: str
    violation: str


@dataclass(frozen=True)
class RepairOutcome:
    """What a repair round did.

    :param output_uri: the prefix of its output (``None`` when no record needed repair).
    :param records: the records asked again.
    :param repaired: those whose new reply conforms.
    :param still_invalid: those whose new reply does not, or whose request failed (their first reply stays).
    :param missing: invalid records whose original request was not found in the run's staged input.
    """

    output_uri: str | None
    records: int
    repaired: int
    still_invalid: int
    missing: int = 0


def invalid_replies(joined: pa.Table) -> dict[str, InvalidReply]:
    """The ``invalid_output`` records of a joined results table, by record id.

    :param joined: :func:`bedrock_batch.collect.join_results` over every round, read with the run's reply
        format (so ``text`` is the reply as written and ``parse_error`` its first violation).
    """
    rows = joined.filter(pc.equal(joined["status"], INVALID_OUTPUT)).select(
        ["record_id", "text", "parse_error"]
    )
    return {
        row["record_id"]: InvalidReply(row["text"] or "", row["parse_error"] or "")
        for row in rows.to_pylist()
        if row["record_id"] is not None
    }


def repair_requests(
    lines: Iterable[bytes], invalid: Mapping[str, InvalidReply], family: ModelFamily, reply: ReplyFormat
) -> Iterator[bytes]:
    """A repair request line for each original request line of an invalid record.

    :param lines: batch input lines ``{"recordId", "modelInput"}`` (the run's staged requests).
    :param invalid: the records to repair (see :func:`invalid_replies`).
    :param family: the model family the requests were built for.
    :param reply: the run's reply format (whether requests were prefilled).
    """
    for line in lines:
        if not line.strip():
            continue
        record = orjson.loads(line)
        record_id = record.get("recordId")
        answer = invalid.get(record_id) if isinstance(record_id, str) else None
        if answer is None:
            continue
        message = REPAIR_MESSAGE.format(violation=answer.violation)
        body = family.follow_up(record["modelInput"], answer.text, message, reply.output)
        yield orjson.dumps({"recordId": record_id, "modelInput": body}, option=orjson.OPT_APPEND_NEWLINE)


def repair_invalid(
    storage: Storage,
    run_prefix: str,
    joined: pa.Table,
    output_uri: str,
    invoke: Invoke,
    *,
    family: ModelFamily,
    reply: ReplyFormat,
    requests_per_second: float = 5.0,
    max_attempts: int = 5,
) -> RepairOutcome:
    """Ask every ``invalid_output`` record of a run again, once, on demand.

    Stages the repair requests at ``<run_prefix>/repair/part-0001.jsonl`` (from the run's first-round input,
    which holds every record's request) and invokes them with the on-demand fallback's rate limit and
    retries (:func:`~bedrock_batch.on_demand.invoke_files`) into ``<output_uri>/part-0001.jsonl.out``; an
    output that already holds one line per request is not invoked again.

    :param storage: local and S3 access.
    :param run_prefix: the run's prefix (its ``input/`` holds the original requests).
    :param joined: the run's outputs of every round joined to its record index (see :func:`invalid_replies`).
    :param output_uri: the prefix of the repair output.
    :param invoke: calls the runtime (see :func:`~bedrock_batch.on_demand.runtime_invoker`).
    :param family: the model family the requests were built for.
    :param reply: the run's reply format: the answers are validated with it.
    :param requests_per_second: client-side rate limit.
    :param max_attempts: attempts per request for throttling and transient errors.
    """
    from bedrock_batch.results import write_retry_spool

    invalid = invalid_replies(joined)
    if not invalid:
        return RepairOutcome(output_uri=None, records=0, repaired=0, still_invalid=0)
    requests_uri = join_uri(run_prefix, REPAIR_INPUT_DIR, REPAIR_INPUT_FILE)
    with tempfile.TemporaryDirectory(prefix="bedrock-batch-repair-") as work:
        originals, requests = os.path.join(work, "originals.jsonl"), os.path.join(work, REPAIR_INPUT_FILE)
        write_retry_spool(storage, [join_uri(run_prefix, "input") + "/"], list(invalid), originals)
        records = 0
        with open(originals, "rb") as lines, open(requests, "wb") as out:
            for request in repair_requests(lines, invalid, family, reply):
                out.write(request)
                records += 1
        if records:
            storage.write_file(requests, requests_uri)
    if not records:
        return RepairOutcome(None, 0, 0, len(invalid), missing=len(invalid))
    invoke_files(
        storage,
        [requests_uri],
        output_uri,
        invoke,
        requests_per_second=requests_per_second,
        max_attempts=max_attempts,
    )
    repaired = _count_repaired(storage, on_demand_output_uri(output_uri, requests_uri), family, reply)
    outcome = RepairOutcome(
        output_uri=output_uri,
        records=records,
        repaired=repaired,
        still_invalid=len(invalid) - repaired,
        missing=len(invalid) - records,
    )
    log.info(
        "repair round: %d record(s) asked again, %d repaired, %d still invalid%s",
        outcome.records,
        outcome.repaired,
        outcome.still_invalid,
        f", {outcome.missing} without their request" if outcome.missing else "",
    )
    return outcome


def _count_repaired(storage: Storage, uri: str, family: ModelFamily, reply: ReplyFormat) -> int:
    repaired: set[Any] = set()
    with storage.open_read(uri) as lines:
        for line in lines:
            if line.strip():
                record = parse_output_line(line, family, reply)
                if record.status == SUCCEEDED:
                    repaired.add(record.record_id)
    return len(repaired)
