"""Templating of every operator and sensor, checked on real Airflow objects (no DAG run, no AWS).

- Every templated field is an attribute of the instance under the same name, like the amazon provider's
  ``validate_template_fields``: Airflow renders ``template_fields`` by attribute name, and a field that
  names no attribute is never rendered.
- Every scalar argument of the constructor is templated, apart from the few named below with the reason.
- Rendered templates arrive as strings; each operator coerces them when the task runs
  (``resolve_arguments``, first thing in ``execute``) and refuses a bad value with a ConfigError naming the
  argument, never at DAG parse time.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from airflow.sdk import DAG

from bedrock_batch.errors import ConfigError
from bedrock_batch.operators import (
    BedrockBatchCheckOperator,
    BedrockBatchCollectOperator,
    BedrockBatchPrepareOperator,
    BedrockBatchPublishOperator,
    BedrockBatchRepairOperator,
    BedrockBatchSubmitOperator,
    BedrockOnDemandOperator,
)
from bedrock_batch.sensors import BedrockBatchJobSensor, SourcePartitionSensor

SHARD = {
    "shard": 1,
    "input_uri": "s3://staging/run/input/shard-0001/",
    "output_uri": "s3://staging/run/output/shard-0001/",
    "fingerprint": "f" * 64,
}
PREPARED = {"run_prefix": "s3://staging/run", "model_id": "m", "index_uri": "s3://staging/run/i.parquet"}

# The smallest valid construction of each class.
REQUIRED: dict[type, dict[str, Any]] = {
    BedrockBatchCheckOperator: {"model_id": "m"},
    BedrockBatchPrepareOperator: {
        "source_uri": "s3://source/calls/",
        "source_format": "text",
        "staging_uri": "s3://staging/",
        "model_id": "m",
        "prompt_name": "call_center_summary",
    },
    BedrockBatchSubmitOperator: {"shard": SHARD, "model_id": "m", "role_arn": "arn:aws:iam::1:role/r"},
    BedrockOnDemandOperator: {"input_uris": [], "output_uri": "s3://staging/od/", "model_id": "m"},
    BedrockBatchCollectOperator: {"prepared": PREPARED},
    BedrockBatchPublishOperator: {"prepared": PREPARED, "results_uri": "s3://results/", "table_name": "t"},
    BedrockBatchRepairOperator: {"prepared": PREPARED, "output_uri": "s3://staging/repair/", "model_id": "m"},
    BedrockBatchJobSensor: {"job_arn": "abcdefabcdef"},
    SourcePartitionSensor: {"source_uri": "s3://source/calls/"},
}

# Scalar arguments deliberately not templated, and why (as the amazon provider does).
NOT_TEMPLATED = {
    "deferrable": "chooses how the task waits; Airflow and the provider never template it",
    "poke_interval": "BaseSensorOperator checks it when the sensor is built (so is timeout, not a scalar)",
}
SCALARS = frozenset({"str", "int", "float", "bool", "None"})


def validate_template_fields(operator: Any) -> None:
    """Every templated field, and every field given a renderer, is set on the instance under its own name."""
    fields = [*operator.template_fields, *getattr(operator, "template_fields_renderers", {})]
    missing = [field for field in fields if field not in vars(operator)]
    assert not missing, f"{type(operator).__name__} templates {missing}, which it never sets"


def build(cls: type, **arguments: Any) -> Any:
    with DAG(f"templates_{cls.__name__}", schedule=None):
        return cls(task_id="task", **{**REQUIRED[cls], **arguments})


def scalar_arguments(cls: type) -> set[str]:
    """The keyword arguments the library's own constructors (the class and its library bases) take whose
    annotation is a plain scalar (``str``, ``int``, ``float``, ``bool``, optionally ``None``)."""
    names = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("bedrock_batch") or "__init__" not in vars(klass):
            continue
        for name, parameter in inspect.signature(klass.__init__).parameters.items():
            annotation = str(parameter.annotation).replace(" ", "")
            if parameter.kind is parameter.KEYWORD_ONLY and set(annotation.split("|")) <= SCALARS:
                names.add(name)
    return names


def render(operator: Any, **params: Any) -> Any:
    operator.render_template_fields({"params": params, "ds": "2026-11-21"})
    return operator


@pytest.mark.parametrize("cls", list(REQUIRED), ids=lambda cls: cls.__name__)
class TestEveryClass:
    def test_template_fields_are_attributes(self, cls):
        validate_template_fields(build(cls))

    def test_every_scalar_argument_is_templated(self, cls):
        scalars = scalar_arguments(cls)
        assert scalars, "the scan found no scalar argument"
        untemplated = scalars - set(cls.template_fields) - set(NOT_TEMPLATED)
        assert not untemplated, f"{cls.__name__} does not template {sorted(untemplated)}"

    def test_aws_connection_arguments_are_templated(self, cls):
        assert {"aws_conn_id", "region_name", "verify"} <= set(cls.template_fields)


class TestRenderedValuesAreCoercedWhenTheTaskRuns:
    def test_submit(self):
        operator = build(
            BedrockBatchSubmitOperator,
            invocation_type="{{ params.type }}",
            timeout_hours="{{ params.hours }}",
            force="{{ params.force }}",
            strict="{{ params.strict }}",
            wait_for_completion="{{ params.wait }}",
            poll_interval="{{ params.poll }}",
            job_slots_uri="{{ params.slots }}",
        )
        render(
            operator,
            type="Converse",
            hours=48,
            force=False,
            strict=True,
            wait=False,
            poll=2.5,
            slots="s3://b/",
        )
        assert operator.strict == "True"  # what Jinja hands over
        operator.resolve_arguments()
        assert (
            operator.invocation_type,
            operator.timeout_hours,
            operator.force,
            operator.strict,
            operator.wait_for_completion,
            operator.poll_interval,
            operator.job_slots_uri,
        ) == ("Converse", 48, False, True, False, 2.5, "s3://b/")

    def test_submit_without_a_timeout(self):
        operator = render(build(BedrockBatchSubmitOperator, timeout_hours="{{ params.hours }}"), hours=None)
        operator.resolve_arguments()
        assert operator.timeout_hours is None

    @pytest.mark.parametrize(
        ("argument", "value", "message"),
        [
            ("timeout_hours", "12", r"timeout_hours must be between 24 and 168, got '12'"),
            ("poll_interval", "0", r"poll_interval must be positive, got '0'"),
            ("strict", "maybe", r"strict must be true or false, got 'maybe'"),
            ("invocation_type", "Invoke", r"invocation_type must be one of .*, got 'Invoke'"),
        ],
    )
    def test_submit_refuses_a_bad_value_by_name_when_it_runs_not_when_built(self, argument, value, message):
        operator = build(BedrockBatchSubmitOperator, **{argument: "{{ params.value }}"})
        render(operator, value=value)
        with pytest.raises(ConfigError, match=message):
            operator.resolve_arguments()
        build(BedrockBatchSubmitOperator, **{argument: value})  # a literal bad value fails at run time too

    def test_prepare(self):
        operator = build(
            BedrockBatchPrepareOperator,
            invocation_type="{{ params.type }}",
            model_family="{{ params.family }}",
            max_tokens="{{ params.max_tokens }}",
            temperature="{{ params.temperature }}",
            max_records="{{ params.max_records }}",
            prepare_processes="{{ params.processes }}",
            prompts_root="{{ params.root }}",
        )
        render(
            operator,
            type="InvokeModel",
            family=None,
            max_tokens=512,
            temperature=0.2,
            max_records=0,
            processes=2,
            root=None,
        )
        operator.resolve_arguments()
        assert (
            operator.invocation_type,
            operator.model_family,
            operator.max_tokens,
            operator.temperature,
            operator.max_records,
            operator.prepare_processes,
            operator.prompts_root,
        ) == ("InvokeModel", None, 512, 0.2, 0, 2, None)

    def test_prepare_prompt_columns_and_reply_schema(self):
        operator = build(
            BedrockBatchPrepareOperator,
            text_column="{{ params.text }}",
            prompt_columns={"title": "{{ params.title }}", "body": "review_text"},
            reply_schema="{{ params.schema }}",
            reply_schema_name="{{ params.name }}",
            structured_output="{{ params.mode }}",
        )
        render(
            operator,
            text=None,
            title="headline",
            schema="pipelines/reviews/reply_schema.json",
            name=None,
            mode="prompt",
        )
        operator.resolve_arguments()
        assert operator.prompt_columns == {"title": "headline", "body": "review_text"}
        assert (operator.text_column, operator.reply_schema_name, operator.structured_output) == (
            None,
            None,
            "prompt",
        )
        assert operator.reply_schema == "pipelines/reviews/reply_schema.json"

    @pytest.mark.parametrize("cls", [BedrockBatchPrepareOperator, BedrockBatchPublishOperator])
    def test_the_partition_is_the_runs_ds_unless_given(self, cls):
        operator = render(build(cls))  # render() gives ds 2026-11-21
        operator.resolve_arguments()
        assert operator.partition == "2026-11-21"
        operator = render(build(cls, partition="{{ params.day }}"), day="2026-02-03")
        operator.resolve_arguments()
        assert operator.partition == "2026-02-03"

    @pytest.mark.parametrize("day", ["", "None", "2026-02-30", "20260203", "2026-02-03T00:00:00"])
    @pytest.mark.parametrize("cls", [BedrockBatchPrepareOperator, BedrockBatchPublishOperator])
    def test_a_partition_that_is_not_a_date_is_refused_when_the_task_runs(self, cls, day):
        operator = render(build(cls, partition="{{ params.day }}"), day=day)
        with pytest.raises(ConfigError, match="partition must be a date YYYY-MM-DD"):
            operator.resolve_arguments()

    def test_prepare_needs_a_prompt_unless_the_records_are_finished(self):
        with pytest.raises(ConfigError, match="prompt_name is required for a 'text' source"):
            render(build(BedrockBatchPrepareOperator, prompt_name=None)).resolve_arguments()
        render(
            build(BedrockBatchPrepareOperator, prompt_name=None, source_format="bedrock")
        ).resolve_arguments()

    def test_prepare_refuses_an_unknown_structured_output(self):
        operator = render(build(BedrockBatchPrepareOperator, structured_output="{{ params.m }}"), m="json")
        with pytest.raises(ConfigError, match="structured_output must be one of"):
            operator.resolve_arguments()

    def test_prepare_refuses_a_bad_max_tokens(self):
        operator = render(build(BedrockBatchPrepareOperator, max_tokens="{{ params.n }}"), n="lots")
        with pytest.raises(ConfigError, match="max_tokens must be an integer, got 'lots'"):
            operator.resolve_arguments()

    def test_on_demand(self):
        operator = build(
            BedrockOnDemandOperator,
            invocation_type="{{ params.type }}",
            requests_per_second="{{ params.rps }}",
            max_attempts="{{ params.attempts }}",
        )
        render(operator, type="Converse", rps=2.5, attempts=3).resolve_arguments()
        assert (operator.invocation_type, operator.requests_per_second, operator.max_attempts) == (
            "Converse",
            2.5,
            3,
        )
        render(operator := build(BedrockOnDemandOperator, max_attempts="{{ params.n }}"), n=0)
        with pytest.raises(ConfigError, match="max_attempts must be at least 1, got '0'"):
            operator.resolve_arguments()

    def test_collect(self):
        operator = render(build(BedrockBatchCollectOperator, retry="{{ params.retry }}"), retry=False)
        operator.resolve_arguments()
        assert operator.retry is False

    def test_publish(self):
        operator = build(
            BedrockBatchPublishOperator,
            table_name="{{ params.table }}",
            glue_database="{{ params.database }}",
        )
        render(operator, table="reviews", database=None).resolve_arguments()
        assert (operator.table_name, operator.glue_database) == ("reviews", None)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("s3://results/tables", "s3://results/tables"), ("file:///data/results", "/data/results")],
    )
    def test_publish_takes_an_s3_uri_or_an_explicit_local_path(self, value, expected):
        operator = render(build(BedrockBatchPublishOperator, results_uri="{{ params.out }}"), out=value)
        operator.resolve_arguments()
        assert operator.results_uri == expected

    @pytest.mark.parametrize("value", ["results/", "results-bucket/tables", "None"])
    def test_publish_refuses_a_results_uri_without_a_scheme_before_reading_a_record(self, value):
        operator = render(build(BedrockBatchPublishOperator, results_uri="{{ params.out }}"), out=value)
        with pytest.raises(ConfigError, match=f"^results_uri '{value}': "):
            operator.resolve_arguments()

    def test_publish_key_column_and_repair(self):
        operator = build(
            BedrockBatchPublishOperator, key_column="{{ params.key }}", repair="{{ params.repair }}"
        )
        render(operator, key="review_id", repair=None).resolve_arguments()
        assert (operator.key_column, operator.repair) == ("review_id", "None")
        render(operator := build(BedrockBatchPublishOperator, key_column="{{ params.k }}"), k="review-id")
        with pytest.raises(ConfigError, match="key_column must be a column name"):
            operator.resolve_arguments()

    def test_repair(self):
        operator = build(
            BedrockBatchRepairOperator,
            output_uri="{{ params.out }}",
            invocation_type="{{ params.type }}",
            requests_per_second="{{ params.rps }}",
            max_attempts="{{ params.attempts }}",
        )
        render(operator, out="s3://staging/r/", type="Converse", rps=1.5, attempts=2).resolve_arguments()
        assert (operator.output_uri, operator.invocation_type, operator.requests_per_second) == (
            "s3://staging/r/",
            "Converse",
            1.5,
        )
        assert operator.max_attempts == 2
        render(operator := build(BedrockBatchRepairOperator, max_attempts="{{ params.n }}"), n=0)
        with pytest.raises(ConfigError, match="max_attempts must be at least 1, got '0'"):
            operator.resolve_arguments()

    def test_job_sensor(self):
        sensor = render(build(BedrockBatchJobSensor, strict="{{ params.strict }}"), strict=True)
        assert sensor.success_statuses == {"Completed", "PartiallyCompleted", "Stopped", "Expired"}
        sensor.resolve_arguments()
        assert (sensor.strict, sensor.success_statuses) == (True, {"Completed"})
