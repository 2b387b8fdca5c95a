"""Public links: who may make and revoke them, what the public page and its files show (and only
while the link lives), Open Graph, noindex, headers, and the owner's share panel."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image as PILImage

from accounts.models import Membership
from generation import services
from generation.engine.pngmeta import read_parameters
from generation.models import Image, ShareLink
from generation.services import sharing
from generation.share_selectors import SHARE_PAGE_SIZE
from tests.factories import make_user
from tests.generation.sharing_support import make_collection, make_image, make_team

pytestmark = [pytest.mark.django_db]

PROMPT = "a lighthouse in a storm"


def share(user, **kwargs) -> ShareLink:
    return sharing.share_link_create(user=user, **kwargs)


def page_url(link: ShareLink) -> str:
    return reverse("generation:share", args=[link.token])


def file_url(link: ShareLink, image: Image, kind: str = "file") -> str:
    return reverse(f"generation:share_image_{kind}", args=[link.token, image.pk])


def meta(html: str, key: str) -> str | None:
    match = re.search(rf'<meta (?:property|name)="{re.escape(key)}" content="([^"]*)"', html)
    return match.group(1) if match else None


@pytest.fixture
def owner():
    return make_user()


@pytest.fixture
def anonymous():
    return Client()


# --- Making and revoking (services) --------------------------------------------------------------------

def test_a_link_token_has_256_random_bits_and_is_url_safe(owner):
    image = make_image(owner)
    tokens = {share(owner, image=image).token for _ in range(20)}
    assert len(tokens) == 20
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", token) for token in tokens)  # 32 bytes: 256 bits


def test_a_link_hides_the_parameters_and_never_expires_unless_asked(owner):
    link = share(owner, image=make_image(owner))
    assert not link.show_parameters
    assert (link.expires_at, link.revoked_at, link.hidden_at) == (None, None, None)
    assert link.created_by == owner


def test_a_link_needs_exactly_one_target_and_a_future_expiry(owner):
    image = make_image(owner)
    collection = make_collection(user=owner, images=[image])
    with pytest.raises(sharing.ShareLinkInvalid):
        share(owner)
    with pytest.raises(sharing.ShareLinkInvalid):
        share(owner, image=image, collection=collection)
    with pytest.raises(sharing.ShareLinkInvalid):
        share(owner, image=image, expires_at=timezone.now() - timedelta(seconds=1))
    assert not ShareLink.objects.exists()


def test_only_the_owner_or_a_team_admin_may_share(owner):
    other, member, admin = make_user(), make_user(), make_user()
    team = make_team(owner, member=member, admin=admin)
    mine, team_image = make_image(owner), make_image(member, team=team)
    with pytest.raises(sharing.ShareNotAllowed):
        share(other, image=mine)
    with pytest.raises(sharing.ShareNotAllowed):
        share(other, image=team_image)
    assert share(member, image=team_image).created_by == member  # the creator
    assert share(admin, image=team_image).created_by == admin  # a team admin
    team_collection = make_collection(team=team, images=[team_image])
    with pytest.raises(sharing.ShareNotAllowed):
        share(member, collection=team_collection)
    assert share(admin, collection=team_collection)


def test_revoke_by_its_maker_or_a_team_admin_only(owner):
    member, admin, other = make_user(), make_user(), make_user()
    team = make_team(owner, member=member, admin=admin)
    link = share(member, image=make_image(member, team=team))
    with pytest.raises(sharing.ShareNotAllowed):
        sharing.share_link_revoke(user=other, link=link)
    sharing.share_link_revoke(user=admin, link=link)
    link.refresh_from_db()
    first = link.revoked_at
    assert first is not None
    sharing.share_link_revoke(user=member, link=link)  # twice: nothing changes
    link.refresh_from_db()
    assert link.revoked_at == first


# --- The public page -----------------------------------------------------------------------------------

def test_anyone_opens_an_image_link_without_an_account(owner, anonymous):
    image = make_image(owner)
    link = share(owner, image=image)
    response = anonymous.get(page_url(link))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'src="{file_url(link, image)}"' in html
    assert "Report this image" in html


def test_the_public_page_is_noindex_keeps_its_url_to_itself_and_is_not_cached(owner, anonymous):
    link = share(owner, image=make_image(owner))
    response = anonymous.get(page_url(link))
    html = response.content.decode()
    assert meta(html, "robots") == "noindex, nofollow"
    assert response["X-Robots-Tag"] == "noindex, nofollow"
    assert response["Referrer-Policy"] == "same-origin"
    assert "no-store" in response["Cache-Control"]


def test_open_graph_tags_preview_the_link(owner, anonymous):
    image = make_image(owner)
    link = share(owner, image=image)
    html = anonymous.get(page_url(link)).content.decode()
    assert meta(html, "og:type") == "website"
    assert meta(html, "og:title") == "An image made with Studio"  # the prompt is not shown
    assert meta(html, "og:image") == f"http://testserver{file_url(link, image)}"  # absolute
    assert meta(html, "og:url") == f"http://testserver{page_url(link)}"
    assert meta(html, "og:image:width") == "64"
    assert meta(html, "twitter:card") == "summary_large_image"
    shown = share(owner, image=image, show_parameters=True)
    assert meta(anonymous.get(page_url(shown)).content.decode(), "og:title") == PROMPT


def test_prompt_and_parameters_only_when_the_sharer_chose_so(owner, anonymous):
    image = make_image(owner)
    hidden, shown = share(owner, image=image), share(owner, image=image, show_parameters=True)
    hidden_html = anonymous.get(page_url(hidden)).content.decode()
    assert PROMPT not in hidden_html and "blurry" not in hidden_html and "1234" not in hidden_html
    assert "data-share-parameters" not in hidden_html
    shown_html = anonymous.get(page_url(shown)).content.decode()
    assert "data-share-parameters" in shown_html
    assert PROMPT in shown_html and "blurry" in shown_html and "1234" in shown_html


def test_files_of_a_link_carry_nosniff_noindex_and_no_caching(owner, anonymous):
    image = make_image(owner)
    link = share(owner, image=image)
    original = anonymous.get(file_url(link, image))
    assert original.status_code == 200 and original["Content-Type"] == "image/png"
    thumbnail = anonymous.get(file_url(link, image, "thumbnail"))
    assert thumbnail.status_code == 200 and thumbnail["Content-Type"] == "image/webp"
    for response in (original, thumbnail):
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Robots-Tag"] == "noindex, nofollow"
        assert response["Cache-Control"] == "no-store"
    download = anonymous.get(file_url(link, image) + "?download=1")
    assert download["Content-Disposition"].startswith("attachment;")


def test_the_png_of_a_link_without_parameters_has_no_prompt_in_it(owner, anonymous):
    image = make_image(owner)
    with default_storage.open(image.file.name, "rb") as handle:
        stored = handle.read()
    assert PROMPT in read_parameters(stored)
    hidden = b"".join(anonymous.get(file_url(share(owner, image=image), image)).streaming_content)
    assert read_parameters(hidden) is None and PROMPT.encode() not in hidden
    assert PILImage.open(io.BytesIO(hidden)).getpixel((3, 3)) == (200, 60, 40)  # the same picture
    shown_link = share(owner, image=image, show_parameters=True)
    shown = b"".join(anonymous.get(file_url(shown_link, image)).streaming_content)
    assert shown == stored


def test_private_files_also_carry_nosniff(owner):
    client = Client()
    client.force_login(owner)
    image = make_image(owner)
    response = client.get(reverse("generation:image_file", args=[image.pk]))
    assert response.status_code == 200 and response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"] == "private, max-age=86400"


# --- Every way a link stops working is a 404 ---------------------------------------------------------

def assert_gone(client, link, image):
    for url in (page_url(link), file_url(link, image), file_url(link, image, "thumbnail"),
                reverse("generation:share_report", args=[link.token])):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response["X-Robots-Tag"] == "noindex, nofollow"
    assert "This link does not work" in client.get(page_url(link)).content.decode()


@pytest.mark.database
def test_unknown_and_overlong_tokens_are_404(anonymous, owner):
    image = make_image(owner)
    for token in ("nope", "x" * 43, "x" * 300, "bad\x00token", "ünïcode", "a.b"):
        assert anonymous.get(reverse("generation:share", args=[token])).status_code == 404
        file = reverse("generation:share_image_file", args=[token, image.pk])
        assert anonymous.get(file).status_code == 404


def test_a_revoked_link_is_404_at_once(owner, anonymous):
    image = make_image(owner)
    link = share(owner, image=image)
    assert anonymous.get(page_url(link)).status_code == 200
    sharing.share_link_revoke(user=owner, link=link)
    assert_gone(anonymous, link, image)


def test_an_expired_link_is_404(owner, anonymous):
    image = make_image(owner)
    link = share(owner, image=image, expires_at=timezone.now() + timedelta(hours=1))
    assert anonymous.get(page_url(link)).status_code == 200
    ShareLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_gone(anonymous, link, image)


def test_a_link_hidden_by_staff_is_404(owner, anonymous):
    image = make_image(owner)
    link = share(owner, image=image)
    ShareLink.objects.filter(pk=link.pk).update(hidden_at=timezone.now())
    assert_gone(anonymous, link, image)


def test_a_deleted_image_takes_its_links_with_it(owner, anonymous):
    image = make_image(owner)
    link = share(owner, image=image)
    services.image_delete(image=image)
    assert_gone(anonymous, link, image)


def test_a_suspended_makers_links_are_404(owner, anonymous):
    image = make_image(owner)
    link = share(owner, image=image)
    owner.is_active = False
    owner.save(update_fields=["is_active"])
    assert_gone(anonymous, link, image)


def test_a_team_admin_removed_from_the_team_loses_the_links_they_made(owner, anonymous):
    admin, member = make_user(), make_user()
    team = make_team(owner, admin=admin, member=member)
    image = make_image(member, team=team)
    link = share(admin, image=image)
    assert anonymous.get(page_url(link)).status_code == 200
    Membership.objects.filter(team=team, user=admin).update(role="member")  # demoted: may no longer share
    assert_gone(anonymous, link, image)


def test_a_link_serves_only_its_own_image(owner, anonymous):
    shared, private = make_image(owner), make_image(owner, prompt="private")
    link = share(owner, image=shared)
    assert anonymous.get(file_url(link, private)).status_code == 404
    assert anonymous.get(file_url(link, private, "thumbnail")).status_code == 404


@pytest.mark.database
def test_a_bad_page_cursor_is_a_400_not_a_500(owner, anonymous):
    link = share(owner, collection=make_collection(user=owner, images=[make_image(owner)]))
    assert anonymous.get(page_url(link) + "?after=garbage").status_code == 400


def test_only_get_and_head_on_the_public_page_and_files(owner, anonymous):
    image = make_image(owner)
    link = share(owner, image=image)
    assert anonymous.post(page_url(link)).status_code == 405
    assert anonymous.head(page_url(link)).status_code == 200  # link-preview fetchers ask HEAD first
    assert anonymous.head(file_url(link, image))["Content-Type"] == "image/png"


# --- Collections: the owner's visibility, never more ------------------------------------------------

def test_a_collection_link_shows_what_its_maker_can_still_see(owner, anonymous):
    teammate = make_user()
    team = make_team(teammate, member=owner)
    mine, theirs = make_image(owner, prompt="mine"), make_image(teammate, prompt="theirs", team=team)
    outsider = make_image(make_user(), prompt="outsider")
    collection = make_collection(user=owner, images=[mine, theirs])
    link = share(owner, collection=collection, show_parameters=True)

    html = anonymous.get(page_url(link)).content.decode()
    assert meta(html, "og:title") == "Storms · a collection on Studio"
    assert html.count("data-share-tile") == 2
    assert file_url(link, mine, "thumbnail") in html and file_url(link, theirs, "thumbnail") in html
    assert anonymous.get(file_url(link, theirs)).status_code == 200
    assert anonymous.get(file_url(link, outsider)).status_code == 404

    Membership.objects.filter(team=team, user=owner).delete()  # the maker left the team
    html = anonymous.get(page_url(link)).content.decode()
    assert html.count("data-share-tile") == 1 and file_url(link, theirs, "thumbnail") not in html
    assert anonymous.get(file_url(link, theirs)).status_code == 404
    assert anonymous.get(file_url(link, mine)).status_code == 200


def test_a_collection_link_hides_prompts_unless_chosen(owner, anonymous):
    collection = make_collection(user=owner, images=[make_image(owner)])
    assert PROMPT not in anonymous.get(page_url(share(owner, collection=collection))).content.decode()
    shown = share(owner, collection=collection, show_parameters=True)
    assert PROMPT in anonymous.get(page_url(shown)).content.decode()


@pytest.mark.database
def test_a_large_collection_pages_with_a_constant_number_of_queries(owner, anonymous,
                                                                    django_assert_num_queries):
    images = [make_image(owner, prompt=f"storm {n}") for n in range(SHARE_PAGE_SIZE + 5)]
    link = share(owner, collection=make_collection(user=owner, images=images))
    first = anonymous.get(page_url(link)).content.decode()
    assert first.count("data-share-tile") == SHARE_PAGE_SIZE
    more = re.search(r'href="([^"]+\?after=[^"]+)"', first).group(1)
    second = anonymous.get(more.replace("&amp;", "&")).content.decode()
    assert second.count("data-share-tile") == 5
    # The link with its maker (1) and one page of images (1), whatever the page holds.
    with django_assert_num_queries(2):
        anonymous.get(page_url(link))
    with django_assert_num_queries(2):
        anonymous.get(more.replace("&amp;", "&"))


# --- The owner's share panel ------------------------------------------------------------------------------

@pytest.fixture
def owner_client(owner):
    client = Client()
    client.force_login(owner)
    client.user = owner
    return client


def test_the_image_page_makes_a_link_with_options_and_lists_it(owner_client):
    image = make_image(owner_client.user)
    detail = reverse("generation:image_detail", args=[image.pk])
    page = owner_client.get(detail).content.decode()
    assert "Make a public link" in page and "data-share-link" not in page

    response = owner_client.post(reverse("generation:image_share_create", args=[image.pk]),
                                 {"show_parameters": "on", "expires": "7d", "next": detail})
    assert response.status_code == 302 and response["Location"] == detail
    link = ShareLink.objects.get()
    assert link.show_parameters is True and link.image == image
    assert timedelta(days=6, hours=23) < link.expires_at - timezone.now() <= timedelta(days=7)

    page = owner_client.get(detail).content.decode()
    assert f'value="http://testserver{page_url(link)}"' in page  # the full URL, to copy
    assert reverse("generation:share_link_revoke", args=[link.pk]) in page
    assert "Make another link" in page


def test_htmx_make_and_revoke_answer_the_panel(owner_client):
    image = make_image(owner_client.user)
    create = reverse("generation:image_share_create", args=[image.pk])
    response = owner_client.post(create, {"expires": "never"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 201
    link = ShareLink.objects.get()
    html = response.content.decode()
    assert html.lstrip().startswith(f'<section class="share-panel stack" id="share-image-{image.pk}"')
    assert page_url(link) in html and "<html" not in html

    revoke = reverse("generation:share_link_revoke", args=[link.pk])
    response = owner_client.post(revoke, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and page_url(link) not in response.content.decode()
    link.refresh_from_db()
    assert link.revoked_at is not None


def test_a_plain_revoke_redirects_back(owner_client):
    image = make_image(owner_client.user)
    link = share(owner_client.user, image=image)
    response = owner_client.post(reverse("generation:share_link_revoke", args=[link.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("generation:image_detail", args=[image.pk])
    assert Client().get(page_url(link)).status_code == 404


def test_a_bad_expiry_is_a_400_and_makes_no_link(owner_client):
    image = make_image(owner_client.user)
    url = reverse("generation:image_share_create", args=[image.pk])
    assert owner_client.post(url, {"expires": "forever"}).status_code == 400
    response = owner_client.post(url, {"expires": "forever"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    assert not ShareLink.objects.exists()


def test_sharing_someone_elses_image_is_404_and_a_viewer_gets_403(owner_client):
    stranger = make_user()
    url = reverse("generation:image_share_create", args=[make_image(stranger).pk])
    assert owner_client.post(url, {"expires": "never"}).status_code == 404
    team = make_team(stranger, viewer=owner_client.user)
    team_image = make_image(stranger, team=team)
    url = reverse("generation:image_share_create", args=[team_image.pk])
    assert owner_client.post(url, {"expires": "never"}).status_code == 403
    assert not ShareLink.objects.exists()


def test_revoking_a_link_one_cannot_see_is_404_and_one_cannot_revoke_is_403(owner_client):
    stranger = make_user()
    foreign = share(stranger, image=make_image(stranger))
    assert owner_client.post(reverse("generation:share_link_revoke", args=[foreign.pk])).status_code == 404
    team = make_team(stranger, member=owner_client.user)
    teams = share(stranger, image=make_image(stranger, team=team))  # the owner shared a team image
    assert owner_client.post(reverse("generation:share_link_revoke", args=[teams.pk])).status_code == 403
    assert not ShareLink.objects.filter(revoked_at__isnull=False).exists()


def test_the_share_panel_lists_only_links_one_may_revoke(owner_client):
    other = make_user()
    team = make_team(other, member=owner_client.user)
    image = make_image(owner_client.user, team=team)
    mine = share(owner_client.user, image=image)
    admins = share(other, image=image)  # the team's owner shared it too
    page = owner_client.get(reverse("generation:image_detail", args=[image.pk])).content.decode()
    assert page_url(mine) in page and page_url(admins) not in page


def test_anonymous_cannot_make_or_revoke(owner, anonymous):
    image = make_image(owner)
    link = share(owner, image=image)
    response = anonymous.post(reverse("generation:image_share_create", args=[image.pk]), {"expires": "never"})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    anonymous.post(reverse("generation:share_link_revoke", args=[link.pk]))
    link.refresh_from_db()
    assert ShareLink.objects.count() == 1 and link.revoked_at is None


def test_the_collection_share_slot_makes_and_lists_links(owner_client):
    from django.template import engines
    from django.test import RequestFactory

    collection = make_collection(user=owner_client.user, images=[make_image(owner_client.user)])
    url = reverse("generation:collection_share_create", args=[collection.pk])
    response = owner_client.post(url, {"expires": "1d"})
    assert response.status_code == 302
    assert response["Location"] == reverse("generation:collection_detail", args=[collection.pk])
    link = ShareLink.objects.get(collection=collection)

    request = RequestFactory().get("/collections/")
    request.user = owner_client.user
    html = engines["django"].from_string('{% include "generation/_collection_share.html" %}').render(
        {"collection": collection}, request)
    assert f"share-collection-{collection.pk}" in html and page_url(link) in html
    assert "expires" in html
