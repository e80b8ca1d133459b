"""JobSubmitter over a fake hook: every find-or-create branch, the concurrency gate, job slots, retries.

The fake hook keeps a list of jobs and records every create; job slots use the session's moto S3 server.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from bedrock_batch.jobs import ShardJobKey
from bedrock_batch.slots import JobSlots
from bedrock_batch.submission import TRANSIENT_RETRY_SECONDS, JobRequest, JobSubmitter, Submitted, job_tags

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
KEY = ShardJobKey("call_center", datetime(2026, 11, 21, tzinfo=UTC), "f" * 64, 3, MODEL)
REQUEST = JobRequest(
    role_arn="arn:aws:iam::123456789012:role/BedrockBatch",
    model_id=MODEL,
    input_s3_uri="s3://staging/run/input/shard-0003/",
    output_s3_uri="s3://staging/run/output/shard-0003/",
    invocation_type="InvokeModel",
    tags={"team": "data"},
)


def arn(n: int) -> str:
    return f"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/job{n:09d}"


def client_error(code: str, operation: str = "CreateModelInvocationJob") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "from the fake"}}, operation)


class FakeHook:
    """The hook's job operations over an in-memory list of jobs (newest last)."""

    def __init__(self, jobs: list[dict[str, Any]] | None = None, s3_client: Any = None) -> None:
        self.jobs = list(jobs or [])
        self.created: list[dict[str, Any]] = []
        self.create_errors: list[BaseException] = []  # raised by the next create calls, in order
        self.find_errors: list[BaseException] = []  # raised by the next listings, in order
        self.s3_client = s3_client

    def find_jobs_by_name(self, prefix: str) -> list[dict[str, Any]]:
        if self.find_errors:
            raise self.find_errors.pop(0)
        return [job for job in reversed(self.jobs) if job["jobName"].startswith(prefix)]

    def active_jobs(self, model_id: str) -> list[dict[str, Any]]:
        active = {"Submitted", "Validating", "Scheduled", "InProgress"}
        return [job for job in self.jobs if job["status"] in active and job["modelId"] == model_id]

    def get_job(self, job_identifier: str) -> dict[str, Any]:
        for job in self.jobs:
            if job["jobArn"] == job_identifier:
                return dict(job)
        raise client_error("ResourceNotFoundException", "GetModelInvocationJob")

    def create_job(self, **request: Any) -> str:
        self.created.append(request)
        if self.create_errors:
            raise self.create_errors.pop(0)
        job = {
            "jobArn": arn(len(self.jobs) + 1),
            "jobName": request["job_name"],
            "status": "Submitted",
            "modelId": request["model_id"],
        }
        self.jobs.append(job)
        return str(job["jobArn"])

    def add(self, name: str, status: str, model_id: str = MODEL) -> str:
        job_arn = arn(len(self.jobs) + 1)
        self.jobs.append({"jobArn": job_arn, "jobName": name, "status": status, "modelId": model_id})
        return job_arn


class Clock:
    """Monotonic seconds that advance only when the submitter sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def submitter_for(
    hook: FakeHook, clock: Clock | None = None, *, quota: int = 20, **options: Any
) -> JobSubmitter:
    clock = clock or Clock()
    return JobSubmitter(
        hook,
        KEY,
        REQUEST,
        max_concurrent_jobs=quota,
        records=150,
        poll_interval=30.0,
        sleep=clock.sleep,
        clock=clock,
        **options,
    )


def other_shard_jobs(hook: FakeHook, count: int) -> None:
    for n in range(count):
        hook.add(f"other-dag-s{n:04d}-a1", "InProgress")


class TestFindOrCreate:
    def test_creates_attempt_1_with_the_deterministic_name_and_token(self):
        hook = FakeHook()
        submitted = submitter_for(hook).find_or_create()
        assert submitted == Submitted(arn(1), reused=False)
        (request,) = hook.created
        assert request["job_name"] == KEY.job_name(1)
        assert request["client_request_token"] == KEY.client_token(1)
        assert {k: request[k] for k in ("role_arn", "model_id", "input_s3_uri", "output_s3_uri")} == {
            "role_arn": REQUEST.role_arn,
            "model_id": MODEL,
            "input_s3_uri": REQUEST.input_s3_uri,
            "output_s3_uri": REQUEST.output_s3_uri,
        }
        assert request["tags"] == {"team": "data"}

    @pytest.mark.parametrize("status", ["Submitted", "Validating", "Scheduled", "InProgress"])
    def test_reattaches_to_a_running_job(self, status):
        hook = FakeHook()
        running = hook.add(KEY.job_name(1), status)
        assert submitter_for(hook).find_or_create() == Submitted(running, reused=True)
        assert hook.created == []

    @pytest.mark.parametrize("status", ["Completed", "PartiallyCompleted"])
    def test_reuses_a_finished_job(self, status):
        hook = FakeHook()
        finished = hook.add(KEY.job_name(1), status)
        assert submitter_for(hook).find_or_create() == Submitted(finished, reused=True)
        assert hook.created == []

    @pytest.mark.parametrize("status", ["Failed", "Stopped", "Expired"])
    def test_an_unusable_ending_creates_the_next_attempt(self, status):
        hook = FakeHook()
        hook.add(KEY.job_name(1), status)
        submitted = submitter_for(hook).find_or_create()
        assert submitted == Submitted(arn(2), reused=False)
        assert hook.created[0]["job_name"] == KEY.job_name(2)
        assert hook.created[0]["client_request_token"] == KEY.client_token(2)

    def test_force_creates_a_new_attempt_beside_a_finished_job(self):
        hook = FakeHook()
        hook.add(KEY.job_name(1), "Completed")
        assert submitter_for(hook, force=True).find_or_create() == Submitted(arn(2), reused=False)
        assert hook.created[0]["job_name"] == KEY.job_name(2)

    def test_at_the_quota_creates_nothing(self):
        hook = FakeHook()
        other_shard_jobs(hook, 2)
        assert submitter_for(hook, quota=2).find_or_create() is None
        assert hook.created == []

    def test_jobs_of_other_models_do_not_count(self):
        hook = FakeHook()
        hook.add("someone-else-a1", "InProgress", model_id="amazon.nova-pro-v1:0")
        assert submitter_for(hook, quota=1).find_or_create() == Submitted(arn(2), reused=False)

    def test_a_running_job_is_reattached_even_at_the_quota(self):
        hook = FakeHook()
        running = hook.add(KEY.job_name(1), "InProgress")
        assert submitter_for(hook, quota=1).find_or_create() == Submitted(running, reused=True)

    @pytest.mark.parametrize("code", ["ConflictException", "ServiceQuotaExceededException"])
    def test_the_service_saying_wait_means_look_again_later(self, code):
        hook = FakeHook()
        hook.create_errors = [client_error(code)]
        assert submitter_for(hook).find_or_create() is None
        assert len(hook.created) == 1

    def test_any_other_create_error_is_raised(self):
        hook = FakeHook()
        hook.create_errors = [client_error("AccessDeniedException")]
        with pytest.raises(ClientError, match="AccessDeniedException"):
            submitter_for(hook).find_or_create()


class TestJobSlots:
    @pytest.fixture
    def slots_uri(self, s3_client: Any) -> str:
        bucket = f"slots-{uuid.uuid4().hex[:12]}"
        s3_client.create_bucket(Bucket=bucket)
        return f"s3://{bucket}/_job_slots/"

    def slots(self, hook: FakeHook, slots_uri: str, capacity: int = 1) -> JobSlots:
        return JobSlots(hook.s3_client, slots_uri, MODEL, capacity, job_is_active=lambda _: True)

    def test_create_claims_a_slot_and_records_the_job_in_it(self, s3_client, slots_uri):
        hook = FakeHook(s3_client=s3_client)
        assert submitter_for(hook, quota=1, job_slots_uri=slots_uri).find_or_create() == Submitted(
            arn(1), False
        )
        # The one slot now names the job: another shard finds it taken while the job is active.
        assert self.slots(hook, slots_uri).acquire("another-job-a1", {KEY.job_name(1)}) is None

    def test_slot_taken_by_another_job_means_wait(self, s3_client, slots_uri):
        hook = FakeHook(s3_client=s3_client)
        assert self.slots(hook, slots_uri).acquire("another-job-a1", set()) is not None
        assert submitter_for(hook, quota=1, job_slots_uri=slots_uri).find_or_create() is None
        assert hook.created == []

    def test_a_slot_whose_job_ended_is_free_again(self, s3_client, slots_uri):
        hook = FakeHook(s3_client=s3_client)
        lease = self.slots(hook, slots_uri).acquire("another-job-a1", set())
        assert lease is not None
        self.slots(hook, slots_uri).confirm(lease, hook.add("another-job-a1", "Completed"))
        assert submitter_for(hook, quota=1, job_slots_uri=slots_uri).find_or_create() is not None

    def test_a_conflict_keeps_the_slot_taken(self, s3_client, slots_uri):
        hook = FakeHook(s3_client=s3_client)
        hook.create_errors = [client_error("ConflictException")]
        assert submitter_for(hook, quota=1, job_slots_uri=slots_uri).find_or_create() is None
        # Another try created this very job: its slot stays with it.
        assert self.slots(hook, slots_uri).acquire("another-job-a1", set()) is None

    def test_quota_exceeded_gives_the_slot_back(self, s3_client, slots_uri):
        hook = FakeHook(s3_client=s3_client)
        hook.create_errors = [client_error("ServiceQuotaExceededException")]
        assert submitter_for(hook, quota=1, job_slots_uri=slots_uri).find_or_create() is None
        assert self.slots(hook, slots_uri).acquire("another-job-a1", set()) is not None

    def test_a_failed_create_gives_the_slot_back_and_raises(self, s3_client, slots_uri):
        hook = FakeHook(s3_client=s3_client)
        hook.create_errors = [client_error("ValidationException")]
        with pytest.raises(ClientError):
            submitter_for(hook, quota=1, job_slots_uri=slots_uri).find_or_create()
        assert self.slots(hook, slots_uri).acquire("another-job-a1", set()) is not None

    def test_a_throttled_create_keeps_its_slot_and_succeeds_on_retry(self, s3_client, slots_uri):
        hook = FakeHook(s3_client=s3_client)
        hook.create_errors = [client_error("ThrottlingException")]
        submitter = submitter_for(hook, quota=1, job_slots_uri=slots_uri)
        assert submitter.submit(wait=False) == Submitted(arn(1), reused=False)
        assert [r["job_name"] for r in hook.created] == [KEY.job_name(1)] * 2


class TestTransientRetries:
    def test_a_transient_error_is_retried_with_doubling_backoff_then_succeeds(self):
        hook = FakeHook()
        hook.find_errors = [client_error("ThrottlingException", "ListModelInvocationJobs")] * 3
        clock = Clock()
        assert submitter_for(hook, clock).submit(wait=False) == Submitted(arn(1), reused=False)
        assert clock.sleeps == [1.0, 2.0, 4.0]

    def test_dropped_connections_are_transient_too(self):
        hook = FakeHook()
        hook.create_errors = [EndpointConnectionError(endpoint_url="https://bedrock.us-east-1.amazonaws.com")]
        assert submitter_for(hook).submit(wait=False) == Submitted(arn(1), reused=False)

    def test_backoff_stops_growing_at_the_poll_interval(self):
        hook = FakeHook()
        hook.find_errors = [client_error("InternalServerException", "ListModelInvocationJobs")] * 7
        clock = Clock()
        submitter_for(hook, clock).submit(wait=False)
        assert clock.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]

    def test_gives_up_after_the_retry_limit_with_the_last_error(self):
        hook = FakeHook()
        hook.find_errors = [client_error("ThrottlingException", "ListModelInvocationJobs")] * 1000
        clock = Clock()
        with pytest.raises(ClientError, match="ThrottlingException"):
            submitter_for(hook, clock).submit(wait=False)
        assert TRANSIENT_RETRY_SECONDS - 30.0 < clock.now <= TRANSIENT_RETRY_SECONDS
        assert hook.created == []

    def test_a_non_transient_error_is_raised_at_once(self):
        hook = FakeHook()
        hook.find_errors = [client_error("AccessDeniedException", "ListModelInvocationJobs")]
        clock = Clock()
        with pytest.raises(ClientError, match="AccessDeniedException"):
            submitter_for(hook, clock).submit(wait=False)
        assert clock.sleeps == []

    def test_retrying_any_call(self):
        calls: list[int] = []

        def flaky() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise client_error("ServiceUnavailableException", "GetModelInvocationJob")
            return "done"

        assert submitter_for(FakeHook()).retrying("reading its job's status", flaky) == "done"
        assert len(calls) == 3


class TestSubmit:
    def test_without_waiting_at_the_quota_returns_none(self):
        hook = FakeHook()
        other_shard_jobs(hook, 1)
        clock = Clock()
        assert submitter_for(hook, clock, quota=1).submit(wait=False) is None
        assert clock.sleeps == []

    def test_waiting_looks_again_every_poll_interval_until_a_job_ends(self):
        hook = FakeHook()
        other_shard_jobs(hook, 1)
        clock = Clock()

        def sleep_then_end_the_other_job(seconds: float) -> None:
            clock.sleep(seconds)
            if len(clock.sleeps) == 2:
                hook.jobs[0]["status"] = "Completed"

        submitter = submitter_for(hook, clock, quota=1)
        submitter._sleep = sleep_then_end_the_other_job
        assert submitter.submit(wait=True) == Submitted(arn(2), reused=False)
        assert clock.sleeps == [30.0, 30.0]

    def test_a_job_created_meanwhile_by_another_try_is_reattached(self):
        hook = FakeHook()
        other_shard_jobs(hook, 1)
        clock = Clock()
        created: list[str] = []

        def another_try_creates_it(seconds: float) -> None:
            clock.sleep(seconds)
            created.append(hook.add(KEY.job_name(1), "Submitted"))

        submitter = submitter_for(hook, clock, quota=1)
        submitter._sleep = another_try_creates_it
        assert submitter.submit(wait=True) == Submitted(created[0], reused=True)
        assert hook.created == []


class TestLog:
    def test_one_line_per_decision_with_ids_and_counts_only(self, caplog):
        hook = FakeHook()
        with caplog.at_level("INFO", logger="bedrock_batch.submission"):
            submitter_for(hook).find_or_create()
        (line,) = [r.getMessage() for r in caplog.records]
        assert line == f"Shard 3: submitted job job000000001 ({KEY.job_name(1)}, attempt 1, 150 records)"


def test_job_tags_add_the_run_identity_which_wins():
    tags = job_tags({"team": "data", "shard": "mine", "bad/char?": "x y"}, key=KEY, run_id="manual__2026")
    assert tags == {
        "team": "data",
        "shard": "3",
        "bad/char_": "x y",
        "dag_id": "call_center",
        "run_id": "manual__2026",
        "round": "1",
    }
