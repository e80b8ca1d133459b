"""Job slots against moto's real S3 server: conditional writes decide who gets a slot."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import orjson
import pytest

from bedrock_batch.errors import ConfigError
from bedrock_batch.slots import JobSlots

pytestmark = pytest.mark.integration

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture
def s3(s3_client: Any) -> Any:
    return s3_client


@pytest.fixture
def slots_uri(s3: Any) -> str:
    bucket = f"slots-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/team/_job_slots/"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_at_most_capacity_claims_when_many_tasks_claim_at_once(s3, slots_uri):
    slots = JobSlots(s3, slots_uri, MODEL, 3)
    barrier = threading.Barrier(12)
    leases: list[Any] = []
    errors: list[BaseException] = []

    def claim(number: int) -> None:
        barrier.wait()
        try:
            lease = slots.acquire(f"job-{number}", active_job_names=())
        except BaseException as error:  # surfaced below: a thread must not swallow it
            errors.append(error)
            return
        if lease is not None:
            leases.append(lease)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(leases) == 3
    assert len({lease.key for lease in leases}) == 3
    held = {
        orjson.loads(s3.get_object(Bucket=lease.bucket, Key=lease.key)["Body"].read())["job_name"]
        for lease in leases
    }
    assert held == {lease.job_name for lease in leases}


def test_a_retried_task_gets_its_own_slot_back(s3, slots_uri):
    slots = JobSlots(s3, slots_uri, MODEL, 2)
    first = slots.acquire("job-a", active_job_names=())
    slots.acquire("job-b", active_job_names=())

    again = slots.acquire("job-a", active_job_names=())

    assert again is not None
    assert first is not None
    assert again.key == first.key


def test_the_slot_of_an_ended_job_is_taken_over(s3, slots_uri):
    active: set[str] = set()
    slots = JobSlots(s3, slots_uri, MODEL, 1, job_is_active=lambda arn: arn in active)
    lease = slots.acquire("job-a", active_job_names=())
    assert lease is not None
    slots.confirm(lease, "arn:job-a")
    active.add("arn:job-a")

    assert slots.acquire("job-b", active_job_names={"job-a"}) is None
    # The listing is a moment old and misses job-a; the service still says it runs: the slot stays taken.
    assert slots.acquire("job-b", active_job_names=()) is None

    active.clear()  # job-a ended
    taken = slots.acquire("job-b", active_job_names=())
    assert taken is not None
    assert taken.key == lease.key


def test_a_claim_without_a_job_blocks_until_its_ttl(s3, slots_uri):
    clock = Clock()
    slots = JobSlots(s3, slots_uri, MODEL, 1, claim_ttl=600, clock=clock)
    assert slots.acquire("job-a", active_job_names=()) is not None  # then the task died before creating

    clock.now += 599
    assert slots.acquire("job-b", active_job_names=()) is None
    clock.now += 2
    assert slots.acquire("job-b", active_job_names=()) is not None


def test_a_released_claim_frees_the_slot_at_once(s3, slots_uri):
    slots = JobSlots(s3, slots_uri, MODEL, 1)
    lease = slots.acquire("job-a", active_job_names=())
    assert lease is not None

    slots.release(lease)

    assert slots.acquire("job-b", active_job_names=()) is not None


def test_held_lists_the_busy_slots_from_the_listing(s3, slots_uri):
    clock = Clock()
    slots = JobSlots(s3, slots_uri, MODEL, 4, claim_ttl=600, clock=clock)
    running = slots.acquire("job-running", active_job_names=())
    ended = slots.acquire("job-ended", active_job_names=())
    released = slots.acquire("job-released", active_job_names=())
    assert running is not None
    assert ended is not None
    assert released is not None
    slots.confirm(running, "arn:running")
    slots.confirm(ended, "arn:ended")
    slots.release(released)
    slots.acquire("job-creating", active_job_names={"job-running"})  # no ARN yet: its create is in flight

    assert slots.held({"job-running"}) == ["job-running", "job-creating"]
    clock.now += 601  # the claim without a job is stale
    assert slots.held({"job-running"}) == ["job-running"]
    assert JobSlots(s3, slots_uri, MODEL, 4).held(()) == []  # nothing active, nothing in flight


def test_a_stale_lease_cannot_overwrite_a_slot_taken_over_since(s3, slots_uri):
    clock = Clock()
    slots = JobSlots(s3, slots_uri, MODEL, 1, claim_ttl=10, clock=clock)
    stale = slots.acquire("job-a", active_job_names=())
    clock.now += 11
    fresh = slots.acquire("job-b", active_job_names=())
    assert stale is not None
    assert fresh is not None

    slots.release(stale)  # job-a's task wakes up late: its conditional write loses

    body = orjson.loads(s3.get_object(Bucket=fresh.bucket, Key=fresh.key)["Body"].read())
    assert body["job_name"] == "job-b"
    assert "released" not in body


def test_profiles_and_arns_of_one_model_share_its_slots(s3, slots_uri):
    by_id = JobSlots(s3, slots_uri, MODEL, 1)
    by_profile = JobSlots(s3, slots_uri, f"us.{MODEL}", 1)
    assert by_id.key(0) == by_profile.key(0)
    assert by_id.acquire("job-a", active_job_names=()) is not None
    assert by_profile.acquire("job-b", active_job_names=()) is None


@pytest.mark.parametrize(("uri", "capacity"), [("/tmp/slots", 2), ("s3://bucket/slots/", 0)])
def test_rejects_a_local_prefix_or_no_capacity(s3, uri, capacity):
    with pytest.raises(ConfigError):
        JobSlots(s3, uri, MODEL, capacity)
