"""The GPU worker's loop: claim a job, run the engine (or the trainer), store the results, finish the job.

Runs inside the Celery worker process (one per GPU, --pool=solo), the only process that imports
the engine and therefore torch. The engine is loaded once and kept warm.

Which kinds of job a worker runs follows from the Celery queues it consumes: `gpu` generation,
`training` trainings (docs/deploy.md). A worker that runs both lets waiting generation jobs run
inside a training's pause points, so a long training never holds up someone's picture.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import connection
from PIL import Image as PILImage

from generation import events, selectors, services
from generation.engine.contracts import GeneratedImage, LoraRef
from generation.engine.pool import ModelLoadFailed
from generation.models import Job, JobKind, LoRA, private_model_folder
from generation.selectors import model_path

logger = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 0.5
TRAINING_HEARTBEAT_SECONDS = 2.0  # a training's lease renewal, with the losses since the last one
TRAINING_EVENT_SECONDS = 0.25  # at most 4 progress events a second
# The trainer has stretches with no hook to renew its lease from (loading the model, a very long
# step): a side thread renews it when the trainer's own renewal is this old.
TRAINING_KEEPER_STALE_SECONDS = 10.0
THUMBNAIL_SIZE = 256
QUEUE_KINDS = {"gpu": JobKind.GENERATE, "training": JobKind.TRAIN}  # Celery queue -> the kind it runs
consumed_queues: set[str] = set()  # set by generation.tasks when the Celery worker is ready


def worker_kinds() -> tuple[str, ...]:
    """The job kinds this worker runs: those of the Celery queues it consumes (generation only
    when it is not a Celery worker, as in tests that call process_available_jobs)."""
    queues = consumed_queues or {"gpu"}
    return tuple(kind for queue, kind in QUEUE_KINDS.items() if queue in queues)


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


def worker_models() -> tuple[str, ...]:
    """The models (SDModel names) this worker runs: STUDIO_WORKER_MODELS, or () for every one."""
    return tuple(settings.STUDIO_WORKER_MODELS)


@lru_cache(maxsize=1)
def engine_pool():
    """This worker's warm models (generation.engine.pool): loaded on demand, as many as memory and
    STUDIO_WORKER_MAX_WARM_MODELS allow, least recently used out."""
    from generation.engine.pool import EnginePool  # torch loads with the engine, in the worker only

    return EnginePool(_load_engine, max_warm=settings.STUDIO_WORKER_MAX_WARM_MODELS)


def _load_engine(path: str):
    from generation.engine import Engine
    from generation.engine.speed import SpeedOptions

    started = time.monotonic()
    speed = SpeedOptions(channels_last=settings.STUDIO_CHANNELS_LAST, vae_tiling=settings.STUDIO_VAE_TILING,
                         compile_mode=settings.STUDIO_TORCH_COMPILE)
    loaded = Engine(path, taesd_path=settings.STUDIO_TAESD_PATH or None, threads=settings.STUDIO_TORCH_THREADS,
                    dtype=settings.STUDIO_DTYPE or None, speed=speed)
    logger.info("Loaded model %s (%s) from %s in %.1fs, %d torch thread(s), %s on %s (%s)", loaded.info.name,
                loaded.info.hash, path, time.monotonic() - started, loaded.threads, loaded.dtype, loaded.device,
                ", ".join(loaded.speed_applied) or "no speed options")
    if speed.compile_mode:  # compile now, before a job waits for it (preloading runs before claiming)
        logger.info("Compiled the UNet of %s in a %.1fs warm-up", loaded.info.name, loaded.warm_up())
    return loaded


def engine(path: str | None = None):
    """The warm engine of a model path (the studio's own model without one)."""
    return engine_pool().get(str(path or model_path()))


def model_path_of(job: Job) -> str:
    """Where the job's model is: its registered model's path, or a private model's local copy (the
    studio's own model for jobs from before the registry)."""
    if not job.model_id:
        return str(model_path())
    return model_local_path(job.model) if job.model.storage_folder else job.model.path


def model_local_path(model) -> str:
    """A private model's folder on this machine: the storage's own folder when it is on this disk
    (FileSystemStorage), else a copy in VAR_DIR/cache/models/<id>, made once (a folder renamed into
    place when complete, never half a model)."""
    try:
        return default_storage.path(model.storage_folder)
    except NotImplementedError:  # a remote storage
        pass
    cached = settings.VAR_DIR / "cache" / "models" / str(model.pk)
    if cached.is_dir():
        return str(cached)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=cached.parent, prefix=f".part-{model.pk}-"))
    try:
        for name in _storage_files(model.storage_folder):
            target = partial / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with default_storage.open(f"{model.storage_folder}/{name}", "rb") as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
        os.replace(partial, cached)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return str(cached)


def _storage_files(folder: str, prefix: str = "") -> list[str]:
    """Every file under a storage folder, as paths relative to it."""
    directories, files = default_storage.listdir(f"{folder}/{prefix}".rstrip("/"))
    found = [f"{prefix}{name}" for name in files]
    for directory in directories:
        found += _storage_files(folder, f"{prefix}{directory}/")
    return found


def _succeed_training(job: Job, lease: services.Lease, result) -> None:
    """Record a finished training; a full fine-tune's folder goes into the storage first (and out
    again if the training was taken over meanwhile)."""
    model_folder = store_model_folder(job, result.model_dir) if result.model_dir else ""
    try:
        services.training_succeed(lease=lease, result=result, model_folder=model_folder)
    except services.LeaseLost:
        logger.warning("Training %s was taken over; leaving it to its new attempt", job.pk)
        for name in _storage_files(model_folder) if model_folder else []:
            default_storage.delete(f"{model_folder}/{name}")


def store_model_folder(job: Job, local_dir: str) -> str:
    """Copy a full fine-tune's diffusers folder into the file storage; its storage folder."""
    folder = private_model_folder(job)
    root = Path(local_dir)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                default_storage.save(f"{folder}/{path.relative_to(root).as_posix()}", File(handle))
    return folder


def _preload() -> None:
    """Load the model this worker most likely needs before claiming, so loading it does not eat
    into a job's lease: the default model if it serves it."""
    default = selectors.default_model()
    allowed = worker_models()
    if default is not None and allowed and default.name not in allowed:
        default = selectors.models_served().filter(name__in=allowed).first()
    try:
        engine(default.path if default is not None else None)
    except Exception:  # noqa: BLE001 - a job of that model will fail with the reason and mark it broken
        logger.exception("Could not preload the model %s", default.name if default else model_path())


def process_available_jobs(kinds: tuple[str, ...] | None = None) -> int:
    """Run queued jobs of this worker's kinds until there are none. Safe to call any number of times."""
    kinds = tuple(kinds or worker_kinds())
    if JobKind.GENERATE in kinds and not engine_pool().paths():
        _preload()
    done = 0
    while leases := services.job_claim_batch(worker_id=worker_id(), kinds=kinds, models=worker_models()):
        if len(leases) > 1:
            run_batch(leases)
        elif Job.objects.filter(pk=leases[0].job_id).values_list("kind", flat=True).get() == JobKind.TRAIN:
            run_training(leases[0], run_generation_in_pauses=JobKind.GENERATE in kinds)
        else:
            run_job(leases[0])
        done += len(leases)
    return done


class StepReporter:
    """The engine's on_step/should_cancel hooks: live progress out, heartbeats and cancel in.
    `keep_alive` (a training this job runs inside of) is called at every heartbeat too."""

    def __init__(self, lease: services.Lease, keep_alive=None):
        self.lease = lease
        self.started = time.monotonic()
        self.last_heartbeat = 0.0
        self.cancel = False
        self.lease_lost = False
        self.keep_alive = keep_alive

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
        if self.keep_alive is not None:
            self.keep_alive()
        try:
            self.cancel = services.job_heartbeat(lease=self.lease, progress_step=step) or self.cancel
        except services.LeaseLost:
            logger.warning("Lost the lease on job %s; stopping", self.lease.job_id)
            self.lease_lost = self.cancel = True

    def should_cancel(self) -> bool:
        return self.cancel


def run_job(lease: services.Lease, keep_alive=None) -> None:
    job = Job.objects.select_related("model").get(pk=lease.job_id)
    reporter = StepReporter(lease, keep_alive)
    reporter.heartbeat(0)  # picks up a cancel that arrived between claim and start
    try:
        if reporter.cancel:
            result = None
        else:
            result = _engine_for(job, [reporter]).generate(
                request_for(job), on_step=reporter.on_step, should_cancel=reporter.should_cancel,
                previews=True, preview_interval_s=settings.STUDIO_PREVIEW_INTERVAL_SECONDS,
            )
    except ModelLoadFailed as error:  # fail it and the model's queued jobs; keep serving other models
        reason = _model_broken(job, error)
        _finish_quietly(services.job_fail, lease=lease, reason=reason)
        _mark_broken(job, reason)
        return
    except Exception as error:  # the engine failed on this job: fail it with the reason, keep the worker
        logger.exception("Job %s failed", job.pk)
        _finish_quietly(services.job_fail, lease=lease, reason=f"{type(error).__name__}: {error}"[:1000])
        return
    if reporter.lease_lost:
        return  # the job was swept and belongs to another attempt now
    if result is None or result.interrupted:
        _finish_quietly(services.job_mark_cancelled, lease=lease)
        return
    _store_and_succeed(job, lease, result)


def _engine_for(job: Job, reporters: list[StepReporter]):
    """The warm engine of the job's model; loading one that is not warm renews the jobs' leases
    meanwhile (a load may outlast them). Raises ModelLoadFailed."""
    path = model_path_of(job)
    if engine_pool().is_warm(path):
        return engine(path)
    with ExitStack() as renewing:
        for reporter in reporters:
            renewing.enter_context(_lease_renewed(reporter))
        return engine(path)


def _model_broken(job: Job, error: ModelLoadFailed) -> str:
    """The reason a job (and its model's queued ones) fails when its model does not load."""
    reason = f"The model {job.model_name} could not be loaded: {error}"[:1000]
    logger.error("Job %s: %s", job.pk, reason)
    return reason


def _mark_broken(job: Job, reason: str) -> None:
    if job.model_id:
        services.model_mark_broken(model_id=job.model_id, reason=reason)


def _store_and_succeed(job: Job, lease: services.Lease, result) -> None:
    """Store the images and finish the job; a job taken over meanwhile drops this attempt's files."""
    stored = [store_image(job, index, image) for index, image in enumerate(result.images)]
    try:
        services.job_succeed(lease=lease, images=stored, engine_seconds=result.engine_seconds)
    except services.LeaseLost:
        logger.warning("Job %s was taken over before it finished; discarding this attempt's images", job.pk)
        for image in stored:
            default_storage.delete(image.file_name)
            default_storage.delete(image.thumbnail_name)


def run_batch(leases: list[services.Lease]) -> None:
    """Run compatible generation jobs (services.job_claim_batch) as one batch on the engine
    (Engine.generate_batch). Each job keeps its own lease, heartbeat and progress (a StepReporter
    each), cancel and credits: a job cancelled while the batch runs is finished CANCELLED at once
    (credits released, its events sent) and the others go on; a job whose lease was lost is left to
    its new attempt. A model that fails to load, a LoRA that is gone or an engine failure fails
    every job of the batch with the reason (credits released)."""
    jobs = Job.objects.select_related("model").in_bulk([lease.job_id for lease in leases])
    reporters = [StepReporter(lease) for lease in leases]
    finished: set[int] = set()  # positions already finished here (cancelled), or no longer ours

    def leave(k: int) -> None:
        """Job k leaves the batch: finished CANCELLED now, unless it belongs to another attempt."""
        if k not in finished:
            finished.add(k)
            if not reporters[k].lease_lost:
                _finish_quietly(services.job_mark_cancelled, lease=leases[k])

    def cancel_hook(k: int):
        def should_cancel() -> bool:
            if reporters[k].cancel:
                leave(k)
                return True
            return False
        return should_cancel

    for k, reporter in enumerate(reporters):
        reporter.heartbeat(0)  # picks up a cancel that arrived between claim and start
        if reporter.cancel:
            leave(k)
    running = [k for k in range(len(leases)) if k not in finished]
    if not running:
        return
    lead = jobs[leases[running[0]].job_id]

    def fail_all(reason: str) -> None:
        for k in running:
            if k not in finished and not reporters[k].lease_lost:
                finished.add(k)
                _finish_quietly(services.job_fail, lease=leases[k], reason=reason)

    try:
        results = _engine_for(lead, [reporters[k] for k in running]).generate_batch(
            [request_for(jobs[leases[k].job_id]) for k in running],
            on_step=[reporters[k].on_step for k in running], should_cancel=[cancel_hook(k) for k in running],
            previews=True, preview_interval_s=settings.STUDIO_PREVIEW_INTERVAL_SECONDS,
        )
    except ModelLoadFailed as error:  # fail its jobs and the model's queued ones; keep serving other models
        reason = _model_broken(lead, error)
        fail_all(reason)
        _mark_broken(lead, reason)
        return
    except Exception as error:  # the engine failed on the batch: fail its jobs with the reason, keep the worker
        logger.exception("Batch of jobs %s failed", ", ".join(str(leases[k].job_id) for k in running))
        fail_all(f"{type(error).__name__}: {error}"[:1000])
        return
    for k, result in zip(running, results, strict=True):
        if k in finished or reporters[k].lease_lost:
            continue
        if result.interrupted:
            leave(k)
            continue
        _store_and_succeed(jobs[leases[k].job_id], leases[k], result)


@contextmanager
def renewing_in_background(renew, *, every: float, what: str):
    """While the block runs (a model loading, a long step), a side thread calls `renew()` every
    `every` seconds: a lease must not expire because the main thread has no hook to renew it from."""
    stop = threading.Event()

    def keep():
        try:
            while not stop.wait(every):
                renew()
        except Exception:  # noqa: BLE001 - a failed renewal is the sweeper's to notice, not a crash
            logger.exception("The lease keeper of %s stopped", what)
        finally:
            connection.close()  # this thread's own connection

    keeper = threading.Thread(target=keep, name=f"lease-keeper-{what}", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()


def _lease_renewed(reporter: StepReporter):
    """While the block runs (loading a model), the job's lease is renewed every few heartbeats."""
    return renewing_in_background(lambda: reporter.heartbeat(0), every=HEARTBEAT_SECONDS * 4,
                                  what=f"job {reporter.lease.job_id}")


def request_for(job: Job):
    """The engine request of a job; a canvas job's source and mask are read from storage here,
    and its LoRAs (Job.loras) become LoraRefs with a local file path (lora_refs_for)."""
    loras = lora_refs_for(job)
    if not job.uses_canvas:
        return dataclasses.replace(job.generation_request(), loras=loras)
    with default_storage.open(job.source_file.name, "rb") as source:
        init_image = source.read()
    mask = None
    if job.mask_file:
        with default_storage.open(job.mask_file.name, "rb") as mask_file:
            mask = mask_file.read()
    return dataclasses.replace(job.generation_request(init_image=init_image, mask=mask), loras=loras)


class LoraUnavailable(Exception):
    """A LoRA of the job was deleted, changed or lost its file after the job was submitted: the
    job fails with this message (run_job's fail path releases its credits)."""


def lora_refs_for(job: Job) -> tuple[LoraRef, ...]:
    """Job.loras's snapshot as the engine's LoraRefs, each with a local `.safetensors` path."""
    refs = []
    for entry in job.loras or []:
        name, sha256 = entry.get("name", "?"), entry.get("sha256", "")
        lora = LoRA.objects.filter(pk=entry.get("id")).first()
        if lora is None:
            raise LoraUnavailable(f"The LoRA {name} was deleted after this job was submitted.")
        if lora.sha256 != sha256:
            raise LoraUnavailable(f"The LoRA {name}'s file changed after this job was submitted.")
        refs.append(LoraRef(name=name, sha256=sha256, path=lora_local_path(lora), weight=float(entry["weight"])))
    return tuple(refs)


def lora_local_path(lora: LoRA) -> str:
    """A local path of the LoRA's file: the storage's own path when it is on this machine's disk
    (FileSystemStorage), else a copy in VAR_DIR/cache/loras/<sha256>.safetensors, written to a
    temporary file, checked against the sha256 and renamed into place (never half a file)."""
    try:
        path = default_storage.path(lora.file.name)
    except NotImplementedError:  # a remote storage
        path = None
    if path is not None:
        if not os.path.exists(path):
            raise LoraUnavailable(f"The LoRA {lora.name}'s file is missing from the storage.")
        return path
    folder = settings.VAR_DIR / "cache" / "loras"
    cached = folder / f"{lora.sha256}.safetensors"
    if cached.exists():
        return str(cached)
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".part-", suffix=".safetensors")
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                source = default_storage.open(lora.file.name, "rb")
            except FileNotFoundError:
                raise LoraUnavailable(f"The LoRA {lora.name}'s file is missing from the storage.") from None
            with source:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != lora.sha256:
            raise LoraUnavailable(f"The LoRA {lora.name}'s file in the storage does not match its sha256.")
        os.replace(temporary, cached)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return str(cached)


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


# --- Trainings ----------------------------------------------------------------------------------

class TrainingReporter:
    """The trainer's hooks for one attempt: progress events (at most 4 a second), the lease renewed
    with the losses since the last renewal (TRAINING_HEARTBEAT_SECONDS), checkpoints and samples
    stored through the lease-fenced services, cancel in, and waiting generation jobs run in its
    pause points (while this training's lease is kept alive)."""

    def __init__(self, lease: services.Lease, *, total_steps: int, resumed_at: int, run_generation: bool):
        self.lease = lease
        self.total_steps = total_steps
        self.resumed_at = resumed_at
        self.run_generation = run_generation
        self.started = time.monotonic()
        self.last_heartbeat = 0.0
        self.last_event = 0.0
        self.step = resumed_at
        self.pending: list[tuple[int, float]] = []
        self.cancel = False
        self.lease_lost = False
        self.generation_jobs_run = 0

    def _fenced(self, service, **kwargs):
        if self.lease_lost:
            return None
        try:
            return service(lease=self.lease, **kwargs)
        except services.LeaseLost:
            logger.warning("Lost the lease on training %s; stopping", self.lease.job_id)
            self.lease_lost = self.cancel = True
            return None

    def heartbeat(self) -> None:
        """Renew the lease (progress, cancel) and record the losses since the last renewal."""
        self.last_heartbeat = time.monotonic()
        cancel = self._fenced(services.job_heartbeat, progress_step=self.step)
        self.cancel = bool(cancel) or self.cancel
        pending, self.pending = self.pending, []
        if pending:
            self._fenced(services.training_record_losses, losses=pending)

    def keep_alive(self) -> None:
        if time.monotonic() - self.last_heartbeat >= TRAINING_HEARTBEAT_SECONDS:
            self.heartbeat()

    @contextmanager
    def lease_kept(self, *, stale_after: float = TRAINING_KEEPER_STALE_SECONDS):
        """While the block runs, a side thread renews the lease (and picks up a cancel) whenever
        the trainer's own renewal is older than `stale_after`, so a model load longer than the
        lease does not lose the training to the sweeper. It only renews: the losses stay the
        main thread's to record."""
        def renew_when_stale():
            if time.monotonic() - self.last_heartbeat >= stale_after and not self.lease_lost:
                self.last_heartbeat = time.monotonic()
                self.cancel = bool(self._fenced(services.job_heartbeat, progress_step=self.step)) or self.cancel

        with renewing_in_background(renew_when_stale, every=min(stale_after, TRAINING_HEARTBEAT_SECONDS),
                                    what=f"training {self.lease.job_id}"):
            yield

    def eta(self) -> float | None:
        done = self.step - self.resumed_at
        if done <= 0:
            return None
        return (time.monotonic() - self.started) / done * (self.total_steps - self.step)

    def on_step(self, update) -> None:
        now = time.monotonic()
        if update.phase == "train":
            self.step = update.step
            self.pending.append((update.step, update.loss))
        if update.samples:
            if self._fenced(services.training_samples_saved, step=update.step, pngs=list(update.samples)) is None:
                logger.warning("Samples of training %s at step %s were not kept", self.lease.job_id, update.step)
        if now - self.last_event >= TRAINING_EVENT_SECONDS or update.step == update.total_steps:
            self.last_event = now
            train = update.phase == "train"
            events.training_progress(
                job_id=self.lease.job_id, step=update.step, total_steps=update.total_steps,
                loss=update.loss if train else None, elapsed=now - self.started,
                eta=self.eta() if train else None, phase=update.phase,
            )
        self.keep_alive()

    def on_checkpoint(self, checkpoint) -> None:
        self.heartbeat()  # the losses up to the checkpoint first
        self._fenced(services.training_checkpoint_saved, checkpoint=checkpoint)

    def should_cancel(self) -> bool:
        return self.cancel

    def pause_point(self) -> None:
        """Run the generation jobs that wait now (one user's training never holds up anyone's
        pictures), renewing this training's lease between and during them."""
        self.keep_alive()
        if not self.run_generation or self.cancel:
            return
        while lease := services.job_claim_next(worker_id=worker_id(), kinds=(JobKind.GENERATE,),
                                               models=worker_models()):
            run_job(lease, keep_alive=self.keep_alive)
            self.generation_jobs_run += 1
            self.keep_alive()


def _pin_torch_threads() -> None:
    """A training-only worker never loads the Engine, which sizes torch's threads otherwise."""
    from generation.engine.engine import set_torch_threads

    set_torch_threads(settings.STUDIO_TORCH_THREADS)


def run_training(lease: services.Lease, *, run_generation_in_pauses: bool = False) -> None:
    """One attempt at a training: resume from its last checkpoint if it has one, train, and finish
    it through the lease-fenced services (a swept attempt's results are dropped)."""
    from generation.engine.training.finetune import Trainer  # torch, worker only

    job = Job.objects.select_related("training").get(pk=lease.job_id)
    try:
        spec = services.training_spec(job)
        resume = services.training_resume_point(job)
    except Exception as error:
        logger.exception("Training %s could not start", job.pk)
        _finish_quietly(services.training_fail, lease=lease, reason=f"{type(error).__name__}: {error}"[:1000])
        return
    resumed_at = resume.step if resume is not None else 0
    if resume is not None:
        logger.info("Training %s resumes from its checkpoint at step %d (attempt %d)", job.pk, resumed_at,
                    lease.attempt)
    else:
        logger.info("Training %s starts (attempt %d)", job.pk, lease.attempt)
    reporter = TrainingReporter(lease, total_steps=job.steps, resumed_at=resumed_at,
                                run_generation=run_generation_in_pauses)
    reporter.heartbeat()  # picks up a cancel that arrived between claim and start
    try:
        if reporter.cancel:
            result = None
        else:
            _pin_torch_threads()
            with reporter.lease_kept():
                result = Trainer(device=settings.STUDIO_TRAINING_DEVICE or None).run(
                    spec, resume=resume, on_step=reporter.on_step, on_checkpoint=reporter.on_checkpoint,
                    should_cancel=reporter.should_cancel, pause_point=reporter.pause_point,
                    pause_every_s=settings.STUDIO_TRAINING_PAUSE_SECONDS,
                )
    except Exception as error:  # the trainer failed on this job: fail it with the reason, keep the worker
        logger.exception("Training %s failed", job.pk)
        if not reporter.lease_lost:
            _finish_quietly(services.training_fail, lease=lease, reason=f"{type(error).__name__}: {error}"[:1000])
        return
    if reporter.lease_lost:
        logger.warning("Training %s was taken over; this attempt's result is dropped", job.pk)
        return
    try:
        if result is None or result.interrupted:
            _finish_quietly(services.training_mark_cancelled, lease=lease)
            return
        reporter.heartbeat()  # the last losses
        _succeed_training(job, lease, result)
    finally:
        if result is not None and result.model_dir:  # the trainer's copy; the storage keeps its own
            shutil.rmtree(result.model_dir, ignore_errors=True)
    logger.info("Training %s finished: %d steps in %.1fs (%d generation jobs ran in its pauses)", job.pk,
                result.steps_done, result.seconds, reporter.generation_jobs_run)
