"""Waking a worker: a message that only says "there is work". The job is already safe in the database.

Sent by task name, so services never import generation.tasks (which imports the worker, which
imports services): no import circle, and the web process never loads the worker's code.
"""

from __future__ import annotations

import logging
import threading

from celery import current_app

logger = logging.getLogger(__name__)

PROCESS_QUEUE_TASK = "generation.tasks.process_queue"  # routed to the `gpu` queue by CELERY_TASK_ROUTES
PROCESS_TRAINING_QUEUE_TASK = "generation.tasks.process_training_queue"  # routed to the `training` queue
TASK_OF_KIND = {"generate": PROCESS_QUEUE_TASK, "train": PROCESS_TRAINING_QUEUE_TASK}


def wake_workers(*, kinds=("generate",)) -> None:
    """Tell the workers of these job kinds (generation: the `gpu` queue; training: `training`)."""
    for kind in kinds:
        try:
            current_app.send_task(TASK_OF_KIND[kind])
        except Exception as error:  # broker down: a worker drains the queue when it (re)starts; beat wakes it
            logger.warning("Could not wake a worker (%s: %s); the job waits in the database",
                           type(error).__name__, error)


def wake_workers_in_background() -> None:
    """For requests: publish from a thread, so a broker that hangs (up to its socket timeouts)
    never holds the response. A lost wake-up costs at most a sweep interval, never the job."""
    threading.Thread(target=wake_workers, name="wake-workers", daemon=True).start()


def wake_training_workers_in_background() -> None:
    threading.Thread(target=wake_workers, kwargs={"kinds": ("train",)}, name="wake-training-workers",
                     daemon=True).start()
