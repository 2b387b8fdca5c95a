"""Real-time events for jobs, sent over the channel layer (Zulip's send_event_on_commit pattern).

Every state change in `generation.services` calls one of these functions, which send only after
the transaction commits: a browser never hears of a state the database does not hold. The
database stays the source of truth; a lost event costs a moment of staleness, never data, so a
broken channel layer is logged, not raised.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import transaction

from accounts.realtime import send_loop

logger = logging.getLogger(__name__)
_capture = threading.local()


def job_group(job_id) -> str:
    return f"job-{job_id}"


def user_gallery_group(user_id) -> str:
    """Sockets showing one user's own images: My images and Create's Recent grid."""
    return f"gallery-user-{user_id}"


def team_gallery_group(team_id) -> str:
    """Sockets showing one team's gallery."""
    return f"gallery-team-{team_id}"


def user_group(user_id) -> str:
    """Every socket a user has open that shows something a team role allows (job, galleries)."""
    return f"user-{user_id}"


@contextmanager
def capture_events() -> Iterator[list[tuple[str, dict]]]:
    """Tests: collect (group, event) pairs in this thread instead of sending them."""
    _capture.events = []
    try:
        yield _capture.events
    finally:
        del _capture.events




class Outage:
    """Remembers that the channel layer is down, so a Redis outage costs one log line and, per
    RETRY_SECONDS, one timed-out send (not one traceback and one timeout per denoising step)."""

    RETRY_SECONDS = 2.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down_since: float | None = None
        self.next_try = 0.0
        self.dropped = 0

    def should_skip(self) -> bool:
        with self.lock:
            if self.down_since is not None and time.monotonic() < self.next_try:
                self.dropped += 1
                return True
            return False

    def failed(self, error: Exception) -> None:
        with self.lock:
            now = time.monotonic()
            self.next_try = now + self.RETRY_SECONDS
            self.dropped += 1
            if self.down_since is None:
                self.down_since = now
                logger.warning("Live events cannot reach the channel layer (%s: %s); pages fall back to "
                               "polling until it is back", type(error).__name__, error)

    def succeeded(self) -> None:
        with self.lock:
            if self.down_since is not None:
                logger.warning("Live events reach the channel layer again after %.1fs (%d events dropped)",
                               time.monotonic() - self.down_since, self.dropped)
            self.down_since, self.dropped = None, 0


outage = Outage()




def send_event(group: str, event: dict) -> None:
    captured = getattr(_capture, "events", None)
    if captured is not None:
        captured.append((group, event))
        return
    if outage.should_skip():
        return
    # Without waiting (a denoising step or a request goes on at once), in order; a failure is
    # the outage's to log: the DB is the source of truth, and pages fall back to polling.
    send_loop.send(group, event, skip=outage.should_skip, on_error=outage.failed, on_success=outage.succeeded)


def send_event_on_commit(group: str, event: dict) -> None:
    transaction.on_commit(lambda: send_event(group, event))


def job_state_changed(job) -> None:
    """The job's state (or anything a page shows from the DB) changed: pages re-render it."""
    send_event_on_commit(job_group(job.id), {"type": "job.state", "job_id": str(job.id), "state": job.state})


LIVE_SECONDS = 600  # how long the latest progress of a job is remembered after its last step


def live_keys(job_id) -> tuple[str, str]:
    """The shared cache's keys for a job's latest step and its latest preview (read by the API)."""
    return f"job-live:{job_id}", f"job-preview:{job_id}"


def _remember_progress(job_id, event: dict) -> None:
    """Keep the latest step (and, when it carries one, the latest preview) in the shared cache, so
    an API read of the job costs no database query for its live part. Fail-open like the cache."""
    from django.core.cache import cache

    step_key, preview_key = live_keys(job_id)
    try:
        values = {step_key: {"step": event["step"], "total_steps": event["total_steps"], "elapsed": event["elapsed"]}}
        if event.get("preview"):
            values[preview_key] = event["preview"]
        cache.set_many(values, timeout=LIVE_SECONDS)
    except Exception as error:  # noqa: BLE001 - progress is a nicety; the job goes on
        logger.debug("Latest progress of %s not remembered: %s", job_id, error)


def job_progress(*, job_id, step: int, total_steps: int, elapsed: float, preview: str | None) -> None:
    """A denoising step finished. `preview` is a data: URL of a small frame, or None (throttled)."""
    _remember_progress(job_id, {"step": step, "total_steps": total_steps, "elapsed": round(elapsed, 2),
                                "preview": preview})
    send_event(
        job_group(job_id),
        {
            "type": "job.progress",
            "job_id": str(job_id),
            "step": step,
            "total_steps": total_steps,
            "elapsed": round(elapsed, 2),
            "preview": preview,
        },
    )


def training_progress(*, job_id, step: int, total_steps: int, loss: float | None, elapsed: float,
                      eta: float | None, phase: str = "train") -> None:
    """A training step finished (the worker sends at most a few a second). `phase` is "train", or
    "class_images" while DreamBooth makes its prior images; `eta` is seconds left, or None."""
    send_event(
        job_group(job_id),
        {
            "type": "training.progress",
            "job_id": str(job_id),
            "step": step,
            "total_steps": total_steps,
            "loss": None if loss is None else float(loss),
            "elapsed": round(elapsed, 2),
            "eta": None if eta is None else round(eta, 1),
            "phase": phase,
        },
    )


def training_samples(*, job_id, step: int) -> None:
    """New sample images of a training at `step`, sent once they are recorded (Training.samples)."""
    send_event_on_commit(job_group(job_id), {"type": "training.samples", "job_id": str(job_id), "step": step})


def image_added(*, images) -> None:
    """New images (a finished job's): to their owner's gallery and, for team images, the team's.

    The event carries ids only. Each socket renders the tiles for its own user after asking
    `visible_to`, so a member removed meanwhile gets nothing, and no worker renders a page.
    """
    by_group: dict[str, list[str]] = {}
    for image in images:
        by_group.setdefault(user_gallery_group(image.owner_id), []).append(str(image.pk))
        if image.team_id is not None:
            by_group.setdefault(team_gallery_group(image.team_id), []).append(str(image.pk))
    for group, image_ids in by_group.items():
        send_event_on_commit(group, {"type": "gallery.image_added", "image_ids": image_ids})


def image_moved_to_team(*, image) -> None:
    """An existing image was shared into a team gallery: it joins that gallery live. Its owner's
    own gallery already shows it, so only the team's group hears of it."""
    send_event_on_commit(team_gallery_group(image.team_id),
                         {"type": "gallery.image_added", "image_ids": [str(image.pk)]})


def access_changed(*, user_id) -> None:
    """A user's team role changed or ended (removed, demoted, left, suspended): every open socket
    of theirs re-checks its own permission in the database and closes (4404) if it is gone."""
    send_event_on_commit(user_group(user_id), {"type": "access.changed"})
