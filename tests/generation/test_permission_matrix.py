"""The permission matrix of issue #9: who may see and do what, one parametrized case per cell.

Roles x objects x actions, written as data (MATRIX below: one line per object and action, one
column per role), so a failing cell names itself: `member | team settings | edit`. Every cell
is a real request through the URLconf (the Django test client, or a WebsocketCommunicator on the
real Redis channel layer for the sockets). The HTTP cells share one scene (a class-scoped
fixture, rolled back at the end; each cell in its own savepoint); the socket cells need
committed rows, so each builds its people and job in a transactional test.

What the answers mean:
  200 / 302   allowed (302: a form post that did its work and redirects; never to the login page);
              for every action the change is checked in the database too: made when allowed,
              not made when refused
  LOGIN       a redirect to the login page (an anonymous visitor on a page that needs an account)
  403         an action on something the user can see but may not do (team viewers and members)
  404         a forbidden read, and any action on something the user may not see
  400         sharing one's own image into a team one may not save into (BAD_CHOICE below)
  ACCEPT / 4404  a websocket opens, or is closed with 4404 (the HTTP 404 of sockets)

The roles, all around one team T and one image made into T's gallery by a member ("image owner"):
the team's owner, an admin, another member, a viewer, a member removed through the service, a
signed-in user outside the team ("other user"), one whose email is not verified, staff (no
special reading rights: private work is private from staff too; staff act through the report
queue), an anonymous visitor, and a share-link holder: an anonymous visitor who holds public
links to the team image and to a team collection, so for the reads of those objects they use
what the link opens (the link's page and its file URLs), and for everything else they are
anonymous. The "(private)" objects are the image owner's own image and collection, in no team.

Actions per object (what "edit", "delete", "share" are there):
  image page        edit = favourite; delete = delete (confirmed); share = make a public link
  original file, thumbnail: view only (they follow the image)
  collection        edit = rename; delete = delete; share = make a public link
  team gallery      edit = share one's own image into it; delete = take the team image out of it
  team settings     view/edit = the settings page and rename; delete = remove a member; share = invite
  team wallet       view = the credits page; edit = set a member's cap; delete = clear it;
                    share = move credits from one's own wallet into the team's
  job page          view; delete = cancel (the job is queued)
  job websocket     view = connect to /ws/jobs/<id>/ (the job's state arrives first)
  team gallery websocket: view = connect to /ws/teams/<id>/gallery/ (beyond the issue's list)
  share link        view = open the public page; delete = revoke; a revoked, an expired and a
                    hidden (by staff) link: view = 404 for everyone
  zip download      view = the bulk zip of the image
Cells that do not exist in the app (editing a file, sharing a job, ...) are not in the matrix.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from allauth.account.models import EmailAddress
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.db import transaction
from django.shortcuts import resolve_url
from django.test import Client
from django.utils import timezone

from accounts import services as accounts
from accounts.models import Invitation, Membership, Team
from billing.models import EntryKind, LedgerEntry, MemberCap
from generation import services
from generation.models import Collection, Image, Job, JobState, ShareLink
from generation.services import sharing
from tests.factories import give_credits, submit_job
from tests.generation.sharing_support import make_collection, make_image

# --- The answers and the roles -------------------------------------------------------------------

OK, DONE, FORBIDDEN, NOT_FOUND, LOGIN = 200, 302, 403, 404, "login"
# The team to share into is a choice among the teams the user may save into (the form offers
# only those): any other team, one they only view or one they cannot see, is an invalid choice,
# a 400 with "Choose one of your teams." that tells nothing about the team (bulk_views.image_team).
BAD_CHOICE = 400
ACCEPT, CLOSED = "accept", 4404

ROLES = (
    "image owner", "team owner", "team admin", "member", "viewer", "removed member", "other user",
    "unverified user", "anonymous", "share-link holder", "staff",
)
SIGNED_OUT = {"anonymous", "share-link holder"}

# One line per (object, action); the columns follow ROLES:
#   image owner, team owner, team admin, member, viewer, removed member, other user,
#   unverified user, anonymous, share-link holder, staff
TEAM_READ = (OK, OK, OK, OK, OK, NOT_FOUND, NOT_FOUND, NOT_FOUND, LOGIN, LOGIN, NOT_FOUND)
ADMINS_ONLY = (FORBIDDEN, DONE, DONE, FORBIDDEN, FORBIDDEN, NOT_FOUND, NOT_FOUND, NOT_FOUND, LOGIN, LOGIN,
               NOT_FOUND)
OWNER_OR_ADMINS = (DONE, DONE, DONE, FORBIDDEN, FORBIDDEN, NOT_FOUND, NOT_FOUND, NOT_FOUND, LOGIN, LOGIN,
                   NOT_FOUND)
PRIVATE_READ = (OK, NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND, LOGIN, LOGIN,
                NOT_FOUND)
PRIVATE_ACTION = (DONE, NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND, LOGIN, LOGIN,
                  NOT_FOUND)
# The link holder reads the team image and the team collection through their links.
LINKED_READ = TEAM_READ[:9] + (OK,) + TEAM_READ[10:]
# ... and a private image's files through the same link's URLs, which do not open them.
PRIVATE_FILE_READ = PRIVATE_READ[:9] + (NOT_FOUND,) + PRIVATE_READ[10:]

MATRIX = {
    ("image page", "view"): LINKED_READ,
    ("image page", "edit"): (DONE, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, NOT_FOUND, NOT_FOUND, NOT_FOUND,
                             LOGIN, LOGIN, NOT_FOUND),
    ("image page", "delete"): OWNER_OR_ADMINS,
    ("image page", "share"): OWNER_OR_ADMINS,
    ("original file", "view"): LINKED_READ,
    ("thumbnail", "view"): LINKED_READ,
    ("image page (private)", "view"): PRIVATE_READ,
    ("image page (private)", "edit"): PRIVATE_ACTION,
    ("image page (private)", "delete"): PRIVATE_ACTION,
    ("image page (private)", "share"): PRIVATE_ACTION,
    ("original file (private)", "view"): PRIVATE_FILE_READ,
    ("thumbnail (private)", "view"): PRIVATE_FILE_READ,
    ("collection", "view"): LINKED_READ,
    ("collection", "edit"): (DONE, DONE, DONE, DONE, FORBIDDEN, NOT_FOUND, NOT_FOUND, NOT_FOUND, LOGIN, LOGIN,
                             NOT_FOUND),
    ("collection", "delete"): ADMINS_ONLY,
    ("collection", "share"): ADMINS_ONLY,
    ("collection (private)", "view"): PRIVATE_READ,
    ("collection (private)", "edit"): PRIVATE_ACTION,
    ("collection (private)", "delete"): PRIVATE_ACTION,
    ("collection (private)", "share"): PRIVATE_ACTION,
    ("team gallery", "view"): TEAM_READ,
    ("team gallery", "edit"): (DONE, DONE, DONE, DONE, BAD_CHOICE, BAD_CHOICE, BAD_CHOICE, BAD_CHOICE, LOGIN,
                               LOGIN, BAD_CHOICE),
    ("team gallery", "delete"): OWNER_OR_ADMINS,
    ("team settings", "view"): (FORBIDDEN, OK, OK, FORBIDDEN, FORBIDDEN, NOT_FOUND, NOT_FOUND, NOT_FOUND, LOGIN,
                                LOGIN, NOT_FOUND),
    ("team settings", "edit"): ADMINS_ONLY,
    ("team settings", "delete"): ADMINS_ONLY,
    ("team settings", "share"): ADMINS_ONLY,
    ("team wallet", "view"): TEAM_READ,
    ("team wallet", "edit"): ADMINS_ONLY,
    ("team wallet", "delete"): ADMINS_ONLY,
    ("team wallet", "share"): ADMINS_ONLY,
    ("job page", "view"): TEAM_READ,
    ("job page", "delete"): OWNER_OR_ADMINS,
    ("job websocket", "view"): (ACCEPT, ACCEPT, ACCEPT, ACCEPT, ACCEPT, CLOSED, CLOSED, CLOSED, CLOSED, CLOSED,
                                CLOSED),
    ("team gallery websocket", "view"): (ACCEPT, ACCEPT, ACCEPT, ACCEPT, ACCEPT, CLOSED, CLOSED, CLOSED, CLOSED,
                                         CLOSED, CLOSED),
    ("share link", "view"): (OK,) * len(ROLES),
    ("share link", "delete"): OWNER_OR_ADMINS,
    ("share link (revoked)", "view"): (NOT_FOUND,) * len(ROLES),
    ("share link (expired)", "view"): (NOT_FOUND,) * len(ROLES),
    ("share link (hidden by staff)", "view"): (NOT_FOUND,) * len(ROLES),
    ("zip download", "view"): TEAM_READ,
    ("zip download (private)", "view"): PRIVATE_READ,
}


@dataclass(frozen=True)
class Cell:
    role: str
    object: str
    action: str
    expected: object

    @property
    def id(self) -> str:
        return f"{self.role} | {self.object} | {self.action}"


CELLS = [
    Cell(role, obj, action, expected)
    for (obj, action), row in MATRIX.items()
    for role, expected in zip(ROLES, row, strict=True)
]
SOCKETS = {"job websocket", "team gallery websocket"}
HTTP_CELLS = [cell for cell in CELLS if cell.object not in SOCKETS]
SOCKET_CELLS = [cell for cell in CELLS if cell.object in SOCKETS]


# --- The scene -----------------------------------------------------------------------------------

@dataclass
class Scene:
    users: dict  # role -> user (no entry for the signed-out roles)
    own_images: dict  # role -> an image of that user's own, in no team
    team: object
    target: object  # a member whose removal and cap the admins' cells try
    image: object  # in the team gallery, made by the image owner
    private_image: object
    collection: object  # the team's, holding the team image
    private_collection: object
    job: object  # queued, into the team gallery, by the image owner
    image_link: object
    collection_link: object
    revoked_link: object
    gone_links: dict  # "expired" and "hidden by staff" -> a link to the team image in that state


def _user(*, staff: bool = False, verified: bool = True):
    """A user signed in by session only (no password: no slow hashing), with their email address
    verified or not."""
    email = f"matrix-{uuid.uuid4().hex[:12]}@example.com"
    user = get_user_model().objects.create_user(username=email, email=email, is_staff=staff)
    EmailAddress.objects.create(user=user, email=email, verified=verified, primary=True)
    return user


def _join(team, owner, user, role: str) -> None:
    """Into the team the real way: an invitation from the owner, accepted by a verified user."""
    invitation = accounts.invitation_create(team=team, actor=owner, email=user.email, role=role,
                                            link_for=lambda token: f"/invitations/{token}/")
    accounts.invitation_accept(invitation=invitation, user=user)


def build_people() -> tuple[dict, object, object]:
    """The users of every role, team T with its members (one removed again) and the target."""
    users = {
        role: _user(staff=role == "staff", verified=role != "unverified user")
        for role in ROLES if role not in SIGNED_OUT
    }
    owner = users["team owner"]
    team = services.team_create(user=owner, name="Matrix team")
    target = _user()
    for role, team_role in [("image owner", "member"), ("team admin", "admin"), ("member", "member"),
                            ("viewer", "viewer"), ("removed member", "member")]:
        _join(team, owner, users[role], team_role)
    _join(team, owner, target, "member")
    MemberCap.objects.create(team=team, user=target, monthly_credits=80, set_by=owner)
    services.team_member_remove(team=team, actor=owner, user_id=users["removed member"].pk)
    for role in ("image owner", "team owner", "team admin"):
        give_credits(users[role], 100)
    return users, team, target


def build_scene() -> Scene:
    users, team, target = build_people()
    owner, creator = users["team owner"], users["image owner"]
    image = make_image(creator, team=team)
    private_image = make_image(creator, prompt="a private sketch")
    collection = make_collection(images=[image], team=team, name="Team board")
    collection.created_by = creator
    collection.save(update_fields=["created_by"])
    private_collection = make_collection(images=[private_image], user=creator, name="Mine")
    job = submit_job(creator, team=team)
    revoked_link = sharing.share_link_create(user=creator, image=image)
    sharing.share_link_revoke(user=creator, link=revoked_link)
    gone_links = {state: sharing.share_link_create(user=creator, image=image) for state in ("expired", "hidden")}
    ShareLink.objects.filter(pk=gone_links["expired"].pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    ShareLink.objects.filter(pk=gone_links["hidden"].pk).update(hidden_at=timezone.now())
    return Scene(
        users=users, own_images={role: make_image(user) for role, user in users.items()}, team=team, target=target,
        image=image, private_image=private_image, collection=collection, private_collection=private_collection,
        job=job, image_link=sharing.share_link_create(user=creator, image=image),
        collection_link=sharing.share_link_create(user=owner, collection=collection), revoked_link=revoked_link,
        gone_links=gone_links,
    )


@pytest.fixture(scope="class")
def scene(django_db_setup, django_db_blocker):
    """One scene for all the HTTP cells (one class), inside a transaction rolled back after them;
    each cell runs in its own savepoint (the `db` fixture), so a delete in one cell is gone in the
    next. Class-scoped, so the transaction is over before the websocket cells run."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield build_scene()
        transaction.set_rollback(True)


def _session_cookie(user) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"sessionid={session.session_key}"


# --- The request of each cell --------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    method: str
    path: str
    data: dict | None = None


def _get(path: str) -> Request:
    return Request("get", path)


def _post(path: str, **data) -> Request:
    return Request("post", path, data)


def _linked(s: Scene, role: str, private_path: str, image=None) -> str:
    """The path a role reads an image (or one of its files) at: the link holder through the image's
    public link, everyone else at the private URL."""
    if role != "share-link holder":
        return private_path
    token = s.image_link.token
    suffix = {"original.png": f"images/{image.pk}/original.png", "thumbnail.webp": f"images/{image.pk}/thumbnail.webp"}
    for ending, public in suffix.items():
        if private_path.endswith(ending):
            return f"/s/{token}/{public}"  # another image's files through this link: not opened
    return f"/s/{token}/" if image.pk == s.image_link.image_id else private_path


def _image_requests(image, *, private: bool) -> dict:
    tag = " (private)" if private else ""
    base = f"/images/{image.pk}"
    return {
        (f"image page{tag}", "view"): lambda s, r: _get(_linked(s, r, f"{base}/", image)),
        (f"image page{tag}", "edit"): lambda s, r: _post(f"{base}/favourite/", favourite="1"),
        (f"image page{tag}", "delete"): lambda s, r: _post(f"{base}/delete/", confirm="yes"),
        (f"image page{tag}", "share"): lambda s, r: _post(f"{base}/share/", expires="never"),
        (f"original file{tag}", "view"): lambda s, r: _get(_linked(s, r, f"{base}/original.png", image)),
        (f"thumbnail{tag}", "view"): lambda s, r: _get(_linked(s, r, f"{base}/thumbnail.webp", image)),
        (f"zip download{tag}", "view"): lambda s, r: _post("/gallery/bulk/", action="zip", images=str(image.pk)),
    }


def _collection_requests(collection, *, private: bool) -> dict:
    tag = " (private)" if private else ""
    base = f"/collections/{collection.pk}"

    def view(s: Scene, role: str) -> Request:
        if role == "share-link holder" and not private:
            return _get(f"/s/{s.collection_link.token}/")
        return _get(f"{base}/")

    return {
        (f"collection{tag}", "view"): view,
        (f"collection{tag}", "edit"): lambda s, r: _post(f"{base}/rename/", name="Renamed board"),
        (f"collection{tag}", "delete"): lambda s, r: _post(f"{base}/delete/", confirm="yes"),
        (f"collection{tag}", "share"): lambda s, r: _post(f"{base}/share/", expires="never"),
    }


def _team_requests(s: Scene) -> dict:
    team, target = f"/teams/{s.team.pk}", s.target.pk
    wallet = f"/billing/teams/{s.team.pk}"

    def own_image(scene: Scene, role: str):
        return scene.own_images.get(role, scene.private_image)  # signed out: someone's, not in T

    return {
        ("team gallery", "view"): lambda s, r: _get(f"{team}/gallery/"),
        ("team gallery", "edit"): lambda s, r: _post(f"/images/{own_image(s, r).pk}/team/", team=str(s.team.pk)),
        ("team gallery", "delete"): lambda s, r: _post(f"/images/{s.image.pk}/team/", remove="1"),
        ("team settings", "view"): lambda s, r: _get(f"{team}/settings/"),
        ("team settings", "edit"): lambda s, r: _post(f"{team}/settings/", name="Renamed team"),
        ("team settings", "delete"): lambda s, r: _post(f"{team}/members/{target}/remove/", confirm="yes"),
        ("team settings", "share"): lambda s, r: _post(f"{team}/invitations/", email="new@example.com",
                                                       role="member"),
        ("team wallet", "view"): lambda s, r: _get(f"{wallet}/"),
        ("team wallet", "edit"): lambda s, r: _post(f"{wallet}/members/{target}/cap/",
                                                    **{f"cap-{target}-monthly_credits": "50"}),
        ("team wallet", "delete"): lambda s, r: _post(f"{wallet}/members/{target}/cap/", clear="1"),
        ("team wallet", "share"): lambda s, r: _post(f"{wallet}/transfer/", amount="5", token=str(uuid.uuid4())),
        ("job page", "view"): lambda s, r: _get(f"/jobs/{s.job.pk}/"),
        ("job page", "delete"): lambda s, r: _post(f"/jobs/{s.job.pk}/cancel/"),
        ("share link", "view"): lambda s, r: _get(f"/s/{s.image_link.token}/"),
        ("share link", "delete"): lambda s, r: _post(f"/links/{s.image_link.pk}/revoke/"),
        ("share link (revoked)", "view"): lambda s, r: _get(f"/s/{s.revoked_link.token}/"),
        ("share link (expired)", "view"): lambda s, r: _get(f"/s/{s.gone_links['expired'].token}/"),
        ("share link (hidden by staff)", "view"): lambda s, r: _get(f"/s/{s.gone_links['hidden'].token}/"),
    }


# --- What each action changes, to check it happened exactly when allowed --------------------------

def _image_gone(image):
    return lambda s: not Image.objects.filter(pk=image.pk).exists()


def _new_link(s: Scene, **target) -> bool:
    """A link the scene did not make (the action made one)."""
    known = [s.image_link.pk, s.collection_link.pk, s.revoked_link.pk, *(link.pk for link in s.gone_links.values())]
    return ShareLink.objects.filter(**target).exclude(pk__in=known).exists()


def effects_for(s: Scene) -> dict:
    """(object, action) -> whether that action's change is in the database now."""
    def field(model, pk, name):
        return model.objects.filter(pk=pk).values_list(name, flat=True).first()

    team_images = {role: image.pk for role, image in s.own_images.items()}
    return {
        ("image page", "edit"): lambda s: field(Image, s.image.pk, "favourite") is True,
        ("image page", "delete"): _image_gone(s.image),
        ("image page", "share"): lambda s: _new_link(s, image=s.image),
        ("image page (private)", "edit"): lambda s: field(Image, s.private_image.pk, "favourite") is True,
        ("image page (private)", "delete"): _image_gone(s.private_image),
        ("image page (private)", "share"): lambda s: _new_link(s, image=s.private_image),
        ("collection", "edit"): lambda s: field(Collection, s.collection.pk, "name") == "Renamed board",
        ("collection", "delete"): lambda s: not Collection.objects.filter(pk=s.collection.pk).exists(),
        ("collection", "share"): lambda s: _new_link(s, collection=s.collection),
        ("collection (private)", "edit"): lambda s: field(Collection, s.private_collection.pk, "name") == "Renamed board",
        ("collection (private)", "delete"): lambda s: not Collection.objects.filter(pk=s.private_collection.pk).exists(),
        ("collection (private)", "share"): lambda s: _new_link(s, collection=s.private_collection),
        ("team gallery", "edit"): lambda s: Image.objects.filter(pk__in=team_images.values(), team=s.team).exists()
        or field(Image, s.private_image.pk, "team_id") == s.team.pk,
        ("team gallery", "delete"): lambda s: field(Image, s.image.pk, "team_id") is None,
        ("team settings", "edit"): lambda s: field(Team, s.team.pk, "name") == "Renamed team",
        ("team settings", "delete"): lambda s: not Membership.objects.filter(team=s.team, user=s.target).exists(),
        ("team settings", "share"): lambda s: Invitation.objects.filter(team=s.team, email="new@example.com").exists(),
        ("team wallet", "edit"): lambda s: MemberCap.objects.filter(team=s.team, user=s.target,
                                                                    monthly_credits=50).exists(),
        ("team wallet", "delete"): lambda s: not MemberCap.objects.filter(team=s.team, user=s.target).exists(),
        ("team wallet", "share"): lambda s: LedgerEntry.objects.filter(wallet__owner_team=s.team,
                                                                       kind=EntryKind.TRANSFER_IN).exists(),
        ("job page", "delete"): lambda s: field(Job, s.job.pk, "state") == JobState.CANCELLED,
        ("share link", "delete"): lambda s: field(ShareLink, s.image_link.pk, "revoked_at") is not None,
    }


def request_for(s: Scene, cell: Cell) -> Request:
    requests = {
        **_image_requests(s.image, private=False), **_image_requests(s.private_image, private=True),
        **_collection_requests(s.collection, private=False),
        **_collection_requests(s.private_collection, private=True), **_team_requests(s),
    }
    return requests[cell.object, cell.action](s, cell.role)


# --- The cells -----------------------------------------------------------------------------------

def _answer(response) -> object:
    """The status, with a redirect to the login page told apart from a redirect after success."""
    if response.status_code == 302 and response["Location"].startswith(resolve_url(settings.LOGIN_URL)):
        return LOGIN
    return response.status_code


# Not marked `database`: who may do what is decided in Python over ordinary queries, so the
# matrix runs once (SQLite); CI's PostgreSQL pass keeps to what the database itself decides.
@pytest.mark.django_db
class TestHttpCells:
    def test_every_cell_has_a_request_and_every_action_an_effect(self, scene):
        """The matrix, the requests and the effects describe the same cells (none can slip out)."""
        effects = effects_for(scene)
        for cell in HTTP_CELLS:
            assert isinstance(request_for(scene, cell), Request), cell.id
            assert cell.action == "view" or (cell.object, cell.action) in effects, cell.id

    @pytest.mark.parametrize("cell", HTTP_CELLS, ids=[cell.id for cell in HTTP_CELLS])
    def test_cell(self, scene, cell: Cell):
        client = Client()
        if cell.role not in SIGNED_OUT:
            client.force_login(scene.users[cell.role])
        request = request_for(scene, cell)
        response = getattr(client, request.method)(request.path, request.data or {})
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)  # a zip is read to its end, as a browser would
        assert _answer(response) == cell.expected, f"{cell.id}: {request.method.upper()} {request.path}"
        if cell.action != "view":
            happened = effects_for(scene)[cell.object, cell.action](scene)
            assert happened == (cell.expected == DONE), f"{cell.id}: changed={happened}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize("cell", SOCKET_CELLS, ids=[cell.id for cell in SOCKET_CELLS])
async def test_socket_cell(cell: Cell):
    """The consumers read from their own database connection, so these cells need a committed
    scene: each builds its own people and job (a transactional test; the tables are flushed after
    it)."""
    from studio.asgi import application

    users, team, _ = await sync_to_async(build_people)()
    job = await sync_to_async(submit_job)(users["image owner"], team=team)
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if cell.role in users:
        cookie = await sync_to_async(_session_cookie)(users[cell.role])
        headers.append((b"cookie", cookie.encode()))
    path = f"/ws/jobs/{job.pk}/" if cell.object == "job websocket" else f"/ws/teams/{team.pk}/gallery/"
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect()
    if connected and cell.object == "job websocket":
        first = await communicator.receive_from()  # the job's state from the database
        assert f"job-head-{job.pk}" in first, cell.id
    await communicator.disconnect()
    assert (ACCEPT if connected else code) == cell.expected, cell.id
