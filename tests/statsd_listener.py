"""A StatsD server for tests: a UDP socket on 127.0.0.1 that keeps every metric line it receives.

Lines are StatsD's plain format, ``<name>:<value>|<type>`` (``c`` counter, ``ms`` timer, ``g`` gauge); one
datagram may carry several lines.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from statsd import StatsClient

# Airflow's default ``[metrics] statsd_prefix``: every name the listener receives starts with it.
PREFIX = "airflow"


def statsd_config(port: int) -> dict[str, str]:
    """Environment variables that turn Airflow's StatsD metrics on, to ``127.0.0.1:port``."""
    return {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(port),
        "AIRFLOW__METRICS__STATSD_PREFIX": PREFIX,
    }


@contextmanager
def stats_of_a_new_process(monkeypatch: Any, settings: dict[str, str]) -> Iterator[None]:
    """This process's Task SDK ``Stats`` as a freshly started process has it: not set up yet, ``settings`` in
    the environment; restored afterwards. The first metric sets it up from ``[metrics]``
    (bedrock_batch.metrics), as in a triggerer's trigger process or under ``dag.test()``."""
    from airflow.sdk._shared.observability.metrics import stats

    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    saved = stats._factory, stats._backend
    stats._factory, stats._backend = None, None
    try:
        yield
    finally:
        stats._factory, stats._backend = saved


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class StatsdLine:
    """One received metric line, and the UDP port it was sent from (one per sending client)."""

    name: str
    value: float
    kind: str
    source_port: int = 0


def parse_line(line: str, source_port: int = 0) -> StatsdLine:
    """``airflow.bedrock_batch.records.succeeded:150|c`` as its name, value and type."""
    name, _, rest = line.partition(":")
    value, _, kind = rest.partition("|")
    return StatsdLine(name, float(value), kind.split("|")[0], source_port)


class StatsdListener:
    """Receives StatsD datagrams on ``127.0.0.1:port`` (0 picks a free port) in a background thread."""

    def __init__(self, port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", port))
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self.received: list[tuple[str, int]] = []  # (line, source port)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._receive, name=f"statsd-{self.port}", daemon=True)

    def __enter__(self) -> StatsdListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _receive(self) -> None:
        while not self._stopped.is_set():
            try:
                data, (_, source_port) = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            lines = data.decode("utf-8", "replace").splitlines()
            with self._lock:
                self.received.extend((line, int(source_port)) for line in lines if line)

    def lines(self, prefix: str = "") -> list[StatsdLine]:
        """Every line received so far whose name starts with ``prefix``, in arrival order."""
        with self._lock:
            received = list(self.received)
        parsed = (parse_line(line, port) for line, port in received)
        return [line for line in parsed if line.name.startswith(prefix)]

    def totals(self, prefix: str = "") -> dict[str, float]:
        """The values received for each name, added up (a counter's total; a timer sent once: its value)."""
        totals: dict[str, float] = {}
        for line in self.lines(prefix):
            totals[line.name] = totals.get(line.name, 0.0) + line.value
        return totals

    def values(self, name: str) -> list[float]:
        """Every value received for exactly ``name``."""
        return [line.value for line in self.lines(name) if line.name == name]

    def wait_for(self, condition: Callable[[StatsdListener], bool], timeout: float = 10.0) -> None:
        """Wait until ``condition(self)`` holds (UDP arrives asynchronously); fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"metrics not received within {timeout:.0f} s; got {self.received}")
            time.sleep(0.05)


class FailingStatsClient(StatsClient):
    """A StatsD client that raises on every send of a ``bedrock_batch`` metric and keeps what it was asked
    to send; Airflow's own metrics go nowhere (Airflow does not guard its own sends against a raising client).

    Set as ``[metrics] statsd_custom_client_path = tests.statsd_listener.FailingStatsClient``.
    """

    attempted: ClassVar[list[str]] = []

    def _send(self, data: str) -> None:
        if ".bedrock_batch." in data:
            FailingStatsClient.attempted.append(data)
            raise OSError("the metrics path is broken")
