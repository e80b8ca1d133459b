"""On-demand fallback: batch-output-format lines, retries of transient errors, rate limiting, staged files."""

from __future__ import annotations

import orjson
import pytest

from bedrock_batch.on_demand import InvocationError, OnDemandStats, RateLimiter, invoke_files, invoke_records
from bedrock_batch.storage import Storage


def lines(n: int) -> list[bytes]:
    return [
        orjson.dumps({"recordId": f"REC{i:08d}", "modelInput": {"prompt": f"p{i}"}}) + b"\n" for i in range(n)
    ]


class ScriptedRuntime:
    """Stands in for the remote runtime: answers each record per a script of failures."""

    def __init__(self, failures: dict[str, list[str]] | None = None) -> None:
        self.failures = failures or {}
        self.calls: list[str] = []

    def __call__(self, body):
        prompt = body["prompt"]
        self.calls.append(prompt)
        pending = self.failures.get(prompt)
        if pending:
            raise InvocationError(pending.pop(0), "scripted failure")
        return {"generation": f"answer to {prompt}", "prompt_token_count": 3, "generation_token_count": 4}


class TestInvokeRecords:
    def test_success_lines_have_batch_output_shape(self):
        out = [orjson.loads(x) for x in invoke_records(lines(3), ScriptedRuntime(), requests_per_second=0)]
        assert [o["recordId"] for o in out] == ["REC00000000", "REC00000001", "REC00000002"]
        assert out[1]["modelOutput"]["generation"] == "answer to p1"
        assert out[1]["modelInput"] == {"prompt": "p1"}
        assert all("error" not in o for o in out)

    def test_throttling_is_retried_until_success(self):
        runtime = ScriptedRuntime({"p0": ["ThrottlingException", "ServiceUnavailableException"]})
        stats = OnDemandStats()
        out = [
            orjson.loads(x)
            for x in invoke_records(lines(1), runtime, requests_per_second=0, backoff_seconds=0, stats=stats)
        ]
        assert "modelOutput" in out[0]
        assert runtime.calls == ["p0", "p0", "p0"]
        assert (stats.records, stats.succeeded, stats.failed, stats.retries) == (1, 1, 0, 2)
        assert stats.throttled == 1  # the 503 was retried but not throttled

    def test_validation_error_is_not_retried_and_keeps_its_code(self):
        runtime = ScriptedRuntime({"p1": ["ValidationException"]})
        out = [orjson.loads(x) for x in invoke_records(lines(2), runtime, requests_per_second=0)]
        assert out[1]["error"] == {"errorCode": 400, "errorMessage": "scripted failure"}
        assert runtime.calls == ["p0", "p1"]

    def test_retries_give_up_after_max_attempts_with_429(self):
        runtime = ScriptedRuntime({"p0": ["ThrottlingException"] * 10})
        stats = OnDemandStats()
        out = [
            orjson.loads(x)
            for x in invoke_records(
                lines(1), runtime, requests_per_second=0, max_attempts=3, backoff_seconds=0, stats=stats
            )
        ]
        assert out[0]["error"]["errorCode"] == 429
        assert len(runtime.calls) == 3
        assert stats.throttled == 3

    def test_blank_lines_are_ignored(self):
        out = list(invoke_records([b"\n", *lines(1), b"  \n"], ScriptedRuntime(), requests_per_second=0))
        assert len(out) == 1


class TestRateLimiter:
    def test_spaces_calls_by_interval(self, monkeypatch: pytest.MonkeyPatch):
        now = [100.0]
        slept: list[float] = []
        monkeypatch.setattr("bedrock_batch.on_demand.time.sleep", slept.append)
        limiter = RateLimiter(4.0, clock=lambda: now[0])
        limiter.wait()
        limiter.wait()
        now[0] += 0.1
        limiter.wait()
        assert slept == pytest.approx([0.25, 0.4])


class TestInvokeFiles:
    def staged(self, tmp_path, *counts: int) -> list[str]:
        uris = []
        for number, count in enumerate(counts, start=1):
            path = tmp_path / "input" / f"part-{number:04d}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"".join(lines(count)))
            uris.append(str(path))
        return uris

    def test_writes_one_output_file_per_input_file(self, tmp_path):
        uris = self.staged(tmp_path, 3, 2)
        runtime = ScriptedRuntime()
        stats = invoke_files(Storage(), uris, str(tmp_path / "out"), runtime, requests_per_second=0)
        assert (stats.records, stats.succeeded, stats.reused) == (5, 5, 0)
        outputs = sorted(p.name for p in (tmp_path / "out").iterdir())
        assert outputs == ["part-0001.jsonl.out", "part-0002.jsonl.out"]
        second = [
            orjson.loads(x) for x in (tmp_path / "out" / "part-0002.jsonl.out").read_bytes().splitlines()
        ]
        assert [o["recordId"] for o in second] == ["REC00000000", "REC00000001"]

    def test_a_rerun_does_not_invoke_files_whose_output_is_complete(self, tmp_path):
        uris = self.staged(tmp_path, 3, 2)
        invoke_files(Storage(), uris, str(tmp_path / "out"), ScriptedRuntime(), requests_per_second=0)
        # The second file's output lost a line: only that file is invoked again.
        second = tmp_path / "out" / "part-0002.jsonl.out"
        second.write_bytes(second.read_bytes().splitlines(keepends=True)[0])
        runtime = ScriptedRuntime()
        stats = invoke_files(Storage(), uris, str(tmp_path / "out"), runtime, requests_per_second=0)
        assert (stats.records, stats.reused, runtime.calls) == (2, 3, ["p0", "p1"])
        assert len(second.read_bytes().splitlines()) == 2
