"""Who people are in the studio: their sign-ups (to keep free credits hard to farm), their teams,
roles and invitations."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class Signup(models.Model):
    """One self-service sign-up: where it came from and whether its free credits are due.

    Accounts made another way (admin, createsuperuser) have none.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="signup")
    address = models.GenericIPAddressField(help_text="The client address, as the trusted proxies tell it.")
    email_domain = models.CharField(max_length=255)
    mailbox = models.CharField(max_length=320, help_text="The email without +tags (and Gmail's dots).")
    free_credits_due = models.BooleanField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["address", "created_at"]),
            models.Index(fields=["email_domain", "created_at"]),
            models.Index(fields=["mailbox"]),
        ]

    def __str__(self) -> str:
        return f"{self.user} from {self.address}"


# --- Teams ---------------------------------------------------------------------------------------

class TeamRole(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


# What each role may do grows with its rank: a viewer looks, a member also makes and shares,
# an admin also manages people, money and anything in the team gallery, the owner also transfers
# ownership. accounts.permissions turns ranks into answers.
ROLE_RANK = {TeamRole.VIEWER: 0, TeamRole.MEMBER: 1, TeamRole.ADMIN: 2, TeamRole.OWNER: 3}


class Team(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Its share of the GPUs when its jobs wait beside others (a user counts 1): a team of weight 2
    # gets two turns for one of a user's, for the jobs its wallet pays (docs/teams.md, "Fair share").
    queue_weight = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal("1.00"),
        validators=[MinValueValidator(Decimal("0.1")), MaxValueValidator(Decimal("100"))],
        help_text="Turns in the queue per round, against 1 for a user (0.1-100).")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(queue_weight__gte=Decimal("0.1")), name="team_queue_weight_positive"),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user's place in a team. A team has exactly one owner: at most one by the constraint,
    at least one because only accounts.services changes roles, and it never leaves a team without."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=TeamRole.choices)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team", "joined_at"]
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="membership_one_per_team_and_user"),
            models.UniqueConstraint(fields=["team"], condition=models.Q(role="owner"), name="team_one_owner"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"

    @property
    def rank(self) -> int:
        return ROLE_RANK[self.role]


class Invitation(models.Model):
    """A single-use, expiring invitation to a team, for one email address.

    Only a SHA-256 of the link's token is stored: a leaked database row cannot be turned into
    a working link.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=TeamRole.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=~models.Q(role="owner"), name="invitation_never_for_owner"),
        ]

    def __str__(self) -> str:
        return f"Invitation of {self.email} to {self.team}"


# --- API keys ------------------------------------------------------------------------------------

class ApiKeyScope(models.TextChoices):
    GENERATE = "generate", "Generate images"
    READ_IMAGES = "read_images", "Read images"
    TRAIN = "train", "Train LoRAs"


API_KEY_PREFIX_LENGTH = 16  # "sk_live_" and 8 hex characters: shown on the keys page, the lookup index


class ApiKey(models.Model):
    """A named key for the REST API, of a user or of a team (one of the two, never both).

    The token is `<prefix>_<secret>`: the prefix (`sk_live_` and 8 hex characters) is stored as is,
    shown on the keys page and used to find the row; of the whole token only a SHA-256 is stored.
    The secret has 256 bits of entropy, so a plain hash is enough (no slow KDF): a leaked row
    cannot be turned back into a working key. A revoked key stays for its usage history.
    """

    owner_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys"
    )
    owner_team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Who made the key (for a team key: the admin).",
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=API_KEY_PREFIX_LENGTH, unique=True)
    secret_hash = models.CharField(max_length=64, help_text="SHA-256 (hex) of the whole token.")
    scopes = models.JSONField(default=list, help_text="Any of: generate, read_images, train.")
    monthly_credit_cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many credits a calendar month (UTC); empty: no cap."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(owner_user__isnull=False, owner_team__isnull=True)
                | models.Q(owner_user__isnull=True, owner_team__isnull=False),
                name="api_key_has_exactly_one_owner",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])
