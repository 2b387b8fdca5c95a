"""Celery tasks: thin and idempotent. A message only says "there is work"; the database says what."""

from celery import shared_task
from celery.signals import worker_ready

from generation import services


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def process_queue() -> int:
    from generation.worker import process_available_jobs

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
        worker.recover_jobs_of_dead_workers()
        (process_queue if "gpu" in queues else process_training_queue).delay()
