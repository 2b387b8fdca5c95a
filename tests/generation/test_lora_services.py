"""The LoRA library's services: storing a LoRA's bytes, names, sharing with a team, deleting."""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.storage import default_storage

from accounts.models import Membership, TeamRole
from generation import permissions, services
from generation.models import Job, LoRA, LoRASource
from tests.factories import make_user as _make_user
from tests.factories import submit_job

pytestmark = [pytest.mark.django_db]


def make_user(**kwargs):
    """A user without a password (hashing one costs most of a test here; force_login needs none)."""
    return _make_user(password=None, **kwargs)

DATA = b"not really a lora, but bytes to store"


def make_lora(owner, name="zwx-dog", source=LoRASource.TRAINED, data=DATA, **extra):
    return services.lora_create_from_bytes(owner=owner, name=name, data=data, source=source,
                                           base_model="studio-tiny", **extra)


def test_create_stores_the_bytes_with_hash_and_size_under_the_owner():
    owner = make_user()
    lora = make_lora(owner, trigger_words="zwx", rank=4, steps=150)
    assert lora.file.name.startswith(f"loras/{owner.pk}/") and lora.file.name.endswith(".safetensors")
    with default_storage.open(lora.file.name, "rb") as handle:
        assert handle.read() == DATA
    assert lora.sha256 == hashlib.sha256(DATA).hexdigest()
    assert (lora.size_bytes, lora.rank, lora.steps, lora.trigger_words) == (len(DATA), 4, 150, "zwx")
    assert lora.base_model_name == "studio-tiny"


def test_a_trained_lora_whose_name_is_taken_gets_a_numbered_suffix():
    owner = make_user()
    names = [make_lora(owner).name for _ in range(3)]
    assert names == ["zwx-dog", "zwx-dog-2", "zwx-dog-3"]
    other = make_user()
    assert make_lora(other).name == "zwx-dog"  # names are per owner
    long = "a" * 64
    make_lora(owner, name=long)
    assert make_lora(owner, name=long).name == "a" * 62 + "-2"


def test_an_imported_lora_whose_name_is_taken_is_refused_and_nothing_is_stored():
    owner = make_user()
    make_lora(owner, source=LoRASource.IMPORTED)
    files_before = default_storage.listdir(f"loras/{owner.pk}")[1]
    with pytest.raises(services.LoraRefused, match="already have a LoRA called 'zwx-dog'") as refused:
        make_lora(owner, source=LoRASource.IMPORTED)
    assert refused.value.status == 409 and refused.value.field == "name"
    assert default_storage.listdir(f"loras/{owner.pk}")[1] == files_before
    assert LoRA.objects.filter(owner=owner).count() == 1


@pytest.mark.parametrize("name", ["", "has space", "-leading", "a" * 65, "<lora:x:1>", "ünicode"])
def test_bad_names_are_refused(name):
    with pytest.raises(services.LoraRefused, match="A LoRA name is"):
        make_lora(make_user(), name=name)


def test_create_links_the_training():
    owner = make_user(credits=100)
    job = submit_job(owner)
    from generation.models import Training

    training = Training.objects.create(job=job, name="zwx-dog")
    lora = make_lora(owner, training=training)
    training.refresh_from_db()
    assert training.lora_id == lora.pk


def test_rename_checks_owner_pattern_and_clash():
    owner, stranger = make_user(), make_user()
    lora = make_lora(owner)
    make_lora(owner, name="taken")
    with pytest.raises(services.LoraRefused, match="Only its owner"):
        services.lora_rename(user=stranger, lora=lora, name="mine")
    with pytest.raises(services.LoraRefused, match="already have a LoRA called 'taken'"):
        services.lora_rename(user=owner, lora=lora, name="taken")
    with pytest.raises(services.LoraRefused, match="A LoRA name is"):
        services.lora_rename(user=owner, lora=lora, name="two words")
    renamed = services.lora_rename(user=owner, lora=lora, name="zwx-cat", description="my cat")
    lora.refresh_from_db()
    assert (renamed.name, lora.name, lora.description) == ("zwx-cat", "zwx-cat", "my cat")


def team_of(owner, *members, role=TeamRole.MEMBER):
    team = services.team_create(user=owner, name="Team")
    for member in members:
        Membership.objects.create(team=team, user=member, role=role)
    return team


def test_share_with_a_team_lets_members_use_and_download_only_when_allowed():
    owner, member, viewer, outsider = make_user(), make_user(), make_user(), make_user()
    team = team_of(owner, member)
    Membership.objects.create(team=team, user=viewer, role=TeamRole.VIEWER)
    lora = make_lora(owner)
    with pytest.raises(services.LoraRefused, match="your own LoRAs"):
        services.lora_share_with_team(user=member, lora=lora, team_id=team.pk)
    outsider_team = services.team_create(user=outsider, name="Other")
    with pytest.raises(services.LoraRefused, match="a team you create in"):
        services.lora_share_with_team(user=owner, lora=lora, team_id=outsider_team.pk)

    lora = services.lora_share_with_team(user=owner, lora=lora, team_id=team.pk, allow_download=False)
    assert LoRA.objects.visible_to(member).filter(pk=lora.pk).exists()
    assert permissions.can_use_lora(member, lora) and not permissions.can_download_lora(member, lora)
    assert not permissions.can_use_lora(viewer, lora)
    assert not LoRA.objects.visible_to(outsider).filter(pk=lora.pk).exists()
    lora = services.lora_share_with_team(user=owner, lora=lora, team_id=team.pk, allow_download=True)
    assert permissions.can_download_lora(member, lora)


def test_unshare_by_owner_or_team_admin_only():
    owner, member, admin = make_user(), make_user(), make_user()
    team = team_of(owner, member)
    Membership.objects.create(team=team, user=admin, role=TeamRole.ADMIN)
    lora = services.lora_share_with_team(user=owner, lora=make_lora(owner), team_id=team.pk, allow_download=True)
    with pytest.raises(services.LoraRefused, match="owner or a team admin"):
        services.lora_unshare(user=member, lora=lora)
    lora = services.lora_unshare(user=admin, lora=lora)
    lora.refresh_from_db()
    assert (lora.team_id, lora.team_may_download) == (None, False)
    assert not LoRA.objects.visible_to(member).filter(pk=lora.pk).exists()


def test_delete_removes_row_then_file_after_commit(django_capture_on_commit_callbacks):
    owner = make_user()
    lora = make_lora(owner)
    with pytest.raises(services.LoraRefused, match="Only its owner"):
        services.lora_delete(user=make_user(), lora=lora)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.lora_delete(user=owner, lora=lora)
    assert not LoRA.objects.filter(pk=lora.pk).exists()
    assert default_storage.exists(lora.file.name)  # not before the commit
    for callback in callbacks:
        callback()
    assert not default_storage.exists(lora.file.name)


def test_delete_is_refused_while_an_active_job_names_it():
    owner = make_user(credits=100)
    lora, other = make_lora(owner), make_lora(owner, name="other")
    job = submit_job(owner)
    Job.objects.filter(pk=job.pk).update(
        loras=[{"id": str(lora.pk), "name": lora.name, "sha256": lora.sha256, "weight": 0.8}])
    with pytest.raises(services.LoraRefused, match="1 queued or running job uses this LoRA") as refused:
        services.lora_delete(user=owner, lora=lora)
    assert refused.value.status == 409
    assert LoRA.objects.filter(pk=lora.pk).exists() and default_storage.exists(lora.file.name)
    services.lora_delete(user=owner, lora=other)  # a job naming another LoRA does not hold this one
    services.job_cancel(job=job)
    services.lora_delete(user=owner, lora=lora)  # finished jobs keep only the snapshot
    assert not LoRA.objects.filter(owner=owner).exists()
