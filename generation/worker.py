"""The GPU worker's loop: claim a job, run the engine, store the images, finish the job.

Runs inside the Celery worker process (one per GPU, --pool=solo), the only process that imports
the engine and therefore torch. The engine is loaded once and kept warm.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import socket
import time
import uuid
from functools import lru_cache

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from generation import events, selectors, services
from generation.engine.contracts import GeneratedImage
from generation.models import Job
from generation.selectors import model_path

logger = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 0.5
THUMBNAIL_SIZE = 256


@lru_cache(maxsize=1)
def worker_id() -> str:
    """host:pid:nonce. The pid lets a worker restarted on the same host tell its dead predecessors."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def dead_workers_on_this_host() -> list[str]:
    """Lease owners of this host whose process is gone (or is this very process under an older id,
    as after a restart in a container where the worker is always pid 1)."""
    me = worker_id()
    dead = []
    for owner in selectors.lease_owners_running(prefix=f"{socket.gethostname()}:"):
        try:
            pid = int(owner.split(":")[1])
        except (IndexError, ValueError):
            continue  # not an id this code wrote; its lease will expire
        if owner != me and (pid == os.getpid() or not _process_exists(pid)):
            dead.append(owner)
    return dead


def recover_jobs_of_dead_workers() -> dict[str, int]:
    """At start-up: jobs whose worker died on this host run again now, not after their lease."""
    dead = dead_workers_on_this_host()
    if dead:
        logger.warning("Workers %s on this host are gone; taking back their jobs", ", ".join(dead))
    return services.jobs_release_leases_of(owners=dead)


@lru_cache(maxsize=1)
def engine():
    from generation.engine import Engine  # torch loads here, in the worker process only

    started = time.monotonic()
    loaded = Engine(model_path(), taesd_path=settings.STUDIO_TAESD_PATH or None,
                    threads=settings.STUDIO_TORCH_THREADS)
    logger.info("Loaded model %s (%s) in %.1fs, %d torch thread(s)", loaded.info.name, loaded.info.hash,
                time.monotonic() - started, loaded.threads)
    return loaded


def process_available_jobs() -> int:
    """Run queued jobs until the queue is empty. Safe to call any number of times."""
    engine()  # load before claiming, so model loading never eats into a job's lease
    done = 0
    while lease := services.job_claim_next(worker_id=worker_id()):
        run_job(lease)
        done += 1
    return done


class StepReporter:
    """The engine's on_step/should_cancel hooks: live progress out, heartbeats and cancel in."""

    def __init__(self, lease: services.Lease):
        self.lease = lease
        self.started = time.monotonic()
        self.last_heartbeat = 0.0
        self.cancel = False
        self.lease_lost = False

    def on_step(self, update) -> None:
        preview = None
        if update.preview_png:
            encoded = base64.b64encode(update.preview_png).decode("ascii")
            preview = f"data:{update.preview_mime};base64,{encoded}"
        events.job_progress(
            job_id=self.lease.job_id, step=update.step, total_steps=update.total_steps,
            elapsed=time.monotonic() - self.started, preview=preview,
        )
        if time.monotonic() - self.last_heartbeat >= HEARTBEAT_SECONDS or update.step == update.total_steps:
            self.heartbeat(update.step)

    def heartbeat(self, step: int) -> None:
        self.last_heartbeat = time.monotonic()
        try:
            self.cancel = services.job_heartbeat(lease=self.lease, progress_step=step) or self.cancel
        except services.LeaseLost:
            logger.warning("Lost the lease on job %s; stopping", self.lease.job_id)
            self.lease_lost = self.cancel = True

    def should_cancel(self) -> bool:
        return self.cancel


def run_job(lease: services.Lease) -> None:
    job = Job.objects.get(pk=lease.job_id)
    reporter = StepReporter(lease)
    reporter.heartbeat(0)  # picks up a cancel that arrived between claim and start
    try:
        if reporter.cancel:
            result = None
        else:
            result = engine().generate(
                request_for(job), on_step=reporter.on_step, should_cancel=reporter.should_cancel,
                previews=True, preview_interval_s=settings.STUDIO_PREVIEW_INTERVAL_SECONDS,
            )
    except Exception as error:  # the engine failed on this job: fail it with the reason, keep the worker
        logger.exception("Job %s failed", job.pk)
        _finish_quietly(services.job_fail, lease=lease, reason=f"{type(error).__name__}: {error}"[:1000])
        return
    if reporter.lease_lost:
        return  # the job was swept and belongs to another attempt now
    if result is None or result.interrupted:
        _finish_quietly(services.job_mark_cancelled, lease=lease)
        return
    stored = [store_image(job, index, image) for index, image in enumerate(result.images)]
    try:
        services.job_succeed(lease=lease, images=stored, engine_seconds=result.engine_seconds)
    except services.LeaseLost:
        logger.warning("Job %s was taken over before it finished; discarding this attempt's images", job.pk)
        for image in stored:
            default_storage.delete(image.file_name)
            default_storage.delete(image.thumbnail_name)


def request_for(job: Job):
    """The engine request of a job; a canvas job's source and mask are read from storage here."""
    if not job.uses_canvas:
        return job.generation_request()
    with default_storage.open(job.source_file.name, "rb") as source:
        init_image = source.read()
    mask = None
    if job.mask_file:
        with default_storage.open(job.mask_file.name, "rb") as mask_file:
            mask = mask_file.read()
    return job.generation_request(init_image=init_image, mask=mask)


def _finish_quietly(service, **kwargs) -> None:
    try:
        service(**kwargs)
    except services.LeaseLost:
        logger.warning("Job %s was taken over; leaving it to its new attempt", kwargs["lease"].job_id)


def store_image(job: Job, index: int, image: GeneratedImage) -> services.StoredImage:
    """Write the PNG (parameters chunk intact) and a small WebP thumbnail through the storage API."""
    folder = f"images/{job.user_id}/{job.pk}"
    file_name = default_storage.save(f"{folder}/{index}-{image.seed}.png", ContentFile(image.png))
    with PILImage.open(io.BytesIO(image.png)) as picture:
        picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        buffer = io.BytesIO()
        picture.convert("RGB").save(buffer, format="WEBP", quality=85)
    thumbnail_name = default_storage.save(f"{folder}/{index}-{image.seed}-thumb.webp", ContentFile(buffer.getvalue()))
    return services.StoredImage(
        index=index, seed=image.seed, width=image.width, height=image.height, file_name=file_name,
        thumbnail_name=thumbnail_name, infotext=image.infotext,
    )
