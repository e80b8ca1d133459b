"""SourcePartitionSensor against moto's S3 server, through dag.test(): waits until the day's data lands."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from bedrock_batch.sensors import SourcePartitionSensor
from tests.conftest import connection_json
from tests.integration.bedrock_shards import load_test_dags
from tests.integration.denying_s3 import DenyingS3

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

BUCKET = "source-sensor-tests"


@pytest.fixture
def s3(local_stack: Any, aws_connection: str, airflow_home: Any) -> Any:
    client = local_stack.client("s3")
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)
    return client


def land_later(s3: Any, key: str, delay: float) -> threading.Thread:
    def put() -> None:
        time.sleep(delay)
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"Agent: hello\n")

    thread = threading.Thread(target=put, daemon=True)
    thread.start()
    return thread


def sensor_state(run: Any) -> str:
    return next(ti.state for ti in run.get_task_instances() if ti.task_id == "wait")


class TestSourcePartitionSensor:
    def test_present_partition_succeeds_at_once(self, s3):
        s3.put_object(Bucket=BUCKET, Key="present/2026-11-20/call.txt", Body=b"x")
        dags = load_test_dags("source_partition_sensor")
        run = dags.deferrable.test(run_conf={"source_uri": f"s3://{BUCKET}/present/2026-11-20/"})
        assert sensor_state(run) == "success"

    @pytest.mark.parametrize("variant", ["deferrable", "reschedule"])
    def test_waits_until_the_partition_lands(self, s3, variant):
        prefix = f"late-{variant}/2026-11-20/"
        writer = land_later(s3, prefix + "_SUCCESS", delay=2.0)
        dags = load_test_dags("source_partition_sensor")
        started = time.monotonic()
        run = getattr(dags, variant).test(run_conf={"source_uri": f"s3://{BUCKET}/{prefix}"})
        writer.join()
        assert sensor_state(run) == "success"
        assert time.monotonic() - started >= 2.0, "the sensor must have waited for the object"

    def test_gives_up_after_its_timeout(self, s3):
        dags = load_test_dags("source_partition_sensor")
        run = dags.deferrable_timeout.test(run_conf={"source_uri": f"s3://{BUCKET}/never/2026-11-20/"})
        assert sensor_state(run) == "failed"


class TestLocationsThatCanNeverHoldThePartition:
    """Not "not yet": the sensor fails at once, naming the location, instead of waiting hours."""

    @pytest.mark.parametrize("variant", ["patient", "patient_reschedule"])
    @pytest.mark.parametrize(
        "source_uri",
        ["s3://no-such-bucket-for-calls/2026-11-20/", "calls/2026-11-20/"],
        ids=["bucket", "scheme"],
    )
    def test_fails_well_before_its_timeout(self, s3, variant, source_uri):
        dags = load_test_dags("source_partition_sensor")
        started = time.monotonic()
        run = getattr(dags, variant).test(run_conf={"source_uri": source_uri})
        assert sensor_state(run) == "failed"
        assert time.monotonic() - started < 60, "it must fail at once, not after its 150 s timeout"

    def test_a_missing_bucket_is_named(self, s3):
        sensor = SourcePartitionSensor(task_id="wait", source_uri="s3://no-such-bucket-for-calls/2026-11-20/")
        with pytest.raises(AirflowFailException, match="bucket no-such-bucket-for-calls does not exist"):
            sensor.poke({})

    def test_a_location_without_a_scheme_is_named(self, s3):
        sensor = SourcePartitionSensor(task_id="wait", source_uri="no-such-bucket/2026-11-20/")
        with pytest.raises(AirflowFailException, match=r"did you mean s3://no-such-bucket/2026-11-20/\?"):
            sensor.poke({})

    def test_a_refused_bucket_is_named(self, local_stack, monkeypatch):
        with DenyingS3() as denying:
            connection = json.loads(connection_json(local_stack))
            connection["extra"]["service_config"]["s3"]["endpoint_url"] = denying.url
            monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
            sensor = SourcePartitionSensor(task_id="wait", source_uri=f"s3://{BUCKET}/2026-11-20/")
            with pytest.raises(AirflowFailException, match=f"access denied to bucket {BUCKET}"):
                sensor.poke({})

    def test_a_missing_partition_of_an_existing_bucket_is_still_not_yet(self, s3):
        sensor = SourcePartitionSensor(task_id="wait", source_uri=f"s3://{BUCKET}/not-yet/2026-11-20/")
        assert sensor.poke({}) is False
