"""The real stack as separate processes: daphne, Celery GPU worker, Celery beat.

Used by the end-to-end and browser tests and by the benchmarks. Each process gets the same
environment (database, Redis, var dir, model) and logs to a file under the var dir, whose tail
is shown when something does not come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"Timed out after {timeout}s waiting for {what}")


@dataclass
class StackProcess:
    name: str
    command: list[str]
    env: dict
    log_path: Path
    process: subprocess.Popen | None = None

    def start(self) -> StackProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command, cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def log_contains(self, text: str) -> bool:
        try:
            return text in self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=15)

    def stop(self) -> None:
        if not self.alive():
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class LiveStack:
    env: dict
    log_dir: Path
    port: int = field(default_factory=free_port)
    processes: dict[str, StackProcess] = field(default_factory=dict)
    worker_count: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _process(self, name: str, command: list[str], env: dict | None = None) -> StackProcess:
        proc = StackProcess(name, command, {**self.env, **(env or {})}, self.log_dir / f"{name}.log").start()
        self.processes[name] = proc
        return proc

    def start_web(self) -> StackProcess:
        proc = self._process("web", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                                     "studio.asgi:application"])

        def answering():
            if not proc.alive():
                raise RuntimeError(f"daphne exited:\n{proc.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(answering, 30, "daphne to listen")
        return proc

    def start_worker(self, queues: str = "gpu,training,default", env: dict | None = None) -> StackProcess:
        """A Celery worker; `env`: this worker's own settings (e.g. STUDIO_WORKER_MODELS)."""
        self.worker_count += 1
        name = f"worker{self.worker_count}"
        proc = self._process(name, [
            sys.executable, "-m", "celery", "-A", "studio", "worker", "-Q", queues, "--pool=solo",
            "--concurrency=1", "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--loglevel=INFO",
        ], env)

        def ready():
            if not proc.alive():
                raise RuntimeError(f"{name} exited:\n{proc.log_tail()}")
            return proc.log_contains(" ready.")

        wait_for(ready, 90, f"{name} to be ready")
        return proc

    def start_beat(self) -> StackProcess:
        return self._process("beat", [sys.executable, "-m", "celery", "-A", "studio", "beat", "--loglevel=INFO",
                                      "-s", str(self.log_dir / "celerybeat-schedule")])

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{proc.log_tail()}" for name, proc in self.processes.items())


def stack_environment(*, database_url: str, overrides: dict | None = None) -> dict:
    """The environment every stack process shares, taken from this process's own settings."""
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "studio.settings",
        "DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
        "STUDIO_STATIC_FROM_FINDERS": "1",
    })
    env.update(overrides or {})
    return env


def database_url_for(settings_dict: dict) -> str:
    """A DATABASE_URL for the database this test process is connected to (the test database)."""
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    if engine.endswith("postgresql"):
        user = settings_dict.get("USER") or ""
        password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
        auth = f"{user}{password}@" if user else ""
        host = settings_dict.get("HOST") or "127.0.0.1"
        port = settings_dict.get("PORT") or "5432"
        return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"
    raise RuntimeError(f"No DATABASE_URL for {engine}")
