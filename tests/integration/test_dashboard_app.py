"""The Bedrock batch page's FastAPI app against the local stack (moto S3 + the emulator over HTTP), with a
real Airflow auth manager deciding who is logged in and which DAGs they may read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bedrock_batch.cost import estimate_cost
from bedrock_batch.dashboard.app import URL_PREFIX, Dashboard, DashboardSettings, create_app
from bedrock_batch.hooks import BedrockBatchHook
from bedrock_batch.report import REPORT_FILE, JobSummary, RunReport, report_prefix
from bedrock_batch.storage import join_uri, split_s3_uri
from bedrock_batch_dev.deployment.local_setup import buckets, create_buckets, pipeline_config
from tests.conftest import connection_json
from tests.integration.bedrock_shards import BUCKET, MODEL_ID, ROLE_ARN, wait_until, write_shard

pytestmark = pytest.mark.integration

from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails  # noqa: E402
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager  # noqa: E402
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser  # noqa: E402

DAG_ID = "call_center_summarization"
HIDDEN_DAG = "finance_batch"
# Within the page's look-back period.
DS = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()


class OneDagHiddenAuthManager(SimpleAuthManager):
    """Airflow's simple auth manager, except that user ``limited`` may not read :data:`HIDDEN_DAG`."""

    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        if user.username == "limited" and isinstance(details, DagDetails) and details.id == HIDDEN_DAG:
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )


@pytest.fixture
def auth_manager(airflow_home: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleAuthManager]:
    from airflow.api_fastapi import app as airflow_app

    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", f"{__name__}.OneDagHiddenAuthManager")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "dashboard-test-secret")
    airflow_app.purge_cached_app()
    manager = airflow_app.create_auth_manager()
    assert isinstance(manager, OneDagHiddenAuthManager)
    yield manager
    airflow_app.purge_cached_app()


def token(manager: SimpleAuthManager, username: str) -> str:
    return manager.generate_jwt(SimpleAuthManagerUser(username=username, role="viewer"))


@pytest.fixture(scope="module")
def stack(local_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The local stack, clean, as ``aws_default``, with the call-center pipeline on its buckets
    (``CALL_CENTER_CONFIG``); for the whole module, so that its jobs are created once."""
    local_stack.admin.reset()
    config = pipeline_config()
    path = tmp_path_factory.mktemp("dashboard") / "call_center.json"
    path.write_text(json.dumps(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CALL_CENTER_CONFIG", str(path))
        patch.setenv("AIRFLOW_CONN_AWS_DEFAULT", connection_json(local_stack))
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        create_buckets(local_stack.client("s3"), [*buckets(config), BUCKET])
        local_stack.config = config
        yield local_stack
    local_stack.admin.reset()


def create_job(hook: BedrockBatchHook, name: str, tags: dict[str, str]) -> str:
    shard = write_shard(hook.s3_client, records=120)
    return hook.create_job(
        job_name=name,
        role_arn=ROLE_ARN,
        model_id=MODEL_ID,
        input_s3_uri=shard["input_uri"],
        output_s3_uri=shard["output_uri"],
        client_request_token=name,
        tags=tags,
    )


def toolkit_tags(dag_id: str) -> dict[str, str]:
    return {"dag_id": dag_id, "run_id": f"scheduled__{DS}T06:00:00+00:00", "shard": "0", "round": "1"}


@pytest.fixture(scope="module")
def jobs(stack: Any) -> dict[str, str]:
    """Three ended jobs: one of the call-center DAG, one of another DAG, one created outside the toolkit."""
    hook = BedrockBatchHook(aws_conn_id="aws_default")
    arns = {
        DAG_ID: create_job(hook, "cc-job", toolkit_tags(DAG_ID)),
        HIDDEN_DAG: create_job(hook, "finance-job", toolkit_tags(HIDDEN_DAG)),
        "foreign": create_job(hook, "by-hand", {"dag_id": DAG_ID}),  # not every toolkit tag
    }
    for arn in arns.values():
        wait_until(lambda arn=arn: hook.get_job(arn)["status"] == "Completed", timeout=60)
    report = RunReport(
        ds=DS,
        dag_run_id=f"scheduled__{DS}T06:00:00+00:00",
        model_id=MODEL_ID,
        input_records=121,
        quarantined=1,
        succeeded=110,
        failed=8,
        retried=9,
        input_tokens=200_000,
        output_tokens=9_000,
        estimated_cost_usd=estimate_cost(MODEL_ID, 200_000, 9_000),
        jobs=[JobSummary("cc-job", arns[DAG_ID], "Completed", 120, 3.0)],
        invalid_output=2,
        reasons={
            "failed": {"400": 6, "500": 2},
            "quarantined": {"empty_text": 1},
            "invalid_output": {"$.x": 2},
        },
    )
    bucket, key = split_s3_uri(join_uri(report_prefix(stack.config["results_uri"], DS), REPORT_FILE))
    hook.s3_client.put_object(Bucket=bucket, Key=key, Body=json.dumps(report.to_dict()).encode())
    return arns


@pytest.fixture
def client(jobs: dict[str, str], auth_manager: SimpleAuthManager) -> TestClient:
    settings = DashboardSettings(pipelines=(DAG_ID,), cache_seconds=300, lookback_days=7)
    return TestClient(create_app(Dashboard(settings)))


class TestAuth:
    @pytest.mark.parametrize("path", ["/", "/api/snapshot"])
    def test_anonymous_requests_are_refused(self, client, path):
        response = client.get(path)
        assert response.status_code == 401
        assert "job" not in response.text

    def test_a_browser_that_is_not_logged_in_is_offered_the_login(self, client):
        response = client.get("/", headers={"Accept": "text/html"})
        assert response.status_code == 401
        assert "log in" in response.text
        assert "cc-job" not in response.text

    def test_a_forged_token_is_refused(self, client):
        response = client.get("/api/snapshot", headers={"Authorization": "Bearer not.a.jwt"})
        assert response.status_code == 403
        client.cookies.set("_token", "not.a.jwt")
        assert client.get("/").status_code == 403


class TestContent:
    def test_a_reader_sees_the_toolkits_jobs_with_the_emulators_counts_and_cost(
        self, client, auth_manager, jobs, stack
    ):
        response = client.get(
            "/api/snapshot", headers={"Authorization": f"Bearer {token(auth_manager, 'reader')}"}
        )
        assert response.status_code == 200
        data = response.json()
        by_arn = {job["job_arn"]: job for job in data["jobs"]}
        assert set(by_arn) == {jobs[DAG_ID], jobs[HIDDEN_DAG]}  # the job made by hand is not the toolkit's
        for arn in by_arn:
            emulated = stack.admin.job(arn)
            row = by_arn[arn]
            assert (row["status"], row["processed_records"], row["total_records"]) == (
                "Completed",
                emulated["processedRecordCount"],
                emulated["totalRecordCount"],
            )
            assert row["total_records"] == 120
            expected = estimate_cost(MODEL_ID, emulated["inputTokenCount"], emulated["outputTokenCount"])
            assert row["estimated_cost_usd"] == str(expected)
            assert row["console_url"].endswith(arn.replace(":", "%3A").replace("/", "%2F"))
        (model,) = data["models"]
        assert (model["model_id"], model["active_jobs"], model["quota"]) == (MODEL_ID, 0, 20)
        (day,) = data["days"]
        assert (day["ds"], day["dag_id"], day["input_records"], day["failed"], day["invalid_output"]) == (
            DS,
            DAG_ID,
            121,
            8,
            2,
        )
        assert day["reasons"]["failed"] == [["400", 6], ["500", 2]]
        assert day["estimated_cost_usd"] == str(estimate_cost(MODEL_ID, 200_000, 9_000))
        assert data["problems"] == []

    def test_the_page_reads_the_uis_cookie(self, client, auth_manager, jobs):
        client.cookies.set("_token", token(auth_manager, "reader"))
        response = client.get("/")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        for arn in (jobs[DAG_ID], jobs[HIDDEN_DAG]):
            assert f'data-job-id="{arn.rsplit("/", 1)[-1]}"' in response.text
        assert f'href="/dags/{DAG_ID}/runs/scheduled__{DS}T06%3A00%3A00%2B00%3A00"' in response.text

    def test_links_keep_the_path_airflow_is_served_under(self, jobs, auth_manager):
        settings = DashboardSettings(pipelines=(DAG_ID,), cache_seconds=300, lookback_days=7)
        parent = FastAPI(root_path="/airflow")
        parent.mount(URL_PREFIX, create_app(Dashboard(settings)))
        client = TestClient(parent, root_path="/airflow")
        client.cookies.set("_token", token(auth_manager, "reader"))
        page = client.get(f"/airflow{URL_PREFIX}/").text
        assert f'href="/airflow/dags/{DAG_ID}/runs/' in page

    def test_a_user_who_may_not_read_a_dag_does_not_see_its_jobs(self, client, auth_manager, jobs):
        headers = {"Authorization": f"Bearer {token(auth_manager, 'limited')}"}
        data = client.get("/api/snapshot", headers=headers).json()
        assert [job["job_arn"] for job in data["jobs"]] == [jobs[DAG_ID]]
        page = client.get("/", headers=headers).text
        assert HIDDEN_DAG not in page
        assert jobs[HIDDEN_DAG].rsplit("/", 1)[-1] not in page

    def test_refreshing_the_page_does_not_call_bedrock_again(self, client, auth_manager, stack):
        headers = {"Authorization": f"Bearer {token(auth_manager, 'reader')}"}
        client.get("/api/snapshot", headers=headers)
        calls = len(stack.admin.requests())
        for _ in range(3):
            assert client.get("/", headers=headers).status_code == 200
        assert len(stack.admin.requests()) == calls
