"""The job websocket under pressure: a socket closing mid-send, many viewers of one job."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from autobahn.exception import Disconnected
from channels.testing import WebsocketCommunicator

from generation import consumers, events
from studio.asgi import application
from tests.factories import make_user, submit_job
from tests.generation.test_consumers import session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def open_socket(job, user):
    cookie = (await sync_to_async(session_cookie)(user)).encode()
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie)]
    communicator = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    await communicator.receive_from()  # the current state
    return communicator


def progress_event(job, step):
    return {"type": "job.progress", "job_id": str(job.pk), "step": step, "total_steps": 10,
            "elapsed": 0.5 * step,
            "preview": None}


async def test_a_socket_closed_by_the_browser_mid_send_drops_the_rest_without_an_error():
    owner = await sync_to_async(make_user)(credits=50)
    job = await sync_to_async(submit_job)(owner)
    consumer = consumers.JobConsumer()
    consumer.scope = {"user": owner}
    consumer.job = job
    sent = []

    async def send_on_a_closing_protocol(message):  # what daphne does once the close handshake began
        sent.append(message)
        raise Disconnected("Attempt to send on a closed protocol")

    consumer.base_send = send_on_a_closing_protocol
    await consumer.job_state({"type": "job.state"})  # must not raise
    await consumer.job_progress(progress_event(job, 3))
    assert len(sent) == 1 and consumer.gone  # the first send found the socket closing; the rest is dropped


async def test_every_viewer_gets_each_step_and_the_frame_is_rendered_once(monkeypatch):
    owner = await sync_to_async(make_user)(credits=50)
    job = await sync_to_async(submit_job)(owner)
    viewers = [await open_socket(job, owner) for _ in range(5)]
    renders = []
    real_render = consumers.render_to_string

    def counting_render(name, context=None, *args, **kwargs):
        renders.append(name)
        return real_render(name, context, *args, **kwargs)

    monkeypatch.setattr(consumers, "render_to_string", counting_render)
    consumers.render_progress.cache_clear()
    await sync_to_async(events.send_event)(events.job_group(job.pk), progress_event(job, 4))
    frames = [await viewer.receive_from(timeout=5) for viewer in viewers]
    assert all("Step 4 of 10" in frame for frame in frames)
    assert renders.count("generation/_progress_oob.html") == 1
    for viewer in viewers:
        await viewer.disconnect()
