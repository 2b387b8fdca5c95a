"""Test data for public links and moderation: finished jobs with real PNG files (with their A1111
"parameters" chunk) and WebP thumbnails in storage, teams, collections."""

from __future__ import annotations

import io

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from accounts.models import Membership, Team
from generation.engine.pngmeta import encode_png
from generation.models import Collection, CollectionItem, Image, Job, JobState


def make_image(user, *, prompt: str = "a lighthouse in a storm", team=None, color=(200, 60, 40)) -> Image:
    job = Job.objects.create(
        user=user, team=team, state=JobState.SUCCEEDED, prompt=prompt, negative_prompt="blurry", width=64,
        height=64, steps=4, guidance_scale=7, sampler="euler", seed=1234, num_images=1,
        model_name="studio-tiny", cost=1,
    )
    picture = PILImage.new("RGB", (64, 64), color)
    infotext = f"{prompt}\nNegative prompt: blurry\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1234"
    png = default_storage.save(f"images/{user.pk}/{job.pk}/0.png", ContentFile(encode_png(picture, infotext)))
    buffer = io.BytesIO()
    picture.save(buffer, "WEBP")
    webp = default_storage.save(f"images/{user.pk}/{job.pk}/0.webp", ContentFile(buffer.getvalue()))
    return Image.objects.create(job=job, owner=user, team=team, index=0, seed=1234, width=64, height=64,
                                file=png, thumbnail=webp, infotext=infotext)


def make_team(owner, **members) -> Team:
    """A team owned by `owner`; members given as role=user or role=[users]."""
    team = Team.objects.create(name=f"Team of {owner.email}", created_by=owner)
    Membership.objects.create(team=team, user=owner, role="owner")
    for role, users in members.items():
        for user in users if isinstance(users, list) else [users]:
            Membership.objects.create(team=team, user=user, role=role)
    return team


def make_collection(*, images, user=None, team=None, name: str = "Storms") -> Collection:
    collection = Collection.objects.create(name=name, owner_user=user, owner_team=team, created_by=user)
    for image in images:
        CollectionItem.objects.create(collection=collection, image=image)
    return collection
