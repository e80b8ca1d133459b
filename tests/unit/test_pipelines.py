"""Pipeline folders read and checked without Airflow: defaults, the override file, and errors that name the
file and the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import pendulum
import pytest
import yaml

from bedrock_batch.errors import ConfigError, PipelineError
from bedrock_batch.pipelines import PARTITION_EXPRESSIONS, config_env_name, load_pipeline
from tests.conftest import PLUGINS_FOLDER, REPO

SHIPPED = REPO / "include" / "pipelines"
CALL_CENTER_JSON = REPO / "include" / "config" / "call_center_summarization.json"
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["a", "b"]}, "score": {"type": "integer"}},
    "required": ["label", "score"],
    "additionalProperties": False,
}
MINIMAL = {
    "source_uri": "s3://source/{ds}/",
    "source_format": "jsonl",
    "staging_uri": "s3://staging/x",
    "results_uri": "s3://results/x",
    "model_id": "anthropic.claude-3-haiku-20240307-v1:0",
    "role_arn": "arn:aws:iam::123456789012:role/BedrockBatchServiceRole",
}


def write_folder(
    root: Path,
    name: str = "orders",
    *,
    schema: Any = SCHEMA,
    user: str = "Classify {title}: {text}",
    **fields: Any,
) -> Path:
    folder = root / name
    (folder / "prompts" / "v1").mkdir(parents=True)
    (folder / "prompts" / "v1" / "system.txt").write_text("You classify orders.")
    (folder / "prompts" / "v1" / "user.txt").write_text(user)
    if schema is not None:
        (folder / "reply_schema.json").write_text(json.dumps(schema))
    (folder / "pipeline.yaml").write_text(yaml.safe_dump({**MINIMAL, **fields}))
    return folder


class TestShippedPipelines:
    @pytest.mark.parametrize(
        ("name", "dag_id", "table", "key"),
        [
            ("call_center_summarization", "call_center_summarization", "call_summaries", "call_id"),
            ("product_reviews", "product_reviews", "product_reviews", "review_id"),
            ("support_tickets", "support_tickets", "support_ticket_extractions", "ticket_id"),
        ],
    )
    def test_each_loads_with_its_dag_table_and_key(self, name, dag_id, table, key):
        pipeline = load_pipeline(name, environ={})
        assert (pipeline.dag_id, pipeline.table, pipeline.key_column) == (dag_id, table, key)
        assert pipeline.reply_schema == SHIPPED / name / "reply_schema.json"

    def test_call_center_reads_its_json_and_call_center_config_replaces_it(self, tmp_path):
        shipped = load_pipeline("call_center_summarization", environ={})
        assert shipped.config_file == CALL_CENTER_JSON
        assert shipped.config.model_id == json.loads(CALL_CENTER_JSON.read_text())["model_id"]
        assert (shipped.prompt_name, shipped.prompts_root) == ("call_center_summary", None)

        other = tmp_path / "call_center.json"
        other.write_text(
            json.dumps({**json.loads(CALL_CENTER_JSON.read_text()), "model_id": "amazon.nova-lite-v1:0"})
        )
        pipeline = load_pipeline("call_center_summarization", environ={"CALL_CENTER_CONFIG": str(other)})
        assert (pipeline.config.model_id, pipeline.config_file) == ("amazon.nova-lite-v1:0", other)
        # Its own variable is CALL_CENTER_CONFIG only: the generic one is not read for it.
        generic = {config_env_name("call_center_summarization"): str(other)}
        assert load_pipeline("call_center_summarization", environ=generic).config_file == CALL_CENTER_JSON


class TestFolderDefaults:
    def test_a_minimal_folder_takes_its_name_everywhere(self, tmp_path):
        pipeline = load_pipeline(write_folder(tmp_path, key_column="order_id"), environ={})
        assert (pipeline.name, pipeline.dag_id, pipeline.table) == ("orders", "orders", "orders")
        assert (pipeline.key_column, pipeline.config.id_column) == ("order_id", "order_id")
        assert pipeline.config.glue_table == "orders"
        assert pipeline.config.text_column is None  # the placeholders name the columns
        assert (pipeline.prompt_name, pipeline.prompts_root) == ("prompts", tmp_path / "orders")
        assert pipeline.reply_schema == tmp_path / "orders" / "reply_schema.json"
        assert (pipeline.structured_output, pipeline.repair_invalid_replies) == ("auto", False)
        assert pipeline.manual_run_partition == "previous_day"
        assert pipeline.owner == "data-platform"
        assert pipeline.tags == ("bedrock", "batch-inference")
        assert pipeline.config.schedule == "0 6 * * *"

    def test_without_a_schema_file_replies_are_free_text(self, tmp_path):
        assert load_pipeline(write_folder(tmp_path, schema=None), environ={}).reply_schema is None

    def test_records_already_in_bedrock_format_need_no_prompt(self, tmp_path):
        folder = write_folder(tmp_path, source_format="bedrock")
        pipeline = load_pipeline(folder, environ={})
        assert (pipeline.prompt_name, pipeline.prompts_root) == (None, None)


class TestOverrideFile:
    def test_the_pipelines_variable_overrides_pipeline_yaml_setting_by_setting(self, tmp_path):
        folder = write_folder(tmp_path, max_tokens=300)
        override = tmp_path / "prod.yaml"
        override.write_text("staging_uri: s3://prod-staging/orders\nquotas: {max_concurrent_jobs: 3}\n")
        pipeline = load_pipeline(folder, environ={"BEDROCK_BATCH_PIPELINE_ORDERS_CONFIG": str(override)})
        assert pipeline.config.staging_uri == "s3://prod-staging/orders"
        assert pipeline.config.quotas == {"max_concurrent_jobs": 3}
        assert (pipeline.config.max_tokens, pipeline.config.source_uri) == (300, MINIMAL["source_uri"])
        assert pipeline.config_file == override

    def test_config_env_names_another_variable_and_config_file_is_the_fallback(self, tmp_path):
        (tmp_path / "base.json").write_text(json.dumps({"max_tokens": 200}))
        folder = write_folder(tmp_path, config_env="ORDERS_SETTINGS", config_file="../base.json")
        assert load_pipeline(folder, environ={}).config.max_tokens == 200
        (tmp_path / "env.json").write_text(json.dumps({"max_tokens": 100}))
        environ = {"ORDERS_SETTINGS": str(tmp_path / "env.json")}
        assert load_pipeline(folder, environ=environ).config.max_tokens == 100

    def test_a_bad_value_in_the_override_names_that_file(self, tmp_path):
        folder = write_folder(tmp_path)
        override = tmp_path / "prod.json"
        override.write_text(json.dumps({"max_tokens": "lots"}))
        with pytest.raises(PipelineError, match=rf"^{override}: max_tokens: must be a whole number"):
            load_pipeline(folder, environ={"BEDROCK_BATCH_PIPELINE_ORDERS_CONFIG": str(override)})

    def test_a_variable_naming_no_file_fails(self, tmp_path):
        with pytest.raises(PipelineError, match=r"BEDROCK_BATCH_PIPELINE_ORDERS_CONFIG: .* is not a file"):
            load_pipeline(
                write_folder(tmp_path), environ={"BEDROCK_BATCH_PIPELINE_ORDERS_CONFIG": "/nope.json"}
            )


class TestErrorsNameTheFileAndTheField:
    @pytest.mark.parametrize(
        ("fields", "field", "message"),
        [
            ({"model_id": "acme.unknown-model-v1"}, "model_id", "acme.unknown-model-v1"),
            ({"modle_id": "x"}, "modle_id", "unknown field"),
            ({"structured_output": "json"}, "structured_output", "must be one of"),
            ({"structured_output": "tool", "invocation_type": "Converse"}, "structured_output", "Converse"),
            ({"invocation_type": "Invoke"}, "invocation_type", "must be one of"),
            ({"source_format": "xlsx"}, "source_format", "must be one of"),
            (
                {"prompt_columns": {"title": "t", "body": "b"}},
                "prompt_columns",
                r"\['body'\] are not placeholders",
            ),
            ({"prompt_version": "v9"}, "prompt_version", "has no system.txt"),
            ({"table": "Order Results"}, "table", "lowercase letters"),
            ({"key_column": "order id"}, "key_column", "column name"),
            ({"dag_id": "orders/daily"}, "dag_id", "letters, digits"),
            ({"manual_run_partition": "yesterday"}, "manual_run_partition", "previous_day"),
            ({"start_date": "first of May"}, "start_date", "YYYY-MM-DD"),
            ({"tags": "bedrock"}, "tags", "list of strings"),
            ({"repair_invalid_replies": "yes"}, "repair_invalid_replies", "true or false"),
            ({"max_tokens": "512"}, "max_tokens", "whole number"),
            ({"prepare_processes": -1}, "prepare_processes", "at least 1"),
            ({"prepare_processes": "2"}, "prepare_processes", "whole number"),
            ({"passthrough_columns": "rating"}, "passthrough_columns", "list of column names"),
            ({"reply_schema": "missing.json"}, "reply_schema", "does not exist"),
            ({"prompt_name": "call_center_summary"}, "prompt_name", "has its own prompts/"),
            ({"quotas": {"max_records_per_job": 0}}, "quotas", "positive integer"),
            ({"max_estimated_cost_usd": "ten"}, "max_estimated_cost_usd", "must be a number"),
            ({"max_estimated_cost_usd": -1}, "max_estimated_cost_usd", "at least 0"),
            ({"max_estimated_cost_usd": 5, "cost_approval": "yes"}, "cost_approval", "true or false"),
            ({"cost_approval": True}, "cost_approval", "max_estimated_cost_usd, which is not set"),
            ({"output_tokens_estimate": "average"}, "output_tokens_estimate", r"\['max_tokens', 'history'\]"),
            ({"alert_after": "6 hours"}, "alert_after", "positive duration"),
            ({"alert_after": "0h"}, "alert_after", "positive duration"),
        ],
    )
    def test_pipeline_yaml(self, tmp_path, fields, field, message):
        folder = write_folder(tmp_path, **fields)
        with pytest.raises(PipelineError, match=rf"^{folder / 'pipeline.yaml'}: {field}: .*{message}"):
            load_pipeline(folder, environ={})

    def test_a_schema_outside_the_structured_outputs_subset_names_the_schema_file_and_pointer(self, tmp_path):
        schema = {**SCHEMA, "additionalProperties": True}
        folder = write_folder(tmp_path, schema=schema)
        with pytest.raises(PipelineError, match=rf"^{folder / 'reply_schema.json'}: schema \(root\): "):
            load_pipeline(folder, environ={})

    def test_unreadable_files(self, tmp_path):
        folder = write_folder(tmp_path)
        (folder / "pipeline.yaml").write_text("model_id: [unclosed\n")
        with pytest.raises(PipelineError, match=rf"^{folder / 'pipeline.yaml'}: not valid YAML"):
            load_pipeline(folder, environ={})
        (folder / "pipeline.yaml").unlink()
        with pytest.raises(PipelineError, match=rf"^{folder / 'pipeline.yaml'}: no such file"):
            load_pipeline(folder, environ={})

    def test_an_unknown_name_lists_where_it_looked(self):
        with pytest.raises(ConfigError, match=r"cannot find include/pipelines/no_such_pipeline"):
            load_pipeline("no_such_pipeline", environ={})


class TestPartition:
    """The templates' partition expression, rendered as Airflow renders it (undefined names are errors)."""

    @staticmethod
    def render(rule: str, **context: Any) -> str:
        macros = SimpleNamespace(ds_add=lambda ds, days: pendulum.parse(ds).add(days=days).to_date_string())
        environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
        return environment.from_string("{{ " + PARTITION_EXPRESSIONS[rule] + " }}").render(
            macros=macros, **context
        )

    @pytest.mark.parametrize("rule", ["previous_day", "current_day"])
    def test_a_run_with_a_logical_date_processes_its_ds(self, rule):
        run = SimpleNamespace(run_after=pendulum.datetime(2026, 3, 2, 6))
        assert self.render(rule, ds="2026-03-01", dag_run=run) == "2026-03-01"

    @pytest.mark.parametrize(
        ("rule", "expected"), [("previous_day", "2026-02-28"), ("current_day", "2026-03-01")]
    )
    def test_a_run_without_one_processes_the_day_its_rule_states(self, rule, expected):
        run = SimpleNamespace(run_after=pendulum.datetime(2026, 3, 1, 9, 30))
        assert self.render(rule, dag_run=run) == expected


def test_reading_a_pipeline_imports_neither_airflow_nor_pyarrow():
    probe = (
        "import sys; from bedrock_batch.pipelines import load_pipeline; load_pipeline('product_reviews'); "
        "print(sorted(m for m in ('airflow', 'pyarrow') if m in sys.modules))"
    )
    env = {"PYTHONPATH": str(PLUGINS_FOLDER), "BEDROCK_BATCH_INCLUDE_DIR": str(REPO / "include")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
