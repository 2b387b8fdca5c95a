"""Writes of the accounts app, one module per concern:

    signups.py  sign-up limits and which sign-ups earn the free credits
    teams.py    teams, memberships and roles, invitations (one owner per team, under a row lock)
    api_keys.py API keys of users and teams (the token shown once, only its hash stored)

Callers use the package: `from accounts import services; services.team_create(...)`.
"""

from accounts.services.api_keys import ApiKeyRefused, api_key_create, api_key_revoke, api_key_touch
from accounts.services.signups import (
    GMAIL_DOMAINS,
    SignupLimitReached,
    email_domain,
    email_mailbox,
    signup_check_allowed,
    signup_record,
)
from accounts.services.teams import (
    InvitationError,
    TeamRuleBroken,
    invitation_accept,
    invitation_check_usable,
    invitation_create,
    invitation_find,
    invitation_is_pending,
    invitation_resend,
    invitation_revoke,
    membership_change_role,
    membership_leave,
    membership_remove,
    team_create,
    team_rename,
    team_transfer_ownership,
)

__all__ = [
    "ApiKeyRefused",
    "api_key_create",
    "api_key_revoke",
    "api_key_touch",
    "GMAIL_DOMAINS",
    "InvitationError",
    "SignupLimitReached",
    "TeamRuleBroken",
    "email_domain",
    "email_mailbox",
    "invitation_accept",
    "invitation_check_usable",
    "invitation_create",
    "invitation_find",
    "invitation_is_pending",
    "invitation_resend",
    "invitation_revoke",
    "membership_change_role",
    "membership_leave",
    "membership_remove",
    "signup_check_allowed",
    "signup_record",
    "team_create",
    "team_rename",
    "team_transfer_ownership",
]
