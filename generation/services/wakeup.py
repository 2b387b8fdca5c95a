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


MODELS_CHANGED_COMMAND = "studio_models_changed"  # a Celery control command (generation.tasks)


def wake_workers(*, kinds=("generate",), queue: str | None = None) -> None:
    """Tell the workers of these job kinds (generation: the `gpu` queue, or the queue of the
    job's model, SDModel.queue, which only the workers that serve it consume; training: `training`)."""
    for kind in kinds:
        try:
            current_app.send_task(TASK_OF_KIND[kind], **({"queue": queue} if queue and kind == "generate" else {}))
        except Exception as error:  # broker down: a worker drains the queue when it (re)starts; beat wakes it
            logger.warning("Could not wake a worker (%s: %s); the job waits in the database",
                           type(error).__name__, error)


def wake_workers_in_background(queue: str | None = None) -> None:
    """For requests: publish from a thread, so a broker that hangs (up to its socket timeouts)
    never holds the response. A lost wake-up costs at most a sweep interval, never the job."""
    threading.Thread(target=wake_workers, kwargs={"queue": queue}, name="wake-workers", daemon=True).start()


def tell_workers_models_changed() -> None:
    """A model was registered or changed: running workers start consuming the queues of the models
    they serve (a broadcast; a worker that misses it catches up when it next starts or drains)."""
    try:
        current_app.control.broadcast(MODELS_CHANGED_COMMAND)
    except Exception as error:
        logger.warning("Could not tell the workers about a model change (%s: %s)", type(error).__name__, error)


def wake_training_workers_in_background() -> None:
    threading.Thread(target=wake_workers, kwargs={"kinds": ("train",)}, name="wake-training-workers",
                     daemon=True).start()
