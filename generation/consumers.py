"""The websocket for one job: its owner receives progress, previews and the final result.

Messages are HTML fragments with hx-swap-oob, so the htmx ws extension swaps them in place.

Asynchronous on purpose: a synchronous consumer runs every handler on Channels' one shared
sync thread, so 100 sockets watching one job would render and send 100 frames in a row per step.
Here a progress frame is rendered once per step for all viewers in this process (its template
needs no database) and each socket only sends it; state changes, which read the database, run
in a worker thread.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.exceptions import ValidationError
from django.template.loader import render_to_string

from generation import selectors
from generation.events import job_group
from generation.models import Job

logger = logging.getLogger(__name__)


@lru_cache(maxsize=64)
def render_progress(job_id: str, step: int, total_steps: int, elapsed: float, preview: str | None) -> str:
    """One step's fragment, shared by every socket of this process that watches the job."""
    eta = elapsed / step * (total_steps - step) if step else None
    context = {"job_id": job_id, "step": step, "total_steps": total_steps, "elapsed": elapsed,
               "preview": preview, "eta": eta}
    return render_to_string("generation/_progress_oob.html", context)


@database_sync_to_async
def _job_for(user, job_id) -> Job:
    return selectors.job_for_user(user, job_id)


@database_sync_to_async
def _render_state(user, job_id) -> str:
    job = selectors.job_for_user(user, job_id)
    return render_to_string("generation/_job_oob.html", selectors.job_context(job))


class JobConsumer(AsyncWebsocketConsumer):
    gone = False  # the browser closed the socket (or is closing it): nothing more to send

    async def connect(self):
        try:
            self.job = await _job_for(self.scope["user"], self.scope["url_route"]["kwargs"]["job_id"])
        except (Job.DoesNotExist, ValidationError, ValueError):
            await self.close(code=4404)  # not yours, or no such job: indistinguishable on purpose
            return
        self.group = job_group(self.job.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_state()  # a reconnecting page catches up from the database

    async def disconnect(self, code):
        self.gone = True
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        pass  # the page only listens

    async def send_html(self, html: str) -> None:
        """Send, unless the socket is going away. A page that swaps in a new panel closes the old
        socket while events are on their way; the server's "send on a closed protocol" error
        then means only that nobody is listening, so the rest is dropped, quietly."""
        if self.gone:
            return
        try:
            await self.send(text_data=html)
        except Exception as error:  # daphne raises autobahn's Disconnected; others would be similar
            self.gone = True
            logger.debug("Job %s socket closed while sending: %s", self.job.pk, error)

    async def send_state(self) -> None:
        try:
            html = await _render_state(self.scope["user"], self.job.pk)
        except Job.DoesNotExist:  # deleted meanwhile
            await self.close(code=4404)
            return
        await self.send_html(html)

    async def job_state(self, event):
        await self.send_state()

    async def job_progress(self, event):
        html = render_progress(str(event["job_id"]), event["step"], event["total_steps"], event["elapsed"],
                               event.get("preview"))
        await self.send_html(html)
