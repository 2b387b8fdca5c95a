"""End to end on the real stack: web form -> Redis -> Celery worker -> engine -> websocket -> PNG.

Nothing is faked: daphne, a Celery worker process (solo pool) and beat run as separate
processes on the test database and a real redis-server; the browser side is a real HTTP session
and a real websocket client. The module's tests share one stack (browser_fixtures.shared_live_stack):
starting daphne, a worker and beat costs more than most of these tests.
"""

from __future__ import annotations

import re
import time
from unittest import mock

import pytest
from PIL import Image as PILImage
from websockets.sync.client import connect as ws_connect

from billing.selectors import wallet_balance
from generation.engine.infotext import parse_infotext
from generation import services
from generation.models import Image, Job, JobState
from tests.e2e.browser_fixtures import _fresh_redis_state, live_stack, shared_live_stack  # noqa: F401  (fixtures)
from tests.live_stack import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FORM = {
    "prompt": "a small red star in the top left on a blue background", "negative_prompt": "green",
    "aspect": "1:1", "width": "", "height": "", "steps": "30", "guidance_scale": "7.5",
    "sampler": "dpmpp_2m_karras", "seed": "1234", "num_images": "1",
}
STATE_RE = re.compile(r'data-state="(\w+)"')


def submit(web_user, **changes) -> Job:
    before = set(Job.objects.values_list("pk", flat=True))
    response = web_user.post_form("/create/", {**FORM, **changes}, allow_redirects=False)
    assert response.status_code == 302, response.text[:2000]
    job = Job.objects.exclude(pk__in=before).get()
    assert response.headers["Location"] == f"/jobs/{job.pk}/"
    return job


def open_socket(stack, web_user, job):
    return ws_connect(
        f"{stack.ws_url}/ws/jobs/{job.pk}/",
        additional_headers={"Cookie": web_user.cookie_header, "Origin": stack.base_url},
        open_timeout=10,
    )


def listen_until_final(socket, timeout: float = 120) -> list[str]:
    messages = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = socket.recv(timeout=max(0.1, deadline - time.monotonic()))
        messages.append(message)
        states = STATE_RE.findall(message)
        if states and states[-1] in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
            return messages
    raise TimeoutError("no final state over the websocket")


def job_in_state(job, *states):
    job.refresh_from_db()
    return job.state in states and job


def test_generate_through_the_form_with_live_previews_and_a_png_with_parameters(live_stack, web_user_factory):
    web_user, user = web_user_factory()
    job = submit(web_user)
    with open_socket(live_stack, web_user, job) as socket:
        messages = listen_until_final(socket)

    previews = [m for m in messages if "data-preview" in m and 'src="data:image/' in m]
    assert previews, "no preview frame arrived over the websocket"
    assert any("Step " in m and " of 30" in m for m in messages)
    assert STATE_RE.findall(messages[-1])[-1] == JobState.SUCCEEDED
    assert "/original.png" in messages[-1]

    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.attempts == 1
    image = Image.objects.get(job=job)
    with image.file.open("rb") as handle, PILImage.open(handle) as png:
        assert png.format == "PNG" and png.size == (job.width, job.height)
        parameters = png.info["parameters"]
    parsed = parse_infotext(parameters)
    assert parsed["Prompt"] == FORM["prompt"]
    assert parsed["Negative prompt"] == "green"
    assert str(parsed["Seed"]) == "1234" and str(parsed["Steps"]) == "30"
    assert parsed["Sampler"] == "DPM++ 2M Karras" and str(parsed["Size"]) == f"{job.width}x{job.height}"
    assert parsed["Model hash"] == job.model_hash
    assert wallet_balance(user=user) == (200 - job.cost, 0)

    # The original PNG downloads over HTTP for its owner.
    download = web_user.http.get(f"{live_stack.base_url}/images/{image.pk}/original.png?download=1")
    assert download.status_code == 200 and download.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_preview_frames_change_as_the_image_denoises(live_stack, web_user_factory):
    web_user, _ = web_user_factory()
    job = submit(web_user, steps="40", seed="7")
    with open_socket(live_stack, web_user, job) as socket:
        messages = listen_until_final(socket)
    frames = [re.search(r'src="(data:image/[^"]+)"', m).group(1) for m in messages if 'src="data:image/' in m]
    assert len(set(frames)) >= 2, f"expected changing previews, got {len(set(frames))} distinct of {len(frames)}"


@pytest.mark.database
def test_cancel_a_running_job_over_http(live_stack, web_user_factory):
    web_user, user = web_user_factory()
    job = submit(web_user, steps="150", num_images="4")
    wait_for(lambda: job_in_state(job, JobState.RUNNING) and job.progress_step > 0, 60, "the job to run")
    response = web_user.post_form(f"/jobs/{job.pk}/cancel/", {}, allow_redirects=False)
    assert response.status_code == 302
    wait_for(lambda: job_in_state(job, JobState.CANCELLED), 30, "the job to be cancelled")
    assert job.progress_step < 150 and not job.images.exists()
    assert wallet_balance(user=user) == (200, 0)


@pytest.mark.database
def test_sigkill_the_worker_mid_job_then_restart_it(live_stack, web_user_factory):
    web_user, user = web_user_factory()
    job = submit(web_user, width="256", height="256", steps="60", num_images="2")
    wait_for(lambda: job_in_state(job, JobState.RUNNING) and job.progress_step > 2, 60, "the job to run")
    live_stack.processes["worker1"].kill()  # SIGKILL: no cleanup, no ack
    job.refresh_from_db()
    assert job.state == JobState.RUNNING and job.attempts == 1

    live_stack.start_worker()
    wait_for(lambda: job_in_state(job, JobState.SUCCEEDED, JobState.FAILED), 240, "the job to finish after the kill")
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.attempts == 2
    assert Image.objects.filter(job=job).count() == 2  # one set of results, never two
    assert wallet_balance(user=user) == (200 - job.cost, 0)


@pytest.mark.database
def test_a_job_whose_wake_up_message_was_lost_still_runs(live_stack, web_user_factory):
    """The broker message that wakes a worker is only a hint: drop it, and beat's sweep finds
    the job waiting with nothing running and wakes a worker (the database is the queue)."""
    web_user, user = web_user_factory()
    warm_up = submit(web_user, steps="4")  # the worker is up and has drained its start-up wake-up
    wait_for(lambda: job_in_state(warm_up, JobState.SUCCEEDED), 60, "a first job")
    time.sleep(2)  # ...and its claim loop has looked for more work and gone idle
    with mock.patch.object(services.wakeup, "wake_workers"):  # the message is lost; the job is committed
        job = services.job_submit(user=user, prompt="a lost message", negative_prompt="", width=64, height=64,
                                  steps=4, guidance_scale=7.0, sampler="euler", seed=1, num_images=1)
    wait_for(lambda: job_in_state(job, JobState.SUCCEEDED, JobState.FAILED), 60, "the sweep to wake a worker")
    assert job.state == JobState.SUCCEEDED, job.error


def test_a_second_user_cannot_open_the_first_users_job_or_websocket(live_stack, web_user_factory):
    owner, _ = web_user_factory()
    stranger, _ = web_user_factory()
    job = submit(owner, steps="4")
    wait_for(lambda: job_in_state(job, JobState.SUCCEEDED), 60, "the job to finish")
    image = Image.objects.get(job=job)
    for path in [f"/jobs/{job.pk}/", f"/images/{image.pk}/", f"/images/{image.pk}/original.png"]:
        assert stranger.http.get(live_stack.base_url + path).status_code == 404, path
    with pytest.raises(Exception) as refused:
        with open_socket(live_stack, stranger, job) as socket:
            socket.recv(timeout=5)
    assert "4404" in str(refused.value) or "rejected" in str(refused.value).lower() or "403" in str(refused.value)


def test_bad_input_over_http_is_a_400_and_no_job(live_stack, web_user_factory):
    web_user, user = web_user_factory()
    response = web_user.post_form("/create/", {**FORM, "width": "1004", "height": "512"}, allow_redirects=False)
    assert response.status_code == 400 and "multiple of" in response.text
    response = web_user.post_form("/create/", {**FORM, "sampler": "nope"}, allow_redirects=False)
    assert response.status_code == 400
    assert Job.objects.count() == 0
    assert wallet_balance(user=user) == (200, 0)
