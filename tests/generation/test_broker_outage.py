"""A hung Redis (the process stopped, its socket open) must not hold a request or a denoising step.

Each test starts a Redis of its own and pauses it with SIGSTOP, as an overloaded or frozen
server would behave: connections open, nothing answers.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager

import pytest
from celery import Celery
from channels.layers import channel_layers

from accounts import realtime
from generation import events
from studio.private_redis import PrivateRedis


@contextmanager
def paused_redis(tmp_path):
    server = PrivateRedis(tmp_path / "redis").start()
    try:
        yield server
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


@contextmanager
def publish_layer_at(settings, url: str):
    layers = dict(settings.CHANNEL_LAYERS)
    publish = {**layers[realtime.PUBLISH_LAYER], "CONFIG": dict(layers[realtime.PUBLISH_LAYER]["CONFIG"])}
    publish["CONFIG"]["hosts"] = [{**publish["CONFIG"]["hosts"][0], "address": url}]
    settings.CHANNEL_LAYERS = {**layers, realtime.PUBLISH_LAYER: publish}
    channel_layers.backends.pop(realtime.PUBLISH_LAYER, None)
    try:
        yield
    finally:
        channel_layers.backends.pop(realtime.PUBLISH_LAYER, None)


def test_events_to_a_hung_redis_cost_one_short_timeout_and_one_log_line(settings, tmp_path, caplog):
    with paused_redis(tmp_path) as server, publish_layer_at(settings, server.url):
        events.send_event("job-x", {"type": "job.progress"})  # connects while Redis still answers
        realtime.send_loop.flush()
        os.kill(server.process.pid, signal.SIGSTOP)
        caplog.set_level(logging.WARNING, logger="generation.events")
        started = time.monotonic()
        for step in range(50):  # a denoising loop publishing every step while Redis hangs
            events.send_event("job-x", {"type": "job.progress", "step": step})
        spent = time.monotonic() - started
        assert spent < 0.5, f"50 steps waited {spent:.1f}s on a hung Redis"  # sends do not wait
        realtime.send_loop.flush(timeout=10)
        assert time.monotonic() - started < 3.0  # one short timeout, the rest skipped
        assert len(caplog.records) == 1 and "cannot reach the channel layer" in caplog.records[0].getMessage()
        assert caplog.records[0].exc_info is None  # one line, no traceback

        os.kill(server.process.pid, signal.SIGCONT)
        time.sleep(events.Outage.RETRY_SECONDS)
        events.send_event("job-x", {"type": "job.progress"})
        realtime.send_loop.flush()
        assert "reach the channel layer again" in caplog.records[-1].getMessage()
        assert events.outage.down_since is None


def test_waking_a_worker_through_a_hung_broker_gives_up_quickly(tmp_path):
    with paused_redis(tmp_path) as server:
        app = Celery("outage-test")
        app.config_from_object("django.conf:settings", namespace="CELERY")
        app.conf.broker_url = server.url
        app.send_task("generation.tasks.process_queue")  # the pool connects while Redis answers
        os.kill(server.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(Exception):
            app.send_task("generation.tasks.process_queue")
        spent = time.monotonic() - started
        assert spent < 8.0, f"a wake-up waited {spent:.1f}s on a hung broker"


@pytest.mark.django_db(transaction=True)
def test_a_submit_does_not_wait_for_a_hanging_wake_up(monkeypatch):
    from generation.services import wakeup
    from tests.factories import make_user, submit_job

    woken = threading.Event()

    def hanging_broker(**kwargs):  # what a publish to a hung broker does until its timeouts
        time.sleep(3)
        woken.set()

    monkeypatch.setattr(wakeup, "wake_workers", hanging_broker)
    user = make_user(credits=100)
    started = time.monotonic()
    submit_job(user)
    assert time.monotonic() - started < 1.5
    assert woken.wait(10), "the wake-up still happens, in the background"
