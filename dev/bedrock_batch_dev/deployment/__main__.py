"""``make airflow``: a local Airflow UI on the local AWS stack: the Celery stack of docker-compose.yaml.

Starts PostgreSQL, Redis, the local AWS stack, the API server, scheduler, DAG processor, triggerer and a
Celery worker; writes sample transcripts for yesterday (UTC), unpauses the call-center DAGs, prints the UI's
address and login, and waits. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bedrock_batch_dev.deployment import local_setup
from bedrock_batch_dev.deployment.compose import COMPOSE_FILE, REPO, load_compose
from bedrock_batch_dev.deployment.deployment import Deployment, DeploymentSettings, install_signal_handlers
from bedrock_batch_dev.deployment.processes import DeploymentError

READY_PREFIX = "airflow ready:"


def compose_defaults(path: Path = COMPOSE_FILE) -> dict[str, int]:
    """The UI port and the number of sample calls the compose file uses by default."""
    services = load_compose(path)["services"]
    published = str(services["airflow-apiserver"]["ports"][0]).split(":")[0]
    return {
        "api_port": int(published),
        "calls": int(services["local-setup"]["environment"]["LOCAL_SAMPLE_CALLS"]),
    }


def build_parser() -> argparse.ArgumentParser:
    defaults = compose_defaults()
    parser = argparse.ArgumentParser(prog="python -m bedrock_batch_dev.deployment", description=__doc__)
    parser.add_argument("--run-dir", type=Path, default=REPO / ".local" / "airflow", help="emptied on start")
    parser.add_argument(
        "--api-port", type=int, default=defaults["api_port"], help="UI and API port (0: any free port)"
    )
    parser.add_argument("--workers", type=int, default=1, help="Celery workers")
    parser.add_argument("--calls", type=int, default=defaults["calls"], help="sample transcripts to write")
    parser.add_argument("--time-scale", type=float, help="emulated seconds per wall second (compose default)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    install_signal_handlers()
    settings = DeploymentSettings(
        run_dir=args.run_dir, workers=args.workers, api_port=args.api_port, time_scale=args.time_scale
    )
    deployment = Deployment(settings)
    print(
        f"Starting a local Airflow (the Celery stack of docker-compose.yaml) in {deployment.run_dir} ...",
        flush=True,
    )
    try:
        deployment.start()
        _seed(deployment, args.calls)
        _announce(deployment)
        while True:
            for name, process in deployment.processes.items():
                if not process.running:
                    raise DeploymentError(
                        f"{name} exited with code {process.returncode}; "
                        f"last lines of {process.log_path}:\n{process.log_tail()}"
                    )
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        return _stop(deployment, 0)
    except DeploymentError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return _stop(deployment, 1)
    finally:
        deployment.stop()


def _stop(deployment: Deployment, code: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave processes behind
    try:
        deployment.stop()
    except DeploymentError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    print("Stopped; no process of the local Airflow is left.", flush=True)
    return code


def _seed(deployment: Deployment, calls: int) -> None:
    """Sample calls for yesterday (and for the date the scheduler's first run reads, when it differs),
    then the call-center DAGs unpaused."""
    config = deployment.pipeline_config
    s3 = deployment.s3()
    days = dict.fromkeys([local_setup.yesterday(), local_setup.latest_scheduled_ds(str(config["schedule"]))])
    for ds in days:
        local_setup.write_sample_calls(s3, config, ds, calls)
        print(f"Wrote {calls:,} sample transcripts to {local_setup.source_prefix(config, ds)}", flush=True)
    for dag_id in local_setup.CALL_CENTER_DAGS:
        deployment.client.unpause(dag_id)
    print(f"Unpaused {', '.join(local_setup.CALL_CENTER_DAGS)}", flush=True)


def _announce(deployment: Deployment) -> None:
    user, password = deployment.login
    assert deployment.aws is not None
    print(
        f"{READY_PREFIX} url={deployment.api_url} user={user} password={password} "
        f"s3={deployment.aws.s3_url} bedrock={deployment.aws.bedrock_url} run_dir={deployment.run_dir} "
        f"started_in={deployment.timings['start']:.0f}s",
        flush=True,
    )
    print(
        f"\nOpen {deployment.api_url}/dags/call_center_summarization and log in as {user} / {password}.\n"
        f"Bedrock batch jobs, quotas and daily runs: {deployment.api_url}/bedrock-batch/ (Browse menu).\n"
        f"Component logs: {deployment.logs_dir}/<component>.log; task logs in the UI.\n"
        "Press Ctrl-C to stop everything.",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
