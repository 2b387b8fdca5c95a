"""Live galleries and revocation on the real Redis channel layer: new images reach the sockets of
those who may see them (rendered per socket, through visible_to), a non-member is refused, and a
member who loses access has their open job and gallery sockets closed with 4404."""

from __future__ import annotations

import re
import time

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.middleware.csrf import _unmask_cipher_token
from django.test import Client
from django.urls import reverse

from accounts.models import Membership, Team, TeamRole
from generation import events, services
from generation.events import capture_events, team_gallery_group, user_gallery_group, user_group
from generation.models import Image, Job
from generation.routing import gallery_live_url
from generation.services import teams as team_services
from studio.asgi import application
from tests.factories import make_user, submit_job
from tests.generation.test_consumers import session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database, pytest.mark.asyncio]

CSRF_SECRET = "a" * 16 + "B" * 16
CLOSED = {"type": "websocket.close", "code": 4404}


async def connect(path: str, user=None, *, csrf: bool = False):
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if user is not None:
        cookie = await sync_to_async(session_cookie)(user)
        if csrf:
            cookie += f"; csrftoken={CSRF_SECRET}"
        headers.append((b"cookie", cookie.encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect()
    return communicator, connected, code


def team_gallery(team) -> str:
    return f"/ws/teams/{team.pk}/gallery/"


@sync_to_async
def make_team(owner) -> Team:
    """A team owned by `owner`, through the service (so it has its wallet)."""
    return team_services.team_create(user=owner, name=f"Team of {owner.email}")


@sync_to_async
def add_member(team, user, role=TeamRole.MEMBER) -> None:
    """Setup only: joining goes through an invitation, which tests/accounts/test_teams.py covers."""
    Membership.objects.create(team=team, user=user, role=role)


def run_job(user, **overrides) -> list[Image]:
    """Submit, claim and finish a job through the services, as the worker does."""
    job = submit_job(user, **overrides)
    lease = services.job_claim_next(worker_id="w")
    assert lease is not None and lease.job_id == job.pk
    stored = [
        services.StoredImage(index=index, seed=42 + index, width=64, height=64,
                             file_name=f"images/x/{job.pk}/{index}.png", thumbnail_name=f"images/x/{job.pk}/{index}.webp",
                             infotext="a red circle")
        for index in range(job.num_images)
    ]
    services.job_succeed(lease=lease, images=stored, engine_seconds=0.5)
    return list(Image.objects.filter(job=job).order_by("index"))


def tile_ids(html: str) -> list[str]:
    return re.findall(r'id="image-([0-9a-f-]{36})"', html)


# --- Events: who is told -------------------------------------------------------------------------

@sync_to_async
def _events_of_a_team_job():
    owner, other = make_user(credits=50), make_user(credits=50)
    team = team_services.team_create(user=owner, name="Events")
    with capture_events() as sent:
        images = run_job(owner, team=team, num_images=2)
        personal = run_job(other)
    return owner, other, team, images, personal, sent


async def test_a_finished_job_tells_its_owners_gallery_and_its_teams_gallery():
    owner, other, team, images, personal, sent = await _events_of_a_team_job()
    added = [(group, event) for group, event in sent if event["type"] == "gallery.image_added"]
    ids = [str(image.pk) for image in images]
    assert added == [
        (user_gallery_group(owner.pk), {"type": "gallery.image_added", "image_ids": ids}),
        (team_gallery_group(team.pk), {"type": "gallery.image_added", "image_ids": ids}),
        (user_gallery_group(other.pk), {"type": "gallery.image_added", "image_ids": [str(personal[0].pk)]}),
    ]


@sync_to_async
def _move_and_revoke_events():
    owner = make_user(credits=50)
    team = team_services.team_create(user=owner, name="Moves")
    image = run_job(owner)[0]
    with capture_events() as sent:
        Image.objects.filter(pk=image.pk).update(team=team)
        image.team_id = team.pk
        events.image_moved_to_team(image=image)
        events.access_changed(user_id=owner.pk)
    return owner, team, image, sent


async def test_an_image_moved_into_a_team_is_announced_to_that_team_only_and_access_changes_to_the_user():
    owner, team, image, sent = await _move_and_revoke_events()
    assert sent == [
        (team_gallery_group(team.pk), {"type": "gallery.image_added", "image_ids": [str(image.pk)]}),
        (user_group(owner.pk), {"type": "access.changed"}),
    ]


async def test_a_gallery_page_listens_live_only_where_new_images_belong_at_the_top():
    unfiltered = {"words": [], "sampler": None, "oldest_first": False, "after": None}
    url = gallery_live_url(filters=unfiltered, here="/gallery/")
    assert url.startswith("/ws/gallery/?since=") and "here=%2Fgallery%2F" in url
    team_url = gallery_live_url(filters=unfiltered, here="/t/", team_id="0f0e")
    assert team_url.startswith("/ws/teams/0f0e/gallery/?since=")
    for changed in ({"words": ["cat"]}, {"oldest_first": True}, {"after": ("t", "id")}, {"sampler": "euler"}):
        assert gallery_live_url(filters={**unfiltered, **changed}, here="/gallery/") is None


# --- My images ---------------------------------------------------------------------------------------

async def test_the_owner_gets_each_new_tile_at_the_top_of_the_grid_and_nobody_else_does():
    owner, stranger = await sync_to_async(make_user)(credits=50), await sync_to_async(make_user)(credits=50)
    mine, connected, _ = await connect("/ws/gallery/?here=/gallery/", owner, csrf=True)
    theirs, stranger_connected, _ = await connect("/ws/gallery/", stranger)
    assert connected and stranger_connected

    images = await sync_to_async(run_job)(owner, num_images=2)
    html = await mine.receive_from(timeout=5)
    assert 'hx-swap-oob="afterbegin:#gallery-grid"' in html
    assert tile_ids(html) == [str(images[1].pk), str(images[0].pk)]  # newest first, as the grid is
    assert 'name="next" value="/gallery/"' in html
    token = re.search(r'name="csrfmiddlewaretoken" value="([A-Za-z0-9]+)"', html).group(1)
    assert token != CSRF_SECRET and _unmask_cipher_token(token) == CSRF_SECRET  # masked, like a page's
    assert await theirs.receive_nothing(timeout=0.5)
    await mine.disconnect()
    await theirs.disconnect()


async def test_a_reconnecting_page_catches_up_on_what_arrived_since_it_was_rendered():
    owner = await sync_to_async(make_user)(credits=50)
    images = await sync_to_async(run_job)(owner)
    rendered_at = int(time.time())
    page, connected, _ = await connect(f"/ws/gallery/?since={rendered_at}", owner)
    assert connected
    assert tile_ids(await page.receive_from(timeout=5)) == [str(images[0].pk)]
    await page.disconnect()

    quiet, connected, _ = await connect("/ws/gallery/?since=bogus", owner)
    assert connected and await quiet.receive_nothing(timeout=0.5)
    await quiet.disconnect()


async def test_an_event_naming_images_the_user_may_not_see_sends_nothing():
    owner, stranger = await sync_to_async(make_user)(credits=50), await sync_to_async(make_user)(credits=50)
    foreign = (await sync_to_async(run_job)(stranger))[0]
    page, connected, _ = await connect("/ws/gallery/", owner)
    assert connected
    await get_channel_layer().group_send(user_gallery_group(owner.pk),
                                         {"type": "gallery.image_added", "image_ids": [str(foreign.pk)]})
    assert await page.receive_nothing(timeout=0.5)
    await page.disconnect()


async def test_create_recent_grid_gets_the_finished_jobs_card():
    owner = await sync_to_async(make_user)(credits=50)
    recent, connected, _ = await connect("/ws/recent/", owner)
    assert connected
    images = await sync_to_async(run_job)(owner, num_images=2)
    html = await recent.receive_from(timeout=5)
    assert 'hx-swap-oob="afterbegin:#recent-jobs"' in html and "data-live-replace" in html
    assert html.count('class="recent-card"') == 1 and f'id="recent-job-{images[0].job_id}"' in html
    assert f"/images/{images[0].pk}/thumbnail.webp" in html  # the job's first image
    await recent.disconnect()


async def test_anonymous_sockets_are_refused():
    for path in ("/ws/gallery/", "/ws/recent/"):
        communicator, connected, code = await connect(path)
        await communicator.disconnect()
        assert not connected


# --- Team galleries ----------------------------------------------------------------------------------

async def test_a_non_member_and_an_unknown_team_are_refused_with_4404():
    owner, stranger = await sync_to_async(make_user)(credits=50), await sync_to_async(make_user)()
    team = await make_team(owner)
    for path in (team_gallery(team), "/ws/teams/00000000-0000-0000-0000-000000000000/gallery/"):
        communicator, connected, code = await connect(path, stranger)
        await communicator.disconnect()
        assert not connected and code == 4404


async def test_every_member_gets_a_team_tile_rendered_for_them_and_personal_images_stay_out():
    owner, viewer = await sync_to_async(make_user)(credits=50), await sync_to_async(make_user)()
    team = await make_team(owner)
    await add_member(team, viewer, TeamRole.VIEWER)
    watching, connected, _ = await connect(team_gallery(team), viewer)
    assert connected

    personal = await sync_to_async(run_job)(owner)
    assert await watching.receive_nothing(timeout=0.5), "an image outside the team reached its gallery"
    images = await sync_to_async(run_job)(owner, team=team)
    html = await watching.receive_from(timeout=5)
    assert tile_ids(html) == [str(images[0].pk)] and str(personal[0].pk) not in html
    assert owner.email in html and "data-delete-image" not in html  # the viewer's tile: who made it, no delete
    await watching.disconnect()


# --- Revocation --------------------------------------------------------------------------------------

async def test_a_removed_member_has_open_job_and_gallery_sockets_closed_but_keeps_their_own():
    owner, member = await sync_to_async(make_user)(credits=50), await sync_to_async(make_user)(credits=50)
    team = await make_team(owner)
    await add_member(team, member)
    team_job = await sync_to_async(submit_job)(owner, team=team)

    job_socket, connected, _ = await connect(f"/ws/jobs/{team_job.pk}/", member)
    assert connected
    await job_socket.receive_from(timeout=5)  # the job's current state
    gallery_socket, connected, _ = await connect(team_gallery(team), member)
    assert connected
    own_gallery, connected, _ = await connect("/ws/gallery/", member)
    assert connected

    await sync_to_async(team_services.team_member_remove)(team=team, actor=owner, user_id=member.pk)
    assert await job_socket.receive_output(timeout=5) == CLOSED
    assert await gallery_socket.receive_output(timeout=5) == CLOSED
    assert await own_gallery.receive_nothing(timeout=0.5)  # nothing it showed was the team's

    again, connected, code = await connect(team_gallery(team), member)
    await again.disconnect()
    assert not connected and code == 4404
    await sync_to_async(services.job_cancel)(job=team_job)  # so the worker's next claim is the member's job
    mine = await sync_to_async(run_job)(member)
    assert tile_ids(await own_gallery.receive_from(timeout=5)) == [str(mine[0].pk)]
    await own_gallery.disconnect()


async def test_a_member_demoted_to_viewer_keeps_watching_the_team_gallery():
    owner, member = await sync_to_async(make_user)(credits=50), await sync_to_async(make_user)(credits=50)
    team = await make_team(owner)
    await add_member(team, member)
    watching, connected, _ = await connect(team_gallery(team), member)
    assert connected
    await sync_to_async(team_services.team_member_change_role)(team=team, actor=owner, user_id=member.pk,
                                                                role=TeamRole.VIEWER)
    assert await watching.receive_nothing(timeout=0.5)  # re-checked: a viewer may still look
    images = await sync_to_async(run_job)(owner, team=team)
    assert tile_ids(await watching.receive_from(timeout=5)) == [str(images[0].pk)]
    await watching.disconnect()


async def test_a_suspended_user_has_their_sockets_closed_on_an_access_change():
    owner = await sync_to_async(make_user)(credits=50)
    job = await sync_to_async(submit_job)(owner)
    job_socket, connected, _ = await connect(f"/ws/jobs/{job.pk}/", owner)
    assert connected
    await job_socket.receive_from(timeout=5)
    gallery_socket, connected, _ = await connect("/ws/gallery/", owner)
    assert connected

    @sync_to_async
    def suspend():
        type(owner).objects.filter(pk=owner.pk).update(is_active=False)
        events.send_event(user_group(owner.pk), {"type": "access.changed"})

    await suspend()
    assert await job_socket.receive_output(timeout=5) == CLOSED
    assert await gallery_socket.receive_output(timeout=5) == CLOSED


async def test_an_access_change_alone_closes_nothing_still_allowed():
    owner = await sync_to_async(make_user)(credits=50)
    job = await sync_to_async(submit_job)(owner)
    job_socket, connected, _ = await connect(f"/ws/jobs/{job.pk}/", owner)
    assert connected
    await job_socket.receive_from(timeout=5)
    await sync_to_async(events.send_event)(user_group(owner.pk), {"type": "access.changed"})
    assert await job_socket.receive_nothing(timeout=0.5)
    assert await sync_to_async(Job.objects.filter(pk=job.pk).exists)()
    await job_socket.disconnect()


# --- Pages: which ones listen ---------------------------------------------------------------------------

@sync_to_async
def _pages(user, team):
    client = Client()
    client.force_login(user)
    paths = ["/gallery/", "/gallery/?q=cat", "/gallery/?sort=oldest", reverse("generation:team_gallery", args=[team.pk]),
             reverse("generation:create")]
    return {path: client.get(path).content.decode() for path in paths}


async def test_unfiltered_galleries_and_create_listen_and_a_search_does_not():
    user = await sync_to_async(make_user)(credits=50)
    team = await make_team(user)
    pages = await _pages(user, team)
    assert re.search(r'id="gallery-grid"[^>]*ws-connect="/ws/gallery/\?since=\d+&amp;here=%2Fgallery%2F"', pages["/gallery/"])
    team_page = pages[reverse("generation:team_gallery", args=[team.pk])]
    assert f'ws-connect="/ws/teams/{team.pk}/gallery/?since=' in team_page
    assert "ws-connect" not in pages["/gallery/?q=cat"].split('id="gallery-grid"')[1].split(">")[0]
    assert "ws-connect" not in pages["/gallery/?sort=oldest"].split('id="gallery-grid"')[1].split(">")[0]
    assert re.search(r'id="recent-jobs"[^>]*ws-connect="/ws/recent/\?since=\d+"', pages[reverse("generation:create")])
