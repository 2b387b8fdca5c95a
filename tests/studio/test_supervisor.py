"""The supervisor behind `bin/studio run`: a dead process is restarted, the others keep serving."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from studio import supervisor as supervisor_module
from studio.supervisor import Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def wait_until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def running():
    """Start a supervisor's watch loop in a thread; stop everything afterwards."""
    supervisors, results = [], {}

    def start(children: dict[str, list[str]]) -> Supervisor:
        sup = Supervisor()
        for name, command in children.items():
            sup.start(name, command)
        thread = threading.Thread(target=lambda: results.setdefault(id(sup), sup.watch()), daemon=True)
        thread.start()
        sup.thread = thread
        sup.result = lambda: results.get(id(sup))
        supervisors.append(sup)
        return sup

    yield start
    for sup in supervisors:
        sup.stopping.set()
        sup.thread.join(timeout=5)
        sup.stop_all()


def test_a_killed_child_is_restarted_and_the_others_keep_running(running, capsys):
    sup = running({"web": SLEEPER, "worker": SLEEPER})
    web, worker = sup.children
    web_pid, worker_pid = web.process.pid, worker.process.pid
    os.killpg(worker_pid, signal.SIGKILL)
    assert wait_until(lambda: worker.process.pid != worker_pid and worker.process.poll() is None)
    assert web.process.pid == web_pid and web.process.poll() is None
    assert sup.result() is None  # still watching
    out = capsys.readouterr().out
    assert f"worker (pid {worker_pid}) exited with code -9" in out and "restarting it in 1s" in out
    assert f"restarted worker (pid {worker.process.pid})" in out


def test_a_child_that_cannot_start_stops_the_studio(running, capsys):
    sup = running({"web": SLEEPER, "broken": [sys.executable, "-c", "import sys; sys.exit(3)"]})
    assert wait_until(lambda: sup.result() is not None)
    assert sup.result() == 3
    assert "broken exited with code 3 while starting; stopping the studio" in capsys.readouterr().out


def test_a_child_that_keeps_dying_is_given_up_after_backing_off(running, capsys, monkeypatch):
    monkeypatch.setattr(supervisor_module, "RESTART_DELAYS_SECONDS", (0.1, 0.2))
    sup = running({"flaky": [sys.executable, "-c", "import time; time.sleep(0.3)"]})
    assert wait_until(lambda: sup.result() is not None)
    flaky = sup.children[0]
    assert flaky.starts == 3  # the first start and two restarts, then it gives up
    assert "3 times in a row" in capsys.readouterr().out
