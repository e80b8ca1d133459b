"""BedrockBatchJobTrigger run as the triggerer runs it (its async generator) against the Bedrock emulator.

Also checks that serialize() round-trips, since the triggerer rebuilds the trigger from it, and that the
triggers of one event loop share one client and one budget of status calls, as in one triggerer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pytest
from airflow.sdk.module_loading import import_string
from botocore.exceptions import ClientError

from bedrock_batch.hooks import BedrockBatchHook
from bedrock_batch.triggers import BedrockBatchJobTrigger
from tests.integration.bedrock_shards import MODEL_ID, ROLE_ARN, stack, write_shard

__all__ = ["stack"]  # the fixture, imported so pytest finds it here

pytestmark = pytest.mark.integration

NO_RETRIES = {"retries": {"total_max_attempts": 1}}


def submit(stack: Any, name: str, records: int = 150) -> str:
    shard = write_shard(stack.client("s3"), records=records)
    return BedrockBatchHook(aws_conn_id="aws_default").create_job(
        job_name=name,
        role_arn=ROLE_ARN,
        model_id=MODEL_ID,
        input_s3_uri=shard["input_uri"],
        output_s3_uri=shard["output_uri"],
        client_request_token=f"bb{name.replace('-', '')}",
    )


def run_trigger(trigger: BedrockBatchJobTrigger, timeout: float = 60) -> list[dict[str, Any]]:
    """Every event the trigger yields before its generator ends."""

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout))


def trigger_for(job_arn: str, **kwargs: Any) -> BedrockBatchJobTrigger:
    kwargs.setdefault("poll_interval", 0.05)
    return BedrockBatchJobTrigger(job_arn=job_arn, **kwargs)


def run_together(
    triggers: Iterable[BedrockBatchJobTrigger], seconds: float = 60
) -> list[list[dict[str, Any]]]:
    """Run the triggers concurrently in one event loop, as one triggerer does, for at most ``seconds``.

    Returns each trigger's events; triggers still waiting after ``seconds`` are cancelled (a triggerer
    shutting down) and return what they yielded so far.
    """

    async def collect(trigger: BedrockBatchJobTrigger, into: list[dict[str, Any]]) -> None:
        async for event in trigger.run():
            into.append(event.payload)

    async def main() -> list[list[dict[str, Any]]]:
        events: list[list[dict[str, Any]]] = []
        tasks = []
        for trigger in triggers:
            events.append([])
            tasks.append(asyncio.create_task(collect(trigger, events[-1])))
        _, pending = await asyncio.wait(tasks, timeout=seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return events

    return asyncio.run(main())


class ClientCount:
    """Counts the aiobotocore clients the hook opens and closes; may expire the first one's credentials."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, expire_first: bool = False) -> None:
        self.opened = self.closed = self.expired_calls = 0
        self.expire_first = expire_first
        original = BedrockBatchHook.get_async_conn

        async def get_async_conn(hook: BedrockBatchHook) -> Any:
            self.opened += 1
            return _CountedClient(await original(hook), self, expired=expire_first and self.opened == 1)

        monkeypatch.setattr(BedrockBatchHook, "get_async_conn", get_async_conn)


class SendTimes:
    """Monotonic times at which the hook's async clients sent GetModelInvocationJob requests."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.times: list[float] = []
        original = BedrockBatchHook.get_async_conn

        async def get_async_conn(hook: BedrockBatchHook) -> Any:
            return _SendTimed(await original(hook), self.times)

        monkeypatch.setattr(BedrockBatchHook, "get_async_conn", get_async_conn)


class _SendTimed:
    def __init__(self, context: Any, times: list[float]) -> None:
        self._context, self._times = context, times

    async def __aenter__(self) -> Any:
        client = await self._context.__aenter__()
        client.meta.events.register(
            "before-send.bedrock.GetModelInvocationJob", lambda **_: self._times.append(time.monotonic())
        )
        return client

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._context.__aexit__(exc_type, exc, tb)


class _CountedClient:
    def __init__(self, context: Any, count: ClientCount, expired: bool) -> None:
        self._context, self._count, self._expired = context, count, expired

    async def __aenter__(self) -> Any:
        client = await self._context.__aenter__()
        return _ExpiredClient(self._count) if self._expired else client

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._count.closed += 1
        await self._context.__aexit__(exc_type, exc, tb)


class _ExpiredClient:
    """A client whose temporary credentials ran out: every call fails as AWS answers then."""

    def __init__(self, count: ClientCount) -> None:
        self._count = count

    async def get_model_invocation_job(self, **params: Any) -> Any:
        self._count.expired_calls += 1
        await asyncio.sleep(0.01)  # other triggers call the same client meanwhile
        error = {
            "Code": "ExpiredTokenException",
            "Message": "The security token included in the request is expired",
        }
        raise ClientError({"Error": error}, "GetModelInvocationJob")


def get_calls(stack: Any, job_arns: Iterable[str]) -> list[float]:
    """POSIX times of the GetModelInvocationJob calls the emulator answered for ``job_arns``."""
    arns = set(job_arns)
    return sorted(
        datetime.fromisoformat(r["time"]).timestamp()
        for r in stack.admin.requests("GetModelInvocationJob")
        if r["params"].get("jobIdentifier") in arns
    )


class TestBedrockBatchJobTrigger:
    def test_serialize_round_trips(self):
        trigger = BedrockBatchJobTrigger(
            job_arn="arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456",
            poll_interval=30,
            strict=True,
            timeout=3600,
            margin_seconds=120,
            stop_on_kill=False,
            aws_conn_id="aws_prod",
            region_name="eu-west-1",
            verify=False,
            botocore_config={"retries": {"mode": "adaptive"}},
        )
        classpath, kwargs = trigger.serialize()
        assert classpath == "bedrock_batch.triggers.BedrockBatchJobTrigger"
        # The triggerer stores the kwargs as JSON and rebuilds the trigger from them, maybe much later.
        rebuilt = import_string(classpath)(**json.loads(json.dumps(kwargs)))
        assert rebuilt.serialize() == (classpath, kwargs)
        # The timeout became an absolute deadline: a triggerer restart does not restart the clock.
        deadline = datetime.fromisoformat(kwargs["deadline"])
        assert 3500 < (deadline - datetime.now(UTC)).total_seconds() <= 3600

    def test_completed_job_yields_exactly_one_success_event(self, stack):
        arn = submit(stack, "trig-done-a1")
        events = run_trigger(trigger_for(arn))
        assert len(events) == 1
        event = events[0]
        assert event["status"] == "success"
        assert event["job_arn"] == arn
        assert event["job_id"] == arn.rsplit("/", 1)[-1]
        assert event["job_status"] == "Completed"
        assert event["outcome"] == "success"
        assert event["total_records"] == event["success_records"] == 150
        assert event["error_records"] == 0
        assert event["output_s3_uri"].endswith("/output/")
        json.dumps(event)  # events are stored in the metadata database as JSON

    def test_failed_job_yields_error_event_with_the_job_message(self, stack):
        stack.admin.set_faults(fail_jobs_matching="^trig-fail")
        arn = submit(stack, "trig-fail-a1")
        (event,) = run_trigger(trigger_for(arn))
        assert event["status"] == "error"
        assert event["job_status"] == "Failed"
        assert (event["reason"], event["outcome"]) == ("ended", "failed")
        service_message = stack.admin.job(arn)["message"]
        assert service_message
        assert event["message"] == service_message

    def test_partially_completed_is_salvage_unless_strict(self, stack):
        stack.admin.set_faults(partial_jobs_matching="^trig-partial", partial_fraction=0.4)
        arn = submit(stack, "trig-partial-a1")
        (event,) = run_trigger(trigger_for(arn))
        assert (event["status"], event["job_status"], event["outcome"]) == (
            "success",
            "PartiallyCompleted",
            "salvage",
        )
        assert 0 < event["processed_records"] < event["total_records"] == 150
        (strict,) = run_trigger(trigger_for(arn, strict=True))
        assert strict["status"] == "error"

    def test_throttling_is_retried_not_fatal(self, stack):
        arn = submit(stack, "trig-throttle-a1")
        stack.admin.set_faults(throttle_rate=0.6, seed=7)
        (event,) = run_trigger(trigger_for(arn, botocore_config=NO_RETRIES))
        assert event["status"] == "success"
        throttled = [r for r in stack.admin.requests("GetModelInvocationJob") if r.get("error")]
        assert throttled, "the fault injection did not reach the trigger"

    def test_unknown_job_is_an_api_error_event(self, stack):
        (event,) = run_trigger(
            trigger_for("arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/zzzzzzzzzzzz")
        )
        assert (event["status"], event["reason"]) == ("error", "api_error")
        assert "ResourceNotFoundException" in event["message"]

    def test_deadline_yields_timeout_error_event(self, stack):
        stack.admin.set_time_scale(0.001)  # the job stays Submitted
        arn = submit(stack, "trig-slow-a1")
        (event,) = run_trigger(trigger_for(arn, timeout=0.3))
        assert (event["status"], event["reason"], event["job_status"]) == ("error", "timeout", "Submitted")

    def test_logs_one_line_per_change_without_contents(self, stack, capfd):
        arn = submit(stack, "trig-log-a1")
        run_trigger(trigger_for(arn))
        job_id = arn.rsplit("/", 1)[-1]
        # Airflow routes trigger logs through structlog to the console, not through stdlib logging.
        output = capfd.readouterr().out.splitlines()
        lines = [line for line in output if "bedrock_batch.triggers" in line and f"job {job_id}" in line]
        progress = [line.split(f"job {job_id} ", 1)[1].split(" [", 1)[0].strip() for line in lines]
        assert progress, "the trigger logged no progress"
        assert progress[-1] == "Completed 150/150 records"
        assert len(progress) == len(set(progress)), "a state was logged twice"
        assert not any("Summarize call" in line for line in output if "bedrock_batch.triggers" in line)

    def test_on_kill_leaves_the_job_running_unless_the_task_was_marked_failed(self, stack):
        # Outside a triggerer the task's state cannot be read: like a clear, a restart or a move to another
        # triggerer, that never stops the job. (Marked failed → stopped is proven on a running Airflow, in
        # tests/deployment.)
        stack.admin.set_time_scale(0.001)
        arn = submit(stack, "trig-kill-a1")
        asyncio.run(trigger_for(arn).on_kill())
        assert stack.admin.job(arn)["status"] == "Submitted"
        assert "StopModelInvocationJob" not in {r["operation"] for r in stack.admin.requests()}


class TestWaitingAtScale:
    """What a triggerer running many waits at once relies on: one client, one call budget, fair deadlines."""

    def test_triggers_of_one_loop_share_one_client_per_connection(self, stack, monkeypatch):
        clients = ClientCount(monkeypatch)
        arns = [submit(stack, f"trig-share-{n}-a1") for n in range(3)]
        other = submit(stack, "trig-share-other-a1")
        events = run_together(
            [*(trigger_for(arn) for arn in arns), trigger_for(other, botocore_config=NO_RETRIES)]
        )
        assert [[(e["job_arn"], e["job_status"]) for e in got] for got in events] == [
            [(arn, "Completed")] for arn in [*arns, other]
        ]
        # Three triggers with the same parameters share one client; other botocore settings get their own.
        assert clients.opened == 2
        assert clients.closed == 2, "a client was left open after its last trigger ended"

    def test_triggers_in_separate_loops_do_not_share(self, stack, monkeypatch):
        # aiobotocore clients belong to their event loop: two loops (two dag.test() deferrals) open two.
        clients = ClientCount(monkeypatch)
        for n in range(2):
            (event,) = run_trigger(trigger_for(submit(stack, f"trig-loop-{n}-a1")))
            assert event["job_status"] == "Completed"
        assert (clients.opened, clients.closed) == (2, 2)

    def test_expired_credentials_reconnect_once_for_all_triggers(self, stack, monkeypatch, capfd):
        monkeypatch.setenv("AIRFLOW__BEDROCK_BATCH__STATUS_CALLS_PER_SECOND", "0")  # all call at once
        clients = ClientCount(monkeypatch, expire_first=True)
        arns = [submit(stack, f"trig-expired-{n}-a1") for n in range(4)]
        events = run_together(trigger_for(arn) for arn in arns)
        assert [[e["job_status"] for e in got] for got in events] == [["Completed"]] * 4
        # All four hit the expired client; one new client serves them all, and the expired one is closed.
        assert clients.expired_calls == 4
        assert clients.opened == 2
        assert clients.closed == 2
        assert "Credentials expired while waiting for job" in capfd.readouterr().out

    def test_many_triggers_stay_within_the_call_budget(self, stack, monkeypatch):
        monkeypatch.setenv("AIRFLOW__BEDROCK_BATCH__STATUS_CALLS_PER_SECOND", "5")
        sent = SendTimes(monkeypatch)
        stack.admin.set_time_scale(0.001)  # every job stays Submitted
        arns = [submit(stack, f"trig-budget-{n}-a1") for n in range(10)]
        # Ten waits polling every 50 ms would make 200 calls a second; the budget allows 5.
        started = time.time()
        events = run_together((trigger_for(arn) for arn in arns), seconds=3.0)
        window = time.time() - started
        assert events == [[]] * 10, "a job that cannot end yielded an event"
        calls = get_calls(stack, arns)
        assert len(calls) <= 5 * window + 1
        assert len(calls) >= 5 * (window - 1.5), "the triggers did not poll at the budget's rate"
        assert len(sent.times) == len(calls)
        # When the client sent them (the server's arrival times also carry the machine's scheduling delays):
        # the rate, the one call a quiet spell allows at once, and half a turn a late waiter may still take.
        busiest = max(sum(t <= c < t + 1.0 for c in sent.times) for t in sent.times)
        assert busiest <= 6
        polled = {r["params"]["jobIdentifier"] for r in stack.admin.requests("GetModelInvocationJob")}
        assert polled == set(arns), "a trigger starved"

    def test_a_long_poll_interval_never_waits_past_the_deadline(self, stack):
        stack.admin.set_time_scale(0.001)  # the job stays Submitted
        arn = submit(stack, "trig-deadline-a1")
        trigger = trigger_for(arn, poll_interval=600, timeout=1.0)
        deadline = datetime.fromisoformat(str(trigger.deadline)).timestamp()
        started = time.monotonic()
        (event,) = run_trigger(trigger, timeout=30)
        assert (event["status"], event["reason"], event["job_status"]) == ("error", "timeout", "Submitted")
        assert time.monotonic() - started < 10
        # One check at the start, the last one at the deadline itself, not a poll interval before it.
        calls = get_calls(stack, [arn])
        assert len(calls) == 2
        assert deadline - 0.05 <= calls[-1] <= deadline + 5
