"""The cyclic collector's pause: off inside the block, back as it was after, cycles collected, and the loops
that use it never leave it off (a generator's consumer runs with it on)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import orjson
import pytest

from bedrock_batch.collect import iter_output_batches
from bedrock_batch.config import QuotaConfig
from bedrock_batch.gc_pause import CollectorPause
from bedrock_batch.models import FAMILIES
from bedrock_batch.prepare import PrepareSettings, prepare_rows
from bedrock_batch.prompts import load_template
from bedrock_batch.record_ids import RecordIdIndex
from bedrock_batch.sources import SourceRow


class Node:
    """An object that can be put in a reference cycle and watched through a weak reference."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """A two-object cycle nothing else refers to: only the cyclic collector frees it."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    assert gc.isenabled()
    yield
    enabled = gc.isenabled()
    gc.enable()
    assert enabled, "the test left the cyclic collector off"


def test_the_collector_is_off_in_the_block_and_on_after():
    with CollectorPause():
        assert not gc.isenabled()
        watched = cycle()
    assert gc.isenabled()
    gc.collect()
    assert watched() is None


def test_a_cycle_made_in_the_block_waits_for_the_collector():
    with CollectorPause():
        watched = cycle()
        kept = [[n] for n in range(100_000)]  # enough new containers for many collections if it were on
        del kept
        assert watched() is not None
    gc.collect()
    assert watched() is None


def test_step_collects_the_cycles_made_since_the_last_one():
    with CollectorPause() as pause:
        watched = cycle()
        pause.step()
        assert watched() is None
        assert not gc.isenabled()


def test_resumed_turns_it_on_for_its_block_only():
    with CollectorPause() as pause:
        with pause.resumed():
            assert gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_exception_in_the_block_still_turns_it_back_on():
    with pytest.raises(ZeroDivisionError), CollectorPause():
        1 / 0  # noqa: B018
    assert gc.isenabled()


def test_a_pause_where_it_was_off_leaves_it_off():
    gc.disable()
    try:
        with CollectorPause() as pause:
            watched = cycle()
            pause.step()  # the caller turned it off: not even a step
            with pause.resumed():
                assert not gc.isenabled()
            assert watched() is not None
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_nested_pauses_turn_it_on_once_the_outer_one_ends():
    with CollectorPause():
        with CollectorPause():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def _lines(count: int) -> list[bytes]:
    body = {"content": [{"type": "text", "text": "fine"}], "stop_reason": "end_turn", "usage": {}}
    return [orjson.dumps({"recordId": f"r{n:05d}", "modelOutput": body}) + b"\n" for n in range(count)]


def test_output_batches_are_read_paused_and_consumed_with_the_collector_on():
    states = []

    def lines() -> Iterator[bytes]:
        for line in _lines(25):
            states.append(gc.isenabled())
            yield line

    seen = 0
    for batch in iter_output_batches(lines(), FAMILIES["anthropic"], batch_size=10):
        assert gc.isenabled()
        seen += batch.num_rows
    assert seen == 25
    assert states == [False] * 25


def test_a_consumer_that_stops_early_leaves_the_collector_on():
    batches = iter_output_batches(iter(_lines(25)), FAMILIES["anthropic"], batch_size=10)
    assert next(batches).num_rows == 10
    assert gc.isenabled()
    batches.close()
    assert gc.isenabled()


states: list[bool] = []  # whether the collector was on as prepare read each row


def _rows(count: int, fail_at: int | None = None) -> Iterator[SourceRow]:
    for n in range(count):
        if n == fail_at:
            raise OSError("the source went away")
        states.append(gc.isenabled())
        values = {"transcript": f"Agent: hello {n}"}
        yield SourceRow(f"call-{n}", values, f"day.jsonl:{n + 1}", (), None, None)


def _settings() -> PrepareSettings:
    return PrepareSettings(
        template=load_template("call_center_summary", "v1"),
        model_id="us.anthropic.claude-3-haiku-20240307-v1:0",
        quotas=QuotaConfig(),
        passthrough_types={},
    )


def test_prepare_reads_its_rows_paused_and_turns_the_collector_back_on(tmp_path):
    states.clear()
    result = prepare_rows(_rows(3000), tmp_path / "ok", _settings(), RecordIdIndex())
    assert result.records == 3000
    assert states == [False] * 3000
    with pytest.raises(OSError, match="went away"):
        prepare_rows(_rows(3000, fail_at=2500), tmp_path / "failed", _settings(), RecordIdIndex())
