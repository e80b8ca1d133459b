"""Long-running processes of a local deployment: one session and one log file each, stopped for sure.

Each process starts a session of its own (``start_new_session``) and everything it starts stays in that
session (Airflow gives task processes a process group of their own, not a session), so the session ids name
every process of a deployment: Celery pool processes, task supervisors and task processes, a postmaster's
backends, orphans of a killed worker. Environment markers cannot: ``setproctitle``, which Celery, Airflow
and Redis use, overwrites the memory ``/proc/<pid>/environ`` shows. A :class:`SessionRegistry` file records
the sessions and their owner, so a later run can stop what a killed owner left behind (:func:`reap_orphans`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import psutil

REGISTRY_DIR = Path(tempfile.gettempdir()) / "bedrock-batch-deployments"


class DeploymentError(RuntimeError):
    """A local deployment could not start, answer or stop; the message says which component and why."""


class DeploymentTimeout(DeploymentError):
    """A component was still not ready when its time was up."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of the text file at ``path`` ('' when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def session_members(sessions: Mapping[int, float]) -> list[psutil.Process]:
    """Every live process in one of ``sessions`` (session id → its leader's start time). A session whose id
    now belongs to another leader (a reused pid) is not ours."""
    ours = {
        sid
        for sid, started in sessions.items()
        if (current := _create_time(sid)) is None or abs(current - started) < 0.5
    }
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) in ours and _alive(proc):
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def kill_all(processes: Iterable[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    """SIGKILL ``processes``; the ones still alive after ``timeout`` seconds."""
    targets = [proc for proc in processes if _alive(proc)]
    for proc in targets:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _, alive = psutil.wait_procs(targets, timeout=timeout)
    return [proc for proc in alive if _alive(proc)]


def describe(processes: Iterable[psutil.Process]) -> str:
    """``pid command`` of each process, for an error message."""
    parts = []
    for proc in processes:
        try:
            parts.append(f"{proc.pid} {' '.join(proc.cmdline())[:80] or proc.name()}")
        except psutil.Error:
            parts.append(f"{proc.pid} (gone)")
    return "; ".join(parts)


class SessionRegistry:
    """The sessions of one deployment (by run directory) and the process that owns it, in a JSON file under
    :data:`REGISTRY_DIR`, written as each process starts."""

    def __init__(self, run_dir: Path, registry_dir: Path = REGISTRY_DIR) -> None:
        self.run_dir = run_dir
        digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:16]
        self.path = registry_dir / f"{digest}.json"
        self._lock = threading.Lock()

    def _read(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.path.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def sessions(self) -> dict[int, float]:
        raw = self._read().get("sessions") or {}
        assert isinstance(raw, dict)
        return {int(sid): float(started) for sid, started in raw.items()}

    def add(self, pid: int) -> None:
        """Record the session led by ``pid`` (just started), owned by this process."""
        with self._lock:
            record = self._read()
            sessions = {**self.sessions(), pid: _create_time(pid) or time.time()}
            me = os.getpid()
            record.update(
                run_dir=str(self.run_dir),
                owner=[me, _create_time(me)],
                sessions={str(sid): started for sid, started in sessions.items()},
            )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(f".{me}.tmp")
            partial.write_text(json.dumps(record))
            partial.replace(self.path)

    def members(self) -> list[psutil.Process]:
        """Every live process of the deployment."""
        return session_members(self.sessions())

    def owner_alive(self) -> bool:
        owner = self._read().get("owner")
        if not isinstance(owner, list) or len(owner) != 2:
            return False
        current = _create_time(int(owner[0]))
        return current is not None and owner[1] is not None and abs(current - float(owner[1])) < 0.5

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def reap_orphans(registry_dir: Path = REGISTRY_DIR) -> list[psutil.Process]:
    """Kill every process of deployments whose owner is gone (a SIGKILLed test run, a closed terminal);
    the processes killed."""
    killed: list[psutil.Process] = []
    for path in sorted(registry_dir.glob("*.json")) if registry_dir.is_dir() else []:
        try:
            registry = SessionRegistry(Path(json.loads(path.read_text())["run_dir"]), registry_dir)
        except (OSError, ValueError, KeyError):
            continue
        if registry.owner_alive():
            continue
        members = registry.members()
        killed += members
        if not kill_all(members):
            registry.remove()
    return killed


class ManagedProcess:
    """One command in a session of its own, stdout and stderr appended to ``log_path``.

    :param name: the component's name in messages and log file names.
    :param command: the command line.
    :param env: its whole environment.
    :param log_path: the file its output is appended to.
    :param registry: where the deployment records the session.
    :param user: the OS user to run as (PostgreSQL refuses to run as root).
    :param stop_signal: what :meth:`stop` sends the process group first (SIGINT: PostgreSQL's fast shutdown).
    :param grace: seconds :meth:`stop` waits after ``stop_signal`` before SIGKILL to the whole session.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        registry: SessionRegistry,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        grace: float = 20.0,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.log_path = log_path
        self.registry = registry
        self.cwd = cwd
        self.user = user
        self.stop_signal = stop_signal
        self.grace = grace
        self._popen: subprocess.Popen[bytes] | None = None
        self._sessions: dict[int, float] = {}
        self._log_offset = 0

    def __repr__(self) -> str:
        return f"<{self.name} pid={self.pid} {'running' if self.running else 'stopped'}>"

    def start(self) -> ManagedProcess:
        if self.running:
            raise DeploymentError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self._popen = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=self.user,
            )
        self._sessions[self._popen.pid] = _create_time(self._popen.pid) or time.time()
        self.registry.add(self._popen.pid)
        return self

    @property
    def pid(self) -> int | None:
        """The main process (session and process group leader) of the latest start."""
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def members(self) -> list[psutil.Process]:
        """Every live process of this component: of every start, orphans of a killed one included."""
        return session_members(self._sessions)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the main process's group (dumb-init's way of signalling a container): not to task
        processes, which Airflow puts in groups of their own."""
        if self.running and self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def signal_all(self, sig: int) -> list[psutil.Process]:
        """Send ``sig`` to every process of the component (a container runtime killing a container); the
        processes signalled."""
        members = self.members()
        for proc in members:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        return members

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the main process to exit; its exit code, or None after ``timeout``."""
        if self._popen is None:
            return None
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float | None = None) -> None:
        """``stop_signal`` to the group, then SIGKILL to whatever of the component is left after ``grace``."""
        members = self.members()
        if self.running:
            self.send_signal(self.stop_signal)
            _, members = psutil.wait_procs(members, timeout=self.grace if grace is None else grace)
        kill_all([*members, *self.members()])
        if self._popen is not None:
            self._popen.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def log_text(self) -> str:
        """What the process wrote since its latest start (a restart appends to the same file)."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._log_offset)
                return handle.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
