"""The Bedrock batch page in a real browser, on the distributed deployment, after a real run.

Headless Chromium (the Debian packages chromium and chromium-driver; ``make browser`` installs them) logs in
through the FAB auth manager's login form, opens the page from the UI's navigation entry, checks the run's
job, its counts and cost against the emulator's record, and the day's row against the published table and
run report; follows the job's link to its DAG run; and regenerates the README's screenshot. Requests without
a login, and from a user who may not read the DAG, get nothing of it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import quote

import httpx
import pytest

from bedrock_batch.cost import estimate_cost
from bedrock_batch.storage import split_s3_uri
from bedrock_batch_dev.deployment.compose import REPO
from bedrock_batch_dev.deployment.local_setup import source_prefix, write_sample_calls
from tests.deployment.checks import (
    DAG_ID,
    assert_every_record_published_once,
    logical_date_of,
    task_states,
)

pytestmark = pytest.mark.deployment

SCREENSHOT = REPO / "docs" / "images" / "bedrock-batch-page.png"
# One job of 100 records and 20 on demand (DEPLOYMENT_CONFIG), plus an empty transcript (quarantined).
CALLS = 120
# Inside the page's look-back period, and a date no other scenario runs.
DS = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
WAIT = 30.0


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Chromium driven through chromedriver, both from the system's packages (never downloaded).

    Session-scoped and asked for before ``live``, so that a missing browser fails the test before the
    deployment starts."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", chromedriver)) if not path]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found on PATH: the page test needs headless Chromium. Install the "
            "Debian packages chromium and chromium-driver (`make browser` does, as root)."
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(chromedriver)))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def log_in(driver, base_url: str, username: str, password: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base_url}/auth/login/")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "[type=submit]").click()
    WebDriverWait(driver, WAIT).until(lambda d: "/auth/login" not in d.current_url)
    assert "_token" in {cookie["name"] for cookie in driver.get_cookies()}


def cells(row, *classes: str) -> tuple[str, ...]:
    from selenium.webdriver.common.by import By

    return tuple(row.find_element(By.CSS_SELECTOR, f"td.{name}").text for name in classes)


def test_the_page_shows_a_runs_job_and_day_to_logged_in_readers(browser, live):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    client, base_url = live.client, live.deployment.api_url
    call_ids = write_sample_calls(live.s3, live.config, DS, CALLS)
    bucket, prefix = split_s3_uri(source_prefix(live.config, DS))
    live.s3.put_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/empty-call.txt", Body=b"")
    # Some failed records (400: not retried), for the reasons column.
    live.admin.set_faults(record_error_rate=0.1, record_error_codes=[400])
    run = client.trigger(DAG_ID, logical_date=logical_date_of(DS))
    run = client.wait_for_run(DAG_ID, run["dag_run_id"], timeout=240)
    assert run["state"] == "success", task_states(client, run)
    table = assert_every_record_published_once(live.s3, live.config, DS, [*call_ids, "empty-call"], run)
    report = client.xcom(DAG_ID, run["dag_run_id"], "publish")
    (job,) = live.admin.jobs()  # the emulator's record of the run's one batch job
    job_id = job["jobArn"].rsplit("/", 1)[-1]

    # Without a login: nothing. A user whose role may read no DAG: none of the DAG's rows.
    for path in ("/bedrock-batch/", "/bedrock-batch/api/snapshot"):
        assert httpx.get(f"{base_url}{path}").status_code == 401
    client.request("POST", "/auth/fab/v1/roles", json={"name": "no-dag-access", "actions": []})
    password = "no-dags-password"
    user = {"username": "no-dags", "email": "no-dags@example.com", "first_name": "No", "last_name": "Dags"}
    client.request(
        "POST",
        "/auth/fab/v1/users",
        json={**user, "roles": [{"name": "no-dag-access"}], "password": password},
    )
    login = httpx.post(f"{base_url}/auth/token", json={"username": "no-dags", "password": password})
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    limited = httpx.get(f"{base_url}/bedrock-batch/api/snapshot", headers=headers)
    assert limited.status_code == 200
    assert (limited.json()["jobs"], limited.json()["days"]) == ([], [])
    assert job_id not in httpx.get(f"{base_url}/bedrock-batch/", headers=headers).text

    # The admin, in the browser: the UI's Browse menu has the page; it opens as a page of its own.
    log_in(browser, base_url, *live.deployment.login)
    WebDriverWait(browser, WAIT).until(
        ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Browse']"))
    )
    browser.find_element(By.XPATH, "//button[normalize-space()='Browse']").click()
    entry = WebDriverWait(browser, WAIT).until(
        ec.presence_of_element_located((By.XPATH, "//a[normalize-space()='Bedrock batch']"))
    )
    assert entry.get_attribute("href") == f"{base_url}/bedrock-batch/"
    browser.get(str(entry.get_attribute("href")))
    row = WebDriverWait(browser, WAIT).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f'tr.job[data-job-id="{job_id}"]'))
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr.job")) == 1
    assert row.get_attribute("data-dag-id") == DAG_ID
    assert row.find_element(By.CSS_SELECTOR, ".status").text == job["status"] == "Completed"
    processed, total = job["processedRecordCount"], job["totalRecordCount"]
    assert total == 100
    assert cells(row, "records") == (f"{processed:,} / {total:,}",)
    job_cost = estimate_cost(live.config["model_id"], job["inputTokenCount"], job["outputTokenCount"])
    assert job_cost is not None
    assert cells(row, "cost") == (f"${job_cost:,.4f}",)

    day = browser.find_element(By.CSS_SELECTOR, f'tr.day[data-ds="{DS}"][data-dag-id="{DAG_ID}"]')
    counts = ("succeeded", "failed", "quarantined", "invalid_output")
    published = tuple(f"{table.count(status):,}" for status in counts)
    assert cells(day, "input", "succeeded", "failed", "quarantined", "invalid") == (
        f"{CALLS + 1:,}",
        *published,
    )
    assert published == tuple(f"{report[status]:,}" for status in counts)
    assert table.count("failed") > 0
    assert cells(day, "cost") == (f"${Decimal(report['estimated_cost_usd']):,.4f}",)
    reasons = day.text
    assert "quarantined: empty_text (1)" in reasons
    top_failed = sorted(table.codes("failed").items(), key=lambda pair: (-pair[1], pair[0]))[:3]
    assert "failed: " + ", ".join(f"{code} ({n:,})" for code, n in top_failed) in reasons
    run_path = f"/dags/{DAG_ID}/runs/{quote(run['dag_run_id'], safe='')}"
    log_link = row.find_element(By.CSS_SELECTOR, "a.log-link").get_attribute("href")
    assert log_link == f"{base_url}{run_path}/tasks/submit/mapped/0"

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))

    # Its link to the DAG run opens the run in the UI.
    browser.find_element(By.CSS_SELECTOR, f'tr.job[data-job-id="{job_id}"] a.run-link').click()
    WebDriverWait(browser, WAIT).until(lambda d: d.current_url.endswith(run_path))
    WebDriverWait(browser, WAIT).until(
        ec.text_to_be_present_in_element((By.TAG_NAME, "body"), run["dag_run_id"])
    )
