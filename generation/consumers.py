"""The websocket for one job: its owner receives progress, previews and the final result.

Messages are HTML fragments with hx-swap-oob, so the htmx ws extension swaps them in place.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.generic.websocket import WebsocketConsumer
from django.template.loader import render_to_string

from generation import selectors
from generation.events import job_group
from generation.models import Job


class JobConsumer(WebsocketConsumer):
    def connect(self):
        user = self.scope["user"]
        try:
            self.job = selectors.job_for_user(user, self.scope["url_route"]["kwargs"]["job_id"])
        except (Job.DoesNotExist, ValueError):
            self.close(code=4404)  # not yours, or no such job: indistinguishable on purpose
            return
        self.group = job_group(self.job.pk)
        async_to_sync(self.channel_layer.group_add)(self.group, self.channel_name)
        self.accept()
        self.send_state()  # a reconnecting page catches up from the database

    def disconnect(self, code):
        if hasattr(self, "group"):
            async_to_sync(self.channel_layer.group_discard)(self.group, self.channel_name)

    def receive(self, text_data=None, bytes_data=None):
        pass  # the page only listens

    def send_state(self) -> None:
        job = selectors.job_for_user(self.scope["user"], self.job.pk)
        self.send(text_data=render_to_string("generation/_job_oob.html", selectors.job_context(job)))

    def job_state(self, event):
        self.send_state()

    def job_progress(self, event):
        step, total = event["step"], event["total_steps"]
        eta = event["elapsed"] / step * (total - step) if step else None
        html = render_to_string("generation/_progress_oob.html", {"job_id": self.job.pk, "eta": eta, **event})
        self.send(text_data=html)
