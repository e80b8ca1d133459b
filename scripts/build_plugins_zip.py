"""Build the ``plugins.zip`` an Amazon MWAA environment loads: the library and the plugin entry point.

The library's price table is package data inside ``bedrock_batch/``, so it comes along; the project's
``include/`` (prompts, configuration) does not: on MWAA it is uploaded under ``dags/`` (docs/deploy.md).
Leaves out caches and build leftovers; development tools live outside plugins/ (in dev/), so nothing else
needs excluding.
Usage: ``python scripts/build_plugins_zip.py [--plugins-dir plugins] [--output dist/plugins.zip]``.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Top-level entries of plugins/ that MWAA needs: the package DAGs import, the Airflow plugin that registers
# its extra links, and the .airflowignore that keeps Airflow from loading the package's modules as plugins.
TOP_LEVEL = ("bedrock_batch", "bedrock_batch_plugin.py", ".airflowignore")

EXCLUDED_NAMES = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".DS_Store"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".egg-info")

# Fixed entry timestamps make the archive a function of the sources only: an unchanged library gives a
# byte-identical plugins.zip, so uploading it again does not create a new S3 version (nor an MWAA update).
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644
DIRECTORY_MODE = 0o755


def plugin_files(plugins_dir: Path) -> Iterator[tuple[Path, str]]:
    """``(path, name in the archive)`` of every file that goes into plugins.zip, sorted by name.

    :param plugins_dir: the project's ``plugins/`` folder.
    :raises FileNotFoundError: when an entry MWAA needs is missing.
    """
    found: list[tuple[Path, str]] = []
    for entry in TOP_LEVEL:
        path = plugins_dir / entry
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; run this from a full checkout of the repository")
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for candidate in candidates:
            name = candidate.relative_to(plugins_dir).as_posix()
            if candidate.is_file() and _included(name):
                found.append((candidate, name))
    yield from sorted(found, key=lambda item: item[1])


def _included(name: str) -> bool:
    parts = name.split("/")
    return not any(part in EXCLUDED_NAMES or part.endswith(EXCLUDED_SUFFIXES) for part in parts)


def build(plugins_dir: Path, output: Path) -> list[str]:
    """Write plugins.zip to ``output`` and return the archived names (directories first, then files).

    :param plugins_dir: the project's ``plugins/`` folder.
    :param output: the zip file to write (its parent directories are created).
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    files = list(plugin_files(plugins_dir))
    # Directory entries too, as `zip -r` writes them, so every unzip recreates the folders with their modes.
    directories = sorted(
        {name.rsplit("/", i)[0] + "/" for _, name in files for i in range(1, name.count("/") + 1)}
    )
    names: list[str] = []
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for directory in directories:
            info = zipfile.ZipInfo(directory, date_time=ZIP_EPOCH)
            info.external_attr = (0o040000 | DIRECTORY_MODE) << 16
            archive.writestr(info, b"")
            names.append(directory)
        for path, name in files:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100000 | FILE_MODE) << 16  # a regular file, rw-r--r--
            archive.writestr(info, path.read_bytes())
            names.append(name)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins-dir", type=Path, default=REPO / "plugins", help="default: plugins/")
    parser.add_argument(
        "--output", type=Path, default=REPO / "dist" / "plugins.zip", help="default: dist/plugins.zip"
    )
    args = parser.parse_args(argv)
    try:
        names = build(args.plugins_dir, args.output)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    files = [name for name in names if not name.endswith("/")]
    print(f"wrote {args.output} ({len(files)} files, {args.output.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
