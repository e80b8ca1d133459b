"""Plumbing shared by the operators that read and write a run's staged files through one connection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator

from bedrock_batch.config import QuotasArgument, as_choice, as_float, as_int
from bedrock_batch.hooks import BedrockBatchHook
from bedrock_batch.models import INVOCATION_TYPES

if TYPE_CHECKING:
    import pyarrow as pa

    from bedrock_batch.models import ModelFamily
    from bedrock_batch.on_demand import Invoke
    from bedrock_batch.replies import ReplyFormat
    from bedrock_batch.results import JobOutput, ManifestCheck
    from bedrock_batch.stage_results import PreparedRun
    from bedrock_batch.storage import Storage

# Templated by every operator that reads or writes S3 through Storage.
STORAGE_TEMPLATE_FIELDS = ("kms_key_id", "expected_bucket_owner", "bucket_owners")
# Templated by every operator that invokes the model on demand.
RUNTIME_TEMPLATE_FIELDS = ("model_id", "invocation_type", "requests_per_second", "max_attempts")
# Templated by every operator that reads the outputs of both rounds.
ROUNDS_TEMPLATE_FIELDS = ("prepared", "jobs", "on_demand", "retry_jobs", "retry_on_demand", "parts")


class StagingOperator(AwsBaseOperator[BedrockBatchHook]):
    """An operator that reads and writes a run's files (S3 or local) through one connection.

    :param kms_key_id: KMS key every object the task writes is encrypted with (SSE-KMS); ``None``: the
        bucket's default encryption. (templated)
    :param expected_bucket_owner: 12-digit account id that must own every bucket the task reads or writes
        (S3 refuses the request otherwise); ``None``: not checked. (templated)
    :param bucket_owners: bucket name → account id, overriding ``expected_bucket_owner`` per bucket.
        (templated)
    """

    aws_hook_class = BedrockBatchHook

    def __init__(
        self,
        *,
        kms_key_id: str | None = None,
        expected_bucket_owner: str | None = None,
        bucket_owners: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kms_key_id = kms_key_id
        self.expected_bucket_owner = expected_bucket_owner
        self.bucket_owners = bucket_owners

    def storage(self) -> Storage:
        """Local and S3 access with this task's connection, bucket owners and key."""
        from bedrock_batch.storage import Storage

        return Storage(
            self.hook.s3_client,
            expected_bucket_owner=self.expected_bucket_owner,
            bucket_owners=self.bucket_owners,
            kms_key_id=self.kms_key_id,
        )


class CollectingOperator(StagingOperator):
    """An operator that reads a run's outputs and joins them to its record index (collect, publish).

    :param prepared: the prepare stage's ``run`` XCom (:class:`~bedrock_batch.stage_results.PreparedRun`).
    :param jobs: the first round's submit results (all map indexes).
    :param on_demand: the first round's on-demand result.
    :param quotas: the model's quotas (see :func:`~bedrock_batch.config.quota_config_for`).
    """

    def __init__(
        self,
        *,
        prepared: PreparedRun | Mapping[str, Any] | str,
        jobs: Sequence[Mapping[str, Any]] | str | None = None,
        on_demand: Mapping[str, Any] | str | None = None,
        quotas: QuotasArgument = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prepared = prepared
        self.jobs = jobs
        self.on_demand = on_demand
        self.quotas = quotas

    def run(self) -> PreparedRun:
        """The rendered ``prepared`` argument."""
        return dict(self.prepared)  # type: ignore[arg-type,return-value]

    def family(self) -> ModelFamily:
        """The model family the run's records were built for."""
        from bedrock_batch.models import family_for

        run = self.run()
        return family_for(
            run["model_id"],
            invocation_type=run.get("invocation_type") or "InvokeModel",
            override=run.get("model_family"),
        )

    def reply(self) -> ReplyFormat:
        """The run's reply format, as prepare recorded it (see :meth:`ReplyFormat.from_run`)."""
        from bedrock_batch.replies import ReplyFormat

        return ReplyFormat.from_run(self.run())

    def join(self, outputs: Sequence[JobOutput]) -> tuple[pa.Table, ManifestCheck]:
        """The outputs joined to the run's record index, every reply read with the run's reply format (see
        :func:`bedrock_batch.results.join_outputs`), and each job's manifest against its output (see
        :func:`bedrock_batch.results.reconcile_manifests`)."""
        from bedrock_batch.results import OutputCounts, join_outputs, reconcile_manifests

        run, storage = self.run(), self.storage()
        counts: dict[str, OutputCounts] = {}
        table = join_outputs(storage, str(run["index_uri"]), outputs, self.family(), self.reply(), counts)
        return table, reconcile_manifests(storage, outputs, counts)


class InvokingOperator(StagingOperator):
    """An operator that invokes the model record by record through the runtime (on-demand fallback, repair).

    :param model_id: model id or inference-profile id. (templated)
    :param invocation_type: ``InvokeModel`` or ``Converse``. (templated)
    :param requests_per_second: client-side rate limit; 0: none. (templated)
    :param max_attempts: attempts per record for throttling and transient errors. (templated)
    """

    def __init__(
        self,
        *,
        model_id: str,
        invocation_type: str = "InvokeModel",
        requests_per_second: float = 5.0,
        max_attempts: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_id = model_id
        self.invocation_type = invocation_type
        self.requests_per_second = requests_per_second
        self.max_attempts = max_attempts

    def resolve_arguments(self) -> None:
        """Coerce and check the scalar arguments once templates are rendered (they may arrive as strings);
        a :class:`~bedrock_batch.errors.ConfigError` names the argument and the value."""
        self.invocation_type = as_choice("invocation_type", self.invocation_type, INVOCATION_TYPES)
        self.requests_per_second = as_float("requests_per_second", self.requests_per_second, minimum=0)
        self.max_attempts = as_int("max_attempts", self.max_attempts, minimum=1)

    def invoker(self) -> Invoke:
        """The runtime call for this task's model and invocation type (bodies kept out of the SDK's logs)."""
        from bedrock_batch.on_demand import runtime_invoker

        return runtime_invoker(self.hook.runtime_client, self.model_id, self.invocation_type)


class RoundsOperator(CollectingOperator):
    """An operator that reads the outputs of every round of a run (repair, publish).

    :param retry_jobs: the retry round's submit results (all map indexes).
    :param retry_on_demand: the retry round's on-demand result.
    :param parts: the first round's collected parts (the collect stage's ``parts`` XCom, see
        :mod:`bedrock_batch.parts`): the run is then read one part at a time, with the later rounds laid
        over each; ``None`` (or a run collected without parts): every output is joined at once.
    """

    def __init__(
        self,
        *,
        retry_jobs: Sequence[Mapping[str, Any]] | str | None = None,
        retry_on_demand: Mapping[str, Any] | str | None = None,
        parts: Sequence[str] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.retry_jobs = retry_jobs
        self.retry_on_demand = retry_on_demand
        self.parts = parts

    def part_uris(self) -> list[str] | None:
        """The collected parts' files, in order; ``None`` when the first round was collected without parts
        (the collect task pushed none: an older run, or a run staged without shard spans)."""
        if self.parts is None or isinstance(self.parts, str):
            return None
        return [str(uri) for uri in self.parts]

    def later_outputs(self, repair: Any = None) -> list[JobOutput]:
        """The outputs after the first round, in the order they ran: retry jobs, retry on-demand, then the
        repair round when given."""
        from bedrock_batch.staging import job_results, run_outputs

        return run_outputs(
            None, None, job_results(self.retry_jobs), as_mapping(self.retry_on_demand), as_mapping(repair)
        )

    def outputs(self, repair: Any = None) -> list[JobOutput]:
        """Every output of the run, in the order its rounds ran (see
        :func:`bedrock_batch.staging.run_outputs`), the repair round's last when given."""
        from bedrock_batch.staging import job_results, run_outputs

        return run_outputs(
            job_results(self.jobs),
            as_mapping(self.on_demand),
            job_results(self.retry_jobs),
            as_mapping(self.retry_on_demand),
            as_mapping(repair),
        )


def as_mapping(value: Any) -> Mapping[str, Any] | None:
    """``value`` when it is a mapping (a rendered XCom), else ``None`` (a skipped upstream task)."""
    return value if isinstance(value, Mapping) else None
