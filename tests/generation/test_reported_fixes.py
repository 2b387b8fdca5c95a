"""Reported problems on the team, gallery, job and error pages, each pinned by a test: the team's
Credits link for every member, what a team gallery offers a viewer, canvas jobs reused on the
canvas, "Buy more credits" on the canvas, and the 404 and 403 pages."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from accounts.models import TeamRole
from generation import services
from generation.models import Image, Job, JobState
from tests.factories import job_params, make_user
from tests.generation.test_canvas import canvas_input, canvas_post
from tests.generation.test_teams import make_team_images, team_with

pytestmark = [pytest.mark.django_db]


# --- 2. The team's Credits link -------------------------------------------------------------------


@pytest.mark.parametrize("role", [TeamRole.VIEWER, TeamRole.MEMBER, TeamRole.ADMIN])
def test_every_member_sees_the_team_credits_link_and_may_open_it(client, role):
    team, _, (member,) = team_with(role)
    client.force_login(member)
    page = client.get(reverse("generation:team_detail", args=[team.pk]))
    credits_url = reverse("billing:team_credits", args=[team.pk])
    assert page.context["can_open_credits"] is True  # decided by the view (accounts.permissions)
    assert f'href="{credits_url}" data-team-credits' in page.content.decode()
    assert client.get(credits_url).status_code == 200


# --- 3. What a team gallery offers ------------------------------------------------------------------


def _bulk_bar(html: str) -> str:
    return re.search(r'<form class="bulk-bar.*?</form>', html, re.DOTALL).group(0)


def test_a_viewer_is_offered_no_bulk_delete_or_share_into_a_team(client):
    team, owner, (viewer,) = team_with(TeamRole.VIEWER)
    make_team_images(team, [owner], 3)
    other_team = services.team_create(user=viewer, name="Mine")  # a team the viewer may save into
    client.force_login(viewer)
    bar = _bulk_bar(client.get(reverse("generation:team_gallery", args=[team.pk])).content.decode())
    assert 'value="delete"' not in bar and 'value="team"' not in bar and str(other_team.pk) not in bar
    assert 'value="zip"' in bar and 'value="collection"' in bar  # looking, keeping and downloading stay


def test_a_member_and_the_personal_gallery_keep_delete_and_share(client):
    team, owner, (member,) = team_with(TeamRole.MEMBER)
    make_team_images(team, [owner, member], 2)
    client.force_login(member)
    bar = _bulk_bar(client.get(reverse("generation:team_gallery", args=[team.pk])).content.decode())
    assert 'value="delete"' in bar and 'value="team"' in bar
    Image.objects.filter(owner=member).update(team=None)  # now in the member's own gallery
    bar = _bulk_bar(client.get(reverse("generation:gallery")).content.decode())
    assert 'value="delete"' in bar and 'value="team"' in bar


def test_a_team_gallery_has_no_favourites_filter_and_ignores_one(client):
    team, owner, _ = team_with()
    make_team_images(team, [owner], 2)
    client.force_login(owner)
    url = reverse("generation:team_gallery", args=[team.pk])
    html = client.get(url).content.decode()
    assert 'name="favourites"' not in html and "Favourites only" not in html
    # A stale ?favourites=on (the owner's marks mean nothing to the team) filters nothing out.
    assert len(re.findall(r'id="image-[0-9a-f-]{36}"', client.get(url, {"favourites": "on"}).content.decode())) == 2
    assert 'name="favourites"' in client.get(reverse("generation:gallery")).content.decode()


# --- 4. The gallery's model filter -----------------------------------------------------------------------


def test_the_gallery_filters_by_the_models_of_its_images(client):
    team, owner, (member,) = team_with(TeamRole.MEMBER)
    make_team_images(team, [owner, member], 4)  # model "t"
    Job.objects.filter(images__owner=member).update(model_name="sdxl-turbo")
    outsider = make_user(credits=100)
    services.job_submit(user=outsider, **job_params())  # another model name nobody here can see
    Job.objects.filter(user=outsider).update(model_name="secret-model")
    client.force_login(owner)
    url = reverse("generation:team_gallery", args=[team.pk])
    html = client.get(url).content.decode()
    options = re.findall(r'<option value="([^"]*)"', re.search(r'<select name="model".*?</select>', html, re.DOTALL)[0])
    assert options == ["", "sdxl-turbo", "t"] and "secret-model" not in html
    page = client.get(url, {"model": "sdxl-turbo"})
    tiles = set(re.findall(r'id="image-([0-9a-f-]{36})"', page.content.decode()))
    assert tiles == {str(pk) for pk in Image.objects.filter(owner=member).values_list("pk", flat=True)}
    assert len(tiles) == 2
    refused = client.get(url, {"model": "secret-model"})
    assert refused.status_code == 400 and "model: Select a valid choice" in refused.content.decode()
    assert client.get(reverse("generation:gallery"), {"model": "nope"}).status_code == 400


# --- 5. A canvas job's page --------------------------------------------------------------------------


def _finished(job: Job) -> Job:
    Job.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED, engine_seconds=1.5)
    Image.objects.create(job=job, owner=job.user, index=0, seed=job.seed, width=job.width, height=job.height,
                         file="x.png", thumbnail="x.png", infotext="x")
    return job


def test_a_canvas_jobs_page_reuses_it_on_the_canvas_and_shows_its_canvas_parameters(client):
    user = make_user(credits=100)
    job = _finished(services.job_submit(user=user, **job_params(width=128, height=128),
                                        canvas=canvas_input(mask_blur=7)))
    client.force_login(user)
    html = client.get(reverse("generation:job_detail", args=[job.pk])).content.decode()
    again = f'{reverse("generation:canvas")}?from={job.pk}'
    assert f'<a href="{again}">← Canvas</a>' in html and f'<a href="{again}">Reuse settings</a>' in html
    assert "Reuse seed" not in html and f'{reverse("generation:create")}?from=' not in html
    assert "data-canvas-params" in html and "Mask blur</dt><dd>7 px" in html


def test_a_text_to_image_jobs_page_still_reuses_it_on_create(client):
    user = make_user(credits=100)
    job = _finished(services.job_submit(user=user, **job_params()))
    client.force_login(user)
    html = client.get(reverse("generation:job_detail", args=[job.pk])).content.decode()
    assert f'{reverse("generation:create")}?from={job.pk}&seed={job.seed}">Reuse seed' in html
    assert "data-canvas-params" not in html and "← Create" in html


@pytest.mark.parametrize("state", [JobState.FAILED, JobState.CANCELLED])
def test_a_failed_or_cancelled_canvas_job_runs_again_on_the_canvas(client, state):
    user = make_user(credits=100)
    job = services.job_submit(user=user, **job_params(width=128, height=128), canvas=canvas_input())
    Job.objects.filter(pk=job.pk).update(state=state)
    client.force_login(user)
    html = client.get(reverse("generation:job_detail", args=[job.pk])).content.decode()
    assert re.search(rf'href="{reverse("generation:canvas")}\?from={job.pk}">(Try|Run it) again', html)


# --- 6. "Buy more credits" on the canvas ------------------------------------------------------------------


def test_without_credits_the_canvas_offers_to_buy_more(client):
    client.force_login(make_user(credits=1))
    response = client.post(reverse("generation:canvas"), canvas_post(num_images=4, steps=150))
    assert response.status_code == 402
    assert f'<a href="{reverse("billing:packs")}">Buy more credits</a>' in response.content.decode()


def test_an_empty_team_wallet_on_the_canvas_does_not_offer_my_packs(client):
    team, _, (member,) = team_with(TeamRole.MEMBER)
    client.force_login(member)
    response = client.post(reverse("generation:canvas"),
                           canvas_post(save_to=str(team.pk), bill_team="on"))
    assert response.status_code == 402 and "Buy more credits" not in response.content.decode()


# --- 7. The 404 and 403 pages ----------------------------------------------------------------------


@pytest.fixture
def production(settings):
    settings.DEBUG = False
    return settings


@pytest.mark.parametrize("signed_in", [False, True])
def test_the_404_page_is_friendly_and_tells_nothing(client, production, signed_in):
    owner = make_user(credits=100)
    job = services.job_submit(user=owner, **job_params(prompt="a secret lighthouse"))
    if signed_in:
        client.force_login(make_user())
    response = client.get(reverse("generation:job_detail", args=[job.pk]) if signed_in else "/no/such/page/")
    html = response.content.decode()
    assert response.status_code == 404 and "<h1>Not found</h1>" in html
    assert f'href="{reverse("home")}"' in html and "secret" not in html and "No such" not in html
    assert "/no/such/page/" not in html and str(job.pk) not in html


def test_the_403_page_shows_the_reason(client, production):
    """A team viewer sees a teammate's image but may not favourite it: 403 with the view's reason."""
    team, owner, (viewer,) = team_with(TeamRole.VIEWER)
    make_team_images(team, [owner], 1)
    client.force_login(viewer)
    image = Image.objects.get()
    response = client.post(reverse("generation:image_favourite", args=[image.pk]), {"favourite": "1"})
    html = response.content.decode()
    assert response.status_code == 403 and "<h1>Not allowed</h1>" in html
    assert "Only the image&#x27;s creator can favourite it." in html
    assert f'href="{reverse("home")}"' in html
