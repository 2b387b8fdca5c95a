"""Team pages: the list, one team (members, roles, invitations), its settings, its gallery, and
the invitation link. Plain links and forms throughout; a non-member gets a 404 for every team
URL, a member whose role does not allow an action a 403 with the reason."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import permissions as team_permissions
from accounts import selectors as account_selectors
from accounts import services as accounts
from accounts.models import Invitation, Team
from generation import services
from generation.team_forms import InviteForm, RoleForm, TeamNameForm, roles_up_to
from generation.views import gallery_response


def _team_and_role(request: HttpRequest, team_id) -> tuple[Team, str]:
    """The team and the user's role in it; a 404 for anyone who is not a member."""
    role = team_permissions.role_of(user=request.user, team_id=team_id)
    if not team_permissions.can_view_team(role):
        raise Http404("No such team.")
    return Team.objects.get(pk=team_id), role


def _refused(request: HttpRequest, team: Team, error: Exception) -> HttpResponse:
    return render(request, "teams/refused.html", {"team": team, "reason": str(error)}, status=403)


def _invitation_link_maker(request: HttpRequest):
    return lambda token: request.build_absolute_uri(reverse("generation:invitation", args=[token]))


# --- The list and a new team ---------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def team_list(request: HttpRequest) -> HttpResponse:
    """My teams, and the form that starts a new one (I become its owner)."""
    form = TeamNameForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        team = services.team_create(user=request.user, name=form.cleaned_data["name"])
        messages.success(request, f"Team “{team.name}” created. Invite people from its page.")
        return redirect("generation:team_detail", team_id=team.pk)
    context = {"teams": account_selectors.team_list_for(request.user), "form": form}
    return render(request, "teams/team_list.html", context, status=400 if form.errors else 200)


# --- One team ------------------------------------------------------------------------------------


def _member_rows(memberships, *, me, my_role: str) -> list[dict]:
    """Each member with the actions my role allows on them (computed here, shown by the template)."""
    rows = []
    for membership in memberships:
        is_me = membership.user_id == me.pk
        roles = [
            (value, label)
            for value, label in roles_up_to(my_role)
            if value != membership.role and team_permissions.can_change_role(my_role, membership.role, value)
        ]
        rows.append(
            {
                "membership": membership,
                "is_me": is_me,
                "role_choices": roles,
                "can_remove": not is_me and team_permissions.can_remove_member(my_role, membership.role),
                "can_transfer": not is_me and team_permissions.can_transfer_ownership(my_role),
            }
        )
    return rows


def _team_context(
    request: HttpRequest, team: Team, role: str, *, invite_form: InviteForm | None = None
) -> dict:
    manages = team_permissions.can_manage_members(role)
    return {
        "team": team,
        "my_role": role,
        "manages_members": manages,
        "member_rows": _member_rows(
            account_selectors.team_members(team_id=team.pk), me=request.user, my_role=role
        ),
        "invitations": account_selectors.team_pending_invitations(team_id=team.pk) if manages else [],
        "invite_form": invite_form or (InviteForm(inviter_role=role) if manages else None),
        "can_change_settings": team_permissions.can_change_team_settings(role),
        "can_open_credits": team_permissions.can_view_team(role),  # members see their usage, admins manage
        "can_manage_api_keys": team_permissions.can_manage_api_keys(role),
        "can_leave": not team_permissions.can_transfer_ownership(role),
        "now": timezone.now(),
    }


@login_required
@require_GET
def team_detail(request: HttpRequest, team_id) -> HttpResponse:
    team, role = _team_and_role(request, team_id)
    return render(request, "teams/team_detail.html", _team_context(request, team, role))


@login_required
@require_http_methods(["GET", "POST"])
def team_settings(request: HttpRequest, team_id) -> HttpResponse:
    team, role = _team_and_role(request, team_id)
    if not team_permissions.can_change_team_settings(role):
        return _refused(
            request,
            team,
            accounts.TeamRuleBroken("Only the team's owner and admins can change its settings."),
        )
    form = TeamNameForm(request.POST if request.method == "POST" else None, initial={"name": team.name})
    if request.method == "POST" and form.is_valid():
        try:
            team = accounts.team_rename(team=team, actor=request.user, name=form.cleaned_data["name"])
        except accounts.TeamRuleBroken as error:
            return _refused(request, team, error)
        messages.success(request, f"Team renamed to “{team.name}”.")
        return redirect("generation:team_detail", team_id=team.pk)
    return render(
        request, "teams/team_settings.html", {"team": team, "form": form}, status=400 if form.errors else 200
    )


# --- People --------------------------------------------------------------------------------------


@login_required
@require_POST
def team_invite(request: HttpRequest, team_id) -> HttpResponse:
    team, role = _team_and_role(request, team_id)
    if not team_permissions.can_manage_members(role):
        return _refused(
            request, team, accounts.TeamRuleBroken("Only the team's owner and admins can invite people.")
        )
    form = InviteForm(request.POST, inviter_role=role)
    if form.is_valid():
        try:
            invitation = accounts.invitation_create(
                team=team,
                actor=request.user,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                link_for=_invitation_link_maker(request),
            )
        except accounts.TeamRuleBroken as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Invitation sent to {invitation.email}.")
            return redirect("generation:team_detail", team_id=team.pk)
    context = _team_context(request, team, role, invite_form=form)
    return render(request, "teams/team_detail.html", context, status=400)


def _team_invitation(team: Team, invitation_id) -> Invitation:
    invitation = (
        Invitation.objects.select_related("team", "invited_by").filter(pk=invitation_id, team=team).first()
    )
    if invitation is None:
        raise Http404("No such invitation.")
    return invitation


@login_required
@require_POST
def invitation_revoke(request: HttpRequest, team_id, invitation_id) -> HttpResponse:
    team, _ = _team_and_role(request, team_id)
    invitation = _team_invitation(team, invitation_id)
    try:
        accounts.invitation_revoke(invitation=invitation, actor=request.user)
    except accounts.TeamRuleBroken as error:
        return _refused(request, team, error)
    messages.success(request, f"The invitation of {invitation.email} is withdrawn; its link no longer works.")
    return redirect("generation:team_detail", team_id=team.pk)


@login_required
@require_POST
def invitation_resend(request: HttpRequest, team_id, invitation_id) -> HttpResponse:
    team, _ = _team_and_role(request, team_id)
    invitation = _team_invitation(team, invitation_id)
    try:
        accounts.invitation_resend(
            invitation=invitation, actor=request.user, link_for=_invitation_link_maker(request)
        )
    except accounts.TeamRuleBroken as error:
        return _refused(request, team, error)
    messages.success(request, f"A new link was sent to {invitation.email}; the old one no longer works.")
    return redirect("generation:team_detail", team_id=team.pk)


@login_required
@require_POST
def member_role(request: HttpRequest, team_id, user_id: int) -> HttpResponse:
    team, _ = _team_and_role(request, team_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        return render(request, "teams/refused.html", {"team": team, "reason": "Choose a role."}, status=400)
    try:
        membership = services.team_member_change_role(
            team=team, actor=request.user, user_id=user_id, role=form.cleaned_data["role"]
        )
    except accounts.TeamRuleBroken as error:
        return _refused(request, team, error)
    messages.success(request, f"{membership.user.email} is now {membership.get_role_display().lower()}.")
    return redirect("generation:team_detail", team_id=team.pk)


def _member_of(team: Team, user_id: int):
    membership = account_selectors.team_members(team_id=team.pk).filter(user_id=user_id).first()
    if membership is None:
        raise Http404("No such member.")
    return membership


@login_required
@require_http_methods(["GET", "POST"])
def member_remove(request: HttpRequest, team_id, user_id: int) -> HttpResponse:
    """GET, or a POST without confirm=yes: the confirmation page. A POST with it removes."""
    team, _ = _team_and_role(request, team_id)
    membership = _member_of(team, user_id)
    if request.method == "GET" or request.POST.get("confirm") != "yes":
        context = {"team": team, "action": "remove", "membership": membership}
        return render(request, "teams/confirm.html", context)
    try:
        services.team_member_remove(team=team, actor=request.user, user_id=user_id)
    except accounts.TeamRuleBroken as error:
        return _refused(request, team, error)
    messages.success(request, f"{membership.user.email} was removed from {team.name}.")
    return redirect("generation:team_detail", team_id=team.pk)


@login_required
@require_http_methods(["GET", "POST"])
def team_leave(request: HttpRequest, team_id) -> HttpResponse:
    team, _ = _team_and_role(request, team_id)
    if request.method == "GET" or request.POST.get("confirm") != "yes":
        return render(request, "teams/confirm.html", {"team": team, "action": "leave"})
    try:
        services.team_member_leave(team=team, user=request.user)
    except accounts.TeamRuleBroken as error:
        return _refused(request, team, error)
    messages.success(request, f"You left {team.name}.")
    return redirect("generation:team_list")


@login_required
@require_http_methods(["GET", "POST"])
def team_transfer(request: HttpRequest, team_id, user_id: int) -> HttpResponse:
    team, _ = _team_and_role(request, team_id)
    membership = _member_of(team, user_id)
    if request.method == "GET" or request.POST.get("confirm") != "yes":
        return render(
            request, "teams/confirm.html", {"team": team, "action": "transfer", "membership": membership}
        )
    try:
        accounts.team_transfer_ownership(team=team, actor=request.user, user_id=user_id)
    except accounts.TeamRuleBroken as error:
        return _refused(request, team, error)
    messages.success(request, f"{membership.user.email} now owns {team.name}; you are an admin.")
    return redirect("generation:team_detail", team_id=team.pk)


# --- The invitation link -------------------------------------------------------------------------

INVITATION_STATUS = {"expired": 410, "used": 410, "revoked": 410, "unverified": 403, "wrong_account": 403}


@require_http_methods(["GET", "POST"])
def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """What the mailed link opens: who invites me where; Accept (POST) joins the team. Anonymous
    visitors are asked to log in or sign up with the invited address and come back."""
    found = accounts.invitation_find(token=token)
    if found is None:
        raise Http404("No such invitation.")
    context = {"invitation": found, "team": found.team, "here": request.get_full_path()}
    if not request.user.is_authenticated:
        return render(request, "teams/invitation.html", context)
    if request.method == "GET":
        try:
            accounts.invitation_check_usable(invitation=found, user=request.user)
        except accounts.InvitationError as error:
            return _invitation_problem(request, context, error)
        return render(request, "teams/invitation.html", context)
    already_in = team_permissions.role_of(user=request.user, team_id=found.team_id) is not None
    try:
        accounts.invitation_accept(invitation=found, user=request.user)
    except accounts.InvitationError as error:
        return _invitation_problem(request, context, error)
    messages.success(
        request, f"You are already in {found.team.name}." if already_in else f"Welcome to {found.team.name}."
    )
    return redirect("generation:team_detail", team_id=found.team_id)


def _invitation_problem(request: HttpRequest, context: dict, error: accounts.InvitationError) -> HttpResponse:
    context = {**context, "problem": str(error), "reason": error.reason}
    return render(request, "teams/invitation.html", context, status=INVITATION_STATUS[error.reason])


# --- The team gallery ----------------------------------------------------------------------------


@login_required
@require_GET
def team_gallery(request: HttpRequest, team_id) -> HttpResponse:
    """The team's images, newest first, with who made each: the personal gallery's paging, search,
    filters and templates (generation.views.gallery_response), pointed at this URL."""
    team, role = _team_and_role(request, team_id)
    extra = {"my_role": role, "can_create": team_permissions.can_contribute(role)}
    return gallery_response(
        request,
        gallery_url=reverse("generation:team_gallery", args=[team.pk]),
        title=f"{team.name} gallery",
        team=team,
        team_role=role,
        extra=extra,
        template="teams/team_gallery.html",
    )
