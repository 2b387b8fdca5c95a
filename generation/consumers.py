"""Websockets: one job's progress, previews and result (JobConsumer); new images of a gallery
(GalleryConsumer: My images, a team gallery) and of Create's Recent grid (RecentConsumer).

Messages are HTML fragments with hx-swap-oob, so the htmx ws extension swaps them in place.
Every socket also listens on its user's group (`events.user_group`): on `access.changed` (a
member removed or demoted) it asks the database again whether its user may still see what it
shows, and closes with 4404 if not, so a page stops receiving what a role no longer allows.

Asynchronous on purpose: a synchronous consumer runs every handler on Channels' one shared
sync thread, so 100 sockets watching one job would render and send 100 frames in a row per step.
Here a progress frame is rendered once per step for all viewers in this process (its template
needs no database) and each socket only sends it; state changes, which read the database, run
in a worker thread.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.http import HttpRequest
from django.middleware.csrf import get_token
from django.template.loader import render_to_string

from accounts.selectors import teams_of
from generation import permissions, selectors, training_selectors
from generation.events import job_group, team_gallery_group, user_gallery_group, user_group
from generation.models import Image, Job, JobKind

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
    if job.kind == JobKind.TRAIN:
        job = training_selectors.training_for_user(user, job_id)
        return render_to_string("generation/_training_oob.html", training_selectors.training_context(job, user))
    return render_to_string("generation/_job_oob.html", selectors.job_context(job))


@lru_cache(maxsize=64)
def render_training_progress(job_id: str, step: int, total_steps: int, loss: float | None, eta: float | None,
                             phase: str) -> str:
    """One training step's fragment (progress, and a point of the loss curve), shared by every
    socket of this process that watches the training; no database."""
    context = {"job_id": job_id, "step": step, "total_steps": total_steps, "loss": loss, "eta": eta,
               "phase": phase, "loss_text": "" if loss is None else repr(float(loss))}
    return render_to_string("generation/_training_progress_oob.html", context)


@database_sync_to_async
def _render_samples(user, job_id) -> str:
    job = training_selectors.training_for_user(user, job_id)
    context = {**training_selectors.training_context(job, user), "oob": True}
    return render_to_string("generation/_training_samples.html", context)


@database_sync_to_async
def _active_user(user_id):
    """The user as the database has it now (the socket's copy is from connect time)."""
    return get_user_model().objects.filter(pk=user_id, is_active=True).first()


class AccessCheckedConsumer(AsyncWebsocketConsumer):
    """Joins the user's group; on `access.changed` re-checks `still_allowed` and closes with 4404
    if it no longer holds. Subclasses join their own groups through `join`."""

    gone = False  # the browser closed the socket (or is closing it): nothing more to send

    async def join(self, *groups: str) -> None:
        self.groups_joined = [*getattr(self, "groups_joined", []), *groups]
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)

    async def join_user_group(self) -> None:
        await self.join(user_group(self.scope["user"].pk))

    async def disconnect(self, code):
        self.gone = True
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        pass  # the page only listens

    async def still_allowed(self, user) -> bool:
        raise NotImplementedError

    async def access_changed(self, event):
        user = await _active_user(self.scope["user"].pk)
        if user is None or not await self.still_allowed(user):
            self.gone = True  # events already queued for this socket are not sent
            await self.close(code=4404)  # the same code as a refused connect: nothing to tell apart

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
            logger.debug("%s socket closed while sending: %s", type(self).__name__, error)


@database_sync_to_async
def _job_still_visible(user, job_id) -> bool:
    return Job.objects.visible_to(user).filter(pk=job_id).exists()


class JobConsumer(AccessCheckedConsumer):
    async def connect(self):
        try:
            self.job = await _job_for(self.scope["user"], self.scope["url_route"]["kwargs"]["job_id"])
        except (Job.DoesNotExist, ValidationError, ValueError):
            await self.close(code=4404)  # not yours, or no such job: indistinguishable on purpose
            return
        await self.join(job_group(self.job.pk))
        await self.join_user_group()
        await self.accept()
        await self.send_state()  # a reconnecting page catches up from the database

    async def still_allowed(self, user) -> bool:
        return await _job_still_visible(user, self.job.pk)

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

    # A training (docs/fine-tuning.md): its steps with the loss, and new sample images.

    async def training_progress(self, event):
        loss = event.get("loss")
        eta = event.get("eta")
        html = render_training_progress(str(event["job_id"]), event["step"], event["total_steps"],
                                        None if loss is None else float(loss), None if eta is None else float(eta),
                                        event.get("phase") or "train")
        await self.send_html(html)

    async def training_samples(self, event):
        try:
            html = await _render_samples(self.scope["user"], self.job.pk)
        except Job.DoesNotExist:
            await self.close(code=4404)
            return
        await self.send_html(html)


# --- Galleries: new images pushed to the top of the grid ----------------------------------------

CATCH_UP_MARGIN = timedelta(seconds=60)  # longer than a job_succeed transaction stays open


def _query(scope) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(scope.get("query_string", b"").decode()).items()}


def _since(query: dict[str, str]) -> datetime | None:
    """`since` (epoch seconds, when the page was rendered): on connect, and on every reconnect
    with the same URL, the socket sends what arrived from a minute before that, so an image
    committed while the page loaded or while the socket was down is not missed. The page drops
    tiles it already shows."""
    value = query.get("since", "")
    if not (value.isascii() and value.isdigit() and len(value) <= 11):
        return None
    return datetime.fromtimestamp(int(value), tz=UTC) - CATCH_UP_MARGIN


def _here(query: dict[str, str]) -> str:
    """The page's own path, where a tile's delete form returns to (a local path or nothing)."""
    value = query.get("here", "")
    return value if value.startswith("/") and not value.startswith(("//", "/\\")) else ""


def _csrf_token(scope) -> str:
    """A masked CSRF token for the forms in pushed tiles, from the page's own CSRF cookie."""
    secret = (scope.get("cookies") or {}).get(settings.CSRF_COOKIE_NAME, "")
    if len(secret) != 32 or not secret.isalnum():
        return ""
    request = HttpRequest()
    request.META["CSRF_COOKIE"] = secret
    return get_token(request)


@database_sync_to_async
def _team_for(user, team_id):
    """The team if the user may see its gallery, else None (a 4404, like a page's 404)."""
    if not permissions.can_view_team(user, team_id):
        return None
    return teams_of(user).filter(pk=team_id).first()


@database_sync_to_async
def _can_view_team(user, team_id) -> bool:
    return permissions.can_view_team(user, team_id)


class GalleryConsumer(AccessCheckedConsumer):
    """/ws/gallery/ (my images) and /ws/teams/<team_id>/gallery/ (a team's, for its members).

    An event names image ids only; this socket renders the tiles for its own user from
    `selectors.gallery_images` (so `visible_to`), newest first, into one fragment that the page
    puts at the top of #gallery-grid."""

    template = "generation/_gallery_live.html"

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4404)
            return
        self.team = None
        team_id = self.scope["url_route"]["kwargs"].get("team_id")
        if team_id is not None:
            self.team = await _team_for(user, team_id)
            if self.team is None:
                await self.close(code=4404)  # not a member, or no such team
                return
        query = _query(self.scope)
        self.here, self.csrf_token = _here(query), _csrf_token(self.scope)
        await self.join(self.gallery_group(user))
        await self.join_user_group()
        await self.accept()
        since = _since(query)
        if since is not None:
            await self.send_images(since=since)

    def gallery_group(self, user) -> str:
        return team_gallery_group(self.team.pk) if self.team else user_gallery_group(user.pk)

    async def still_allowed(self, user) -> bool:
        return self.team is None or await _can_view_team(user, self.team.pk)

    async def gallery_image_added(self, event):
        await self.send_images(image_ids=event["image_ids"])

    async def send_images(self, *, image_ids=None, since=None) -> None:
        html = await database_sync_to_async(self.render)(image_ids=image_ids, since=since)
        if html:
            await self.send_html(html)

    def images(self, *, image_ids, since):
        """The new images this socket's user may see in this gallery, newest first."""
        images = selectors.gallery_images(self.scope["user"], team=self.team).select_related("job", "owner")
        images = images.filter(pk__in=image_ids) if image_ids is not None else images.filter(created_at__gte=since)
        return list(images.order_by("-created_at", "-id")[: selectors.GALLERY_PAGE_SIZE])

    def render(self, *, image_ids, since) -> str:
        """The tiles with the context the gallery view gives them (views.gallery_response)."""
        user = self.scope["user"]
        images = self.images(image_ids=image_ids, since=since)
        if not images:
            return ""
        for image in images:  # a teammate's tile offers no favourite or delete, as on the page
            image.read_only = not permissions.can_change_image(user, image)
        context = {"images": images, "team": self.team, "show_owner": self.team is not None, "here": self.here,
                   "csrf_token": self.csrf_token, "user": user}
        return render_to_string(self.template, context)


class RecentConsumer(GalleryConsumer):
    """/ws/recent/: Create's Recent grid, one card per job of the user's own, refreshed when
    that job's images arrive (the card replaces an older card of the same job)."""

    template = "generation/_recent_live.html"

    def render(self, *, image_ids, since) -> str:
        job_ids = [image.job_id for image in self.images(image_ids=image_ids, since=since)]
        if not job_ids:
            return ""
        in_order = Prefetch("images", queryset=Image.objects.order_by("index"))
        jobs = (Job.objects.visible_to(self.scope["user"]).filter(user=self.scope["user"], pk__in=job_ids)
                .prefetch_related(in_order).order_by("-created_at", "-id"))
        return render_to_string(self.template, {"jobs": list(jobs)})
