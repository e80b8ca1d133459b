"""Unit tests of the status-check schedule and the shared call budget of bedrock_batch.jobs.

Pure logic, no Airflow and no services: times are plain numbers, the budget runs on a fake clock.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime

import pytest

from bedrock_batch.jobs import (
    MAX_POLL_INTERVAL,
    POLL_GROWTH,
    POLL_JITTER,
    CallBudget,
    PollSchedule,
    poll_delay,
)

HOUR = 3600.0
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC).timestamp()


def described(status: str, processed: int = 0, total: int = 0, modified: float | None = None) -> dict:
    job: dict = {"status": status, "processedRecordCount": processed, "totalRecordCount": total}
    if modified is not None:
        job["lastModifiedTime"] = datetime.fromtimestamp(modified, UTC)
    return job


class TestPollDelay:
    def test_a_young_job_is_checked_every_poll_interval(self):
        assert poll_delay(0, 60) == 60
        assert poll_delay(599, 60) == 60

    def test_the_wait_grows_with_the_time_in_the_status_up_to_the_cap(self):
        assert poll_delay(HOUR, 60) == pytest.approx(POLL_GROWTH * HOUR)
        assert (
            poll_delay(10 * HOUR, 60) == MAX_POLL_INTERVAL
        )  # queued for 10 h: every 30 min, not every minute
        assert poll_delay(100 * HOUR, 60) == MAX_POLL_INTERVAL

    def test_poll_interval_wins_over_a_shorter_cap(self):
        assert poll_delay(100 * HOUR, 1800, max_interval=900) == 1800

    def test_jitter_only_lengthens_and_is_bounded(self):
        draws = [i / 100 for i in range(100)]
        for in_status in (0, HOUR, 100 * HOUR):
            base = poll_delay(in_status, 60)
            delays = [poll_delay(in_status, 60, draw=draw) for draw in draws]
            assert min(delays) == base >= 60
            assert max(delays) < base * (1 + POLL_JITTER)
            assert len(set(delays)) == len(draws)  # waits created together drift apart

    def test_a_predicted_end_shortens_the_wait_but_never_below_poll_interval(self):
        assert poll_delay(10 * HOUR, 60, expected_end_in=120) == 120
        assert poll_delay(10 * HOUR, 60, expected_end_in=5) == 60
        assert poll_delay(0, 60, expected_end_in=HOUR) == 60  # a far prediction lengthens nothing

    def test_never_sleeps_past_the_deadline(self):
        assert poll_delay(10 * HOUR, 60, deadline_in=30, draw=0.9) == 30
        assert poll_delay(10 * HOUR, 60, deadline_in=-5) == 0

    @pytest.mark.parametrize(("poll_interval", "draw"), [(0, 0.0), (-1, 0.0), (60, 1.0), (60, -0.1)])
    def test_rejects_invalid_arguments(self, poll_interval, draw):
        with pytest.raises(ValueError, match="must be"):
            poll_delay(0, poll_interval, draw=draw)


def simulate(phases: list[tuple[str, float]], poll_interval: float = 60.0, draw: float = 0.0) -> dict:
    """Wait for a job that goes through ``phases`` (status, seconds) and then ends; count the checks.

    Returns the checks made and how long after the job's end the waiter noticed it.
    """
    ends, elapsed = [], 0.0
    for _, seconds in phases:
        elapsed += seconds
        ends.append(elapsed)

    def status_at(t: float) -> str:
        for (status, _), end in zip(phases, ends, strict=True):
            if t < end:
                return status
        return "Completed"

    schedule = PollSchedule(poll_interval)
    t, checks = 0.0, 0
    while True:
        checks += 1
        status = status_at(t)
        if status == "Completed":
            return {"checks": checks, "latency": t - ends[-1], "hours": ends[-1] / HOUR}
        schedule.observe(described(status, modified=T0), T0 + t)
        t += schedule.next_delay(T0 + t, draw=draw)


class TestPollSchedule:
    def test_first_description_dates_the_status_from_the_job(self):
        # A waiter rebuilt after a triggerer restart keeps the long waits of a job queued for 10 h.
        schedule = PollSchedule(60)
        schedule.observe(described("Scheduled", modified=T0), T0 + 10 * HOUR)
        assert schedule.next_delay(T0 + 10 * HOUR) == MAX_POLL_INTERVAL

    def test_without_timestamps_the_status_starts_when_first_seen(self):
        schedule = PollSchedule(60)
        schedule.observe({"status": "Submitted"}, T0)
        assert schedule.next_delay(T0) == 60
        assert schedule.next_delay(T0 + HOUR) == pytest.approx(POLL_GROWTH * HOUR)

    def test_a_new_status_starts_the_clock_over(self):
        schedule = PollSchedule(60)
        schedule.observe(described("Scheduled", modified=T0), T0 + 10 * HOUR)
        schedule.observe(described("InProgress", 0, 1000, modified=T0), T0 + 10 * HOUR + 900)
        assert schedule.next_delay(T0 + 10 * HOUR + 900) == 60

    def test_growing_counts_predict_the_end_and_shorten_the_wait(self):
        schedule = PollSchedule(60)
        start = T0 + 5 * HOUR
        schedule.observe(described("InProgress"), start)
        schedule.observe(described("InProgress", 1_000, 10_000), start + 1000)
        assert schedule.next_delay(start + 1000) == 100  # no rate yet: the growth rule (0.1 x 1000 s)
        schedule.observe(described("InProgress", 2_000, 10_000), start + 2000)  # 1 record/s: 8,000 s left
        assert schedule.next_delay(start + 2000) == 200  # the end is further away than the growth rule
        schedule.observe(described("InProgress", 9_900, 10_000), start + 9900)  # 100 s left
        assert schedule.next_delay(start + 9900) == 100
        # The prediction has passed and the counts stand still: the job is late, the wait grows again.
        schedule.observe(described("InProgress", 9_900, 10_000), start + 10_200)
        assert schedule.next_delay(start + 10_200) == pytest.approx(1020)

    def test_unchanged_counts_do_not_shorten_the_wait(self):
        schedule = PollSchedule(60)
        schedule.observe(described("InProgress", 500, 10_000, modified=T0), T0 + 20 * HOUR)
        for t in range(1, 5):
            schedule.observe(described("InProgress", 500, 10_000), T0 + 20 * HOUR + t * 1800)
            assert schedule.next_delay(T0 + 20 * HOUR + t * 1800) == MAX_POLL_INTERVAL

    def test_deadline_caps_the_wait(self):
        schedule = PollSchedule(60)
        schedule.observe(described("Scheduled", modified=T0), T0 + 10 * HOUR)
        assert schedule.next_delay(T0 + 10 * HOUR, deadline=T0 + 10 * HOUR + 42, draw=0.99) == 42

    @pytest.mark.parametrize(
        "phases",
        [
            [("Submitted", 60), ("Validating", 600), ("Scheduled", 20 * HOUR), ("InProgress", 3 * HOUR)],
            [("Submitted", 30), ("Scheduled", 160 * HOUR), ("InProgress", 7 * HOUR)],
            [("Validating", 300), ("InProgress", 1200)],
        ],
    )
    def test_long_jobs_cost_few_checks_and_little_latency(self, phases):
        fixed = sum(seconds for _, seconds in phases) / 60
        for draw in (0.0, 0.99):
            waited = simulate(phases, draw=draw)
            # The added latency is a small part of the last phase, and never beyond the cap plus jitter.
            last_phase = phases[-1][1]
            bound = min(POLL_GROWTH * last_phase, MAX_POLL_INTERVAL) * (1 + POLL_JITTER)
            assert waited["latency"] <= max(bound, 60 * (1 + POLL_JITTER))
            if waited["hours"] >= 24:
                assert (
                    waited["checks"] / waited["hours"] < 6
                )  # checks per job-hour, against 60 at a fixed 60 s
                assert waited["checks"] < fixed / 10


class TestCallBudget:
    def test_turns_are_spaced_by_the_rate(self):
        now = [100.0]
        budget = CallBudget(2.0, clock=lambda: now[0])
        assert [budget.reserve() for _ in range(5)] == [0.0, 0.5, 1.0, 1.5, 2.0]

    def test_a_thousand_waiters_asking_at_once_never_exceed_the_rate(self):
        now = [0.0]
        budget = CallBudget(2.0, clock=lambda: now[0])
        turns = sorted(budget.reserve() for _ in range(1000))
        assert turns[-1] == pytest.approx(499.5)  # everyone is served, in order
        for start in turns:  # any one-second window holds at most two turns
            assert sum(start <= t < start + 1.0 for t in turns) <= 2

    def test_quiet_time_is_not_saved_up_beyond_the_burst(self):
        now = [0.0]
        budget = CallBudget(2.0, burst=3, clock=lambda: now[0])
        budget.reserve()
        now[0] = 3600.0
        assert [budget.reserve() for _ in range(5)] == [0.0, 0.0, 0.0, 0.5, 1.0]

    def test_zero_means_no_limit(self):
        budget = CallBudget(0)
        assert [budget.reserve() for _ in range(100)] == [0.0] * 100

    def test_rejects_an_empty_burst(self):
        with pytest.raises(ValueError, match="burst"):
            CallBudget(1.0, burst=0)

    def test_waiters_a_blocked_loop_held_up_do_not_call_in_one_burst(self):
        # A trigger that blocks the triggerer's loop for half a second holds up every waiter whose turn falls
        # in it; when the loop runs again they take new turns instead of all calling at once.
        budget = CallBudget(20.0)

        async def main() -> list[float]:
            async def one() -> float:
                await budget.acquire()
                return time.monotonic()

            async def block() -> None:
                await asyncio.sleep(0.12)
                time.sleep(0.5)  # the blocking call under test

            waiters = [asyncio.create_task(one()) for _ in range(20)]
            await block()
            return sorted(await asyncio.gather(*waiters))

        times = asyncio.run(main())
        assert len(times) == 20
        # Turns 50 ms apart, each taken within half a turn: a quarter second holds at most 1 + 5.5 calls.
        busiest = max(sum(t <= u < t + 0.25 for u in times) for t in times)
        assert busiest <= 6, f"{busiest} calls within 0.25 s after the loop was blocked"

    def test_concurrent_acquires_are_paced_in_real_time(self):
        budget = CallBudget(100.0)

        async def main() -> list[float]:
            async def one() -> float:
                await budget.acquire()
                return time.monotonic()

            return sorted(await asyncio.gather(*(one() for _ in range(30))))

        started = time.monotonic()
        times = asyncio.run(main())
        # 30 calls at 100/s: the last goes about 0.29 s after the first, none early.
        assert times[-1] - started >= 0.28
        assert all(b - a > 0.005 for a, b in itertools.pairwise(times))
