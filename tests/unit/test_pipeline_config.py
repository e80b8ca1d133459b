"""``job_wait_timeout_minutes``: validated when the configuration is read, and the execution_timeout of the
call-center DAG's submit tasks (both rounds)."""

from __future__ import annotations

import importlib.util
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bedrock_batch.config import PipelineConfig
from bedrock_batch.errors import ConfigError
from tests.conftest import DAGS_FOLDER, REPO

SHIPPED = REPO / "include" / "config" / "call_center_summarization.json"


def write_config(tmp_path: Path, **overrides: Any) -> Path:
    path = tmp_path / "call_center_summarization.json"
    path.write_text(json.dumps({**json.loads(SHIPPED.read_text()), **overrides}))
    return path


class TestJobWaitTimeoutMinutes:
    def test_shipped_configuration_waits_up_to_the_jobs_own_timeout(self):
        assert PipelineConfig.load(SHIPPED).job_wait_timeout_minutes is None

    @pytest.mark.parametrize("minutes", [1, 90, 60 * 72])
    def test_whole_minutes_are_accepted(self, tmp_path, minutes):
        config = PipelineConfig.load(write_config(tmp_path, job_wait_timeout_minutes=minutes))
        assert config.job_wait_timeout_minutes == minutes

    @pytest.mark.parametrize("bad", [0, -5, 1.5, True, "30"])
    def test_anything_else_is_refused_naming_the_setting(self, tmp_path, bad):
        with pytest.raises(ConfigError, match=r"job_wait_timeout_minutes must be a whole number of minutes"):
            PipelineConfig.load(write_config(tmp_path, job_wait_timeout_minutes=bad))


def load_call_center_dag(monkeypatch: pytest.MonkeyPatch, config: Path) -> Any:
    monkeypatch.setenv("CALL_CENTER_CONFIG", str(config))
    name = "call_center_summarization"
    spec = importlib.util.spec_from_file_location(f"config_{name}", DAGS_FOLDER / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


@pytest.mark.parametrize(("minutes", "expected"), [(45, timedelta(minutes=45)), (None, None)])
def test_the_dag_applies_it_to_both_submit_tasks_and_nothing_else(tmp_path, monkeypatch, minutes, expected):
    dag = load_call_center_dag(monkeypatch, write_config(tmp_path, job_wait_timeout_minutes=minutes))
    timeouts = {task.task_id: task.execution_timeout for task in dag.tasks}
    assert (timeouts.pop("submit"), timeouts.pop("submit_retry")) == (expected, expected)
    assert set(timeouts.values()) == {None}


def test_the_call_center_dag_keeps_its_id_params_tasks_and_table(tmp_path, monkeypatch):
    dag = load_call_center_dag(monkeypatch, write_config(tmp_path))
    assert dag.dag_id == "call_center_summarization"
    assert list(dag.params) == [
        "source_uri",
        "source_format",
        "staging_uri",
        "results_uri",
        "model_id",
        "role_arn",
        "aws_conn_id",
        "max_records",
        "prompt_version",
        "max_estimated_cost_usd",
        "cost_approval",
    ]
    # Today's tasks, plus the check of the run's parameters before them, the cost guard before any job and
    # the collect of each job in a task of its own.
    assert sorted(task.task_id for task in dag.tasks) == sorted(
        [
            "check_parameters",
            "wait_for_source",
            "prepare",
            "cost_guard",
            "submit",
            "on_demand",
            "collect_job",
            "collect",
            "submit_retry",
            "on_demand_retry",
            "publish",
        ]
    )
    publish = dag.get_task("publish")
    assert (publish.table_name, publish.key_column, publish.glue_table) == (
        "call_summaries",
        "call_id",
        "call_summaries",
    )
    assert [outlet.name for outlet in publish.outlets] == ["call_summaries"]
    assert (dag.owner, sorted(dag.tags)) == ("data-platform", ["batch-inference", "bedrock", "call-center"])
