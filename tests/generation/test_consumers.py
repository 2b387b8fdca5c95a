"""The job websocket on the real Redis channel layer: only the owner gets in, events arrive as HTML."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from accounts import realtime
from generation import events, services
from studio.asgi import application
from tests.factories import make_user, submit_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database, pytest.mark.asyncio]


def session_cookie(user) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"sessionid={session.session_key}"


async def connect(job, user=None, origin=b"http://127.0.0.1"):
    headers = [(b"origin", origin), (b"host", b"127.0.0.1")]  # the Host a browser on that origin sends
    if user is not None:
        headers.append((b"cookie", (await sync_to_async(session_cookie)(user)).encode()))
    # The set-up's own events (the job's creation, say) leave before the socket joins its group:
    # sends do not wait, and one arriving after the connect would be taken for the test's.
    await sync_to_async(realtime.send_loop.flush)()
    communicator = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=headers)
    connected, code = await communicator.connect()
    return communicator, connected, code


async def test_owner_connects_and_receives_the_current_state_then_live_events():
    owner = await sync_to_async(make_user)(credits=50)
    job = await sync_to_async(submit_job)(owner)
    communicator, connected, _ = await connect(job, owner)
    assert connected
    first = await communicator.receive_from()
    assert f'id="job-head-{job.pk}"' in first and 'hx-swap-oob="true"' in first and "Queued" in first

    await sync_to_async(events.job_progress)(job_id=job.pk, step=3, total_steps=10, elapsed=1.5,
                                             preview="data:image/png;base64,AAAA")
    progress = await communicator.receive_from()
    assert "Step 3 of 10" in progress and 'src="data:image/png;base64,AAAA"' in progress and "3.5s left" in progress

    lease = await sync_to_async(services.job_claim_next)(worker_id="w")
    assert lease is not None
    running = await communicator.receive_from()
    assert "Running" in running
    await communicator.disconnect()


async def test_another_user_is_refused():
    owner, stranger = await sync_to_async(make_user)(credits=50), await sync_to_async(make_user)()
    job = await sync_to_async(submit_job)(owner)
    communicator, connected, code = await connect(job, stranger)
    await communicator.disconnect()  # let the refused consumer finish, so no task outlives the test
    assert not connected and code == 4404


async def test_anonymous_is_refused():
    owner = await sync_to_async(make_user)(credits=50)
    job = await sync_to_async(submit_job)(owner)
    communicator, connected, _ = await connect(job, None)
    await communicator.disconnect()
    assert not connected


async def test_foreign_origin_is_refused():
    owner = await sync_to_async(make_user)(credits=50)
    job = await sync_to_async(submit_job)(owner)
    communicator, connected, _ = await connect(job, owner, origin=b"http://evil.example")
    await communicator.disconnect()
    assert not connected
