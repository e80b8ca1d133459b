"""The repair round: every invalid_output record asked again once, its answers in the batch output format."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from bedrock_batch.collect import join_results
from bedrock_batch.models import FAMILIES, InferenceParams
from bedrock_batch.repair import REPAIR_MESSAGE, RepairOutcome, invalid_replies, repair_invalid
from bedrock_batch.replies import ReplyFormat
from bedrock_batch.results import read_output_batches
from bedrock_batch.staging import REPAIR_LABEL, run_outputs
from bedrock_batch.storage import Storage
from tests.unit.review_schema import REVIEW
from tests.unit.test_collect import index_table

ANTHROPIC = FAMILIES["anthropic"]
CLAUDE_3 = "anthropic.claude-3-haiku-20240307-v1:0"
SECRET = "SECRET-REVIEW-TEXT"
REPLY = ReplyFormat.declare(REVIEW, model_id=CLAUDE_3, family=ANTHROPIC, default_name="review")


def answer(text: str) -> dict[str, Any]:
    return {
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 9},
    }


class FakeRuntime:
    """Answers each request by the record it is about: conforming for ``fixed``, not for the others."""

    def __init__(self, fixed: set[str]) -> None:
        self.fixed = fixed
        self.requests: list[Mapping[str, Any]] = []

    def __call__(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        self.requests.append(body)
        first_turn = body["messages"][0]["content"][0]["text"]
        record = first_turn.split()[-1]
        if record in self.fixed:
            return answer('"sentiment": "positive", "stars": 5}')
        return answer('"sentiment": "positive", "stars": 50}')


def stage_run(tmp_path: Path, records: list[str]) -> str:
    """A run prefix whose first-round input holds one request per record, in a shard and on demand."""
    run_prefix = tmp_path / "staging" / "dag" / "2026-11-20"
    for folder, ids in (("shard-0001", records[:2]), ("on-demand", records[2:])):
        path = run_prefix / "input" / folder / "part-0001.jsonl"
        path.parent.mkdir(parents=True)
        lines = [
            orjson.dumps(
                {
                    "recordId": rid,
                    "modelInput": ANTHROPIC.build_request(
                        REPLY.instructions, f"{SECRET} {rid}", InferenceParams(), REPLY.output
                    ),
                }
            )
            for rid in ids
        ]
        path.write_bytes(b"\n".join(lines) + b"\n")
    return str(run_prefix)


def first_round(tmp_path: Path, replies: dict[str, str]) -> str:
    """A job output folder holding one reply per record."""
    folder = tmp_path / "output" / "job"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        orjson.dumps({"recordId": rid, "modelInput": {}, "modelOutput": answer(text)})
        for rid, text in replies.items()
    ]
    (folder / "part-0001.jsonl.out").write_bytes(b"\n".join(lines) + b"\n")
    return str(folder) + "/"


RECORDS = ["rec00000001", "rec00000002", "rec00000003"]
FIRST_ROUND = {
    "rec00000001": '"sentiment": "positive", "stars": 9}',  # breaks the maximum
    "rec00000002": '"sentiment": "positive", "stars": 4}',  # conforms
    "rec00000003": "Sure! Five stars.",  # not JSON
}


def joined_round(tmp_path: Path, repair: Mapping[str, Any] | None = None) -> pa.Table:
    jobs = [
        {
            "job_arn": "arn:aws:bedrock:us-east-1:1:model-invocation-job/job",
            "output_uri": first_round(tmp_path, FIRST_ROUND),
        }
    ]
    outputs = run_outputs(jobs, None, repair=repair)
    return join_results(index_table(RECORDS), read_output_batches(Storage(), outputs, ANTHROPIC, REPLY))


class TestRepairInvalid:
    def test_every_invalid_record_is_asked_once_with_its_violation(self, tmp_path, caplog):
        run_prefix = stage_run(tmp_path, RECORDS)
        joined = joined_round(tmp_path)
        assert sorted(invalid_replies(joined)) == ["rec00000001", "rec00000003"]
        runtime = FakeRuntime(fixed={"rec00000001"})
        out = str(tmp_path / "repair-output") + "/"
        with caplog.at_level(logging.DEBUG):
            outcome = repair_invalid(
                Storage(),
                run_prefix,
                joined,
                out,
                runtime,
                family=ANTHROPIC,
                reply=REPLY,
                requests_per_second=0,
            )
        assert outcome == RepairOutcome(output_uri=out, records=2, repaired=1, still_invalid=1)
        [first] = [r for r in runtime.requests if r["messages"][0]["content"][0]["text"].endswith("0001")]
        assert [m["role"] for m in first["messages"]] == ["user", "assistant", "user", "assistant"]
        assert first["messages"][1]["content"][0]["text"] == '{"sentiment": "positive", "stars": 9}'
        assert first["messages"][2]["content"][0]["text"] == REPAIR_MESSAGE.format(
            violation="$.stars: is 9, above the maximum 5"
        )
        assert first["messages"][3]["content"][0]["text"] == "{"
        # Nothing of a prompt or a reply reaches the log.
        assert SECRET not in caplog.text
        assert "stars" not in caplog.text

    def test_publish_reads_the_repair_as_the_last_round(self, tmp_path):
        run_prefix = stage_run(tmp_path, RECORDS)
        out = str(tmp_path / "repair-output") + "/"
        repair_invalid(
            Storage(),
            run_prefix,
            joined_round(tmp_path),
            out,
            FakeRuntime(fixed={"rec00000001"}),
            family=ANTHROPIC,
            reply=REPLY,
            requests_per_second=0,
        )
        rows = {r["record_id"]: r for r in joined_round(tmp_path, repair={"output_uri": out}).to_pylist()}
        assert len(rows) == 3
        assert (rows["rec00000001"]["status"], rows["rec00000001"]["job_arn"]) == ("succeeded", REPAIR_LABEL)
        assert orjson.loads(rows["rec00000001"]["text"]) == {"sentiment": "positive", "stars": 5}
        assert rows["rec00000002"]["status"] == "succeeded"
        # Still invalid: the repair's answer, with its own violation, replaces the first one.
        assert (rows["rec00000003"]["status"], rows["rec00000003"]["parse_error"]) == (
            "invalid_output",
            "$.stars: is 50, above the maximum 5",
        )

    def test_a_rerun_with_complete_output_invokes_nothing(self, tmp_path):
        run_prefix = stage_run(tmp_path, RECORDS)
        joined = joined_round(tmp_path)
        out = str(tmp_path / "repair-output") + "/"
        options: dict[str, Any] = {"family": ANTHROPIC, "reply": REPLY, "requests_per_second": 0}
        repair_invalid(Storage(), run_prefix, joined, out, FakeRuntime(set()), **options)
        again = FakeRuntime({"rec00000001", "rec00000003"})
        outcome = repair_invalid(Storage(), run_prefix, joined, out, again, **options)
        assert again.requests == []
        assert (outcome.records, outcome.repaired, outcome.still_invalid) == (2, 0, 2)

    def test_nothing_to_repair(self, tmp_path):
        joined = join_results(index_table(["a"]), [])
        outcome = repair_invalid(
            Storage(),
            str(tmp_path),
            joined,
            str(tmp_path / "out"),
            FakeRuntime(set()),
            family=ANTHROPIC,
            reply=REPLY,
        )
        assert outcome == RepairOutcome(None, 0, 0, 0)
        assert not (tmp_path / "out").exists()

    def test_invalid_records_without_their_request_are_counted(self, tmp_path):
        run_prefix = stage_run(tmp_path, RECORDS[1:2])  # only the conforming record's request is staged
        outcome = repair_invalid(
            Storage(),
            run_prefix,
            joined_round(tmp_path),
            str(tmp_path / "out"),
            FakeRuntime(set()),
            family=ANTHROPIC,
            reply=REPLY,
        )
        assert outcome == RepairOutcome(None, 0, 0, 2, missing=2)
