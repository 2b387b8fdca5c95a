"""A job's progress as Server-Sent Events: what GET /generations/{id}/events streams.

One async generator per client, on daphne: it holds no thread while it waits. It joins the job's
channel-layer group (generation.events.job_group) before it reads the job, so nothing said in
between is missed; sends that snapshot as a `state` event; then forwards what the worker and the
services say: `progress` (step, total, elapsed, ETA, the preview frame as a data: URL) and `state`
(re-read from the database, the source of truth: it carries the images once the job is done). The
stream ends after a final state. Every KEEPALIVE_SECONDS without news it sends a comment line (so
proxies keep the connection) and re-reads the job, in case an event was lost.

Each event has an `id` (`<job state>-<step>`); a client that reconnects simply gets the snapshot
again, which is all it needs: the events carry state, not increments.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection

from generation import events
from generation.models import JobState

log = logging.getLogger(__name__)
KEEPALIVE_SECONDS = 15.0
FINAL_STATES = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


def released(function: Callable) -> Callable:
    """`function`, closing this thread's database connection after it. Under ASGI every request has
    its own thread for sync code, so a stream that waits for minutes would otherwise hold a
    database connection all along (100 followers: 100 connections, PostgreSQL's default maximum)."""
    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            if not connection.in_atomic_block:
                connection.close()
    return call


def sse(event: str, data: dict, *, event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'), default=str)}")
    return "\n".join(lines) + "\n\n"


def _progress(message: dict) -> dict:
    step, total = message["step"], message["total_steps"]
    elapsed = float(message.get("elapsed") or 0)
    eta = round(elapsed / step * max(total - step, 0), 1) if step else None
    return {"step": step, "total_steps": total, "elapsed": elapsed, "eta_seconds": eta,
            "preview": message.get("preview")}


async def job_events(job_id, snapshot: Callable[[], dict], *, keepalive: float = KEEPALIVE_SECONDS
                     ) -> AsyncIterator[str]:
    """SSE lines for one job until it is final. `snapshot()` (sync, run in a thread) returns the
    job as the API describes it (a dict with at least `state`)."""
    layer = get_channel_layer()
    read = sync_to_async(released(snapshot))
    channel = await layer.new_channel()
    group = events.job_group(job_id)
    await layer.group_add(group, channel)
    try:
        state = await read()
        yield sse("state", state, event_id=f"{state['state']}-0")
        while state["state"] not in FINAL_STATES:
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout=keepalive)
            except TimeoutError:
                yield ": keep-alive\n\n"
                fresh = await read()
                if fresh["state"] != state["state"]:
                    state = fresh
                    yield sse("state", state, event_id=f"{state['state']}-0")
                continue
            kind = message.get("type")
            if kind in ("job.progress", "training.progress"):
                progress = _progress(message)
                yield sse("progress", progress, event_id=f"running-{progress['step']}")
            elif kind == "job.state":
                state = await read()
                yield sse("state", state, event_id=f"{state['state']}-0")
    finally:
        await layer.group_discard(group, channel)
