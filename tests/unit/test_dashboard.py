"""The Bedrock batch page's data: rows from job summaries, tags, manifests, slots and run reports; the cache;
what a user who may read only some DAGs sees; the HTML."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from bedrock_batch.cost import estimate_cost
from bedrock_batch.dashboard.gather import AwsClients, Gatherer, SnapshotCache, sources_from_pipelines
from bedrock_batch.dashboard.page import dag_run_url, render_page, task_url
from bedrock_batch.dashboard.rows import (
    JobRow,
    Snapshot,
    Source,
    console_url,
    day_row,
    job_row,
    model_rows,
    toolkit_tags,
    top_reasons,
)

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
PROFILE = "us." + HAIKU
NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/"
TAGS = [
    {"key": "dag_id", "value": "call_center_summarization"},
    {"key": "run_id", "value": "scheduled__2026-03-02T06:00:00+00:00"},
    {"key": "shard", "value": "0"},
    {"key": "round", "value": "1"},
]
SOURCE = Source(
    dag_id="call_center_summarization",
    results_uri="s3://results/cc",
    staging_uri="s3://staging/cc/",
    model_id=PROFILE,
    max_concurrent_jobs=2,
)


def summary(job_id: str, status: str, *, model: str = PROFILE, minutes_ago: float = 5, **counts: int) -> dict:
    return {
        "jobArn": ARN + job_id,
        "jobName": f"call-center-{job_id}",
        "modelId": model,
        "status": status,
        "submitTime": NOW - timedelta(minutes=minutes_ago),
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://staging/cc/output/"}},
        "totalRecordCount": counts.get("total", 0),
        "processedRecordCount": counts.get("processed", 0),
        "successRecordCount": counts.get("success", 0),
        "errorRecordCount": counts.get("error", 0),
    }


def not_found() -> ClientError:
    return ClientError({"Error": {"Code": "NoSuchKey", "Message": "not found"}}, "GetObject")


class FakeS3:
    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self.objects = dict(objects or {})
        self.gets: list[str] = []

    def put(self, uri: str, body: Any) -> None:
        self.objects[uri] = body if isinstance(body, bytes) else orjson.dumps(body)

    def get_object(self, Bucket: str, Key: str, **_: Any) -> dict:
        uri = f"s3://{Bucket}/{Key}"
        self.gets.append(uri)
        if uri not in self.objects:
            raise not_found()
        return {"Body": io.BytesIO(self.objects[uri]), "ETag": f'"{hash(self.objects[uri])}"'}

    def get_paginator(self, name: str) -> Any:
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket: str, Prefix: str, StartAfter: str = "") -> list[dict]:
        keys = sorted(
            uri.removeprefix(f"s3://{Bucket}/") for uri in self.objects if uri.startswith(f"s3://{Bucket}/")
        )
        contents = [
            {"Key": key, "ETag": f'"{hash(self.objects[f"s3://{Bucket}/{key}"])}"'}
            for key in keys
            if key.startswith(Prefix) and key > StartAfter
        ]
        return [{"Contents": contents}]


class FakeBedrock:
    def __init__(self, summaries: list[dict], tags: dict[str, list[dict]]) -> None:
        self.summaries = summaries
        self.tags = tags
        self.calls: list[str] = []

    def get_paginator(self, name: str) -> Any:
        assert name == "list_model_invocation_jobs"
        return self

    def paginate(self, **params: Any) -> list[dict]:
        self.calls.append("ListModelInvocationJobs")
        since = params["submitTimeAfter"]
        return [{"invocationJobSummaries": [s for s in self.summaries if s["submitTime"] > since]}]

    def list_tags_for_resource(self, resourceARN: str) -> dict:
        self.calls.append("ListTagsForResource")
        return {"tags": self.tags.get(resourceARN, [])}


def report(ds: str, **values: Any) -> dict:
    return {
        "ds": ds,
        "dag_run_id": f"scheduled__{ds}T06:00:00+00:00",
        "model_id": PROFILE,
        "input_records": 250,
        "quarantined": 1,
        "succeeded": 240,
        "failed": 7,
        "invalid_output": 2,
        "input_tokens": 500_000,
        "output_tokens": 20_000,
        "estimated_cost_usd": "0.0875",
        "jobs": [{"name": "a"}, {"name": "b"}],
        "reasons": {"failed": {"400": 5, "429": 1, "500": 1}, "quarantined": {"empty_text": 1}},
        **values,
    }


ESTIMATED: dict[str, Any] = {
    "cost_estimate": {
        "model_id": PROFILE,
        "records": 250,
        "on_demand_records": 0,
        "input_tokens": 520_000,
        "output_tokens": 128_000,
        "output_basis": "max_tokens",
        "history_runs": 0,
        "estimated_cost_usd": "0.094108",
    },
    "cost_guard": {
        "estimated_cost_usd": "0.094108",
        "limit_usd": "0.05",
        "verdict": "approved",
        "approved_by": "ann",
    },
}
HISTORY_ESTIMATE = {**ESTIMATED["cost_estimate"], "output_basis": "history", "history_runs": 3}


class TestRows:
    def test_only_jobs_with_every_toolkit_tag_are_the_toolkits(self):
        assert toolkit_tags(TAGS) == {t["key"]: t["value"] for t in TAGS}
        assert toolkit_tags(TAGS[:3]) is None  # created elsewhere, e.g. by hand with a dag_id tag
        assert toolkit_tags([]) is None

    def test_a_running_job_has_progress_and_age_but_no_cost_yet(self):
        row = job_row(summary("abc123def456", "InProgress", total=200, processed=50), toolkit_tags(TAGS), NOW)
        assert (row.dag_id, row.shard, row.round, row.job_id) == (
            "call_center_summarization",
            "0",
            "1",
            "abc123def456",
        )
        assert row.active
        assert row.progress == 0.25
        assert row.age_seconds == 300
        assert row.estimated_cost_usd is None

    def test_a_validating_job_has_no_progress_and_a_finished_one_its_batch_cost(self):
        validating = job_row(summary("a" * 12, "Validating"), toolkit_tags(TAGS), NOW)
        assert validating.progress is None
        done = job_row(
            summary("b" * 12, "Completed", total=100, processed=100), toolkit_tags(TAGS), NOW, (40_000, 3_000)
        )
        assert done.estimated_cost_usd == estimate_cost(PROFILE, 40_000, 3_000)
        assert done.estimated_cost_usd is not None
        assert not done.active

    def test_console_link_names_the_region_and_escapes_the_arn(self):
        url = console_url(ARN + "abc123def456")
        assert url.startswith(
            "https://console.aws.amazon.com/bedrock/home?region=us-east-1#/batch-inference/"
        )
        assert url.endswith(
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Amodel-invocation-job%2Fabc123def456"
        )
        assert console_url("arn:aws-cn:bedrock:cn-north-1:1:model-invocation-job/x").startswith(
            "https://console.amazonaws.cn/bedrock/home?region=cn-north-1"
        )

    def test_a_day_from_its_run_report_keeps_the_top_reasons(self):
        row = day_row(SOURCE, report("2026-03-02"), "s3://results/cc/reports/ds=2026-03-02/run_report.json")
        assert (row.ds, row.dag_id, row.input_records, row.failed, row.jobs) == (
            "2026-03-02",
            "call_center_summarization",
            250,
            7,
            2,
        )
        assert row.estimated_cost_usd == Decimal("0.0875")
        assert row.reasons == {
            "failed": (("400", 5), ("429", 1), ("500", 1)),
            "quarantined": (("empty_text", 1),),
        }

    def test_a_day_shows_the_estimate_made_before_any_job_and_the_cost_guards_verdict(self):
        row = day_row(SOURCE, report("2026-03-02", **ESTIMATED), "u")
        assert (row.estimated_cost_usd, row.pre_run_cost_usd) == (Decimal("0.0875"), Decimal("0.094108"))
        assert (row.pre_run_basis, row.pre_run_history_runs) == ("max_tokens", 0)
        assert (row.cost_limit_usd, row.cost_verdict, row.cost_approved_by) == (
            Decimal("0.05"),
            "approved",
            "ann",
        )
        history = day_row(SOURCE, report("2026-03-02", cost_estimate=HISTORY_ESTIMATE), "u")
        assert (history.pre_run_basis, history.pre_run_history_runs) == ("history", 3)
        assert history.cost_verdict is None

    def test_a_report_of_an_earlier_version_has_no_estimate_and_no_verdict(self):
        row = day_row(SOURCE, report("2026-03-02"), "u")
        assert (row.pre_run_cost_usd, row.pre_run_basis, row.cost_limit_usd, row.cost_verdict) == (
            None,
            None,
            None,
            None,
        )
        unpriced = {**ESTIMATED["cost_estimate"], "estimated_cost_usd": None}
        unknown = day_row(SOURCE, report("2026-03-02", cost_estimate=unpriced, cost_guard=None), "u")
        assert (unknown.pre_run_cost_usd, unknown.pre_run_basis) == (None, "max_tokens")

    def test_top_reasons_keeps_the_most_frequent_ties_by_code(self):
        assert top_reasons({"failed": {"b": 2, "a": 2, "c": 9, "d": 1}}, limit=3) == {
            "failed": (("c", 9), ("a", 2), ("b", 2))
        }
        assert day_row(SOURCE, report("2026-03-02", reasons=None, estimated_cost_usd=None), "u").reasons == {}

    def test_a_report_without_a_price_has_an_unknown_cost(self):
        assert day_row(SOURCE, report("2026-03-02", estimated_cost_usd=None), "u").estimated_cost_usd is None

    def test_models_count_every_active_job_of_the_account_against_the_quota(self):
        tags = toolkit_tags(TAGS)
        assert tags is not None
        ours = [
            job_row(summary("a" * 12, "InProgress"), tags, NOW),
            job_row(summary("b" * 12, "Completed"), tags, NOW),
        ]
        listed = [
            summary("a" * 12, "InProgress"),
            summary("b" * 12, "Completed"),
            summary("c" * 12, "Scheduled", model=HAIKU),  # someone else's job, same base model
            summary("d" * 12, "InProgress", model="amazon.nova-lite-v1:0"),  # a model no pipeline uses
        ]
        (row,) = model_rows([SOURCE], listed, ours, {HAIKU: (1, 2)})
        assert (row.model_id, row.active_jobs, row.toolkit_active_jobs, row.quota) == (HAIKU, 2, 1, 2)
        assert (row.slots_held, row.slot_capacity, row.dag_ids) == (1, 2, ("call_center_summarization",))


def snapshot_of(*dag_ids: str) -> Snapshot:
    jobs = tuple(
        job_row(summary(f"{n:012d}", "InProgress"), {**toolkit_tags(TAGS), "dag_id": d}, NOW)  # type: ignore[dict-item]
        for n, d in enumerate(dag_ids)
    )
    days = tuple(
        day_row(Source(d, "s3://r", "s3://s", HAIKU, 20), report("2026-03-02"), "u") for d in dag_ids
    )
    sources = [
        Source(d, "s3://r", "s3://s", HAIKU if i == 0 else "amazon.nova-lite-v1:0", 20)
        for i, d in enumerate(dag_ids)
    ]
    return Snapshot(NOW, jobs=jobs, days=days, models=tuple(model_rows(sources, [], [], {})))


class TestVisibility:
    def test_a_user_sees_only_the_dags_they_may_read(self):
        snapshot = snapshot_of("readable", "secret")
        assert snapshot.dag_ids == {"readable", "secret"}
        seen = snapshot.visible_to({"readable"})
        assert [job.dag_id for job in seen.jobs] == ["readable"]
        assert [day.dag_id for day in seen.days] == ["readable"]
        # The model only the hidden DAG uses is hidden with it.
        assert [model.model_id for model in seen.models] == [HAIKU]
        assert snapshot.visible_to(set()).to_dict()["jobs"] == []

    def test_the_json_form_has_no_decimal_or_datetime(self):
        data = orjson.loads(orjson.dumps(snapshot_of("a").to_dict()))
        assert data["days"][0]["estimated_cost_usd"] == "0.0875"
        assert (data["days"][0]["pre_run_cost_usd"], data["days"][0]["cost_verdict"]) == (None, None)
        day = day_row(SOURCE, report("2026-03-02", **ESTIMATED), "u")
        (estimated,) = orjson.loads(orjson.dumps(Snapshot(NOW, days=(day,)).to_dict()))["days"]
        assert {k: v for k, v in estimated.items() if k.startswith(("pre_run", "cost_"))} == {
            "pre_run_cost_usd": "0.094108",
            "pre_run_basis": "max_tokens",
            "pre_run_history_runs": 0,
            "cost_limit_usd": "0.05",
            "cost_verdict": "approved",
            "cost_approved_by": "ann",
        }
        assert data["jobs"][0]["submitted_at"] == "2026-03-03T11:55:00+00:00"


class TestGatherer:
    def make(self) -> tuple[Gatherer, FakeBedrock, FakeS3]:
        running, done, foreign, old = "run000000001", "done00000001", "other0000001", "old000000001"
        bedrock = FakeBedrock(
            [
                summary(running, "InProgress", total=100, processed=40),
                summary(done, "Completed", total=100, processed=100, success=97, error=3),
                summary(foreign, "InProgress", model=HAIKU),
                summary(old, "Completed", minutes_ago=60 * 24 * 9),
            ],
            {ARN + running: TAGS, ARN + done: TAGS, ARN + old: TAGS},
        )
        s3 = FakeS3()
        s3.put(
            f"s3://staging/cc/output/{done}/manifest.json.out",
            {"inputTokenCount": 40_000, "outputTokenCount": 3_000},
        )
        s3.put("s3://results/cc/reports/ds=2026-03-02/run_report.json", report("2026-03-02"))
        s3.put("s3://results/cc/reports/ds=2026-02-01/run_report.json", report("2026-02-01"))  # too old
        s3.put("s3://results/cc/reports/ds=2026-03-02/run_report.md", b"# not read")
        model_folder = HAIKU.replace(":", "_")
        s3.put(
            f"s3://staging/cc/_job_slots/{model_folder}/slot-000.json",
            {"job_name": f"call-center-{running}", "job_arn": ARN + running},
        )
        s3.put(
            f"s3://staging/cc/_job_slots/{model_folder}/slot-001.json",
            {"job_name": f"call-center-{done}", "job_arn": ARN + done},
        )
        gatherer = Gatherer(
            [SOURCE], lambda conn_id: AwsClients(bedrock, s3), lookback_days=7, clock=lambda: NOW
        )
        return gatherer, bedrock, s3

    def test_reads_jobs_models_and_days(self):
        gatherer, _, _ = self.make()
        snapshot = gatherer.snapshot()
        assert [(j.job_id, j.status, j.processed_records, j.total_records) for j in snapshot.jobs] == [
            ("run000000001", "InProgress", 40, 100),
            ("done00000001", "Completed", 100, 100),
        ]
        assert snapshot.jobs[1].estimated_cost_usd == estimate_cost(PROFILE, 40_000, 3_000)
        (model,) = snapshot.models
        # The foreign job counts against the quota; only the running job holds a slot.
        assert (model.active_jobs, model.toolkit_active_jobs, model.quota, model.slots_held) == (2, 1, 2, 1)
        assert [(d.ds, d.input_records) for d in snapshot.days] == [("2026-03-02", 250)]
        assert snapshot.problems == ()

    def test_tags_and_manifests_are_read_once_reports_again_only_when_changed(self):
        gatherer, bedrock, s3 = self.make()
        gatherer.snapshot()
        s3.gets.clear()
        bedrock.calls.clear()
        gatherer.snapshot()
        assert bedrock.calls == ["ListModelInvocationJobs"]
        assert not [uri for uri in s3.gets if "manifest" in uri or "run_report" in uri]
        s3.put(
            "s3://results/cc/reports/ds=2026-03-02/run_report.json", report("2026-03-02", input_records=300)
        )
        assert [d.input_records for d in gatherer.snapshot().days] == [300]

    def test_what_cannot_be_read_is_a_problem_not_an_error(self):
        def no_access(conn_id: str) -> AwsClients:
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "ListModelInvocationJobs"
            )

        snapshot = Gatherer([SOURCE], no_access, clock=lambda: NOW).snapshot()
        assert snapshot.jobs == ()
        assert len(snapshot.problems) == 2
        assert "AccessDeniedException" in snapshot.problems[0].message
        assert snapshot.problems[1].dag_id == "call_center_summarization"

    def test_jobs_whose_tags_cannot_be_read_are_one_problem(self):
        gatherer, bedrock, _ = self.make()

        def denied(resourceARN: str) -> dict:
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "ListTagsForResource"
            )

        bedrock.list_tags_for_resource = denied  # type: ignore[method-assign]
        snapshot = gatherer.snapshot()
        assert snapshot.jobs == ()
        assert [p.message for p in snapshot.problems] == [
            "tags of 3 job(s) could not be read: AccessDeniedException"
        ]


class TestCache:
    def test_serves_one_snapshot_for_its_time_to_live(self):
        now = [0.0]
        made: list[int] = []

        def produce() -> Snapshot:
            made.append(1)
            return Snapshot(NOW)

        cache = SnapshotCache(produce, 60, clock=lambda: now[0])
        first = cache.get()
        now[0] = 59.9
        assert cache.get() is first
        now[0] = 60.0
        assert cache.get() is not first
        assert len(made) == 2


def row_of(html: str, ds: str) -> str:
    """The HTML of the day ``ds``'s row."""
    start = html.index(f'<tr class="day" data-ds="{ds}"')
    return html[start : html.index("</tr>", start)]


class TestPage:
    def test_renders_rows_links_and_escapes(self):
        tags = {**toolkit_tags(TAGS), "dag_id": "<script>"}  # type: ignore[dict-item]
        job = job_row(summary("abc123def456", "InProgress", total=200, processed=50), tags, NOW)
        job = JobRow(**{**job.__dict__, "task_id": "submit", "map_index": 1})
        html = render_page(Snapshot(NOW, jobs=(job,), days=(day_row(SOURCE, report("2026-03-02"), "u"),)))
        assert "<script>" not in html
        assert "&lt;script&gt;" in html
        assert '<progress max="200" value="50"></progress>' in html
        assert "50 / 200" in html
        assert (
            "/dags/%3Cscript%3E/runs/scheduled__2026-03-02T06%3A00%3A00%2B00%3A00/tasks/submit/mapped/1"
            in html
        )
        assert "$0.0875" in html
        assert "<code>400</code> (5)" in html

    def test_a_day_shows_the_estimate_and_the_limit_beside_the_billed_cost(self):
        days = (
            day_row(SOURCE, report("2026-03-02", **ESTIMATED), "u"),
            day_row(SOURCE, report("2026-03-01", cost_estimate=HISTORY_ESTIMATE), "u"),
            day_row(SOURCE, report("2026-02-28"), "u"),  # an earlier version's report
        )
        html = render_page(Snapshot(NOW, days=days))
        assert "<th>est. cost</th><th>estimated before run</th><th>cost limit</th>" in html
        estimated, history, older = (row_of(html, day.ds) for day in days)
        assert '<td class="n cost">$0.0875</td>' in estimated
        assert (
            '<td class="n estimate">$0.0941<br><span class="muted basis">max_tokens bound</span></td>'
            in estimated
        )
        assert '<td class="limit">approved by ann (limit $0.05)</td>' in estimated
        assert '<span class="muted basis">history of 3 run(s)</span>' in history
        assert '<td class="limit">-</td>' in history
        assert '<td class="n cost">$0.0875</td>' in older
        assert '<td class="n estimate"><span class="muted">-</span></td>' in older
        assert '<td class="limit">-</td>' in older

    @pytest.mark.parametrize(
        ("guard", "text"),
        [
            ({"limit_usd": None, "verdict": "no_limit"}, "no limit"),
            ({"limit_usd": "25", "verdict": "within"}, "within $25"),
            (
                {"limit_usd": "0.05", "verdict": "approved", "approved_by": None},
                "approved by unknown (limit $0.05)",
            ),
        ],
    )
    def test_the_cost_limit_cell(self, guard, text):
        day = day_row(SOURCE, report("2026-03-02", cost_guard=guard), "u")
        assert f'<td class="limit">{text}</td>' in render_page(Snapshot(NOW, days=(day,)))

    @pytest.mark.parametrize(
        ("map_index", "tail"), [(None, "/tasks/t"), (-1, "/tasks/t"), (0, "/tasks/t/mapped/0")]
    )
    def test_task_links(self, map_index, tail):
        assert task_url("", "d", "r", "t", map_index) == dag_run_url("", "d", "r") + tail


class TestSources:
    def test_every_declared_pipeline_by_default(self):
        sources, problems = sources_from_pipelines()
        assert problems == []
        by_dag = {source.dag_id: source for source in sources}
        assert {"call_center_summarization", "product_reviews", "support_tickets"} <= set(by_dag)
        call_center = by_dag["call_center_summarization"]
        assert call_center.slots_uri.endswith("/call-center/_job_slots/")
        assert (call_center.model_id, call_center.aws_conn_id) == (PROFILE, "aws_default")
        assert call_center.max_concurrent_jobs >= 1

    def test_a_pipeline_that_cannot_be_read_is_a_problem(self):
        sources, problems = sources_from_pipelines(["product_reviews", "no_such_pipeline"])
        assert [source.dag_id for source in sources] == ["product_reviews"]
        assert len(problems) == 1
        assert "no_such_pipeline" in problems[0].message
