"""Reads for the generation app: which model serves, what a user may see, queue positions."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db import connections
from django.db.models import Count, Max, Min, OuterRef, Prefetch, Q, Subquery, UUIDField

from accounts.selectors import teams_of
from generation import permissions
from generation.engine.contracts import ModelInfo
from generation.engine.model_info import read_model_info
from generation.models import Collection, CollectionItem, Image, Job, JobKind, JobState, LoRA, SDModel

SHIPPED_MODEL_DIR = Path(settings.BASE_DIR) / "generation" / "engine" / "weights" / "studio-tiny"


def model_path() -> Path:
    """STUDIO_MODEL_PATH if set; else the trained demo model we ship; else the built one under var/."""
    if settings.STUDIO_MODEL_PATH:
        return Path(settings.STUDIO_MODEL_PATH)
    if (SHIPPED_MODEL_DIR / "model_index.json").exists():
        return SHIPPED_MODEL_DIR
    return Path(settings.STUDIO_DEMO_MODEL_DIR)


@lru_cache(maxsize=4)
def _model_info_at(path: str) -> ModelInfo:
    return read_model_info(path)


def own_model_info() -> ModelInfo:
    """The studio's own model (STUDIO_MODEL_PATH, else the demo model): what trainings start from
    and imported LoRAs are checked against, whichever model Create offers first."""
    return _model_info_at(str(model_path()))


def default_model() -> SDModel | None:
    """The model Create starts with: the staff's default if it is offered, else the studio's own
    model's row, else the first offered one; None before the studio's own model is registered
    (services.sd_models.builtin_model registers it on the first submit)."""
    offered = models_offered()
    return (offered.filter(is_default=True).first() or offered.filter(path=str(model_path())).first()
            or offered.first())


def models_served():
    """Every model a job may run on: enabled and not marked broken (private ones included)."""
    return SDModel.objects.filter(enabled=True, broken_reason="")


def models_offered(user=None):
    """The models `user` may pick: the studio's, and their own private variants (full fine-tunes);
    without a user, the studio's only."""
    owners = Q(owner__isnull=True)
    if user is not None and user.is_authenticated:
        owners |= Q(owner=user)
    return models_served().filter(owners)


def model_info(model: SDModel | None = None) -> ModelInfo:
    """What the engine knows of a model (the default model without one), read without its weights."""
    model = model or default_model()
    if model is None:
        return _model_info_at(str(model_path()))
    return model.model_info()


def model_remembered(user, name: str | None) -> SDModel | None:
    """The model Create starts with for a user: `name` (a ?model= link or the session's last
    pick) if offered, else their last job's model if offered, else the default."""
    offered = models_offered(user)
    if name and (model := offered.filter(name=name).first()):
        return model
    last = Job.objects.filter(user=user, kind=JobKind.GENERATE, model__isnull=False).values_list("model_id", flat=True)
    if (last_id := last.first()) and (model := offered.filter(pk=last_id).first()):
        return model
    return default_model()


def _images_in_order() -> Prefetch:
    """A job's images in the order they were asked for (seed, seed+1, ...), never by save time:
    the images of one job are saved microseconds apart, and sorting newest first reverses them."""
    return Prefetch("images", queryset=Image.objects.order_by("index"))


def jobs_for_user(user, *, limit: int = 12):
    """The user's own recent image jobs (their history; teammates' jobs are in the team gallery;
    trainings have their own list)."""
    jobs = Job.objects.visible_to(user).filter(user=user, kind=JobKind.GENERATE)
    return jobs.prefetch_related(_images_in_order())[:limit]


def job_for_user(user, job_id) -> Job:
    """The job if the user may see it; raises Job.DoesNotExist (a 404) otherwise."""
    return Job.objects.visible_to(user).prefetch_related(_images_in_order()).get(pk=job_id)


def image_for_user(user, image_id) -> Image:
    return Image.objects.visible_to(user).select_related("job", "owner", "team").get(pk=image_id)


def queue_position(job: Job) -> int | None:
    """1-based place of a queued job in the order the fair-share claim will run it, or None once
    it left the queue.

    The claim (services.job_claim_next) takes turns between users: each round, every user with
    queued jobs gets one, users served longest ago first. My k-th queued job therefore runs after
    my k-1 earlier ones and, of every other user, up to k jobs if they come before me in a round
    (else up to k-1), however recently they were queued. An estimate: jobs submitted later by a
    user who comes before me in the rotation can still move ahead.

    Counted among the jobs of its own kind: a worker runs waiting generation jobs between a
    training's steps, and trainings have their own queue (docs/fine-tuning.md, "Training jobs").
    """
    if job.state != JobState.QUEUED:
        return None
    queued = Job.objects.filter(state=JobState.QUEUED, kind=job.kind)
    my_turn = queued.filter(user_id=job.user_id, created_at__lt=job.created_at).count() + 1
    others = {
        user_id: (waiting, oldest)
        for user_id, waiting, oldest in queued.exclude(user_id=job.user_id)
        .values_list("user").annotate(n=Count("pk"), oldest=Min("created_at"))
    }
    if not others:
        return my_turn
    last_started = dict(
        Job.objects.filter(user_id__in=[job.user_id, *others], started_at__isnull=False)
        .values_list("user").annotate(last=Max("started_at"))
    )
    mine = last_started.get(job.user_id)
    ahead = my_turn - 1
    for user_id, (waiting, oldest) in others.items():
        theirs = last_started.get(user_id)
        if theirs == mine:  # both never served: the older job goes first
            before_me = oldest < job.created_at
        else:
            before_me = theirs is None or (mine is not None and theirs < mine)
        ahead += min(waiting, my_turn if before_me else my_turn - 1)
    return ahead + 1


def lease_owners_running(*, prefix: str) -> list[str]:
    """The workers whose id starts with `prefix` and that hold the lease of a running job."""
    return list(
        Job.objects.filter(state=JobState.RUNNING, lease_owner__startswith=prefix)
        .order_by().values_list("lease_owner", flat=True).distinct()
    )


def job_context(job: Job) -> dict:
    """What every rendering of a job needs (page, fragment, websocket message)."""
    images = sorted(job.images.all(), key=lambda image: image.index)
    return {"job": job, "images": images, "queue_position": queue_position(job)}


def job_loras(job: Job, viewer) -> list[dict]:
    """The LoRAs a job applied, as recorded when it was submitted (name, weight, hash), each with
    its page's id when `viewer` may still see that LoRA (it may be deleted or unshared since)."""
    if not job.loras:
        return []
    ids = [item["id"] for item in job.loras]
    visible = {str(pk) for pk in LoRA.objects.visible_to(viewer).filter(pk__in=ids).values_list("pk", flat=True)}
    return [{"name": item["name"], "weight": item["weight"], "short_hash": item["sha256"][:12],
             "lora_id": item["id"] if item["id"] in visible else None} for item in job.loras]


# --- The gallery --------------------------------------------------------------------------------

GALLERY_PAGE_SIZE = 24


def gallery_images(user, *, team=None, collection=None):
    """The images of one gallery as `user` may see them: their own, or one team's; or every image
    of one collection that the user may see (a personal collection can hold team images)."""
    if collection is not None:
        return Image.objects.visible_to(user).filter(collection_items__collection=collection)
    return Image.objects.visible_to(user).in_gallery_of(user=user, team=team)


def gallery_sizes(user, *, team=None, collection=None) -> list[tuple[int, int]]:
    """The sizes (width, height) among a gallery's images: its size filter offers these."""
    images = gallery_images(user, team=team, collection=collection)
    return list(images.order_by("width", "height").values_list("width", "height").distinct())


def gallery_models(user, *, team=None, collection=None) -> list[str]:
    """The model names among a gallery's images (one DISTINCT query): its model filter offers these."""
    images = gallery_images(user, team=team, collection=collection)
    return list(images.order_by("job__model_name").values_list("job__model_name", flat=True).distinct())


def _prompt_has_all_words(images, words: list[str]):
    """Every word must be in the prompt. PostgreSQL: full-text search, served by the GIN index of
    migration 0003 (same expression); elsewhere a case-insensitive substring test per word."""
    if not words:
        return images
    if connections[images.db].vendor == "postgresql":
        vector = SearchVector("job__prompt", config="english")
        query = SearchQuery(" ".join(words), config="english", search_type="plain")
        return images.alias(prompt_search=vector).filter(prompt_search=query)
    for word in words:
        images = images.filter(job__prompt__icontains=word)
    return images


def gallery_page(
    user, *, words: list[str] = (), sampler: str | None = None, size: tuple[int, int] | None = None,
    favourites_only: bool = False, created_from: datetime | None = None,
    created_before: datetime | None = None, oldest_first: bool = False,
    after: tuple[datetime, uuid.UUID] | None = None, limit: int = GALLERY_PAGE_SIZE,
    team=None, collection=None, model_name: str | None = None,
) -> tuple[list[Image], tuple[datetime, uuid.UUID] | None]:
    """One page of a user's images and the keyset position of the next page (None at the end).

    Keyset paging on (created_at, id), never OFFSET: a page costs the same however deep it is, and
    images arriving meanwhile neither repeat nor skip anything. One query whatever the page size.
    `team` picks a team gallery instead of the user's own; `collection` (which the caller checked
    the user can see, through Collection.objects.visible_to) lists its images instead.
    """
    images = gallery_images(user, team=team, collection=collection).select_related("job", "owner")
    images = _prompt_has_all_words(images, list(words))
    if sampler:
        images = images.filter(job__sampler=sampler)
    if size:
        images = images.filter(width=size[0], height=size[1])
    if model_name:
        images = images.filter(job__model_name=model_name)
    if favourites_only:
        images = images.filter(favourite=True)
    if created_from:
        images = images.filter(created_at__gte=created_from)
    if created_before:
        images = images.filter(created_at__lt=created_before)
    if after:
        # The plain bound on created_at is implied by the OR, but it is what lets PostgreSQL start
        # the index scan at the cursor (an Index Cond) instead of reading and discarding every
        # earlier row (a Filter): without it a page 5,000 images deep read 5,001 rows.
        at, image_id = after
        if oldest_first:
            images = images.filter(Q(created_at__gte=at), Q(created_at__gt=at) | Q(created_at=at, id__gt=image_id))
        else:
            images = images.filter(Q(created_at__lte=at), Q(created_at__lt=at) | Q(created_at=at, id__lt=image_id))
    order = ["created_at", "id"] if oldest_first else ["-created_at", "-id"]
    page = list(images.order_by(*order)[: limit + 1])
    if len(page) <= limit:
        return page, None
    page = page[:limit]
    return page, (page[-1].created_at, page[-1].id)


# --- Collections, and what the image page and the bulk bar offer ----------------------------------

def collections_user_can_change(user):
    """Collections the user may add images to: their own, and those of teams they create in
    (can_change_collection's rule as one query, for menus). Personal first, then by team."""
    return (
        Collection.objects.visible_to(user)
        .filter(Q(owner_user=user) | Q(owner_team_id__in=permissions.teams_user_may_save_into(user)))
        .select_related("owner_team").order_by("owner_team__name", "name")
    )


def teams_user_can_save_into(user):
    """The user's teams whose gallery they may add images to (may_save_into_team), by name."""
    return teams_of(user).filter(id__in=permissions.teams_user_may_save_into(user))


def collections_to_filter_by(user, *, team=None):
    """What a gallery's collection filter offers: the user's own collections, or the team's."""
    collections = Collection.objects.visible_to(user)
    if team is not None:
        return collections.filter(owner_team=team).order_by("name")
    return collections.filter(owner_user=user).order_by("name")


def collections_for_list(user):
    """Every collection the user can see, each with how many of its images they can see and the
    newest of those as its cover (`cover_id`): one query whatever the number of collections."""
    visible = Image.objects.visible_to(user)
    items = CollectionItem.objects.filter(collection=OuterRef("pk"), image__in=visible)
    return (
        Collection.objects.visible_to(user).select_related("owner_team")
        .annotate(image_count=Subquery(items.order_by().values("collection").annotate(n=Count("pk")).values("n")),
                  cover_id=Subquery(items.order_by("-added_at").values("image_id")[:1],
                                    output_field=UUIDField()))
        .order_by("owner_team__name", "name")
    )


def image_collections_panel(user, image: Image) -> dict:
    """The image page's collections: where it is (each with whether the user may take it out), and
    where it may still be added."""
    containing = list(
        Collection.objects.visible_to(user).filter(items__image=image).select_related("owner_team").order_by("name")
    )
    inside = {collection.pk for collection in containing}
    addable = [
        collection for collection in collections_user_can_change(user)
        if collection.pk not in inside and permissions.can_add_to_collection(user, collection, image)
    ]
    return {
        "image_collections": [(c, permissions.can_change_collection(user, c)) for c in containing],
        "addable_collections": addable,
        "can_start_team_collection": image.team_id is not None
        and permissions.can_create_team_collection(user, image.team_id),
    }


def image_team_panel(user, image: Image) -> dict:
    """The image page's team gallery part: where it is, who may take it out, where it may go."""
    movable = permissions.can_change_image(user, image)
    teams = [team for team in teams_user_can_save_into(user) if team.pk != image.team_id] if movable else []
    return {
        "image_team": image.team,
        "can_remove_from_team": permissions.can_remove_image_from_team(user, image),
        "teams_to_move_to": teams,
        "made_by_me": image.owner_id == user.pk,
    }
