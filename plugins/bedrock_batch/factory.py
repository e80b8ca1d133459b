"""A pipeline folder as Airflow tasks: :func:`pipeline_dag` builds its scheduled DAG,
:func:`pipeline_task_group` its stages inside a DAG of your own.

The stages, in order: ``wait_for_source`` (deferred until the partition exists) → ``prepare`` (which also
estimates the run's cost) → ``cost_guard`` (stops a run above its cost limit, or waits for approval) →
``submit`` (mapped over the shards, deferrable) and ``on_demand`` → ``collect`` → ``submit_retry`` and
``on_demand_retry`` (the retry round) → ``repair`` (when the pipeline repairs invalid replies) →
``publish``. Every run value (source, buckets, model, role …) is a Jinja expression: the pipeline's
configured value in a task group, the DAG's params in :func:`pipeline_dag`, so a run can override any of
them. The partition comes from :attr:`~bedrock_batch.pipelines.Pipeline.partition_template`: ``ds`` when
the run has a logical date, the pipeline's ``manual_run_partition`` rule when it has none.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, TaskGroup
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from bedrock_batch.alerts import alert_overdue_run
from bedrock_batch.config import as_duration
from bedrock_batch.operators import (
    BedrockBatchCheckOperator,
    BedrockBatchCollectJobOperator,
    BedrockBatchCollectOperator,
    BedrockBatchCostGuardOperator,
    BedrockBatchPrepareOperator,
    BedrockBatchPublishOperator,
    BedrockBatchRepairOperator,
    BedrockBatchSubmitOperator,
    BedrockOnDemandOperator,
)
from bedrock_batch.pipelines import SOURCE_FORMATS, Pipeline, load_pipeline
from bedrock_batch.sensors import SourcePartitionSensor

#: The values a run may override, each a Jinja expression in the tasks' templates.
RUN_VALUES = (
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
)


def pipeline_dag(name_or_path: str | os.PathLike[str] | Pipeline) -> DAG:
    """The scheduled DAG of a pipeline folder, with one param per run value (:data:`RUN_VALUES`).

    A DAG file holds only ``dag = pipeline_dag("<name>")``; a broken folder raises
    :class:`~bedrock_batch.errors.PipelineError` there, which Airflow lists among that file's import errors.

    :param name_or_path: a pipeline name under ``include/pipelines/``, a folder path, or a loaded pipeline.
    """
    pipeline = name_or_path if isinstance(name_or_path, Pipeline) else load_pipeline(name_or_path)
    config = pipeline.config
    with DAG(
        dag_id=pipeline.dag_id,
        description=pipeline.description,
        # A data-interval timetable: the run at the end of day D's interval has ds D-1 and processes it.
        schedule=CronDataIntervalTimetable(config.schedule, timezone="UTC") if config.schedule else None,
        start_date=pendulum.datetime(
            pipeline.start_date.year, pipeline.start_date.month, pipeline.start_date.day, tz="UTC"
        ),
        catchup=False,
        max_active_runs=pipeline.max_active_runs,
        default_args={
            "owner": pipeline.owner,
            "retries": config.retries,
            "retry_delay": timedelta(seconds=config.retry_delay_seconds),
        },
        params={
            "source_uri": Param(
                config.source_uri, type="string", description="S3 prefix or local path; {ds} is the partition"
            ),
            "source_format": Param(config.source_format, enum=list(SOURCE_FORMATS)),
            "staging_uri": Param(config.staging_uri, type="string"),
            "results_uri": Param(config.results_uri, type="string"),
            "model_id": Param(config.model_id, type="string"),
            "role_arn": Param(config.role_arn, type="string"),
            "aws_conn_id": Param(config.aws_conn_id, type="string"),
            "max_records": Param(
                config.max_records, type="integer", minimum=0, description="0 reads every row"
            ),
            "prompt_version": Param(config.prompt_version, type="string"),
            "max_estimated_cost_usd": Param(
                config.max_estimated_cost_usd,
                type=["null", "number"],
                minimum=0,
                description="stop the run before any job above this estimated cost (USD); null: no limit",
            ),
            "cost_approval": Param(
                config.cost_approval,
                type="boolean",
                description="above max_estimated_cost_usd, wait for a person to approve instead of stopping",
            ),
        },
        deadline=overdue_run_alert(pipeline),
        tags=list(pipeline.tags),
        doc_md=pipeline_doc(pipeline),
    ) as dag:
        add_pipeline_tasks(pipeline, {name: f"params.{name}" for name in RUN_VALUES})
    # The DAG belongs to the file that asked for it, not to this module (Airflow's processor sets the same).
    dag.fileloc = sys._getframe(1).f_code.co_filename
    return dag


def pipeline_task_group(
    pipeline: str | os.PathLike[str] | Pipeline,
    *,
    group_id: str | None = None,
    values: Mapping[str, str] | None = None,
    wait_for_source: bool = True,
    **task_group_kwargs: Any,
) -> TaskGroup:
    """The stages of a pipeline as a task group, inside the DAG being defined.

    Use it within ``with DAG(...):``; set its upstream and downstream like any task. The run's partition is
    ``ds``, or the pipeline's ``manual_run_partition`` rule in a run without a logical date. Two groups in one
    DAG need different ``staging_uri`` values: a run's files are staged under ``<staging_uri>/<dag_id>/<ds>``.

    :param pipeline: a pipeline name under ``include/pipelines/``, a folder path, or a loaded pipeline.
    :param group_id: the group's id; default the pipeline's name.
    :param values: run value (:data:`RUN_VALUES`) → a Jinja expression giving it, e.g.
        ``{"model_id": "params.model"}`` or ``{"staging_uri": "'s3://staging/reviews'"}``; the others are the
        pipeline's configured values.
    :param wait_for_source: start with a sensor that waits (deferred) for the source partition.
    :param task_group_kwargs: passed to :class:`~airflow.sdk.TaskGroup` (``tooltip``, ``default_args`` …).
    """
    loaded = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline)
    expressions = {**literal_values(loaded), **(values or {})}
    with TaskGroup(group_id=group_id or loaded.name, **task_group_kwargs) as group:
        add_pipeline_tasks(loaded, expressions, wait_for_source=wait_for_source)
    return group


def literal_values(pipeline: Pipeline) -> dict[str, str]:
    """The configured run values as Jinja literals (a JSON string or number is one; Jinja spells null,
    true and false as None, True and False)."""
    return {name: _jinja_literal(getattr(pipeline.config, name)) for name in RUN_VALUES}


def _jinja_literal(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return repr(value)
    return json.dumps(value)


def overdue_run_alert(pipeline: Pipeline) -> DeadlineAlert | None:
    """The DAG's deadline alert when the pipeline sets ``alert_after``: a run not finished that long after it
    was queued calls :func:`~bedrock_batch.alerts.alert_overdue_run` in the triggerer; ``None`` without it.

    A DAG of your own that holds :func:`pipeline_task_group` can pass it as its ``deadline``.
    """
    alert_after = pipeline.config.alert_after
    if alert_after is None:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=as_duration("alert_after", alert_after),
        callback=AsyncCallback(
            alert_overdue_run, kwargs={"pipeline": pipeline.name, "alert_after": alert_after}
        ),
        name=f"{pipeline.name} overdue",
    )


def rendered(values: Mapping[str, str], name: str) -> str:
    """The template of run value ``name`` (its Jinja expression in ``values``, see :data:`RUN_VALUES`)."""
    return "{{ " + values[name] + " }}"


def add_pipeline_tasks(
    pipeline: Pipeline, values: Mapping[str, str], *, wait_for_source: bool = True
) -> None:
    """Create the pipeline's tasks in the DAG or task group being defined.

    :param pipeline: the pipeline.
    :param values: every run value (:data:`RUN_VALUES`) → the Jinja expression giving it.
    :param wait_for_source: start with the source sensor.
    """
    config = pipeline.config

    partition = pipeline.partition_expression
    source_uri = "{{ (" + values["source_uri"] + ") | replace('{ds}', " + partition + ") }}"
    staging = "{{ (" + values["staging_uri"] + ").rstrip('/') }}"
    run_prefix = f"{staging}/{{{{ dag.dag_id }}}}/{pipeline.partition_template}"
    conn = rendered(values, "aws_conn_id")
    # Every task that touches S3 checks the owner of each bucket (ExpectedBucketOwner) and encrypts what it
    # writes with the configured key; the jobs get the same key for their output and the staging bucket's
    # owner.
    bucket_owners: dict[str, Any] = {
        "expected_bucket_owner": config.expected_bucket_owner,
        "bucket_owners": dict(config.bucket_owners),
    }
    storage: dict[str, Any] = {"kms_key_id": config.kms_key_id, **bucket_owners}
    staging_owner = staging_owner_template(pipeline, values["staging_uri"])
    table = Asset(name=pipeline.table, uri=config.table_uri(pipeline.table))

    first: Any = pre_run_check(pipeline, values, source_uri=source_uri, storage=storage)
    if wait_for_source:
        sensor = SourcePartitionSensor(
            task_id="wait_for_source",
            source_uri=source_uri,
            aws_conn_id=conn,
            **bucket_owners,
            deferrable=True,
            poke_interval=config.source_poke_interval_seconds,
            timeout=config.source_timeout_hours * 3600,
        )
        first >> sensor
        first = sensor
    prepare = BedrockBatchPrepareOperator(
        task_id="prepare",
        source_uri=source_uri,
        source_format=rendered(values, "source_format"),
        staging_uri=rendered(values, "staging_uri"),
        model_id=rendered(values, "model_id"),
        prompt_name=pipeline.prompt_name,
        prompt_version=rendered(values, "prompt_version"),
        prompts_root=str(pipeline.prompts_root) if pipeline.prompts_root else None,
        id_column=config.id_column,
        text_column=config.text_column,
        prompt_columns=dict(pipeline.prompt_columns) if pipeline.prompt_columns else None,
        passthrough_columns=list(config.passthrough_columns),
        reply_schema=str(pipeline.reply_schema) if pipeline.reply_schema else None,
        structured_output=pipeline.structured_output,
        partition=pipeline.partition_template,
        invocation_type=config.invocation_type,
        max_tokens=config.max_tokens,
        max_records=rendered(values, "max_records"),
        prepare_processes=config.prepare_processes,
        quotas=config.quotas,
        output_tokens_estimate=config.output_tokens_estimate,
        results_uri=rendered(values, "results_uri"),
        aws_conn_id=conn,
        **storage,
    )
    first >> prepare
    # Typed stage results travel as XCom references; indexing one picks an XCom key of the task.
    prepared: Any = prepare.output
    job_settings: dict[str, Any] = {
        "model_id": rendered(values, "model_id"),
        "role_arn": rendered(values, "role_arn"),
        "invocation_type": config.invocation_type,
        "timeout_hours": config.timeout_hours,
        "poll_interval": config.poll_interval_seconds,
        "quotas": config.quotas,
        # One slot folder per staging location: every run of every DAG staging there shares the model's
        # max_concurrent_jobs exactly, even when many submit tasks start at the same moment.
        "job_slots_uri": f"{staging}/_job_slots/",
        "deferrable": True,
        "aws_conn_id": conn,
        "output_kms_key_id": config.kms_key_id,
        "input_bucket_owner": staging_owner,
        "output_bucket_owner": staging_owner,
        **({"pool": config.pool} if config.pool else {}),
        # Past it the job is stopped and the task fails without a retry (a retry would pay for the shard
        # again).
        "execution_timeout": timedelta(minutes=config.job_wait_timeout_minutes)
        if config.job_wait_timeout_minutes
        else None,
    }
    on_demand_settings: dict[str, Any] = {
        "model_id": rendered(values, "model_id"),
        "invocation_type": config.invocation_type,
        "requests_per_second": config.on_demand_requests_per_second,
        "aws_conn_id": conn,
        **storage,
    }
    # Between prepare and anything that costs money: above the limit no job is created (or a person approves).
    cost_guard = BedrockBatchCostGuardOperator(
        task_id="cost_guard",
        prepared=prepared["run"],
        max_estimated_cost_usd=rendered(values, "max_estimated_cost_usd"),
        cost_approval=rendered(values, "cost_approval"),
    )
    submit = BedrockBatchSubmitOperator.partial(task_id="submit", **job_settings).expand(shard=prepare.output)
    on_demand = BedrockOnDemandOperator(
        task_id="on_demand",
        input_uris=prepared["on_demand_uris"],
        output_uri=f"{run_prefix}/on-demand-output/",
        **on_demand_settings,
    )
    cost_guard >> [submit, on_demand]
    guard_result: Any = cost_guard.output
    # One task per job joins its output to its shard's records, so collect spreads over the workers and no
    # task holds more than a job; collect adds the on-demand records and stages the retry round.
    collect_job: Any = BedrockBatchCollectJobOperator.partial(
        task_id="collect_job",
        prepared=prepared["run"],
        aws_conn_id=conn,
        **storage,
        trigger_rule="none_failed",
    ).expand(job=submit.output)
    collect = BedrockBatchCollectOperator(
        task_id="collect",
        prepared=prepared["run"],
        jobs=submit.output,
        on_demand=on_demand.output,
        parts=collect_job.output,
        quotas=config.quotas,
        aws_conn_id=conn,
        **storage,
        trigger_rule="none_failed",
    )
    collected: Any = collect.output
    submit_retry = BedrockBatchSubmitOperator.partial(task_id="submit_retry", **job_settings).expand(
        shard=collect.output
    )
    on_demand_retry = BedrockOnDemandOperator(
        task_id="on_demand_retry",
        input_uris=collected["retry_on_demand"],
        output_uri=f"{run_prefix}/retry-1/on-demand-output/",
        **on_demand_settings,
    )
    rounds: dict[str, Any] = {
        "prepared": prepared["run"],
        "jobs": submit.output,
        "on_demand": on_demand.output,
        "retry_jobs": submit_retry.output,
        "retry_on_demand": on_demand_retry.output,
        "parts": collected["parts"],
    }
    repair: Any = None
    if pipeline.repair_invalid_replies:
        repair = BedrockBatchRepairOperator(
            task_id="repair",
            output_uri=f"{run_prefix}/repair-output/",
            **rounds,
            **on_demand_settings,
            trigger_rule="none_failed",
        )
    BedrockBatchPublishOperator(
        task_id="publish",
        **rounds,
        collected=collected["round"],
        repair=repair.output if repair is not None else None,
        cost_guard=guard_result,
        results_uri=rendered(values, "results_uri"),
        table_name=pipeline.table,
        key_column=pipeline.key_column,
        partition=pipeline.partition_template,
        glue_database=config.glue_database,
        glue_table=config.glue_table,
        aws_conn_id=conn,
        **storage,
        outlets=[table],
        trigger_rule="none_failed",
    )


def pre_run_check(
    pipeline: Pipeline, values: Mapping[str, str], *, source_uri: str, storage: Mapping[str, Any]
) -> BedrockBatchCheckOperator:
    """The run's first task, ``check_parameters`` (a :class:`BedrockBatchCheckOperator`): every location and
    bucket, the role, the model and the reply schema checked before anything waits or is
    staged; a bad value fails the run, without a retry, naming it.

    :param source_uri: the rendered source location of the run's partition (only its bucket is checked: the
        partition may not exist yet).
    :param storage: the KMS key and bucket owners every S3 task gets.
    """

    return BedrockBatchCheckOperator(
        task_id="check_parameters",
        model_id=rendered(values, "model_id"),
        role_arn=rendered(values, "role_arn"),
        source_uri=source_uri,
        staging_uri=rendered(values, "staging_uri"),
        results_uri=rendered(values, "results_uri"),
        reply_schema=str(pipeline.reply_schema) if pipeline.reply_schema else None,
        invocation_type=pipeline.config.invocation_type,
        aws_conn_id=rendered(values, "aws_conn_id"),
        **storage,
    )


def staging_owner_template(pipeline: Pipeline, staging_expression: str) -> str | None:
    """The account that must own the staging bucket, as a template (the jobs' ``s3BucketOwner``); ``None``
    when bucket owners are not checked."""
    config = pipeline.config
    if not (config.expected_bucket_owner or config.bucket_owners):
        return None
    owners, default = json.dumps(dict(config.bucket_owners)), json.dumps(config.expected_bucket_owner or "")
    uri = f"({staging_expression})"
    return (
        "{{ ((" + owners + ").get(" + uri + ".split('/')[2]) or " + default + ") "
        "if " + uri + ".startswith('s3://') else '' }}"
    )


def pipeline_doc(pipeline: Pipeline) -> str:
    """The DAG's ``doc_md``: the folder's README.md, else a summary of the pipeline and its stages."""
    if pipeline.doc_md:
        return pipeline.doc_md
    config = pipeline.config
    repair = (
        "\n| `repair` | repair | re-asks each invalid reply once, on demand |"
        if pipeline.repair_invalid_replies
        else ""
    )
    return f"""### {pipeline.dag_id}

{pipeline.description}

Declared in `{pipeline.folder.name}/` (docs/pipelines.md). Reads `{config.source_format}` rows from the source
partition, asks `{config.model_id}` in batch jobs and publishes one row per source row, keyed by
`{pipeline.key_column}`, to the `{pipeline.table}` table under the results location. A run without a logical
date processes the {pipeline.manual_run_partition.replace("_", " ")}'s partition.

| task | stage | what it does |
|---|---|---|
| `wait_for_source` | arrival | waits (deferred) until the partition exists |
| `prepare` | prepare, split, upload | rows → records with the reply schema, shards, the cost estimate |
| `cost_guard` | cost guard | above `max_estimated_cost_usd`: stops before any job, or waits for approval |
| `submit` | submit, wait | one job per shard (mapped), idempotent, deferred while it runs |
| `on_demand` | fallback | records too few for a job go through InvokeModel |
| `collect` | collect | joins outputs to rows, validates replies, stages retryable failures |
| `submit_retry`, `on_demand_retry` | retry | the retry round |{repair}
| `publish` | publish | the table partition, the run report, the `{pipeline.table}` asset |
"""
