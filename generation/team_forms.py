"""Forms of the team pages. They check shape only; who may do what is decided by the services
(under the team's row lock) through accounts.permissions."""

from __future__ import annotations

from django import forms

from accounts.models import ROLE_RANK, Team, TeamRole

ASSIGNABLE_ROLES = [TeamRole.ADMIN, TeamRole.MEMBER, TeamRole.VIEWER]


def roles_up_to(role: str | None) -> list[tuple[str, str]]:
    """The roles someone with `role` may hand out (never owner: that is a transfer)."""
    if role is None:
        return []
    return [
        (value, TeamRole(value).label) for value in ASSIGNABLE_ROLES if ROLE_RANK[value] <= ROLE_RANK[role]
    ]


class TeamNameForm(forms.Form):
    name = forms.CharField(max_length=Team._meta.get_field("name").max_length, label="Team name")

    def clean_name(self):
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise forms.ValidationError("A team needs a name.")
        return name


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=254)
    role = forms.ChoiceField(choices=[], initial=TeamRole.MEMBER)

    def __init__(self, *args, inviter_role: str | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = roles_up_to(inviter_role)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=[(value, TeamRole(value).label) for value in ASSIGNABLE_ROLES])
