"""The amazon provider's own BedrockBatchInferenceOperator in a real dag.test() against the local stack.

Proves the emulator is wire-compatible with unmodified provider code: BedrockHook, its waiter and boto3.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from tests.integration.bedrock_shards import BUCKET, load_test_dags, stack, xcoms

__all__ = ["stack"]  # the fixture (a clean local stack with BUCKET), imported so pytest finds it here

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def run_conf(s3: Any, name: str, records: int = 120) -> dict[str, str]:
    """Upload ``records`` batch records and return the DAG's run conf for them."""
    run = uuid.uuid4().hex[:8]
    lines = [
        orjson.dumps(
            {
                "recordId": f"P{run[:4]}{i:06d}",
                "modelInput": {
                    "anthropic_version": "bedrock-2023-05-31",
                    "max_tokens": 200,
                    "messages": [
                        {"role": "user", "content": [{"type": "text", "text": f"Customer: call {i}"}]}
                    ],
                },
            }
        )
        for i in range(records)
    ]
    s3.put_object(Bucket=BUCKET, Key=f"{run}/input/records.jsonl", Body=b"\n".join(lines))
    return {
        "job_name": f"{name}-{run}",
        "input_uri": f"s3://{BUCKET}/{run}/input/records.jsonl",
        "output_uri": f"s3://{BUCKET}/{run}/output/",
    }


class TestProviderBatchInferenceOperator:
    def test_runs_to_success_and_the_job_completes(self, airflow_home, stack):
        dags = load_test_dags("emulator_provider_batch")
        conf = run_conf(stack.client("s3"), "provider")

        dag_run = dags.dag.test(run_conf=conf)

        assert dag_run.state == "success"
        (job,) = stack.admin.jobs()
        assert job["jobName"] == conf["job_name"]
        assert job["status"] == "Completed"
        assert (job["totalRecordCount"], job["successRecordCount"]) == (120, 120)
        assert xcoms(dag_run, "batch_inference")[-1] == job["jobArn"]
        run_prefix = conf["output_uri"].removeprefix(f"s3://{BUCKET}/")
        listed = stack.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=run_prefix)["Contents"]
        assert sorted(o["Key"] for o in listed) == [
            f"{run_prefix}{job['jobId']}/manifest.json.out",
            f"{run_prefix}{job['jobId']}/records.jsonl.out",
        ]
        # The provider sends no clientRequestToken of its own: botocore fills a random one, which is why
        # a retried task would submit a second job (facts sheet, provider defect 1).
        (create,) = stack.admin.requests("CreateModelInvocationJob")
        assert uuid.UUID(create["params"]["clientRequestToken"])
        assert len(stack.admin.requests("GetModelInvocationJob")) >= 1

    def test_a_failed_job_fails_the_task(self, airflow_home, stack):
        stack.admin.set_faults(fail_jobs_matching="^doomed-")
        dags = load_test_dags("emulator_provider_batch")

        dag_run = dags.dag.test(run_conf=run_conf(stack.client("s3"), "doomed"))

        assert dag_run.state == "failed"
        (job,) = stack.admin.jobs()
        assert job["status"] == "Failed"
