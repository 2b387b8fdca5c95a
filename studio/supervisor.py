"""Start the whole studio on one machine: Redis (unless REDIS_URL), a GPU worker, beat, daphne.

    python -m studio.supervisor          # what `bin/studio run` ends with

Every process's output goes to the console prefixed by its name. Ctrl-C (or SIGTERM) stops them
all, politely first, then by force. A process that dies is started again after a pause that
doubles with each quick failure, while the others keep serving; the studio stops only when a
process exits with an error right after its first start (a configuration error, such as a port
in use: nothing to retry) or keeps dying within seconds of every restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
COLOURS = ["\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m"]
RESET = "\033[0m"
STOP_GRACE_SECONDS = 10
RESTART_DELAYS_SECONDS = (1, 2, 4, 8, 16)  # after the 1st, 2nd, ... failure in a row
STABLE_AFTER_SECONDS = 30  # a process that ran this long before dying starts its backoff afresh
STARTUP_SECONDS = 15  # exiting with an error this soon after the first start is a start failure


@dataclass
class Child:
    name: str
    command: list[str]
    colour: str
    process: subprocess.Popen | None = None
    reader: threading.Thread | None = field(default=None, repr=False)
    started_at: float = 0.0
    starts: int = 0
    quick_failures: int = 0  # deaths in a row, each within STABLE_AFTER_SECONDS of its start
    restart_at: float | None = None  # when a dead process is due to start again


def var_dir() -> Path:
    return Path(os.environ.get("STUDIO_VAR_DIR", BASE_DIR / "var")).resolve()


def planned_children(python: str) -> list[tuple[str, list[str]]]:
    host = os.environ.get("STUDIO_HOST", "127.0.0.1")
    port = os.environ.get("STUDIO_PORT", "8000")
    return [
        ("web", [python, "-m", "daphne", "-b", host, "-p", port, "studio.asgi:application"]),
        ("worker", [python, "-m", "celery", "-A", "studio", "worker", "-Q", "gpu,training,default", "--pool=solo",
                    "--concurrency=1", "-n", "gpu@%h", "--loglevel=INFO"]),
        ("beat", [python, "-m", "celery", "-A", "studio", "beat", "--loglevel=INFO",
                  "-s", str(var_dir() / "celerybeat-schedule")]),
    ]


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self.print_lock = threading.Lock()
        self.stopping = threading.Event()
        self.use_colour = sys.stdout.isatty()

    def say(self, name: str, colour: str, line: str) -> None:
        prefix = f"{colour}{name:>6} |{RESET} " if self.use_colour else f"{name:>6} | "
        with self.print_lock:
            sys.stdout.write(prefix + line.rstrip("\n") + "\n")
            sys.stdout.flush()

    def start(self, name: str, command: list[str]) -> Child:
        child = Child(name, command, COLOURS[len(self.children) % len(COLOURS)])
        self.children.append(child)
        self.spawn(child)
        return child

    def spawn(self, child: Child) -> None:
        process = subprocess.Popen(
            child.command, cwd=BASE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
        )
        child.starts += 1
        verb = "started" if child.starts == 1 else "restarted"
        self.say("studio", RESET, f"{verb} {child.name} (pid {process.pid}): {' '.join(child.command)}")
        child.process, child.started_at, child.restart_at = process, time.monotonic(), None
        child.reader = threading.Thread(target=self.pump, args=(child, process), daemon=True)
        child.reader.start()

    def pump(self, child: Child, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.say(child.name, child.colour, line)

    def stop_all(self) -> None:
        self.stopping.set()
        alive = [child for child in reversed(self.children) if child.process.poll() is None]
        for child in alive:
            self.signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in alive:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say("studio", RESET, f"{child.name} did not stop in {STOP_GRACE_SECONDS}s; killing it")
                self.signal_group(child, signal.SIGKILL)
                child.process.wait()
        for child in self.children:  # kill any grandchildren left in the groups
            self.signal_group(child, signal.SIGKILL)

    @staticmethod
    def signal_group(child: Child, sig: int) -> None:
        try:
            os.killpg(child.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def watch(self) -> int:
        """Restart children that die; return the exit code to use once we are told to stop, or
        once a child cannot be kept running."""
        while not self.stopping.is_set():
            for child in self.children:
                if child.restart_at is not None:
                    if time.monotonic() >= child.restart_at:
                        self.spawn(child)
                    continue
                code = child.process.poll()
                if code is not None and (gave_up := self.on_death(child, code)) is not None:
                    return gave_up
            time.sleep(0.2)
        return 0

    def on_death(self, child: Child, code: int) -> int | None:
        """Schedule the restart of a child that exited; the studio's exit code if we give up."""
        ran = time.monotonic() - child.started_at
        child.quick_failures = child.quick_failures + 1 if ran < STABLE_AFTER_SECONDS else 1
        self.signal_group(child, signal.SIGKILL)  # whatever it left behind in its group
        if child.starts == 1 and code > 0 and ran < STARTUP_SECONDS:  # not killed: it could not start
            self.say("studio", RESET,
                     f"{child.name} exited with code {code} while starting; stopping the studio")
            return code or 1
        if child.quick_failures > len(RESTART_DELAYS_SECONDS):
            self.say("studio", RESET, f"{child.name} exited with code {code}, {child.quick_failures} times in a "
                                      f"row within {STABLE_AFTER_SECONDS}s of starting; stopping the studio")
            return code or 1
        delay = RESTART_DELAYS_SECONDS[child.quick_failures - 1]
        self.say("studio", RESET, f"{child.name} (pid {child.process.pid}) exited with code {code} after "
                                  f"{ran:.0f}s; restarting it in {delay}s, the rest keeps serving")
        child.restart_at = time.monotonic() + delay
        return None


def start_everything(supervisor: Supervisor) -> None:
    if not os.environ.get("REDIS_URL"):
        from studio.private_redis import PrivateRedis

        redis = PrivateRedis(var_dir() / "redis")
        os.environ["REDIS_URL"] = redis.url
        redis.process = supervisor.start("redis", redis.command()).process
        redis.wait_until_ready()
    supervisor.say("studio", RESET, f"Redis at {os.environ['REDIS_URL']}")
    database = os.environ.get("DATABASE_URL", f"sqlite:///{var_dir() / 'studio.sqlite3'}")
    supervisor.say("studio", RESET, f"Database {database.split('@')[-1]}")
    for name, command in planned_children(sys.executable):
        supervisor.start(name, command)
    host = os.environ.get("STUDIO_HOST", "127.0.0.1")
    supervisor.say("studio", RESET, f"Studio is starting at http://{host}:{os.environ.get('STUDIO_PORT', '8000')}/ "
                                    "(Ctrl-C stops everything)")


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    os.environ["PYTHONUNBUFFERED"] = "1"
    supervisor = Supervisor()

    def on_signal(signum, frame):
        supervisor.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    try:
        start_everything(supervisor)
        code = supervisor.watch()
    except Exception as error:
        supervisor.say("studio", RESET, f"could not start: {error}")
        code = 1
    supervisor.say("studio", RESET, "stopping…")
    supervisor.stop_all()
    supervisor.say("studio", RESET, "stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
