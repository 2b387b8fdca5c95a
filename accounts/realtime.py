"""One event loop per process for channel-layer sends, shared by every app's real-time events.

It lives in the bottom app so that billing's wallet events and generation's job events can both
use it (the dependency direction is studio -> generation -> billing -> accounts).
"""

from __future__ import annotations

import asyncio
import os
import threading

from channels.layers import get_channel_layer

# The channel layer alias with short socket timeouts (a hung Redis must not hold the sender).
PUBLISH_LAYER = "publish"


class SendLoop:
    """One event loop, on a thread of its own, for this process's channel-layer sends.

    async_to_sync starts an event loop per call, and channels_redis opens a connection per loop:
    about 5 ms a send, paid at every denoising step of the worker. A loop that lives on keeps its
    connection, so a send costs one Redis round trip. The caller still waits for its send (events
    keep their order); a forked child starts a loop of its own."""

    SEND_TIMEOUT = 5.0  # beyond the publish layer's own socket timeouts: a stuck loop, not a slow Redis

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop, self._pid = asyncio.new_event_loop(), os.getpid()
                threading.Thread(target=self._loop.run_forever, name="channel-layer-sends", daemon=True).start()
            return self._loop

    def group_send(self, group: str, event: dict) -> None:
        layer = get_channel_layer(PUBLISH_LAYER) or get_channel_layer()
        if layer is None:  # no channel layer configured: nobody is listening
            return
        future = asyncio.run_coroutine_threadsafe(layer.group_send(group, event), self._running_loop())
        future.result(timeout=self.SEND_TIMEOUT)


send_loop = SendLoop()
