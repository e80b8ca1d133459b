"""BedrockBatchHook against the Bedrock emulator and moto's S3 server, through an Airflow connection.

Every endpoint comes from the connection's service_config, exactly as a user would set it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bedrock_batch.hooks import BedrockBatchHook, is_transient
from tests.integration.bedrock_shards import MODEL_ID, ROLE_ARN, stack, wait_until, write_shard

__all__ = ["stack"]  # the fixture, imported so pytest finds it here

pytestmark = pytest.mark.integration

ACCOUNT = "123456789012"


@pytest.fixture
def hook(stack: Any) -> BedrockBatchHook:
    return BedrockBatchHook(aws_conn_id="aws_default")


def create(hook: BedrockBatchHook, shard: dict, name: str, token: str, **options: Any) -> str:
    return hook.create_job(
        job_name=name,
        role_arn=ROLE_ARN,
        model_id=options.pop("model_id", MODEL_ID),
        input_s3_uri=shard["input_uri"],
        output_s3_uri=shard["output_uri"],
        client_request_token=token,
        **options,
    )


class TestBedrockBatchHook:
    def test_every_client_uses_the_connection_endpoints(self, stack, hook):
        assert hook.conn.meta.endpoint_url == stack.bedrock_endpoint_url
        assert hook.s3_client.meta.endpoint_url == stack.s3_endpoint_url
        assert hook.runtime_client.meta.endpoint_url == stack.bedrock_runtime_endpoint_url

        async def async_endpoint() -> str:
            async with await hook.get_async_conn() as client:
                return str(client.meta.endpoint_url)

        assert asyncio.run(async_endpoint()) == stack.bedrock_endpoint_url

    def test_s3_client_reads_what_was_written(self, stack, hook):
        shard = write_shard(stack.client("s3"))
        bucket, _, prefix = shard["input_uri"].removeprefix("s3://").partition("/")
        listed = hook.s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        assert [o["Size"] for o in listed["Contents"]] == [shard["bytes"]]

    def test_create_job_sends_every_option(self, stack, hook):
        shard = write_shard(stack.client("s3"))
        arn = create(
            hook,
            shard,
            "opts-a1",
            "bbtokenopts",
            invocation_type="Converse",
            timeout_hours=48,
            tags={"dag_id": "d", "shard": "1"},
            vpc_config={"subnetIds": ["subnet-0123abcd"], "securityGroupIds": ["sg-0123abcd"]},
            output_kms_key_id="arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            input_bucket_owner=ACCOUNT,
            output_bucket_owner=ACCOUNT,
        )
        job = stack.admin.job(arn)
        assert job["clientRequestToken"] == "bbtokenopts"
        assert job["modelInvocationType"] == "Converse"
        assert job["timeoutDurationInHours"] == 48
        assert job["vpcConfig"] == {"subnetIds": ["subnet-0123abcd"], "securityGroupIds": ["sg-0123abcd"]}
        assert {t["key"]: t["value"] for t in job["tags"]} == {"dag_id": "d", "shard": "1"}
        assert job["inputDataConfig"]["s3InputDataConfig"] == {
            "s3Uri": shard["input_uri"],
            "s3InputFormat": "JSONL",
            "s3BucketOwner": ACCOUNT,
        }
        output = job["outputDataConfig"]["s3OutputDataConfig"]
        assert output["s3BucketOwner"] == ACCOUNT
        assert output["s3EncryptionKeyId"].endswith("1234567890ab")

    def test_same_token_returns_the_same_job(self, stack, hook):
        shard = write_shard(stack.client("s3"))
        first = create(hook, shard, "idem-a1", "bbtokenidem")
        second = create(hook, shard, "idem-a1", "bbtokenidem")
        assert first == second
        assert stack.admin.created_job_count() == 1

    def test_get_job_sync_and_async(self, stack, hook):
        arn = create(hook, write_shard(stack.client("s3")), "get-a1", "bbtokenget")
        job = wait_until(lambda: (j := hook.get_job(arn))["status"] == "Completed" and j)
        assert "ResponseMetadata" not in job
        assert (job["totalRecordCount"], job["successRecordCount"]) == (150, 150)
        job_id = arn.rsplit("/", 1)[-1]
        async_job = asyncio.run(hook.get_job_async(job_id))
        assert async_job["jobArn"] == arn
        assert async_job["status"] == "Completed"
        assert "ResponseMetadata" not in async_job

    def test_find_jobs_by_name_keeps_only_true_prefixes(self, stack, hook):
        shard = write_shard(stack.client("s3"))
        for name in ("dag-x-s0001-a1", "dag-x-s0001-a2", "other-dag-x-s0001-a1", "dag-x-s0002-a1"):
            create(hook, shard, name, f"bbtoken{name.replace('-', '')}")
        found = hook.find_jobs_by_name("dag-x-s0001")
        assert sorted(j["jobName"] for j in found) == ["dag-x-s0001-a1", "dag-x-s0001-a2"]
        assert hook.find_jobs_by_name("nothing-like-it") == []

    def test_count_active_jobs_counts_jobs_created_outside_airflow(self, stack, hook):
        stack.admin.set_time_scale(0.001)  # jobs stay Submitted for the whole test
        shard = write_shard(stack.client("s3"))
        outside = stack.client("bedrock")
        request = {
            "roleArn": ROLE_ARN,
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": shard["input_uri"]}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": shard["output_uri"]}},
        }
        outside.create_model_invocation_job(jobName="console-1", modelId=MODEL_ID, **request)
        arn_model = f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL_ID}"
        outside.create_model_invocation_job(jobName="console-2", modelId=arn_model, **request)
        outside.create_model_invocation_job(jobName="console-3", modelId=f"us.{MODEL_ID}", **request)
        outside.create_model_invocation_job(jobName="nova-1", modelId="amazon.nova-pro-v1:0", **request)
        assert hook.count_active_jobs(MODEL_ID) == 3
        assert hook.count_active_jobs("amazon.nova-pro-v1:0") == 1

        hook.stop_job(hook.find_jobs_by_name("console-1")[0]["jobArn"])
        assert hook.count_active_jobs(MODEL_ID) == 2

    def test_stop_job_running_and_ended(self, stack, hook):
        shard = write_shard(stack.client("s3"))
        done = create(hook, shard, "stop-done-a1", "bbtokenstopdone")
        wait_until(lambda: hook.get_job(done)["status"] == "Completed")
        assert hook.stop_job(done) is False

        stack.admin.set_time_scale(0.001)
        running = create(hook, shard, "stop-running-a1", "bbtokenstoprunning")
        assert hook.stop_job(running) is True
        assert hook.get_job(running)["status"] in ("Stopping", "Stopped")
        # A second stop while Stopping is not an error either.
        assert hook.stop_job(running) is False
        assert asyncio.run(hook.stop_job_async(running)) is False

    def test_stop_unknown_job_raises(self, stack, hook):
        with pytest.raises(ClientError, match="ResourceNotFoundException"):
            hook.stop_job("abcdefabcdef")


class TestIsTransient:
    def test_throttling_from_the_service_is_transient(self, stack, hook):
        stack.admin.set_faults(throttle_rate=1.0)
        no_retry = BedrockBatchHook(aws_conn_id="aws_default", config={"retries": {"total_max_attempts": 1}})
        with pytest.raises(ClientError) as raised:
            no_retry.get_job("abcdefabcdef")
        assert is_transient(raised.value)

    def test_not_found_is_not_transient(self, stack, hook):
        with pytest.raises(ClientError) as raised:
            hook.get_job("abcdefabcdef")
        assert not is_transient(raised.value)
