"""Unit tests of bedrock_batch.jobs: job names, client tokens, statuses, outcomes and reuse decisions.

Pure logic, no Airflow and no services.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bedrock_batch import jobs
from bedrock_batch.jobs import (
    ACTIVE_STATUSES,
    ALL_STATUSES,
    TERMINAL_STATUSES,
    JobDecision,
    ShardJobKey,
    attempt_of,
    client_token_for,
    counts_of,
    decide_for_existing,
    format_progress,
    job_id_from_arn,
    job_name_for,
    model_matches,
    outcome_for,
    output_uri_for,
    run_key_for,
    shard_job_prefix,
    tag_value,
    wait_deadline,
)

# The service's patterns, copied from botocore's bedrock model and anchored as the API applies them.
NAME_RE = re.compile(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}")
TOKEN_RE = re.compile(r"[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}")

FP = "a3" * 32
DATE = datetime(2024, 5, 17, tzinfo=UTC)
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


class TestJobNameFor:
    @pytest.mark.parametrize(
        ("dag_id", "run_key", "index", "attempt"),
        [
            ("call_center_summaries", DATE, 1, 1),
            ("x" * 250, DATE, 9999, 999),
            ("dag.with.dots and spaces/and/slashes", "manual__2024-05-17T00:00:00.123+00:00", 7, 3),
            ("___", "asset_triggered__" + "z" * 200, 123456, 12),
            ("ünïcødé-dag", DATE, 0, 1),
        ],
    )
    def test_valid_for_the_service_pattern(self, dag_id, run_key, index, attempt):
        name = job_name_for(dag_id, run_key, FP, index, attempt, model_id=MODEL)
        assert len(name) <= 63
        assert NAME_RE.fullmatch(name), name

    def test_keeps_readable_dag_and_date_prefix(self):
        name = job_name_for("call_center_summaries", DATE, FP, 3, model_id=MODEL)
        assert name.startswith("call-center-summaries-20240517T000000-s0003-")
        assert name.endswith("-a1")

    def test_deterministic(self):
        assert job_name_for("d", DATE, FP, 1, model_id=MODEL) == job_name_for(
            "d", DATE, FP, 1, model_id=MODEL
        )

    def test_same_instant_in_another_timezone_is_the_same_run(self):
        other_tz = DATE.astimezone(timezone(timedelta(hours=2)))
        assert job_name_for("d", other_tz, FP, 1, model_id=MODEL) == job_name_for(
            "d", DATE, FP, 1, model_id=MODEL
        )

    @pytest.mark.parametrize(
        "change",
        [
            {"dag_id": "other"},
            {"run_key": DATE + timedelta(days=1)},
            {"run_key": DATE + timedelta(microseconds=1)},
            {"fingerprint": "b4" * 32},
            {"index": 2},
            {"model_id": "amazon.nova-pro-v1:0"},
            {"round_number": 2},
        ],
    )
    def test_any_identity_change_changes_the_name(self, change):
        base = {
            "dag_id": "d",
            "run_key": DATE,
            "fingerprint": FP,
            "index": 1,
            "model_id": MODEL,
            "round_number": 1,
        }
        changed = {**base, **change}

        def name(p):
            return job_name_for(
                p["dag_id"],
                p["run_key"],
                p["fingerprint"],
                p["index"],
                model_id=p["model_id"],
                round_number=p["round_number"],
            )

        assert name(changed) != name(base)

    def test_a_retry_round_shard_is_named_as_such_and_keeps_first_round_names(self):
        first = shard_job_prefix("d", DATE, FP, 1, model_id=MODEL)
        assert shard_job_prefix("d", DATE, FP, 1, model_id=MODEL, round_number=1) == first
        retry = shard_job_prefix("d", DATE, FP, 1, model_id=MODEL, round_number=2)
        assert "-r2s0001-" in retry
        assert "-s0001-" in first
        # Neither is an attempt of the other: reattaching can never cross rounds.
        assert attempt_of(job_name_for("d", DATE, FP, 1, model_id=MODEL, round_number=2), first) is None
        assert attempt_of(job_name_for("d", DATE, FP, 1, model_id=MODEL), retry) is None

    @pytest.mark.parametrize("round_number", [0, -1])
    def test_rejects_round_below_1(self, round_number):
        with pytest.raises(ValueError, match="round_number"):
            shard_job_prefix("d", DATE, FP, 1, model_id=MODEL, round_number=round_number)

    def test_long_dag_ids_sharing_a_prefix_still_differ(self):
        a = job_name_for("x" * 100 + "a", DATE, FP, 1, model_id=MODEL)
        b = job_name_for("x" * 100 + "b", DATE, FP, 1, model_id=MODEL)
        assert a != b

    def test_attempts_share_the_shard_prefix(self):
        prefix = shard_job_prefix("d", DATE, FP, 1, model_id=MODEL)
        for attempt in (1, 2, 10, 999):
            name = job_name_for("d", DATE, FP, 1, attempt, model_id=MODEL)
            assert name == f"{prefix}-a{attempt}"
            assert attempt_of(name, prefix) == attempt

    @pytest.mark.parametrize("attempt", [0, 1000])
    def test_rejects_attempt_out_of_range(self, attempt):
        with pytest.raises(ValueError, match="attempt"):
            job_name_for("d", DATE, FP, 1, attempt, model_id=MODEL)


class TestClientTokenFor:
    def test_valid_and_stable(self):
        token = client_token_for("d", DATE, FP, 1, model_id=MODEL)
        assert TOKEN_RE.fullmatch(token)
        assert len(token) <= 256
        assert token == client_token_for("d", DATE, FP, 1, model_id=MODEL)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"shard_fingerprint": "b4" * 32},
            {"model_id": "amazon.nova-pro-v1:0"},
            {"attempt": 2},
            {"run_key": "manual__x"},
            {"round_number": 2},
        ],
    )
    def test_changes_with_data_model_attempt_or_run(self, kwargs):
        base = {"dag_id": "d", "run_key": DATE, "shard_fingerprint": FP, "shard_index": 1, "model_id": MODEL}
        assert client_token_for(**{**base, **kwargs}) != client_token_for(**base)


class TestShardJobKey:
    def test_derives_the_same_names_and_tokens_as_the_functions(self):
        key = ShardJobKey("d", DATE, FP, 3, MODEL)
        assert key.prefix == shard_job_prefix("d", DATE, FP, 3, model_id=MODEL)
        assert key.job_name(2) == job_name_for("d", DATE, FP, 3, 2, model_id=MODEL)
        assert key.client_token(2) == client_token_for("d", DATE, FP, 3, 2, model_id=MODEL)
        retry = ShardJobKey("d", DATE, FP, 3, MODEL, round_number=2)
        assert retry.job_name(1) == job_name_for("d", DATE, FP, 3, 1, model_id=MODEL, round_number=2)
        assert retry.client_token(1) == client_token_for("d", DATE, FP, 3, 1, model_id=MODEL, round_number=2)
        assert retry.job_name(1) != key.job_name(1)


class TestTagValue:
    def test_keeps_run_ids_readable_and_valid(self):
        run_id = "manual__2025-01-02T00:00:00+00:00"
        assert tag_value(run_id) == run_id
        assert re.fullmatch(r"[a-zA-Z0-9\s._:/=+@-]*", tag_value("ïd#1,<x>"))
        assert len(tag_value("x" * 400)) == 256


class TestRunKeyFor:
    def test_logical_date_wins(self):
        assert run_key_for(DATE, "manual__x") == DATE

    def test_run_id_without_logical_date(self):
        assert run_key_for(None, "manual__x") == "manual__x"


class TestAttemptOf:
    def test_other_shards_and_foreign_jobs_are_not_attempts(self):
        prefix = shard_job_prefix("d", DATE, FP, 1, model_id=MODEL)
        assert attempt_of(prefix + "-a2x", prefix) is None
        assert attempt_of("my-" + prefix + "-a1", prefix) is None
        assert attempt_of(prefix, prefix) is None
        assert attempt_of(prefix + "-a", prefix) is None


class TestStatuses:
    def test_ten_statuses(self):
        assert len(ALL_STATUSES) == 10

    def test_active_counts_against_the_quota(self):
        assert {"Submitted", "Validating", "Scheduled", "InProgress"} == ACTIVE_STATUSES

    def test_terminal(self):
        assert {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"} == TERMINAL_STATUSES
        assert not ACTIVE_STATUSES & TERMINAL_STATUSES
        neither = ALL_STATUSES - ACTIVE_STATUSES - TERMINAL_STATUSES
        assert neither == {"Stopping"}


class TestOutcomeFor:
    @pytest.mark.parametrize(
        ("status", "outcome"),
        [
            ("Completed", "success"),
            ("PartiallyCompleted", "salvage"),
            ("Expired", "salvage"),
            ("Stopped", "salvage"),
            ("Failed", "failed"),
        ],
    )
    def test_default(self, status, outcome):
        assert outcome_for(status) == outcome

    @pytest.mark.parametrize(
        ("status", "outcome"),
        [
            ("Completed", "success"),
            ("PartiallyCompleted", "failed"),
            ("Expired", "failed"),
            ("Stopped", "failed"),
            ("Failed", "failed"),
        ],
    )
    def test_strict(self, status, outcome):
        assert outcome_for(status, strict=True) == outcome

    @pytest.mark.parametrize("status", ["InProgress", "Stopping", "Submitted", "bogus"])
    def test_non_terminal_raises(self, status):
        with pytest.raises(ValueError, match="not terminal"):
            outcome_for(status)


PREFIX = shard_job_prefix("d", DATE, FP, 1, model_id=MODEL)


def summary(attempt: int, status: str, prefix: str = PREFIX) -> dict:
    return {"jobName": f"{prefix}-a{attempt}", "status": status, "jobArn": f"arn-{attempt}"}


class TestDecideForExisting:
    def test_nothing_found_creates_attempt_1(self):
        assert decide_for_existing([], PREFIX) == JobDecision("create", 1)

    @pytest.mark.parametrize("status", sorted(ACTIVE_STATUSES))
    def test_active_job_is_reattached(self, status):
        decision = decide_for_existing([summary(1, status)], PREFIX)
        assert decision.action == "reattach"
        assert decision.attempt == 1
        assert decision.job is not None
        assert decision.job["jobArn"] == "arn-1"

    @pytest.mark.parametrize("status", ["Completed", "PartiallyCompleted"])
    def test_finished_output_is_reused(self, status):
        decision = decide_for_existing([summary(1, status)], PREFIX)
        assert (decision.action, decision.attempt) == ("reuse", 1)

    @pytest.mark.parametrize("status", ["Failed", "Stopped", "Expired", "Stopping"])
    def test_unusable_ending_creates_next_attempt(self, status):
        assert decide_for_existing([summary(1, status)], PREFIX) == JobDecision("create", 2)

    def test_latest_attempt_decides(self):
        decision = decide_for_existing([summary(1, "Failed"), summary(2, "Completed")], PREFIX)
        assert (decision.action, decision.attempt) == ("reuse", 2)
        decision = decide_for_existing([summary(2, "Failed"), summary(1, "Completed")], PREFIX)
        assert decision == JobDecision("create", 3)

    def test_running_job_beats_a_newer_failed_one(self):
        decision = decide_for_existing([summary(1, "InProgress"), summary(2, "Failed")], PREFIX)
        assert (decision.action, decision.attempt) == ("reattach", 1)

    def test_attempt_10_sorts_after_attempt_9(self):
        decision = decide_for_existing([summary(10, "Failed"), summary(9, "Failed")], PREFIX)
        assert decision == JobDecision("create", 11)

    def test_other_shards_are_ignored(self):
        other = shard_job_prefix("d", DATE, FP, 2, model_id=MODEL)
        assert decide_for_existing([summary(1, "Completed", other)], PREFIX) == JobDecision("create", 1)

    @pytest.mark.parametrize("status", ["InProgress", "Completed", "Failed"])
    def test_force_always_creates_a_new_attempt(self, status):
        assert decide_for_existing([summary(4, status)], PREFIX, force=True) == JobDecision("create", 5)


class TestDescriptions:
    def test_job_id_from_arn(self):
        arn = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456"
        assert job_id_from_arn(arn) == "abc123def456"
        assert job_id_from_arn("abc123def456") == "abc123def456"

    @pytest.mark.parametrize(
        ("stored", "asked", "match"),
        [
            (MODEL, MODEL, True),
            (f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}", MODEL, True),
            (MODEL, f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}", True),
            ("arn:aws:bedrock:us-east-1:1:inference-profile/us." + MODEL, "us." + MODEL, True),
            ("us." + MODEL, MODEL, True),
            ("amazon.nova-pro-v1:0", MODEL, False),
            ("anthropic.claude-3-5-sonnet-20240620-v1:0", MODEL, False),
        ],
    )
    def test_model_matches(self, stored, asked, match):
        assert model_matches(stored, asked) is match

    @pytest.mark.parametrize("output", ["s3://b/out", "s3://b/out/"])
    def test_output_uri_for(self, output):
        assert output_uri_for(output, "abc123def456") == "s3://b/out/abc123def456/"

    def test_format_progress(self):
        assert format_progress("abc123def456", "InProgress", 12_400, 50_000) == (
            "job abc123def456 InProgress 12,400/50,000 records"
        )
        # totalRecordCount is 0 while the job validates: no misleading 0/0.
        assert format_progress("abc123def456", "Validating", 0, 0) == "job abc123def456 Validating"

    def test_counts_of_missing_counts_are_zero(self):
        assert counts_of({"totalRecordCount": 150, "processedRecordCount": 20}) == {
            "total_records": 150,
            "processed_records": 20,
            "success_records": 0,
            "error_records": 0,
        }


class TestWaitDeadline:
    def test_expiration_time_plus_margin(self):
        expires = DATE + timedelta(hours=24)
        assert wait_deadline({"jobExpirationTime": expires}, timedelta(hours=1)) == expires + timedelta(
            hours=1
        )

    def test_from_submit_time_and_timeout(self):
        job = {"submitTime": DATE, "timeoutDurationInHours": 72}
        assert wait_deadline(job, timedelta(0)) == DATE + timedelta(hours=72)

    def test_never_shorter_than_the_longest_job_timeout_when_unknown(self):
        assert wait_deadline({"submitTime": DATE}) >= DATE + timedelta(hours=168)

    def test_default_margin_covers_hours_not_minutes(self):
        margin = jobs.DEFAULT_WAIT_MARGIN
        assert margin >= timedelta(hours=1)
