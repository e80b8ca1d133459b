"""The README's first command, `make demo`, end to end as a new user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import psutil
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.mark.timeout(600)
def test_the_demo_runs_the_dag_on_the_local_stack_and_leaves_nothing_running(tmp_path):
    # A clean environment: the demo sets up its own Airflow home, connection and configuration.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_", "CALL_CENTER"))}
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    result = subprocess.run(
        [sys.executable, "-m", "bedrock_batch_dev.demo", "--calls", "240", "--home", str(tmp_path / "home")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "Wrote 240 sample transcripts" in out
    report = dict(re.findall(r"^\| (\w+) \| ([^|]+) \|$", out, re.MULTILINE))
    assert (report["input_records"], report["succeeded"], report["failed"]) == ("240", "240", "0")
    assert "(240 rows)" in out
    assert out.count('"status": "succeeded"') == 3
    assert "the local stack is stopped" in out
    # Nothing it started (the stack, Airflow processes) outlives it.
    leftovers = [c for c in psutil.Process().children(recursive=True) if c.pid not in before]
    assert [c.cmdline() for c in leftovers if c.is_running()] == []


@pytest.mark.timeout(600)
def test_the_demo_runs_another_shipped_pipeline(tmp_path):
    # `make demo PIPELINE=support_tickets`: CSV tickets through the support_tickets folder's DAG.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_", "BEDROCK_BATCH_PIPELINE"))
    }
    command = [sys.executable, "-m", "bedrock_batch_dev.demo", "--pipeline", "support_tickets"]
    command += ["--records", "150", "--home", str(tmp_path / "home")]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "Wrote 150 sample tickets to s3://demo-source/support_tickets/" in out
    assert "`airflow dags test support_tickets " in out
    report = dict(re.findall(r"^\| (\w+) \| ([^|]+) \|$", out, re.MULTILINE))
    assert (report["input_records"], report["succeeded"], report["failed"]) == ("150", "150", "0")
    assert "support_tickets/support_ticket_extractions/ds=" in out
    assert "(150 rows)" in out
    assert out.count('"status": "succeeded"') == 3
    assert out.count('"urgency": ') == 3  # the reply's typed columns, printed per row
