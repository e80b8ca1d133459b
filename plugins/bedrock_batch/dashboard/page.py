"""The Bedrock batch page as one server-rendered HTML document: plain HTML and CSS, no script, no build step.

Every value is escaped; links to Airflow's pages stay in the tab, links to the AWS console open a new one.
Only counts, ids, money, times, reason codes and the user who approved a spend are rendered.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from html import escape
from urllib.parse import quote

from bedrock_batch.dashboard.rows import DayRow, JobRow, ModelRow, Snapshot
from bedrock_batch.estimate import usd

_STATUS_CLASS = {
    "Completed": "ok",
    "PartiallyCompleted": "warn",
    "Failed": "bad",
    "Stopped": "warn",
    "Stopping": "warn",
    "Expired": "bad",
}

_CSS = """
:root { color-scheme: light dark; --muted: #6b7280; --line: #d1d5db; --ok: #15803d; --warn: #b45309;
  --bad: #b91c1c; --run: #1d4ed8; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1rem 1.5rem; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
p.meta { color: var(--muted); margin: 0 0 1rem; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { font-weight: 600; white-space: nowrap; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.status { font-weight: 600; color: var(--run); }
.status.ok { color: var(--ok); } .status.warn { color: var(--warn); } .status.bad { color: var(--bad); }
progress { width: 8rem; vertical-align: middle; }
.muted { color: var(--muted); }
ul.reasons { margin: 0; padding-left: 1rem; }
.problems { border-left: 4px solid var(--warn); padding: .25rem .75rem; }
code { font-size: 12px; }
"""


def render_page(snapshot: Snapshot, *, airflow_base: str = "", cache_seconds: float | None = None) -> str:
    """The page of ``snapshot`` (already filtered to what the user may read).

    :param snapshot: the rows to show.
    :param airflow_base: the Airflow UI's base path (``""`` at the server's root), for links to runs and logs.
    :param cache_seconds: how long the data is kept between reads, shown to the reader.
    """
    base = airflow_base.rstrip("/")
    cached = "" if cache_seconds is None else f"; refreshed at most every {cache_seconds:g} s"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Bedrock batch</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Bedrock batch</h1>",
        f'<p class="meta">Data as of <time id="generated-at">{_e(_time(snapshot.generated_at))}</time>'
        f"{_e(cached)}; jobs submitted and days within the last {snapshot.lookback_days} days. "
        '<a href="api/snapshot">JSON</a></p>',
    ]
    if snapshot.problems:
        parts.append('<div class="problems" id="problems"><p>Not everything could be read:</p><ul>')
        parts += [f"<li>{_e(p.message)}</li>" for p in snapshot.problems]
        parts.append("</ul></div>")
    parts += _jobs(snapshot.jobs, base)
    parts += _models(snapshot.models)
    parts += _days(snapshot.days, base)
    parts.append("</body></html>")
    return "\n".join(parts)


def _jobs(jobs: tuple[JobRow, ...], base: str) -> list[str]:
    rows = [
        f'<h2 id="jobs">Batch jobs <span class="muted">({len(jobs)})</span></h2>',
        '<table id="jobs-table"><thead><tr><th>DAG run</th><th>job</th><th>status</th><th>model</th>'
        "<th>records processed / total</th><th>age</th><th>est. cost</th><th>links</th></tr></thead><tbody>",
    ]
    if not jobs:
        rows.append(
            '<tr><td colspan="8" class="muted">No batch job of a readable DAG in this period.</td></tr>'
        )
    for job in jobs:
        run_url = dag_run_url(base, job.dag_id, job.run_id)
        links = [f'<a class="run-link" href="{_e(run_url)}">DAG run</a>']
        if job.task_id is not None:
            log_url = task_url(base, job.dag_id, job.run_id, job.task_id, job.map_index)
            links.append(f'<a class="log-link" href="{_e(log_url)}">task log</a>')
        links.append(
            f'<a class="console-link" href="{_e(job.console_url)}" target="_blank" rel="noopener">'
            "Bedrock console</a>"
        )
        rows.append(
            f'<tr class="job" data-job-id="{_e(job.job_id)}" data-dag-id="{_e(job.dag_id)}">'
            f'<td><a href="{_e(run_url)}">{_e(job.dag_id)}</a><br>'
            f'<span class="muted">{_e(job.run_id)}</span></td>'
            f'<td><code>{_e(job.job_name)}</code><br><span class="muted">shard {_e(job.shard)}, round '
            f"{_e(job.round)}</span></td>"
            f'<td><span class="status {_STATUS_CLASS.get(job.status, "")}">{_e(job.status)}</span></td>'
            f"<td><code>{_e(job.model_id)}</code></td>"
            f'<td class="n records">{_progress(job)}</td>'
            f'<td class="n age">{_e(_age(job.age_seconds))}</td>'
            f'<td class="n cost">{_e(_cost(job.estimated_cost_usd))}</td>'
            f"<td>{' · '.join(links)}</td></tr>"
        )
    rows.append("</tbody></table>")
    return rows


def _progress(job: JobRow) -> str:
    counts = f"{job.processed_records:,} / {job.total_records:,}"
    if job.total_records:
        bar = f'<progress max="{job.total_records}" value="{job.processed_records}"></progress> '
        return bar + f'<span class="count">{counts}</span>'
    return f'<span class="count muted">{counts}</span>'


def _models(models: tuple[ModelRow, ...]) -> list[str]:
    rows = [
        '<h2 id="models">Models</h2>',
        '<table id="models-table"><thead><tr><th>model</th><th>active jobs / quota</th>'
        "<th>of them the toolkit's</th><th>job slots held</th><th>DAGs</th></tr></thead><tbody>",
    ]
    for model in models:
        quota = "—" if model.quota is None else f"{model.quota:,}"
        bar = (
            f'<progress max="{model.quota}" value="{min(model.active_jobs, model.quota)}"></progress> '
            if model.quota
            else ""
        )
        rows.append(
            f'<tr class="model" data-model-id="{_e(model.model_id)}">'
            f"<td><code>{_e(model.model_id)}</code></td>"
            f'<td class="n active">{bar}{model.active_jobs:,} / {quota}</td>'
            f'<td class="n toolkit-active">{model.toolkit_active_jobs:,}</td>'
            f'<td class="n slots">{model.slots_held:,} / {model.slot_capacity:,}</td>'
            f"<td>{_e(', '.join(model.dag_ids))}</td></tr>"
        )
    rows.append("</tbody></table>")
    return rows


def _days(days: tuple[DayRow, ...], base: str) -> list[str]:
    rows = [
        '<h2 id="days">Runs per day and DAG</h2>',
        '<table id="days-table"><thead><tr><th>day</th><th>DAG</th><th>records</th><th>succeeded</th>'
        "<th>failed</th><th>quarantined</th><th>invalid output</th><th>tokens in / out</th><th>est. cost</th>"
        "<th>estimated before run</th><th>cost limit</th><th>top reasons</th></tr></thead><tbody>",
    ]
    if not days:
        rows.append(
            '<tr><td colspan="12" class="muted">No run report of a readable DAG in this period.</td></tr>'
        )
    for day in days:
        run_url = dag_run_url(base, day.dag_id, day.dag_run_id)
        rows.append(
            f'<tr class="day" data-ds="{_e(day.ds)}" data-dag-id="{_e(day.dag_id)}"><td>{_e(day.ds)}</td>'
            f'<td><a href="{_e(run_url)}">{_e(day.dag_id)}</a></td>'
            f'<td class="n input">{day.input_records:,}</td>'
            f'<td class="n succeeded">{day.succeeded:,}</td>'
            f'<td class="n failed">{day.failed:,}</td>'
            f'<td class="n quarantined">{day.quarantined:,}</td>'
            f'<td class="n invalid">{day.invalid_output:,}</td>'
            f'<td class="n tokens">{day.input_tokens:,} / {day.output_tokens:,}</td>'
            f'<td class="n cost">{_e(_cost(day.estimated_cost_usd))}</td>'
            f'<td class="n estimate">{_pre_run(day)}</td>'
            f'<td class="limit">{_e(_guard(day))}</td>'
            f"<td>{_reasons(day.reasons)}</td></tr>"
        )
    rows.append("</tbody></table>")
    return rows


def _pre_run(day: DayRow) -> str:
    """The cost estimated before any job and its output basis; ``-`` for a report without one."""
    if day.pre_run_basis is None:
        return '<span class="muted">-</span>'
    if day.pre_run_basis == "history":
        basis = f"history of {day.pre_run_history_runs} run(s)"
    elif day.pre_run_basis == "max_tokens":
        basis = "max_tokens bound"
    else:
        basis = day.pre_run_basis
    return f'{_e(_cost(day.pre_run_cost_usd))}<br><span class="muted basis">{_e(basis)}</span>'


def _guard(day: DayRow) -> str:
    """The cost guard's verdict: ``no limit``, ``within $5``, ``approved by ann (limit $5)``; ``-`` when the
    report has none."""
    if day.cost_verdict is None:
        return "-"
    if day.cost_limit_usd is None or day.cost_verdict == "no_limit":
        return "no limit"
    limit = usd(day.cost_limit_usd)
    if day.cost_verdict == "approved":
        return f"approved by {day.cost_approved_by or 'unknown'} (limit {limit})"
    return f"{day.cost_verdict} {limit}"


def _reasons(reasons: Mapping[str, tuple[tuple[str, int], ...]]) -> str:
    if not reasons:
        return '<span class="muted">—</span>'
    items = [
        f"<li>{_e(outcome)}: "
        + ", ".join(f"<code>{_e(code)}</code> ({count:,})" for code, count in top)
        + "</li>"
        for outcome, top in reasons.items()
    ]
    return '<ul class="reasons">' + "".join(items) + "</ul>"


def dag_run_url(base: str, dag_id: str, run_id: str) -> str:
    """The Airflow UI's page of a DAG run."""
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def task_url(base: str, dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """The Airflow UI's page of a task instance (its log); mapped instances by their index."""
    url = f"{dag_run_url(base, dag_id, run_id)}/tasks/{quote(task_id, safe='')}"
    return url if map_index is None or map_index < 0 else f"{url}/mapped/{map_index}"


def _cost(value: Decimal | None) -> str:
    return "unknown" if value is None else f"${value:,.4f}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _e(text: object) -> str:
    return escape(str(text), quote=True)
