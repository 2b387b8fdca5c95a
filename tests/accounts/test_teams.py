"""Teams: creating, roles, removing, leaving, transferring ownership, and invitations by mail
(single use, expiring, hashed, for one verified address), through the services and the pages."""

from __future__ import annotations

import hashlib
import re
import threading
from datetime import timedelta

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.db import close_old_connections, connection
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from accounts import services as accounts
from accounts.models import Invitation, Membership, Team, TeamRole
from billing.models import Wallet
from generation import services
from tests.factories import make_user

pytestmark = [pytest.mark.django_db]

LINK = re.compile(r"http://testserver/invitations/([A-Za-z0-9_-]+)/")


def verified(user, email: str | None = None):
    EmailAddress.objects.create(user=user, email=email or user.email, verified=True, primary=email is None)
    return user


def team_with(*roles: str, name: str = "Blue Team"):
    """A team whose owner is made first, then one member per role; returns (team, owner, members)."""
    owner = make_user()
    team = services.team_create(user=owner, name=name)
    members = []
    for role in roles:
        member = make_user()
        Membership.objects.create(team=team, user=member, role=role)
        members.append(member)
    return team, owner, members


def role(team, user) -> str | None:
    return Membership.objects.filter(team=team, user=user).values_list("role", flat=True).first()


def link_for(token: str) -> str:
    return f"http://testserver/invitations/{token}/"


def invite(team, actor, email, role=TeamRole.MEMBER, *, capture):
    with capture(execute=True):
        invitation = accounts.invitation_create(
            team=team, actor=actor, email=email, role=role, link_for=link_for
        )
    return invitation, LINK.search(mail.outbox[-1].body).group(1)


# --- Creating and renaming -----------------------------------------------------------------------


def test_the_creator_owns_a_new_team_and_it_has_a_wallet():
    user = make_user()
    team = services.team_create(user=user, name="  Night   Shift ")
    assert team.name == "Night Shift" and role(team, user) == TeamRole.OWNER
    assert Wallet.objects.filter(owner_team=team, owner_user=None).count() == 1


def test_team_list_page_creates_a_team_and_lists_mine_with_my_role(client):
    user = make_user()
    client.force_login(user)
    response = client.post(reverse("generation:team_list"), {"name": "Red Team"})
    team = Team.objects.get(name="Red Team")
    assert response.status_code == 302 and response["Location"] == reverse(
        "generation:team_detail", args=[team.pk]
    )
    page = client.get(reverse("generation:team_list")).content.decode()
    assert "Red Team" in page and "Owner" in page and "1 member" in page
    assert client.post(reverse("generation:team_list"), {"name": "   "}).status_code == 400
    assert client.post(reverse("generation:team_list"), {}).status_code == 400
    assert client.post(reverse("generation:team_list"), {"name": "x" * 101}).status_code == 400


def test_rename_by_admins_only(client):
    team, _owner, (admin, member) = team_with(TeamRole.ADMIN, TeamRole.MEMBER)
    url = reverse("generation:team_settings", args=[team.pk])
    client.force_login(admin)
    assert client.post(url, {"name": "Renamed"}).status_code == 302
    assert Team.objects.get(pk=team.pk).name == "Renamed"
    client.force_login(member)
    response = client.post(url, {"name": "Mine now"})
    assert response.status_code == 403 and b"owner and admins" in response.content
    assert Team.objects.get(pk=team.pk).name == "Renamed"
    with pytest.raises(accounts.TeamRuleBroken):
        accounts.team_rename(team=team, actor=member, name="Mine now")


def test_every_team_url_is_404_for_a_non_member(client):
    team, _owner, (member,) = team_with(TeamRole.MEMBER)
    client.force_login(make_user())
    invitation = Invitation.objects.create(
        team=team, email="x@example.com", role="member", token_hash="0" * 64, expires_at=timezone.now()
    )
    urls = [
        ("get", reverse("generation:team_detail", args=[team.pk])),
        ("get", reverse("generation:team_settings", args=[team.pk])),
        ("get", reverse("generation:team_gallery", args=[team.pk])),
        ("post", reverse("generation:team_invite", args=[team.pk])),
        ("post", reverse("generation:team_invitation_revoke", args=[team.pk, invitation.pk])),
        ("post", reverse("generation:team_invitation_resend", args=[team.pk, invitation.pk])),
        ("post", reverse("generation:team_member_role", args=[team.pk, member.pk])),
        ("post", reverse("generation:team_member_remove", args=[team.pk, member.pk])),
        ("post", reverse("generation:team_transfer", args=[team.pk, member.pk])),
        ("post", reverse("generation:team_leave", args=[team.pk])),
    ]
    for method, url in urls:
        assert getattr(client, method)(url).status_code == 404, url
    client.logout()
    assert client.get(urls[0][1]).status_code == 302  # anonymous: to the login page


# --- Roles ---------------------------------------------------------------------------------------


def test_team_page_shows_members_with_roles_and_only_the_actions_my_role_allows(client):
    team, owner, (admin, member, viewer) = team_with(TeamRole.ADMIN, TeamRole.MEMBER, TeamRole.VIEWER)
    client.force_login(viewer)
    page = client.get(reverse("generation:team_detail", args=[team.pk])).content.decode()
    for user in (owner, admin, member, viewer):
        assert user.email in page
    assert "Change role" not in page and "Remove" not in page and "Invite someone" not in page
    assert "Leave team" in page and reverse("generation:team_gallery", args=[team.pk]) in page
    assert reverse("billing:team_credits", kwargs={"team_id": team.pk}) in page
    client.force_login(admin)
    page = client.get(reverse("generation:team_detail", args=[team.pk])).content.decode()
    assert "Change role" in page and "Invite someone" in page and "Make owner" not in page
    assert reverse("generation:team_member_remove", args=[team.pk, owner.pk]) not in page
    assert reverse("generation:team_member_remove", args=[team.pk, member.pk]) in page
    client.force_login(owner)
    page = client.get(reverse("generation:team_detail", args=[team.pk])).content.decode()
    assert "Make owner" in page and "Leave team" not in page and "make another member the owner" in page


def test_admins_change_roles_below_owner_and_members_cannot(client):
    team, owner, (admin, member, viewer) = team_with(TeamRole.ADMIN, TeamRole.MEMBER, TeamRole.VIEWER)
    client.force_login(admin)
    url = reverse("generation:team_member_role", args=[team.pk, viewer.pk])
    assert client.post(url, {"role": "member"}).status_code == 302 and role(team, viewer) == "member"
    refused = client.post(
        reverse("generation:team_member_role", args=[team.pk, owner.pk]), {"role": "viewer"}
    )
    assert refused.status_code == 403 and role(team, owner) == "owner"
    assert client.post(url, {"role": "owner"}).status_code == 400  # ownership moves by transfer only
    assert client.post(url, {"role": "boss"}).status_code == 400
    client.force_login(member)
    assert client.post(url, {"role": "viewer"}).status_code == 403 and role(team, viewer) == "member"
    with pytest.raises(accounts.TeamRuleBroken):
        accounts.membership_change_role(team=team, actor=admin, user_id=owner.pk, role=TeamRole.ADMIN)
    with pytest.raises(accounts.TeamRuleBroken):
        accounts.membership_change_role(team=team, actor=admin, user_id=member.pk, role=TeamRole.OWNER)


def test_owner_and_admins_remove_members_after_a_confirmation_but_nobody_removes_the_owner(client):
    team, owner, (admin, member) = team_with(TeamRole.ADMIN, TeamRole.MEMBER)
    client.force_login(admin)
    url = reverse("generation:team_member_remove", args=[team.pk, member.pk])
    asked = client.post(url)
    assert asked.status_code == 200 and b"Remove " in asked.content and role(team, member) == "member"
    assert client.post(url, {"confirm": "yes"}).status_code == 302 and role(team, member) is None
    refused = client.post(
        reverse("generation:team_member_remove", args=[team.pk, owner.pk]), {"confirm": "yes"}
    )
    assert (
        refused.status_code == 403
        and b"transfer ownership" in refused.content
        and role(team, owner) == "owner"
    )
    # The removed member now gets a 404 for the team.
    client.force_login(member)
    assert client.get(reverse("generation:team_detail", args=[team.pk])).status_code == 404


def test_anyone_but_the_owner_can_leave(client):
    team, owner, (viewer,) = team_with(TeamRole.VIEWER)
    client.force_login(viewer)
    url = reverse("generation:team_leave", args=[team.pk])
    assert client.get(url).status_code == 200 and role(team, viewer) == "viewer"
    assert client.post(url, {"confirm": "yes"}).status_code == 302 and role(team, viewer) is None
    client.force_login(owner)
    refused = client.post(url, {"confirm": "yes"})
    assert (
        refused.status_code == 403
        and b"transfer ownership" in refused.content
        and role(team, owner) == "owner"
    )


def test_the_owner_transfers_ownership_and_stays_as_admin(client):
    team, owner, (admin, viewer) = team_with(TeamRole.ADMIN, TeamRole.VIEWER)
    client.force_login(admin)
    refused = client.post(reverse("generation:team_transfer", args=[team.pk, admin.pk]), {"confirm": "yes"})
    assert refused.status_code == 403 and role(team, owner) == "owner"
    client.force_login(owner)
    assert (
        client.post(
            reverse("generation:team_transfer", args=[team.pk, viewer.pk]), {"confirm": "yes"}
        ).status_code
        == 302
    )
    assert role(team, viewer) == "owner" and role(team, owner) == "admin"
    assert Membership.objects.filter(team=team, role="owner").count() == 1
    with pytest.raises(accounts.TeamRuleBroken):  # the old owner no longer can
        accounts.team_transfer_ownership(team=team, actor=owner, user_id=admin.pk)


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_concurrent_transfers_and_removals_leave_exactly_one_owner():
    """The owner hands the team to two people at once while an admin tries to remove the
    first of them: the team row lock serialises them, and one owner remains."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks (CI reruns database tests there)")
    team, owner, (first, second, admin) = team_with(TeamRole.MEMBER, TeamRole.MEMBER, TeamRole.ADMIN)
    barrier = threading.Barrier(3)
    outcomes = []

    def attempt(action):
        close_old_connections()
        barrier.wait()
        try:
            action()
            outcomes.append("done")
        except accounts.TeamRuleBroken:
            outcomes.append("refused")
        finally:
            connection.close()

    actions = [
        lambda: accounts.team_transfer_ownership(team=team, actor=owner, user_id=first.pk),
        lambda: accounts.team_transfer_ownership(team=team, actor=owner, user_id=second.pk),
        lambda: accounts.membership_remove(team=team, actor=admin, user_id=first.pk),
    ]
    threads = [threading.Thread(target=attempt, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 3 and "refused" in outcomes  # the second transfer finds the actor no longer owner
    assert Membership.objects.filter(team=team, role="owner").count() == 1


# --- Invitations ---------------------------------------------------------------------------------


def test_an_invitation_mails_a_link_whose_token_is_stored_only_as_a_hash(django_capture_on_commit_callbacks):
    team, owner, _ = team_with()
    invitation, token = invite(
        team, owner, "New.Person@Example.com", capture=django_capture_on_commit_callbacks
    )
    message = mail.outbox[-1]
    assert message.to == ["New.Person@Example.com"] and "Blue Team" in message.subject
    assert owner.email in message.body and "member" in message.body
    assert len(token) >= 43  # 32 random bytes, base64: 256 bits
    assert invitation.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert not Invitation.objects.filter(token_hash=token).exists()
    assert token not in str(list(Invitation.objects.values()))
    expected = timezone.now() + timedelta(days=7)
    assert abs((invitation.expires_at - expected).total_seconds()) < 60


@override_settings(STUDIO_TEAM_INVITATION_DAYS=2)
def test_the_expiry_is_a_setting(django_capture_on_commit_callbacks):
    team, owner, _ = team_with()
    invitation, _ = invite(team, owner, "a@example.com", capture=django_capture_on_commit_callbacks)
    assert abs((invitation.expires_at - timezone.now() - timedelta(days=2)).total_seconds()) < 60


def test_accepting_with_the_verified_address_joins_with_the_role_once(
    client, django_capture_on_commit_callbacks
):
    team, owner, _ = team_with()
    _, token = invite(
        team, owner, "Guest@Example.com", TeamRole.VIEWER, capture=django_capture_on_commit_callbacks
    )
    guest = verified(make_user(email="guest@example.com"))
    client.force_login(guest)
    url = reverse("generation:invitation", args=[token])
    page = client.get(url)
    assert page.status_code == 200 and b"Accept and join" in page.content and b"Blue Team" in page.content
    response = client.post(url)
    assert response.status_code == 302 and response["Location"] == reverse(
        "generation:team_detail", args=[team.pk]
    )
    assert role(team, guest) == "viewer"
    again = client.post(url)
    assert again.status_code == 410 and b"already been used" in again.content
    other = verified(make_user(email="other@example.com"))
    client.force_login(other)
    assert client.post(url).status_code == 410 and role(team, other) is None


def test_a_link_needs_the_invited_address_verified_on_the_account(client, django_capture_on_commit_callbacks):
    team, owner, _ = team_with()
    _, token = invite(team, owner, "invited@example.com", capture=django_capture_on_commit_callbacks)
    url = reverse("generation:invitation", args=[token])
    intruder = verified(make_user(email="intruder@example.com"))
    client.force_login(intruder)
    wrong = client.post(url)
    assert wrong.status_code == 403 and b"signed in as intruder@example.com" in wrong.content
    assert reverse("account_email").encode() in wrong.content
    assert role(team, intruder) is None
    unverified = make_user(email="invited@example.com")
    EmailAddress.objects.create(user=unverified, email="invited@example.com", verified=False, primary=True)
    client.force_login(unverified)
    response = client.post(url)
    assert response.status_code == 403 and b"Verify your address" in response.content
    assert role(team, unverified) is None
    assert not Invitation.objects.get(team=team).accepted_at  # still usable once verified
    EmailAddress.objects.filter(user=unverified).update(verified=True)
    assert client.post(url).status_code == 302 and role(team, unverified) == "member"


def test_expired_revoked_unknown_and_anonymous(client, django_capture_on_commit_callbacks):
    team, owner, _ = team_with()
    invitation, token = invite(team, owner, "late@example.com", capture=django_capture_on_commit_callbacks)
    url = reverse("generation:invitation", args=[token])
    anonymous = client.get(url)
    assert (
        anonymous.status_code == 200
        and b"Log in" in anonymous.content
        and b"late@example.com" in anonymous.content
    )
    assert client.post(url).status_code == 200 and not Invitation.objects.get(pk=invitation.pk).accepted_at
    late = verified(make_user(email="late@example.com"))
    client.force_login(late)
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = client.post(url)
    assert expired.status_code == 410 and b"expired" in expired.content and role(team, late) is None
    Invitation.objects.filter(pk=invitation.pk).update(
        expires_at=timezone.now() + timedelta(days=1), revoked_at=timezone.now()
    )
    revoked = client.get(url)
    assert revoked.status_code == 410 and b"withdrawn" in revoked.content
    assert client.get(reverse("generation:invitation", args=["not-a-token"])).status_code == 404
    assert client.get(reverse("generation:invitation", args=["x" * 300])).status_code == 404


def test_admins_revoke_and_resend_pending_invitations(client, django_capture_on_commit_callbacks):
    team, owner, (admin, member) = team_with(TeamRole.ADMIN, TeamRole.MEMBER)
    invitation, old_token = invite(team, owner, "p@example.com", capture=django_capture_on_commit_callbacks)
    client.force_login(admin)
    page = client.get(reverse("generation:team_detail", args=[team.pk])).content.decode()
    assert "p@example.com" in page and "Resend" in page and "Withdraw" in page
    with django_capture_on_commit_callbacks(execute=True):
        resent = client.post(reverse("generation:team_invitation_resend", args=[team.pk, invitation.pk]))
    assert resent.status_code == 302
    new_token = LINK.search(mail.outbox[-1].body).group(1)
    assert new_token != old_token
    assert client.get(reverse("generation:invitation", args=[old_token])).status_code == 404
    client.force_login(member)
    assert (
        client.post(reverse("generation:team_invitation_revoke", args=[team.pk, invitation.pk])).status_code
        == 403
    )
    client.force_login(admin)
    assert (
        client.post(reverse("generation:team_invitation_revoke", args=[team.pk, invitation.pk])).status_code
        == 302
    )
    assert Invitation.objects.get(pk=invitation.pk).revoked_at is not None
    page = client.get(reverse("generation:team_detail", args=[team.pk])).content.decode()
    assert 'data-invitation="p@example.com"' not in page
    invitee = verified(make_user(email="p@example.com"))
    client.force_login(invitee)
    assert client.post(reverse("generation:invitation", args=[new_token])).status_code == 410
    assert role(team, invitee) is None


def test_invite_page_form_checks_role_email_and_existing_members(client, django_capture_on_commit_callbacks):
    team, _owner, (admin, member) = team_with(TeamRole.ADMIN, TeamRole.MEMBER)
    url = reverse("generation:team_invite", args=[team.pk])
    client.force_login(admin)
    assert client.post(url, {"email": "not an email", "role": "member"}).status_code == 400
    assert client.post(url, {"email": "a@example.com", "role": "owner"}).status_code == 400
    existing = client.post(url, {"email": member.email.upper(), "role": "viewer"})
    assert existing.status_code == 400 and b"already a member" in existing.content
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(url, {"email": "a@example.com", "role": "admin"}).status_code == 302
    assert len(mail.outbox) == 1 and Invitation.objects.get(email="a@example.com").role == "admin"
    with django_capture_on_commit_callbacks(execute=True):  # inviting again replaces the pending link
        client.post(url, {"email": "A@example.com", "role": "member"})
    assert (
        Invitation.objects.filter(team=team, revoked_at__isnull=True, accepted_at__isnull=True).count() == 1
    )
    client.force_login(member)
    assert client.post(url, {"email": "b@example.com", "role": "member"}).status_code == 403
    assert not Invitation.objects.filter(email="b@example.com").exists()


@override_settings(STUDIO_TEAM_INVITATIONS_PER_DAY=2)
def test_a_team_sends_a_limited_number_of_invitations_a_day(client, django_capture_on_commit_callbacks):
    team, owner, _ = team_with()
    client.force_login(owner)
    url = reverse("generation:team_invite", args=[team.pk])
    with django_capture_on_commit_callbacks(execute=True):
        for number in range(2):
            assert client.post(url, {"email": f"n{number}@example.com", "role": "member"}).status_code == 302
        refused = client.post(url, {"email": "n3@example.com", "role": "member"})
    assert refused.status_code == 400 and b"2 invitations in the last day" in refused.content
    assert len(mail.outbox) == 2
    Invitation.objects.update(created_at=timezone.now() - timedelta(days=1, seconds=1))
    assert client.post(url, {"email": "n3@example.com", "role": "member"}).status_code == 302


def test_a_member_opening_an_invitation_keeps_their_role(client, django_capture_on_commit_callbacks):
    team, owner, (admin,) = team_with(TeamRole.ADMIN)
    invitation = Invitation(team=team, email=admin.email, role=TeamRole.VIEWER, invited_by=owner)
    token = accounts.teams._new_token(invitation)
    invitation.save()
    client.force_login(verified(admin))
    response = client.post(reverse("generation:invitation", args=[token]), follow=True)
    assert b"You are already in Blue Team" in response.content and role(team, admin) == "admin"
    assert Invitation.objects.get(pk=invitation.pk).accepted_at is not None
