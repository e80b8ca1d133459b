"""Where the library finds its files, the same way in every install: a checkout, ``pip install``, Airflow's
plugins folder and MWAA's ``plugins.zip``.

Two kinds of files:

- the library's own data (the Bedrock price table) ships inside the ``bedrock_batch`` package and is read
  with :mod:`importlib.resources`, so it loads from a wheel and from a zip alike;
- the project's files (prompt templates, pipeline configuration) live in the project's ``include/``
  folder, found by :func:`include_search_path`: the first folder of that list that holds the requested
  entry wins.

Nothing here imports Airflow unless Airflow's DAGs folder is needed and not set in the environment.
"""

from __future__ import annotations

import os
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import NamedTuple

from bedrock_batch.errors import ConfigError

# The project's include/ folder; when set, the only place looked (a wrong value fails, never falls through).
INCLUDE_DIR_ENV = "BEDROCK_BATCH_INCLUDE_DIR"
# A price table file to use instead of the one shipped in the package.
PRICE_FILE_ENV = "BEDROCK_BATCH_PRICE_FILE"

PACKAGE = "bedrock_batch"


def package_file(*parts: str) -> Traversable:
    """A data file shipped inside the ``bedrock_batch`` package (a real file or an entry of a zip).

    :param parts: path components below the package, e.g. ``("pricing", "bedrock_batch_prices.json")``.
    """
    resource = files(PACKAGE)
    for part in parts:
        resource = resource / part
    return resource


PACKAGED_PRICE_FILE = package_file("pricing", "bedrock_batch_prices.json")


def price_file_override() -> Path | None:
    """``$BEDROCK_BATCH_PRICE_FILE``: a price table to read instead of :data:`PACKAGED_PRICE_FILE`."""
    override = os.environ.get(PRICE_FILE_ENV)
    return Path(os.path.expanduser(override)) if override else None


class IncludeCandidate(NamedTuple):
    """One place the project's ``include/`` folder may be, and why it is looked at."""

    path: Path
    reason: str


def include_search_path() -> list[IncludeCandidate]:
    """Where the project's ``include/`` folder is looked for, in this order.

    1. ``$BEDROCK_BATCH_INCLUDE_DIR``; when set, the only place looked.
    2. ``<dags_folder>/../include``: beside Airflow's DAGs folder (docker compose, Astro, the image).
    3. ``<dags_folder>/include``: inside the DAGs folder (Amazon MWAA, which syncs only ``dags/``).
    4. ``$AIRFLOW_HOME/include`` (``~/airflow/include`` when unset).
    5. ``include/`` of the project that holds ``plugins/bedrock_batch`` (a checkout, an editable install).

    Duplicates are dropped, keeping the first.
    """
    explicit = os.environ.get(INCLUDE_DIR_ENV)
    if explicit:
        return [IncludeCandidate(_absolute(explicit), f"${INCLUDE_DIR_ENV}")]
    candidates = []
    dags = airflow_dags_folder()
    if dags is not None:
        candidates.append(IncludeCandidate(dags.parent / "include", f"beside the DAGs folder {dags}"))
        candidates.append(IncludeCandidate(dags / "include", "inside the DAGs folder, the MWAA layout"))
    home = _absolute(os.environ.get("AIRFLOW_HOME") or "~/airflow")
    candidates.append(IncludeCandidate(home / "include", "$AIRFLOW_HOME"))
    package = Path(__file__).resolve().parent
    candidates.append(IncludeCandidate(package.parents[1] / "include", f"the project holding {package}"))
    unique: dict[Path, IncludeCandidate] = {}
    for candidate in candidates:
        unique.setdefault(candidate.path, candidate)
    return list(unique.values())


def include_path(*parts: str) -> Path:
    """``include/<parts>`` of the first folder of :func:`include_search_path` that holds it.

    :param parts: path components below ``include/``, e.g. ``("prompts",)`` or
        ``("config", "call_center_summarization.json")``.
    :raises ConfigError: when no folder holds it; the message lists every place looked.
    """
    relative = Path(*parts)
    candidates = include_search_path()
    for candidate in candidates:
        if (candidate.path / relative).exists():
            return candidate.path / relative
    if os.environ.get(INCLUDE_DIR_ENV):
        raise ConfigError(
            f"{candidates[0].path / relative} does not exist: ${INCLUDE_DIR_ENV} must name the project's "
            f"include/ folder (the one holding prompts/ and config/); unset it to search the usual places"
        )
    looked = "\n".join(f"  {candidate.path / relative}  ({candidate.reason})" for candidate in candidates)
    raise ConfigError(
        f"cannot find include/{relative.as_posix()}; looked in this order:\n{looked}\n"
        f"Put the project's include/ folder beside Airflow's DAGs folder (on Amazon MWAA: upload it under "
        f"dags/, as dags/include/), or set ${INCLUDE_DIR_ENV} to its path."
    )


def airflow_dags_folder() -> Path | None:
    """Airflow's DAGs folder (``[core] dags_folder``), or ``None`` when Airflow is not installed."""
    # Airflow's environment variable wins over airflow.cfg; reading it first spares processes that are not
    # Airflow (unit tests, benchmarks) the seconds an Airflow import takes.
    value = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER")
    if not value:
        try:
            from airflow.configuration import conf
        except ImportError:
            return None
        value = conf.get("core", "dags_folder")
    return _absolute(value)


def _absolute(path: str | os.PathLike[str]) -> Path:
    # abspath normalizes "dags/../include" textually, as a user reads it; resolve() would follow symlinks.
    return Path(os.path.abspath(os.path.expanduser(os.path.expandvars(os.fspath(path)))))
