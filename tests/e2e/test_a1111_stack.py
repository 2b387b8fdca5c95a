"""A1111's txt2img on the real stack (daphne, a Celery worker, Redis), one stack for the module: a
client gets its images synchronously, and a client that hangs up mid-wait has its job cancelled and
its credits back."""

from __future__ import annotations

import base64
import io
import json
import socket
from urllib.parse import urlparse

import pytest
import requests
from PIL import Image as PILImage

from accounts import services as accounts
from billing.selectors import wallet_balance
from generation.models import Job, JobState
from tests.factories import make_user
from tests.live_stack import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.database, pytest.mark.django_db(transaction=True)]

TXT2IMG = {"prompt": "a small red star on a blue background", "negative_prompt": "green", "steps": 8,
           "cfg_scale": 7, "sampler_name": "Euler a", "seed": 1234, "batch_size": 2}


@pytest.fixture(scope="module")
def shared_live_stack(request, django_db_setup, django_db_blocker):
    from tests.e2e.conftest import running_stack

    with django_db_blocker.unblock(), running_stack(request.module.__name__) as stack:
        yield stack


@pytest.fixture
def live_stack(transactional_db, shared_live_stack):
    if not shared_live_stack.processes["web"].alive():
        shared_live_stack.start_web()
    return shared_live_stack


@pytest.fixture(autouse=True)
def _fresh_redis_state():
    """The shared stack's worker keeps its broker bindings in Redis across the module's tests."""
    yield


def key_of(user) -> str:
    return accounts.api_key_create(actor=user, name="a1111", scopes=["generate"])[1]


def test_txt2img_answers_with_pngs_that_carry_their_parameters(live_stack):
    user = make_user(credits=200, password=None)
    response = requests.post(f"{live_stack.base_url}/sdapi/v1/txt2img", json=TXT2IMG, auth=("a1111", key_of(user)),
                             timeout=180)
    assert response.status_code == 200, response.text[:2000]
    body = response.json()
    info = json.loads(body["info"])
    assert info["all_seeds"] == [1234, 1235] and info["sampler_name"] == "Euler a"
    for index, encoded in enumerate(body["images"]):
        picture = PILImage.open(io.BytesIO(base64.b64decode(encoded)))
        assert picture.format == "PNG" and f"Seed: {1234 + index}" in picture.text["parameters"]
        assert "Sampler: Euler a" in picture.text["parameters"]
    job = Job.objects.get(user=user)
    assert job.state == JobState.SUCCEEDED and int(response.headers["X-Credits-Charged"]) == job.cost
    assert wallet_balance(user=user)[0] == 200 - job.cost


def test_a_client_that_hangs_up_mid_wait_gets_its_running_job_cancelled_and_refunded(live_stack):
    user = make_user(credits=200, password=None)
    token = key_of(user)
    body = json.dumps({**TXT2IMG, "steps": 150, "batch_size": 1}).encode()
    url = urlparse(live_stack.base_url)
    credentials = base64.b64encode(f"a1111:{token}".encode()).decode()
    client = socket.create_connection((url.hostname, url.port), timeout=10)
    client.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                   + f"Authorization: Basic {credentials}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    job = wait_for(lambda: Job.objects.filter(user=user, state=JobState.RUNNING).first(), 120, "the job to run")
    client.close()  # the client hangs up while its job runs

    job = wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=[JobState.CANCELLED, JobState.SUCCEEDED]).first(),
                   120, "the job to end")
    assert job.state == JobState.CANCELLED and job.progress_step < 150
    assert wallet_balance(user=user)[0] == 200
