"""One event loop per process for channel-layer sends, shared by every app's real-time events.

It lives in the bottom app so that billing's wallet events and generation's job events can both
use it (the dependency direction is studio -> generation -> billing -> accounts).
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future

from channels.layers import get_channel_layer

# The channel layer alias with short socket timeouts (a hung Redis must not hold the sender).
PUBLISH_LAYER = "publish"


class SendLoop:
    """One event loop, on a thread of its own, for this process's channel-layer sends.

    async_to_sync starts an event loop per call, and channels_redis opens a connection per loop:
    about 5 ms a send, paid at every denoising step of the worker. A loop that lives on keeps its
    connection, so a send costs one Redis round trip. Sends leave in the order they were made (one
    asyncio lock, whose waiters are served first come, first served). `send` does not wait for its
    send (the denoising loop and a request's commit go on at once); `group_send` does. A forked
    child starts a loop of its own."""

    SEND_TIMEOUT = 5.0  # beyond the publish layer's own socket timeouts: a stuck loop, not a slow Redis
    MAX_PENDING = 1000  # sends waiting for a slow Redis beyond this are dropped (the DB stays the truth)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._order: asyncio.Lock | None = None
        self._pid = 0
        self.pending = 0

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop, self._pid, self._order = asyncio.new_event_loop(), os.getpid(), None
                threading.Thread(target=self._loop.run_forever, name="channel-layer-sends", daemon=True).start()
            return self._loop

    def send(self, group: str, event: dict, *, skip=None, on_error=None, on_success=None) -> Future | None:
        """Send in order without waiting. On the loop, just before sending: `skip()` true drops it
        (e.g. while the layer is known to be down); then `on_error(error)` or `on_success()`."""
        layer = get_channel_layer(PUBLISH_LAYER) or get_channel_layer()
        if layer is None:  # no channel layer configured: nobody is listening
            return None
        if self.pending >= self.MAX_PENDING:
            if on_error is not None:
                on_error(RuntimeError(f"{self.pending} channel-layer sends are waiting"))
            return None
        self.pending += 1
        return asyncio.run_coroutine_threadsafe(
            self._send_in_order(layer, group, event, skip, on_error, on_success), self._running_loop())

    async def _send_in_order(self, layer, group, event, skip, on_error, on_success) -> None:
        if self._order is None:
            self._order = asyncio.Lock()
        try:
            async with self._order:
                if skip is not None and skip():
                    return
                try:
                    await asyncio.wait_for(layer.group_send(group, event), self.SEND_TIMEOUT)
                except Exception as error:
                    if on_error is None:
                        raise
                    on_error(error)
                else:
                    if on_success is not None:
                        on_success()
        finally:
            self.pending -= 1

    def group_send(self, group: str, event: dict) -> None:
        """Send in order and wait for it (its error raised here)."""
        future = self.send(group, event)
        if future is not None:
            future.result(timeout=self.SEND_TIMEOUT * 2)

    def flush(self, timeout: float = SEND_TIMEOUT * 2) -> None:
        """Wait until every send made so far has left (tests; a process about to exit)."""
        async def nothing():
            if self._order is None:
                self._order = asyncio.Lock()
            async with self._order:
                return None

        asyncio.run_coroutine_threadsafe(nothing(), self._running_loop()).result(timeout=timeout)


send_loop = SendLoop()
