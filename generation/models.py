"""Jobs and the images they produce. The Job table is the queue of record.

State changes happen only in `generation.services`; these classes hold data and queries.
"""

from __future__ import annotations

import dataclasses
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from accounts.selectors import team_ids_of
from generation.engine.contracts import MASKED_CONTENT, SAMPLERS, GenerationRequest, ModelInfo


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class JobKind(models.TextChoices):
    """What a job does. Both kinds share the queue, the lease and the credit rules."""

    GENERATE = "generate", "Generate"
    TRAIN = "train", "Fine-tune"


class JobMode(models.TextChoices):
    """What the canvas asked for. Outpainting runs as inpainting on the padded canvas it stored."""

    TXT2IMG = "txt2img", "Text to image"
    IMG2IMG = "img2img", "Image to image"
    INPAINT = "inpaint", "Inpaint"
    OUTPAINT = "outpaint", "Outpaint"


FINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
# The Job fields that say what to make: exactly the engine's GenerationRequest, by name (the
# canvas's source and mask travel as files; the worker reads them).
REQUEST_FIELDS = (
    "prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "sampler", "seed", "num_images",
)
CANVAS_FIELDS = ("strength", "mask_blur", "masked_content", "only_masked", "only_masked_padding")


def private_model_folder(job) -> str:
    """Where a full fine-tune's model (SDModel.storage_folder) is kept in the file storage."""
    return f"models/{job.user_id}/{job.pk}"


def model_queue(name: str) -> str:
    """The Celery queue whose messages wake the workers that serve the model of that name."""
    return f"gpu.{name}"


class SDModel(models.Model):
    """A model the studio serves (docs/models.md, "Several models"): staff register a checkpoint by
    its path on the worker hosts; users pick one on Create. What the engine reads from the file
    (family, native size, limits, hash) is kept in `info` when it is registered, so the web never
    needs the file again (and never imports torch)."""

    name = models.SlugField(max_length=100, unique=True, help_text="Its API name, and the PNG's \"Model\".")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=2000)
    path = models.CharField(max_length=1000, blank=True,
                            help_text="A diffusers folder or a .safetensors file on the worker hosts.")
    # A private model variant (a full fine-tune): only its owner sees and uses it, and its diffusers
    # folder is in the file storage under `storage_folder` (workers copy it to their disk when it
    # is not a local one), not at a path of the worker hosts.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="private_models")
    storage_folder = models.CharField(max_length=300, blank=True)
    # generation.engine.contracts.ModelInfo as read at registration (dataclasses.asdict).
    info = models.JSONField(default=dict)
    default_steps = models.PositiveSmallIntegerField(null=True, blank=True)
    default_guidance_scale = models.FloatField(null=True, blank=True)
    default_sampler = models.CharField(max_length=32, blank=True, choices=list(SAMPLERS.items()))
    default_width = models.PositiveIntegerField(null=True, blank=True)
    default_height = models.PositiveIntegerField(null=True, blank=True)
    enabled = models.BooleanField(default=True, help_text="Offered on Create and the API.")
    is_default = models.BooleanField(default=False, help_text="What Create starts with.")
    # Set by a worker that failed to load it (its jobs fail with this reason); staff clear it.
    broken_reason = models.TextField(blank=True)
    broken_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-is_default", "title"]
        verbose_name = "model"
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_model"),
        ]

    def __str__(self) -> str:
        return self.title or self.name

    @property
    def is_broken(self) -> bool:
        return bool(self.broken_reason)

    @property
    def family(self) -> str:
        return self.info.get("family", "")

    @property
    def hash(self) -> str:
        return self.info.get("hash", "")

    @property
    def queue(self) -> str:
        return model_queue(self.name)

    def model_info(self) -> ModelInfo:
        """What the engine read at registration, with staff's defaults over the model's own."""
        known = {field.name for field in dataclasses.fields(ModelInfo)}
        info = {key: value for key, value in self.info.items() if key in known}
        if info.get("latent_rgb_factors") is not None:
            info["latent_rgb_factors"] = tuple(tuple(row) for row in info["latent_rgb_factors"])
        if info.get("latent_rgb_bias") is not None:
            info["latent_rgb_bias"] = tuple(info["latent_rgb_bias"])
        overrides = {"default_steps": self.default_steps, "default_guidance_scale": self.default_guidance_scale,
                     "default_sampler": self.default_sampler}
        return dataclasses.replace(ModelInfo(**info), **{key: value for key, value in overrides.items() if value})


class JobNotDeletable(Exception):
    """A job that still holds credits (queued, running, or an unsettled hold) is not deleted."""


class JobQuerySet(models.QuerySet):
    def visible_to(self, user) -> JobQuerySet:
        """Jobs a user may see: their own, and those made into a team gallery of theirs (any role).
        Everyone else gets a 404."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(Q(user=user) | Q(team_id__in=team_ids_of(user)))

    def active(self) -> JobQuerySet:
        return self.filter(state__in=[JobState.QUEUED, JobState.RUNNING])

    def delete(self):
        """Queued and running jobs hold credits: they are never deleted behind the services' back."""
        if self.active().exists():
            raise JobNotDeletable("Queued or running jobs cannot be deleted: cancel them first.")
        return super().delete()


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED, db_index=True)
    # A training job keeps its settings in its Training row; `steps` is then its optimisation steps,
    # `prompt` its instance prompt and `width`/`height` its resolution (what the price reads).
    kind = models.CharField(max_length=16, choices=JobKind.choices, default=JobKind.GENERATE)

    # What to make (plain data, handed to the engine as a GenerationRequest).
    prompt = models.TextField(max_length=1000)
    negative_prompt = models.TextField(max_length=1000, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    steps = models.PositiveIntegerField()
    guidance_scale = models.FloatField()
    sampler = models.CharField(max_length=32, choices=list(SAMPLERS.items()))
    seed = models.BigIntegerField()
    num_images = models.PositiveSmallIntegerField()
    model_name = models.CharField(max_length=200)
    model_hash = models.CharField(max_length=64, blank=True)
    # The registered model it runs on (model_name/model_hash are what it was when submitted). Null
    # only for jobs made before the registry: they run on the studio's own model (STUDIO_MODEL_PATH).
    # RESTRICT: a model with jobs is not deleted (staff disable it), unless its owner is (private ones).
    model = models.ForeignKey(SDModel, null=True, blank=True, on_delete=models.RESTRICT, related_name="jobs")
    cost = models.PositiveIntegerField(default=0, help_text="Credits reserved for this job.")
    # Where its images go (a team gallery, or the user's own when empty) and who pays.
    team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    billed_to_team = models.BooleanField(
        default=False, help_text="Paid from the team's wallet (the member's cap applies), not the user's."
    )

    # The canvas (docs/canvas.md). The source and mask are kept with the job, so "reuse settings"
    # reproduces it exactly; an outpaint job keeps the padded canvas and the mask of its new area.
    mode = models.CharField(max_length=16, choices=JobMode.choices, default=JobMode.TXT2IMG)
    strength = models.FloatField(default=0.75, help_text="Denoising strength, 0-1.")
    mask_blur = models.PositiveSmallIntegerField(default=4)
    masked_content = models.CharField(max_length=16, choices=list(MASKED_CONTENT.items()), default="original")
    only_masked = models.BooleanField(default=False)
    only_masked_padding = models.PositiveSmallIntegerField(default=32)
    outpaint_left = models.PositiveSmallIntegerField(default=0)
    outpaint_top = models.PositiveSmallIntegerField(default=0)
    outpaint_right = models.PositiveSmallIntegerField(default=0)
    outpaint_bottom = models.PositiveSmallIntegerField(default=0)
    source_file = models.FileField(max_length=300, blank=True)
    mask_file = models.FileField(max_length=300, blank=True)
    source_image = models.ForeignKey(
        "generation.Image", null=True, blank=True, on_delete=models.SET_NULL, related_name="derived_jobs",
        help_text="The image of the studio this job started from, if any.",
    )
    # The LoRAs applied, as they were at submit (a LoRA renamed or deleted later does not change
    # what the job was): [{"id": uuid, "name": str, "sha256": str, "weight": float}, ...].
    loras = models.JSONField(default=list, blank=True)

    # Lease: who runs it and until when. An expired lease means the worker is presumed dead.
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)

    # Progress (written at heartbeat cadence; live progress goes over the channel layer).
    progress_step = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    engine_seconds = models.FloatField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "created_at"], name="job_queue_idx"),
            models.Index(fields=["user", "-created_at"], name="job_user_recent_idx"),
            models.Index(fields=["kind", "state", "created_at"], name="job_kind_queue_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(num_images__gte=1) & Q(num_images__lte=4), name="job_num_images_1_4"),
            models.CheckConstraint(condition=Q(kind="train") | (Q(steps__gte=1) & Q(steps__lte=150)),
                                   name="job_steps_1_150"),
            models.CheckConstraint(condition=Q(billed_to_team=False) | Q(team__isnull=False),
                                   name="job_billed_to_team_has_team"),
            models.CheckConstraint(condition=Q(strength__gte=0) & Q(strength__lte=1), name="job_strength_0_1"),
            models.CheckConstraint(condition=Q(mode="txt2img") | ~Q(source_file=""), name="job_canvas_has_source"),
        ]

    def __str__(self) -> str:
        return f"Job {self.id} ({self.state})"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def is_active(self) -> bool:
        return not self.is_final

    @property
    def billing_subject(self) -> str:
        """What billing holds this job's credits under (`job:<uuid>`)."""
        return f"job:{self.pk}"

    def delete(self, *args, **kwargs):
        if self.is_active:
            raise JobNotDeletable(f"Job {self.pk} is {self.state}: cancel it first (generation.services.job_delete).")
        return super().delete(*args, **kwargs)

    @property
    def engine_mode(self) -> str:
        return JobMode.INPAINT if self.mode == JobMode.OUTPAINT else self.mode

    @property
    def uses_canvas(self) -> bool:
        return self.mode != JobMode.TXT2IMG

    def generation_request(self, *, init_image: bytes | None = None, mask: bytes | None = None) -> GenerationRequest:
        """The engine's request; a canvas job needs the bytes of its source (and mask) files."""
        fields = {name: getattr(self, name) for name in REQUEST_FIELDS}
        if self.uses_canvas:
            fields.update({name: getattr(self, name) for name in CANVAS_FIELDS},
                          mode=self.engine_mode, init_image=init_image, mask=mask)
        return GenerationRequest(**fields)

    @property
    def is_training(self) -> bool:
        return self.kind == JobKind.TRAIN

    @property
    def progress_percent(self) -> int:
        if self.state == JobState.SUCCEEDED:
            return 100
        return int(100 * self.progress_step / self.steps) if self.steps else 0


class ImageQuerySet(models.QuerySet):
    def visible_to(self, user) -> ImageQuerySet:
        """Images a user may see: their own, and those in a team gallery of theirs (any role).
        Private images are never served to anyone else (public links go through ShareLink)."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(Q(owner=user) | Q(team_id__in=team_ids_of(user)))

    def in_gallery_of(self, *, user=None, team=None) -> ImageQuerySet:
        """One gallery: a user's own images (wherever they are shared) or one team's."""
        return self.filter(team=team) if team is not None else self.filter(owner=user)


class Image(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="images")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="images")
    # The team gallery it is in, if any. The creator stays its owner (and sees it in "My images").
    team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="images"
    )
    index = models.PositiveSmallIntegerField()
    seed = models.BigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    file = models.FileField(max_length=300)
    thumbnail = models.FileField(max_length=300, blank=True)
    infotext = models.TextField(help_text="The A1111 'parameters' text embedded in the PNG.")
    favourite = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "index"]
        indexes = [
            # The gallery's keyset: one user's images by (created_at, id), either direction.
            models.Index(fields=["owner", "created_at", "id"], name="image_gallery_keyset_idx"),
            models.Index(fields=["team", "created_at", "id"], name="image_team_gallery_keyset_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="image_unique_job_index"),
        ]

    def __str__(self) -> str:
        return f"Image {self.id}"


# --- Collections, public links and their moderation -------------------------------------------------

class CollectionQuerySet(models.QuerySet):
    def visible_to(self, user) -> CollectionQuerySet:
        """A user's own collections and those of their teams (any role)."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(Q(owner_user=user) | Q(owner_team_id__in=team_ids_of(user)))


class Collection(models.Model):
    """A board: named references to images (an image may be in several). Belongs to one user or
    one team; listing its images always goes through Image.objects.visible_to."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    owner_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="collections"
    )
    owner_team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="collections"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    images = models.ManyToManyField(Image, through="CollectionItem", related_name="collections")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CollectionQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(owner_user__isnull=False, owner_team__isnull=True)
                | Q(owner_user__isnull=True, owner_team__isnull=False),
                name="collection_has_exactly_one_owner",
            ),
            models.UniqueConstraint(fields=["owner_user", "name"], condition=Q(owner_team__isnull=True),
                                    name="collection_name_unique_per_user"),
            models.UniqueConstraint(fields=["owner_team", "name"], condition=Q(owner_user__isnull=True),
                                    name="collection_name_unique_per_team"),
        ]

    def __str__(self) -> str:
        return self.name


class CollectionItem(models.Model):
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="items")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="collection_items")
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-added_at"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "image"], name="collection_item_once"),
        ]


class ShareLink(models.Model):
    """A revocable public, read-only link to one image or one collection. The token (256 random
    bits, URL-safe) is the only key; a revoked, expired or staff-hidden link answers 404."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    token = models.CharField(max_length=64, unique=True)
    image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.CASCADE, related_name="share_links")
    collection = models.ForeignKey(
        Collection, null=True, blank=True, on_delete=models.CASCADE, related_name="share_links"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="share_links")
    show_parameters = models.BooleanField(default=False, help_text="Show the prompt and parameters to viewers.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    hidden_at = models.DateTimeField(null=True, blank=True, help_text="Hidden by staff after a report.")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(image__isnull=False, collection__isnull=True)
                | Q(image__isnull=True, collection__isnull=False),
                name="share_link_has_exactly_one_target",
            ),
        ]

    def __str__(self) -> str:
        return f"Link to {'image ' + str(self.image_id) if self.image_id else 'collection ' + str(self.collection_id)}"


class ReportReason(models.TextChoices):
    ILLEGAL = "illegal", "Illegal content"
    SEXUAL = "sexual", "Sexual content involving minors or without consent"
    HARASSMENT = "harassment", "Harassment or hate"
    COPYRIGHT = "copyright", "Copyright or trademark"
    SPAM = "spam", "Spam or scam"
    OTHER = "other", "Something else"


class Report(models.Model):
    """Someone viewing a public link says it should not be there. Staff review it."""

    share_link = models.ForeignKey(ShareLink, null=True, on_delete=models.SET_NULL, related_name="reports")
    # What was reported, kept even after the link or image is gone (the review record outlives them).
    link_owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.CharField(max_length=16, choices=ReportReason.choices)
    details = models.TextField(max_length=2000, blank=True)
    reporter = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reporter_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Report {self.pk} ({self.reason})"


class ModerationActionKind(models.TextChoices):
    DISMISS = "dismiss", "Dismissed the report"
    HIDE_LINK = "hide_link", "Hid the link"
    DELETE_IMAGE = "delete_image", "Deleted the image"
    SUSPEND_ACCOUNT = "suspend_account", "Suspended the account"


class ModerationAction(models.Model):
    """What staff did about a report: append-only, never edited (the audit trail)."""

    report = models.ForeignKey(Report, null=True, on_delete=models.SET_NULL, related_name="actions")
    kind = models.CharField(max_length=20, choices=ModerationActionKind.choices)
    staff = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    target_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    summary = models.CharField(max_length=500, help_text="What was acted on, in words that outlive it.")
    note = models.TextField(max_length=2000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.staff} ({self.created_at:%Y-%m-%d})"


# --- Fine-tuning: trainings and the LoRAs they make (docs/fine-tuning.md) -------------------------

class TrainingMethod(models.TextChoices):
    LORA = "lora", "LoRA"
    DREAMBOOTH = "dreambooth", "DreamBooth"


class Training(models.Model):
    """The settings and live record of one fine-tuning run. Its Job (kind TRAIN) carries the
    queue state, lease, cost and progress, the instance prompt (`prompt`), the steps and the
    resolution (`width` = `height`); this row carries what only a training has."""

    job = models.OneToOneField(Job, primary_key=True, on_delete=models.CASCADE, related_name="training")
    name = models.CharField(max_length=64, help_text="The LoRA's name: what `<lora:name:0.8>` calls it.")
    method = models.CharField(max_length=16, choices=TrainingMethod.choices, default=TrainingMethod.LORA)
    preset = models.CharField(max_length=16, blank=True, help_text="quick | standard | thorough, or blank")
    rank = models.PositiveSmallIntegerField(default=8)
    learning_rate = models.FloatField(default=5e-4)
    train_text_encoder = models.BooleanField(default=False)
    instance_token = models.CharField(max_length=32, blank=True)
    class_prompt = models.CharField(max_length=300, blank=True)
    class_prompts = models.JSONField(
        default=list, blank=True, help_text="Several class prompts (class images are spread over them); "
                                            "empty: the one class_prompt.")
    prior_preservation = models.BooleanField(default=False)
    prior_loss_weight = models.FloatField(default=1.0)
    # The trainer's settings as resolved at submit (a later change of the method's defaults does not
    # change a training under way); the defaults are what trainings before these fields had.
    lora_targets = models.CharField(max_length=32, default="attention")
    train_token_embeddings = models.BooleanField(default=False)
    num_class_images = models.PositiveSmallIntegerField(default=0)
    full_finetune = models.BooleanField(default=False)
    checkpoint_every = models.PositiveIntegerField(default=50)
    sample_every = models.PositiveIntegerField(default=100)
    validation_prompts = models.JSONField(default=list, blank=True)
    validation_seeds = models.JSONField(default=list, blank=True)

    # Written by the worker, fenced by the job's lease.
    checkpoint_file = models.FileField(max_length=300, blank=True, help_text="The resumable state (safetensors).")
    checkpoint_lora_file = models.FileField(max_length=300, blank=True, help_text="The LoRA as of the checkpoint.")
    checkpoint_step = models.PositiveIntegerField(default=0)
    losses = models.JSONField(default=list, blank=True, help_text="[[step, loss], ...], thinned as it grows.")
    samples = models.JSONField(default=list, blank=True, help_text='[{"step": n, "files": [name, ...]}, ...]')
    lora = models.OneToOneField(
        "generation.LoRA", null=True, blank=True, on_delete=models.SET_NULL, related_name="made_by",
        help_text="The result (made on success, or from the last checkpoint when cancelled).",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(rank__gte=1) & Q(rank__lte=128), name="training_rank_1_128"),
        ]
        permissions = [("train_full_model", "May train a full fine-tune (a private model variant)")]

    def __str__(self) -> str:
        return f"Training {self.name} ({self.job_id})"


class TrainingImage(models.Model):
    """One picture of a training set with its caption (the file is a re-encoded upload or a copy
    of a gallery image: deleting the image later does not change the training)."""

    training = models.ForeignKey(Training, on_delete=models.CASCADE, related_name="images")
    index = models.PositiveSmallIntegerField()
    file = models.FileField(max_length=300)
    caption = models.CharField(max_length=300)
    source_image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["index"]
        constraints = [models.UniqueConstraint(fields=["training", "index"], name="training_image_unique_index")]


class LoRAQuerySet(models.QuerySet):
    def visible_to(self, user) -> LoRAQuerySet:
        """A user's own LoRAs and those shared with a team of theirs (any role may use them on
        Create; generation.permissions decides download, rename, share and delete)."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        return self.filter(Q(owner=user) | Q(team_id__in=team_ids_of(user)))


class LoRASource(models.TextChoices):
    TRAINED = "trained", "Trained here"
    IMPORTED = "imported", "Imported"


LORA_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class LoRA(models.Model):
    """A LoRA adapter file (kohya/A1111 `.safetensors`), trained here or imported."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="loras")
    team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="loras",
        help_text="Shared with this team: its members use it on Create.",
    )
    team_may_download = models.BooleanField(default=False)
    name = models.CharField(max_length=64, help_text="Letters, digits, _ . - (what `<lora:name:0.8>` calls it).")
    description = models.CharField(max_length=500, blank=True)
    source = models.CharField(max_length=16, choices=LoRASource.choices)
    trigger_words = models.CharField(max_length=200, blank=True, help_text="Words its training taught, e.g. zwx.")
    file = models.FileField(max_length=300)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField()
    base_family = models.CharField(max_length=32, blank=True, help_text="The model family its keys fit.")
    base_model_name = models.CharField(max_length=200, blank=True)
    rank = models.PositiveSmallIntegerField(null=True, blank=True)
    steps = models.PositiveIntegerField(null=True, blank=True, help_text="Training steps it has (a checkpoint's).")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = LoRAQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="lora_unique_owner_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


class ApiIdempotencyKey(models.Model):
    """An `Idempotency-Key` an API client sent with a creating call (Stripe's convention), and what
    that call made: a job (a generation, a training) or an imported LoRA. Written in the creating
    transaction, unique per (API key, idempotency key): a retry with the same key and the same
    request gets the same thing and is charged once; the same key with another request is refused
    (generation/api/submit.py)."""

    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64, help_text="SHA-256 of the method, path and canonical body.")
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    lora = models.ForeignKey(LoRA, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_key_unique_per_api_key"),
            models.CheckConstraint(condition=Q(job__isnull=False, lora__isnull=True)
                                   | Q(job__isnull=True, lora__isnull=False), name="idempotency_key_made_one_thing"),
        ]

    def __str__(self) -> str:
        return f"{self.key} -> {self.job_id or self.lora_id}"

    @property
    def made(self):
        return self.job if self.job_id else self.lora
