"""Operator extra links: a batch inference job's page in the Bedrock console and its S3 output prefix.

Import-light (no hooks, no clients): the plugin registering them loads in every Airflow component.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink

from bedrock_batch.jobs import job_id_from_arn, output_uri_for

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context


class BedrockBatchJobLink(BaseAwsLink):
    """Link to the batch inference job's details page in the Amazon Bedrock console."""

    name = "Bedrock Batch Inference Job"
    key = "bedrock_batch_job"
    format_str = (
        BASE_AWS_CONSOLE_LINK + "/bedrock/home?region={region_name}#/batch-inference/details?arn={job_arn}"
    )

    def format_link(self, **kwargs: Any) -> str:
        """Build the URL; the ARN's ``:`` and ``/`` are escaped because it sits in a query string."""
        if "job_arn" in kwargs:
            kwargs["job_arn"] = quote(str(kwargs["job_arn"]), safe="")
        return super().format_link(**kwargs)


class BedrockBatchOutputLink(BaseAwsLink):
    """Link to the job's output prefix (``<output>/<jobId>/``) in the Amazon S3 console."""

    name = "Bedrock Batch Output (S3)"
    key = "bedrock_batch_output"
    format_str = BASE_AWS_CONSOLE_LINK + "/s3/buckets/{bucket_name}?region={region_name}&prefix={prefix}"

    def format_link(self, **kwargs: Any) -> str:
        """Build the URL from ``output_uri`` (``s3://bucket/prefix/``)."""
        output_uri = str(kwargs.pop("output_uri", ""))
        if not output_uri.startswith("s3://"):
            return ""
        bucket_name, _, prefix = output_uri[len("s3://") :].partition("/")
        return super().format_link(bucket_name=bucket_name, prefix=quote(prefix, safe="/"), **kwargs)


def persist_job_links(
    context: Context, operator: BaseOperator, job: Mapping[str, Any], region_name: str, aws_partition: str
) -> None:
    """Store both links of ``job`` (a GetModelInvocationJob description) for ``operator``'s task instance.

    :param context: the task's context.
    :param operator: the operator or sensor the links belong to.
    :param job: the job's description.
    :param region_name: region of the job.
    :param aws_partition: partition of the job (``aws``, ``aws-cn``, ``aws-us-gov``).
    """
    job_arn = str(job["jobArn"])
    where = {
        "context": context,
        "operator": operator,
        "region_name": region_name,
        "aws_partition": aws_partition,
    }
    BedrockBatchJobLink.persist(**where, job_arn=job_arn)
    output = job.get("outputDataConfig", {}).get("s3OutputDataConfig", {}).get("s3Uri")
    if output:
        BedrockBatchOutputLink.persist(**where, output_uri=output_uri_for(output, job_id_from_arn(job_arn)))
