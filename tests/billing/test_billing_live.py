"""Live balance: which wallet events each change produces (Zulip style), and the websocket consumer."""

from __future__ import annotations

import pytest
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import transaction

from accounts import realtime  # the process send loop that billing.events sends through
from billing import events
from billing.routing import websocket_urlpatterns
from billing.services import InsufficientCredits, credits_capture, credits_release, credits_reserve
from tests.billing.support import give, make_job


class FakeLayer:
    def __init__(self):
        self.sent = []

    async def group_send(self, group, message):
        self.sent.append((group, message))


@pytest.fixture
def layer(monkeypatch):
    fake = FakeLayer()
    monkeypatch.setattr(realtime, "get_channel_layer", lambda alias="default": fake)
    return fake


@pytest.mark.django_db
def test_each_change_sends_one_balance_update_after_commit(user, layer, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        give(user, 10)
    realtime.send_loop.flush()  # sends leave without waiting
    assert len(callbacks) == 1
    ((group, message),) = layer.sent
    assert group == f"wallet.user.{user.pk}"
    assert message["type"] == "wallet.update"
    assert 'id="credit-balance"' in message["html"] and 'hx-swap-oob="true"' in message["html"]
    assert ">10</span>" in message["html"]

    layer.sent.clear()
    job = make_job(user, num_images=2)
    with django_capture_on_commit_callbacks(execute=True):
        credits_reserve(user=job.user, subject=job.subject, amount=8)
    realtime.send_loop.flush()  # sends leave without waiting
    assert [m["html"].count(">2</span>") for _, m in layer.sent] == [1]
    layer.sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        credits_capture(subject=job.subject, amount=4)  # capture + release: two entries, two updates
    realtime.send_loop.flush()  # sends leave without waiting
    assert len(layer.sent) == 2 and ">6</span>" in layer.sent[-1][1]["html"]
    layer.sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        credits_release(subject=job.subject, reason="no-op")  # already settled: nothing happens, nothing is sent
    realtime.send_loop.flush()  # sends leave without waiting
    assert layer.sent == []


@pytest.mark.django_db
def test_nothing_is_sent_when_the_transaction_rolls_back(user, layer, django_capture_on_commit_callbacks):
    give(user, 1)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(InsufficientCredits):
            with transaction.atomic():
                credits_reserve(user=user, subject=make_job(user).subject, amount=4)
    realtime.send_loop.flush()  # sends leave without waiting
    assert callbacks == [] and layer.sent == []


@pytest.mark.django_db
def test_a_broken_channel_layer_never_breaks_a_movement(user, monkeypatch, django_capture_on_commit_callbacks):
    class Broken:
        async def group_send(self, group, message):
            raise ConnectionError("redis is down")

    monkeypatch.setattr(realtime, "get_channel_layer", lambda alias="default": Broken())
    with django_capture_on_commit_callbacks(execute=True):
        give(user, 3)
    realtime.send_loop.flush()  # sends leave without waiting
    from billing.selectors import wallet_balance

    assert wallet_balance(user=user) == (3, 0)


def _app(user):
    router = URLRouter(websocket_urlpatterns)

    async def app(scope, receive, send):
        return await router({**scope, "user": user}, receive, send)

    return app


@pytest.mark.asyncio
async def test_consumer_refuses_anonymous(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    communicator = WebsocketCommunicator(_app(AnonymousUser()), "/ws/wallet/")
    connected, code = await communicator.connect()
    await communicator.disconnect()
    assert not connected


@pytest.mark.asyncio
async def test_consumer_relays_the_users_group_only(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

    class User:
        is_authenticated = True

        def __init__(self, pk):
            self.pk = pk

    mine = WebsocketCommunicator(_app(User(1)), "/ws/wallet/")
    theirs = WebsocketCommunicator(_app(User(2)), "/ws/wallet/")
    assert (await mine.connect())[0] and (await theirs.connect())[0]
    await get_channel_layer().group_send(events.wallet_group_name(1), {"type": "wallet.update", "html": "<a id=x>"})
    assert await mine.receive_from(timeout=2) == "<a id=x>"
    assert await theirs.receive_nothing(timeout=0.2)
    await mine.disconnect()
    await theirs.disconnect()
