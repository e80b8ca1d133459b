"""Stage 6, publishing: the results table partition, the run report, the Glue registration."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from bedrock_batch import metrics
from bedrock_batch.config import as_column_name, as_date, as_optional_str
from bedrock_batch.errors import OutputAccountingError
from bedrock_batch.operators._base import (
    ROUNDS_TEMPLATE_FIELDS,
    STORAGE_TEMPLATE_FIELDS,
    RoundsOperator,
    as_mapping,
)
from bedrock_batch.preflight import check_location
from bedrock_batch.stage_results import CatalogRegistration, CostGuardResult, PublishResult
from bedrock_batch.staging import job_results
from bedrock_batch.storage import is_s3_uri, join_uri

if TYPE_CHECKING:
    import pyarrow as pa
    from airflow.sdk import Context

    from bedrock_batch.partitions import PublishedPartition
    from bedrock_batch.results import ManifestCheck


class BedrockBatchPublishOperator(RoundsOperator):
    """Publish a run: the results table partition, the run report, and the report through XCom.

    Joins the outputs of every round in order (first-round jobs, first-round on-demand, retry jobs, retry
    on-demand, then the repair round when ``repair`` is given), so a retried success replaces the earlier
    failure and a repaired reply the one that did not conform; reads every reply with the run's reply
    format (the very schema prepare sent, from the ``run`` XCom): a conforming reply becomes the typed
    columns of the reply schema, one that does not is ``invalid_output`` with ``parse_error``
    (``"<path>: <reason>"`` of its first violation) and the reply in ``raw_text``; without a reply schema
    the reply is the ``text`` column. Adds the quarantined rows and replaces the ``ds=<partition>`` partition
    of ``<results_uri>/<table_name>/`` in one atomic write. The table's columns
    (:func:`~bedrock_batch.results.result_schema`): ``<key_column>``, ``record_id``, ``ds``, ``model_id``, the
    reply columns, ``parse_error``, ``raw_text``, ``input_tokens``, ``output_tokens``, ``stop_reason``,
    ``status`` (``succeeded``, ``invalid_output``, ``failed``, ``quarantined``), ``error_code``,
    ``error_message``, ``retryable``, ``job_arn``, ``dag_run_id``, ``processed_at``, ``source_position``,
    then the passthrough columns. The run report (:func:`~bedrock_batch.report.run_report`: the counts of
    each status, ``repaired``, tokens, cost, jobs, and each job whose ``manifest.json.out`` does not match
    its output) goes to ``<results_uri>/reports/ds=<partition>/run_report.json`` and ``run_report.md`` and is
    printed to the log. Returns a :class:`~bedrock_batch.stage_results.PublishResult`; a run whose outcomes
    do not add up to its input rows fails with :class:`~bedrock_batch.errors.OutputAccountingError` after
    publishing.

    :param prepared: the prepare stage's ``run`` XCom. (templated)
    :param jobs: the first round's submit results. (templated)
    :param on_demand: the first round's on-demand result. (templated)
    :param retry_jobs: the retry round's submit results. (templated)
    :param retry_on_demand: the retry round's on-demand result. (templated)
    :param collected: the collect stage's ``round`` XCom (for the retry count). (templated)
    :param repair: the repair round's result (:class:`~bedrock_batch.operators.BedrockBatchRepairOperator`),
        read as the run's last round; ``None``: no repair round. (templated)
    :param cost_guard: the cost guard's result (:class:`~bedrock_batch.stage_results.CostGuardResult`): its
        limit and verdict go into the run report; ``None``: not recorded. (templated)
    :param results_uri: root of the results tables and reports: ``s3://bucket/prefix``, or an explicit local
        path (``file:///abs/path`` or ``/abs/path``); anything else fails the task before it reads a record.
        (templated)
    :param table_name: name of the results table under ``results_uri``. (templated)
    :param key_column: name of the table's first column, the source row's key (the id column's value, or the
        file name). (templated)
    :param partition: the run's date partition, ``YYYY-MM-DD``: the ``ds=`` partition written and the report's
        date. The default ``{{ ds }}`` needs a logical date, which runs triggered without one do not have:
        pass a template that gives the date another way (the same as prepare's). Checked when the task
        runs. (templated)
    :param glue_database: an existing Glue database to register the table and the partition in, for Athena
        (see :func:`bedrock_batch.catalog.register_partition`); ``None`` or empty: no registration. Only
        results in S3 are registered. The XCom's ``catalog`` names what was registered. (templated)
    :param glue_table: the table's name in that database; default ``table_name``. (templated)
    :param kms_key_id: KMS key of every object written (SSE-KMS). (templated)
    :param expected_bucket_owner: account that must own every bucket touched; ``bucket_owners`` overrides it
        per bucket. (templated)
    """

    template_fields: Sequence[str] = aws_template_fields(
        *ROUNDS_TEMPLATE_FIELDS,
        "collected",
        "repair",
        "cost_guard",
        "results_uri",
        "table_name",
        "key_column",
        "partition",
        "glue_database",
        "glue_table",
        *STORAGE_TEMPLATE_FIELDS,
    )
    ui_color = "#d1c4e9"

    def __init__(
        self,
        *,
        results_uri: str,
        table_name: str,
        collected: Mapping[str, Any] | str | None = None,
        repair: Mapping[str, Any] | str | None = None,
        cost_guard: Mapping[str, Any] | str | None = None,
        key_column: str = "source_key",
        partition: str = "{{ ds }}",
        glue_database: str | None = None,
        glue_table: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.results_uri = results_uri
        self.collected = collected
        self.repair = repair
        self.cost_guard = cost_guard
        self.table_name = table_name
        self.key_column = key_column
        self.partition = partition
        self.glue_database = glue_database
        self.glue_table = glue_table

    def resolve_arguments(self) -> None:
        """Coerce the rendered ``glue_database`` (a null param renders ``"None"``, meaning no database) and
        check ``results_uri`` (an ``s3://`` URI or an explicit local path, see
        :func:`~bedrock_batch.preflight.check_location`: a relative one would write the table into the
        worker's working directory), ``key_column`` and ``partition``."""
        self.results_uri = check_location("results_uri", self.results_uri)
        self.glue_database = as_optional_str(self.glue_database)
        self.glue_table = as_optional_str(self.glue_table)
        self.key_column = as_column_name("key_column", self.key_column)
        self.partition = as_date("partition", self.partition)

    def execute(self, context: Context) -> PublishResult:
        from bedrock_batch.partitions import PartitionWriter
        from bedrock_batch.report import ResultTally, report_prefix, run_report, write_report

        self.resolve_arguments()
        run, ds, storage = self.run(), self.partition, self.storage()
        first, retry = job_results(self.jobs), job_results(self.retry_jobs)
        table_root = join_uri(self.results_uri, self.table_name)
        tally = ResultTally()
        pieces, manifests = self._result_tables(context, ds)
        # Every file of the day is written as a new version; the day switches to it in one step at commit,
        # and a failure before that leaves the previous version whole and current.
        with PartitionWriter(storage, table_root, ds, dag_run_id=str(context["run_id"])) as writer:
            schema = None
            for table in pieces:
                if table.num_rows:
                    writer.write(table)
                tally.add(table)
                schema = table.schema
            assert schema is not None  # the quarantine's table is always made
            registered: list[CatalogRegistration | None] = []

            def register(version: PublishedPartition) -> None:
                # Athena's partition moves to the new version before the older files are deleted.
                registered.append(self._register(table_root, schema, ds, version.uri))

            published = writer.commit(schema, on_published=register)
        catalog = registered[0]
        report = run_report(
            tally,
            ds=ds,
            dag_run_id=str(context["run_id"]),
            model_id=str(run["model_id"]),
            input_records=int(run.get("rows") or 0),
            retried=int((as_mapping(self.collected) or {}).get("retried") or 0),
            jobs=[{**job, "duration_seconds": self._duration(job)} for job in [*first, *retry]],
            manifests=manifests,
            cost_estimate=run.get("cost_estimate"),
            cost_guard=cast("CostGuardResult | None", as_mapping(self.cost_guard)),
        )
        report_uri = report_prefix(self.results_uri, ds)
        write_report(storage, report, report_uri)
        self.log.info("Run report for %s:\n%s", ds, report.to_text())
        metrics.emit(metrics.run_metrics(report), dag_id=self.dag_id, model_id=report.model_id)
        # Consumers scheduled on the table (e.g. the KPI DAG) read which partition changed from the event.
        for asset in self.outlets:
            context["outlet_events"][asset].extra = {
                "ds": ds,
                "partition_uri": published.uri,
                "results_uri": self.results_uri,
                "rows": published.rows,
            }
        if not report.accounted:
            raise OutputAccountingError(
                f"{report.input_records:,} input rows but {report.succeeded:,} succeeded + "
                f"{report.invalid_output:,} invalid_output + {report.failed:,} failed + "
                f"{report.quarantined:,} quarantined; the published partition is {published.uri}"
            )
        where = {"results_uri": published.uri, "report_uri": report_uri, "catalog": catalog}
        return cast(PublishResult, {**report.to_dict(), **where})

    def _result_tables(self, context: Context, ds: str) -> tuple[Iterable[pa.Table], ManifestCheck]:
        """The day's rows, a piece at a time, and every job's manifest against its output. With collected
        parts: each part's final rows (the later rounds laid over it, :func:`~bedrock_batch.parts.final_rows`)
        as they are read, then the quarantined rows; else the whole table at once."""
        from bedrock_batch.parts import iter_final_parts, read_overlay
        from bedrock_batch.results import (
            ManifestCheck,
            OutputCounts,
            assemble_results,
            load_quarantine,
            reconcile_manifests,
        )

        run, storage, reply = self.run(), self.storage(), self.reply()
        assemble = partial(
            assemble_results,
            reply=reply,
            key_column=self.key_column,
            ds=ds,
            model_id=run["model_id"],
            dag_run_id=str(context["run_id"]),
            processed_at=datetime.now(UTC),
            passthrough=run.get("passthrough_columns") or (),
        )
        quarantine = load_quarantine(storage, run["quarantine_uri"])
        uris = self.part_uris()
        if uris is None:
            joined, manifests = self.join(self.outputs(self.repair))
            return [assemble(joined, quarantine)], manifests
        later = self.later_outputs(self.repair)
        counts: dict[str, OutputCounts] = {}
        overlay = read_overlay(storage, later, self.family(), reply, counts)
        collected = as_mapping(self.collected) or {}
        retried = reconcile_manifests(storage, later, counts)
        manifests = ManifestCheck(
            mismatches=[*(collected.get("manifest_mismatches") or []), *retried.mismatches],
            missing=[*(collected.get("manifests_missing") or []), *retried.missing],
        )

        def pieces() -> Iterator[pa.Table]:
            empty = None
            for rows in iter_final_parts(storage, uris, overlay):
                empty = rows.schema.empty_table()
                yield assemble(rows, quarantine.schema.empty_table())
            if empty is None:  # no record in any part: the joined columns of an empty index
                from bedrock_batch.collect import join_results
                from bedrock_batch.parts import index_slice

                empty = join_results(index_slice(storage, str(run["index_uri"]), []), [])
            yield assemble(empty, quarantine)

        return pieces(), manifests

    def _register(
        self, table_root: str, schema: pa.Schema, ds: str, location: str
    ) -> CatalogRegistration | None:
        """Register the ``ds`` partition (its files at ``location``, the published version) in the Glue Data
        Catalog when a database is configured and the table is in S3; what was registered, or ``None``."""
        from bedrock_batch.catalog import register_partition

        if not self.glue_database:
            self.log.info("No glue_database configured: the partition is not registered in Glue")
            return None
        if not is_s3_uri(table_root):
            self.log.info("The results table is not in S3: skipping the Glue Data Catalog registration")
            return None
        registration = register_partition(
            self.hook.glue_client,
            database=str(self.glue_database),
            table=str(self.glue_table or self.table_name),
            location=table_root,
            schema=schema,
            partition_value=ds,
            partition_location=location,
        )
        return cast(CatalogRegistration, registration.to_dict())

    def _duration(self, job: Mapping[str, Any]) -> float | None:
        try:
            described = self.hook.get_job(str(job["job_arn"]))
        except Exception:
            self.log.warning("Could not read the timing of job %s", job.get("job_id"))
            return None
        start, end = described.get("submitTime"), described.get("endTime")
        return (end - start).total_seconds() if start and end else None
