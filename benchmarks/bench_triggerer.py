"""Benchmark of waiting at scale: N Bedrock jobs deferred at once on one real ``airflow triggerer``.

Against the local stack (moto S3 and the Bedrock emulator, in this process), creates N real jobs that stay
Scheduled, puts N deferred task instances of a DAG of mapped ``BedrockBatchJobSensor(deferrable=True)`` tasks
in a fresh SQLite metadata database, each with the trigger the sensor itself builds (rows written through
Airflow's ORM as the execution API writes a deferral), and runs ``airflow triggerer`` for a measured window
per variant:

- ``new``: this tree's trigger (shared client, backing-off schedule, call budget);
- ``legacy``: the trigger as of commit af6fbc5 (one client per trigger, a check every ``poll_interval``);
- ``unbudgeted``: this tree's trigger with ``status_calls_per_second = 0`` (no budget).

Prints, per variant, the triggerer's CPU as a share of one core averaged over the window and its peak memory
(summed over its process tree: supervisor, trigger runner, log server), the GetModelInvocationJob calls per
job-hour and the busiest second (from the emulator's request log). Then the jobs are released, and every task
instance must have resumed with exactly one event saying Completed. Speed and memory are printed, never
asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# The last commit whose trigger opened one client per wait and checked every poll_interval.
LEGACY_COMMIT = "af6fbc5040a5acd0a66500ee484ac77a4f43d9cc"
LEGACY_MODULE = "bench_legacy_triggers"
DAG_ID, TASK_ID, RUN_ID = "bench_triggerer_waits", "wait", "bench"
MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE_ARN = "arn:aws:iam::123456789012:role/BedrockBatchRole"
BUCKET = "bench-triggerer"
VARIANTS = ("legacy", "unbudgeted", "new")

DAG_FILE = '''
"""{count} deferrable sensors, one per job of the benchmark (bench_triggerer.py writes this file)."""
import json
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from bedrock_batch.sensors import BedrockBatchJobSensor

ARNS = json.loads((Path(__file__).parent / "job_arns.json").read_text())

with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    BedrockBatchJobSensor.partial(
        task_id="{task_id}", deferrable=True, poke_interval={poll_interval}
    ).expand(job_arn=ARNS)
'''


def quiet_logs() -> None:
    """Keep the local stack's per-call lines out of the report."""
    for name in ("werkzeug", "bedrock_batch_dev", "botocore", "airflow", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # the emulator's S3 pool, full while jobs run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the local stack and the jobs --------------------------------------------------------------------------


def start_stack(jobs: int) -> Any:
    from bedrock_batch_dev.emulator import LocalStack
    from bedrock_batch_dev.emulator.jobs import ServiceLimits, ServiceTimings

    # Jobs are validated at once, then stay Scheduled (queued) until released; 100 run at a time after that.
    stack = LocalStack(
        time_scale=1.0,
        max_concurrent_jobs=jobs + 10,
        limits=ServiceLimits(min_records_per_job=1, max_running_jobs=100),
        timings=ServiceTimings(
            submitted_seconds=0.5, validating_seconds=0.5, scheduled_seconds=10**8, records_per_second=1000
        ),
    )
    return stack.start()


def create_jobs(stack: Any, count: int) -> list[str]:
    s3, bedrock = stack.client("s3"), stack.client("bedrock")
    s3.create_bucket(Bucket=BUCKET)
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Summarize: Agent: Hello."}]}],
    }
    lines = [json.dumps({"recordId": f"R{n:010d}", "modelInput": body}) for n in range(2)]
    s3.put_object(Bucket=BUCKET, Key="input/part-0001.jsonl", Body=("\n".join(lines) + "\n").encode())
    arns = []
    for n in range(count):
        arns.append(
            bedrock.create_model_invocation_job(
                jobName=f"bench-wait-{n:05d}",
                roleArn=ROLE_ARN,
                modelId=MODEL_ID,
                clientRequestToken=f"benchwait{n:05d}",
                inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{BUCKET}/input/part-0001.jsonl"}},
                outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{BUCKET}/output/"}},
            )["jobArn"]
        )
    return arns


def wait_for_status(stack: Any, status: str, count: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(job["status"] == status for job in stack.admin.jobs()) >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"fewer than {count} jobs reached {status} within {timeout:.0f} s")


class RequestLog:
    """Every call the emulator answered, harvested before its bounded log (10,000 calls) rotates."""

    def __init__(self, stack: Any) -> None:
        self._stack = stack
        self.calls: list[dict[str, Any]] = []
        self._last: str | None = None

    def harvest(self) -> None:
        recorded = self._stack.admin.requests()
        keys = [json.dumps(r, sort_keys=True) for r in recorded]
        start = 0
        if self._last is not None:
            start = next((i + 1 for i in range(len(keys) - 1, -1, -1) if keys[i] == self._last), 0)
        self.calls.extend(recorded[start:])
        if keys:
            self._last = keys[-1]

    def times(self, operation: str, since: float, until: float) -> list[float]:
        moments = (
            datetime.fromisoformat(c["time"]).timestamp() for c in self.calls if c["operation"] == operation
        )
        return sorted(t for t in moments if since <= t <= until)


# --- Airflow -----------------------------------------------------------------------------------------------


def airflow_env(home: Path, stack: Any, jobs: int, legacy_dir: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    dags = home / "dags"
    bundle = {
        "name": "bench",
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": str(dags), "refresh_interval": 0},
    }
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {
            "region_name": "us-east-1",
            "service_config": {
                "s3": {"endpoint_url": stack.s3_endpoint_url},
                "bedrock": {"endpoint_url": stack.bedrock_endpoint_url},
            },
        },
    }
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "AWS_")) and key != "PYTHONPATH"
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([bundle]),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__TRIGGERER__CAPACITY": str(max(jobs, 1000)),
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONPATH": str(legacy_dir),
        }
    )
    return env


def airflow_cli(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [str(VENV_BIN / "airflow"), *args], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise RuntimeError(
            f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


def write_legacy_trigger(legacy_dir: Path) -> None:
    """The trigger module of LEGACY_COMMIT, importable as LEGACY_MODULE (it runs on today's hook)."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{LEGACY_COMMIT}:plugins/bedrock_batch/triggers.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    legacy_dir.mkdir(parents=True, exist_ok=True)
    (legacy_dir / f"{LEGACY_MODULE}.py").write_text(source)


def setup_airflow(env: dict[str, str], home: Path, arns: list[str], poll_interval: float) -> None:
    (home / "dags").mkdir(parents=True)
    (home / "plugins").mkdir()
    (home / "dags" / "job_arns.json").write_text(json.dumps(arns))
    (home / "dags" / f"{DAG_ID}.py").write_text(
        DAG_FILE.format(count=len(arns), dag_id=DAG_ID, task_id=TASK_ID, poll_interval=poll_interval)
    )
    airflow_cli(env, "db", "migrate")
    airflow_cli(env, "dags", "reserialize")
    # This process writes the run and the deferrals itself: Airflow reads its settings at import time.
    os.environ.update(env)
    sys.path.insert(0, env["PYTHONPATH"])
    from airflow.models.dagbag import DBDagBag
    from airflow.sdk import timezone
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    quiet_logs()  # Airflow's logging configuration now applies to this process

    with create_session() as session:
        dag = DBDagBag().get_latest_version_of_dag(DAG_ID, session=session)
        run = dag.create_dagrun(
            run_id=RUN_ID,
            run_after=timezone.utcnow(),
            run_type=DagRunType.MANUAL,
            triggered_by=DagRunTriggeredByType.TEST,
            state=DagRunState.RUNNING,
            session=session,
        )
        count = len(run.get_task_instances(session=session))
    if count != len(arns):
        raise RuntimeError(f"the run has {count} task instances, expected {len(arns)}")


def defer_all(arns: list[str], variant: str) -> None:
    """Defer every task instance to a fresh trigger of ``variant``, as the execution API records a deferral.

    Each trigger is the one ``BedrockBatchJobSensor.execute`` builds when it defers; the legacy variant
    rebuilds it as the legacy class from the same arguments.
    """
    import importlib
    import inspect

    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from airflow.providers.common.compat.sdk import TaskDeferred
    from airflow.sdk import timezone
    from airflow.sdk.bases.operator import ExecutorSafeguard
    from airflow.sdk.serde import serialize
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import delete, select, update

    from bedrock_batch.sensors import BedrockBatchJobSensor

    legacy_class = (
        importlib.import_module(LEGACY_MODULE).BedrockBatchJobTrigger if variant == "legacy" else None
    )
    with create_session() as session:
        # Task instances are deleted with their trigger (ON DELETE CASCADE): detach them first.
        session.execute(update(TaskInstance).values(trigger_id=None))
        session.execute(delete(Trigger))
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == RUN_ID)
        ).all()
        if len(tis) != len(arns):
            raise RuntimeError(f"{len(tis)} task instances, expected {len(arns)}")
        for ti in tis:
            sensor = BedrockBatchJobSensor(task_id=TASK_ID, job_arn=arns[ti.map_index], deferrable=True)
            try:
                # As the task runner calls it (without the sentinel, Airflow warns of a nested call).
                sensor.execute({}, **{f"{type(sensor).__name__}__sentinel": ExecutorSafeguard.sentinel_value})
            except TaskDeferred as deferred:
                trigger, method, kwargs, timeout = (
                    deferred.trigger,
                    deferred.method_name,
                    deferred.kwargs,
                    deferred.timeout,
                )
            else:
                raise RuntimeError("the sensor did not defer")
            if legacy_class is not None:
                accepted = inspect.signature(legacy_class).parameters
                trigger = legacy_class(**{k: v for k, v in trigger.serialize()[1].items() if k in accepted})
            row = Trigger.from_object(trigger)
            session.add(row)
            session.flush()
            ti.state = TaskInstanceState.DEFERRED
            ti.try_number = 1
            ti.trigger_id = row.id
            ti.next_method = method
            ti.next_kwargs = serialize(kwargs or {})
            ti.trigger_timeout = timezone.utcnow() + timeout if timeout else None


def resumed_task_instances() -> dict[int, dict[str, Any]]:
    """map_index → the event each resumed task instance holds (task instances still deferred are left out)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk.serde import deserialize
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    resumed = {}
    with create_session() as session:
        for ti in session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == RUN_ID)
        ):
            if ti.state != TaskInstanceState.DEFERRED:
                kwargs = deserialize(ti.next_kwargs) if ti.next_kwargs else {}
                resumed[ti.map_index] = {"state": ti.state, "event": kwargs.get("event")}
    return resumed


# --- the triggerer -----------------------------------------------------------------------------------------


@dataclass
class ProcessTree:
    """CPU seconds and memory of a process and its descendants, sampled."""

    root: psutil.Process
    cpu: dict[int, float] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    peak_rss: int = 0
    peak_pss: int = 0
    peak_connections: int = 0
    peak_rss_by_role: dict[str, int] = field(default_factory=dict)

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def sample(self, memory_detail: bool = False, port: int | None = None) -> None:
        rss = pss = connections = 0
        for process in self.processes():
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    self.cpu[process.pid] = times.user + times.system
                    if process.pid not in self.names:
                        self.names[process.pid] = self.role(process)
                    role_rss = process.memory_info().rss
                    rss += role_rss
                    role = self.names[process.pid]
                    self.peak_rss_by_role[role] = max(self.peak_rss_by_role.get(role, 0), role_rss)
                    if memory_detail:
                        pss += process.memory_full_info().pss
                    if port is not None:
                        connections += sum(
                            1 for c in process.net_connections("tcp") if c.raddr and c.raddr.port == port
                        )
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_connections = max(self.peak_connections, connections)

    def cpu_seconds(self) -> dict[int, float]:
        return dict(self.cpu)

    def role(self, process: psutil.Process) -> str:
        """Airflow 3's triggerer: a supervisor, the trigger runner it forks, and a log server."""
        if process.pid == self.root.pid:
            return "supervisor"
        return "log server" if "serve-logs" in " ".join(process.cmdline()) else "runner"


def trigger_log_files(home: Path) -> set[Path]:
    return set((home / "logs").glob(f"dag_id={DAG_ID}/**/*.trigger.*.log"))


@dataclass
class Measurement:
    variant: str
    jobs: int
    budget: float | None
    startup_seconds: float = 0.0
    window: float = 0.0
    cpu_share: float = 0.0
    cpu_by_process: dict[str, float] = field(default_factory=dict)
    peak_rss: int = 0
    peak_pss: int = 0
    peak_rss_by_role: dict[str, int] = field(default_factory=dict)
    peak_connections: int = 0
    calls: int = 0
    busiest_second: int = 0
    polled_jobs: int = 0
    completion_seconds: float | None = None
    events_ok: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def calls_per_job_hour(self) -> float:
        return self.calls / (self.jobs * self.window / 3600) if self.window else 0.0


def run_variant(
    variant: str,
    *,
    home: Path,
    env: dict[str, str],
    stack: Any,
    requests: RequestLog,
    arns: list[str],
    window: float,
    settle: float,
    budget: float,
    release: bool,
) -> Measurement:
    defer_all(arns, variant)
    # Each triggerer's log server gets its own port: the previous one may still hold its port a moment.
    variant_env = {**env, "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
    if variant == "new":
        variant_env["AIRFLOW__BEDROCK_BATCH__STATUS_CALLS_PER_SECOND"] = str(budget)
    elif variant == "unbudgeted":
        variant_env["AIRFLOW__BEDROCK_BATCH__STATUS_CALLS_PER_SECOND"] = "0"
    measurement = Measurement(variant, len(arns), budget if variant == "new" else None)
    before = trigger_log_files(home)
    log_path = home / f"triggerer-{variant}.log"
    port = int(stack.bedrock_endpoint_url.rsplit(":", 1)[1])
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "triggerer"],
            env=variant_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    tree = ProcessTree(psutil.Process(process.pid))
    try:
        # Startup: until every trigger has logged its start, then a settling time (the first checks).
        while len(trigger_log_files(home) - before) < len(arns):
            if process.poll() is not None:
                raise RuntimeError(f"the triggerer exited ({process.returncode}); see {log_path}")
            if time.monotonic() - started > 600:
                raise RuntimeError(f"not every trigger started within 600 s; see {log_path}")
            tree.sample()
            requests.harvest()
            time.sleep(1)
        measurement.startup_seconds = time.monotonic() - started
        print(
            f"  {variant}: {len(arns):,} triggers running after {measurement.startup_seconds:.0f} s",
            flush=True,
        )
        settle_until = time.monotonic() + settle
        while time.monotonic() < settle_until:
            tree.sample()
            requests.harvest()
            time.sleep(1)

        tree.peak_rss = tree.peak_pss = tree.peak_connections = 0
        tree.peak_rss_by_role.clear()
        tree.sample(memory_detail=True, port=port)
        cpu_start, wall_start, posix_start = tree.cpu_seconds(), time.monotonic(), time.time()
        next_detail = 0.0
        while (now := time.monotonic()) < wall_start + window:
            detail = now >= next_detail
            tree.sample(memory_detail=detail, port=port if detail else None)
            if detail:
                next_detail = now + 5
                requests.harvest()
            time.sleep(1)
        tree.sample(memory_detail=True, port=port)
        cpu_end, wall_end, posix_end = tree.cpu_seconds(), time.monotonic(), time.time()
        requests.harvest()

        measurement.window = wall_end - wall_start
        by_name: Counter[str] = Counter()
        for pid, seconds in cpu_end.items():
            by_name[tree.names.get(pid, str(pid))] += seconds - cpu_start.get(pid, 0.0)
        measurement.cpu_by_process = {name: s / measurement.window for name, s in by_name.items()}
        measurement.cpu_share = sum(by_name.values()) / measurement.window
        measurement.peak_rss, measurement.peak_pss = tree.peak_rss, tree.peak_pss
        measurement.peak_rss_by_role = dict(tree.peak_rss_by_role)
        measurement.peak_connections = tree.peak_connections
        calls = requests.times("GetModelInvocationJob", posix_start, posix_end)
        measurement.calls = len(calls)
        measurement.busiest_second = max(Counter(int(t) for t in calls).values(), default=0)
        window_calls = [
            c
            for c in requests.calls
            if c["operation"] == "GetModelInvocationJob"
            and posix_start <= datetime.fromisoformat(c["time"]).timestamp() <= posix_end
        ]
        measurement.polled_jobs = len({c["params"].get("jobIdentifier") for c in window_calls})

        if release:
            measurement.completion_seconds, measurement.events_ok, measurement.problems = release_and_check(
                home, stack, requests, arns, before
            )
    finally:
        stop(process, tree)
    return measurement


def release_and_check(
    home: Path, stack: Any, requests: RequestLog, arns: list[str], before: set[Path]
) -> tuple[float, int, list[str]]:
    """Let every job run to Completed, wait for every task instance to resume, and check their events."""
    released = time.monotonic()
    stack.admin.configure(scheduled_seconds=0)
    print("  jobs released; waiting for every trigger to fire", flush=True)
    deadline = released + 3600
    while len(resumed := resumed_task_instances()) < len(arns) and time.monotonic() < deadline:
        requests.harvest()
        time.sleep(5)
    completion = time.monotonic() - released
    problems = []
    ok = 0
    for index, arn in enumerate(arns):
        got = resumed.get(index)
        event = got["event"] if got else None
        if not event:
            problems.append(f"task {index}: no event")
        elif (event.get("status"), event.get("job_status"), event.get("job_arn")) != (
            "success",
            "Completed",
            arn,
        ):
            problems.append(f"task {index}: unexpected event {event.get('status')} {event.get('job_status')}")
        else:
            ok += 1
    fired = Counter()
    for path in trigger_log_files(home) - before:
        fired[path.parent.name] += path.read_text(errors="replace").count("Trigger fired event")
    extra = {name: n for name, n in fired.items() if n != 1}
    if extra:
        problems.append(
            f"{len(extra)} triggers fired other than exactly one event: {sorted(extra.items())[:5]}"
        )
    if len(fired) != len(arns):
        problems.append(f"trigger logs of {len(fired)} tasks, expected {len(arns)}")
    return completion, ok, problems


def stop(process: subprocess.Popen[bytes], tree: ProcessTree) -> None:
    """Stop the triggerer this benchmark started (SIGTERM, then SIGKILL to its own process tree)."""
    members = tree.processes()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()


# --- the schedule, projected -------------------------------------------------------------------------------


def projection(poll_interval: float, budget: float, waits: int) -> list[str]:
    """What the backing-off schedule costs over whole waits (pure function, not measured)."""
    from bedrock_batch.jobs import MAX_POLL_INTERVAL, POLL_JITTER, PollSchedule, poll_delay

    lines = [
        f"schedule over whole waits (poll_interval {poll_interval:.0f} s, cap {MAX_POLL_INTERVAL:.0f} s, "
        f"mean jitter {POLL_JITTER / 2:.0%}; computed from jobs.PollSchedule, not measured):"
    ]
    for hours in (1, 24, 168):
        schedule, t, checks = PollSchedule(poll_interval), 0.0, 0
        origin = 1.7e9
        while t < hours * 3600:
            checks += 1
            schedule.observe(
                {"status": "Scheduled", "submitTime": datetime.fromtimestamp(origin, UTC)}, origin + t
            )
            t += schedule.next_delay(origin + t, draw=0.5)
        lines.append(
            f"  one {hours:>3} h wait: {checks:,} checks ({checks / hours:.1f} per job-hour; fixed polling: "
            f"{3600 / poll_interval:.0f}), noticed {t - hours * 3600:,.0f} s after the job ended"
        )
    for hours in (24, 168):
        # Waits whose ages are spread evenly over 0..hours: each calls once per delay(age).
        rate = sum(
            1 / poll_delay((i + 0.5) / waits * hours * 3600, poll_interval, draw=0.5) for i in range(waits)
        )
        lines.append(
            f"  {waits:,} waits with ages spread over 0-{hours} h: {rate:.2f} calls/s "
            f"({rate * 3600 / waits:.1f} per job-hour; budget {budget:g}/s, "
            f"fixed polling {waits / poll_interval:.1f}/s)"
        )
    return lines


# --- main --------------------------------------------------------------------------------------------------


def report(measurements: list[Measurement], args: argparse.Namespace) -> None:
    mb = 1024 * 1024
    print()
    print(
        f"{args.jobs:,} jobs waiting on one triggerer; poll_interval {args.poll_interval:g} s; "
        f"{args.window:.0f} s measured per variant; {os.cpu_count()} CPUs"
    )
    for m in measurements:
        budget = f"budget {m.budget:g}/s" if m.budget is not None else "no budget"
        cpu = ", ".join(f"{role} {share:.3f}" for role, share in sorted(m.cpu_by_process.items()))
        rss = ", ".join(f"{role} {peak / mb:,.0f}" for role, peak in sorted(m.peak_rss_by_role.items()))
        print(f"{m.variant} ({budget}; all triggers started {m.startup_seconds:.0f} s after launch):")
        print(f"  CPU, share of one core over the window: {m.cpu_share:.3f} ({cpu})")
        print(f"  peak memory: RSS {m.peak_rss / mb:,.0f} MB ({rss}), PSS {m.peak_pss / mb:,.0f} MB")
        print(f"  open connections to the Bedrock endpoint, peak: {m.peak_connections}")
        print(
            f"  GetModelInvocationJob: {m.calls:,} calls ({m.calls / m.window:.2f}/s, "
            f"{m.calls_per_job_hour:.1f} per job-hour), busiest second {m.busiest_second}, "
            f"{m.polled_jobs:,} jobs polled in the window"
        )
    new = next((m for m in measurements if m.variant == "new"), None)
    if new is None:
        return
    for m in measurements:
        if m is not new and new.cpu_share and new.peak_rss and new.calls:
            print(
                f"{m.variant} / new: CPU {m.cpu_share / new.cpu_share:.1f}x, "
                f"RSS {m.peak_rss / new.peak_rss:.2f}x, PSS {m.peak_pss / max(new.peak_pss, 1):.2f}x, "
                f"calls {m.calls / new.calls:.1f}x"
            )
    if new.completion_seconds is not None:
        print(
            f"after the release: {new.events_ok:,} of {new.jobs:,} task instances resumed with one Completed "
            f"event, the last {new.completion_seconds:.0f} s after the release"
        )
        for problem in new.problems:
            print(f"PROBLEM: {problem}")
    targets = [
        ("CPU < 0.25 of a core", new.cpu_share < 0.25, f"{new.cpu_share:.3f}"),
        ("peak RSS < 1 GB", new.peak_rss < 1e9, f"{new.peak_rss / 1e9:.2f} GB"),
        # A call that leaves late (a busy event loop) can share its second with the next one, on time.
        # A saturated bucket allows one call at the start of the window plus the rate for the rest of it.
        (
            f"calls within the budget of {args.budget:g}/s",
            new.calls <= args.budget * new.window + 1 and new.busiest_second <= math.ceil(args.budget) + 1,
            f"{new.calls:,} calls in {new.window:.1f} s, busiest second {new.busiest_second}",
        ),
    ]
    for name, met, value in targets:
        print(f"target {name}: {'met' if met else 'NOT met'} ({value})")
    print()
    for line in projection(args.poll_interval, args.budget, args.jobs):
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--window", type=float, default=300.0, help="measured seconds per variant")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after start-up before measuring")
    parser.add_argument("--poll-interval", type=float, default=60.0, help="the sensors' poke_interval")
    parser.add_argument(
        "--budget", type=float, default=2.0, help="status_calls_per_second of the new variant"
    )
    parser.add_argument(
        "--baseline",
        default="legacy",
        help=f"comma-separated variants measured before 'new': {', '.join(VARIANTS[:-1])}, or none",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 jobs, 60 s windows")
    parser.add_argument("--keep", action="store_true", help="keep the Airflow home (logs, database)")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.window, args.settle = (
            min(args.jobs, 100),
            min(args.window, 60.0),
            min(args.settle, 10.0),
        )
    baselines = [] if args.baseline == "none" else [b.strip() for b in args.baseline.split(",") if b.strip()]
    unknown = set(baselines) - set(VARIANTS[:-1])
    if unknown:
        parser.error(f"unknown baseline {sorted(unknown)}")

    logging.basicConfig(level=logging.WARNING)
    quiet_logs()
    home = Path(tempfile.mkdtemp(prefix="bench-triggerer-"))
    stack = start_stack(args.jobs)
    try:
        begun = time.monotonic()
        arns = create_jobs(stack, args.jobs)
        wait_for_status(stack, "Scheduled", args.jobs)
        print(
            f"{args.jobs:,} jobs Scheduled in {time.monotonic() - begun:.0f} s; Airflow home {home}",
            flush=True,
        )
        legacy_dir = home / "legacy"
        write_legacy_trigger(legacy_dir)
        env = airflow_env(home, stack, args.jobs, legacy_dir)
        setup_airflow(env, home, arns, args.poll_interval)
        requests = RequestLog(stack)
        measurements = []
        for variant in [*baselines, "new"]:
            measurements.append(
                run_variant(
                    variant,
                    home=home,
                    env=env,
                    stack=stack,
                    requests=requests,
                    arns=arns,
                    window=args.window,
                    settle=args.settle,
                    budget=args.budget,
                    release=variant == "new",
                )
            )
        report(measurements, args)
    except BaseException:
        args.keep = True
        raise
    finally:
        stack.stop()
        if args.keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
