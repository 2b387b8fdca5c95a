"""Celery tasks: thin and idempotent. A message only says "there is work"; the database says what."""

import logging

from celery import shared_task
from celery.signals import worker_ready
from celery.worker.control import control_command

from generation import services

logger = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def process_queue(self) -> int:
    from generation.worker import process_available_jobs

    ask_for_missing_model_queues(self.request.hostname)
    return process_available_jobs()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def process_training_queue() -> int:
    """The `training` queue's wake-up. A worker runs the kinds of the queues it consumes, so on a
    worker of both queues either task drains both."""
    from generation.worker import process_available_jobs

    return process_available_jobs()


@shared_task(ignore_result=True)
def sweep_expired_jobs() -> dict:
    counts = services.jobs_sweep_expired()
    services.jobs_wake_if_stranded()
    return counts


@shared_task(ignore_result=True)
def sweep_training_drafts() -> int:
    return services.training_drafts_sweep_abandoned()


@worker_ready.connect
def drain_queue_on_start(sender=None, **kwargs) -> None:
    """Jobs queued while no worker was up (or whose wake-up message was lost) start now, and so do
    jobs whose worker died on this host (a crash the supervisor restarted us after)."""
    queues = {queue.name for queue in sender.app.amqp.queues.consume_from.values()} if sender else set()
    if queues & {"gpu", "training"}:
        from generation import worker

        worker.consumed_queues = queues  # the job kinds it runs follow from these
        if "gpu" in queues:
            consume_model_queues(sender)
        worker.recover_jobs_of_dead_workers()
        (process_queue if "gpu" in queues else process_training_queue).delay()


def served_model_queues() -> list[str]:
    """The queues of the models this worker serves: every registered one, or STUDIO_WORKER_MODELS'."""
    from generation import selectors, worker

    models = selectors.models_served()
    if worker.worker_models():
        models = models.filter(name__in=worker.worker_models())
    return [model.queue for model in models]


def consume_model_queues(consumer) -> list[str]:
    """A generation worker also consumes the queue of each model it serves (SDModel.queue). A job's
    wake-up goes to its model's queue, so only a worker that can run it wakes (docs/models.md,
    "Which worker runs a job")."""
    added = [queue for queue in served_model_queues() if not consumer.task_consumer.consuming_from(queue)]
    for queue in added:
        consumer.add_task_queue(queue)
        model_queues_asked.add(queue)
    if added:
        logger.info("Now consuming the model queues %s", ", ".join(added))
    return added


model_queues_asked: set[str] = set()  # this worker's model queues, consumed or asked for


def ask_for_missing_model_queues(hostname: str | None) -> list[str]:
    """A model registered where the broadcast could not reach this worker (e.g. `manage.py
    register_model` run against another broker) is caught up at its next task: the worker asks its
    own consumer, by a control message to itself, to consume that model's queue too."""
    from celery import current_app

    if not hostname:  # not a worker's task: asking every worker would make limited ones take others' queues
        return []
    missing = [queue for queue in served_model_queues() if queue not in model_queues_asked]
    for queue in missing:
        current_app.control.add_consumer(queue, destination=[hostname])
        model_queues_asked.add(queue)
    if missing:
        logger.info("Asked to consume the model queues %s", ", ".join(missing))
    return missing


@control_command()
def studio_models_changed(state) -> dict:
    """Broadcast when staff register or change a model (services.wakeup.tell_workers_models_changed):
    a generation worker starts consuming the queues of the models it now serves."""
    from generation import worker

    if "gpu" not in worker.consumed_queues:
        return {"ok": "not a generation worker"}
    state.consumer.call_soon(consume_model_queues, state.consumer)
    return {"ok": "checking the model queues"}
