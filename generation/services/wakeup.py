"""Waking a worker: a message that only says "there is work". The job is already safe in the database.

Sent by task name, so services never import generation.tasks (which imports the worker, which
imports services): no import circle, and the web process never loads the worker's code.
"""

from __future__ import annotations

import logging

from celery import current_app

logger = logging.getLogger(__name__)

PROCESS_QUEUE_TASK = "generation.tasks.process_queue"  # routed to the `gpu` queue by CELERY_TASK_ROUTES


def wake_workers() -> None:
    try:
        current_app.send_task(PROCESS_QUEUE_TASK)
    except Exception:  # broker down: the worker drains the queue when it (re)starts, beat's sweep wakes it
        logger.exception("Could not wake a worker")
