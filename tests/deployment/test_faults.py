"""The fault scenarios of a running Airflow: what docs/reliability.md ("When a job is stopped") promises,
proved on the session's deployment (Celery workers, triggerer, scheduler) and driven through the REST API as
an operator would — clear, mark failed, a worker or triggerer killed, an execution_timeout, two runs sharing
a model's quota.

Each scenario asserts its outcome from the emulator's record of calls (creates, status reads, stops) and job
histories, and ends with the fault matrix's two checks: no duplicate jobs, every record exactly once in the
published partition. A job is held running with a low emulator time scale and released only once the state
the scenario needs has been observed.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from bedrock_batch_dev.deployment.local_setup import write_sample_calls
from tests.deployment.checks import (
    DAG_ID,
    DEPLOYMENT_CONFIG,
    assert_every_record_published_once,
    assert_no_duplicate_jobs,
    assert_no_task_retried,
    parse_time,
    task_states,
)
from tests.deployment.scenarios import (
    name_lookups,
    now_iso,
    rerun_failed_tasks,
    status_time,
    statuses,
    stop_calls,
    submit_instance,
    task_log,
    trigger_run,
    try_states,
    wait_for,
    wait_for_jobs,
    wait_for_polls,
    wait_for_run_state,
    wait_for_status,
    wait_for_submit,
    wait_until_waited_for_in_triggerer,
    worker_running,
    workloads,
)
from tests.reliability.harness import ActiveJobsProbe, peak_active_from_history

pytestmark = pytest.mark.deployment

# Service seconds per wall second that keep a job Submitted (its 5 s there last 500 s) until a scenario
# releases it by going back to the deployment's own time scale.
HOLD = 0.01
ONE_JOB = 100  # calls: one job of 100 records (the service minimum), nothing on demand
TWO_JOBS = 200


def given_calls(live: Any, ds: str, count: int) -> list[str]:
    """``count`` sample calls in the source partition of ``ds``; their ids."""
    return write_sample_calls(live.s3, live.config, ds, count)


def normal_pace(live: Any) -> None:
    """The emulator back at the deployment's time scale."""
    assert live.deployment.aws is not None
    live.admin.set_time_scale(live.deployment.aws.time_scale)


def release(live: Any, run: Mapping[str, Any]) -> None:
    """Let held jobs run (:func:`normal_pace`). Prints how long after the run's submit tasks started (their
    current tries) that was: the session's job_wait_timeout_minutes must not pass meanwhile."""
    normal_pace(live)
    submits = live.client.task_instances(DAG_ID, run["dag_run_id"], "submit")
    started = min(parse_time(ti["start_date"]) for ti in submits if ti["start_date"])
    held = (datetime.now(UTC) - started).total_seconds()
    print(f"\njobs released {held:.1f} s after the submit task started")


def assert_published_once(live: Any, ds: str, call_ids: Sequence[str], run: Mapping[str, Any]) -> None:
    """Check 2 of the fault matrix, every call ``succeeded``."""
    accounting = assert_every_record_published_once(live.s3, live.config, ds, call_ids, run)
    assert accounting.count("succeeded") == len(call_ids)


def assert_no_duplicates(live: Any, runs: Sequence[Mapping[str, Any]]) -> None:
    """Check 1 of the fault matrix for ``runs`` (their shards, by their XComs)."""
    assert_no_duplicate_jobs(live.client, live.admin, runs, model_id=live.config["model_id"])


# --- 1. clear --------------------------------------------------------------------------------------------


def test_clearing_the_deferred_submit_task_keeps_its_job_and_the_rerun_reattaches(live):
    ds = "2026-04-01"
    call_ids = given_calls(live, ds, ONE_JOB)
    live.admin.set_time_scale(HOLD)
    run = trigger_run(live.client, ds)
    (job,) = wait_until_waited_for_in_triggerer(live.client, live.admin, run, shards=1)

    cleared_at = now_iso()
    cleared = live.client.clear_task_instances(DAG_ID, run["dag_run_id"], [("submit", 0)])
    assert [(ti["task_id"], ti["map_index"]) for ti in cleared] == [("submit", 0)]
    # The re-run (try 2) looked the shard's job up by name and waits for it, deferred, with the job untouched.
    wait_for_submit(live.client, run, {"deferred"}, try_number=2)
    wait_for("try 2 looked the job up by name", lambda: name_lookups(live.admin, job, cleared_at), 30)
    # The triggerer cancels try 1's trigger once it notices the clear (its next sync with the database); the
    # job is released only then, so that trigger cannot see the job end first and leave on its own.
    wait_for(
        "the triggerer cancelled try 1's trigger",
        lambda: "Trigger cancelled by user action" in task_log(live.client, run, "submit", 1, map_index=0),
        60,
    )
    assert live.admin.job(job["jobArn"])["status"] == "Submitted"
    release(live, run)

    run = wait_for_run_state(live.client, run, "success")
    job = live.admin.job(job["jobArn"])
    assert stop_calls(live.admin, [job]) == []
    assert "Stopping" not in statuses(job)
    assert statuses(job)[-1] == "Completed"
    # It left Submitted only after the re-run had found it: the job the re-run waited for is the same one.
    assert status_time(job, "Validating") >= parse_time(name_lookups(live.admin, job, cleared_at)[0]["time"])
    assert (live.admin.created_job_count(), job["createRequests"]) == (1, 1)
    result = live.client.xcom(DAG_ID, run["dag_run_id"], "submit", map_index=0)
    assert (result["job_arn"], result["reused"], result["status"]) == (job["jobArn"], True, "Completed")
    assert submit_instance(live.client, run)["try_number"] == 2
    # Try 1's trigger was cancelled by the clear and its on_kill left the job running.
    first = task_log(live.client, run, "submit", 1, map_index=0)
    assert "Trigger cancelled by user action" in first
    assert f"Waiting for job {job['jobId']} was cancelled" in first
    assert "the job keeps running" in first
    assert "Shard 1: reattaching to job" in task_log(live.client, run, "submit", 2, map_index=0)

    assert_no_duplicates(live, [run])
    assert_published_once(live, ds, call_ids, run)


# --- 2. mark failed --------------------------------------------------------------------------------------


def stopped_then_rerun(live: Any, run: Mapping[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
    """After the run failed with ``job`` stopped: let the job reach Stopped, clear the run's failed tasks as a
    user re-running it, and wait for the run to succeed with attempt 2 of the shard; the run."""
    normal_pace(live)
    wait_for_status(live.admin, job, "Stopped")
    cleared = rerun_failed_tasks(live.client, run)
    assert "submit" in cleared
    return wait_for_run_state(live.client, run, "success")


def assert_attempt_2_after_stopped(live: Any, run: Mapping[str, Any], first: Mapping[str, Any]) -> None:
    """The shard has two jobs: attempt 1 stopped once and ended Stopped, attempt 2 created after that, used
    by the re-run."""
    jobs = live.admin.jobs()
    assert [j["jobName"] for j in jobs] == [first["jobName"], first["jobName"][:-1] + "2"]
    first, second = jobs
    assert statuses(first)[-2:] == ["Stopping", "Stopped"]
    assert status_time(first, "Stopped") <= status_time(second, "Submitted")
    assert statuses(second)[-1] == "Completed"
    assert len(stop_calls(live.admin, jobs)) == 1
    assert (live.admin.created_job_count(), first["createRequests"], second["createRequests"]) == (2, 1, 1)
    result = live.client.xcom(DAG_ID, run["dag_run_id"], "submit", map_index=0)
    assert (result["job_arn"], result["reused"]) == (second["jobArn"], False)


def test_marking_the_deferred_submit_task_failed_stops_its_job_and_a_rerun_submits_attempt_2(live):
    ds = "2026-04-02"
    call_ids = given_calls(live, ds, ONE_JOB)
    live.admin.set_time_scale(HOLD)
    run = trigger_run(live.client, ds)
    (job,) = wait_until_waited_for_in_triggerer(live.client, live.admin, run, shards=1)

    live.client.set_task_instance_state(DAG_ID, run["dag_run_id"], "submit", "failed", map_index=0)
    (stop,) = wait_for("the job's stop request", lambda: stop_calls(live.admin, [job]), 30)
    assert stop["status"] == 200
    assert live.admin.job(job["jobArn"])["status"] == "Stopping"
    wait_for_run_state(live.client, run, "failed")
    assert submit_instance(live.client, run)["state"] == "failed"
    first = task_log(live.client, run, "submit", 1, map_index=0)
    assert "Trigger cancelled by user action" in first
    assert f"The task was marked failed: requested stop of job {job['jobId']}" in first

    run = stopped_then_rerun(live, run, job)
    assert try_states(live.client, run, "submit", 0) == ["failed", "success"]
    assert_attempt_2_after_stopped(live, run, job)
    assert_no_duplicates(live, [run])
    assert_published_once(live, ds, call_ids, run)


# --- 3. execution_timeout --------------------------------------------------------------------------------


def test_execution_timeout_while_deferred_stops_the_job_and_fails_without_a_retry(live):
    timeout = DEPLOYMENT_CONFIG["job_wait_timeout_minutes"] * 60
    ds = "2026-04-03"
    call_ids = given_calls(live, ds, ONE_JOB)
    live.admin.set_time_scale(HOLD)  # the job would take 40 minutes of wall time
    run = trigger_run(live.client, ds)
    (job,) = wait_until_waited_for_in_triggerer(live.client, live.admin, run, shards=1)

    ti = wait_for_submit(live.client, run, {"failed", "up_for_retry", "success"}, timeout=timeout + 60)
    (stop,) = stop_calls(live.admin, [job])
    waited = (parse_time(stop["time"]) - parse_time(ti["start_date"])).total_seconds()
    print(f"\nexecution_timeout {timeout} s: job {job['jobId']} stopped {waited:.1f} s after submit started")
    assert timeout <= waited < timeout + 30
    # Failed at its first try although it has retries: a retry would submit the shard again.
    assert (ti["state"], ti["try_number"], ti["max_tries"]) == ("failed", 1, 2)
    assert live.admin.job(job["jobArn"])["status"] in ("Stopping", "Stopped")
    wait_for_run_state(live.client, run, "failed")
    log = task_log(live.client, run, "submit", 1, map_index=0)
    assert re.search(
        rf"AirflowFailException: execution_timeout \(0:01:00\) reached while waiting for job {job['jobId']} "
        r"of shard 1: the job was stopped and the task fails without retrying",
        log,
    ), log[-2000:]
    assert "Trigger cancelled by user action" not in log

    run = stopped_then_rerun(live, run, job)
    assert try_states(live.client, run, "submit", 0) == ["failed", "success"]
    assert_attempt_2_after_stopped(live, run, job)
    assert_no_duplicates(live, [run])
    assert_published_once(live, ds, call_ids, run)


# --- 4. a Celery worker killed ---------------------------------------------------------------------------


def test_a_worker_killed_while_its_submit_task_runs_is_retried_and_reattaches(live):
    ds = "2026-04-04"
    call_ids = given_calls(live, ds, ONE_JOB)
    # Every status read takes a minute: the submit task stays in its worker right after creating its job,
    # and the job stays Submitted until the retry has found it.
    live.admin.set_faults(slow_operations=["GetModelInvocationJob"], slow_seconds=60)
    live.admin.set_time_scale(HOLD)
    run = trigger_run(live.client, ds)
    (job,) = wait_for_jobs(live.admin, 1)
    ti = wait_for_submit(live.client, run, {"running"})
    worker = worker_running(live.deployment, ti["id"])

    live.deployment.kill(worker, signal.SIGKILL)  # the worker and its task processes, as a lost container
    assert not live.deployment.process(worker).running
    assert live.deployment.process(worker).members() == []
    assert submit_instance(live.client, run)["state"] == "running"  # Airflow does not know yet
    killed_at, killed = time.monotonic(), now_iso()
    live.admin.set_faults(slow_operations=[], slow_seconds=0)
    live.deployment.restart(worker)

    # The scheduler fails try 1 once its heartbeat is too old; try 2 finds the job by name and waits for it.
    wait_for_submit(live.client, run, {"deferred"}, try_number=2, timeout=120)
    wait_for("try 2 looked the job up by name", lambda: name_lookups(live.admin, job, killed), 30)
    print(f"\n{worker} SIGKILLed; try 2 waited for the job {time.monotonic() - killed_at:.1f} s later")
    assert live.admin.job(job["jobArn"])["status"] == "Submitted"
    release(live, run)
    run = wait_for_run_state(live.client, run, "success")
    assert try_states(live.client, run, "submit", 0) == ["failed", "success"]
    events = live.client.get(
        "/api/v2/eventLogs", dag_id=DAG_ID, run_id=run["dag_run_id"], event="heartbeat timeout"
    )["event_logs"]
    assert [(e["task_id"], e["map_index"], e["try_number"]) for e in events] == [("submit", 0, 1)]
    result = live.client.xcom(DAG_ID, run["dag_run_id"], "submit", map_index=0)
    assert (result["job_arn"], result["reused"], result["status"]) == (job["jobArn"], True, "Completed")
    assert "Shard 1: reattaching to job" in task_log(live.client, run, "submit", 2, map_index=0)
    job = live.admin.job(job["jobArn"])
    assert (live.admin.created_job_count(), job["createRequests"]) == (1, 1)
    assert stop_calls(live.admin, [job]) == []
    assert_no_duplicates(live, [run])
    assert_published_once(live, ds, call_ids, run)


# --- 5. the triggerer crashes or restarts ----------------------------------------------------------------


def waits_survive_a_triggerer_outage(live: Any, ds: str, stop_triggerer: Any) -> None:
    """Two shards wait deferred; ``stop_triggerer()`` ends the triggerer, which then starts again: both waits
    resume on it with the jobs untouched, and the run completes without a retry, stop or new job."""
    call_ids = given_calls(live, ds, TWO_JOBS)
    live.admin.set_time_scale(HOLD)
    run = trigger_run(live.client, ds)
    jobs = wait_until_waited_for_in_triggerer(live.client, live.admin, run, shards=2)
    before = [submit_instance(live.client, run, map_index) for map_index in (0, 1)]

    stop_triggerer()
    wait_for("every triggerer process gone", lambda: not live.deployment.process("triggerer").members(), 30)
    down_since = now_iso()  # every status read from now on is the new triggerer's
    live.deployment.restart("triggerer")
    started = time.monotonic()
    wait_for_polls(live.admin, jobs, since=down_since)
    print(f"\nwaiting resumed {time.monotonic() - started:.1f} s after the triggerer started again")
    assert [live.admin.job(j["jobArn"])["status"] for j in jobs] == ["Submitted", "Submitted"]
    # The same stored triggers (same ids, same try), now run by the new triggerer.
    after = [submit_instance(live.client, run, map_index) for map_index in (0, 1)]
    assert [(ti["state"], ti["try_number"], ti["trigger"]["id"]) for ti in after] == [
        ("deferred", 1, ti["trigger"]["id"]) for ti in before
    ]
    old_triggerers = {ti["triggerer_job"]["id"] for ti in before}
    assert {ti["triggerer_job"]["id"] for ti in after}.isdisjoint(old_triggerers)
    release(live, run)

    run = wait_for_run_state(live.client, run, "success")
    assert_no_task_retried(live.client, run)
    jobs = [live.admin.job(j["jobArn"]) for j in jobs]
    assert stop_calls(live.admin, jobs) == []
    assert (live.admin.created_job_count(), [j["createRequests"] for j in jobs]) == (2, [1, 1])
    for map_index in (0, 1):
        log = task_log(live.client, run, "submit", 1, map_index=map_index)
        assert "Trigger cancelled by user action" not in log
        assert live.client.xcom(DAG_ID, run["dag_run_id"], "submit", map_index=map_index)["reused"] is False
    assert_no_duplicates(live, [run])
    assert_published_once(live, ds, call_ids, run)


def test_waiting_resumes_after_the_triggerer_crashes(live):
    def crash() -> None:
        live.deployment.kill("triggerer", signal.SIGKILL)

    waits_survive_a_triggerer_outage(live, "2026-04-05", crash)


def test_waiting_resumes_after_the_triggerer_restarts(live):
    def shut_down() -> None:
        # SIGTERM to the main process's group (docker stop): the triggerer shuts down, cancelling its
        # triggers without calling their on_kill.
        code = live.deployment.kill("triggerer", signal.SIGTERM, everything=False)
        assert code is not None, "the triggerer did not exit on SIGTERM"

    waits_survive_a_triggerer_outage(live, "2026-04-06", shut_down)


# --- 6. two runs, one quota ------------------------------------------------------------------------------


def test_two_runs_on_both_workers_never_exceed_a_quota_of_two(live):
    quota = DEPLOYMENT_CONFIG["quotas"]["max_concurrent_jobs"]
    days = ("2026-04-07", "2026-04-08")
    call_ids = {ds: given_calls(live, ds, TWO_JOBS) for ds in days}
    live.admin.set_time_scale(5.0)  # a job runs about 5 s: long enough for four to want a slot at once
    with ActiveJobsProbe(live, interval=0.1) as probe:
        runs = [trigger_run(live.client, ds) for ds in days]
        runs = [wait_for_run_state(live.client, run, "success", timeout=180) for run in runs]

    jobs = live.admin.jobs()
    assert len(jobs) == 4
    print(
        f"\nquota {quota}: peak sampled {probe.peak} ({probe.samples} samples), from history "
        f"{peak_active_from_history(jobs)}"
    )
    assert probe.peak <= quota
    assert peak_active_from_history(jobs) == quota
    # The service never had to refuse a job: the DAG's own quota held them back.
    assert {call["status"] for call in live.admin.requests("CreateModelInvocationJob")} == {200}
    waited = [
        ti
        for run in runs
        for ti in live.client.task_instances(DAG_ID, run["dag_run_id"], "submit")
        if re.search(
            rf"at the quota of {quota}|all {quota} job slots of \S+ are taken",
            task_log(live.client, run, "submit", ti["try_number"], map_index=ti["map_index"]),
        )
    ]
    assert waited, "no submit task had to wait for a slot"
    ran_on = {w["worker"] for run in runs for w in workloads(live.deployment, run["dag_run_id"], "submit")}
    assert ran_on == set(live.deployment.workers), ran_on
    for run in runs:
        assert_no_task_retried(live.client, run)
        assert task_states(live.client, run)["submit[1]"] == ("success", 1)
    assert_no_duplicates(live, runs)
    for ds, run in zip(days, runs, strict=True):
        assert_published_once(live, ds, call_ids[ds], run)
