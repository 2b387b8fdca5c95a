"""`bin/studio run`'s supervisor on the real stack: SIGKILL the worker mid-job and the studio
heals itself. The worker is restarted, sees that the process holding the job's lease is gone and
runs the job again at once, without waiting for the lease to expire (5 minutes here, so a
recovery that waited for it would time out)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from django.db import connection

from billing.selectors import wallet_balance
from generation.models import Image, JobState
from tests.e2e.conftest import WebUser
from tests.e2e.test_generation_stack import submit
from tests.factories import make_user
from tests.live_stack import BASE_DIR, database_url_for, free_port, stack_environment, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 300


class SupervisedStudio:
    """`python -m studio.supervisor` (what `bin/studio run` ends with) as a child process."""

    def __init__(self, log_path: Path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = stack_environment(database_url=database_url_for(connection.settings_dict), overrides={
            "STUDIO_PORT": str(self.port), "STUDIO_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
        })
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "studio.supervisor"], cwd=BASE_DIR, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pid(self) -> int:
        return int(re.findall(r"started worker \(pid (\d+)\)", self.log())[-1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture
def studio(tmp_path, request):
    running = SupervisedStudio(tmp_path / "supervisor.log")
    try:
        wait_for(lambda: running.process.poll() is None and " ready." in running.log(), 120,
                 "the worker to be ready")
        yield running
    finally:
        running.stop()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            print(running.log()[-6000:])


def test_a_worker_killed_mid_job_is_restarted_and_its_job_finishes_well_before_the_lease(studio):
    password = "Pw-e2e-Studio-123"
    user = make_user(credits=200, password=password)
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    web_user = WebUser(studio, user.email, password)
    job = submit(web_user, width="256", height="256", steps="60", num_images="2")

    def running_a_while():
        job.refresh_from_db()
        return job.state == JobState.RUNNING and job.progress_step > 2

    wait_for(running_a_while, 90, "the job to run")
    killed_pid = studio.worker_pid()
    os.killpg(killed_pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def finished():
        job.refresh_from_db()
        return job.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    wait_for(finished, 240, "the job to finish after the kill, before its lease would have expired")
    recovered_in = time.monotonic() - killed_at
    rerun = (job.finished_at - job.started_at).total_seconds()
    print(f"SIGKILL of the worker -> job SUCCEEDED in {recovered_in:.1f}s, of which the second run took "
          f"{rerun:.1f}s (lease {LEASE_SECONDS}s)")
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.attempts == 2
    assert Image.objects.filter(job=job).count() == 2
    assert wallet_balance(user=user) == (200 - job.cost, 0)
    assert studio.process.poll() is None, "the studio kept running"
    assert studio.worker_pid() != killed_pid
    assert f"worker (pid {killed_pid}) exited with code -9" in studio.log()
    assert "taking back their jobs" in studio.log()
