"""Real-time events for jobs, sent over the channel layer (Zulip's send_event_on_commit pattern).

Every state change in `generation.services` calls one of these functions, which send only after
the transaction commits: a browser never hears of a state the database does not hold. The
database stays the source of truth; a lost event costs a moment of staleness, never data, so a
broken channel layer is logged, not raised.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)
_capture = threading.local()


def job_group(job_id) -> str:
    return f"job-{job_id}"


@contextmanager
def capture_events() -> Iterator[list[tuple[str, dict]]]:
    """Tests: collect (group, event) pairs in this thread instead of sending them."""
    _capture.events = []
    try:
        yield _capture.events
    finally:
        del _capture.events


def send_event(group: str, event: dict) -> None:
    captured = getattr(_capture, "events", None)
    if captured is not None:
        captured.append((group, event))
        return
    try:
        async_to_sync(get_channel_layer().group_send)(group, event)
    except Exception:  # the DB is the source of truth; pages fall back to polling
        logger.exception("Could not send %s to %s", event.get("type"), group)


def send_event_on_commit(group: str, event: dict) -> None:
    transaction.on_commit(lambda: send_event(group, event))


def job_state_changed(job) -> None:
    """The job's state (or anything a page shows from the DB) changed: pages re-render it."""
    send_event_on_commit(job_group(job.id), {"type": "job.state", "job_id": str(job.id), "state": job.state})


def job_progress(*, job_id, step: int, total_steps: int, elapsed: float, preview: str | None) -> None:
    """A denoising step finished. `preview` is a data: URL of a small frame, or None (throttled)."""
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
