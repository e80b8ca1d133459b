"""The task-group factory in a DAG of one's own: two pipelines side by side, each with every stage wired."""

from __future__ import annotations

import pendulum
import pytest
from airflow.sdk import DAG, task

from bedrock_batch.errors import PipelineError
from bedrock_batch.factory import pipeline_task_group

STAGES = {
    "check_parameters": set(),
    "wait_for_source": {"check_parameters"},
    "prepare": {"wait_for_source"},
    # Nothing that costs money starts before the cost guard.
    "cost_guard": {"prepare"},
    "submit": {"prepare", "cost_guard"},
    "on_demand": {"prepare", "cost_guard"},
    # One collect task per job, mapped over prepare's shards; collect adds the on-demand part.
    "collect_job": {"prepare", "submit"},
    "collect": {"prepare", "submit", "on_demand", "collect_job"},
    "submit_retry": {"collect"},
    "on_demand_retry": {"collect"},
}


def marketplace_dag() -> DAG:
    """The example of docs/pipelines.md."""
    with DAG(
        "marketplace_daily",
        schedule="0 8 * * *",
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        default_args={"owner": "marketplace", "retries": 2},
    ) as dag:
        reviews = pipeline_task_group("product_reviews")
        tickets = pipeline_task_group(
            "support_tickets", values={"model_id": "'us.amazon.nova-pro-v1:0'", "max_records": "1000"}
        )

        @task
        def weekly_digest() -> None: ...

        [reviews, tickets] >> weekly_digest()
    return dag


def upstream(dag: DAG, group: str) -> dict[str, set[str]]:
    prefix = f"{group}."
    return {
        task.task_id.removeprefix(prefix): {t.removeprefix(prefix) for t in task.upstream_task_ids}
        for task in dag.tasks
        if task.task_id.startswith(prefix)
    }


def test_each_group_wires_every_stage_in_order():
    dag = marketplace_dag()
    reviews, tickets = upstream(dag, "product_reviews"), upstream(dag, "support_tickets")
    # product_reviews repairs invalid replies before publishing; support_tickets does not.
    assert reviews == {
        **STAGES,
        "repair": {"prepare", "submit", "on_demand", "collect", "submit_retry", "on_demand_retry"},
        "publish": {
            "prepare",
            "cost_guard",
            "submit",
            "on_demand",
            "collect",
            "submit_retry",
            "on_demand_retry",
            "repair",
        },
    }
    assert tickets == {
        **STAGES,
        "publish": {
            "prepare",
            "cost_guard",
            "submit",
            "on_demand",
            "collect",
            "submit_retry",
            "on_demand_retry",
        },
    }
    assert dag.get_task("weekly_digest").upstream_task_ids == {
        "product_reviews.publish",
        "support_tickets.publish",
    }


def test_values_override_the_folder_settings_and_the_rest_are_literals():
    dag = marketplace_dag()
    prepare = dag.get_task("support_tickets.prepare")
    assert prepare.model_id == "{{ 'us.amazon.nova-pro-v1:0' }}"
    assert prepare.max_records == "{{ 1000 }}"
    assert prepare.staging_uri == '{{ "s3://example-bedrock-batch-staging/support-tickets" }}'
    assert prepare.prompt_columns is None
    assert dag.get_task("product_reviews.prepare").prompt_columns == {
        "title": "title",
        "review": "review_text",
    }
    # The cost guard's run values are the folder's settings as Jinja literals (no limit, no approval).
    guard = dag.get_task("support_tickets.cost_guard")
    assert (guard.max_estimated_cost_usd, guard.cost_approval) == ("{{ None }}", "{{ False }}")
    publish = dag.get_task("support_tickets.publish")
    assert (publish.table_name, publish.key_column) == ("support_ticket_extractions", "ticket_id")
    assert [outlet.name for outlet in publish.outlets] == ["support_ticket_extractions"]


def test_a_broken_folder_fails_where_the_group_is_made(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "pipeline.yaml").write_text("source_format: jsonl\n")
    with (
        DAG("broken_group", schedule=None),
        pytest.raises(PipelineError, match=r"broken/pipeline.yaml: source_uri: required"),
    ):
        pipeline_task_group(folder)
