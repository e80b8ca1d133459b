"""Collects DAG parse times and prints them at the end of the test run."""

from __future__ import annotations

import pytest

PARSE_SECONDS: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not PARSE_SECONDS:
        return
    terminalreporter.section("DAG parse times")
    for name, seconds in sorted(PARSE_SECONDS.items()):
        terminalreporter.write_line(f"{name:<48} {seconds * 1000:8.0f} ms")
