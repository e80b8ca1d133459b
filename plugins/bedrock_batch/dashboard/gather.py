"""Reading the Bedrock batch page's data from S3 and Bedrock through plain boto3 clients; no Airflow here.

:func:`sources_from_pipelines` says where to look (the declared pipelines), :class:`Gatherer` reads the job
listing, the jobs' tags and manifests, the job slots and the run reports into the rows of
:mod:`bedrock_batch.dashboard.rows`, and :class:`SnapshotCache` keeps one :class:`~.rows.Snapshot` for a time
to live so that a page refresh does not call Bedrock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from bedrock_batch.aws_errors import describe_error
from bedrock_batch.config import quota_config_for
from bedrock_batch.dashboard.rows import (
    DEFAULT_LOOKBACK_DAYS,
    DayRow,
    JobRow,
    Problem,
    Snapshot,
    Source,
    as_utc,
    day_row,
    job_row,
    model_rows,
    toolkit_tags,
)
from bedrock_batch.errors import ConfigError
from bedrock_batch.jobs import ACTIVE_STATUSES, TERMINAL_STATUSES, job_id_from_arn, output_uri_for
from bedrock_batch.models import base_model_id
from bedrock_batch.report import REPORT_FILE, REPORTS_FOLDER
from bedrock_batch.slots import JobSlots
from bedrock_batch.storage import is_s3_uri, join_uri, split_s3_uri

log = logging.getLogger(__name__)

DEFAULT_CACHE_SECONDS = 60.0
# Jobs run for at most 168 h after validation: an active job is never older than this, so one listing since
# then holds every job that counts against a quota.
_ACTIVE_HORIZON = timedelta(days=8)
_AWS_ERRORS = (ClientError, BotoCoreError)


class AwsClients(NamedTuple):
    """The boto3 clients of one AWS connection."""

    bedrock: Any
    s3: Any


# --- where the sources come from ------------------------------------------------------------------------


def sources_from_pipelines(names: Sequence[str] = ()) -> tuple[list[Source], list[Problem]]:
    """The sources of the declared pipelines, and a problem for each that could not be read.

    :param names: pipeline names (folders under ``include/pipelines/``) or folder paths; empty: every folder
        of ``include/pipelines/`` that holds a ``pipeline.yaml``.
    """
    from bedrock_batch.pipelines import PIPELINE_FILE, load_pipeline
    from bedrock_batch.resources import include_path

    problems: list[Problem] = []
    if not names:
        try:
            root = include_path("pipelines")
        except ConfigError as exc:
            return [], [Problem(f"no pipelines found: {exc}")]
        names = [str(path.parent) for path in sorted(root.glob(f"*/{PIPELINE_FILE}"))]
    sources: list[Source] = []
    for name in names:
        try:
            pipeline = load_pipeline(name)
        except ConfigError as exc:
            problems.append(Problem(f"pipeline {Path(name).name} could not be read: {exc}"))
            continue
        config = pipeline.config
        sources.append(
            Source(
                dag_id=pipeline.dag_id,
                results_uri=config.results_uri,
                staging_uri=config.staging_uri,
                model_id=config.model_id,
                max_concurrent_jobs=quota_config_for(config.quotas, config.model_id).max_concurrent_jobs,
                aws_conn_id=config.aws_conn_id,
            )
        )
    return sources, problems


# --- reading ---------------------------------------------------------------------------------------------


class Gatherer:
    """Reads the page's data through boto3 clients, remembering what cannot change.

    A job's tags and a finished job's tokens never change, so each is read once per job; a run report is read
    again only when its ETag changed (a rerun of the day).

    :param sources: the pipelines to show.
    :param clients_for: the clients of an Airflow connection id.
    :param lookback_days: jobs submitted and reports of days within this many days are shown.
    :param clock: the current time (tests pass their own).
    :param problems: problems found before reading (e.g. a pipeline that could not be read).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        clients_for: Callable[[str], AwsClients],
        *,
        lookback_days: int = DEFAULT_LOOKBACK_DAYS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        problems: Sequence[Problem] = (),
    ) -> None:
        self.sources = list(sources)
        self.clients_for = clients_for
        self.lookback_days = lookback_days
        self.clock = clock
        self.initial_problems = list(problems)
        self._tags: dict[str, dict[str, str] | None] = {}
        self._tokens: dict[str, tuple[int | None, int | None]] = {}
        self._reports: dict[str, tuple[str, DayRow]] = {}
        # Pipelines sharing a staging location and a model share one slot folder: counted once per snapshot.
        self._seen_slot_folders: set[str] = set()

    def snapshot(self) -> Snapshot:
        """Read everything once more (what is remembered aside) and build the rows."""
        now = self.clock()
        problems = list(self.initial_problems)
        listed: list[dict[str, Any]] = []
        jobs: list[JobRow] = []
        slots: dict[str, tuple[int, int]] = {}
        self._seen_slot_folders = set()
        for conn_id in sorted({source.aws_conn_id for source in self.sources}):
            try:
                clients = self.clients_for(conn_id)
                summaries = self._list_jobs(clients.bedrock, now)
            except (*_AWS_ERRORS, ConfigError) as exc:
                problems.append(
                    Problem(f"jobs of connection {conn_id} could not be listed: {_describe(exc)}")
                )
                log.warning("Listing the jobs of connection %s failed: %s", conn_id, _describe(exc))
                continue
            listed.extend(summaries)
            jobs.extend(self._toolkit_jobs(clients, summaries, now, problems))
            active_names = {str(s.get("jobName")) for s in summaries if s.get("status") in ACTIVE_STATUSES}
            for source in (s for s in self.sources if s.aws_conn_id == conn_id):
                self._add_slots(clients.s3, source, active_names, slots, problems)
        days = [day for source in self.sources for day in self._days(source, now, problems)]
        return Snapshot(
            generated_at=now,
            jobs=tuple(sorted(jobs, key=lambda j: (j.submitted_at or now, j.job_arn), reverse=True)),
            models=tuple(model_rows(self.sources, listed, jobs, slots)),
            days=tuple(sorted(days, key=lambda d: (d.ds, d.dag_id), reverse=True)),
            problems=tuple(problems),
            lookback_days=self.lookback_days,
        )

    def _list_jobs(self, bedrock: Any, now: datetime) -> list[dict[str, Any]]:
        since = now - max(timedelta(days=self.lookback_days), _ACTIVE_HORIZON)
        shown_since = now - timedelta(days=self.lookback_days)
        summaries: list[dict[str, Any]] = []
        paginator = bedrock.get_paginator("list_model_invocation_jobs")
        for page in paginator.paginate(submitTimeAfter=since, sortBy="CreationTime", sortOrder="Descending"):
            for summary in page.get("invocationJobSummaries", []):
                submitted = as_utc(summary.get("submitTime"))
                # Older finished jobs are only listed to find the active ones.
                if summary.get("status") in ACTIVE_STATUSES or submitted is None or submitted >= shown_since:
                    summaries.append(summary)
        return summaries

    def _toolkit_jobs(
        self,
        clients: AwsClients,
        summaries: Iterable[Mapping[str, Any]],
        now: datetime,
        problems: list[Problem],
    ) -> list[JobRow]:
        rows = []
        unread: list[str] = []
        for summary in summaries:
            arn = str(summary["jobArn"])
            if arn not in self._tags:
                try:
                    self._tags[arn] = toolkit_tags(
                        clients.bedrock.list_tags_for_resource(resourceARN=arn)["tags"]
                    )
                except _AWS_ERRORS as exc:
                    unread.append(_describe(exc))
                    continue
            tags = self._tags[arn]
            if tags is None:
                continue
            tokens = (
                self._job_tokens(clients.s3, summary)
                if summary.get("status") in TERMINAL_STATUSES
                else (None, None)
            )
            rows.append(job_row(summary, tags, now, tokens))
        if unread:
            # One line, not one per job: a missing permission would otherwise list every job of the account.
            problems.append(Problem(f"tags of {len(unread):,} job(s) could not be read: {unread[0]}"))
        return rows

    def _job_tokens(self, s3: Any, summary: Mapping[str, Any]) -> tuple[int | None, int | None]:
        from bedrock_batch.collect import parse_manifest
        from bedrock_batch.results import MANIFEST_NAME

        arn = str(summary["jobArn"])
        if arn in self._tokens:
            return self._tokens[arn]
        output = summary.get("outputDataConfig", {}).get("s3OutputDataConfig", {}).get("s3Uri")
        if not output:
            return None, None
        bucket, key = split_s3_uri(join_uri(output_uri_for(str(output), job_id_from_arn(arn)), MANIFEST_NAME))
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            manifest = parse_manifest(body)
        except (*_AWS_ERRORS, ValueError) as exc:
            # A failed or stopped job may have no manifest: its cost stays unknown (looked for again later).
            log.debug("No manifest for job %s: %s", job_id_from_arn(arn), _describe(exc))
            return None, None
        self._tokens[arn] = (manifest.input_tokens, manifest.output_tokens)
        return self._tokens[arn]

    def _add_slots(
        self,
        s3: Any,
        source: Source,
        active_names: set[str],
        slots: dict[str, tuple[int, int]],
        problems: list[Problem],
    ) -> None:
        model = base_model_id(source.model_id)
        key = f"{source.slots_uri}|{model}"
        if key in self._seen_slot_folders:
            return
        self._seen_slot_folders.add(key)
        try:
            held = JobSlots(s3, source.slots_uri, source.model_id, source.max_concurrent_jobs).held(
                active_names
            )
        except (*_AWS_ERRORS, ConfigError) as exc:
            problems.append(
                Problem(f"job slots of {source.dag_id} could not be read: {_describe(exc)}", source.dag_id)
            )
            return
        before = slots.get(model, (0, 0))
        slots[model] = (before[0] + len(held), before[1] + source.max_concurrent_jobs)

    def _days(self, source: Source, now: datetime, problems: list[Problem]) -> list[DayRow]:
        if not is_s3_uri(source.results_uri):
            problems.append(
                Problem(
                    f"the run reports of {source.dag_id} are not in S3 ({source.results_uri})", source.dag_id
                )
            )
            return []
        try:
            clients = self.clients_for(source.aws_conn_id)
            return self._read_days(clients.s3, source, now)
        except (*_AWS_ERRORS, ConfigError) as exc:
            problems.append(
                Problem(
                    f"the run reports of {source.dag_id} could not be read: {_describe(exc)}", source.dag_id
                )
            )
            return []

    def _read_days(self, s3: Any, source: Source, now: datetime) -> list[DayRow]:
        bucket, prefix = split_s3_uri(join_uri(source.results_uri, REPORTS_FOLDER) + "/")
        first_day = (now - timedelta(days=self.lookback_days)).date()
        rows = []
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(
            Bucket=bucket, Prefix=f"{prefix}ds=", StartAfter=f"{prefix}ds={first_day}"
        ):
            for item in page.get("Contents", []):
                key = str(item["Key"])
                if not key.endswith(f"/{REPORT_FILE}") or not _day_of(key[len(prefix) :]):
                    continue
                uri = f"s3://{bucket}/{key}"
                etag = str(item.get("ETag", ""))
                cached = self._reports.get(f"{source.dag_id}|{uri}")
                if cached is None or cached[0] != etag:
                    report = orjson.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                    if not isinstance(report, Mapping):
                        continue
                    cached = (etag, day_row(source, report, uri))
                    self._reports[f"{source.dag_id}|{uri}"] = cached
                rows.append(cached[1])
        return rows


def _day_of(relative_key: str) -> date | None:
    """The date of ``ds=YYYY-MM-DD/run_report.json``, or ``None`` for any other key."""
    folder = relative_key.split("/", 1)[0]
    try:
        return date.fromisoformat(folder.removeprefix("ds="))
    except ValueError:
        return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return describe_error(exc)
    return f"{type(exc).__name__}: {exc}"


class SnapshotCache:
    """One :class:`Snapshot` kept for ``ttl_seconds``; the first request after that reads a new one.

    Requests arriving while a snapshot is being read wait for it instead of reading their own, so the services
    see one reader however many people refresh the page.

    :param produce: reads a snapshot (:meth:`Gatherer.snapshot`).
    :param ttl_seconds: how long a snapshot is served.
    :param clock: a monotonic clock in seconds.
    """

    def __init__(
        self,
        produce: Callable[[], Snapshot],
        ttl_seconds: float = DEFAULT_CACHE_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.produce = produce
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._value: tuple[float, Snapshot] | None = None

    def get(self) -> Snapshot:
        """The current snapshot, read anew when the kept one is older than the time to live."""
        with self._lock:
            if self._value is None or self.clock() - self._value[0] >= self.ttl_seconds:
                self._value = (self.clock(), self.produce())
            return self._value[1]

    def clear(self) -> None:
        """Forget the kept snapshot: the next :meth:`get` reads a new one."""
        with self._lock:
            self._value = None
